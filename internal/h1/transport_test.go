package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is an httptest server that counts the connections it accepted.
type server struct {
	*httptest.Server
	conns, closed atomic.Int32
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	return startServer(t, h, false, nil)
}

// startServer starts h, on TLS (HTTP/2 offered too) when tls is set, after setup adjusts the
// server.
func startServer(t *testing.T, h http.HandlerFunc, tls bool, setup func(*http.Server)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed:
			s.closed.Add(1)
		}
	}
	if setup != nil {
		setup(s.Config)
	}
	if tls {
		s.EnableHTTP2 = true
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// trusting is a transport that trusts s's certificate.
func trusting(t *testing.T, s *server) *Transport {
	tr := newTransport(t)
	tr.TLSClientConfig = s.Client().Transport.(*http.Transport).TLSClientConfig
	return tr
}

func newTransport(t *testing.T) *Transport {
	tr := &Transport{DialTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func do(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(b)
}

func post(t *testing.T, url string, body []byte) *http.Request {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// The request arrives as sent (method, path, query, headers with several values, body), and
// every kind of answer body (length, chunked, none) ends the exchange with the connection
// pooled: one connection serves them all.
func TestExchangesShareOneConnection(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		w.Header().Set("X-Seen", fmt.Sprintf("%s %s %q %d %x cl=%d te=%v host=%s", r.Method, r.URL.RequestURI(), r.Header.Values("X-Multi"), len(b), sum[:4], r.ContentLength, r.TransferEncoding, r.Host))
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part one,"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Write([]byte("plain"))
		}
	})
	tr := newTransport(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 128<<10) // 2 MiB
	bigSum := sha256.Sum256(big)
	cases := []struct {
		method, path string
		body         []byte
		wantSeen     string
		wantBody     string
		wantStatus   int
	}{
		{"POST", "/v1/messages?beta=true", []byte(`{"model":"m"}`), `POST /v1/messages?beta=true ["a" "b"] 13`, "plain", 200},
		{"POST", "/chunked", big, fmt.Sprintf(`POST /chunked ["a" "b"] %d %x cl=%d`, len(big), bigSum[:4], len(big)), "part one,part two", 200},
		{"GET", "/v1/models", nil, `GET /v1/models ["a" "b"] 0`, "plain", 200},
		{"POST", "/empty", nil, `POST /empty ["a" "b"] 0`, "", 204},
		{"HEAD", "/v1/models", nil, "", "", 200},
		{"DELETE", "/v1/files/f%2F1", nil, `DELETE /v1/files/f%2F1 ["a" "b"] 0`, "plain", 200},
	}
	for _, c := range cases {
		var rd io.Reader
		if c.body != nil {
			rd = bytes.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, srv.URL+c.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["X-Multi"] = []string{"a", "b"}
		resp, got := do(t, tr, req)
		if resp.StatusCode != c.wantStatus || got != c.wantBody {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, resp.StatusCode, got, c.wantStatus, c.wantBody)
		}
		if c.wantSeen != "" && !strings.HasPrefix(resp.Header.Get("X-Seen"), c.wantSeen) {
			t.Errorf("%s %s: upstream saw %q, want prefix %q", c.method, c.path, resp.Header.Get("X-Seen"), c.wantSeen)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections for %d sequential exchanges, want 1", n, len(cases))
	}
}

// A body of unknown length goes out chunked, and arrives whole.
func TestUnknownLengthBodyIsChunked(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%v %s", r.TransferEncoding, b)
	})
	req := post(t, srv.URL, nil)
	req.Body = io.NopCloser(io.MultiReader(strings.NewReader("hello, "), strings.NewReader("world")))
	req.ContentLength = -1
	if _, got := do(t, newTransport(t), req); got != "[chunked] hello, world" {
		t.Fatalf("got %q", got)
	}
}

