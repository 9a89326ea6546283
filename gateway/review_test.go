package gateway

// Review tests: each one enforces a line of DESIGN.md that the request path broke when it was
// written. They are fast (no test waits more than a couple of seconds, and only to fail).

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/internal/h1"
	"github.com/claude-lb/claude-lb/routing"
)

// opusStream is a streaming Opus request body.
const opusStream = `{"model":"claude-opus-5-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`

// waitHistory waits until the store holds n finished requests (finishUsage records each one).
func waitHistory(t *testing.T, e *env, n int) []routing.Usage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, err := e.store.History(context.Background(), routing.HistoryQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(h) >= n {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("history has %d entries, want %d", len(h), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hardMarks(t *testing.T, e *env, account string) []routing.Mark {
	t.Helper()
	st, err := e.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []routing.Mark
	for _, m := range st.Accounts[account].Marks {
		if !m.Soft && m.Until.After(time.Now()) {
			out = append(out, m)
		}
	}
	return out
}

// DESIGN.md §6: "When every attempt fails, the client gets the last upstream answer unchanged
// (status, headers, body)." A stream whose holdback fails while the remaining candidates are
// all cooling down must reach the client whole (its message_start and its error event), not
// as a 200 whose held-back bytes were thrown away.
func TestReviewFailedHoldbackWithNoUsableNextAccountKeepsStream(t *testing.T) {
	for _, mode := range []string{"overloaded event", "cut"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, nil)
			if err := e.store.Mark(context.Background(), routing.Mark{Account: "team", Until: time.Now().Add(time.Hour), Reason: "review: cooling"}); err != nil {
				t.Fatal(err)
			}
			e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
				ev := fakeapi.StreamEvents(r.Model, []string{"x"}, 1, 1)[:1] // message_start only
				if mode == "cut" {
					return &fakeapi.Reply{Events: ev, CutAfter: 1}
				}
				return &fakeapi.Reply{Events: append(ev, fakeapi.ErrorEvent("overloaded_error", "Overloaded"))}
			})
			code, _, body := e.post("/v1/messages", opusStream)
			if got := e.tried(); len(got) != 1 || got[0] != "work" {
				t.Fatalf("tried %v, want [work] (team is cooling)", got)
			}
			if code != 200 || !strings.Contains(body, "event: message_start") || !strings.Contains(body, "event: error") {
				t.Fatalf("client got %d %q: the held-back opening and the error event were dropped", code, body)
			}
		})
	}
}

// bodyHook wraps every upstream response body of a transport and reports each Read call.
type bodyHook struct {
	rt     http.RoundTripper
	onRead func(n int) // called before the n-th Read (1-based) of a response body
}

func (b *bodyHook) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &hookedBody{ReadCloser: resp.Body, onRead: b.onRead}
	return resp, nil
}

type hookedBody struct {
	io.ReadCloser
	n      int
	onRead func(int)
}

func (h *hookedBody) Read(p []byte) (int, error) {
	h.n++
	h.onRead(h.n)
	return h.ReadCloser.Read(p)
}

// DESIGN.md §4 ("a client that disconnects cancels the upstream request at once") and §6 (only
// upstream failures bench an account): a client that hangs up while its stream is held back
// is not an upstream failure. The account must not be benched, and no other account may be
// picked (and counted) for a request nobody waits for any more.
func TestReviewClientGoneDuringHoldbackIsNotAnUpstreamFailure(t *testing.T) {
	fake := fakeapi.New(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		// message_start, then silence: the gateway holds the stream back (holdback 2s).
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"x"}, 1, 1), Hold: release, HoldAfter: 1}
	})
	cfg := poolConfig(fake)
	blocked := make(chan struct{})
	var once sync.Once
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	e := newEnvWith(t, fake, cfg, &bodyHook{rt: tr, onRead: func(n int) {
		if n == 2 { // message_start was read; the holdback now waits for more
			once.Do(func() { close(blocked) })
		}
	}})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/messages", strings.NewReader(opusStream))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway never started holding the stream back")
	}
	cancel()
	<-done
	h := waitHistory(t, e, 1)
	if m := hardMarks(t, e, "work"); len(m) != 0 {
		t.Errorf("work was benched because the client hung up: %+v (history tried %v)", m, h[0].Tried)
	}
	st, _ := e.store.Stats(context.Background())
	if n := st.Accounts["team"].Requests; n != 0 {
		t.Errorf("team was picked (and counted %d) for a request whose client was gone (tried %v)", n, h[0].Tried)
	}
}

