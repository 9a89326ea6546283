package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
)

func TestSDKThroughGateway(t *testing.T) {
	e := newEnv(t, nil)
	c := e.sdk()
	ctx := t.Context()

	msg, err := c.Messages.New(ctx, anthropic.MessageNewParams{
		Model: "claude-sonnet-5-5", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil {
		t.Fatalf("Messages.New: %v", err)
	}
	if msg.Model != "claude-sonnet-5-5" || len(msg.Content) == 0 || msg.Usage.OutputTokens == 0 {
		t.Fatalf("unexpected message %+v", msg)
	}

	acc, err := e.streamOpus()
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Content) == 0 || acc.Content[0].Text == "" || acc.StopReason != anthropic.StopReasonEndTurn {
		t.Fatalf("accumulated stream = %+v", acc)
	}

	n, err := c.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
		Model:    "claude-haiku-5-5",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil || n.InputTokens <= 0 {
		t.Fatalf("CountTokens = %+v, %v", n, err)
	}

	page, err := c.Models.List(ctx, anthropic.ModelListParams{})
	if err != nil || len(page.Data) == 0 {
		t.Fatalf("Models.List = %v, %v", page, err)
	}

	// Every upstream request carried a pool credential, never the client's key.
	for _, r := range e.fake.Requests() {
		if strings.HasPrefix(accountOf(r.Credential), "UNKNOWN") || strings.Contains(strings.Join(flatten(r.Header), " "), clientKey) {
			t.Fatalf("upstream saw credential %q / headers %v", r.Credential, r.Header)
		}
	}
	// Usage from the plain answer and the stream reached the store.
	st, err := e.store.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out int64
	for _, a := range st.Accounts {
		out += a.OutputTokens
	}
	if out == 0 {
		t.Fatalf("no output tokens recorded: %+v", st)
	}
}

func flatten(h http.Header) []string {
	var out []string
	for k, v := range h {
		out = append(out, k+"="+strings.Join(v, ","))
	}
	return out
}

func TestModelRouting(t *testing.T) {
	e := newEnv(t, nil)
	for range 12 {
		if code, _, body := e.post("/v1/messages", msgBody("claude-opus-5-5")); code != 200 {
			t.Fatalf("opus: %d %s", code, body)
		}
	}
	got := e.served()
	if got["personal"] != 0 || got["work"] != 6 || got["team"] != 6 {
		t.Fatalf("opus spread = %v, want only max accounts, 6 each", got)
	}
	e.fake.Reset()
	for _, model := range []string{"claude-sonnet-5-5", "claude-haiku-5-5", "claude-3-5-sonnet-20241022"} {
		for range 30 {
			if code, _, body := e.post("/v1/messages", msgBody(model)); code != 200 {
				t.Fatalf("%s: %d %s", model, code, body)
			}
		}
	}
	got = e.served()
	// Least-used counts the earlier opus requests too: after 12 opus (6+6 on max) and 90
	// others, the three accounts hold 102 requests, 34 each.
	st, _ := e.store.Stats(t.Context())
	var counts []int64
	for _, a := range []string{"personal", "work", "team"} {
		counts = append(counts, st.Accounts[a].Requests)
	}
	if slices.Max(counts)-slices.Min(counts) > 1 {
		t.Fatalf("least-used counts %v differ by more than 1 (upstream saw %v)", counts, got)
	}
}

func TestUnknownModels(t *testing.T) {
	e := newEnv(t, nil)
	for range 6 {
		if code, _, body := e.post("/v1/messages", msgBody("claude-fable-5-2")); code != 200 {
			t.Fatalf("unknown model under all: %d %s", code, body)
		}
	}
	if got := e.served(); got["personal"] != 2 || got["work"] != 2 || got["team"] != 2 {
		t.Fatalf("unknown model spread = %v, want all accounts", got)
	}
	e = newEnv(t, func(c *config.Config) { c.Routing.UnknownModels = "reject" })
	code, _, body := e.post("/v1/messages", msgBody("claude-fable-5-2"))
	if code != 400 || !strings.Contains(body, "invalid_request_error") || e.fake.Count() != 0 {
		t.Fatalf("reject: %d %s (upstream saw %d)", code, body, e.fake.Count())
	}
	// A request without a model (GET /v1/models) may use any account.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/models?limit=2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("models: %v %v", resp, err)
	}
	resp.Body.Close()
	if r := e.fake.Requests(); len(r) != 1 || r[0].RawQuery != "limit=2" {
		t.Fatalf("query not forwarded: %+v", r)
	}
}

