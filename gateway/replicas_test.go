package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/internal/testredis"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/fallback"
	"github.com/claude-lb/claude-lb/store/memory"
	redisstore "github.com/claude-lb/claude-lb/store/redis"
)

// replica is one gateway process sharing a Redis with others.
type replica struct {
	gw    *Gateway
	srv   *httptest.Server
	store *fallback.Store
}

// replicas starts n gateways on one fake upstream and one private redis-server, each with its
// own Redis client and local fallback store, as separate processes would have.
func replicas(t *testing.T, n int, rs *testredis.Server, timeout time.Duration) (*fakeapi.Server, []*replica) {
	t.Helper()
	fake := fakeapi.New(t)
	fake.Accept(keyPersonal, tokWork, tokTeam)
	cfg := config.Default()
	cfg.Upstream.URL = fake.URL
	cfg.Accounts = pool()
	cfg.Store.Redis = &config.Redis{URL: rs.URL(), Prefix: "t", Timeout: timeout}
	var out []*replica
	for i := range n {
		client, err := redisstore.NewClient(cfg.Store.Redis)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.Close() })
		primary := redisstore.New(client, redisstore.Options{Prefix: "t", HistorySize: 1000, Timeout: timeout})
		fb := fallback.New(primary, memory.New(memory.Options{HistorySize: 1000}), fallback.Options{
			Timeout: timeout, ProbeEvery: 50 * time.Millisecond,
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = fb.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		gw, err := New(cfg, Options{Store: fb, AdminStore: fb, Degraded: fb.Degraded, Replica: "r" + strconv.Itoa(i),
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(gw)
		t.Cleanup(srv.Close)
		out = append(out, &replica{gw: gw, srv: srv, store: fb})
	}
	return fake, out
}

func send(t *testing.T, base, model string) (int, http.Header) {
	t.Helper()
	e := &env{t: t, srv: &httptest.Server{URL: base}}
	code, hdr, _ := e.post("/v1/messages", msgBody(model))
	return code, hdr
}

func TestReplicasBalanceAsOne(t *testing.T) {
	rs := testredis.Start(t)
	// A generous timeout: 300 requests at once under -race on 2 cores must not push a replica
	// into degraded mode, where it would pick from its local view.
	fake, reps := replicas(t, 3, rs, 5*time.Second)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 300 {
		wg.Go(func() {
			if code, _ := send(t, reps[i%3].srv.URL, "claude-sonnet-5-5"); code != 200 {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	for _, r := range reps {
		if r.store.Degraded() {
			t.Fatal("a replica went degraded; the balance check below would not test Redis")
		}
	}
	served := map[string]int{}
	for _, r := range fake.Requests() {
		served[accountOf(r.Credential)]++
	}
	counts := []int{served["personal"], served["work"], served["team"]}
	if slices.Max(counts)-slices.Min(counts) > 1 || served["personal"]+served["work"]+served["team"] != 300 {
		t.Fatalf("per-account counts %v differ by more than 1 across replicas", served)
	}
	// Every replica sees the same totals.
	for _, r := range reps {
		st, err := r.store.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Accounts["work"].Requests != int64(served["work"]) {
			t.Fatalf("replica stats %+v, upstream saw %v", st.Accounts, served)
		}
	}
}

func TestReplicasShareCooldownsAndHistory(t *testing.T) {
	rs := testredis.Start(t)
	fake, reps := replicas(t, 3, rs, 2*time.Second)
	fake.Script(failFor(func(*fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Status: 429, Header: http.Header{"Retry-After": {"600"}}}
	}, tokWork))
	if code, hdr := send(t, reps[0].srv.URL, "claude-opus-5-5"); code != 200 || hdr.Get("X-Claude-Lb-Account") != "team" {
		t.Fatalf("replica 0: %d %v", code, hdr)
	}
	fake.Script(nil)
	fake.Reset()
	// The other replicas skip work at once.
	for _, r := range reps[1:] {
		for range 3 {
			if code, hdr := send(t, r.srv.URL, "claude-opus-5-5"); code != 200 || hdr.Get("X-Claude-Lb-Account") != "team" {
				t.Fatalf("%s: %d served by %s, want team (work cools)", r.gw.opts.Replica, code, hdr.Get("X-Claude-Lb-Account"))
			}
		}
	}
	// History written by each replica is read by every other.
	h, err := reps[2].store.History(t.Context(), routing.HistoryQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, u := range h {
		seen[u.Replica] = true
	}
	if len(h) != 7 || !seen["r0"] || !seen["r1"] || !seen["r2"] {
		t.Fatalf("history from replica 2: %d entries from %v", len(h), seen)
	}
	// Reset and clear through one replica's admin API act for all.
	for _, req := range []struct{ method, path string }{{"POST", "/api/stats/reset"}, {"DELETE", "/api/history"}} {
		r, _ := http.NewRequest(req.method, reps[0].srv.URL+req.path, nil)
		resp, err := http.DefaultClient.Do(r)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: %v %v", req.method, req.path, resp, err)
		}
		resp.Body.Close()
	}
	st, _ := reps[1].store.Stats(t.Context())
	h, _ = reps[2].store.History(t.Context(), routing.HistoryQuery{Limit: 10})
	if st.Accounts["team"].Requests != 0 || len(h) != 0 {
		t.Fatalf("after reset/clear: stats %+v, history %d", st.Accounts["team"], len(h))
	}
}

func TestRedisOutageNeverFailsRequests(t *testing.T) {
	rs := testredis.Start(t)
	_, reps := replicas(t, 2, rs, 200*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	var sent, failed atomic.Int32
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				sent.Add(1)
				if code, _ := send(t, reps[w%2].srv.URL, "claude-sonnet-5-5"); code != 200 {
					failed.Add(1)
				}
			}
		})
	}
	waitFor(t, func() bool { return sent.Load() > 50 })
	rs.Stop()
	waitFor(t, func() bool { return reps[0].store.Degraded() && reps[1].store.Degraded() })
	before := sent.Load()
	waitFor(t, func() bool { return sent.Load() > before+100 })
	ready := readyz(t, reps[0].srv.URL)
	if ready["store_degraded"] != true || ready["ready"] != true {
		t.Fatalf("readyz while Redis is down: %v", ready)
	}
	rs.Restart()
	waitFor(t, func() bool { return !reps[0].store.Degraded() && !reps[1].store.Degraded() })
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the outage", failed.Load(), sent.Load())
	}
	// Shared again: a cooldown set through one replica applies on the other.
	if err := reps[0].store.Mark(t.Context(), routing.Mark{Account: "personal", Until: time.Now().Add(time.Hour), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, hdr := send(t, reps[1].srv.URL, "claude-sonnet-5-5"); hdr.Get("X-Claude-Lb-Account") == "personal" {
			t.Fatal("replica 1 ignores a cooldown set through replica 0 after Redis came back")
		}
	}
}

func readyz(t *testing.T, base string) map[string]any {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("readyz %s: %v", b, err)
	}
	return v
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