// DESIGN.md §1/§5: Opus models go to max-plan accounts only. The upstream reads the body as
// JSON whatever the spelling of its keys' escapes or of the media type (RFC 9110 §8.3.1: media
// types are case-insensitive), so the gateway must read the same model, or refuse the request.
func TestReviewOpusNeverReachesConsoleAccount(t *testing.T) {
	tests := []struct {
		name, contentType, body string
	}{
		{"escaped key", "application/json", `{"mod\u0065l":"claude-opus-5-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`},
		{"media type in capitals", "Application/JSON", msgBody("claude-opus-5-5")},
		{"text/plain (a browser's simple request)", "text/plain;charset=UTF-8", msgBody("claude-opus-5-5")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil) // personal (console) is first in config order
			code, _, body := e.post("/v1/messages", tt.body, "Content-Type", tt.contentType)
			for _, r := range e.fake.Requests() {
				if strings.Contains(r.Model, "opus") && r.Credential == keyPersonal {
					t.Fatalf("Opus request (%d %s) was sent with the console account's key", code, body)
				}
			}
		})
	}
}

// DESIGN.md §4: "Proxied to the upstream (method, path, query and body unchanged): every path
// under /v1/". The path must arrive as the client sent it (escapes included), a path that is
// not under /v1/ once cleaned must not go upstream with a pooled credential, and no error may
// echo the upstream URL to the client (an internal address; STYLE.md §4 keeps internals out of
// what the client sees).
func TestReviewPathForwardedUnchanged(t *testing.T) {
	tests := []struct {
		raw      string // as sent on the wire
		wantPath string // as the upstream's server decodes it
	}{
		{"/v1/files/file_a%3Fb", "/v1/files/file_a?b"},
		{"/v1/files/file_a%23b", "/v1/files/file_a#b"},
		{"/v1/files/50%25off", "/v1/files/50%off"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			e := newEnv(t, nil)
			req, err := http.NewRequest(http.MethodGet, e.srv.URL+tt.raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), e.fake.URL) || strings.Contains(string(b), "127.0.0.1") {
				t.Errorf("the answer echoes the upstream URL: %d %s", resp.StatusCode, b)
			}
			reqs := e.fake.Requests()
			if len(reqs) != 1 || reqs[0].Path != tt.wantPath {
				var got []string
				for _, r := range reqs {
					got = append(got, r.Path+"?"+r.RawQuery)
				}
				t.Fatalf("upstream saw %q, want path %q (client got %d %s)", got, tt.wantPath, resp.StatusCode, b)
			}
		})
	}
	t.Run("dot segments", func(t *testing.T) {
		e := newEnv(t, nil)
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/../api/oauth/profile", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, r := range e.fake.Requests() {
			if p := path.Clean(r.Path); !strings.HasPrefix(p, "/v1/") {
				t.Fatalf("%q (%q cleaned) went upstream with %s's credential", r.Path, p, accountOf(r.Credential))
			}
		}
	})
}

// DESIGN.md §4 header rules: the oauth beta is merged in "for oauth_token" accounts. After a
// failover from an OAuth account to an API-key account, the API-key attempt must carry the
// client's betas only.
func TestReviewOAuthBetaNotCarriedToAPIKeyRetry(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Accounts = []config.Account{
			{Name: "work", Plan: "max", OAuthToken: tokWork},
			{Name: "personal", Plan: "console", APIKey: keyPersonal},
		}
	})
	e.fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Status: 529} }, tokWork))
	code, _, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), "anthropic-beta", "prompt-caching-2024-07-31")
	reqs := e.fake.Requests()
	if code != 200 || len(reqs) != 2 || accountOf(reqs[1].Credential) != "personal" {
		t.Fatalf("%d %s, tried %v", code, body, e.tried())
	}
	if b := reqs[1].Header.Values("Anthropic-Beta"); len(b) != 1 || b[0] != "prompt-caching-2024-07-31" {
		t.Fatalf("the API-key attempt carried anthropic-beta %q; want only the client's", b)
	}
}

