package memory

import (
	"sync"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return New(Options{HistorySize: storetest.HistorySize})
	})
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func TestMarkExpiryExact(t *testing.T) {
	clk := newClock()
	s := New(Options{Now: clk.Now})
	req := routing.PickRequest{Candidates: storetest.Cands("a")}
	storetest.MustMark(t, s, routing.Mark{Account: "a", Until: clk.Now().Add(10 * time.Second), Reason: "429"})
	tests := []struct {
		advance time.Duration
		want    string
	}{
		{0, ""},
		{10*time.Second - time.Millisecond, ""},
		{time.Millisecond, "a"}, // Until itself is free
	}
	for _, tc := range tests {
		clk.Add(tc.advance)
		p := storetest.MustPick(t, s, req)
		if p.Account != tc.want {
			t.Errorf("at %v: pick = %+v, want %q", clk.Now(), p, tc.want)
		}
		if p.Account == "" && (!p.RetryAt.Equal(time.Date(2026, 11, 25, 12, 0, 10, 0, time.UTC)) || p.Reason != "429") {
			t.Errorf("at %v: RetryAt/Reason = %v/%q", clk.Now(), p.RetryAt, p.Reason)
		}
	}
	if n := len(s.accounts["a"].marks); n != 0 {
		t.Errorf("expired mark kept: %d marks", n)
	}
}

func TestAffinityExpiryExactAndSweep(t *testing.T) {
	clk := newClock()
	s := New(Options{Now: clk.Now})
	aff := routing.PickRequest{Candidates: storetest.Cands("a", "b"), Session: "s", AffinityTTL: time.Minute}
	storetest.MustPick(t, s, aff) // a, bound until +1m
	clk.Add(59 * time.Second)
	storetest.MustPick(t, s, routing.PickRequest{Candidates: storetest.Cands("a")})
	if p := storetest.MustPick(t, s, aff); p.Why != "affinity" {
		t.Fatalf("pick at +59s = %+v, want affinity", p)
	}
	clk.Add(time.Minute) // renewed at +59s: expires at +1m59s
	if p := storetest.MustPick(t, s, aff); p.Account != "b" || p.Why != "least-used" {
		t.Fatalf("pick after expiry = %+v, want b/least-used", p)
	}
	// Many one-off sessions: expired bindings are swept, so the map stays bounded.
	short := routing.PickRequest{Candidates: storetest.Cands("a"), AffinityTTL: time.Second}
	for i := range 20 * minAffinitySweep {
		short.Session = string(rune('A'+i%26)) + time.Duration(i).String()
		storetest.MustPick(t, s, short)
		clk.Add(100 * time.Millisecond)
	}
	if n := len(s.bindings); n > 2*minAffinitySweep {
		t.Errorf("%d bindings kept, want ≤ %d (expired ones swept)", n, 2*minAffinitySweep)
	}
}

func TestManyCandidates(t *testing.T) {
	// More candidates than the stack buffer holds.
	s := New(Options{})
	names := make([]string, 40)
	for i := range names {
		names[i] = "acct" + time.Duration(i).String()
	}
	req := routing.PickRequest{Candidates: storetest.Cands(names...)}
	seen := map[string]bool{}
	for range 80 {
		seen[storetest.MustPick(t, s, req).Account] = true
	}
	if len(seen) != 40 {
		t.Errorf("80 picks over 40 accounts reached %d of them", len(seen))
	}
	if c := storetest.Requests(t, s, names...); storetest.Spread(c) != 0 {
		t.Errorf("requests = %v, want 2 each", c)
	}
}

func TestPickAllocs(t *testing.T) {
	s := New(Options{})
	ctx := t.Context()
	until := time.Now().Add(time.Hour)
	storetest.MustMark(t, s, routing.Mark{Account: "b", Scope: "family:opus", Until: until, Reason: "429"})
	storetest.MustMark(t, s, routing.Mark{Account: "c", Until: until, Reason: "near", Soft: true})
	tests := []struct {
		name string
		req  routing.PickRequest
	}{
		{"least-used", routing.PickRequest{Candidates: storetest.Cands("a", "b", "c", "d"), Scopes: []string{"family:opus"}}},
		{"affinity", routing.PickRequest{Candidates: storetest.Cands("a", "b", "c", "d"), Session: "sess", AffinityTTL: time.Hour}},
		{"round-robin", routing.PickRequest{Strategy: routing.RoundRobin, Candidates: storetest.Cands("a", "b", "c", "d")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Pick(ctx, tc.req); err != nil { // warm up: first binding, accounts
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := s.Pick(ctx, tc.req); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > 0 {
				t.Errorf("Pick allocates %.1f times per call, want 0", allocs)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	s := New(Options{})
	req := routing.PickRequest{Candidates: storetest.Cands("a", "b", "c", "d", "e"), Scopes: []string{"family:opus"}}
	storetest.MustMark(b, s, routing.Mark{Account: "b", Scope: "family:opus", Until: time.Now().Add(time.Hour), Reason: "429"})
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Pick(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPickParallel(b *testing.B) {
	s := New(Options{})
	req := routing.PickRequest{Candidates: storetest.Cands("a", "b", "c", "d", "e")}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Pick(b.Context(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRecord(b *testing.B) {
	s := New(Options{})
	u := routing.Usage{Time: time.Now(), Account: "a", Model: "claude-sonnet-5-5", Status: 200, InputTokens: 10, Tried: []string{"a:ok"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Record(b.Context(), u); err != nil {
			b.Fatal(err)
		}
	}
}
