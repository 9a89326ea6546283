// Package h1 is the gateway's upstream transport: HTTP/1.1 with pooled keep-alive
// connections, where each exchange runs on the caller's goroutine. It writes the request,
// reads the response and hands the connection back to the pool when the body ends.
//
// net/http's Transport runs a reader and a writer goroutine per connection and passes every
// request and answer between them and the caller: three hand-offs per exchange. On an idle
// machine each hand-off is a wake-up of another thread, which on the 2-core benchmark VM cost
// more added latency than everything else the gateway does, and the two goroutines with their
// buffers cost about 12 KB per open stream. nginx talks HTTP/1.1 to its upstreams the same way.
//
// What it leaves out, on purpose: HTTP/2, proxies (the gateway uses net/http's Transport when a
// proxy applies), transparent gzip (the usage tap reads the answer's bytes), 100-continue
// (the gateway sends bodies it has already read) and protocol upgrades.
package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is an http.RoundTripper for http:// and https:// URLs. The zero value is usable;
// the fields must not change once it is in use.
type Transport struct {
	// DialContext opens TCP connections; nil uses a net.Dialer with DialTimeout and 30 s
	// TCP keep-alives.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSClientConfig is cloned for https connections (ServerName and ALPN are set per host).
	TLSClientConfig *tls.Config
	// DialTimeout bounds the TCP connect plus the TLS handshake; 0 is no bound beyond the
	// request's context.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the answer's headers once the request is
	// written; 0 is no bound.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes pooled connections idle longer than this; 0 means 90 s.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost caps the pool per host; 0 means 256.
	MaxIdleConnsPerHost int

	mu     sync.Mutex
	idle   map[string][]*conn // per host, newest last
	reaper *time.Timer        // armed while any connection is idle
}

// conn is one upstream connection. Its owner is either the pool or one exchange, never both.
type conn struct {
	key    string
	nc     net.Conn // the TLS connection for https
	tcp    net.Conn // the socket under it; closing it unblocks any read or write
	br     *bufio.Reader
	idleAt time.Time
	reused bool
}

// RoundTrip sends req on a pooled or new connection and reads the answer's headers. The
// answer's body reads from the connection; the connection returns to the pool when the body
// has been read to its end, and is closed when the body is closed before that.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	key, addr, host, err := target(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if err := checkHeader(req.Header); err != nil {
		closeBody(req)
		return nil, err
	}
	trace := httptrace.ContextClientTrace(ctx)
	c, err := t.get(ctx, key, addr, host)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: c.nc, Reused: c.reused})
	}
	// A cancelled request closes the socket: that unblocks this goroutine wherever it waits,
	// and the connection is never pooled again.
	stop := context.AfterFunc(ctx, func() { c.tcp.Close() })

	err = writeRequest(c.nc, req)
	if trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{Err: err})
	}
	if err != nil {
		// An upstream that refuses a body (413) may answer and close before reading it all;
		// its answer is worth more than the write error.
		if resp := t.earlyAnswer(c, req); resp != nil {
			stop()
			return resp, nil
		}
		stop()
		c.tcp.Close()
		return nil, t.fail(ctx, "writing the request", err)
	}
	if t.ResponseHeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t.ResponseHeaderTimeout))
	}
	resp, err := readResponse(c.br, req)
	if err == nil && t.ResponseHeaderTimeout > 0 {
		err = c.nc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		stop()
		c.tcp.Close()
		if isTimeout(err) && ctx.Err() == nil {
			return nil, headerTimeoutError{}
		}
		return nil, t.fail(ctx, "reading the answer", err)
	}
	last := resp.Close || req.Close
	if resp.Body == http.NoBody {
		t.release(c, stop, last)
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, t: t, c: c, ctx: ctx, stop: stop, close: last}
	return resp, nil
}

// CloseIdleConnections closes the pooled connections; those in use are not affected.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.nc.Close()
		}
	}
}

// target returns the pool key, the dial address and, for https, the TLS server name.
func target(req *http.Request) (key, addr, host string, err error) {
	u := req.URL
	if u == nil || u.Host == "" {
		return "", "", "", errors.New("h1: the request URL has no host")
	}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
		host = u.Hostname()
	default:
		return "", "", "", fmt.Errorf("h1: unsupported scheme %q", u.Scheme)
	}
	addr = net.JoinHostPort(u.Hostname(), port)
	return u.Scheme + "://" + addr, addr, host, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// get returns the newest live pooled connection for key, or dials one.
