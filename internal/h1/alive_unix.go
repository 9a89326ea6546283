//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package h1

import (
	"net"
	"syscall"
)

// Supported tells whether this system lets the transport check an idle connection before
// reusing it; where it cannot, use net/http's Transport, whose reader goroutine notices.
func Supported() bool { return true }

// peek tells what waits on an idle connection without reading it: nothing (the healthy
// case), bytes, or the end of the stream (closed or reset).
func peek(c net.Conn) state {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return quiet
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return closed
	}
	var buf [1]byte
	st := quiet
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
			st = quiet
		case rerr == nil && n > 0:
			st = pending
		default:
			st = closed
		}
		return true
	})
	if err != nil {
		return closed
	}
	return st
}
