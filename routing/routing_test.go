package routing

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
)

func cands(names ...string) []Candidate {
	out := make([]Candidate, len(names))
	for i, n := range names {
		out[i] = Candidate{Name: n, Weight: 1}
	}
	return out
}

func TestChoose(t *testing.T) {
	c := cands("a", "b", "c")
	tests := []struct {
		name     string
		strategy Strategy
		c        []Candidate
		st       []CandidateState
		rr       uint64
		want     int
		why      string
	}{
		{"fewest requests", LeastUsed, c, []CandidateState{{Requests: 3}, {Requests: 1}, {Requests: 2}}, 0, 1, "least-used"},
		{"tie: least recently used", LeastUsed, c, []CandidateState{{Requests: 1, LastUsed: 30}, {Requests: 1, LastUsed: 10}, {Requests: 1, LastUsed: 20}}, 0, 1, "least-used"},
		{"tie: config order", LeastUsed, c, []CandidateState{{}, {}, {}}, 0, 0, "least-used"},
		{"hard excluded", LeastUsed, c, []CandidateState{{Hard: true}, {Requests: 5}, {Requests: 9}}, 0, 1, "least-used"},
		{"soft goes to the back", LeastUsed, c, []CandidateState{{Soft: true}, {Requests: 5}, {Requests: 9}}, 0, 1, "least-used"},
		{"only soft left", LeastUsed, c, []CandidateState{{Soft: true, Requests: 2}, {Hard: true}, {Soft: true, Requests: 1}}, 0, 2, "only-soft"},
		{"all hard", LeastUsed, c, []CandidateState{{Hard: true}, {Hard: true}, {Hard: true}}, 0, -1, ""},
		{"weight", LeastUsed, []Candidate{{Name: "a", Weight: 3}, {Name: "b", Weight: 1}}, []CandidateState{{Requests: 2}, {Requests: 1}}, 0, 0, "least-used"},
		{"priority first", Priority, []Candidate{{Name: "a", Priority: 2}, {Name: "b", Priority: 1}, {Name: "c", Priority: 1}}, []CandidateState{{}, {Requests: 4}, {Requests: 3}}, 0, 2, "priority"},
		{"priority skips hard", Priority, []Candidate{{Name: "a", Priority: 0}, {Name: "b", Priority: 1}}, []CandidateState{{Hard: true}, {Requests: 9}}, 0, 1, "priority"},
		{"round robin", RoundRobin, c, []CandidateState{{}, {}, {}}, 4, 1, "round-robin"},
		{"round robin skips hard", RoundRobin, c, []CandidateState{{}, {Hard: true}, {}}, 1, 2, "round-robin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := Choose(tt.strategy, tt.c, tt.st, tt.rr)
			if got != tt.want || why != tt.why {
				t.Fatalf("Choose = %d %q, want %d %q", got, why, tt.want, tt.why)
			}
		})
	}
}

func TestChooseSpreadsEvenly(t *testing.T) {
	for _, s := range []Strategy{LeastUsed, RoundRobin} {
		c := cands("a", "b", "c", "d")
		st := make([]CandidateState, len(c))
		for i := range 1001 {
			k, _ := Choose(s, c, st, uint64(i))
			st[k].Requests++
			st[k].LastUsed = int64(i + 1)
		}
		lo, hi := st[0].Requests, st[0].Requests
		for _, x := range st {
			lo, hi = min(lo, x.Requests), max(hi, x.Requests)
		}
		if hi-lo > 1 {
			t.Errorf("%v: counts %v differ by more than 1", s, st)
		}
	}
}

func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Accounts = []config.Account{
		{Name: "personal", Plan: "console", APIKey: "k1"},
		{Name: "work", Plan: "max", OAuthToken: "t1"},
		{Name: "team", Plan: "max", OAuthToken: "t2"},
		{Name: "haiku-only", Plan: "console", APIKey: "k2", Models: []string{"claude-*haiku*"}},
		{Name: "off", Plan: "max", APIKey: "k3", Disabled: true},
	}
	return cfg
}

func names(t *Table, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, t.Accounts()[i].Name)
	}
	return out
}