// A stream arrives event by event, not when it ends.
func TestStreamArrivesAsSent(t *testing.T) {
	next := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "event: e\ndata: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-next
		}
	})
	resp, err := newTransport(t).RoundTrip(post(t, srv.URL, []byte("{}")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		var ev string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			ev += line
			if line == "\n" {
				break
			}
		}
		if want := fmt.Sprintf("event: e\ndata: %d\n\n", i); ev != want {
			t.Fatalf("event %d: %q", i, ev)
		}
		next <- struct{}{}
	}
}

// An answer closed before its end closes its connection (the rest is unread), promptly even
// when the upstream would send forever; the next exchange gets a new connection.
func TestEarlyCloseDropsConnection(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/forever" {
			for r.Context().Err() == nil {
				if _, err := w.Write(make([]byte, 1024)); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Write([]byte("ok"))
	})
	tr := newTransport(t)
	resp, err := tr.RoundTrip(post(t, srv.URL+"/forever", []byte("{}")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { resp.Body.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close of an endless answer hung")
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Close succeeded")
	}
	if _, got := do(t, tr, post(t, srv.URL, []byte("{}"))); got != "ok" {
		t.Fatal(got)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the closed answer's connection is not reused)", n)
	}
}

// Close from another goroutine ends a Read that waits for the upstream.
func TestCloseEndsWaitingRead(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("data: 1\n\n"))
		w.(http.Flusher).Flush()
		<-release
	})
	defer close(release)
	resp, err := newTransport(t).RoundTrip(post(t, srv.URL, []byte("{}")))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := resp.Body.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	resp.Body.Close()
	select {
	case err := <-errc:
		if err == nil || err == io.EOF {
			t.Fatalf("waiting read ended with %v, want an error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the waiting Read")
	}
}

// "Connection: close" and an HTTP/1.0 answer without a length both end their connection.
func TestConnectionCloseIsHonoured(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("bye"))
	})
	tr := newTransport(t)
	for range 3 {
		if _, got := do(t, tr, post(t, srv.URL, []byte("{}"))); got != "bye" {
			t.Fatal(got)
		}
	}
	if n := srv.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// rawServer answers each connection with a script of raw bytes, after reading one request.
func rawServer(t *testing.T, answer func(n int, c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				answer(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func readRequest(t *testing.T, br *bufio.Reader) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil
	}
	io.Copy(io.Discard, req.Body)
	return req
}

// Informational answers (103 Early Hints) are skipped; an answer read until the connection
// closes (no length, not chunked) arrives whole and its connection is not pooled.
func TestInformationalAndCloseDelimitedAnswers(t *testing.T) {
	url := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) == nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	})
	tr := newTransport(t)
	for range 2 {
		resp, got := do(t, tr, post(t, url, []byte("{}")))
		if resp.StatusCode != 200 || got != "until the end" {
			t.Fatalf("%d %q", resp.StatusCode, got)
		}
	}
}

// An upstream that closed an idle connection is noticed before the next request is written
// on it: that request goes out on a new connection and succeeds.
func TestUpstreamClosedIdleConnection(t *testing.T) {
	var conns atomic.Int32
	url := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if readRequest(t, br) == nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Then close, as servers do with idle connections, without saying so.
	})
	tr := newTransport(t)
	for i := range 3 {
		if _, got := do(t, tr, post(t, url, []byte("{}"))); got != "ok" {
			t.Fatal(got)
		}
		// Let the close arrive before the next request.
		time.Sleep(20 * time.Millisecond)
		if n := conns.Load(); int(n) != i+1 {
			t.Fatalf("after %d exchanges: %d connections", i+1, n)
		}
	}
}

