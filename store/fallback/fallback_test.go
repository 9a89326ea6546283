package fallback

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/testredis"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
	redisstore "github.com/claude-lb/claude-lb/store/redis"
	"github.com/claude-lb/claude-lb/store/storetest"
)

// flaky is a primary that works (as a memory store) until it is broken; broken, it hangs
// until the caller gives up, as an unreachable Redis does.
type flaky struct {
	*memory.Store
	broken atomic.Bool
	calls  atomic.Int64
}

func (f *flaky) fail(ctx context.Context) error {
	f.calls.Add(1)
	if !f.broken.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *flaky) Ping(ctx context.Context) error { return f.fail(ctx) }
func (f *flaky) Pick(ctx context.Context, r routing.PickRequest) (routing.Pick, error) {
	if err := f.fail(ctx); err != nil {
		return routing.Pick{}, err
	}
	return f.Store.Pick(ctx, r)
}
func (f *flaky) Mark(ctx context.Context, m routing.Mark) error {
	if err := f.fail(ctx); err != nil {
		return err
	}
	return f.Store.Mark(ctx, m)
}
func (f *flaky) Record(ctx context.Context, u routing.Usage) error {
	if err := f.fail(ctx); err != nil {
		return err
	}
	return f.Store.Record(ctx, u)
}
func (f *flaky) Stats(ctx context.Context) (routing.Stats, error) {
	if err := f.fail(ctx); err != nil {
		return routing.Stats{}, err
	}
	return f.Store.Stats(ctx)
}
func (f *flaky) ResetStats(ctx context.Context) error {
	if err := f.fail(ctx); err != nil {
		return err
	}
	return f.Store.ResetStats(ctx)
}

// transitions records OnChange calls and log lines.
type transitions struct {
	mu      sync.Mutex
	changes []bool
	log     strings.Builder
}

func (tr *transitions) OnChange(d bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.changes = append(tr.changes, d)
}

func (tr *transitions) Write(p []byte) (int, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.log.Write(p)
}

func (tr *transitions) get() ([]bool, string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]bool(nil), tr.changes...), tr.log.String()
}

func (tr *transitions) options(probe time.Duration) Options {
	return Options{
		Logger:     slog.New(slog.NewTextHandler(tr, nil)),
		OnChange:   tr.OnChange,
		ProbeEvery: probe,
		Timeout:    100 * time.Millisecond,
	}
}

// run starts s.Run for the test's lifetime and waits for it to return.
func run(t *testing.T, s *Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestContractOverRedis(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client()
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) storetest.Store {
		prefix := "fb" + time.Duration(n.Add(1)).String()
		s := New(
			redisstore.New(c, redisstore.Options{Prefix: prefix, HistorySize: storetest.HistorySize, Timeout: 10 * time.Second}),
			memory.New(memory.Options{HistorySize: storetest.HistorySize}),
			Options{Timeout: 10 * time.Second},
		)
		t.Cleanup(func() {
			if s.Degraded() {
				t.Error("store went degraded during the contract suite")
			}
		})
		return s
	})
}

func TestDegradeAndRecover(t *testing.T) {
	primary := &flaky{Store: memory.New(memory.Options{})}
	var tr transitions
	s := New(primary, memory.New(memory.Options{}), tr.options(20*time.Millisecond))
	run(t, s)
	ctx := t.Context()
	req := routing.PickRequest{Candidates: storetest.Cands("a", "b"), Session: "conv", AffinityTTL: time.Hour}

	// Healthy: the primary serves and the local store mirrors the pick, the mark and the record.
	bound := storetest.MustPick(t, s, req).Account
	storetest.MustMark(t, s, routing.Mark{Account: "zz", Until: time.Now().Add(time.Hour), Reason: "429"})
	if err := s.Record(ctx, routing.Usage{RequestID: "r1", Account: bound, Status: 200}); err != nil {
		t.Fatal(err)
	}
	if p := storetest.MustPick(t, primary.Store, routing.PickRequest{Candidates: storetest.Cands("zz")}); p.Account != "" {
		t.Fatalf("mark did not reach the primary: %+v", p)
	}

	// The primary hangs: concurrent picks are served locally, within the timeout.
	primary.broken.Store(true)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			start := time.Now()
			p, err := s.Pick(ctx, req)
			if err != nil || p.Account == "" {
				t.Errorf("pick while the primary hangs = %+v, %v", p, err)
			}
			if p.Account != bound || p.Why != "affinity" {
				t.Errorf("pick while degraded = %+v, want %s/affinity (binding mirrored locally)", p, bound)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("pick took %v", d)
			}
		})
	}
	wg.Wait()
	if !s.Degraded() {
		t.Fatal("not degraded after the primary hung")
	}
	// Local state answers: the mark made while healthy still blocks, the history is there.
	if p := storetest.MustPick(t, s, routing.PickRequest{Candidates: storetest.Cands("zz")}); p.Account != "" || p.Reason != "429" {
		t.Errorf("pick of a marked account while degraded = %+v, want blocked (mark mirrored)", p)
	}
	if err := s.Record(ctx, routing.Usage{RequestID: "r2", Status: 200}); err != nil {
		t.Errorf("Record while degraded: %v", err)
	}
	if h, err := s.History(ctx, routing.HistoryQuery{}); err != nil || len(h) != 2 {
		t.Errorf("history while degraded = %+v, %v; want r2 and r1 from the local store", h, err)
	}
	if _, err := s.Stats(ctx); err != nil {
		t.Errorf("Stats while degraded: %v", err)
	}
	calls := primary.calls.Load()
	storetest.MustPick(t, s, req)
	if err := s.Record(ctx, routing.Usage{Status: 200}); err != nil {
		t.Fatal(err)
	}
	// Only the prober touches the primary now; give it a moment to prove requests don't.
	if got := primary.calls.Load() - calls; got > 2 {
		t.Errorf("degraded requests still call the primary: %d calls", got)
	}
	// Resetting while degraded says the shared state was not reset.
	if err := s.ResetStats(ctx); !errors.Is(err, ErrPrimaryNotReset) {
		t.Errorf("ResetStats while degraded = %v, want ErrPrimaryNotReset", err)
	}

	primary.broken.Store(false)
	eventually(t, "the store to recover", func() bool { return !s.Degraded() })
	storetest.MustPick(t, s, routing.PickRequest{Candidates: storetest.Cands("after")})
	if n := storetest.MustStats(t, primary.Store).Accounts["after"].Requests; n != 1 {
		t.Errorf("pick after recovery: primary counted %d, want 1 (back on the primary)", n)
	}
	changes, log := tr.get()
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Errorf("OnChange calls = %v, want [true false]", changes)
	}
	if n := strings.Count(log, "\n"); n != 2 || !strings.Contains(log, "store degraded") || !strings.Contains(log, "store recovered") {
		t.Errorf("log = %q, want exactly one line per transition", log)
	}
}

