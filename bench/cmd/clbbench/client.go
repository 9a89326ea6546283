package main

// A lean HTTP/1.1 load client: pre-serialized requests written in one call, responses parsed
// with http.ReadResponse on a reused bufio.Reader. It costs a fraction of net/http's client,
// which shares the machine's two cores with the processes under test.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// request renders one HTTP/1.1 request, with Claude Code's headers, to host.
func request(host string, body []byte, extra ...string) []byte {
	var b bytes.Buffer
	b.Grow(len(body) + 512)
	b.WriteString("POST /v1/messages?beta=true HTTP/1.1\r\nHost: " + host + "\r\n")
	b.WriteString("Content-Type: application/json\r\nAccept: application/json\r\n")
	b.WriteString("Anthropic-Version: 2023-06-01\r\nAnthropic-Beta: claude-code-20250219,interleaved-thinking-2025-05-14\r\n")
	b.WriteString("User-Agent: claude-cli/2.1.0 (external, cli)\r\nX-App: cli\r\nX-Stainless-Lang: js\r\nX-Stainless-Retry-Count: 0\r\n")
	b.WriteString("X-Api-Key: sk-bench-client-key\r\n")
	for i := 0; i+1 < len(extra); i += 2 {
		b.WriteString(extra[i] + ": " + extra[i+1] + "\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.Write(body)
	return b.Bytes()
}

type hconn struct {
	nc  net.Conn
	br  *bufio.Reader
	buf []byte
}

func dial(addr string) (*hconn, error) { return dialSize(addr, 32<<10) }

// dialSize connects with a read buffer of size bytes (small for the thousands of held
// streams, whose client side is not what is measured).
func dialSize(addr string, size int) (*hconn, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &hconn{nc: nc, br: bufio.NewReaderSize(nc, min(size, 16<<10)), buf: make([]byte, size)}, nil
}

// joinErrs reports how many of errs failed and the first failure.
func joinErrs(errs []error) error {
	n := 0
	var first error
	for _, e := range errs {
		if e != nil {
			if first == nil {
				first = e
			}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d failed, the first: %w", n, len(errs), first)
}

func (c *hconn) close() { _ = c.nc.Close() }

// result is one exchange as the client saw it.
type result struct {
	status     int
	n          int64
	first      time.Duration // from the request's write to the first body byte
	last       time.Duration // to the end of the body
	sum        [32]byte      // SHA-256 of the body, when asked for
	keep       bool          // the connection may be reused
	errorFrame bool          // the body has an SSE error event
}

var errStatus = errors.New("unexpected status")

// do sends req and reads the whole answer. With hash it sums the body.
func (c *hconn) do(req []byte, hash bool) (result, error) {
	var r result
	start := time.Now()
	if _, err := c.nc.Write(req); err != nil {
		return r, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return r, err
	}
	r.status = resp.StatusCode
	r.keep = !resp.Close
	var h interface {
		io.Writer
		Sum([]byte) []byte
	}
	if hash {
		h = sha256.New()
	}
	for {
		n, err := resp.Body.Read(c.buf)
		if n > 0 {
			if r.n == 0 {
				r.first = time.Since(start)
			}
			r.n += int64(n)
			if h != nil {
				h.Write(c.buf[:n])
			}
			if bytes.Contains(c.buf[:n], []byte("event: error")) {
				r.errorFrame = true
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			r.keep = false
			return r, fmt.Errorf("body after %d bytes: %w", r.n, err)
		}
	}
	r.last = time.Since(start)
	if h != nil {
		copy(r.sum[:], h.Sum(nil))
	}
	if r.status != http.StatusOK {
		return r, fmt.Errorf("%w %d", errStatus, r.status)
	}
	return r, nil
}

// openUntil sends req and reads until the body holds marker, leaving the rest unread: the
// exchange stays open (a held stream).
func (c *hconn) openUntil(req []byte, marker []byte) error {
	if _, err := c.nc.Write(req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w %d", errStatus, resp.StatusCode)
	}
	var seen []byte
	for {
		n, err := resp.Body.Read(c.buf)
		seen = append(seen, c.buf[:n]...)
		if bytes.Contains(seen, marker) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream ended before %q: %w", marker, err)
		}
	}
}

// closedLoop sends total requests over conns connections, each connection one request at a
// time, as fast as answers come. It returns the wall time and the failed requests.
func closedLoop(addr string, req []byte, conns, total int) (time.Duration, int, error) {
	var mu sync.Mutex
	left, failed := total, 0
	var firstErr error
	next := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if left == 0 {
			return false
		}
		left--
		return true
	}
	fail := func(err error) {
		mu.Lock()
		failed++
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			var c *hconn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			for next() {
				if c == nil {
					var err error
					if c, err = dial(addr); err != nil {
						fail(err)
						continue
					}
				}
				r, err := c.do(req, false)
				if err != nil {
					fail(err)
				}
				if err != nil || !r.keep {
					c.close()
					c = nil
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), failed, firstErr
}

// fixedRate sends requests at rate per second for d (open loop: each is sent at its scheduled
// time on a free connection) and returns each request's latency.
func fixedRate(addr string, req []byte, rate int, d time.Duration) ([]time.Duration, int, error) {
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	type job struct{ at time.Time }
	jobs := make(chan job, n)
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	failed := 0
	var firstErr error
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			var c *hconn
			for j := range jobs {
				if w := time.Until(j.at); w > 0 {
					time.Sleep(w)
				}
				if c == nil {
					var err error
					if c, err = dial(addr); err != nil {
						mu.Lock()
						failed++
						firstErr = err
						mu.Unlock()
						continue
					}
				}
				r, err := c.do(req, false)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					lat = append(lat, r.last)
				}
				mu.Unlock()
				if err != nil || !r.keep {
					c.close()
					c = nil
				}
			}
			if c != nil {
				c.close()
			}
		})
	}
	// Warm the connections before the clock starts, then schedule.
	start := time.Now().Add(100 * time.Millisecond)
	for i := range n {
		jobs <- job{at: start.Add(time.Duration(i) * interval)}
	}
	close(jobs)
	wg.Wait()
	return lat, failed, firstErr
}

// dialMany opens n connections, at most 64 dials at a time (the listen backlog is finite).
func dialMany(addr string, n, size int) ([]*hconn, error) {
	conns := make([]*hconn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			conns[i], errs[i] = dialSize(addr, size)
		})
	}
	wg.Wait()
	if err := joinErrs(errs); err != nil {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// streamRun is n concurrent streams started together.
type streamRun struct {
	first, last []time.Duration
	cut         int // failed, shorter than, or different from what the upstream sent
	cutErr      error
}

// concurrentStreams opens n connections, then starts one stream on each at the same moment and
// compares every body with want (the upstream's bytes; zero means: do not compare).
func concurrentStreams(addr string, req []byte, n int, want [32]byte) (streamRun, error) {
	conns, err := dialMany(addr, n, 8<<10)
	if err != nil {
		return streamRun{}, err
	}
	var run streamRun
	var mu sync.Mutex
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			defer c.close()
			<-gate
			r, err := c.do(req, true)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				run.cut++
				if run.cutErr == nil {
					run.cutErr = err
				}
			case want != [32]byte{} && r.sum != want:
				run.cut++
				if run.cutErr == nil {
					run.cutErr = fmt.Errorf("body differs from the upstream's (%d bytes, error event %v)", r.n, r.errorFrame)
				}
			default:
				run.first = append(run.first, r.first)
				run.last = append(run.last, r.last)
			}
		})
	}
	close(gate)
	wg.Wait()
	return run, nil
}

// holdStreams opens n streams that stay open (the upstream holds them after the first
// content event) and returns their connections; closing them ends the streams.
func holdStreams(addr string, req []byte, n int) ([]*hconn, error) {
	conns, err := dialMany(addr, n, 2<<10)
	if err != nil {
		return nil, err
	}
	errs := make([]error, n)
	sem := make(chan struct{}, 128)
	var wg sync.WaitGroup
	for i, c := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.nc.SetDeadline(time.Now().Add(30 * time.Second))
			errs[i] = c.openUntil(req, []byte("content_block_delta"))
			_ = c.nc.SetDeadline(time.Time{})
		})
	}
	wg.Wait()
	if err := joinErrs(errs); err != nil {
		for _, c := range conns {
			c.close()
		}
		return nil, err
	}
	return conns, nil
}
