package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/testredis"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/storetest"
)

var prefixes atomic.Int64

// testTimeout is generous: tests check behaviour, not speed, on loaded CI machines.
const testTimeout = 10 * time.Second

// uniquePrefix isolates tests sharing one server.
func uniquePrefix() string { return "t" + strconv.FormatInt(prefixes.Add(1), 10) }

func TestContract(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return New(c, Options{Prefix: uniquePrefix(), HistorySize: storetest.HistorySize, Timeout: testTimeout})
	})
}

// replicas returns n stores on n separate clients of srv, sharing one prefix.
func replicas(t *testing.T, srv *testredis.Server, n int) []*Store {
	prefix := uniquePrefix()
	var out []*Store
	for range n {
		out = append(out, New(srv.Client(), Options{Prefix: prefix, HistorySize: storetest.HistorySize, Timeout: testTimeout}))
	}
	return out
}

func TestReplicasShareState(t *testing.T) {
	srv := testredis.Start(t)
	ctx := t.Context()

	t.Run("ConcurrentPicks", func(t *testing.T) {
		rs := replicas(t, srv, 3)
		names := []string{"a", "b", "c"}
		var wg sync.WaitGroup
		errs := make(chan error, 300)
		for _, r := range rs {
			for range 100 {
				wg.Go(func() {
					if _, err := r.Pick(ctx, routing.PickRequest{Candidates: storetest.Cands(names...)}); err != nil {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i, r := range rs {
			c := storetest.Requests(t, r, names...)
			if !slices.Equal(c, []int64{100, 100, 100}) {
				t.Errorf("replica %d sees requests %v after 3×100 concurrent picks, want 100 each", i, c)
			}
		}
	})

	t.Run("MarkBlocksEverywhere", func(t *testing.T) {
		rs := replicas(t, srv, 3)
		req := routing.PickRequest{Candidates: storetest.Cands("a", "b")}
		storetest.MustMark(t, rs[0], routing.Mark{Account: "a", Until: time.Now().Add(time.Minute), Reason: "429"})
		for i, r := range rs[1:] {
			for range 3 {
				if p := storetest.MustPick(t, r, req); p.Account != "b" {
					t.Errorf("replica %d picked %q right after replica 0 marked a", i+1, p.Account)
				}
			}
		}
		storetest.MustMark(t, rs[2], routing.Mark{Account: "a"})
		if p := storetest.MustPick(t, rs[1], req); p.Account != "a" {
			t.Errorf("replica 1 picked %q after replica 2 cleared a's mark, want a", p.Account)
		}
	})

	t.Run("AffinityEverywhere", func(t *testing.T) {
		rs := replicas(t, srv, 3)
		req := routing.PickRequest{Candidates: storetest.Cands("a", "b", "c"), Session: "conv", AffinityTTL: time.Hour}
		first := storetest.MustPick(t, rs[0], req)
		for i, r := range rs {
			if p := storetest.MustPick(t, r, req); p.Account != first.Account || p.Why != "affinity" {
				t.Errorf("replica %d: pick = %+v, want %s/affinity", i, p, first.Account)
			}
		}
	})

	t.Run("HistoryAndResets", func(t *testing.T) {
		rs := replicas(t, srv, 2)
		storetest.MustPick(t, rs[0], routing.PickRequest{Candidates: storetest.Cands("a")})
		if err := rs[0].Record(ctx, routing.Usage{RequestID: "r1", Account: "a", Model: "m", Status: 200, Replica: "one"}); err != nil {
			t.Fatal(err)
		}
		h, err := rs[1].History(ctx, routing.HistoryQuery{})
		if err != nil || len(h) != 1 || h[0].RequestID != "r1" || h[0].Replica != "one" {
			t.Fatalf("replica 1 history = %+v, %v; want r1 recorded by replica 0", h, err)
		}
		if st := storetest.MustStats(t, rs[1]); st.Accounts["a"].Requests != 1 || st.Models["m"] != 1 {
			t.Errorf("replica 1 stats = %+v", st)
		}
		if err := rs[1].ResetStats(ctx); err != nil {
			t.Fatal(err)
		}
		if err := rs[1].ClearHistory(ctx); err != nil {
			t.Fatal(err)
		}
		if st := storetest.MustStats(t, rs[0]); len(st.Accounts) != 0 || len(st.Models) != 0 {
			t.Errorf("replica 0 stats after replica 1 reset = %+v, want empty", st)
		}
		if h, _ := rs[0].History(ctx, routing.HistoryQuery{}); len(h) != 0 {
			t.Errorf("replica 0 history after replica 1 cleared = %+v", h)
		}
	})
}

// TestPickMatchesChoose runs the Lua port against routing.Choose on random states.
func TestPickMatchesChoose(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		s := New(c, Options{Prefix: uniquePrefix(), Timeout: testTimeout})
		n := 1 + rng.IntN(6)
		strategy := routing.Strategy(rng.IntN(3))
		cands := make([]routing.Candidate, n)
		st := make([]routing.CandidateState, n)
		for i := range cands {
			cands[i] = routing.Candidate{Name: fmt.Sprintf("c%d", i), Weight: rng.IntN(4), Priority: rng.IntN(3)}
			st[i] = routing.CandidateState{
				Requests: int64(rng.IntN(4)),
				LastUsed: int64(rng.IntN(3)) * 1000,
				Hard:     rng.IntN(4) == 0,
				Soft:     rng.IntN(3) == 0,
			}
			if st[i].Requests > 0 || st[i].LastUsed > 0 {
				c.HSet(ctx, s.acctKey(cands[i].Name), "requests", st[i].Requests, "last_used", st[i].LastUsed)
			}
			until := time.Now().Add(time.Hour)
			if st[i].Hard {
				storetest.MustMark(t, s, routing.Mark{Account: cands[i].Name, Until: until, Reason: "hard"})
			}
			if st[i].Soft {
				storetest.MustMark(t, s, routing.Mark{Account: cands[i].Name, Until: until, Reason: "soft", Soft: true})
			}
		}
		rr := uint64(rng.IntN(10))
		c.Set(ctx, s.key("rr"), rr, 0)
		wantIdx, wantWhy := routing.Choose(strategy, cands, st, rr)
		p := storetest.MustPick(t, s, routing.PickRequest{Strategy: strategy, Candidates: cands})
		want := ""
		if wantIdx >= 0 {
			want = cands[wantIdx].Name
		}
		if p.Account != want || (want != "" && p.Why != wantWhy) {
			t.Fatalf("iteration %d: %v over %+v with %+v, rr %d: Lua picked %+v, Choose %q/%q",
				iter, strategy, cands, st, rr, p, want, wantWhy)
		}
	}
}

// TestKeys checks that every key carries the hash tag and has a TTL.
func TestKeys(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	ctx := t.Context()
	s := New(c, Options{Prefix: "pool", Timeout: testTimeout})
	storetest.MustPick(t, s, routing.PickRequest{Candidates: storetest.Cands("a", "b"), Session: "s", AffinityTTL: time.Hour})
	storetest.MustPick(t, s, routing.PickRequest{Strategy: routing.RoundRobin, Candidates: storetest.Cands("a", "b")})
	storetest.MustMark(t, s, routing.Mark{Account: "b", Scope: "family:opus", Until: time.Now().Add(time.Minute), Reason: "429"})
	if err := s.Record(ctx, routing.Usage{Account: "a", Model: "m", Status: 200, InputTokens: 3}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, "*").Result() // a private server: KEYS is fine here
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{"{pool}:accounts", "{pool}:acct:a", "{pool}:aff:s", "{pool}:history", "{pool}:marks:b", "{pool}:models", "{pool}:rr"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	for _, k := range keys {
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 {
			t.Errorf("key %s: TTL %v, %v; want a TTL", k, ttl, err)
		}
	}
	if ttl := c.PTTL(ctx, "{pool}:marks:b").Val(); ttl > time.Minute {
		t.Errorf("marks TTL = %v, want ≤ 1m (it expires with its latest mark)", ttl)
	}
}

// countingConn counts writes: one flush per round trip.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

type countHook struct {
	cmds, pipelines atomic.Int64
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		return next(ctx, cmds)
	}
}

func commandCalls(t *testing.T, c *redis.Client, name string) int64 {
	t.Helper()
	info, err := c.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+name+":calls="); ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return n
		}
	}
	return 0
}

// TestRoundTrips: a pick is one EVALSHA in one round trip; a record is one pipeline.
func TestRoundTrips(t *testing.T) {
	srv := testredis.Start(t)
	var writes atomic.Int64
	c := redis.NewClient(&redis.Options{
		Network: srv.Network(), Addr: srv.Addr(), PoolSize: 1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return countingConn{conn, &writes}, err
		},
	})
	defer c.Close()
	hook := new(countHook)
	c.AddHook(hook)
	admin := srv.Client()
	s := New(c, Options{Timeout: testTimeout})
	ctx := t.Context()
	req := routing.PickRequest{Candidates: storetest.Cands("a", "b", "c"), Scopes: []string{"family:opus"}, Session: "s", AffinityTTL: time.Hour}
	u := routing.Usage{Account: "a", Model: "m", Status: 200, InputTokens: 1, OutputTokens: 2, CacheReadTokens: 3, CacheCreationTokens: 4}
	// Warm up: connection handshake, script cache.
	storetest.MustPick(t, s, req)
	if err := s.Record(ctx, u); err != nil {
		t.Fatal(err)
	}

	type counts struct{ cmds, pipelines, writes, evalsha, eval int64 }
	snap := func() counts {
		return counts{hook.cmds.Load(), hook.pipelines.Load(), writes.Load(), commandCalls(t, admin, "evalsha"), commandCalls(t, admin, "eval")}
	}
	const n = 10
	before := snap()
	for range n {
		storetest.MustPick(t, s, req)
	}
	got := snap()
	if want := (counts{before.cmds + n, before.pipelines, before.writes + n, before.evalsha + n, before.eval}); got != want {
		t.Errorf("%d picks: counts %+v, want %+v (one EVALSHA round trip each)", n, got, want)
	}
	before = got
	for range n {
		if err := s.Record(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	got = snap()
	if want := (counts{before.cmds, before.pipelines + n, before.writes + n, before.evalsha, before.eval}); got != want {
		t.Errorf("%d records: counts %+v, want %+v (one pipeline round trip each)", n, got, want)
	}
}

func TestNewClient(t *testing.T) {
	unix := testredis.Start(t)
	tcp := testredis.StartTCP(t)
	tests := []struct {
		name    string
		cfg     *config.Redis
		wantErr string
	}{
		{"unix url", &config.Redis{URL: unix.URL()}, ""},
		{"tcp url", &config.Redis{URL: tcp.URL()}, ""},
		{"tcp url with db", &config.Redis{URL: tcp.URL(), DB: 3}, ""},
		{"one addr", &config.Redis{Addrs: []string{tcp.Addr()}}, ""},
		{"none", &config.Redis{}, "needs url or addrs"},
		{"both", &config.Redis{URL: tcp.URL(), Addrs: []string{tcp.Addr()}}, "not both"},
		{"bad scheme", &config.Redis{URL: "http://127.0.0.1:1"}, "invalid URL scheme"},
		{"bad url keeps password out", &config.Redis{URL: "redis://user:hunter2-secret@[::1"}, "invalid URL"},
		{"missing password file", &config.Redis{URL: tcp.URL(), PasswordFile: "/nonexistent/pw"}, "password_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Ping(t.Context()).Err(); err != nil {
				t.Fatalf("PING: %v", err)
			}
			if tc.cfg.DB != 0 {
				if err := c.Set(t.Context(), "dbcheck", "1", time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				if n := tcp.Client().Exists(t.Context(), "dbcheck").Val(); n != 0 {
					t.Errorf("key written with DB %d landed in db 0", tc.cfg.DB)
				}
			}
		})
	}

	t.Run("client kinds", func(t *testing.T) {
		// Only the private server's address: clients may dial at once (MinIdleConns).
		for _, tc := range []struct {
			cfg  *config.Redis
			want string
		}{
			{&config.Redis{Addrs: []string{tcp.Addr(), tcp.Addr()}}, "*redis.ClusterClient"},
			{&config.Redis{Addrs: []string{tcp.Addr()}, MasterName: "mymaster"}, "*redis.Client"},
		} {
			c, err := NewClient(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%T", c); got != tc.want {
				t.Errorf("%+v: client %s, want %s", tc.cfg, got, tc.want)
			}
			c.Close()
		}
	})
}

func BenchmarkPick(b *testing.B) {
	srv := testredis.Start(b)
	s := New(srv.Client(), Options{})
	req := routing.PickRequest{Candidates: storetest.Cands("a", "b", "c", "d", "e"), Scopes: []string{"family:opus"}, Session: "s", AffinityTTL: time.Hour}
	storetest.MustMark(b, s, routing.Mark{Account: "b", Scope: "family:opus", Until: time.Now().Add(time.Hour), Reason: "429"})
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Pick(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	srv := testredis.Start(b)
	s := New(srv.Client(), Options{})
	u := routing.Usage{Time: time.Now(), Account: "a", Model: "claude-sonnet-5-5", Status: 200, InputTokens: 10, OutputTokens: 5, Tried: []string{"a:ok"}}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Record(ctx, u); err != nil {
			b.Fatal(err)
		}
	}
}
