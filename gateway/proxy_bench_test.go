package gateway

// Benchmarks of one request through Gateway.ServeHTTP (plain and streamed, 1 KB to 2 MB
// bodies) against an in-process upstream, with allocations, and the regression checks that
// large bodies cost one copy. Figures and how they compare with the Go floor and nginx:
// docs/performance.md; the cross-process benchmark is bench/cmd/clbbench.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/store/memory"
)

// benchBody is a Claude Code-shaped request body of about size bytes: system prompt and tools
// padding, one user turn, metadata.user_id with a session, and the model.
func benchBody(size int, stream bool) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"claude-sonnet-5-5","messages":[{"role":"user","content":[{"type":"text","text":"fix the tests"}]}],"system":[{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude."}],"tools":[`)
	for i := 0; b.Len() < size-300; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":"Tool` + strconv.Itoa(i) + `","description":"Executes a bash command.\n\nBefore \"mkdir foo/bar\", check that \"foo\" exists.","input_schema":{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}}`)
	}
	b.WriteString(`],"metadata":{"user_id":"user_4f1d0c6e_account_6b1f7a9e_session_0d6f1c2e-9a1b"},"max_tokens":32000`)
	if stream {
		b.WriteString(`,"stream":true`)
	}
	b.WriteString(`}`)
	return b.Bytes()
}

// sinkWriter is a ResponseWriter (and Flusher) that counts what it is sent: the gateway's
// cost without a client connection's.
type sinkWriter struct {
	h      http.Header
	status int
	n      int64
	body   bytes.Buffer // kept only when keep is set
	keep   bool
}

func (s *sinkWriter) Header() http.Header { return s.h }
func (s *sinkWriter) WriteHeader(c int) {
	if s.status == 0 {
		s.status = c
	}
}
func (s *sinkWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	s.n += int64(len(p))
	if s.keep {
		s.body.Write(p)
	}
	return len(p), nil
}
func (s *sinkWriter) Flush() {}

func (s *sinkWriter) reset() {
	clear(s.h)
	s.status, s.n = 0, 0
	s.body.Reset()
}

// rewindBody is a request body that can be replayed without allocating.
type rewindBody struct {
	b   []byte
	off int
}

func (r *rewindBody) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}
func (r *rewindBody) Close() error { return nil }

// benchGateway is a gateway as cmd/claude-lb wires it (memory store, Prometheus metrics, an
// info-level text logger, here writing to io.Discard) in front of upstream.
func benchGateway(tb testing.TB, upstreamURL string) *Gateway {
	tb.Helper()
	cfg := config.Default()
	cfg.Upstream.URL = upstreamURL
	cfg.Accounts = []config.Account{
		{Name: "personal", Plan: "console", APIKey: keyPersonal},
		{Name: "work", Plan: "max", OAuthToken: tokWork},
		{Name: "team", Plan: "max", OAuthToken: tokTeam},
	}
	cfg.Hash = "bench"
	st := memory.New(memory.Options{HistorySize: cfg.History.Size})
	m := NewMetrics(prometheus.NewRegistry())
	gw, err := New(cfg, Options{
		Store: st, AdminStore: st, Observer: m, Metrics: m.Handler(), Replica: "bench",
		Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if t, ok := gw.client.HTTPClient.Transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
	})
	return gw
}

// benchRequest is a Claude Code request with body, reusable across iterations.
func benchRequest(body []byte, stream bool) (*http.Request, *rewindBody) {
	rb := &rewindBody{b: body}
	r := httptest.NewRequest(http.MethodPost, "/v1/messages?beta=true", nil)
	r.Body, r.ContentLength = rb, int64(len(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Anthropic-Version", "2023-06-01")
	r.Header.Set("Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
	r.Header.Set("User-Agent", "claude-cli/2.1.0 (external, cli)")
	r.Header.Set("X-Stainless-Lang", "js")
	r.Header.Set("X-Api-Key", clientKey)
	if stream {
		r.Header.Set("Accept", "text/event-stream")
	}
	return r, rb
}

var benchSizes = []struct {
	name string
	size int
}{{"1KB", 1 << 10}, {"100KB", 100 << 10}, {"2MB", 2 << 20}}

// BenchmarkProxy is one request through ServeHTTP to the fake Anthropic API (in process, not
// recording) and back: reading and scanning the body, selection, the upstream round trip
// through the retry client, relaying (with the usage tap), metrics, history and the log line.
func BenchmarkProxy(b *testing.B) {
	fake := fakeapi.New(b)
	fake.Record(false)
	gw := benchGateway(b, fake.URL)
	for _, s := range benchSizes {
		for _, stream := range []bool{false, true} {
			if stream && s.size > 1<<10 {
				continue
			}
			name := "plain/" + s.name
			if stream {
				name = "stream/" + s.name
			}
			b.Run(name, func(b *testing.B) {
				body := benchBody(s.size, stream)
				r, rb := benchRequest(body, stream)
				w := &sinkWriter{h: http.Header{}}
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					rb.off = 0
					w.reset()
					gw.ServeHTTP(w, r)
					if w.status != http.StatusOK || w.n == 0 {
						b.Fatalf("status %d, %d bytes", w.status, w.n)
					}
				}
			})
		}
	}
}

// BenchmarkUpstreamDirect is the same exchange without the gateway: the same transport
// straight to the fake. BenchmarkProxy minus this is what the gateway adds.
func BenchmarkUpstreamDirect(b *testing.B) {
	fake := fakeapi.New(b)
	fake.Record(false)
	tr := NewTransport(config.Default().Upstream)
	b.Cleanup(tr.CloseIdleConnections)
	buf := make([]byte, 32<<10)
	for _, s := range benchSizes {
		b.Run("plain/"+s.name, func(b *testing.B) {
			body := benchBody(s.size, false)
			tmpl, rb := benchRequest(body, false)
			tmpl.Header.Set("X-Api-Key", keyPersonal)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rb.off = 0
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, fake.URL+"/v1/messages?beta=true", rb)
				req.ContentLength = int64(len(body))
				req.Header = tmpl.Header
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
				resp.Body.Close()
			}
		})
	}
}

// drainUpstream is an upstream that reads the body without keeping it and answers a fixed
// Messages reply: whatever a request allocates besides is the gateway's (and net/http's).
func drainUpstream(tb testing.TB) *httptest.Server {
	reply := fakeapi.MessageJSON("claude-sonnet-5-5", "ok", 10, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(reply)))
		_, _ = w.Write(reply)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// TestProxyBodyCopies: a large body costs one copy (the buffer it is read into, replayed on
// every attempt) — no JSON decode, no re-encode, no second buffer. Measured as bytes
// allocated per request, which a decode of a 2 MB body would multiply.
func TestProxyBodyCopies(t *testing.T) {
	up := drainUpstream(t)
	gw := benchGateway(t, up.URL)
	for _, size := range []int{100 << 10, 2 << 20} {
		body := benchBody(size, false)
		r, rb := benchRequest(body, false)
		w := &sinkWriter{h: http.Header{}}
		do := func() {
			rb.off = 0
			w.reset()
			gw.ServeHTTP(w, r)
			if w.status != http.StatusOK {
				t.Fatalf("status %d", w.status)
			}
		}
		for range 5 {
			do()
		}
		const n = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range n {
			do()
		}
		runtime.ReadMemStats(&after)
		perReq := float64(after.TotalAlloc-before.TotalAlloc) / n
		// One copy of the body plus a fixed allowance for the request's own bookkeeping
		// (headers, buffers, the history entry), which does not grow with the body.
		limit := 1.25*float64(len(body)) + 256<<10
		t.Logf("%d KB body: %.0f KB allocated per request (%.2f× the body)", len(body)>>10, perReq/1024, perReq/float64(len(body)))
		if perReq > limit {
			t.Errorf("%d byte body: %.0f bytes allocated per request, want at most %.0f (one copy of the body)", len(body), perReq, limit)
		}
	}
}

// TestProxyAllocs bounds the allocations of one plain request through the gateway, upstream
// round trip included (the transport's allocations count too): a regression guard, set above
// today's count (see docs/performance.md for the breakdown).
func TestProxyAllocs(t *testing.T) {
	up := drainUpstream(t)
	gw := benchGateway(t, up.URL)
	r, rb := benchRequest(benchBody(1<<10, false), false)
	w := &sinkWriter{h: http.Header{}}
	do := func() {
		rb.off = 0
		w.reset()
		gw.ServeHTTP(w, r)
	}
	do()
	got := testing.AllocsPerRun(200, do)
	t.Logf("%v allocations per plain request", got)
	if w.status != http.StatusOK {
		t.Fatalf("status %d", w.status)
	}
	if got > proxyAllocLimit {
		t.Fatalf("a plain request allocates %v times, want at most %d", got, proxyAllocLimit)
	}
}

// proxyAllocLimit is TestProxyAllocs' bound.
const proxyAllocLimit = 125