func (t *Transport) get(ctx context.Context, key, addr, host string) (*conn, error) {
	for {
		t.mu.Lock()
		cs := t.idle[key]
		if len(cs) == 0 {
			t.mu.Unlock()
			break
		}
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		t.idle[key] = cs[:len(cs)-1]
		t.mu.Unlock()
		// The upstream may have closed it while idle: take only a connection that has
		// nothing to read, and is young enough that the upstream still keeps it.
		if time.Since(c.idleAt) < t.idleTimeout() && c.alive() {
			c.reused = true
			return c, nil
		}
		c.nc.Close()
	}
	return t.dial(ctx, key, addr, host)
}

func (t *Transport) dial(ctx context.Context, key, addr, host string) (*conn, error) {
	if t.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.DialTimeout)
		defer cancel()
	}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	tcp, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{key: key, nc: tcp, tcp: tcp}
	if host != "" {
		cfg := &tls.Config{}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(tcp, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			tcp.Close()
			return nil, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			tcp.Close()
			return nil, fmt.Errorf("h1: %s negotiated %q, not http/1.1", addr, p)
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c.nc, 4<<10)
	return c, nil
}

type state int

const (
	quiet   state = iota // nothing to read: the connection can carry an exchange
	pending              // bytes arrived while idle
	closed               // end of stream, reset or unusable
)

// alive tells whether an idle connection can carry another exchange. An upstream closes
// idle connections on its own schedule; finding that out before the request is written, not
// after, is what lets the request go out on another connection.
func (c *conn) alive() bool {
	switch peek(c.tcp) {
	case quiet:
		return true
	case closed:
		return false
	}
	// Bytes on an idle plain connection are a stray answer. On TLS they may be a message the
	// TLS layer consumes (a session ticket, a key update) or a close_notify alert: let it read
	// them, briefly, and keep the connection only if no application data or end follows.
	if _, ok := c.nc.(*tls.Conn); !ok || c.br.Buffered() > 0 {
		return false
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := c.br.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	return isTimeout(err) && c.br.Buffered() == 0
}

// release ends an exchange: the connection goes back to the pool when the answer allows it
// and the request was not cancelled meanwhile.
func (t *Transport) release(c *conn, stop func() bool, closeConn bool) {
	if !stop() || closeConn || c.br.Buffered() > 0 {
		c.tcp.Close()
		return
	}
	c.idleAt = time.Now()
	max := t.MaxIdleConnsPerHost
	if max <= 0 {
		max = 256
	}
	t.mu.Lock()
	if t.idle == nil {
		t.idle = make(map[string][]*conn)
	}
	cs := t.idle[c.key]
	if len(cs) >= max {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle[c.key] = append(cs, c)
	if t.reaper == nil {
		t.reaper = time.AfterFunc(t.idleTimeout(), t.reap)
	}
	t.mu.Unlock()
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleConnTimeout > 0 {
		return t.IdleConnTimeout
	}
	return 90 * time.Second
}

// reap closes connections idle for longer than the idle timeout, and rearms itself while any
// connection stays pooled.
func (t *Transport) reap() {
	d := t.idleTimeout()
	now := time.Now()
	var old []*conn
	t.mu.Lock()
	next := time.Duration(0)
	for k, cs := range t.idle {
		n := 0
		for _, c := range cs {
			if age := now.Sub(c.idleAt); age >= d {
				old = append(old, c)
			} else {
				cs[n] = c
				n++
				if left := d - age; next == 0 || left < next {
					next = left
				}
			}
		}
		clear(cs[n:])
		if n == 0 {
			delete(t.idle, k)
		} else {
			t.idle[k] = cs[:n]
		}
	}
	if next > 0 {
		t.reaper.Reset(next)
	} else {
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, c := range old {
		c.nc.Close()
	}
}

// fail words a failed exchange: the context's error when the request was cancelled (that is
// why the socket closed), else what went wrong.
func (t *Transport) fail(ctx context.Context, what string, err error) error {
	if ce := context.Cause(ctx); ce != nil {
		return ce
	}
	return fmt.Errorf("h1: %s: %w", what, err)
}

type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "h1: timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// earlyAnswer reads an answer the upstream sent before it stopped reading the request, if
// one arrived within a second; the connection is closed either way.
func (t *Transport) earlyAnswer(c *conn, req *http.Request) *http.Response {
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	resp, err := readResponse(c.br, req)
	if err != nil {
		return nil
	}
	c.nc.SetReadDeadline(time.Time{})
	resp.Close = true
	resp.Body = &closer{ReadCloser: resp.Body, c: c.tcp}
	return resp
}

type closer struct {
	io.ReadCloser
	c io.Closer
}

func (c *closer) Close() error { c.c.Close(); return nil }

// readResponse reads an answer's head, skipping informational (1xx) answers.
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("h1: the upstream switched protocols")
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			continue
		}
		return resp, nil
	}
}