func TestCallerCancelDoesNotDegrade(t *testing.T) {
	primary := &flaky{Store: memory.New(memory.Options{})}
	primary.broken.Store(true)
	s := New(primary, memory.New(memory.Options{}), Options{Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	p, err := s.Pick(ctx, routing.PickRequest{Candidates: storetest.Cands("a")})
	if err != nil || p.Account != "a" {
		t.Errorf("pick = %+v, %v; want a from the local store", p, err)
	}
	if s.Degraded() {
		t.Error("a caller's own deadline marked the store degraded")
	}
}

// TestRedisOutage stops a real Redis under concurrent picks of two replicas and brings it back.
func TestRedisOutage(t *testing.T) {
	srv := testredis.Start(t)
	type replica struct {
		s  *Store
		tr *transitions
	}
	var reps []replica
	for range 2 {
		client, err := redisstore.NewClient(&config.Redis{URL: srv.URL()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		tr := new(transitions)
		opts := tr.options(50 * time.Millisecond)
		// Generous: a loaded CI machine must not time out a healthy Redis (a spurious flap).
		opts.Timeout = 3 * time.Second
		s := New(redisstore.New(client, redisstore.Options{Prefix: "outage", Timeout: time.Minute}), memory.New(memory.Options{}), opts)
		run(t, s)
		reps = append(reps, replica{s, tr})
	}
	ctx := t.Context()
	req := routing.PickRequest{Candidates: storetest.Cands("a", "b", "c")}

	stop := make(chan struct{})
	var picks, failures atomic.Int64
	var wg sync.WaitGroup
	for _, r := range reps {
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					p, err := r.s.Pick(ctx, req)
					if err != nil || p.Account == "" {
						failures.Add(1)
						t.Errorf("pick = %+v, %v", p, err)
					}
					picks.Add(1)
					time.Sleep(time.Millisecond)
				}
			})
		}
	}
	eventually(t, "picks before the outage", func() bool { return picks.Load() > 50 })
	srv.Stop()
	eventually(t, "both replicas to degrade", func() bool { return reps[0].s.Degraded() && reps[1].s.Degraded() })
	during := picks.Load()
	eventually(t, "picks during the outage", func() bool { return picks.Load() > during+50 })
	srv.Restart()
	eventually(t, "both replicas to recover", func() bool { return !reps[0].s.Degraded() && !reps[1].s.Degraded() })
	after := picks.Load()
	eventually(t, "picks after the outage", func() bool { return picks.Load() > after+50 })
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d picks failed", failures.Load())
	}
	for i, r := range reps {
		changes, log := r.tr.get()
		if len(changes) != 2 || !changes[0] || changes[1] {
			t.Errorf("replica %d: OnChange calls %v, want [true false]", i, changes)
		}
		if n := strings.Count(log, "store degraded"); n != 1 {
			t.Errorf("replica %d: %d degraded log lines, want 1:\n%s", i, n, log)
		}
	}

	// Shared again: a mark through one replica blocks picks through the other, and the
	// restarted Redis counts picks from both.
	storetest.MustMark(t, reps[0].s, routing.Mark{Account: "a", Until: time.Now().Add(time.Minute), Reason: "429"})
	for range 4 {
		if p := storetest.MustPick(t, reps[1].s, req); p.Account == "a" {
			t.Errorf("replica 1 picked a, marked through replica 0")
		}
	}
	st := storetest.MustStats(t, reps[0].s)
	if marks := st.Accounts["a"].Marks; len(marks) != 1 || marks[0].Reason != "429" {
		t.Errorf("replica 0 stats marks of a = %+v", marks)
	}
	if reps[0].s.Degraded() || reps[1].s.Degraded() {
		t.Error("degraded again after recovery")
	}
}

// TestIdleOutageNoticed: with no traffic at all, Run notices a dead primary (so /readyz and the
// metric tell the truth on an idle replica) and its return.
func TestIdleOutageNoticed(t *testing.T) {
	rs := testredis.Start(t)
	client := rs.Client()
	var changes []bool
	var mu sync.Mutex
	s := New(redisstore.New(client, redisstore.Options{Timeout: 200 * time.Millisecond}), memory.New(memory.Options{}), Options{
		ProbeEvery: 20 * time.Millisecond, Timeout: 200 * time.Millisecond,
		OnChange: func(d bool) { mu.Lock(); changes = append(changes, d); mu.Unlock() },
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rs.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("an idle store did not notice the primary went away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rs.Restart()
	for s.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("did not switch back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("OnChange calls %v, want [true false]", changes)
	}
}
