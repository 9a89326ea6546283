// Package storetest is the contract every routing store passes: one suite, run unchanged
// against the memory store, the Redis store and the fallback store, so that they keep the
// same selection policy, mark semantics, counters and history.
package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/routing"
)

// HistorySize is the history length newStore must give the stores it builds.
const HistorySize = 20

// Store is what the suite tests: the router's side and the admin side.
type Store interface {
	routing.Store
	routing.AdminStore
}

// Run runs the contract suite. newStore returns a new, empty store using the real clock, with
// a history of HistorySize entries; each subtest gets its own store and runs in parallel.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"LeastUsedSpreads", testLeastUsedSpreads},
		{"Weight", testWeight},
		{"LeastRecentlyUsedBreaksTies", testLRUTieBreak},
		{"Priority", testPriority},
		{"RoundRobin", testRoundRobin},
		{"HardMarks", testHardMarks},
		{"SoftMarks", testSoftMarks},
		{"MarkReplaceAndClear", testMarkReplaceAndClear},
		{"MarkExpires", testMarkExpires},
		{"AffinitySticks", testAffinitySticks},
		{"AffinityRenews", testAffinityRenews},
		{"AffinityExpires", testAffinityExpires},
		{"AffinityMovesOnlyWhenBlocked", testAffinityMovesOnlyWhenBlocked},
		{"Bind", testBind},
		{"AllBlocked", testAllBlocked},
		{"NoCandidates", testNoCandidates},
		{"RecordAndStats", testRecordAndStats},
		{"StatsMarks", testStatsMarks},
		{"History", testHistory},
		{"HistoryCap", testHistoryCap},
		{"ResetStats", testResetStats},
		{"ClearHistory", testClearHistory},
		{"ConcurrentPicks", testConcurrentPicks},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// Cands returns weight-1 candidates with the given names, in that order.
func Cands(names ...string) []routing.Candidate {
	c := make([]routing.Candidate, len(names))
	for i, n := range names {
		c[i] = routing.Candidate{Name: n, Weight: 1}
	}
	return c
}

// MustPick picks and fails the test on an error.
func MustPick(t testing.TB, s routing.Store, req routing.PickRequest) routing.Pick {
	t.Helper()
	p, err := s.Pick(t.Context(), req)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return p
}

// MustMark marks and fails the test on an error.
func MustMark(t testing.TB, s routing.Store, m routing.Mark) {
	t.Helper()
	if err := s.Mark(t.Context(), m); err != nil {
		t.Fatalf("Mark(%+v): %v", m, err)
	}
}