func TestTableCandidates(t *testing.T) {
	tab := NewTable(testConfig())
	tests := []struct {
		model string
		want  []string
	}{
		{"claude-opus-5-5", []string{"work", "team"}},
		{"claude-opus-4-1", []string{"work", "team"}},
		{"claude-3-opus-20240229", []string{"work", "team"}},
		{"claude-sonnet-5-5", []string{"personal", "work", "team"}},
		{"claude-haiku-5-5", []string{"personal", "work", "team", "haiku-only"}},
		{"claude-fable-5-2", []string{"personal", "work", "team"}}, // no rule: every account, own models still apply
		{"", []string{"personal", "work", "team", "haiku-only"}},
	}
	for _, tt := range tests {
		for range 2 { // the second call is served from the cache
			idx, err := tab.Candidates(tt.model)
			if err != nil || !slices.Equal(names(tab, idx), tt.want) {
				t.Errorf("Candidates(%q) = %v, %v; want %v", tt.model, names(tab, idx), err, tt.want)
			}
		}
	}
}

func TestTableNoCompatible(t *testing.T) {
	cfg := testConfig()
	cfg.Accounts = cfg.Accounts[:1]
	tab := NewTable(cfg)
	if _, err := tab.Candidates("claude-opus-5-5"); !errors.Is(err, ErrNoCompatibleAccount) {
		t.Fatalf("err = %v, want ErrNoCompatibleAccount", err)
	}
	cfg = testConfig()
	cfg.Routing.UnknownModels = "reject"
	tab = NewTable(cfg)
	if _, err := tab.Candidates("claude-fable-5-2"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("err = %v, want ErrUnknownModel", err)
	}
	if idx, err := tab.Candidates("claude-sonnet-5-5"); err != nil || len(idx) != 3 {
		t.Fatalf("known model under reject: %v %v", idx, err)
	}
}

