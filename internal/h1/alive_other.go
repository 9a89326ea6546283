//go:build !linux

package h1

import "net"

// peek cannot look without blocking here; a connection the upstream closed while idle fails
// its next exchange instead.
func peek(net.Conn) state { return quiet }
