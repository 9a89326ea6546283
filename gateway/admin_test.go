package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/internal/syncbuf"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
)

var adminT0 = time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)

// adminFixture is an admin handler over a memory store at a fixed clock.
type adminFixture struct {
	store    *memory.Store
	h        http.Handler
	key      config.Secret
	reloadFn func(context.Context) error
	infos    []AccountInfo
}

func newAdminFixture(t *testing.T, key config.Secret) *adminFixture {
	t.Helper()
	f := &adminFixture{key: key}
	f.store = memory.New(memory.Options{Now: func() time.Time { return adminT0 }, HistorySize: 100})
	f.infos = []AccountInfo{
		{Name: "personal", Plan: "console", Models: []string{"claude-*sonnet*", "claude-*haiku*"}, Credential: "api_key", Fingerprint: "…0001", TokenState: "valid", Weight: 1},
		{Name: "work", Plan: "max", Models: []string{"claude-*opus*", "claude-*sonnet*", "claude-*haiku*"}, OpusCapable: true, Credential: "oauth_token", Fingerprint: "…0002", TokenState: "valid", Weight: 1, CredScope: "cred:current"},
		{Name: "team", Plan: "max", Models: []string{"claude-*opus*"}, OpusCapable: true, Credential: "oauth_file", Fingerprint: "file:/x", TokenState: "needs-login", Weight: 2, Priority: 1},
		{Name: "old", Plan: "console", Credential: "api_key", Fingerprint: "…", TokenState: "valid", Disabled: true, Weight: 1},
	}
	f.h = NewAdmin(AdminOptions{
		Store:    f.store,
		Accounts: func() []AccountInfo { return f.infos },
		Config: func() ConfigInfo {
			return ConfigInfo{Path: "/etc/claude-lb.yaml", Hash: "abc123", LoadedAt: adminT0.Add(-time.Hour), Accounts: len(f.infos)}
		},
		Key:      func() config.Secret { return f.key },
		Reload:   func(ctx context.Context) error { return f.reloadFn(ctx) },
		Replica:  "r1",
		Degraded: func() bool { return true },
		Now:      func() time.Time { return adminT0 },
	})
	f.reloadFn = func(context.Context) error { return nil }
	return f
}