func TestTableCacheBounded(t *testing.T) {
	tab := NewTable(testConfig())
	for i := range cacheMax * 3 {
		if _, err := tab.Candidates("claude-x-" + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := tab.cached.Load(); n > cacheMax {
		t.Fatalf("cache holds %d entries, want at most %d", n, cacheMax)
	}
}

func TestCandidatesAllocs(t *testing.T) {
	tab := NewTable(testConfig())
	_, _ = tab.Candidates("claude-sonnet-5-5")
	if a := testing.AllocsPerRun(1000, func() { _, _ = tab.Candidates("claude-sonnet-5-5") }); a != 0 {
		t.Fatalf("cached Candidates allocates %v times, want 0", a)
	}
	st := make([]CandidateState, 4)
	c := cands("a", "b", "c", "d")
	if a := testing.AllocsPerRun(1000, func() { Choose(LeastUsed, c, st, 0) }); a != 0 {
		t.Fatalf("Choose allocates %v times, want 0", a)
	}
}

func TestOpusCapableAndFamily(t *testing.T) {
	tab := NewTable(testConfig())
	for _, a := range tab.Accounts() {
		want := a.Plan == "max"
		if got := tab.OpusCapable(a); got != want {
			t.Errorf("OpusCapable(%s) = %v, want %v", a.Name, got, want)
		}
	}
	for model, want := range map[string]string{"claude-opus-5-5": "opus", "claude-3-5-sonnet-20241022": "sonnet", "claude-haiku-5-5": "haiku", "claude-fable-5-2": "claude-fable-5-2"} {
		if got := Family(model); got != want {
			t.Errorf("Family(%q) = %q, want %q", model, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cfg := PolicyConfig{Cooldown: time.Minute, MaxCooldown: 30 * time.Minute, SoftLimit: 0.9}
	hdr := func(kv ...string) Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h.Get
	}
	tests := []struct {
		name      string
		status    int
		h         Header
		body      string
		net       bool
		retry     bool
		until     time.Duration // expected mark duration from now; 0 = no mark
		scope     string
		soft      bool
		reason    string
		credInval bool
	}{
		{"network", 0, hdr(), "", true, true, NetworkBench, "", false, "network", false},
		{"429 unified reset", 429, hdr("anthropic-ratelimit-unified-status", "rejected", "anthropic-ratelimit-unified-reset", strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10)), "", false, true, 10 * time.Minute, "", false, "429", false},
		{"429 unified reset capped", 429, hdr("anthropic-ratelimit-unified-reset", strconv.FormatInt(now.Add(5*time.Hour).Unix(), 10)), "", false, true, 30 * time.Minute, "", false, "429", false},
		{"429 opus claim", 429, hdr("anthropic-ratelimit-unified-reset", strconv.FormatInt(now.Add(time.Minute).Unix(), 10), "anthropic-ratelimit-unified-representative-claim", "seven_day_opus"), "", false, true, time.Minute, "family:opus", false, "429", false},
		{"429 retry-after seconds", 429, hdr("retry-after", "42"), "", false, true, 42 * time.Second, "", false, "429", false},
		{"429 retry-after date", 429, hdr("retry-after", now.Add(2*time.Minute).Format(time.RFC1123)), "", false, true, 2 * time.Minute, "", false, "429", false},
		{"429 tokens reset exhausted", 429, hdr("anthropic-ratelimit-requests-reset", now.Add(time.Minute).Format(time.RFC3339), "anthropic-ratelimit-requests-remaining", "10", "anthropic-ratelimit-tokens-reset", now.Add(3*time.Minute).Format(time.RFC3339), "anthropic-ratelimit-tokens-remaining", "0"), "", false, true, 3 * time.Minute, "", false, "429", false},
		{"429 no reset", 429, hdr(), "", false, true, time.Minute, "", false, "429", false},
		{"429 request scoped", 429, hdr(), `{"type":"error","error":{"type":"rate_limit_error","message":"Extra usage is required for long context requests."}}`, false, true, 0, "", false, "429", false},
		{"429 request-scoped words but subscription rejected", 429, hdr("anthropic-ratelimit-unified-status", "rejected", "anthropic-ratelimit-unified-reset", strconv.FormatInt(now.Add(time.Hour).Unix(), 10)), `{"error":{"message":"buy extra usage"}}`, false, true, 30 * time.Minute, "", false, "429", false}, // capped at max_cooldown
		{"429 reset in the past", 429, hdr("retry-after", now.Add(-time.Hour).Format(time.RFC1123)), "", false, true, time.Minute, "", false, "429", false},
		{"529", 529, hdr(), "", false, true, 0, "", false, "529", false},
		{"503", 503, hdr(), "", false, true, 0, "", false, "5xx", false},
		{"401", 401, hdr(), "", false, true, InvalidCredFor, "", false, "401", true},
		{"403", 403, hdr(), "", false, true, Forbidden, "family:opus", false, "403", false},
		{"400", 400, hdr(), "", false, false, 0, "", false, "4xx", false},
		{"404", 404, hdr(), "", false, false, 0, "", false, "4xx", false},
		{"413", 413, hdr(), "", false, false, 0, "", false, "4xx", false},
		{"200", 200, hdr(), "", false, false, 0, "", false, "ok", false},
		{"200 warning", 200, hdr("anthropic-ratelimit-unified-status", "allowed_warning", "anthropic-ratelimit-unified-reset", strconv.FormatInt(now.Add(2*time.Hour).Unix(), 10)), "", false, false, 2 * time.Hour, "", true, "ok", false},
		{"200 utilization high", 200, hdr("anthropic-ratelimit-unified-5h-utilization", "0.93"), "", false, false, time.Hour, "", true, "ok", false},
		{"200 utilization low", 200, hdr("anthropic-ratelimit-unified-5h-utilization", "0.5"), "", false, false, 0, "", false, "ok", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Classify(now, cfg, tt.status, tt.h, []byte(tt.body), tt.net, "opus")
			if o.Retry != tt.retry || o.Reason != tt.reason || o.CredentialInvalid != tt.credInval {
				t.Fatalf("Classify = %+v", o)
			}
			var got time.Duration
			if !o.Mark.Until.IsZero() {
				got = o.Mark.Until.Sub(now)
			}
			if got != tt.until || o.Mark.Scope != tt.scope || o.Mark.Soft != tt.soft {
				t.Fatalf("mark = %v scope %q soft %v, want %v %q %v", got, o.Mark.Scope, o.Mark.Soft, tt.until, tt.scope, tt.soft)
			}
			if !o.Mark.Until.IsZero() && o.Mark.Reason == "" {
				t.Fatal("mark without a reason")
			}
		})
	}
}

func TestUsageFailed(t *testing.T) {
	for _, tt := range []struct {
		u    Usage
		want bool
	}{
		{Usage{Status: 200}, false},
		{Usage{Status: 200, Error: "upstream stream broke"}, true},
		{Usage{Status: 429}, true},
		{Usage{Status: 529}, true},
		{Usage{Status: 499, Error: "client closed request"}, false},
	} {
		if got := tt.u.Failed(); got != tt.want {
			t.Errorf("%+v: Failed = %v, want %v", tt.u, got, tt.want)
		}
	}
}

func TestFamilyScopeAllocs(t *testing.T) {
	if FamilyScope("opus") != "family:opus" || FamilyScope("claude-fable-5-2") != "family:claude-fable-5-2" {
		t.Fatal("wrong scope")
	}
	f := Family("claude-sonnet-5-5")
	if a := testing.AllocsPerRun(100, func() { _ = FamilyScope(f) }); a != 0 {
		t.Fatalf("FamilyScope of a known family allocates %v times", a)
	}
}
