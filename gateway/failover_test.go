package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
)

// failFor scripts the fake: requests with the given credentials get reply, the rest the
// default answer.
func failFor(reply func(r *fakeapi.Request) *fakeapi.Reply, creds ...string) func(r *fakeapi.Request) *fakeapi.Reply {
	return func(r *fakeapi.Request) *fakeapi.Reply {
		if slices.Contains(creds, r.Credential) {
			return reply(r)
		}
		return nil
	}
}

// tried lists the accounts of the upstream requests in order.
func (e *env) tried() []string {
	var out []string
	for _, r := range e.fake.Requests() {
		out = append(out, accountOf(r.Credential))
	}
	return out
}

func TestFailoverTable(t *testing.T) {
	reset := strconv.FormatInt(time.Now().Add(10*time.Minute).Unix(), 10)
	tests := []struct {
		name       string
		reply      *fakeapi.Reply
		wantStatus int
		wantTried  []string // for an Opus request; work is always first (config order)
		cooled     bool     // work is skipped by the next Opus request
	}{
		{"429 subscription reset", &fakeapi.Reply{Status: 429, Header: http.Header{"Anthropic-Ratelimit-Unified-Status": {"rejected"}, "Anthropic-Ratelimit-Unified-Reset": {reset}}}, 200, []string{"work", "team"}, true},
		{"429 retry-after", &fakeapi.Reply{Status: 429, Header: http.Header{"Retry-After": {"120"}}}, 200, []string{"work", "team"}, true},
		{"429 without reset", &fakeapi.Reply{Status: 429}, 200, []string{"work", "team"}, true},
		{"429 request scoped", &fakeapi.Reply{Status: 429, Body: fakeapi.ErrorJSON("rate_limit_error", "Extra usage is required for long context requests.")}, 200, []string{"work", "team"}, false},
		{"529 overloaded", &fakeapi.Reply{Status: 529}, 200, []string{"work", "team"}, false},
		{"500", &fakeapi.Reply{Status: 500}, 200, []string{"work", "team"}, false},
		{"503", &fakeapi.Reply{Status: 503}, 200, []string{"work", "team"}, false},
		{"401", &fakeapi.Reply{Status: 401}, 200, []string{"work", "team"}, true},
		{"403", &fakeapi.Reply{Status: 403}, 200, []string{"work", "team"}, true},
		{"400 returned as is", &fakeapi.Reply{Status: 400, Body: fakeapi.ErrorJSON("invalid_request_error", "max_tokens: too large")}, 400, []string{"work"}, false},
		{"404 returned as is", &fakeapi.Reply{Status: 404}, 404, []string{"work"}, false},
		{"413 returned as is", &fakeapi.Reply{Status: 413}, 413, []string{"work"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply { return tt.reply }, tokWork))
			code, hdr, body := e.post("/v1/messages", msgBody("claude-opus-5-5"))
			if code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", code, tt.wantStatus, body)
			}
			if got := e.tried(); !slices.Equal(got, tt.wantTried) {
				t.Fatalf("tried %v, want %v", got, tt.wantTried)
			}
			if code == 200 && (hdr.Get("X-Claude-Lb-Account") != "team" || hdr.Get("X-Claude-Lb-Attempts") != "2") {
				t.Fatalf("headers %v", hdr)
			}
			if tt.wantStatus >= 400 && tt.reply.Body != nil && body != string(tt.reply.Body) {
				t.Fatalf("4xx body changed: %s", body)
			}
			// work has 1 request, team 1: least-used would pick work next unless it cools.
			e.fake.Reset()
			e.post("/v1/messages", msgBody("claude-opus-5-5"))
			first := e.tried()[0]
			if tt.cooled && first != "team" || !tt.cooled && tt.wantStatus == 200 && first != "work" {
				t.Fatalf("next request went to %s (cooled=%v)", first, tt.cooled)
			}
			h, _ := e.store.History(t.Context(), routingQuery(5))
			if len(h) < 2 || (tt.wantStatus == 200 && h[1].Attempts != 2) {
				t.Fatalf("history %+v", h)
			}
		})
	}
}

