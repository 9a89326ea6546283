package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
)

// body is an answer's body. Reading it to the end hands the connection back to the pool;
// closing it earlier closes the connection, since what is left of the answer is unread.
type body struct {
	rc      io.ReadCloser
	t       *Transport
	c       *conn
	ctx     context.Context
	stop    func() bool
	close   bool
	waitErr error        // what Wait's peek met, for the next Read
	state   atomic.Int32 // open, ended (read to its end) or closed
}

const (
	open int32 = iota
	ended
	dropped
)

var errBodyClosed = errors.New("h1: read on a closed answer body")

func (b *body) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case ended:
		return 0, io.EOF
	case dropped:
		return 0, errBodyClosed
	}
	if err := b.waitErr; err != nil && !errors.Is(err, io.EOF) {
		// A reset seen while waiting: bufio hands it out once, and the next read of the
		// socket would say only "end of stream", making a cut answer look whole.
		b.waitErr = nil
		b.drop()
		return 0, b.t.fail(b.ctx, "reading the answer's body", err)
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		if b.state.CompareAndSwap(open, ended) {
			b.t.release(b.c, b.stop, b.close)
		}
		return n, io.EOF
	}
	if err != nil {
		mine := b.drop()
		if ce := context.Cause(b.ctx); ce != nil {
			return n, ce
		}
		if !mine && errors.Is(err, net.ErrClosed) {
			return n, errBodyClosed // Close ended this read
		}
		return n, b.t.fail(b.ctx, "reading the answer's body", err)
	}
	return n, nil
}

// Wait returns once the answer has bytes to read, or has ended, without reading them: a relay
// can wait out a quiet stream without holding a read buffer. The next Read reports any error.
// Like Read, it must not run at the same time as Read.
func (b *body) Wait() {
	if b.state.Load() == open && b.waitErr == nil {
		_, b.waitErr = b.c.br.Peek(1)
	}
}

// Close may be called from another goroutine while Read waits: closing the socket ends it.
func (b *body) Close() error {
	b.drop()
	return nil
}

// drop closes the connection unless the body already ended or was dropped; it reports
// whether this call did it.
func (b *body) drop() bool {
	if !b.state.CompareAndSwap(open, dropped) {
		return false
	}
	b.stop()
	b.c.tcp.Close()
	return true
}