func TestNoCompatibleAccount(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Accounts = c.Accounts[:1] })
	code, hdr, body := e.post("/v1/messages", msgBody("claude-3-opus-20240229"))
	if code != 400 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content-type %q", code, hdr.Get("Content-Type"))
	}
	var got struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		RequestedModel    string `json:"requested_model"`
		AvailableAccounts []struct {
			Name   string   `json:"name"`
			Plan   string   `json:"plan"`
			Models []string `json:"models"`
		} `json:"available_accounts"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != "error" || got.Error.Type != "invalid_request_error" ||
		got.Error.Message != "No accounts support the requested model: claude-3-opus-20240229. Opus requires Max plan accounts." ||
		got.RequestedModel != "claude-3-opus-20240229" || len(got.AvailableAccounts) != 1 ||
		got.AvailableAccounts[0].Name != "personal" || got.AvailableAccounts[0].Plan != "console" ||
		!slices.Equal(got.AvailableAccounts[0].Models, []string{"claude-*sonnet*", "claude-*haiku*"}) {
		t.Fatalf("body = %s", body)
	}
	if strings.Contains(body, keyPersonal) || e.fake.Count() != 0 {
		t.Fatal("secret in body or request forwarded")
	}
}

func TestHeaderRules(t *testing.T) {
	e := newEnv(t, nil)
	// An OAuth account: Bearer plus the oauth beta merged into the client's betas.
	code, hdr, body := e.post("/v1/messages?beta=true", msgBody("claude-opus-5-5"),
		"anthropic-beta", "prompt-caching-2024-07-31", "Authorization", "Bearer "+clientKey,
		"Connection", "keep-alive, X-Hop", "X-Hop", "drop me", "Proxy-Authorization", "x",
		"User-Agent", "claude-cli/2.1.0", "X-Stainless-Lang", "go", "Expect", "100-continue")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	r := e.fake.Requests()[0]
	if !r.Bearer || (r.Credential != tokWork && r.Credential != tokTeam) {
		t.Fatalf("credential %q bearer %v", r.Credential, r.Bearer)
	}
	if r.RawQuery != "beta=true" || r.Header.Get("Anthropic-Version") != "2023-06-01" ||
		r.Header.Get("User-Agent") != "claude-cli/2.1.0" || r.Header.Get("X-Stainless-Lang") != "go" {
		t.Fatalf("end-to-end headers lost: %v %q", r.Header, r.RawQuery)
	}
	if b := r.Header.Values("Anthropic-Beta"); len(b) != 1 || b[0] != "prompt-caching-2024-07-31,"+oauthBeta {
		t.Fatalf("anthropic-beta = %q", b)
	}
	if r.Header.Get("X-Hop") != "" || r.Header.Get("Proxy-Authorization") != "" || r.Header.Get("X-Api-Key") != "" || r.Header.Get("Expect") != "" {
		t.Fatalf("hop-by-hop or client credential forwarded: %v", r.Header)
	}
	if hdr.Get("X-Claude-Lb-Account") != accountOf(r.Credential) || hdr.Get("X-Claude-Lb-Attempts") != "1" ||
		hdr.Get("X-Claude-Lb-Overhead-Ms") == "" || hdr.Get("Request-Id") == "" {
		t.Fatalf("response headers %v", hdr)
	}
	// An API key account: x-api-key, no Authorization, no beta added.
	e.fake.Reset()
	code, _, _ = e.post("/v1/messages", msgBody("claude-sonnet-5-5"), "Authorization", "Bearer "+clientKey)
	for code == 200 && accountOf(e.fake.Requests()[len(e.fake.Requests())-1].Credential) != "personal" {
		code, _, _ = e.post("/v1/messages", msgBody("claude-sonnet-5-5"), "Authorization", "Bearer "+clientKey)
	}
	last := e.fake.Requests()[len(e.fake.Requests())-1]
	if last.Bearer || last.Header.Get("Authorization") != "" || last.Header.Get("Anthropic-Beta") != "" {
		t.Fatalf("api key account headers: %v", last.Header)
	}
	// expose_account: false hides the name.
	e = newEnv(t, func(c *config.Config) { c.ExposeAccount = false })
	_, hdr, _ = e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
	if hdr.Get("X-Claude-Lb-Account") != "" || hdr.Get("X-Claude-Lb-Attempts") != "1" {
		t.Fatalf("expose_account false: %v", hdr)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.MaxBody = 1 << 10 })
	tests := []struct {
		name, body string
		code       int
		errType    string
	}{
		{"malformed JSON", `{"model": "claude-opus-5-5", "messages": [`, 400, "invalid_request_error"},
		{"not an object", `["claude-opus-5-5"]`, 400, "invalid_request_error"},
		{"too large", `{"model":"claude-opus-5-5","x":"` + strings.Repeat("a", 2<<10) + `"}`, 413, "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := e.post("/v1/messages", tt.body)
			var v apiError
			if code != tt.code || json.Unmarshal([]byte(body), &v) != nil || v.Type != "error" || v.Error.Type != tt.errType {
				t.Fatalf("%d %s", code, body)
			}
		})
	}
	// Chunked (no Content-Length) and too large.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/messages", strings.NewReader(`{"x":"`+strings.Repeat("b", 4<<10)+`"}`))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 413 {
		t.Fatalf("chunked too large: %v %v", resp, err)
	}
	resp.Body.Close()
	if n := e.fake.Count(); n != 0 {
		t.Fatalf("bad input reached the upstream %d times", n)
	}
	code, _, body := e.post("/v2/other", "{}")
	if code != 404 || !strings.Contains(body, "not_found_error") {
		t.Fatalf("unknown path: %d %s", code, body)
	}
}

func TestClientKeys(t *testing.T) {
	sum := sha256.Sum256([]byte(clientKey))
	e := newEnv(t, func(c *config.Config) {
		c.Clients = []config.Client{{Name: "laptop", KeySHA256: hex.EncodeToString(sum[:])}}
	})
	code, _, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), "x-api-key", "wrong")
	if code != 401 || !strings.Contains(body, `"authentication_error"`) {
		t.Fatalf("wrong key: %d %s", code, body)
	}
	code, _, _ = e.post("/v1/messages", msgBody("claude-sonnet-5-5"), "x-api-key", "", "Authorization", "Bearer "+clientKey)
	if code != 200 {
		t.Fatalf("bearer client key refused: %d", code)
	}
	code, _, _ = e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
	if code != 200 {
		t.Fatalf("x-api-key client key refused: %d", code)
	}
	if e.fake.Count() != 2 {
		t.Fatalf("upstream saw %d requests, want 2", e.fake.Count())
	}
	h, _ := e.store.History(t.Context(), routingQuery(10))
	if len(h) == 0 || h[0].Client != "laptop" {
		t.Fatalf("history lacks the client name: %+v", h)
	}
}

// TestStreamNotBuffered: events reach the client while the upstream is still sending, and a
// client that hangs up cancels the upstream request.
func TestStreamNotBuffered(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Routing.Holdback = 50 * time.Millisecond })
	release := make(chan struct{})
	e.fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{
			Events:    fakeapi.StreamEvents(r.Model, []string{"one ", "two ", "three"}, 10, 3),
			Hold:      release,
			HoldAfter: 4, // message_start, content_block_start, ping, first delta
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-5-5","stream":true,"max_tokens":5,"messages":[]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "one ") {
				got <- sc.Text()
				return
			}
		}
		close(got)
	}()
	select {
	case _, ok := <-got:
		if !ok {
			t.Fatal("stream ended without the first delta")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("first delta not relayed while the upstream holds the rest: the gateway buffers")
	}
	// The upstream is still holding; the client hangs up; the upstream request is cancelled.
	cancel()
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if err := e.fake.WaitCanceled(wctx, 1); err != nil {
		t.Fatalf("upstream request not cancelled after the client hung up: %v", err)
	}
	close(release)
}

func TestGracefulReadiness(t *testing.T) {
	e := newEnv(t, nil)
	for path, want := range map[string]string{"/healthz": `"ok"`, "/readyz": `"ready":true`} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(b.String(), want) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b.String())
		}
	}
	// All accounts disabled: not ready.
	cfg := *e.gw.Snapshot().Config
	cfg.Accounts = slices.Clone(cfg.Accounts)
	for i := range cfg.Accounts {
		cfg.Accounts[i].Disabled = true
	}
	if err := e.gw.Swap(&cfg); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz with no usable account = %d", resp.StatusCode)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	e := newEnv(t, nil)
	for _, m := range []string{"claude-opus-5-5", "claude-sonnet-5-5", "claude-3-opus-20240229"} {
		e.post("/v1/messages", msgBody(m))
	}
	e.fake.Script(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Status: 401} })
	e.post("/v1/messages", msgBody("claude-opus-5-5"))
	logs := e.logs.String()
	for _, s := range []string{keyPersonal, tokWork, tokTeam, clientKey} {
		if strings.Contains(logs, s) {
			t.Fatalf("secret %q… in logs", s[:12])
		}
	}
	if !strings.Contains(logs, "msg=request") {
		t.Fatal("no request log line")
	}
}

func routingQuery(n int) routing.HistoryQuery { return routing.HistoryQuery{Limit: n} }

// TestWebPagesRefused: without client keys, a browser page on another site (Origin or
// Sec-Fetch-Site) cannot spend the pool; local pages and non-browser clients can.
func TestWebPagesRefused(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		hdr  []string
		want int
	}{
		{[]string{"Origin", "https://evil.example"}, 403},
		{[]string{"Origin", "http://attacker.test:8080", "Sec-Fetch-Site", "same-origin"}, 403}, // DNS rebinding
		{[]string{"Sec-Fetch-Site", "cross-site"}, 403},
		{[]string{"Origin", "null"}, 403},
		{[]string{"Origin", "http://localhost:3000"}, 200},
		{[]string{"Origin", "http://127.0.0.1:8080"}, 200},
		{nil, 200},
	}
	for _, tt := range tests {
		code, _, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), tt.hdr...)
		if code != tt.want {
			t.Errorf("%v: %d %s", tt.hdr, code, body)
		}
	}
	if e.fake.Count() != 3 {
		t.Fatalf("upstream saw %d requests, want 3", e.fake.Count())
	}
	// With client keys, the key decides.
	sum := sha256.Sum256([]byte(clientKey))
	e = newEnv(t, func(c *config.Config) {
		c.Clients = []config.Client{{Name: "web", KeySHA256: hex.EncodeToString(sum[:])}}
	})
	if code, _, _ := e.post("/v1/messages", msgBody("claude-sonnet-5-5"), "Origin", "https://app.example"); code != 200 {
		t.Fatalf("keyed request from a page: %d", code)
	}
}

// slowRecord is a store whose Record waits for a signal, like a slow Redis round trip.
type slowRecord struct {
	*memory.Store
	release chan struct{}
}

func (s slowRecord) Record(ctx context.Context, u routing.Usage) error {
	<-s.release
	return s.Store.Record(ctx, u)
}

// TestFlushBeforeRecord: with FlushBeforeRecord the client has the whole answer while the
// usage record is still in flight; without it, the record comes first.
func TestFlushBeforeRecord(t *testing.T) {
	fake := fakeapi.New(t)
	cfg := config.Default()
	cfg.Upstream.URL = fake.URL
	cfg.Accounts = pool()
	st := slowRecord{memory.New(memory.Options{}), make(chan struct{})}
	gw, err := New(cfg, Options{Store: st, AdminStore: st, FlushBeforeRecord: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	defer close(st.release)
	e := &env{t: t, srv: srv, fake: fake}
	done := make(chan string, 1)
	go func() {
		code, _, body := e.post("/v1/messages", msgBody("claude-sonnet-5-5"))
		done <- strconv.Itoa(code) + body
	}()
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "200") || !strings.Contains(got, `"usage"`) {
			t.Fatalf("answer %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client waited for the usage record")
	}
}

// TestDashboardLoopbackRule: without admin.key the dashboard, like the admin API, is for
// loopback callers only, and a request relayed by a local proxy is not one (DESIGN.md §8).
func TestDashboardLoopbackRule(t *testing.T) {
	e := newEnv(t, nil)
	for _, tt := range []struct {
		hdr  []string
		want int
	}{
		{nil, 200},
		{[]string{"X-Forwarded-For", "203.0.113.9"}, 403},
		{[]string{"Forwarded", "for=203.0.113.9"}, 403},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/dashboard/", nil)
		for i := 0; i+1 < len(tt.hdr); i += 2 {
			req.Header.Set(tt.hdr[i], tt.hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%v: %d, want %d", tt.hdr, resp.StatusCode, tt.want)
		}
	}
}