// slowReader returns first, then (after sleeping d) second, then EOF.
type slowReader struct {
	first, second []byte
	d             time.Duration
	step          int
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.step++
	switch s.step {
	case 1:
		return copy(p, s.first), nil
	case 2:
		time.Sleep(s.d)
		return copy(p, s.second), nil
	}
	return 0, io.EOF
}

// DESIGN.md §6: holdback exists "so that an upstream that fails right after opening a stream
// can still be failed over invisibly". When the error arrives as the holdback timer fires, the
// relay must either commit (and pass the error on) or fail over having sent nothing; never
// both. Both at once sends the client a first stream's opening plus its error, and then a
// second stream, and leaves the first relay's ping timer writing to the response forever.
// testing/synctest makes the two events simultaneous; the scheduler picks the order.
func TestReviewHoldbackTimerNeverCommitsAFailedStream(t *testing.T) {
	const start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n"
	const overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
	bad := 0
	for range 300 {
		synctest.Test(t, func(t *testing.T) {
			rec := httptest.NewRecorder()
			at := testAttempt(t, rec)
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
				Body: io.NopCloser(&slowReader{first: []byte(start), second: []byte(overloaded), d: time.Second})}
			rl := newRelay(at, resp)
			failed := rl.holdback(time.Second)
			rl.mu.Lock()
			committed, ping := rl.committed, rl.ping
			if ping != nil {
				ping.Stop()
			}
			rl.mu.Unlock()
			if failed != "" && (committed || rec.Body.Len() > 0 || ping != nil) {
				bad++
			}
		})
	}
	if bad > 0 {
		t.Fatalf("in %d of 300 runs the holdback reported a failure (the gateway fails over) after its timer had already sent the stream to the client", bad)
	}
}

// DESIGN.md §6: "When the upstream is silent for 10s the gateway sends an event: ping". That
// holds from the moment the stream is committed, also before the upstream's first event.
func TestReviewIdlePingBeforeFirstEvent(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Routing.Holdback = 10 * time.Millisecond })
	e.gw.idlePing = 40 * time.Millisecond
	release := make(chan struct{})
	var closeOnce sync.Once
	rel := func() { closeOnce.Do(func() { close(release) }) }
	t.Cleanup(rel)
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"a"}, 1, 1), Hold: release, HoldAfter: 0}
	})
	resp, err := http.Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(`{"model":"claude-sonnet-5-5","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		got <- string(buf[:n])
	}()
	select {
	case s := <-got:
		if !strings.HasPrefix(s, "event: ping\n") {
			t.Fatalf("first bytes %q, want a gateway ping", s)
		}
	case <-time.After(2 * time.Second):
		rel()
		t.Fatalf("no ping in 2s (50 idle-ping periods) while the upstream was silent; first bytes after release: %q", <-got)
	}
}

// DESIGN.md §4: x-claude-lb-overhead-ms is "time spent in the gateway itself". A stream whose
// opening frames the holdback timer commits must not count the upstream's silence as overhead.
func TestReviewOverheadExcludesHoldbackWait(t *testing.T) {
	const holdback = 400 * time.Millisecond
	e := newEnv(t, func(c *config.Config) { c.Routing.Holdback = holdback })
	release := make(chan struct{})
	var closeOnce sync.Once
	t.Cleanup(func() { closeOnce.Do(func() { close(release) }) })
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"a"}, 1, 1), Hold: release, HoldAfter: 1}
	})
	resp, err := http.Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(`{"model":"claude-sonnet-5-5","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	closeOnce.Do(func() { close(release) })
	ms, err := strconv.ParseFloat(resp.Header.Get("X-Claude-Lb-Overhead-Ms"), 64)
	if err != nil {
		t.Fatal(err)
	}
	if ms >= float64(holdback/time.Millisecond)/2 {
		t.Fatalf("x-claude-lb-overhead-ms = %.1f: the upstream's %v of silence was counted as gateway time", ms, holdback)
	}
}

// closeCounter is the gateway's real transport, counting CloseIdleConnections calls.
type closeCounter struct {
	Transport
	closes atomic.Int32
}

func (c *closeCounter) CloseIdleConnections() {
	c.closes.Add(1)
	c.Transport.CloseIdleConnections()
}

// DESIGN.md §11 (added latency p50 ≤ 0.25 ms): the upstream connection pool is shared by every
// request. go-retryablehttp calls HTTPClient.CloseIdleConnections on every failed Do (client
// gone, deadline, all attempts unreachable), so one client pressing Esc before the first byte
// drops every idle upstream connection, and the next requests pay new TCP+TLS handshakes.
func TestReviewFailedRequestKeepsConnectionPool(t *testing.T) {
	fake := fakeapi.New(t)
	fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		if strings.Contains(string(r.Body), "slow") {
			return &fakeapi.Reply{Delay: 10 * time.Second}
		}
		return nil
	})
	cfg := poolConfig(fake)
	tr := &closeCounter{Transport: NewTransport(cfg.Upstream)}
	t.Cleanup(tr.Transport.CloseIdleConnections)
	e := newEnvWith(t, fake, cfg, tr)
	if code, _, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5")); code != 200 {
		t.Fatal(code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/messages", strings.NewReader(`{"model":"claude-sonnet-5-5","slow":1}`))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := fake.WaitCount(wctx, 2); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	waitHistory(t, e, 2)
	if n := tr.closes.Load(); n != 0 {
		t.Fatalf("one client hanging up closed the shared upstream pool's idle connections %d time(s)", n)
	}
}