// A cancelled context ends the wait for the answer's headers and for its body, with the
// context's error, and the connection is not reused.
func TestCancelEndsTheExchange(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Write([]byte("data: 1\n\n"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := newTransport(t)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	req := post(t, srv.URL+"/headers", []byte("{}")).WithContext(ctx)
	start := time.Now()
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting for headers: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	resp, err := tr.RoundTrip(post(t, srv.URL+"/body", []byte("{}")).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting for the body: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	tr.mu.Lock()
	pooled := len(tr.idle)
	tr.mu.Unlock()
	if pooled != 0 {
		t.Fatalf("%d hosts with pooled connections after cancelled exchanges", pooled)
	}
}

// The header timeout is a timeout error (the gateway answers 504 for it), and a body may take
// longer than it: it bounds the wait for headers only.
func TestResponseHeaderTimeout(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
			return
		}
		w.Write([]byte("data: 1\n\n"))
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		w.Write([]byte("data: 2\n\n"))
	})
	tr := newTransport(t)
	tr.ResponseHeaderTimeout = 100 * time.Millisecond
	_, err := tr.RoundTrip(post(t, srv.URL+"/slow", []byte("{}")))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout error", err)
	}
	if _, got := do(t, tr, post(t, srv.URL+"/stream", []byte("{}"))); got != "data: 1\n\ndata: 2\n\n" {
		t.Fatalf("stream slower than the header timeout: %q", got)
	}
}

// An upstream that refuses a large body answers before reading it and closes; that answer
// reaches the caller instead of a write error.
func TestEarlyAnswerToLargeBody(t *testing.T) {
	url := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
		// Read on slowly so the close is a FIN, not a reset that discards the answer.
		time.Sleep(200 * time.Millisecond)
	})
	resp, got := do(t, newTransport(t), post(t, url, make([]byte, 64<<20)))
	if resp.StatusCode != 413 || got != "too large" {
		t.Fatalf("%d %q", resp.StatusCode, got)
	}
}

// Header names and values that would split the request are refused before anything is sent.
func TestHeaderInjectionRefused(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {})
	for _, h := range []http.Header{
		{"X-Api-Key": {"sk-1\r\nX-Evil: 1"}},
		{"X-Api-Key": {"sk-1\nX-Evil: 1"}},
		{"Bad Name": {"v"}},
		{"Bad:Name": {"v"}},
		{"": {"v"}},
	} {
		req := post(t, srv.URL, []byte("{}"))
		req.Header = h
		if _, err := newTransport(t).RoundTrip(req); err == nil {
			t.Errorf("%q: sent", h)
		} else if strings.Contains(err.Error(), "sk-1") {
			t.Errorf("the error repeats the header's value: %v", err)
		}
	}
	for _, f := range []func(*http.Request){
		func(r *http.Request) { r.Host = "example.com\r\nX-Evil: 1" },
		func(r *http.Request) { r.Host = "example.com x" },
		func(r *http.Request) { r.Method = "POST /x HTTP/1.1\r\n" },
		func(r *http.Request) { r.Header = http.Header{"X-Api-Key": {"sk-1\x7f"}} },
	} {
		req := post(t, srv.URL, []byte("{}"))
		f(req)
		if _, err := newTransport(t).RoundTrip(req); err == nil {
			t.Errorf("%q %q %q: sent", req.Method, req.Host, req.Header)
		}
	}
	if n := srv.conns.Load(); n != 0 {
		t.Fatalf("%d connections opened for refused requests", n)
	}
}

// https: the handshake offers only http/1.1 (the test server also offers h2), and the
// connection is pooled like a plain one.
func TestTLS(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %v", r.Proto, r.TLS != nil)
	}, true, nil)
	tr := trusting(t, s)
	for range 3 {
		if _, got := do(t, tr, post(t, s.URL, []byte("{}"))); got != "HTTP/1.1 true" {
			t.Fatal(got)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	// A certificate the client does not trust is refused.
	if _, err := newTransport(t).RoundTrip(post(t, s.URL, []byte("{}"))); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
}

// The trace hooks the gateway relies on: WroteRequest decides whether an attempt may be
// retried (never once the body went out), GotConn reports reuse.
func TestTraceHooks(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	tr := newTransport(t)
	var wrote, reused []bool
	trace := &httptrace.ClientTrace{
		GotConn:      func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) },
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote = append(wrote, i.Err == nil) },
	}
	for range 2 {
		req := post(t, srv.URL, []byte("{}"))
		do(t, tr, req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	}
	if fmt.Sprint(wrote, reused) != "[true true] [false true]" {
		t.Fatalf("wrote %v, reused %v", wrote, reused)
	}
}