func TestAllFailReturnsLastAnswer(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Status: 529, Header: http.Header{"X-Which": {accountOf(r.Credential)}, "Anthropic-Ratelimit-Requests-Remaining": {"7"}}}
	})
	code, hdr, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
	if code != 529 || !strings.Contains(body, "overloaded_error") {
		t.Fatalf("%d %s", code, body)
	}
	if got := e.tried(); len(got) != 3 || hdr.Get("X-Which") != got[2] || hdr.Get("Anthropic-Ratelimit-Requests-Remaining") != "7" || hdr.Get("X-Claude-Lb-Attempts") != "3" {
		t.Fatalf("tried %v, headers %v", got, hdr)
	}
}

func TestMaxAttempts(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Routing.MaxAttempts = 2 })
	e.fake.Script(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Status: 503} })
	code, _, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
	if code != 503 || e.fake.Count() != 2 {
		t.Fatalf("status %d after %d attempts, want 503 after 2", code, e.fake.Count())
	}
}

func TestAllCoolingDown(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Script(func(*fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Status: 429, Header: http.Header{"Retry-After": {"90"}}}
	})
	code, _, _ := e.post("/v1/messages", msgBody("claude-opus-5-5"))
	if code != 429 || e.fake.Count() != 2 {
		t.Fatalf("first: %d after %d", code, e.fake.Count())
	}
	e.fake.Reset()
	code, hdr, body := e.post("/v1/messages", msgBody("claude-opus-5-5"))
	if code != 429 || e.fake.Count() != 0 || !strings.Contains(body, `"rate_limit_error"`) || !strings.Contains(body, "cooling down") {
		t.Fatalf("second: %d %s (upstream saw %d)", code, body, e.fake.Count())
	}
	ra, err := strconv.Atoi(hdr.Get("Retry-After"))
	if err != nil || ra < 80 || ra > 91 {
		t.Fatalf("retry-after %q", hdr.Get("Retry-After"))
	}
	// Sonnet may still use the console account.
	e.fake.Script(nil)
	if code, _, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5")); code != 200 {
		t.Fatalf("sonnet while max accounts cool: %d", code)
	}
}

func TestCredentialInvalidUntilReload(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Accept(keyPersonal, tokTeam) // work's token is revoked
	for range 4 {
		if code, _, _ := e.post("/v1/messages", msgBody("claude-opus-5-5")); code != 200 {
			t.Fatal(code)
		}
	}
	if got := e.served(); got["work"] != 1 || got["team"] != 4 {
		t.Fatalf("served %v: work should be tried once, then skipped", got)
	}
	// A reload with a new credential for work brings it back.
	const newTok = "sk-ant-oat01-work-new-000000000000000000009"
	e.fake.Accept(keyPersonal, tokTeam, newTok)
	cfg := *e.gw.Snapshot().Config
	cfg.Accounts = slices.Clone(cfg.Accounts)
	cfg.Accounts[1].OAuthToken = newTok
	if err := e.gw.Swap(&cfg); err != nil {
		t.Fatal(err)
	}
	e.fake.Reset()
	for range 4 {
		e.post("/v1/messages", msgBody("claude-opus-5-5"))
	}
	n := 0
	for _, r := range e.fake.Requests() {
		if r.Credential == newTok {
			n++
		}
	}
	if n == 0 {
		t.Fatal("account with a new credential still excluded after reload")
	}
}