// do sends one request from remote (default loopback) with optional header pairs.
func (f *adminFixture) do(method, target, remote string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = "127.0.0.1:40000"
	if remote != "" {
		r.RemoteAddr = remote
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func adminDecode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	return v
}

type apiErr struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestAdminAuth(t *testing.T) {
	const key = "adm-0123456789-secret"
	tests := []struct {
		name    string
		key     config.Secret
		remote  string
		hdr     []string
		want    int
		errType string
	}{
		{"no key sent", key, "", nil, 401, "authentication_error"},
		{"wrong bearer", key, "", []string{"Authorization", "Bearer nope"}, 401, "authentication_error"},
		{"wrong x-api-key", key, "", []string{"x-api-key", key + "x"}, 401, "authentication_error"},
		{"prefix of the key", key, "", []string{"x-api-key", key[:10]}, 401, "authentication_error"},
		{"basic auth is not bearer", key, "", []string{"Authorization", "Basic " + key}, 401, "authentication_error"},
		{"right bearer", key, "", []string{"Authorization", "Bearer " + key}, 200, ""},
		{"lowercase bearer", key, "", []string{"Authorization", "bearer " + key}, 200, ""},
		{"right x-api-key", key, "", []string{"x-api-key", key}, 200, ""},
		{"key required from loopback too", key, "127.0.0.1:1", nil, 401, "authentication_error"},
		{"key works from anywhere", key, "203.0.113.9:5555", []string{"x-api-key", key}, 200, ""},
		{"no key: loopback v4", "", "127.0.0.1:1", nil, 200, ""},
		{"no key: loopback v6", "", "[::1]:1", nil, 200, ""},
		{"no key: mapped loopback", "", "[::ffff:127.0.0.1]:1", nil, 200, ""},
		{"no key: remote refused", "", "192.0.2.7:1", nil, 403, "permission_error"},
		{"no key: relayed by a proxy", "", "127.0.0.1:1", []string{"X-Forwarded-For", "198.51.100.1"}, 403, "permission_error"},
		{"no key: Forwarded header", "", "127.0.0.1:1", []string{"Forwarded", "for=198.51.100.1"}, 403, "permission_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAdminFixture(t, tt.key)
			w := f.do("GET", "/api/accounts", tt.remote, tt.hdr...)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if tt.errType == "" {
				return
			}
			e := adminDecode[apiErr](t, w)
			if e.Type != "error" || e.Error.Type != tt.errType || e.Error.Message == "" {
				t.Errorf("error body %s, want type %s", w.Body, tt.errType)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			if strings.Contains(w.Body.String(), key) || (len(tt.hdr) > 1 && strings.Contains(w.Body.String(), tt.hdr[1])) {
				t.Errorf("error body echoes a key: %s", w.Body)
			}
		})
	}
}

func TestAdminRoutes(t *testing.T) {
	tests := []struct {
		method, target string
		hdr            []string
		want           int
		allow          string
	}{
		{"GET", "/api/accounts", nil, 200, ""},
		{"HEAD", "/api/accounts", nil, 200, ""},
		{"GET", "/api/accounts/", nil, 200, ""},
		{"POST", "/api/accounts", nil, 405, "GET, HEAD"},
		{"GET", "/api/stats", nil, 200, ""},
		{"GET", "/api/stats/reset", nil, 405, "POST"},
		{"POST", "/api/stats/reset", nil, 200, ""},
		{"POST", "/api/stats/reset", []string{"Sec-Fetch-Site", "cross-site"}, 403, ""},
		{"POST", "/api/stats/reset", []string{"Sec-Fetch-Site", "same-origin"}, 200, ""},
		{"DELETE", "/api/history", []string{"Sec-Fetch-Site", "cross-site"}, 403, ""},
		{"DELETE", "/api/history", nil, 200, ""},
		{"PUT", "/api/history", nil, 405, "GET, HEAD, DELETE"},
		{"GET", "/api/history?limit=0", nil, 400, ""},
		{"GET", "/api/history?limit=1001", nil, 400, ""},
		{"GET", "/api/history?offset=-1", nil, 400, ""},
		{"GET", "/api/history?status=abc", nil, 400, ""},
		{"GET", "/api/history?model=" + strings.Repeat("x", 201), nil, 400, ""},
		{"POST", "/api/reload", nil, 200, ""},
		{"GET", "/api/reload", nil, 405, "POST"},
		{"GET", "/api/nothing", nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target[:min(len(tt.target), 40)], func(t *testing.T) {
			f := newAdminFixture(t, "")
			w := f.do(tt.method, tt.target, "", tt.hdr...)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if got := w.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if tt.want >= 400 {
				if e := adminDecode[apiErr](t, w); e.Type != "error" || e.Error.Message == "" {
					t.Errorf("not Anthropic's error shape: %s", w.Body)
				}
			}
		})
	}
}

// fill records a known state: usage on personal and work, a cooldown on work's opus family, a
// stale credential mark (other scope) and a current one, and an account no longer configured.
func (f *adminFixture) fill(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	rec := func(min int, model, account string, status int, in, out int64, errStr string) {
		// Pick counts the request and the last-used time; Record the rest.
		if p, err := f.store.Pick(ctx, routing.PickRequest{Candidates: []routing.Candidate{{Name: account, Weight: 1}}}); err != nil || p.Account != account {
			t.Fatalf("pick %s: %+v %v", account, p, err)
		}
		err := f.store.Record(ctx, routing.Usage{
			Time: adminT0.Add(time.Duration(min) * time.Minute), Model: model, Account: account, Status: status,
			Attempts: 1, Latency: 1500 * time.Millisecond, InputTokens: in, OutputTokens: out, Client: "laptop",
			Replica: "r1", Tried: []string{account + ":ok"}, Error: errStr,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	rec(-9, "claude-sonnet-5-5", "personal", 200, 10, 5, "")
	rec(-8, "claude-opus-5-5", "work", 200, 100, 50, "")
	rec(-7, "claude-opus-5-5", "work", 200, 100, 50, "")
	rec(-6, "claude-opus-5-5", "work", 529, 0, 0, "")
	rec(-5, "claude-opus-5-5", "work", 200, 100, 50, "stream broke after content")
	rec(-4, "claude-haiku-5-5", "gone", 200, 1, 1, "")
	marks := []routing.Mark{
		{Account: "work", Scope: "family:opus", Until: adminT0.Add(4*time.Minute + 11*time.Second + time.Millisecond), Reason: "429 rate limited (unified reset)"},
		{Account: "work", Scope: "", Until: adminT0.Add(time.Hour), Reason: "near limit: 5h utilization 0.93", Soft: true},
		{Account: "work", Scope: "cred:stale", Until: adminT0.Add(time.Hour), Reason: "401 from upstream"},
		{Account: "personal", Scope: "cred:whatever", Until: adminT0.Add(time.Hour), Reason: "401 from upstream"},
		{Account: "personal", Scope: "", Until: adminT0.Add(-time.Second), Reason: "expired"},
	}
	for _, m := range marks {
		if err := f.store.Mark(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAdminAccounts(t *testing.T) {
	f := newAdminFixture(t, "")
	f.fill(t)
	w := f.do("GET", "/api/accounts", "")
	if w.Code != 200 {
		t.Fatal(w.Code, w.Body)
	}
	resp := adminDecode[AccountsResponse](t, w)
	if resp.Replica != "r1" || !resp.Degraded || !resp.Now.Equal(adminT0) || resp.Config.Hash != "abc123" || resp.Config.Accounts != 4 {
		t.Errorf("header fields: %+v", resp)
	}
	var names []string
	for _, a := range resp.Accounts {
		names = append(names, a.Name)
	}
	if got := strings.Join(names, ","); got != "personal,work,team,old" {
		t.Fatalf("accounts %s, want config order personal,work,team,old", got)
	}
	p, w2, team, old := resp.Accounts[0], resp.Accounts[1], resp.Accounts[2], resp.Accounts[3]

	if p.Requests != 1 || p.InputTokens != 10 || p.OutputTokens != 5 || !p.LastUsed.Equal(adminT0) {
		t.Errorf("personal counters: %+v", p)
	}
	// personal has no CredScope: its credential mark shows, and makes the token invalid.
	if p.TokenState != "invalid" || p.Status != "invalid" || len(p.Cooldowns) != 1 || p.Cooldowns[0].Scope != "credential" {
		t.Errorf("personal credential state: %+v", p)
	}

	if w2.Requests != 4 || w2.Errors != 2 || !w2.OpusCapable || w2.Fingerprint != "…0002" {
		t.Errorf("work counters: %+v", w2)
	}
	// work's stale credential mark is for another credential: left out.
	if w2.TokenState != "valid" || w2.Status != "cooling" {
		t.Errorf("work status %q token %q", w2.Status, w2.TokenState)
	}
	if len(w2.Cooldowns) != 2 {
		t.Fatalf("work cooldowns %+v, want the opus family one and the soft one", w2.Cooldowns)
	}
	c := w2.Cooldowns[0]
	if c.Scope != "family:opus" || c.Reason != "429 rate limited (unified reset)" || c.SecondsLeft != 252 || c.Soft {
		t.Errorf("opus cooldown %+v (want 252 s left, rounded up)", c)
	}
	if s := w2.Cooldowns[1]; !s.Soft || s.Scope != "account" || s.SecondsLeft != 3600 {
		t.Errorf("soft mark %+v", s)
	}
	if team.Status != "needs-login" || team.TokenState != "needs-login" || team.Requests != 0 || !team.LastUsed.IsZero() || team.Cooldowns == nil {
		t.Errorf("team %+v", team)
	}
	if old.Status != "disabled" || len(old.Models) != 0 || old.Models == nil {
		t.Errorf("old %+v", old)
	}
	raw := w.Body.String()
	for _, bad := range []string{"cred:current", "cred:stale", `"CredScope"`, `"last_used":"0001`} {
		if strings.Contains(raw, bad) {
			t.Errorf("body contains %q: %s", bad, raw)
		}
	}
}

func TestAdminStats(t *testing.T) {
	f := newAdminFixture(t, "")
	f.fill(t)
	w := f.do("GET", "/api/stats", "")
	if w.Code != 200 {
		t.Fatal(w.Code, w.Body)
	}
	s := adminDecode[StatsResponse](t, w)
	if s.Totals.Requests != 6 || s.Totals.InputTokens != 311 || s.Window != 6 {
		t.Errorf("totals %+v window %d", s.Totals, s.Window)
	}
	// 4 opus requests: two clean successes, a 529, and a 200 whose stream broke.
	if s.Opus.Requests != 4 || s.Opus.Success != 2 || s.Opus.Failure != 2 || s.Opus.SuccessRate != 0.5 {
		t.Errorf("opus %+v", s.Opus)
	}
	if len(s.Models) != 3 || s.Models[0].Model != "claude-opus-5-5" || s.Models[0].Requests != 4 {
		t.Errorf("models %+v", s.Models)
	}
	var gone *AccountCounters
	for i := range s.Accounts {
		if s.Accounts[i].Name == "gone" {
			gone = &s.Accounts[i]
		}
	}
	if len(s.Accounts) != 5 || gone == nil || gone.Configured || gone.Requests != 1 || s.Accounts[0].Name != "personal" || !s.Accounts[0].Configured {
		t.Errorf("accounts %+v", s.Accounts)
	}
}

func TestAdminHistory(t *testing.T) {
	f := newAdminFixture(t, "")
	f.fill(t)
	tests := []struct {
		query    string
		accounts string
		more     bool
	}{
		{"", "gone,work,work,work,work,personal", false},
		{"?limit=2", "gone,work", true},
		{"?limit=2&offset=4", "work,personal", false},
		{"?account=work&limit=3", "work,work,work", true},
		{"?model=claude-sonnet-5-5", "personal", false},
		{"?status=529", "work", false},
		{"?model=claude-opus-5-5&status=200&offset=1", "work,work", false},
		{"?account=nobody", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			w := f.do("GET", "/api/history"+tt.query, "")
			if w.Code != 200 {
				t.Fatal(w.Code, w.Body)
			}
			h := adminDecode[HistoryResponse](t, w)
			var got []string
			for _, e := range h.Entries {
				got = append(got, e.Account)
				if e.LatencyMS != 1500 || e.Client != "laptop" || e.Replica != "r1" {
					t.Errorf("entry %+v", e)
				}
			}
			if strings.Join(got, ",") != tt.accounts || h.More != tt.more {
				t.Errorf("got %v more=%v, want %s more=%v", got, h.More, tt.accounts, tt.more)
			}
		})
	}
}

func TestAdminResetAndClear(t *testing.T) {
	f := newAdminFixture(t, "")
	f.fill(t)
	if w := f.do("POST", "/api/stats/reset", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"ok":true`) {
		t.Fatal(w.Code, w.Body)
	}
	s := adminDecode[StatsResponse](t, f.do("GET", "/api/stats", ""))
	if s.Totals.Requests != 0 || s.Opus.Requests != 0 {
		t.Errorf("after reset: %+v", s.Totals)
	}
	if h := adminDecode[HistoryResponse](t, f.do("GET", "/api/history", "")); len(h.Entries) != 6 {
		t.Errorf("reset stats must keep the history: %d entries", len(h.Entries))
	}
	if w := f.do("DELETE", "/api/history", ""); w.Code != 200 {
		t.Fatal(w.Code, w.Body)
	}
	if h := adminDecode[HistoryResponse](t, f.do("GET", "/api/history", "")); len(h.Entries) != 0 || h.Entries == nil {
		t.Errorf("after clear: %+v", h)
	}
}

func TestAdminReload(t *testing.T) {
	f := newAdminFixture(t, "")
	calls := 0
	f.reloadFn = func(context.Context) error { calls++; return errors.New("claude-lb.yaml:3:7: unknown key plna") }
	w := f.do("POST", "/api/reload", "")
	if e := adminDecode[apiErr](t, w); w.Code != 422 || !strings.Contains(e.Error.Message, "plna") || calls != 1 {
		t.Errorf("failed reload: %d %s", w.Code, w.Body)
	}
	f.reloadFn = func(context.Context) error { calls++; return nil }
	if w := f.do("POST", "/api/reload", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"hash":"abc123"`) || calls != 2 {
		t.Errorf("reload: %d %s", w.Code, w.Body)
	}

	noStore := NewAdmin(AdminOptions{})
	r0 := httptest.NewRequest("GET", "/api/accounts", nil)
	r0.RemoteAddr = "127.0.0.1:1"
	rec0 := httptest.NewRecorder()
	noStore.ServeHTTP(rec0, r0)
	if rec0.Code != http.StatusServiceUnavailable {
		t.Errorf("no store: %d %s", rec0.Code, rec0.Body)
	}

	none := NewAdmin(AdminOptions{Store: f.store})
	r := httptest.NewRequest("POST", "/api/reload", nil)
	r.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	none.ServeHTTP(rec, r)
	if rec.Code != http.StatusNotImplemented {
		t.Errorf("reload unsupported: %d %s", rec.Code, rec.Body)
	}
}

// TestAdminNeverReturnsCredential runs a whole gateway on a config whose accounts, admin key
// and client carry real-looking secrets (inline, from the environment and from a file), sends
// traffic that fails over and cools accounts down, then reads every own endpoint and checks
// that no secret, nor a long piece of one, appears in any answer or in the log.
func TestAdminNeverReturnsCredential(t *testing.T) {
	const (
		apiKey   = "sk-ant-api03-SECRETapikeyVALUE-0123456789abcdefXYZ1"
		oauthTok = "sk-ant-oat01-SECREToauthTOKEN-0123456789abcdefXYZ2"
		fileKey  = "sk-ant-api03-SECRETfromFILE-0123456789abcdefXYZ3"
		adminKey = "admin-SECRET-key-0123456789abcdef"
	)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "filekey")
	if err := os.WriteFile(keyFile, []byte(fileKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fake := fakeapi.New(t)
	fake.Accept(apiKey, oauthTok, fileKey)
	// Every first attempt on the oauth account is rate limited, and one 401 on the file key.
	fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		switch r.Credential {
		case oauthTok:
			return &fakeapi.Reply{Status: 429, Header: http.Header{"Retry-After": {"30"}}}
		case fileKey:
			if r.N == 2 {
				return &fakeapi.Reply{Status: 401}
			}
		}
		return nil
	})
	yaml := `version: 1
upstream:
  url: ` + fake.URL + `
accounts:
  - name: inline
    plan: console
    api_key: ` + apiKey + `
  - name: work
    plan: max
    oauth_token: ${WORK_TOKEN}
  - name: filed
    plan: max
    api_key_file: ` + keyFile + `
admin:
  key: ${ADMIN_KEY}
`
	env := map[string]string{"WORK_TOKEN": oauthTok, "ADMIN_KEY": adminKey}
	cfg, err := config.Parse(filepath.Join(dir, "claude-lb.yaml"), []byte(yaml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	logs := &syncbuf.Buffer{}
	m := NewMetrics(nil)
	m.SetStatsSource(st.Stats)
	gw, err := New(cfg, Options{
		Store: st, AdminStore: st, Replica: "r1", Observer: m, Metrics: m.Handler(),
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Reload: func(context.Context) error { return errors.New("config rejected") },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)

	for _, model := range []string{"claude-opus-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "claude-opus-5-5"} {
		resp, err := http.Post(srv.URL+"/v1/messages", "application/json",
			strings.NewReader(`{"model":"`+model+`","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	var outputs strings.Builder
	get := func(method, path, key string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if key != "" {
			req.Header.Set("x-api-key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if key == adminKey && strings.HasPrefix(path, "/api/") && path != "/api/nothing" && method == "GET" && resp.StatusCode != 200 {
			t.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		for k, v := range resp.Header {
			outputs.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		outputs.Write(b)
	}
	for _, p := range []string{"/api/accounts", "/api/stats", "/api/history?limit=1000", "/api/nothing", "/dashboard/", "/dashboard/app.js", "/metrics", "/readyz", "/healthz"} {
		get("GET", p, adminKey)
		get("GET", p, "wrong-key")
		get("GET", p, "")
	}
	get("POST", "/api/reload", adminKey)
	get("POST", "/api/stats/reset", "wrong")

	out := outputs.String() + logs.String()
	if !strings.Contains(outputs.String(), `"fingerprint":"…XYZ2"`) || !strings.Contains(outputs.String(), "claude_lb_requests_total") {
		t.Fatalf("the endpoints did not answer as expected:\n%s", outputs.String())
	}
	for _, secret := range []string{apiKey, oauthTok, fileKey, adminKey} {
		for _, piece := range []string{secret, secret[:16], secret[len(secret)-12:]} {
			if strings.Contains(out, piece) {
				t.Errorf("output contains a piece of a secret %q", piece)
			}
		}
	}
}