// body is an answer's body. Reading it to the end hands the connection back to the pool;
// closing it earlier closes the connection, since what is left of the answer is unread.
type body struct {
	rc    io.ReadCloser
	t     *Transport
	c     *conn
	ctx   context.Context
	stop  func() bool
	close bool
	done  atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		if b.done.CompareAndSwap(false, true) {
			b.t.release(b.c, b.stop, b.close)
		}
		return n, io.EOF
	}
	if err != nil {
		mine := b.done.CompareAndSwap(false, true)
		if mine {
			b.stop()
			b.c.tcp.Close()
		}
		if ce := context.Cause(b.ctx); ce != nil {
			return n, ce
		}
		if !mine {
			return n, errBodyClosed // Close ended this read
		}
		return n, b.t.fail(b.ctx, "reading the answer's body", err)
	}
	return n, nil
}

// Wait returns once the answer has bytes to read, or has ended, without reading them: a relay
// can wait out a quiet stream without holding a read buffer. Read reports any error.
func (b *body) Wait() {
	if !b.done.Load() {
		b.c.br.Peek(1)
	}
}

// Close may be called from another goroutine while Read waits: closing the socket ends it.
func (b *body) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.stop()
		b.c.tcp.Close()
	}
	return nil
}

var errBodyClosed = errors.New("h1: read on a closed answer body")

// writeRequest writes req's head and body in one buffered write where they fit.
func writeRequest(w io.Writer, req *http.Request) (err error) {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		writers.Put(bw)
	}()
	defer closeBody(req)

	uri := req.URL.RequestURI()
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		if k == "Host" || k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength <= 0
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), req.ContentLength, 10))
		bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if hasBody {
		var n int64
		if chunked {
			cw := httputil.NewChunkedWriter(bw)
			n, err = copyBody(cw, req.Body)
			if err == nil {
				err = cw.Close()
			}
			if err == nil {
				_, err = bw.WriteString("\r\n")
			}
		} else {
			n, err = copyBody(bw, req.Body)
			if err == nil && n != req.ContentLength {
				err = fmt.Errorf("h1: the request body had %d bytes, not its Content-Length %d", n, req.ContentLength)
			}
		}
		if err != nil {
			return err
		}
	}
	return bw.Flush()
}

// copyBody copies without a buffer of its own: a body that can write itself (the gateway's
// replayed bodies) does, in one write past what fits the buffer; others read into the
// writer's free space.
func copyBody(w io.Writer, r io.Reader) (int64, error) {
	if wt, ok := r.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	if bw, ok := w.(*bufio.Writer); ok {
		var n int64
		for {
			if bw.Available() == 0 {
				if err := bw.Flush(); err != nil {
					return n, err
				}
			}
			p := bw.AvailableBuffer()[:bw.Available()]
			m, err := r.Read(p)
			bw.Write(p[:m])
			n += int64(m)
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
		}
	}
	return io.Copy(w, r)
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// checkHeader refuses header names and values that would split the request: the gateway's
// own values (credentials from the config) are not checked by any parser on their way here.
func checkHeader(h http.Header) error {
	for k, vs := range h {
		if !validName(k) {
			return fmt.Errorf("h1: invalid header name %q", k)
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c == '\r' || c == '\n' || c == 0 {
					return fmt.Errorf("h1: invalid value for header %s", k)
				}
			}
		}
	}
	return nil
}

func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}