// TestNetworkFailover: an account whose connection fails is benched and the request goes on.
func TestNetworkFailover(t *testing.T) {
	fake := fakeapi.New(t)
	cfg := config.Default()
	cfg.Upstream.URL = fake.URL
	cfg.Accounts = pool()
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Authorization") == "Bearer "+tokWork {
			return nil, errors.New("dial tcp: connection refused")
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	e := newEnvWith(t, fake, cfg, rt)
	code, hdr, _ := e.post("/v1/messages", msgBody("claude-opus-5-5"))
	if code != 200 || hdr.Get("X-Claude-Lb-Account") != "team" || hdr.Get("X-Claude-Lb-Attempts") != "2" {
		t.Fatalf("%d %v", code, hdr)
	}
	st, _ := e.store.Stats(t.Context())
	if len(st.Accounts["work"].Marks) == 0 {
		t.Fatalf("work not benched: %+v", st.Accounts["work"])
	}
	// Every account unreachable: 502 in Anthropic's shape.
	rt2 := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("connection reset") })
	e = newEnvWith(t, fake, cfg, rt2)
	code, _, body := e.post("/v1/messages", msgBody("claude-opus-5-5"))
	if code != 502 || !strings.Contains(body, `"api_error"`) {
		t.Fatalf("%d %s", code, body)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestStreamFailoverBeforeContent: a stream that opens and then fails before its first
// content event is retried on another account; the SDK sees one clean stream.
func TestStreamFailoverBeforeContent(t *testing.T) {
	for _, mode := range []string{"overloaded event", "cut"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, nil)
			e.fake.Script(failFor(func(r *fakeapi.Request) *fakeapi.Reply {
				ev := fakeapi.StreamEvents(r.Model, []string{"x"}, 1, 1)[:1] // message_start only
				if mode == "cut" {
					return &fakeapi.Reply{Events: ev, CutAfter: 1}
				}
				return &fakeapi.Reply{Events: append(ev, fakeapi.Event{Name: "error", Data: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`})}
			}, tokWork))
			acc, err := e.streamOpus()
			if err != nil {
				t.Fatalf("stream error: %v", err)
			}
			if got := e.tried(); !slices.Equal(got, []string{"work", "team"}) || acc.StopReason != anthropic.StopReasonEndTurn {
				t.Fatalf("tried %v, message %+v", got, acc)
			}
		})
	}
}

// TestStreamBreaksAfterContent: once content reached the client, a broken stream ends with an
// SSE error event so the SDK raises instead of returning half a reply.
func TestStreamBreaksAfterContent(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"partial ", "answer"}, 5, 2), CutAfter: 4}
	})
	c := e.sdk()
	stream := c.Messages.NewStreaming(t.Context(), anthropic.MessageNewParams{
		Model: "claude-sonnet-5-5", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	n := 0
	for stream.Next() {
		n++
	}
	if stream.Err() == nil || n == 0 {
		t.Fatalf("SDK saw %d events and no error", n)
	}
	if !strings.Contains(stream.Err().Error(), "api_error") {
		t.Fatalf("error %v, want an api_error event", stream.Err())
	}
	if e.fake.Count() != 1 {
		t.Fatalf("a stream that already sent content was retried (%d requests)", e.fake.Count())
	}
}

// TestHoldbackCommitsSlowStreams: an upstream slow to send content still gets its opening
// frames to the client after holdback, and pings keep a quiet stream alive.
func TestHoldbackCommitsSlowStreams(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Routing.Holdback = 30 * time.Millisecond })
	release := make(chan struct{})
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"a"}, 1, 1), Hold: release, HoldAfter: 1}
	})
	resp, err := http.Post(e.srv.URL+"/v1/messages", "application/json", strings.NewReader(`{"model":"claude-sonnet-5-5","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "message_start") {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	close(release)
}

func TestAffinity(t *testing.T) {
	e := newEnv(t, nil)
	session := func(id string) []string { return []string{"X-Claude-Code-Session-Id", id} }
	// Three conversations start on three accounts (least-used), then each stays put.
	first := map[string]string{}
	for _, s := range []string{"s1", "s2", "s3"} {
		_, hdr, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), session(s)...)
		first[s] = hdr.Get("X-Claude-Lb-Account")
	}
	for range 5 {
		for _, s := range []string{"s1", "s2", "s3"} {
			if _, hdr, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), session(s)...); hdr.Get("X-Claude-Lb-Account") != first[s] {
				t.Fatalf("conversation %s moved from %s to %s", s, first[s], hdr.Get("X-Claude-Lb-Account"))
			}
		}
	}
	// The session id inside metadata.user_id counts too (both forms).
	body := `{"model":"claude-sonnet-5-5","metadata":{"user_id":"user_ab_account_cd_session_s9"},"messages":[]}`
	_, h1, _ := e.post("/v1/messages", body)
	for range 3 {
		if _, h, _ := e.post("/v1/messages", body); h.Get("X-Claude-Lb-Account") != h1.Get("X-Claude-Lb-Account") {
			t.Fatal("metadata.user_id session moved")
		}
	}
	// When its account cools down, the conversation moves, and stays on the new one.
	victim := first["s1"]
	var cred string
	for _, r := range e.fake.Requests() {
		if accountOf(r.Credential) == victim {
			cred = r.Credential
		}
	}
	e.fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Status: 429, Header: http.Header{"Retry-After": {"600"}}}
	}, cred))
	_, hdr, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), session("s1")...)
	moved := hdr.Get("X-Claude-Lb-Account")
	if moved == victim || moved == "" {
		t.Fatalf("conversation did not move off the cooling account %s", victim)
	}
	e.fake.Script(nil)
	for range 3 {
		if _, hdr, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), session("s1")...); hdr.Get("X-Claude-Lb-Account") != moved {
			t.Fatal("moved conversation did not stay on its new account")
		}
	}
	// affinity: none spreads one conversation.
	e = newEnv(t, func(c *config.Config) { c.Routing.Affinity = "none" })
	seen := map[string]bool{}
	for range 3 {
		_, hdr, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), session("s1")...)
		seen[hdr.Get("X-Claude-Lb-Account")] = true
	}
	if len(seen) != 3 {
		t.Fatalf("affinity none used %v", seen)
	}
}

