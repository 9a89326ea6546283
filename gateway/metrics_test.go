package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
)

// Metrics is what the gateway reports to.
var _ Observer = (*Metrics)(nil)

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 {
		t.Fatalf("scrape: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

func TestMetricsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.Request("claude-opus-5-5", "work", 200, 2, 1500*time.Millisecond)
	m.Request("claude-opus-5-5", "work", 200, 1, time.Second)
	m.Request("gpt-4o", "", 400, 0, time.Millisecond)
	m.Request("", "personal", 200, 1, time.Millisecond)
	m.Attempt("work", "429")
	m.Attempt("work", "ok")
	m.Attempt("team", "rate limited: see headers") // free text is not a label
	m.Upstream("work", 300*time.Millisecond)
	m.Tokens("work", "claude-opus-5-5", 21, 9, 1055, 34)
	m.Tokens("work", "claude-opus-5-5", 1, 0, 0, 0)
	m.Cooldown("team", "family:opus", "429")
	m.Cooldown("team", "cred:ab12cd", "401")
	m.Cooldown("team", "", "529")
	m.Cooldown("team", "family:Some Model", "403")
	m.Reload(true, time.Unix(1700000000, 500e6))
	m.Reload(false, time.Unix(1700000100, 0))
	m.StoreDegraded(true)
	m.NeedsLogin("team", true)
	m.NeedsLogin("work", false)

	tests := []struct {
		c    prometheus.Collector
		lv   []string
		want float64
	}{
		{m.requests, []string{"claude-opus-5-5", "work", "200"}, 2},
		{m.requests, []string{"other", "none", "400"}, 1},
		{m.requests, []string{"none", "personal", "200"}, 1},
		{m.attempts, []string{"work", "429"}, 1},
		{m.attempts, []string{"team", "other"}, 1},
		{m.tokens, []string{"work", "claude-opus-5-5", "input"}, 22},
		{m.tokens, []string{"work", "claude-opus-5-5", "output"}, 9},
		{m.tokens, []string{"work", "claude-opus-5-5", "cache_read"}, 1055},
		{m.tokens, []string{"work", "claude-opus-5-5", "cache_write"}, 34},
		{m.cooldowns, []string{"team", "family:opus", "429"}, 1},
		{m.cooldowns, []string{"team", "cred", "401"}, 1},
		{m.cooldowns, []string{"team", "account", "529"}, 1},
		{m.cooldowns, []string{"team", "family:other", "403"}, 1},
		{m.reloads, []string{"success"}, 1},
		{m.reloads, []string{"failure"}, 1},
		{m.needsLogin, []string{"team"}, 1},
		{m.needsLogin, []string{"work"}, 0},
	}
	for _, tt := range tests {
		var got float64
		switch v := tt.c.(type) {
		case *prometheus.CounterVec:
			got = testutil.ToFloat64(v.WithLabelValues(tt.lv...))
		case *prometheus.GaugeVec:
			got = testutil.ToFloat64(v.WithLabelValues(tt.lv...))
		}
		if got != tt.want {
			t.Errorf("%v = %v, want %v", tt.lv, got, tt.want)
		}
	}
	if got := testutil.ToFloat64(m.reloadSuccess); got != 1700000000.5 {
		t.Errorf("last reload success %v", got)
	}
	if got := testutil.ToFloat64(m.storeDegraded); got != 1 {
		t.Errorf("store degraded %v", got)
	}
	if n := testutil.CollectAndCount(m.tokens); n != 4 {
		t.Errorf("token series %d, want 4 (zero counts are not added)", n)
	}

	text := scrape(t, m.Handler())
	for _, want := range []string{
		`claude_lb_request_duration_seconds_count{model="claude-opus-5-5"} 2`,
		`claude_lb_request_attempts_bucket{le="1"} 2`,
		`claude_lb_request_attempts_count 3`,
		`claude_lb_upstream_duration_seconds_count{account="work"} 1`,
		`claude_lb_build_info{`,
		`claude_lb_store_degraded 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "claude_lb_") {
			t.Errorf("series not named claude_lb_…: %s", line)
		}
	}
}

func TestMetricsModelCardinality(t *testing.T) {
	m := NewMetrics(nil)
	tests := map[string]string{
		"claude-opus-5-5":                   "claude-opus-5-5",
		"claude-3-5-sonnet-20241022":        "claude-3-5-sonnet-20241022",
		"claude-sonnet-4.5":                 "claude-sonnet-4.5",
		"":                                  "none",
		"claude-":                           "other",
		"Claude-Opus":                       "other",
		"claude-opus-5-5[1m]":               "other",
		"gpt-4o":                            "other",
		"claude-" + strings.Repeat("a", 60): "claude-" + strings.Repeat("a", 60),
		"claude-" + strings.Repeat("a", 61): "other",
		"claude-opus\x00":                   "other",
		"claude-ópus":                       "other",
		"claude-opus-5-5 ; drop table":      "other",
		"claude-sonnet-5-5\"} 1\nclaude_lb_fake{": "other",
	}
	for in, want := range tests {
		if got := m.modelLabel(in); got != want {
			t.Errorf("modelLabel(%q) = %q, want %q", in, got, want)
		}
	}
	// Past maxModelLabels distinct ids, new ones count as other; known ones stay.
	for i := range 2 * maxModelLabels {
		m.Request(fmt.Sprintf("claude-x-%d", i), "a", 200, 1, time.Millisecond)
	}
	if got := m.modelLabel("claude-opus-5-5"); got != "claude-opus-5-5" {
		t.Errorf("a known model lost its label: %q", got)
	}
	if got := m.modelLabel("claude-brand-new"); got != "other" {
		t.Errorf("model past the cap: %q", got)
	}
	if n := testutil.CollectAndCount(m.requests); n > maxModelLabels+1 {
		t.Errorf("%d request series, want at most %d", n, maxModelLabels+1)
	}
}

// TestMetricsHotPathAllocs checks that the recording methods allocate no more than the
// client_golang calls they make.
func TestMetricsHotPathAllocs(t *testing.T) {
	m := NewMetrics(nil)
	m.Request("claude-opus-5-5", "work", 200, 1, time.Second)
	m.Attempt("work", "ok")
	m.Upstream("work", time.Second)
	m.Tokens("work", "claude-opus-5-5", 1, 1, 1, 1)
	raw := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"a", "b", "c"})
	rawH := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "y"}, []string{"a"})
	rawH.WithLabelValues("claude-opus-5-5").Observe(1)
	raw.WithLabelValues("claude-opus-5-5", "work", "200").Inc()
	base := testing.AllocsPerRun(200, func() {
		raw.WithLabelValues("claude-opus-5-5", "work", "200").Inc()
		rawH.WithLabelValues("claude-opus-5-5").Observe(1)
	})
	got := testing.AllocsPerRun(200, func() {
		m.Request("claude-opus-5-5", "work", 200, 1, time.Second)
	})
	if got > base {
		t.Errorf("Request allocates %v per call, client_golang alone %v", got, base)
	}
	for name, f := range map[string]func(){
		"Attempt":  func() { m.Attempt("work", "ok") },
		"Upstream": func() { m.Upstream("work", time.Second) },
		"Tokens":   func() { m.Tokens("work", "claude-opus-5-5", 1, 1, 1, 1) },
	} {
		if n := testing.AllocsPerRun(200, f); n > 4*base {
			t.Errorf("%s allocates %v per call", name, n)
		}
	}
}

func TestMetricsActiveCooldowns(t *testing.T) {
	m := NewMetrics(nil)
	if strings.Contains(scrape(t, m.Handler()), "claude_lb_cooldowns_active{") {
		t.Fatal("active cooldowns reported without a stats source")
	}
	st := memory.New(memory.Options{})
	ctx := context.Background()
	now := time.Now()
	for _, mk := range []routing.Mark{
		{Account: "work", Scope: "family:opus", Until: now.Add(time.Hour), Reason: "429"},
		{Account: "work", Scope: "", Until: now.Add(time.Hour), Reason: "529"},
		{Account: "team", Scope: "cred:abc", Until: now.Add(time.Hour), Reason: "401"},
		{Account: "team", Scope: "", Until: now.Add(time.Hour), Soft: true, Reason: "near"},
		{Account: "old", Scope: "", Until: now.Add(-time.Minute), Reason: "expired"},
	} {
		if err := st.Mark(ctx, mk); err != nil {
			t.Fatal(err)
		}
	}
	m.SetStatsSource(st.Stats)
	text := scrape(t, m.Handler())
	for _, want := range []string{
		`claude_lb_cooldowns_active{account="work",scope="family:opus"} 1`,
		`claude_lb_cooldowns_active{account="work",scope="account"} 1`,
		`claude_lb_cooldowns_active{account="team",scope="cred"} 1`,
		`claude_lb_account_near_limit{account="team"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, `account="old"`) {
		t.Error("an expired cooldown is reported")
	}
}

// TestMetricsThroughGateway sends requests through a gateway (one fails over from a rate
// limited account) and reads /metrics: every series the issue lists is there.
func TestMetricsThroughGateway(t *testing.T) {
	const (
		keyA = "sk-ant-api03-metrics-a-000000000000000001"
		tokB = "sk-ant-oat01-metrics-b-000000000000000002"
	)
	fake := fakeapi.New(t)
	fake.Accept(keyA, tokB)
	fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		if r.Credential == tokB && r.Model == "claude-sonnet-5-5" {
			return &fakeapi.Reply{Status: 429, Header: http.Header{"Retry-After": {"60"}}}
		}
		return nil
	})
	cfg := config.Default()
	cfg.Upstream.URL = fake.URL
	cfg.Hash = "metrics"
	cfg.Accounts = []config.Account{
		{Name: "b-max", Plan: "max", OAuthToken: tokB},
		{Name: "a-console", Plan: "console", APIKey: keyA},
	}
	cfg.Routing.Strategy = "priority"
	cfg.Accounts[0].Priority = 0
	cfg.Accounts[1].Priority = 1
	st := memory.New(memory.Options{})
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetStatsSource(st.Stats)
	m.Reload(true, time.Now())
	gw, err := New(cfg, Options{Store: st, AdminStore: st, Observer: m, Metrics: m.Handler(), Replica: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	for _, model := range []string{"claude-opus-5-5", "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"} {
		resp, err := http.Post(srv.URL+"/v1/messages", "application/json",
			strings.NewReader(`{"model":"`+model+`","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", model, resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`claude_lb_requests_total{account="b-max",model="claude-opus-5-5",status="200"} 2`,
		`claude_lb_requests_total{account="a-console",model="claude-sonnet-5-5",status="200"} 1`,
		`claude_lb_attempts_total{account="b-max",reason="429"} 1`,
		`claude_lb_upstream_duration_seconds_count{account="a-console"}`,
		`claude_lb_request_duration_seconds_bucket{model="claude-haiku-5-5",le="+Inf"} 1`,
		`claude_lb_tokens_total{account="b-max",model="claude-opus-5-5",type="input"}`,
		`claude_lb_cooldowns_total{account="b-max"`,
		`claude_lb_cooldowns_active{account="b-max"`,
		`claude_lb_config_reloads_total{result="success"} 1`,
		`claude_lb_config_reloads_total{result="failure"} 0`,
		`claude_lb_config_last_reload_success_timestamp_seconds `,
		`claude_lb_store_degraded 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}
