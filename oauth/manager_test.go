package oauth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claude-lb/claude-lb/internal/syncbuf"
	"github.com/claude-lb/claude-lb/internal/testredis"
)

const acct = "team"

// replica is one gateway process's Manager with its own token file and captured logs.
type replica struct {
	m      *Manager
	file   string
	logs   *syncbuf.Buffer
	mu     sync.Mutex
	states []string
}

func (r *replica) onState(account, state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, account+"="+state)
}

func (r *replica) stateLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.states...)
}

// newReplica starts a Manager for acct whose file holds tok (nothing is written when tok is
// the zero Token).
func newReplica(t *testing.T, f *fakeIssuer, store TokenStore, tok Token, opts ...func(*ManagerOptions)) *replica {
	t.Helper()
	r := &replica{file: filepath.Join(t.TempDir(), acct+".oauth.json"), logs: &syncbuf.Buffer{}}
	if tok.AccessToken != "" {
		if err := WriteFile(r.file, tok); err != nil {
			t.Fatal(err)
		}
	}
	o := ManagerOptions{
		Config:  f.cfg,
		HTTP:    f.srv.Client(),
		Store:   store,
		Logger:  testLogger(r.logs),
		OnState: r.onState,
	}
	for _, fn := range opts {
		fn(&o)
	}
	r.m = NewManager(o)
	r.m.SetAccounts(t.Context(), []FileAccount{{Name: acct, File: r.file}})
	t.Cleanup(func() { assertNoSecrets(t, "logs", r.logs.String(), f.secrets()) })
	return r
}

// fakeClock is an adjustable clock for Manager.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConcurrentRefreshAcrossReplicas: 50 concurrent requests on an expired account across
// three replicas sharing one Redis make exactly one refresh, and the account stays alive.
func TestConcurrentRefreshAcrossReplicas(t *testing.T) {
	f := newFakeIssuer(t)
	f.delay = 50 * time.Millisecond // keep the refresh in flight while the others arrive
	srv := testredis.Start(t)
	clock := &fakeClock{t: time.Now()}
	expired := f.login(clock.Now().Add(-time.Minute))

	var reps []*replica
	for range 3 {
		store := NewRedisTokenStore(srv.Client(), "claude-lb", []byte("k"))
		reps = append(reps, newReplica(t, f, store, expired, func(o *ManagerOptions) { o.Now = clock.Now }))
	}

	const n = 50
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = reps[i%3].m.Token(t.Context(), acct)
		}()
	}
	close(start)
	wg.Wait()

	if refreshes, _ := f.counts(); refreshes != 1 {
		t.Fatalf("%d refreshes reached the token endpoint, want exactly 1", refreshes)
	}
	want := f.current()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("request %d: %v", i, errs[i])
			assertNoSecrets(t, "error", errs[i].Error(), f.secrets())
		} else if got[i] != want {
			t.Errorf("request %d got %s, want the new access token %s", i, Fingerprint(got[i]), Fingerprint(want))
		}
	}
	for i, r := range reps {
		if s := r.m.State(acct); s != StateValid {
			t.Errorf("replica %d state %q", i, s)
		}
		// Every replica's file now holds the rotated pair (0600).
		tok, err := ReadFile(r.file)
		if err != nil || tok.AccessToken != want {
			t.Errorf("replica %d file: %v %v", i, tok, err)
		}
		if fi, _ := os.Stat(r.file); fi.Mode().Perm() != 0o600 {
			t.Errorf("replica %d file mode %v", i, fi.Mode().Perm())
		}
	}
	st, _ := reps[0].m.Status(acct)
	if !f.isValid(mustRead(t, reps[0].file).RefreshToken) || st.Version < 2 {
		t.Fatalf("the saved refresh token is not the live one (status %+v)", st)
	}

	// The account is alive: an hour later one replica refreshes again, and the others adopt
	// its pair from the store instead of refreshing.
	clock.Add(59*time.Minute + 30*time.Second)
	second, err := reps[0].m.Token(t.Context(), acct)
	if err != nil || second == want || second != f.current() {
		t.Fatalf("second refresh: %s %v", Fingerprint(second), err)
	}
	for i, r := range reps[1:] {
		if tok, err := r.m.Token(t.Context(), acct); err != nil || tok != second {
			t.Errorf("replica %d: %s %v, want the pair replica 0 saved", i+1, Fingerprint(tok), err)
		}
	}
	// A 401 on that token: one refresh, and the other replicas' 401s adopt its result.
	clock.Add(time.Minute)
	reps[1].m.Invalidate(t.Context(), acct, second)
	third, err := reps[1].m.Token(t.Context(), acct)
	if err != nil || third == second || third != f.current() {
		t.Fatalf("refresh after a 401: %s %v", Fingerprint(third), err)
	}
	for _, i := range []int{0, 2} {
		reps[i].m.Invalidate(t.Context(), acct, second)
		if tok, err := reps[i].m.Token(t.Context(), acct); err != nil || tok != third {
			t.Errorf("replica %d after its 401: %s %v", i, Fingerprint(tok), err)
		}
	}
	if refreshes, _ := f.counts(); refreshes != 3 {
		t.Errorf("%d refreshes in total, want 3", refreshes)
	}
}