func TestSoftLimitGoesToBack(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Header: http.Header{"Anthropic-Ratelimit-Unified-Status": {"allowed_warning"}}, Body: fakeapi.MessageJSON("claude-opus-5-5", "hi", 1, 1)}
	}, tokWork))
	e.post("/v1/messages", msgBody("claude-opus-5-5")) // work answers with a warning
	e.fake.Script(nil)
	e.fake.Reset()
	for range 4 {
		e.post("/v1/messages", msgBody("claude-opus-5-5"))
	}
	if got := e.served(); got["work"] != 0 || got["team"] != 4 {
		t.Fatalf("served %v: the warned account should sit out while another is free", got)
	}
}

// TestConcurrentFailover runs many requests with a flaky account under -race.
func TestConcurrentFailover(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Status: 529} }, tokTeam))
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for range 64 {
		wg.Go(func() {
			if code, _, body := e.post("/v1/messages", msgBody("claude-opus-5-5")); code != 200 {
				errs <- strconv.Itoa(code) + body
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// TestIdlePing: while the upstream is silent mid-stream, the client gets ping events between
// whole events, and the stream then completes unchanged.
func TestIdlePing(t *testing.T) {
	e := newEnv(t, nil)
	e.gw.idlePing = 40 * time.Millisecond
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"a", "b"}, 1, 1), EventDelay: 150 * time.Millisecond}
	})
	code, _, body := e.post("/v1/messages", `{"model":"claude-sonnet-5-5","stream":true}`)
	if code != 200 || !strings.HasSuffix(body, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Fatalf("%d %q", code, body)
	}
	pings := strings.Count(body, "event: ping\n")
	if pings < 3 { // one from the upstream, the rest from the gateway during 150 ms gaps
		t.Fatalf("%d pings in %q", pings, body)
	}
	for _, frame := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		if !strings.HasPrefix(frame, "event: ") || strings.Count(frame, "\ndata: ") != 1 {
			t.Fatalf("a ping split an event: frame %q", frame)
		}
	}
}

// TestResourcesStayOnTheirAccount: a message batch or a file lives in the account that
// created it, so every later request for it goes there, whatever least-used says.
func TestResourcesStayOnTheirAccount(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		switch {
		case r.Method == "POST" && r.Path == "/v1/messages/batches":
			return &fakeapi.Reply{Body: []byte(`{"id":"msgbatch_` + accountOf(r.Credential) + `","type":"message_batch","processing_status":"in_progress"}`)}
		case r.Method == "POST" && r.Path == "/v1/files":
			return &fakeapi.Reply{Body: []byte(`{"id":"file_` + accountOf(r.Credential) + `","type":"file","filename":"a.txt"}`)}
		}
		return &fakeapi.Reply{Body: []byte(`{"ok":true}`)}
	})
	get := func(path string) string {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Claude-Lb-Account")
	}
	_, hdr, body := e.post("/v1/messages/batches", `{"requests":[{"custom_id":"a","params":{"model":"claude-sonnet-5-5","max_tokens":5,"messages":[]}}]}`)
	owner := hdr.Get("X-Claude-Lb-Account")
	if !strings.Contains(body, "msgbatch_"+owner) {
		t.Fatalf("batch answer %s from %s", body, owner)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/files", strings.NewReader("--b\r\ncontent\r\n--b--\r\n"))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	fileOwner := resp.Header.Get("X-Claude-Lb-Account")
	for range 4 {
		for _, p := range []string{"/v1/messages/batches/msgbatch_" + owner, "/v1/messages/batches/msgbatch_" + owner + "/results"} {
			if got := get(p); got != owner {
				t.Fatalf("%s served by %s, want the creating account %s", p, got, owner)
			}
		}
		if got := get("/v1/files/file_" + fileOwner + "/content"); got != fileOwner {
			t.Fatalf("file served by %s, want %s", got, fileOwner)
		}
	}
}