// Idle connections are closed after the idle timeout, by the reaper, without traffic.
func TestIdleConnectionsReaped(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	tr := newTransport(t)
	tr.IdleConnTimeout = 50 * time.Millisecond
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { do(t, tr, post(t, srv.URL, []byte("{}"))) })
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.mu.Lock()
		n, armed := len(tr.idle), tr.reaper != nil
		tr.mu.Unlock()
		if n == 0 && !armed && srv.closed.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the idle timeout: %d hosts pooled, reaper armed %v, %d closed", n, armed, srv.closed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Many exchanges at once, with -race: every answer is the request's own, and no more
// connections are opened than exchanges ran at once.
func TestConcurrentExchanges(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	tr := newTransport(t)
	const workers, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Go(func() {
			for j := range each {
				want := fmt.Sprintf(`{"worker":%d,"n":%d}`, i, j)
				resp, err := tr.RoundTrip(post(t, srv.URL, []byte(want)))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("got %q (%v), want %q", got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n > workers {
		t.Fatalf("%d connections for %d concurrent workers", n, workers)
	}
}

// Unsupported URLs are refused with a clear error and the body is closed.
func TestUnsupportedURL(t *testing.T) {
	for _, u := range []string{"ftp://example.com/x", "http:///nohost"} {
		req, err := http.NewRequest(http.MethodPost, u, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newTransport(t).RoundTrip(req); err == nil || !strings.HasPrefix(err.Error(), "h1: ") {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// A TLS upstream that closes idle connections (close_notify, then FIN) is noticed before the
// next request is written: it goes out on a new connection.
func TestTLSUpstreamClosesIdleConnection(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}, true, func(c *http.Server) { c.IdleTimeout = 30 * time.Millisecond })
	tr := trusting(t, s)
	for i := range 3 {
		if _, got := do(t, tr, post(t, s.URL, []byte("{}"))); got != "ok" {
			t.Fatal(got)
		}
		time.Sleep(150 * time.Millisecond)
		if n := s.conns.Load(); int(n) != i+1 {
			t.Fatalf("after %d exchanges: %d connections", i+1, n)
		}
	}
}

// Wait returns once bytes are there, without taking them, and at once on a closed body.
func TestWaitTakesNothing(t *testing.T) {
	next := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("data: 1\n\n"))
		w.(http.Flusher).Flush()
		<-next
		w.Write([]byte("data: 2\n\n"))
	})
	resp, err := newTransport(t).RoundTrip(post(t, srv.URL, []byte("{}")))
	if err != nil {
		t.Fatal(err)
	}
	w := resp.Body.(interface{ Wait() })
	w.Wait()
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); string(buf[:n]) != "data: 1\n\n" || err != nil {
		t.Fatalf("%q %v", buf[:n], err)
	}
	waited := make(chan struct{})
	go func() { w.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	next <- struct{}{}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return when bytes arrived")
	}
	if got, err := io.ReadAll(resp.Body); string(got) != "data: 2\n\n" || err != nil {
		t.Fatalf("%q %v", got, err)
	}
	resp.Body.Close()
	w.Wait() // returns at once on a finished body
}

// A request without body bytes goes out without a body, whatever form the empty body takes
// (net/http's clients use a zero Content-Length with a reader for "unknown"): a GET must not
// reach the upstream chunked. A body of unknown length still goes out chunked.
func TestEmptyBodiesSendNoBody(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s te=%v cl=%d body=%q", r.Method, r.TransferEncoding, r.ContentLength, b)
	})
	tr := newTransport(t)
	for _, c := range []struct {
		method string
		body   io.Reader
		want   string
	}{
		{"GET", bytes.NewReader(nil), `GET te=[] cl=0 body=""`},
		{"DELETE", strings.NewReader(""), `DELETE te=[] cl=0 body=""`},
		{"POST", bytes.NewReader(nil), `POST te=[] cl=0 body=""`},
		{"POST", io.MultiReader(strings.NewReader("ab"), strings.NewReader("c")), `POST te=[chunked] cl=-1 body="abc"`},
	} {
		req, err := http.NewRequest(c.method, srv.URL, c.body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 0
		if _, got := do(t, tr, req); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

// Reading a body again after its end gives io.EOF again, as net/http's bodies do
// (io.MultiReader and bufio read once more).
func TestReadAfterEndIsEOF(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	resp, err := newTransport(t).RoundTrip(post(t, srv.URL, []byte("{}")))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); string(b) != "ok" || err != nil {
		t.Fatalf("%q %v", b, err)
	}
	for range 2 {
		if n, err := resp.Body.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("read after the end: %d, %v; want 0, io.EOF", n, err)
		}
	}
}

// The upstream closes a reused connection as the next request goes out, before any answer: a
// request safe to repeat (GET) is sent again on a new connection, as net/http does; a POST is
// not, since the upstream may have acted on it.
func TestReusedConnectionClosedUnderRequest(t *testing.T) {
	url := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) == nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Take the next request, then close without a word.
		readRequest(t, br)
	})
	for _, c := range []struct {
		method string
		ok     bool
	}{{"GET", true}, {"POST", false}} {
		tr := newTransport(t)
		req, _ := http.NewRequest(c.method, url, nil)
		if _, got := do(t, tr, req); got != "ok" {
			t.Fatal(got)
		}
		req, _ = http.NewRequest(c.method, url, nil)
		resp, err := tr.RoundTrip(req)
		if c.ok {
			if err != nil {
				t.Fatalf("%s on a connection closed under it: %v, want a retry on a new one", c.method, err)
			}
			if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
				t.Fatalf("%s retried: %q", c.method, b)
			}
			resp.Body.Close()
		} else if err == nil {
			resp.Body.Close()
			t.Fatalf("%s was sent twice", c.method)
		}
	}
}

