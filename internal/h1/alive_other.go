//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package h1

import "net"

// Supported tells whether this system lets the transport check an idle connection before
// reusing it. Here it cannot: a connection the upstream closed while idle would fail its next
// exchange after the request was written, so callers should use net/http's Transport.
func Supported() bool { return false }

func peek(net.Conn) state { return quiet }