// MustStats reads the stats and fails the test on an error.
func MustStats(t testing.TB, s routing.AdminStore) routing.Stats {
	t.Helper()
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

// Requests returns the request count of each named account.
func Requests(t testing.TB, s routing.AdminStore, names ...string) []int64 {
	t.Helper()
	st := MustStats(t, s)
	out := make([]int64, len(names))
	for i, n := range names {
		out[i] = st.Accounts[n].Requests
	}
	return out
}

// Spread is max-min of counts.
func Spread(counts []int64) int64 {
	return slices.Max(counts) - slices.Min(counts)
}

func pickAll(t *testing.T, s Store, req routing.PickRequest, n int) []string {
	t.Helper()
	var got []string
	for range n {
		got = append(got, MustPick(t, s, req).Account)
	}
	return got
}

func testLeastUsedSpreads(t *testing.T, s Store) {
	req := routing.PickRequest{Candidates: Cands("a", "b", "c")}
	got := pickAll(t, s, req, 6)
	if want := []string{"a", "b", "c", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("picks = %v, want %v (fewest requests, then least recently used, then config order)", got, want)
	}
	pickAll(t, s, req, 24)
	if c := Requests(t, s, "a", "b", "c"); !slices.Equal(c, []int64{10, 10, 10}) {
		t.Errorf("requests after 30 picks = %v, want 10 each", c)
	}
	if p := MustPick(t, s, req); p.Why != "least-used" {
		t.Errorf("Why = %q, want least-used", p.Why)
	}
	// A new account joins with zero requests: it takes the next picks.
	req.Candidates = Cands("a", "b", "c", "d")
	if got := pickAll(t, s, req, 3); !slices.Equal(got, []string{"d", "d", "d"}) {
		t.Errorf("picks with a fresh account = %v, want d d d", got)
	}
}

func testWeight(t *testing.T, s Store) {
	req := routing.PickRequest{Candidates: []routing.Candidate{
		{Name: "heavy", Weight: 2}, {Name: "light", Weight: 1}, {Name: "zero", Weight: 0}, // 0 counts as 1
	}}
	pickAll(t, s, req, 40)
	c := Requests(t, s, "heavy", "light", "zero")
	if c[0] < 19 || c[0] > 21 || c[1] < 9 || c[1] > 11 || c[2] < 9 || c[2] > 11 || c[0]+c[1]+c[2] != 40 {
		t.Errorf("requests (weights 2,1,0) = %v, want ≈ [20 10 10]", c)
	}
}

func testLRUTieBreak(t *testing.T, s Store) {
	one := func(name string) {
		t.Helper()
		if p := MustPick(t, s, routing.PickRequest{Candidates: Cands(name)}); p.Account != name {
			t.Fatalf("pick of only %s = %+v", name, p)
		}
		time.Sleep(3 * time.Millisecond) // last-used times have millisecond resolution
	}
	one("b")
	one("a")
	// Equal counts: b was used longest ago, so it wins despite config order.
	if p := MustPick(t, s, routing.PickRequest{Candidates: Cands("a", "b")}); p.Account != "b" {
		t.Errorf("pick = %q, want b (least recently used on equal counts)", p.Account)
	}
	// Record also refreshes last use.
	time.Sleep(3 * time.Millisecond)
	one("a") // a: 2, b: 2; b used after a's first pick but before this one
	if err := s.Record(t.Context(), routing.Usage{Account: "b", Status: 200}); err != nil {
		t.Fatal(err)
	}
	if p := MustPick(t, s, routing.PickRequest{Candidates: Cands("a", "b")}); p.Account != "a" {
		t.Errorf("pick = %q, want a (b was used by a later Record)", p.Account)
	}
}

func testPriority(t *testing.T, s Store) {
	req := routing.PickRequest{Strategy: routing.Priority, Candidates: []routing.Candidate{
		{Name: "backup", Weight: 1, Priority: 2},
		{Name: "main1", Weight: 1, Priority: 1},
		{Name: "main2", Weight: 1, Priority: 1},
	}}
	got := pickAll(t, s, req, 4)
	if want := []string{"main1", "main2", "main1", "main2"}; !slices.Equal(got, want) {
		t.Errorf("picks = %v, want %v (lowest priority, least used among equals)", got, want)
	}
	until := time.Now().Add(time.Minute)
	MustMark(t, s, routing.Mark{Account: "main1", Until: until, Reason: "429"})
	MustMark(t, s, routing.Mark{Account: "main2", Until: until, Reason: "429"})
	if p := MustPick(t, s, req); p.Account != "backup" || p.Why != "priority" {
		t.Errorf("pick with both mains cooling = %+v, want backup/priority", p)
	}
}

func testRoundRobin(t *testing.T, s Store) {
	req := routing.PickRequest{Strategy: routing.RoundRobin, Candidates: Cands("a", "b", "c")}
	// Round-robin ignores usage: load b up first.
	for range 5 {
		MustPick(t, s, routing.PickRequest{Candidates: Cands("b")})
	}
	var got []string
	for range 6 {
		p := MustPick(t, s, req)
		if p.Why != "round-robin" {
			t.Errorf("Why = %q, want round-robin", p.Why)
		}
		got = append(got, p.Account)
	}
	if want := []string{"a", "b", "c", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("picks = %v, want %v", got, want)
	}
	MustMark(t, s, routing.Mark{Account: "b", Until: time.Now().Add(time.Minute), Reason: "429"})
	got = pickAll(t, s, req, 4)
	if slices.Contains(got, "b") || !slices.Contains(got, "a") || !slices.Contains(got, "c") {
		t.Errorf("picks with b cooling = %v, want a and c only, alternating", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Errorf("picks with b cooling = %v: not alternating", got)
			break
		}
	}
}

func testHardMarks(t *testing.T, s Store) {
	until := time.Now().Add(time.Minute)
	MustMark(t, s, routing.Mark{Account: "a", Until: until, Reason: "whole account"})
	MustMark(t, s, routing.Mark{Account: "b", Scope: "family:opus", Until: until, Reason: "opus limit"})
	MustMark(t, s, routing.Mark{Account: "c", Scope: "cred:1234", Until: until, Reason: "401"})
	cands := []routing.Candidate{
		{Name: "a", Weight: 1},
		{Name: "b", Weight: 1},
		{Name: "c", Weight: 1, CredScope: "cred:1234"},
		{Name: "d", Weight: 1},
	}
	tests := []struct {
		name   string
		scopes []string
		cands  []routing.Candidate
		want   []string // accounts that may be picked
	}{
		{"opus request", []string{"family:opus"}, cands, []string{"d"}},
		{"sonnet request", []string{"family:sonnet"}, cands, []string{"b", "d"}},
		{"no scopes", nil, cands, []string{"b", "d"}},
		{"credential changed", []string{"family:opus"}, []routing.Candidate{
			{Name: "a", Weight: 1}, {Name: "b", Weight: 1}, {Name: "c", Weight: 1, CredScope: "cred:9999"},
		}, []string{"c"}},
	}
	for _, tc := range tests {
		req := routing.PickRequest{Candidates: tc.cands, Scopes: tc.scopes}
		for range 4 {
			if p := MustPick(t, s, req); !slices.Contains(tc.want, p.Account) {
				t.Errorf("%s: picked %+v, want one of %v", tc.name, p, tc.want)
			}
		}
	}
}

func testSoftMarks(t *testing.T, s Store) {
	until := time.Now().Add(time.Minute)
	req := routing.PickRequest{Candidates: Cands("a", "b", "c"), Scopes: []string{"family:opus"}}
	MustMark(t, s, routing.Mark{Account: "a", Until: until, Reason: "near limit", Soft: true})
	MustMark(t, s, routing.Mark{Account: "b", Scope: "family:opus", Until: until, Reason: "near limit", Soft: true})
	// a and b are the least used but near their limit: c takes everything.
	if got := pickAll(t, s, req, 4); !slices.Equal(got, []string{"c", "c", "c", "c"}) {
		t.Errorf("picks = %v, want c only (soft-marked accounts go last)", got)
	}
	MustMark(t, s, routing.Mark{Account: "c", Until: until, Reason: "429"})
	got := map[string]int{}
	for range 4 {
		p := MustPick(t, s, req)
		if p.Why != "only-soft" {
			t.Errorf("Why = %q, want only-soft", p.Why)
		}
		got[p.Account]++
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Errorf("picks with only soft accounts left = %v, want a and b twice each (least-used among them)", got)
	}
	// A soft mark on a scope the request does not have does not apply.
	req.Scopes = []string{"family:sonnet"}
	if p := MustPick(t, s, req); p.Account != "b" || p.Why != "least-used" {
		t.Errorf("sonnet pick = %+v, want b/least-used (b is near its opus limit only)", p)
	}
}

func testMarkReplaceAndClear(t *testing.T, s Store) {
	req := routing.PickRequest{Candidates: Cands("a", "b")}
	long := time.Now().Add(time.Hour)
	MustMark(t, s, routing.Mark{Account: "a", Until: long, Reason: "429"})
	// A soft mark on the same scope is a separate mark: it does not lift the cooldown.
	MustMark(t, s, routing.Mark{Account: "a", Until: long, Reason: "near limit", Soft: true})
	if p := MustPick(t, s, req); p.Account != "b" {
		t.Fatalf("pick = %q, want b (a is cooling down)", p.Account)
	}
	// Clearing the hard mark (Until in the past) frees a; the soft one still puts it last.
	MustMark(t, s, routing.Mark{Account: "a", Until: time.Now().Add(-time.Second)})
	if p := MustPick(t, s, req); p.Account != "b" {
		t.Errorf("pick = %q, want b (a still soft-marked)", p.Account)
	}
	MustMark(t, s, routing.Mark{Account: "a", Soft: true}) // zero Until clears too
	if p := MustPick(t, s, req); p.Account != "a" {
		t.Errorf("pick = %q, want a (all marks cleared, fewest requests)", p.Account)
	}
	// Setting a mark again replaces its expiry and reason.
	MustMark(t, s, routing.Mark{Account: "b", Until: long, Reason: "first"})
	MustMark(t, s, routing.Mark{Account: "b", Until: long.Add(time.Hour), Reason: "second"})
	marks := MustStats(t, s).Accounts["b"].Marks
	if len(marks) != 1 || marks[0].Reason != "second" || !marks[0].Until.Equal(long.Add(time.Hour).Truncate(time.Millisecond)) {
		t.Errorf("marks of b = %+v, want one with reason second", marks)
	}
}

func testMarkExpires(t *testing.T, s Store) {
	req := routing.PickRequest{Candidates: Cands("a", "b")}
	MustPick(t, s, routing.PickRequest{Candidates: Cands("b")}) // a is least used
	start := time.Now()
	MustMark(t, s, routing.Mark{Account: "a", Until: start.Add(400 * time.Millisecond), Reason: "short"})
	p := MustPick(t, s, req)
	if time.Since(start) < 300*time.Millisecond && p.Account != "b" {
		t.Errorf("pick right after the mark = %q, want b", p.Account)
	}
	eventually(t, 5*time.Second, "the expired mark to stop applying", func() bool {
		return MustPick(t, s, routing.PickRequest{Candidates: Cands("a")}).Account == "a"
	})
	if m := MustStats(t, s).Accounts["a"].Marks; len(m) != 0 {
		t.Errorf("Stats lists expired marks: %+v", m)
	}
}

// testBind: a binding made with Bind (a batch or file created on an account) steers later
// picks of that key to the account, even against least-used, and expires with its TTL.
func testBind(t *testing.T, s Store) {
	if err := s.Bind(t.Context(), "batch:msgbatch_1", "c", time.Hour); err != nil {
		t.Fatal(err)
	}
	req := routing.PickRequest{Candidates: Cands("a", "b", "c"), Session: "batch:msgbatch_1", AffinityTTL: time.Hour}
	for range 3 {
		if p := MustPick(t, s, req); p.Account != "c" || p.Why != "affinity" {
			t.Fatalf("pick of a bound resource = %+v, want c/affinity", p)
		}
	}
	if err := s.Bind(t.Context(), "file:f", "b", 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if p := MustPick(t, s, routing.PickRequest{Candidates: Cands("a", "b"), Session: "file:f", AffinityTTL: time.Hour}); p.Why == "affinity" {
		t.Fatalf("expired binding still used: %+v", p)
	}
}

func testAffinitySticks(t *testing.T, s Store) {
	aff := routing.PickRequest{Candidates: Cands("a", "b", "c"), Session: "s1", AffinityTTL: time.Hour}
	first := MustPick(t, s, aff)
	if first.Account != "a" || first.Why != "least-used" {
		t.Fatalf("first pick = %+v, want a/least-used", first)
	}
	for range 5 {
		if p := MustPick(t, s, aff); p.Account != "a" || p.Why != "affinity" {
			t.Fatalf("pick in session = %+v, want a/affinity", p)
		}
	}
	// Other sessions and session-less requests follow least-used.
	if p := MustPick(t, s, routing.PickRequest{Candidates: Cands("a", "b", "c")}); p.Account != "b" {
		t.Errorf("session-less pick = %q, want b", p.Account)
	}
	if p := MustPick(t, s, routing.PickRequest{Candidates: Cands("a", "b", "c"), Session: "s2", AffinityTTL: time.Hour}); p.Account != "c" {
		t.Errorf("new session pick = %q, want c", p.Account)
	}
	if c := Requests(t, s, "a", "b", "c"); !slices.Equal(c, []int64{6, 1, 1}) {
		t.Errorf("requests = %v, want [6 1 1] (affinity picks are counted)", c)
	}
	// The binding holds only while its account is a candidate; near its limit still counts.
	MustMark(t, s, routing.Mark{Account: "a", Until: time.Now().Add(time.Hour), Reason: "near limit", Soft: true})
	if p := MustPick(t, s, aff); p.Account != "a" || p.Why != "affinity" {
		t.Errorf("soft-marked bound account: pick = %+v, want a/affinity", p)
	}
	// Without AffinityTTL nothing is bound.
	noTTL := routing.PickRequest{Candidates: Cands("b", "c"), Session: "s3"}
	p1, p2 := MustPick(t, s, noTTL), MustPick(t, s, noTTL)
	if p1.Account == p2.Account || p2.Why == "affinity" {
		t.Errorf("session without AffinityTTL: picks %+v then %+v, want no binding", p1, p2)
	}
}

func testAffinityRenews(t *testing.T, s Store) {
	const ttl = 2 * time.Second
	aff := routing.PickRequest{Candidates: Cands("a", "b"), Session: "s", AffinityTTL: ttl}
	first := time.Now()
	want := MustPick(t, s, aff).Account
	if want != "a" {
		t.Fatalf("first pick = %q, want a", want)
	}
	// Each use renews the binding: it outlives its first TTL while in use.
	checkedLate := false
	prev := first
	for time.Since(first) < 2*ttl {
		time.Sleep(ttl / 5)
		start := time.Now()
		p := MustPick(t, s, aff)
		if gap := time.Since(prev); gap >= ttl {
			// The machine stalled longer than the TTL between two uses: no verdict on this one.
			t.Logf("uses %v apart, longer than the TTL; not checked", gap)
			want = p.Account
		} else {
			if p.Account != want || p.Why != "affinity" {
				t.Fatalf("pick %v after the first = %+v, want %s/affinity (binding renewed on use)", time.Since(first), p, want)
			}
			checkedLate = checkedLate || time.Since(first) > ttl
		}
		prev = start
	}
	if !checkedLate {
		t.Fatal("no use was checked after the first TTL passed (machine too slow to judge)")
	}
}

func testAffinityExpires(t *testing.T, s Store) {
	aff := routing.PickRequest{Candidates: Cands("a", "b"), Session: "s", AffinityTTL: 200 * time.Millisecond}
	if p := MustPick(t, s, aff); p.Account != "a" {
		t.Fatalf("first pick = %q, want a", p.Account)
	}
	MustPick(t, s, routing.PickRequest{Candidates: Cands("a")}) // a: 2, b: 0
	eventually(t, 5*time.Second, "the idle binding to expire", func() bool {
		return MustPick(t, s, routing.PickRequest{Candidates: Cands("a", "b"), Session: "s"}).Why != "affinity"
	})
}

func testAffinityMovesOnlyWhenBlocked(t *testing.T, s Store) {
	aff := routing.PickRequest{Candidates: Cands("a", "b", "c"), Session: "s", AffinityTTL: time.Hour, Scopes: []string{"family:opus"}}
	if p := MustPick(t, s, aff); p.Account != "a" {
		t.Fatalf("first pick = %q, want a", p.Account)
	}
	// a cools down for opus: the conversation moves to the least used of the rest.
	MustMark(t, s, routing.Mark{Account: "a", Scope: "family:opus", Until: time.Now().Add(time.Hour), Reason: "429"})
	if p := MustPick(t, s, aff); p.Account != "b" || p.Why != "least-used" {
		t.Fatalf("pick with bound account cooling = %+v, want b/least-used", p)
	}
	// a is free again and the least used, but the conversation stays on b.
	MustMark(t, s, routing.Mark{Account: "a", Scope: "family:opus"})
	for range 3 {
		MustPick(t, s, routing.PickRequest{Candidates: Cands("b")})
	}
	if p := MustPick(t, s, aff); p.Account != "b" || p.Why != "affinity" {
		t.Errorf("pick after a recovered = %+v, want b/affinity (never moves otherwise)", p)
	}
	// A retry that excludes b (already tried) goes elsewhere and rebinds there.
	retry := aff
	retry.Candidates = Cands("a", "c")
	moved := MustPick(t, s, retry)
	if moved.Account == "b" || moved.Account == "" {
		t.Fatalf("retry pick = %+v", moved)
	}
	if p := MustPick(t, s, aff); p.Account != moved.Account || p.Why != "affinity" {
		t.Errorf("pick after the retry = %+v, want %s/affinity", p, moved.Account)
	}
}

func testAllBlocked(t *testing.T, s Store) {
	now := time.Now()
	req := routing.PickRequest{Candidates: Cands("a", "b", "c"), Scopes: []string{"family:opus"}}
	MustMark(t, s, routing.Mark{Account: "a", Until: now.Add(30 * time.Second), Reason: "a: 429"})
	// b's whole-account cooldown ends first, but its opus one only after a's: a frees first.
	MustMark(t, s, routing.Mark{Account: "b", Until: now.Add(10 * time.Second), Reason: "b: 529"})
	MustMark(t, s, routing.Mark{Account: "b", Scope: "family:opus", Until: now.Add(60 * time.Second), Reason: "b: opus 429"})
	MustMark(t, s, routing.Mark{Account: "c", Scope: "family:opus", Until: now.Add(45 * time.Second), Reason: "c: opus 429"})
	MustMark(t, s, routing.Mark{Account: "c", Until: now.Add(time.Minute), Reason: "c: near limit", Soft: true})
	p := MustPick(t, s, req)
	want := now.Add(30 * time.Second).Truncate(time.Millisecond)
	if p.Account != "" || !p.RetryAt.Equal(want) || p.Reason != "a: 429" {
		t.Errorf("pick with all cooling = %+v, want none, retry at %v, reason %q", p, want, "a: 429")
	}
	// A sonnet request is not blocked by the opus marks.
	req.Scopes = []string{"family:sonnet"}
	if p := MustPick(t, s, req); p.Account != "c" || p.Why != "only-soft" {
		t.Errorf("sonnet pick = %+v, want c/only-soft", p)
	}
	if c := Requests(t, s, "a", "b", "c"); !slices.Equal(c, []int64{0, 0, 1}) {
		t.Errorf("requests = %v, want [0 0 1]: a blocked pick reserves nothing", c)
	}
}

func testNoCandidates(t *testing.T, s Store) {
	p := MustPick(t, s, routing.PickRequest{Session: "s", AffinityTTL: time.Hour})
	if p.Account != "" || !p.RetryAt.IsZero() || p.Reason != "" {
		t.Errorf("pick without candidates = %+v, want zero", p)
	}
	if st := MustStats(t, s); len(st.Accounts) != 0 || len(st.Models) != 0 || st.Accounts == nil || st.Models == nil {
		t.Errorf("stats of an empty store = %+v, want empty non-nil maps", st)
	}
	if h, err := s.History(t.Context(), routing.HistoryQuery{}); err != nil || len(h) != 0 {
		t.Errorf("history of an empty store = %v, %v", h, err)
	}
}

func testRecordAndStats(t *testing.T, s Store) {
	ctx := t.Context()
	pickAll(t, s, routing.PickRequest{Candidates: Cands("a", "b")}, 3) // a: 2, b: 1
	before := time.Now().Truncate(time.Millisecond)
	for _, u := range []routing.Usage{
		{Account: "a", Model: "claude-opus-5-5", Status: 200, InputTokens: 10, OutputTokens: 20, CacheReadTokens: 30, CacheCreationTokens: 40},
		{Account: "a", Model: "claude-opus-5-5", Status: 200, InputTokens: 1, OutputTokens: 2},
		{Account: "a", Model: "claude-sonnet-5-5", Status: 529},
		{Account: "b", Model: "claude-sonnet-5-5", Status: 200, Error: "stream broken"},
		{Model: "claude-3-opus-20240229", Status: 400}, // no account could serve it
	} {
		if err := s.Record(ctx, u); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	st := MustStats(t, s)
	a, b := st.Accounts["a"], st.Accounts["b"]
	wantA := routing.AccountStats{Requests: 2, Errors: 1, InputTokens: 11, OutputTokens: 22, CacheReadTokens: 30, CacheCreationTokens: 40}
	wantB := routing.AccountStats{Requests: 1, Errors: 1}
	for _, c := range []struct {
		name      string
		got, want routing.AccountStats
	}{{"a", a, wantA}, {"b", b, wantB}} {
		if c.got.LastUsed.Before(before) {
			t.Errorf("%s: LastUsed = %v, want ≥ %v (set by Record)", c.name, c.got.LastUsed, before)
		}
		c.got.LastUsed = time.Time{}
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: stats = %+v, want %+v", c.name, c.got, c.want)
		}
	}
	if len(st.Accounts) != 2 {
		t.Errorf("accounts = %v, want a and b only", st.Accounts)
	}
	wantModels := map[string]int64{"claude-opus-5-5": 2, "claude-sonnet-5-5": 2, "claude-3-opus-20240229": 1}
	if fmt.Sprint(st.Models) != fmt.Sprint(wantModels) {
		t.Errorf("models = %v, want %v", st.Models, wantModels)
	}
}

func testStatsMarks(t *testing.T, s Store) {
	now := time.Now()
	ms := func(d time.Duration) time.Time { return now.Add(d).Truncate(time.Millisecond) }
	MustMark(t, s, routing.Mark{Account: "a", Scope: "family:opus", Until: ms(time.Minute), Reason: "opus 429"})
	MustMark(t, s, routing.Mark{Account: "a", Until: ms(2 * time.Minute), Reason: "near limit", Soft: true})
	MustMark(t, s, routing.Mark{Account: "a", Until: ms(3 * time.Minute), Reason: "529 x3"})
	MustMark(t, s, routing.Mark{Account: "a", Scope: "cred:abcd", Until: ms(time.Hour), Reason: "401"})
	MustMark(t, s, routing.Mark{Account: "gone", Until: ms(time.Minute), Reason: "x"})
	MustMark(t, s, routing.Mark{Account: "gone", Until: ms(-time.Minute)})
	st := MustStats(t, s)
	want := []routing.Mark{
		{Account: "a", Scope: "", Until: ms(3 * time.Minute), Reason: "529 x3"},
		{Account: "a", Scope: "", Until: ms(2 * time.Minute), Reason: "near limit", Soft: true},
		{Account: "a", Scope: "cred:abcd", Until: ms(time.Hour), Reason: "401"},
		{Account: "a", Scope: "family:opus", Until: ms(time.Minute), Reason: "opus 429"},
	}
	got := st.Accounts["a"].Marks
	if len(got) != len(want) {
		t.Fatalf("marks = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Account != want[i].Account || got[i].Scope != want[i].Scope || !got[i].Until.Equal(want[i].Until) ||
			got[i].Reason != want[i].Reason || got[i].Soft != want[i].Soft {
			t.Errorf("mark %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if a := st.Accounts["a"]; a.Requests != 0 || !a.LastUsed.IsZero() {
		t.Errorf("marked-only account has counters: %+v", a)
	}
	if _, ok := st.Accounts["gone"]; ok {
		t.Errorf("account whose only mark was cleared is listed: %+v", st.Accounts["gone"])
	}
}

func testHistory(t *testing.T, s Store) {
	ctx := t.Context()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var all []routing.Usage
	for i := range 10 {
		u := routing.Usage{
			Time: t0.Add(time.Duration(i) * time.Second), RequestID: fmt.Sprintf("req_%d", i),
			Replica: "r1", Client: "laptop", Method: "POST", Path: "/v1/messages",
			Model: []string{"claude-opus-5-5", "claude-sonnet-5-5"}[i%2], Account: []string{"a", "b", "c"}[i%3],
			Attempts: 1 + i%2, Status: []int{200, 200, 429, 200, 529}[i%5], Stream: i%2 == 0,
			Latency: time.Duration(i) * time.Millisecond, InputTokens: int64(i), OutputTokens: 2 * int64(i),
			CacheReadTokens: 3, CacheCreationTokens: 4, Tried: []string{"x:429", "a:ok"}[:1+i%2],
		}
		if i == 7 {
			u.Error = "upstream closed the stream"
		}
		all = append(all, u)
		if err := s.Record(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(us []routing.Usage) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.RequestID)
		}
		return out
	}
	tests := []struct {
		q    routing.HistoryQuery
		want []string
	}{
		{routing.HistoryQuery{}, []string{"req_9", "req_8", "req_7", "req_6", "req_5", "req_4", "req_3", "req_2", "req_1", "req_0"}},
		{routing.HistoryQuery{Limit: 3}, []string{"req_9", "req_8", "req_7"}},
		{routing.HistoryQuery{Limit: 3, Offset: 8}, []string{"req_1", "req_0"}},
		{routing.HistoryQuery{Offset: 20}, nil},
		{routing.HistoryQuery{Model: "claude-opus-5-5"}, []string{"req_8", "req_6", "req_4", "req_2", "req_0"}},
		{routing.HistoryQuery{Account: "b"}, []string{"req_7", "req_4", "req_1"}},
		{routing.HistoryQuery{Status: 429}, []string{"req_7", "req_2"}},
		{routing.HistoryQuery{Model: "claude-sonnet-5-5", Account: "b", Limit: 1}, []string{"req_7"}},
		{routing.HistoryQuery{Model: "claude-opus-5-5", Offset: 1, Limit: 2}, []string{"req_6", "req_4"}},
		{routing.HistoryQuery{Model: "nope"}, nil},
	}
	for _, tc := range tests {
		got, err := s.History(ctx, tc.q)
		if err != nil {
			t.Fatalf("History(%+v): %v", tc.q, err)
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("History(%+v) = %v, want %v", tc.q, ids(got), tc.want)
		}
	}
	// Every field survives the round trip.
	got, _ := s.History(ctx, routing.HistoryQuery{Limit: 1, Offset: 2})
	if len(got) != 1 {
		t.Fatalf("History(offset 2) = %d entries", len(got))
	}
	want := all[7]
	if !got[0].Time.Equal(want.Time) {
		t.Errorf("Time = %v, want %v", got[0].Time, want.Time)
	}
	got[0].Time, want.Time = time.Time{}, time.Time{}
	if fmt.Sprintf("%+v", got[0]) != fmt.Sprintf("%+v", want) {
		t.Errorf("entry = %+v\nwant    %+v", got[0], want)
	}
	// A zero Time is set when recorded.
	before := time.Now().Add(-time.Second)
	if err := s.Record(ctx, routing.Usage{RequestID: "untimed", Status: 200}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.History(ctx, routing.HistoryQuery{Limit: 1})
	if len(got) != 1 || got[0].RequestID != "untimed" || got[0].Time.Before(before) {
		t.Errorf("newest = %+v, want untimed with a current Time", got)
	}
}

func testHistoryCap(t *testing.T, s Store) {
	for i := range HistorySize + 5 {
		if err := s.Record(t.Context(), routing.Usage{RequestID: fmt.Sprint(i), Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.History(t.Context(), routing.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != HistorySize || h[0].RequestID != fmt.Sprint(HistorySize+4) || h[len(h)-1].RequestID != "5" {
		t.Errorf("history holds %d entries from %s to %s, want %d from %d to 5",
			len(h), h[0].RequestID, h[len(h)-1].RequestID, HistorySize, HistorySize+4)
	}
}

func testResetStats(t *testing.T, s Store) {
	ctx := t.Context()
	pickAll(t, s, routing.PickRequest{Candidates: Cands("a", "b")}, 4)
	if err := s.Record(ctx, routing.Usage{Account: "a", Model: "m", Status: 500, InputTokens: 5}); err != nil {
		t.Fatal(err)
	}
	MustMark(t, s, routing.Mark{Account: "b", Until: time.Now().Add(time.Hour), Reason: "429"})
	if err := s.ResetStats(ctx); err != nil {
		t.Fatalf("ResetStats: %v", err)
	}
	st := MustStats(t, s)
	if a := st.Accounts["a"]; a.Requests != 0 || a.Errors != 0 || a.InputTokens != 0 || !a.LastUsed.IsZero() {
		t.Errorf("a after reset = %+v, want zero counters", a)
	}
	if len(st.Models) != 0 {
		t.Errorf("models after reset = %v, want none", st.Models)
	}
	if b := st.Accounts["b"]; len(b.Marks) != 1 || b.Requests != 0 {
		t.Errorf("b after reset = %+v, want zero counters and its cooldown kept", b)
	}
	if h, _ := s.History(ctx, routing.HistoryQuery{}); len(h) != 1 {
		t.Errorf("history after ResetStats has %d entries, want 1 (kept)", len(h))
	}
	// Counting starts over.
	pickAll(t, s, routing.PickRequest{Candidates: Cands("a", "c")}, 4)
	if c := Requests(t, s, "a", "c"); !slices.Equal(c, []int64{2, 2}) {
		t.Errorf("requests after reset and 4 picks = %v, want [2 2]", c)
	}
}

func testClearHistory(t *testing.T, s Store) {
	ctx := t.Context()
	MustPick(t, s, routing.PickRequest{Candidates: Cands("a")})
	for range 3 {
		if err := s.Record(ctx, routing.Usage{Account: "a", Model: "m", Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ClearHistory(ctx); err != nil {
		t.Fatalf("ClearHistory: %v", err)
	}
	if h, err := s.History(ctx, routing.HistoryQuery{}); err != nil || len(h) != 0 {
		t.Errorf("history after clear = %d entries, %v", len(h), err)
	}
	if st := MustStats(t, s); st.Accounts["a"].Requests != 1 || st.Models["m"] != 3 {
		t.Errorf("stats after ClearHistory = %+v, want kept", st)
	}
	if err := s.Record(ctx, routing.Usage{RequestID: "after", Status: 200}); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.History(ctx, routing.HistoryQuery{}); len(h) != 1 || h[0].RequestID != "after" {
		t.Errorf("history after clear and one record = %+v", h)
	}
}

func testConcurrentPicks(t *testing.T, s Store) {
	const workers, each = 16, 12
	names := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				req := routing.PickRequest{Candidates: Cands(names...)}
				if _, err := s.Pick(t.Context(), req); err != nil {
					errs <- err
				}
				// Writers and readers run alongside, for the race detector.
				switch (w + i) % 4 {
				case 0:
					errs <- s.Record(t.Context(), routing.Usage{Account: "a", Model: "m", Status: 200})
				case 1:
					errs <- s.Mark(t.Context(), routing.Mark{Account: "other", Until: time.Now().Add(time.Minute), Reason: "x"})
				case 2:
					_, err := s.Stats(t.Context())
					errs <- err
				case 3:
					_, err := s.History(t.Context(), routing.HistoryQuery{Limit: 5})
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := Requests(t, s, names...)
	if c[0]+c[1]+c[2] != workers*each || Spread(c) > 1 {
		t.Errorf("requests after %d concurrent picks = %v, want a total of %d differing by at most 1",
			workers*each, c, workers*each)
	}
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