// A body longer than its declared length never reaches the upstream past that length, so
// the surplus cannot be read as a second request; the exchange fails. A shorter body fails
// at once, without waiting for an answer that cannot come.
func TestBodyLengthMismatch(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	url := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		for {
			// Only a request whose body arrived whole counts as taken.
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, req.Method+" "+req.URL.Path)
			mu.Unlock()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	declared := bytes.Repeat([]byte("a"), 8<<10)
	for name, body := range map[string]io.Reader{
		"writer-to": bytes.NewReader(append(slices.Clone(declared), smuggled...)),
		"reader":    io.MultiReader(bytes.NewReader(declared), strings.NewReader(smuggled)),
	} {
		req, _ := http.NewRequest(http.MethodPost, url+"/real", body)
		req.ContentLength = int64(len(declared))
		if resp, err := newTransport(t).RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s: a body longer than its Content-Length was sent", name)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/short", strings.NewReader("ab"))
	req.ContentLength = 10
	start := time.Now()
	if _, err := newTransport(t).RoundTrip(req); err == nil {
		t.Error("a body shorter than its Content-Length was sent")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a short body took %v to fail", d)
	}
	req, _ = http.NewRequest(http.MethodPost, url+"/nobody", nil)
	req.ContentLength = 10
	if _, err := newTransport(t).RoundTrip(req); err == nil {
		t.Error("a Content-Length without a body was sent")
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Fatalf("the upstream took requests %q", seen)
	}
}

// A reset while Wait waits is not lost: the next Read reports it, so a cut answer does not
// pass for a whole one (a close-delimited body would otherwise just end).
func TestWaitKeepsReset(t *testing.T) {
	url := rawServer(t, func(n int, c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) == nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n")
		time.Sleep(100 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0) // close with a reset
	})
	resp, err := newTransport(t).RoundTrip(post(t, url, []byte("{}")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	w := resp.Body.(interface{ Wait() })
	buf := make([]byte, 64)
	w.Wait()
	if n, err := resp.Body.Read(buf); string(buf[:n]) != "data: 1\n\n" || err != nil {
		t.Fatalf("%q %v", buf[:n], err)
	}
	w.Wait()
	if _, err := resp.Body.Read(buf); err == nil || err == io.EOF {
		t.Fatalf("after a reset: %v, want an error", err)
	}
}
