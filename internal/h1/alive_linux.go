package h1

import (
	"net"
	"syscall"
)

// alive tells whether an idle connection is still open: nothing to read, no end of stream.
// An upstream closes idle connections on its own schedule; finding that out before the
// request is written, not after, is what lets the caller try another connection.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	live := true
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Only "nothing to read yet" is alive: bytes on an idle connection (a TLS alert, a
		// stray answer), an end of stream and a reset all mean it cannot carry an exchange.
		live = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && live
}