func mustRead(t *testing.T, path string) Token {
	t.Helper()
	tok, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestDeadReplicaLockExpires: a replica killed while it held the refresh lock blocks the
// others for at most the lock TTL.
func TestDeadReplicaLockExpires(t *testing.T) {
	testStores(t, func(t *testing.T, store TokenStore) {
		f := newFakeIssuer(t)
		const ttl = 500 * time.Millisecond
		r := newReplica(t, f, store, f.login(time.Now().Add(-time.Minute)), func(o *ManagerOptions) { o.LockTTL = ttl })

		// The dead replica took the lock and never released it.
		if ok, err := store.Lock(t.Context(), acct, "dead-replica", ttl); !ok || err != nil {
			t.Fatalf("lock: %v %v", ok, err)
		}
		start := time.Now()
		tok, err := r.m.Token(t.Context(), acct)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if tok != f.current() {
			t.Errorf("got %s, want the refreshed token", Fingerprint(tok))
		}
		if refreshes, _ := f.counts(); refreshes != 1 {
			t.Errorf("%d refreshes, want 1", refreshes)
		}
		// Generous bound: the waiter gives up at 2×TTL+1s, well before this.
		if elapsed > 5*time.Second {
			t.Errorf("blocked %v by a dead lock of TTL %v", elapsed, ttl)
		}
		// The lock was released after the refresh: another owner can take it at once.
		if ok, _ := store.Lock(t.Context(), acct, "next", time.Minute); !ok {
			t.Errorf("the refreshing replica did not release its lock")
		}
	})
}

// TestInvalidGrantAndRelogin: invalid_grant takes the account out with a clear state and one
// log line; a new login brings it back without a restart, on every replica.
func TestInvalidGrantAndRelogin(t *testing.T) {
	tests := []struct {
		name  string
		relog func(t *testing.T, f *fakeIssuer, r *replica, fresh Token)
	}{
		{"reload", func(t *testing.T, f *fakeIssuer, r *replica, fresh Token) {
			if err := WriteFile(r.file, fresh); err != nil {
				t.Fatal(err)
			}
			r.m.SetAccounts(t.Context(), []FileAccount{{Name: acct, File: r.file}})
		}},
		{"file change seen by Run", func(t *testing.T, f *fakeIssuer, r *replica, fresh Token) {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error)
			go func() { done <- r.m.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			if err := WriteFile(r.file, fresh); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the new login is picked up", func() bool { return r.m.State(acct) == StateValid })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			srv := testredis.Start(t)
			dead := Token{AccessToken: secret("sk-ant-oat01-"), RefreshToken: secret("sk-ant-ort01-"),
				ExpiresAt: time.Now().Add(-time.Minute).UTC().Truncate(time.Second)}
			f.mu.Lock()
			f.issued = append(f.issued, dead.AccessToken, dead.RefreshToken) // known to nobody valid
			f.mu.Unlock()
			fast := func(o *ManagerOptions) { o.CheckInterval = 20 * time.Millisecond }
			r := newReplica(t, f, NewRedisTokenStore(srv.Client(), "x", nil), dead, fast)
			other := newReplica(t, f, NewRedisTokenStore(srv.Client(), "x", nil), dead, fast)

			_, err := r.m.Token(t.Context(), acct)
			if !errors.Is(err, ErrNeedsLogin) || !strings.Contains(err.Error(), "invalid_grant") || !strings.Contains(err.Error(), acct) {
				t.Fatalf("err = %v, want needs-login naming the account and invalid_grant", err)
			}
			if s := r.m.State(acct); s != StateNeedsLogin {
				t.Errorf("state %q", s)
			}
			// Later calls fail fast without burning more requests at the endpoint.
			for range 3 {
				if _, err := r.m.Token(t.Context(), acct); !errors.Is(err, ErrNeedsLogin) {
					t.Errorf("err = %v", err)
				}
			}
			if refreshes, _ := f.counts(); refreshes != 1 {
				t.Errorf("%d refreshes, want 1", refreshes)
			}
			if n := strings.Count(r.logs.String(), "needs a new login"); n != 1 {
				t.Errorf("%d needs-login log lines, want 1:\n%s", n, r.logs.String())
			}
			if got := r.stateLog(); got[len(got)-1] != acct+"="+StateNeedsLogin {
				t.Errorf("OnState calls %v", got)
			}
			st, _ := r.m.Status(acct)
			if !strings.Contains(st.Reason, "invalid_grant") {
				t.Errorf("status reason %q", st.Reason)
			}

			fresh := f.login(time.Now().Add(time.Hour))
			tt.relog(t, f, r, fresh)
			if s := r.m.State(acct); s != StateValid {
				t.Fatalf("state after the new login %q", s)
			}
			if tok, err := r.m.Token(t.Context(), acct); err != nil || tok != fresh.AccessToken {
				t.Errorf("after the new login: %s %v", Fingerprint(tok), err)
			}
			// The other replica (own, stale file) learns the new pair from the store.
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error)
			go func() { done <- other.m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			eventually(t, "the other replica adopts the new login and saves it in its file", func() bool {
				tok, err := other.m.Token(t.Context(), acct)
				inFile, _ := ReadFile(other.file)
				return err == nil && tok == fresh.AccessToken && inFile.RefreshToken == fresh.RefreshToken
			})
		})
	}
}

// TestRepeatedFailuresNeedLogin: transient failures back off; MaxFailures in a row mark the
// account needs-login; Run keeps retrying slowly and brings it back when the endpoint heals.
func TestRepeatedFailuresNeedLogin(t *testing.T) {
	f := newFakeIssuer(t)
	f.failNext = 2
	clock := &fakeClock{t: time.Now()}
	tok := f.login(clock.Now().Add(30 * time.Second)) // within the 1-minute backstop
	r := newReplica(t, f, NewMemoryTokenStore(), tok, func(o *ManagerOptions) {
		o.Now = clock.Now
		o.MaxFailures = 2
		o.CheckInterval = time.Hour // ticks only when SetAccounts wakes Run
	})

	// First failure: the still-valid token keeps serving; state error.
	got, err := r.m.Token(t.Context(), acct)
	if err != nil || got != tok.AccessToken {
		t.Fatalf("first failure should fall back to the unexpired token: %s %v", Fingerprint(got), err)
	}
	if s := r.m.State(acct); s != StateError {
		t.Errorf("state %q, want error", s)
	}
	// Within the backoff nothing reaches the endpoint.
	r.m.Token(t.Context(), acct)
	if refreshes, _ := f.counts(); refreshes != 1 {
		t.Errorf("%d refreshes during backoff, want 1", refreshes)
	}
	// Expired, after the backoff: second failure → needs-login.
	clock.Add(time.Minute)
	if _, err := r.m.Token(t.Context(), acct); !errors.Is(err, ErrNeedsLogin) {
		t.Fatalf("err = %v, want needs-login", err)
	}
	if refreshes, _ := f.counts(); refreshes != 2 {
		t.Errorf("%d refreshes, want 2", refreshes)
	}

	// The endpoint heals (failNext is spent); Run retries after its slow backoff.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	clock.Add(maxRetryWait + time.Second)
	r.m.SetAccounts(t.Context(), []FileAccount{{Name: acct, File: r.file}}) // wakes Run
	eventually(t, "the account recovers", func() bool { return r.m.State(acct) == StateValid })
	if got, err := r.m.Token(t.Context(), acct); err != nil || got != f.current() {
		t.Errorf("after recovery: %s %v", Fingerprint(got), err)
	}
	want := "team=valid,team=refreshing,team=error,team=refreshing,team=needs-login,team=refreshing,team=valid"
	if got := strings.Join(r.stateLog(), ","); got != want {
		t.Errorf("state changes %s, want %s", got, want)
	}
}

// countingStore counts calls, to show that a cache hit does no I/O.
type countingStore struct {
	TokenStore
	calls atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, a string) (Token, int64, error) {
	c.calls.Add(1)
	return c.TokenStore.Get(ctx, a)
}

func (c *countingStore) Lock(ctx context.Context, a, o string, ttl time.Duration) (bool, error) {
	c.calls.Add(1)
	return c.TokenStore.Lock(ctx, a, o, ttl)
}

func TestTokenCacheHitDoesNoIO(t *testing.T) {
	f := newFakeIssuer(t)
	store := &countingStore{TokenStore: NewMemoryTokenStore()}
	tok := f.login(time.Now().Add(time.Hour))
	r := newReplica(t, f, store, tok)
	before := store.calls.Load()
	if err := os.Remove(r.file); err != nil { // a hit must not even look at the file
		t.Fatal(err)
	}
	for range 1000 {
		if got, err := r.m.Token(t.Context(), acct); err != nil || got != tok.AccessToken {
			t.Fatalf("%s %v", Fingerprint(got), err)
		}
	}
	if n := store.calls.Load() - before; n != 0 {
		t.Errorf("%d store calls on cache hits", n)
	}
	if refreshes, _ := f.counts(); refreshes != 0 {
		t.Errorf("%d refreshes", refreshes)
	}
	if _, err := r.m.Token(t.Context(), "nobody"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("unknown account: %v", err)
	}
	if r.m.State("nobody") != "" {
		t.Errorf("unknown account has a state")
	}
}

func BenchmarkTokenHit(b *testing.B) {
	m := NewManager(ManagerOptions{})
	e := &entry{name: acct, key: acct}
	s := StateValid
	e.state.Store(&s)
	e.cur.Store(&current{tok: Token{AccessToken: "a", ExpiresAt: time.Now().Add(time.Hour)}})
	m.accounts.Store(&map[string]*entry{acct: e})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Token(ctx, acct); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestInvalidate: a 401 refreshes once; a 401 on an old token does nothing; a 401 on a token
// refreshed moments ago does not loop.
func TestInvalidate(t *testing.T) {
	f := newFakeIssuer(t)
	tok := f.login(time.Now().Add(time.Hour))
	r := newReplica(t, f, NewMemoryTokenStore(), tok)

	r.m.Invalidate(t.Context(), acct, tok.AccessToken)
	second, err := r.m.Token(t.Context(), acct)
	if err != nil || second == tok.AccessToken || second != f.current() {
		t.Fatalf("after 401: %s %v", Fingerprint(second), err)
	}
	r.m.Invalidate(t.Context(), acct, tok.AccessToken) // stale report: already replaced
	if got, _ := r.m.Token(t.Context(), acct); got != second {
		t.Errorf("a 401 on the old token changed the current one")
	}
	r.m.Invalidate(t.Context(), acct, second) // the fresh token rejected too
	if _, err := r.m.Token(t.Context(), acct); !errors.Is(err, ErrNoFreshToken) {
		t.Errorf("err = %v, want ErrNoFreshToken", err)
	}
	if refreshes, _ := f.counts(); refreshes != 1 {
		t.Errorf("%d refreshes, want 1", refreshes)
	}
	r.m.Invalidate(t.Context(), "nobody", "x") // no panic, nothing happens
}

// TestRunRefreshesAhead: Run refreshes inside refresh_before, once across two replicas.
func TestRunRefreshesAhead(t *testing.T) {
	f := newFakeIssuer(t)
	srv := testredis.Start(t)
	tok := f.login(time.Now().Add(5 * time.Minute)) // refresh_before is 10m
	fast := func(o *ManagerOptions) { o.CheckInterval = 20 * time.Millisecond }
	a := newReplica(t, f, NewRedisTokenStore(srv.Client(), "p", nil), tok, fast)
	b := newReplica(t, f, NewRedisTokenStore(srv.Client(), "p", nil), tok, fast)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, r := range []*replica{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); r.m.Run(ctx) }()
	}
	eventually(t, "both replicas hold the refreshed token", func() bool {
		x, _ := a.m.Token(t.Context(), acct)
		y, _ := b.m.Token(t.Context(), acct)
		return x == f.current() && y == f.current() && x != tok.AccessToken
	})
	time.Sleep(100 * time.Millisecond) // a few more ticks: nothing left to refresh
	cancel()
	wg.Wait()
	if refreshes, _ := f.counts(); refreshes != 1 {
		t.Errorf("%d refreshes, want 1", refreshes)
	}
}