// DESIGN.md §4: "Each response carries x-claude-lb-account, x-claude-lb-attempts and
// x-claude-lb-overhead-ms". The gateway's own 502 after trying every account must say how
// many attempts it made.
func TestReviewGatewayErrorsCarryAttempts(t *testing.T) {
	fake := fakeapi.New(t)
	cfg := poolConfig(fake)
	e := newEnvWith(t, fake, cfg, roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("connection reset by peer")
	}))
	code, hdr, body := e.post("/v1/messages", msgBody("claude-opus-5-5"))
	if code != 502 {
		t.Fatalf("%d %s", code, body)
	}
	if hdr.Get("X-Claude-Lb-Attempts") != "2" || hdr.Get("X-Claude-Lb-Overhead-Ms") == "" {
		t.Fatalf("502 after 2 attempts carries attempts %q, overhead %q", hdr.Get("X-Claude-Lb-Attempts"), hdr.Get("X-Claude-Lb-Overhead-Ms"))
	}
}

// DESIGN.md §2/§4: upstream.url is a base URL (`https://api.anthropic.com`), and the path is
// forwarded unchanged. `https://api.anthropic.com/` (with the slash, as often written, and
// accepted by validate) must not turn /v1/messages into //v1/messages.
func TestReviewUpstreamURLWithTrailingSlash(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Upstream.URL += "/" })
	code, _, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
	reqs := e.fake.Requests()
	if code != 200 || len(reqs) != 1 || reqs[0].Path != "/v1/messages" {
		var got []string
		for _, r := range reqs {
			got = append(got, r.Path)
		}
		t.Fatalf("%d %s; upstream saw paths %q", code, body, got)
	}
}

// DESIGN.md §6 table: a network failure moves on to the next account only "before the request
// body was sent". An upstream that received the whole body and then timed out before its
// headers (upstream.header_timeout) may be generating, and billing, the answer: sending the
// same body to a second account runs (and bills) it twice, and duplicates non-idempotent calls
// such as batch creation and file uploads.
func TestReviewNoRetryAfterBodyWasSent(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Upstream.HeaderTimeout = 200 * time.Millisecond })
	e.fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Delay: 3 * time.Second} }, tokWork))
	body := msgBody("claude-opus-5-5")
	code, _, _ := e.post("/v1/messages", body)
	reqs := e.fake.Requests()
	if len(reqs) > 1 && reqs[0].BodyLen == len(body) {
		t.Fatalf("work received the whole body, timed out before its headers, and the request was sent again to %v (client got %d)", e.tried()[1:], code)
	}
}

// The upstream transport: claude-lb's own HTTP/1.1 transport by default; net/http's (HTTP/2,
// proxies) when upstream.http2 asks for it or a proxy from the environment applies.
func TestNewTransportChoice(t *testing.T) {
	u := config.Default().Upstream
	if _, ok := NewTransport(u).(*h1.Transport); !ok {
		t.Errorf("default: %T, want *h1.Transport", NewTransport(u))
	}
	u.HTTP2 = true
	if _, ok := NewTransport(u).(*http.Transport); !ok {
		t.Errorf("http2: %T, want *http.Transport", NewTransport(u))
	}
}

