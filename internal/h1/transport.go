// Package h1 is the gateway's upstream transport: HTTP/1.1 with pooled keep-alive
// connections, where each exchange runs on the caller's goroutine. It writes the request,
// reads the response and hands the connection back to the pool when the body ends.
//
// net/http's Transport runs a reader and a writer goroutine per connection and passes every
// request and answer between them and the caller: three hand-offs per exchange. On an idle
// machine each hand-off is a wake-up of another thread, which on the 2-core benchmark VM cost
// more added latency than everything else the gateway does, and the two goroutines with their
// buffers cost about 14 KB per open stream. nginx talks HTTP/1.1 to its upstreams the same way.
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
	"sync"
	"syscall"
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
	if err == nil {
		err = checkRequest(req)
	}
	if err != nil {
		closeBody(req)
		return nil, err
	}
	ob, err := outgoing(req)
	if err != nil {
		return nil, err
	}
	trace := httptrace.ContextClientTrace(ctx)
	c, err := t.get(ctx, key, addr, host)
	if err != nil {
		ob.close()
		return nil, t.fail(ctx, "connecting to "+addr, err)
	}
	resp, again, err := t.exchange(ctx, c, req, ob, trace)
	if !again {
		return resp, err
	}
	// The upstream closed a reused connection as the request went out, before any answer:
	// what net/http retries, on the same terms (a request replayable without risk).
	if ob, err = outgoing(replay(req)); err != nil {
		return nil, err
	}
	if c, err = t.dial(ctx, key, addr, host); err != nil {
		ob.close()
		return nil, t.fail(ctx, "connecting to "+addr, err)
	}
	resp, _, err = t.exchange(ctx, c, req, ob, trace)
	return resp, err
}

// exchange writes req on c and reads the answer's head. again is set when c was a reused
// connection that ended before any answer byte and req may be sent once more.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request, ob outBody, trace *httptrace.ClientTrace) (resp *http.Response, again bool, err error) {
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: c.nc, Reused: c.reused})
	}
	// A cancelled request closes the socket: that unblocks this goroutine wherever it waits,
	// and the connection is never pooled again.
	stop := context.AfterFunc(ctx, func() { c.tcp.Close() })
	sw := &sockWriter{c: c.nc}
	err = writeRequest(sw, req, ob)
	if trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{Err: err})
	}
	if err != nil {
		// An upstream that refuses a body (413) may answer and close before reading it all;
		// its answer is worth more than the write error. A body that failed on its own side
		// (short, long, broken) leaves nothing to wait for.
		if sw.err != nil {
			if resp := t.earlyAnswer(ctx, c, req, stop); resp != nil {
				return resp, false, nil
			}
		}
		stop()
		c.tcp.Close()
		return nil, false, t.fail(ctx, "writing the request", err)
	}
	if t.ResponseHeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(t.ResponseHeaderTimeout))
	}
	if _, err = c.br.Peek(1); err != nil && c.reused && ctx.Err() == nil && closedEarly(err) && replayable(req) {
		stop()
		c.tcp.Close()
		return nil, true, nil
	}
	resp, err = readResponse(c.br, req)
	if err == nil && t.ResponseHeaderTimeout > 0 {
		err = c.nc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		stop()
		c.tcp.Close()
		if isTimeout(err) && ctx.Err() == nil {
			return nil, false, headerTimeoutError{}
		}
		return nil, false, t.fail(ctx, "reading the answer", err)
	}
	last := resp.Close || ob.closeConn
	if resp.Body == http.NoBody {
		t.release(c, stop, last)
		return resp, false, nil
	}
	resp.Body = &body{rc: resp.Body, t: t, c: c, ctx: ctx, stop: stop, close: last}
	return resp, false, nil
}

// closedEarly tells whether a connection ended without a byte of an answer: closed or reset.
func closedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// replayable is net/http's rule for sending a request again after a reused connection failed
// under it: an idempotent method, or an idempotency key, and a body that can be had again.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		if req.Header["Idempotency-Key"] == nil && req.Header["X-Idempotency-Key"] == nil {
			return false
		}
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// replay returns req with a fresh body for a second sending.
func replay(req *http.Request) *http.Request {
	if req.Body == nil || req.Body == http.NoBody {
		return req
	}
	r := *req
	b, err := req.GetBody()
	if err != nil {
		b = errBody{err}
	}
	r.Body = b
	return &r
}

type errBody struct{ err error }

func (e errBody) Read([]byte) (int, error) { return 0, e.err }
func (errBody) Close() error               { return nil }

// sockWriter remembers whether a write failed on the socket, as opposed to the body.
type sockWriter struct {
	c   net.Conn
	err error
}

func (w *sockWriter) Write(p []byte) (int, error) {
	n, err := w.c.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
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
// one arrived within a second; the connection ends with that answer.
func (t *Transport) earlyAnswer(ctx context.Context, c *conn, req *http.Request, stop func() bool) *http.Response {
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	resp, err := readResponse(c.br, req)
	if err != nil {
		return nil
	}
	c.nc.SetReadDeadline(time.Time{})
	resp.Close = true
	if resp.Body == http.NoBody {
		t.release(c, stop, true)
	} else {
		resp.Body = &body{rc: resp.Body, t: t, c: c, ctx: ctx, stop: stop, close: true}
	}
	return resp
}

// readResponse reads an answer's head, skipping informational (1xx) answers.
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for range 5 {
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
	return nil, errors.New("h1: too many informational answers")
}