// TestStoreDown: without the store nobody refreshes (two replicas could at once); the
// current token serves while it lasts, and refreshing resumes when the store is back.
func TestStoreDown(t *testing.T) {
	f := newFakeIssuer(t)
	srv := testredis.Start(t)
	clock := &fakeClock{t: time.Now()}
	tok := f.login(clock.Now().Add(30 * time.Second))
	// No client retries, so that calls to the stopped server fail at once.
	rdb := redis.NewClient(&redis.Options{Network: srv.Network(), Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	r := newReplica(t, f, NewRedisTokenStore(rdb, "p", []byte("k")), tok, func(o *ManagerOptions) { o.Now = clock.Now })
	srv.Stop()

	if got, err := r.m.Token(t.Context(), acct); err != nil || got != tok.AccessToken {
		t.Errorf("unexpired token with the store down: %s %v", Fingerprint(got), err)
	}
	clock.Add(time.Minute)
	_, err := r.m.Token(t.Context(), acct)
	if !errors.Is(err, ErrNoFreshToken) || !strings.Contains(err.Error(), "store") {
		t.Errorf("expired token with the store down: %v", err)
	}
	if refreshes, _ := f.counts(); refreshes != 0 {
		t.Errorf("%d refreshes without the store lock", refreshes)
	}
	if n := strings.Count(r.logs.String(), "token store unavailable"); n != 1 {
		t.Errorf("%d store-down log lines, want 1", n)
	}

	// Back, but empty (a restarted Redis): the replica's own pair is refreshed and saved.
	srv.Restart()
	got, err := r.m.Token(t.Context(), acct)
	if err != nil || got != f.current() {
		t.Fatalf("after the store returned: %s %v", Fingerprint(got), err)
	}
	if stored, ver, err := NewRedisTokenStore(srv.Client(), "p", []byte("k")).Get(t.Context(), acct); err != nil || ver == 0 || stored.AccessToken != got {
		t.Errorf("the refreshed pair is not in the store: v%d %v", ver, err)
	}
}

// TestSetAccounts: the newer of file and store wins; removed accounts go; a missing file
// means needs-login.
func TestSetAccounts(t *testing.T) {
	f := newFakeIssuer(t)
	store := NewMemoryTokenStore()
	dir := t.TempDir()
	older := f.login(time.Now().Add(time.Hour))
	newerTok := f.login(time.Now().Add(2 * time.Hour))

	// Store newer than the file: the store wins and the file is brought up to date.
	if err := store.Put(t.Context(), "a", newerTok, 3); err != nil {
		t.Fatal(err)
	}
	fa := filepath.Join(dir, "a.json")
	if err := WriteFile(fa, older); err != nil {
		t.Fatal(err)
	}
	// File newer than the store: the file wins and is saved to the store as a newer version.
	if err := store.Put(t.Context(), "b", older, 7); err != nil {
		t.Fatal(err)
	}
	fb := filepath.Join(dir, "b.json")
	if err := WriteFile(fb, newerTok); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	m := NewManager(ManagerOptions{Config: f.cfg, HTTP: f.srv.Client(), Store: store, Logger: testLogger(logs)})
	m.SetAccounts(t.Context(), []FileAccount{{"a", fa}, {"b", fb}, {"c", filepath.Join(dir, "missing.json")}})

	for _, name := range []string{"a", "b"} {
		if got, err := m.Token(t.Context(), name); err != nil || got != newerTok.AccessToken {
			t.Errorf("%s: %s %v, want the newer pair", name, Fingerprint(got), err)
		}
	}
	if got := mustRead(t, fa); got.AccessToken != newerTok.AccessToken {
		t.Errorf("a's file not updated from the store")
	}
	if got, ver, _ := store.Get(t.Context(), "b"); ver != 8 || got.AccessToken != newerTok.AccessToken {
		t.Errorf("b's file pair not saved to the store: v%d", ver)
	}
	if m.State("c") != StateNeedsLogin {
		t.Errorf("c without a file: state %q", m.State("c"))
	}
	if _, err := m.Token(t.Context(), "c"); !errors.Is(err, ErrNeedsLogin) || !strings.Contains(err.Error(), "claude-lb login c") {
		t.Errorf("c: %v", err)
	}

	m.SetAccounts(t.Context(), []FileAccount{{"a", fa}})
	if _, err := m.Token(t.Context(), "b"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("removed account still served: %v", err)
	}
	assertNoSecrets(t, "logs", logs.String(), f.secrets())
}

// TestNoTokenInOutput drives every failure path and greps logs and errors for token values,
// including an endpoint that echoes the refresh token in its error.
func TestNoTokenInOutput(t *testing.T) {
	f := newFakeIssuer(t)
	f.failNext = 1
	clock := &fakeClock{t: time.Now()}
	r := newReplica(t, f, NewMemoryTokenStore(), f.login(clock.Now().Add(-time.Minute)), func(o *ManagerOptions) { o.Now = clock.Now })
	var errs []string
	_, err := r.m.Token(t.Context(), acct) // 500 echoing the refresh token
	if err == nil {
		t.Fatal("want an error from the failing endpoint")
	}
	errs = append(errs, err.Error())
	clock.Add(time.Minute)
	tok, err := r.m.Token(t.Context(), acct) // succeeds
	if err != nil {
		t.Fatal(err)
	}
	st, _ := r.m.Status(acct)
	errs = append(errs, st.Reason, st.Fingerprint)
	f.mu.Lock()
	f.valid = map[string]bool{} // revoke everything: invalid_grant next
	f.mu.Unlock()
	clock.Add(time.Minute) // past the guard against refreshing twice in a row
	r.m.Invalidate(t.Context(), acct, tok)
	_, err = r.m.Token(t.Context(), acct)
	if !errors.Is(err, ErrNeedsLogin) {
		t.Fatalf("err = %v", err)
	}
	errs = append(errs, err.Error())
	st, _ = r.m.Status(acct)
	errs = append(errs, st.Reason)
	assertNoSecrets(t, "errors", strings.Join(errs, "\n"), f.secrets())
	if !strings.Contains(r.logs.String(), "server_error") {
		t.Errorf("the failure was not logged:\n%s", r.logs.String())
	}
}