// Requests without a body reach the upstream without one (no Transfer-Encoding: some
// proxies refuse a GET with a body as a smuggling attempt), and a small 429 relayed to the
// client (its body peeked for the classification, then read again) ends cleanly, with no
// error in the log or the history.
func TestBodylessRequestsAndRelayed429(t *testing.T) {
	e := newEnv(t, nil)
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		req, _ := http.NewRequest(m, e.srv.URL+"/v1/files/file_1", nil)
		req.Header.Set("x-api-key", clientKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	reqs := e.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d upstream requests", len(reqs))
	}
	for _, r := range reqs {
		if len(r.TransferEncoding) != 0 || r.ContentLength != 0 || r.BodyLen != 0 {
			t.Errorf("%s arrived with te=%v cl=%d body=%d bytes, want no body", r.Method, r.TransferEncoding, r.ContentLength, r.BodyLen)
		}
	}

	e.fake.Script(func(*fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Status: 429, Body: fakeapi.ErrorJSON("rate_limit_error", "Extra usage is required for long context requests.")}
	})
	code, _, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
	if code != 429 || !strings.Contains(body, "Extra usage is required") {
		t.Fatalf("%d %s", code, body)
	}
	if logs := e.logs.String(); strings.Contains(logs, "h1:") || strings.Contains(logs, "relay") {
		t.Fatalf("the relayed 429 logged an error:\n%s", logs)
	}
	h, err := e.store.History(context.Background(), routing.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) == 0 || h[0].Status != 429 || h[0].Error != "" {
		t.Fatalf("history: %+v", h)
	}
}

// writeCounter counts the writes on the upstream connections.
type writeCounter struct {
	net.Conn
	n *atomic.Int32
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// A large body goes upstream in a couple of writes from the buffer it was read into (one
// copy, DESIGN.md section 11), not 4 KB at a time: go-retryablehttp must hand the replayed
// body to the transport as it is.
func TestLargeBodyGoesOutInFewWrites(t *testing.T) {
	fake := fakeapi.New(t)
	cfg := poolConfig(fake)
	var writes atomic.Int32
	tr := &h1.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return writeCounter{c, &writes}, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	e := newEnvWith(t, fake, cfg, tr)
	body := `{"model":"claude-sonnet-5-5","max_tokens":8,"messages":[{"role":"user","content":"` + strings.Repeat("x", 2<<20) + `"}]}`
	if code, _, _ := e.post("/v1/messages", body); code != 200 {
		t.Fatal(code)
	}
	if n := writes.Load(); n > 3 {
		t.Fatalf("a 2 MB body took %d writes upstream, want at most 3", n)
	}
	if r := fake.Requests(); len(r) != 1 || r[0].BodyLen != len(body) {
		t.Fatalf("upstream got %d requests", len(r))
	}
}

// An https upstream, as api.anthropic.com is: the Go SDK streams through the gateway over
// h1 (HTTP/1.1 on TLS) and over net/http's transport with HTTP/2
// (upstream.http2), and gets the whole message both ways.
func TestTLSUpstream(t *testing.T) {
	for _, c := range []struct {
		name, proto string
		rt          func(*tls.Config) Transport
	}{
		{"h1", "HTTP/1.1", func(tc *tls.Config) Transport { return &h1.Transport{TLSClientConfig: tc} }},
		{"http2", "HTTP/2.0", func(tc *tls.Config) Transport {
			return &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := fakeapi.NewTLS(t)
			cfg := poolConfig(fake)
			rt := c.rt(fake.ClientTLS())
			t.Cleanup(rt.CloseIdleConnections)
			e := newEnvWith(t, fake, cfg, rt)
			for range 2 {
				msg, err := e.streamOpus()
				if err != nil {
					t.Fatal(err)
				}
				if len(msg.Content) == 0 || msg.StopReason == "" {
					t.Fatalf("incomplete message: %+v", msg)
				}
			}
			for _, r := range fake.Requests() {
				if r.Proto != c.proto {
					t.Fatalf("upstream saw %s, want %s", r.Proto, c.proto)
				}
			}
		})
	}
}
