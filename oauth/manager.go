package oauth

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/claude-lb/claude-lb/config"
)

// Token states, as State reports them.
const (
	// StateValid: the account has an access token that works (or is being renewed ahead of time).
	StateValid = "valid"
	// StateRefreshing: a refresh of this account is running in this process right now.
	StateRefreshing = "refreshing"
	// StateNeedsLogin: a human must run `claude-lb login NAME` (invalid_grant, repeated refresh
	// failures, or no token at all). The account must leave the pool. A newer token in the
	// file or the store brings it back without a restart.
	StateNeedsLogin = "needs-login"
	// StateError: the last refresh failed and will be retried; the current access token may
	// still work until it expires.
	StateError = "error"
)

// Errors Token returns (wrapped, with the account name).
var (
	// ErrUnknownAccount: the account is not one SetAccounts was given.
	ErrUnknownAccount = errors.New("not an oauth_file account")
	// ErrNeedsLogin: the account needs a new `claude-lb login`.
	ErrNeedsLogin = errors.New("needs a new login (claude-lb login)")
	// ErrNoFreshToken: the token is expired or was rejected and no refresh is possible right now
	// (refresh failing and backing off, or the store unavailable); a later call may succeed.
	ErrNoFreshToken = errors.New("no fresh access token right now")
)

// Defaults of ManagerOptions.
const (
	DefaultLockTTL       = 30 * time.Second
	DefaultMaxFailures   = 5
	DefaultCheckInterval = 15 * time.Second

	// backstop: Token refreshes first when the access token has less than this left.
	backstop = time.Minute
	// minRejectedRefresh: after a refresh, a 401 on the new token refreshes again no sooner.
	minRejectedRefresh = 30 * time.Second
	// Failed refreshes are retried after 5s, 10s, 20s … up to maxRetryWait.
	firstRetryWait = 5 * time.Second
	maxRetryWait   = 5 * time.Minute
	// storeCallTimeout bounds one store call outside a refresh.
	storeCallTimeout = 5 * time.Second
)

// ManagerOptions configures a Manager. Config and Store are required.
type ManagerOptions struct {
	// Config returns the current oauth section (token_url, client_id, refresh_before); it is
	// called at every refresh, so reloads take effect.
	Config func() config.OAuth
	// HTTP sends token requests; nil: a client with conservative defaults.
	HTTP *http.Client
	// Store is shared by all replicas (RedisTokenStore), or a MemoryTokenStore for one.
	Store TokenStore
	// Logger receives one line per refresh and per state change; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// OnState, when set, is called with each account's first state when SetAccounts adds it
	// and on every change after (see the State* constants). It runs synchronously, serialized
	// per account: it must be quick and may call State or Status, but no other Manager method.
	OnState func(account, state string)

	// LockTTL is how long a refresh lock lives; a replica that dies holding it blocks
	// refreshes of that account for at most this long. Default DefaultLockTTL. One refresh
	// request is given half of it.
	LockTTL time.Duration
	// MaxFailures consecutive failed refreshes (other than invalid_grant, which counts at
	// once) mark the account needs-login. Default DefaultMaxFailures.
	MaxFailures int
	// CheckInterval is how often Run refreshes ahead of expiry, re-reads the store (pairs
	// other replicas rotated) and looks for a changed token file (a new login). Default
	// DefaultCheckInterval.
	CheckInterval time.Duration
}

// FileAccount is an account whose credential is an oauth_file.
type FileAccount struct {
	Name string
	File string
}

// Status is what the dashboard and `accounts list` show about an account's token.
type Status struct {
	// State is one of the State* constants.
	State string
	// Reason says why the state is needs-login or error, for humans; never contains a token.
	Reason string
	// ExpiresAt is when the current access token expires (zero when unknown).
	ExpiresAt time.Time
	// Fingerprint identifies the current access token (its last 4 characters).
	Fingerprint string
	// Version is the pair's version in the store (0 before it reached the store).
	Version int64
}

// Manager hands out fresh access tokens for oauth_file accounts and refreshes them, with
// exactly one refresh per account in flight across all replicas sharing its Store.
//
// Token is safe for concurrent use and, when the token is fresh, costs a few atomic loads and
// a map lookup: no lock, no I/O.
type Manager struct {
	o     ManagerOptions
	log   *slog.Logger
	owner string // prefix of this process's lock owner tokens
	seq   atomic.Uint64
	sf    singleflight.Group
	wake  chan struct{} // SetAccounts nudges Run

	storeDown atomic.Bool // for one log line per store outage

	setMu    sync.Mutex                        // serializes SetAccounts
	accounts atomic.Pointer[map[string]*entry] // immutable once published
}

// current is a token pair and its store version.
type current struct {
	tok Token
	ver int64
}

type entry struct {
	name, file string
	key        string // singleflight key

	cur   atomic.Pointer[current] // nil until a pair was loaded
	state atomic.Pointer[string]
	bad   atomic.Pointer[string] // access token an upstream 401 rejected

	fileMu sync.Mutex // serializes writes of file

	mu          sync.Mutex // guards the fields below and serializes state changes
	reason      string
	failures    int
	retryAt     time.Time
	dead        string // refresh token refused with invalid_grant
	lastRefresh time.Time
	fileStat    fileStat
	fileWarned  bool
}

type fileStat struct {
	mod  time.Time
	size int64
	ok   bool
}

func (a fileStat) equal(b fileStat) bool {
	return a.ok == b.ok && a.size == b.size && a.mod.Equal(b.mod)
}

func statFile(path string) fileStat {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStat{}
	}
	return fileStat{mod: fi.ModTime(), size: fi.Size(), ok: true}
}

// NewManager returns a Manager with no accounts; call SetAccounts, then run Run.
func NewManager(o ManagerOptions) *Manager {
	if o.Config == nil {
		def := config.Default().OAuth
		o.Config = func() config.OAuth { return def }
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Transport: http.DefaultTransport}
	}
	if o.Store == nil {
		o.Store = NewMemoryTokenStore()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultLockTTL
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := make([]byte, 9)
	_, _ = crand.Read(b)
	m := &Manager{
		o:     o,
		log:   log,
		owner: base64.RawURLEncoding.EncodeToString(b),
		wake:  make(chan struct{}, 1),
	}
	m.accounts.Store(&map[string]*entry{})
	return m
}

func (m *Manager) lookup(account string) *entry {
	return (*m.accounts.Load())[account]
}

func (m *Manager) entries() []*entry {
	all := *m.accounts.Load()
	out := make([]*entry, 0, len(all))
	for _, e := range all {
		out = append(out, e)
	}
	return out
}

// SetAccounts makes accts the managed accounts; call it at start and on every reload.
// For each account the newer of the file's and the store's pair wins (a newer file, such as
// a fresh `claude-lb login`, is written to the store for every replica), so a login takes
// effect everywhere and brings a needs-login account back. Accounts no longer listed are
// dropped. It reads the files and the store; ctx bounds that.
func (m *Manager) SetAccounts(ctx context.Context, accts []FileAccount) {
	m.setMu.Lock()
	defer m.setMu.Unlock()
	prev := *m.accounts.Load()
	next := make(map[string]*entry, len(accts))
	var kept []*entry
	for _, a := range accts {
		if e, ok := prev[a.Name]; ok && e.file == a.File {
			next[a.Name] = e
			kept = append(kept, e)
			continue
		}
		// A new account is loaded before it becomes visible, so Token never sees it empty.
		e := &entry{name: a.Name, file: a.File, key: a.Name + "\x00" + a.File}
		none := ""
		e.state.Store(&none)
		m.syncFile(ctx, e)
		next[a.Name] = e
	}
	m.accounts.Store(&next)
	for _, e := range kept {
		m.syncFile(ctx, e)
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Token returns a usable access token for account: the cached one when it has more than a
// minute left (no I/O), else after a refresh (or after adopting the pair another replica
// saved). Errors wrap ErrUnknownAccount, ErrNeedsLogin or ErrNoFreshToken and never contain
// a token.
func (m *Manager) Token(ctx context.Context, account string) (string, error) {
	e := m.lookup(account)
	if e == nil {
		return "", fmt.Errorf("account %q: %w", account, ErrUnknownAccount)
	}
	if *e.state.Load() == StateNeedsLogin {
		return "", e.needsLoginErr()
	}
	if c := e.cur.Load(); c != nil && !c.tok.ExpiresWithin(m.o.Now(), backstop) && !e.isBad(c.tok.AccessToken) {
		return c.tok.AccessToken, nil
	}
	return m.obtain(ctx, e, backstop)
}

func (e *entry) isBad(access string) bool {
	b := e.bad.Load()
	return b != nil && *b == access
}

func (e *entry) needsLoginErr() error {
	e.mu.Lock()
	reason := e.reason
	e.mu.Unlock()
	if reason == "" {
		return fmt.Errorf("account %q %w", e.name, ErrNeedsLogin)
	}
	return fmt.Errorf("account %q %w: %s", e.name, ErrNeedsLogin, reason)
}

// Invalidate tells the Manager that the upstream rejected accessToken (a 401) for account.
// Unless the account already moved on to another token, a refresh starts in the background
// (or the pair another replica saved is adopted); Invalidate returns at once, and the next
// Token call waits for that refresh instead of handing out the rejected token.
func (m *Manager) Invalidate(ctx context.Context, account, accessToken string) {
	e := m.lookup(account)
	if e == nil || accessToken == "" {
		return
	}
	c := e.cur.Load()
	if c == nil || c.tok.AccessToken != accessToken {
		return // already replaced
	}
	e.bad.Store(&accessToken)
	if *e.state.Load() == StateNeedsLogin {
		return
	}
	m.start(ctx, e, backstop)
}

// State returns account's token state (State* constants), or "" for an unknown account.
func (m *Manager) State(account string) string {
	e := m.lookup(account)
	if e == nil {
		return ""
	}
	return *e.state.Load()
}

// Status returns account's token state with details for display; ok is false for an unknown
// account.
func (m *Manager) Status(account string) (st Status, ok bool) {
	e := m.lookup(account)
	if e == nil {
		return Status{}, false
	}
	e.mu.Lock()
	st = Status{State: *e.state.Load(), Reason: e.reason}
	e.mu.Unlock()
	if c := e.cur.Load(); c != nil {
		st.ExpiresAt = c.tok.ExpiresAt
		st.Fingerprint = Fingerprint(c.tok.AccessToken)
		st.Version = c.ver
	}
	return st, true
}

// Run refreshes tokens ahead of expiry (oauth.refresh_before), adopts pairs other replicas
// saved, and picks up changed token files, every CheckInterval until ctx ends. It returns nil
// when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	for {
		m.tick(ctx)
		// ±10% jitter, so replicas started together do not contend for locks in step.
		d := m.o.CheckInterval
		d += time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-m.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

func (m *Manager) tick(ctx context.Context) {
	before := m.o.Config().RefreshBefore
	if before < backstop {
		before = backstop
	}
	for _, e := range m.entries() {
		if ctx.Err() != nil {
			return
		}
		if st := statFile(e.file); !st.equal(e.getFileStat()) {
			m.syncFile(ctx, e)
		} else {
			m.syncStore(ctx, e)
		}
		if *e.state.Load() == StateNeedsLogin && !e.retryableNeedsLogin() {
			continue
		}
		c := e.cur.Load()
		if c == nil || !c.tok.ExpiresWithin(m.o.Now(), before) {
			continue
		}
		if !e.retryDue(m.o.Now()) {
			continue
		}
		_, _ = m.obtain(ctx, e, before) // logged inside
	}
}

func (e *entry) getFileStat() fileStat {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fileStat
}

// retryableNeedsLogin: needs-login after repeated transient failures is retried slowly
// (the refresh token may still be good); after invalid_grant it is not.
func (e *entry) retryableNeedsLogin() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dead == "" && e.cur.Load() != nil && e.cur.Load().tok.RefreshToken != ""
}

func (e *entry) retryDue(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !now.Before(e.retryAt)
}

// obtain runs (or joins) the account's refresh flight and waits for it or ctx.
func (m *Manager) obtain(ctx context.Context, e *entry, window time.Duration) (string, error) {
	ch := m.start(ctx, e, window)
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("account %q: waiting for a token refresh: %w", e.name, ctx.Err())
	}
}

// start runs the flight unless one is running for this account; the flight outlives the
// caller's ctx (others may be waiting on it) but is bounded by the lock TTL.
func (m *Manager) start(ctx context.Context, e *entry, window time.Duration) <-chan singleflight.Result {
	base := context.WithoutCancel(ctx)
	return m.sf.DoChan(e.key, func() (any, error) {
		fctx, cancel := context.WithTimeout(base, 3*m.o.LockTTL+storeCallTimeout)
		defer cancel()
		return m.flight(fctx, e, window)
	})
}

// flight makes sure e holds a pair that does not need a refresh (within window of expiry or
// rejected by the upstream), refreshing it under the store lock if nobody else did.
func (m *Manager) flight(ctx context.Context, e *entry, window time.Duration) (string, error) {
	needs := func(t Token) bool {
		return t.AccessToken == "" || e.isBad(t.AccessToken) || t.ExpiresWithin(m.o.Now(), window)
	}
	// Another flight may have just finished.
	if c := e.cur.Load(); c != nil && !needs(c.tok) {
		return c.tok.AccessToken, nil
	}
	if *e.state.Load() == StateNeedsLogin && !e.retryableNeedsLogin() {
		return "", e.needsLoginErr()
	}
	if !e.retryDue(m.o.Now()) {
		return m.fallback(e, fmt.Errorf("account %q: the last token refresh failed; retrying later: %w", e.name, ErrNoFreshToken))
	}
	if c := e.cur.Load(); c != nil && e.isBad(c.tok.AccessToken) && !c.tok.ExpiresWithin(m.o.Now(), window) {
		// Only a 401 asks for this refresh: refuse to loop on an account whose fresh tokens
		// are rejected.
		e.mu.Lock()
		recent := m.o.Now().Sub(e.lastRefresh) < minRejectedRefresh
		e.mu.Unlock()
		if recent {
			if tok, ver, err := m.o.Store.Get(ctx, e.name); err == nil && ver > c.ver && !needs(tok) {
				m.adoptStore(e, tok, ver)
				return tok.AccessToken, nil
			}
			return "", fmt.Errorf("account %q: the upstream rejected a token refreshed moments ago: %w", e.name, ErrNoFreshToken)
		}
	}

	// A replica may already have saved a fresh pair.
	ourVer := int64(0)
	if c := e.cur.Load(); c != nil {
		ourVer = c.ver
	}
	if tok, ver, err := m.o.Store.Get(ctx, e.name); err != nil {
		return m.storeFailed(e, err)
	} else if m.storeOK(); ver > ourVer && !needs(tok) {
		m.adoptStore(e, tok, ver)
		return tok.AccessToken, nil
	}

	// Take the lock, or wait for whoever holds it and re-read what they saved.
	owner := m.owner + "-" + strconv.FormatUint(m.seq.Add(1), 10)
	deadline := time.Now().Add(2*m.o.LockTTL + time.Second)
	wait := 10 * time.Millisecond
	for {
		ok, err := m.o.Store.Lock(ctx, e.name, owner, m.o.LockTTL)
		if err != nil {
			return m.storeFailed(e, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return m.fallback(e, fmt.Errorf("account %q: another replica has held the token refresh lock for over %s: %w", e.name, 2*m.o.LockTTL+time.Second, ErrNoFreshToken))
		}
		t := time.NewTimer(wait/2 + time.Duration(rand.Int64N(int64(wait))))
		select {
		case <-ctx.Done():
			t.Stop()
			return m.fallback(e, fmt.Errorf("account %q: waiting for another replica's token refresh: %w", e.name, ctx.Err()))
		case <-t.C:
		}
		wait = min(wait*2, 250*time.Millisecond)
		if tok, ver, err := m.o.Store.Get(ctx, e.name); err == nil && ver > ourVer && !needs(tok) {
			m.adoptStore(e, tok, ver)
			return tok.AccessToken, nil
		}
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
		defer cancel()
		if err := m.o.Store.Unlock(uctx, e.name, owner); err != nil {
			m.log.Warn("oauth: release refresh lock", "account", e.name, "err", err)
		}
	}()

	// Under the lock: the store is the truth, unless it lags behind us.
	stok, sver, err := m.o.Store.Get(ctx, e.name)
	if err != nil {
		return m.storeFailed(e, err)
	}
	from, fromVer := Token{}, sver
	if c := e.cur.Load(); c != nil {
		from = c.tok
		fromVer = max(c.ver, sver)
	}
	if c := e.cur.Load(); c == nil || sver > c.ver {
		if !needs(stok) {
			m.adoptStore(e, stok, sver)
			return stok.AccessToken, nil
		}
		from = stok
	}
	if from.RefreshToken == "" {
		m.needsLogin(e, "", "the token has no refresh_token")
		return "", e.needsLoginErr()
	}
	e.mu.Lock()
	dead := e.dead
	e.mu.Unlock()
	if from.RefreshToken == dead {
		return "", e.needsLoginErr()
	}

	// Refresh, bounded so that it ends well before the lock expires.
	m.setState(e, StateRefreshing, "")
	cfg := m.o.Config()
	rctx, cancel := context.WithTimeout(ctx, m.o.LockTTL/2)
	tok, err := refreshToken(rctx, m.o.HTTP, cfg.TokenURL, cfg.ClientID, from, m.o.Now())
	cancel()
	if err != nil {
		return m.refreshFailed(ctx, e, from, fromVer, needs, err)
	}
	ver := fromVer + 1

	// Save before anyone uses it: the store (for the other replicas), then the file.
	if err := m.o.Store.Put(ctx, e.name, tok, ver); err != nil {
		if errors.Is(err, ErrStale) {
			m.log.Warn("oauth: the store got a newer token pair while this replica refreshed (lock expired?)",
				"account", e.name, "version", ver)
		} else {
			m.log.Error("oauth: could not save the rotated token pair in the store; other replicas cannot refresh this account until it is saved",
				"account", e.name, "err", err)
		}
	}
	m.writeFile(e, tok)
	e.mu.Lock()
	e.lastRefresh = m.o.Now()
	e.mu.Unlock()
	m.adopt(e, tok, ver, "refresh")
	m.log.Info("oauth: token refreshed", "account", e.name, "version", ver,
		"expires_at", tok.ExpiresAt.UTC().Format(time.RFC3339))
	return tok.AccessToken, nil
}

// refreshFailed handles a failed refresh of from (store version fromVer).
func (m *Manager) refreshFailed(ctx context.Context, e *entry, from Token, fromVer int64, needs func(Token) bool, err error) (string, error) {
	var ee *EndpointError
	if errors.As(err, &ee) && ee.Permanent() {
		// Someone may have rotated the pair after all (a replica whose lock expired, a login).
		if tok, ver, gerr := m.o.Store.Get(ctx, e.name); gerr == nil && ver > fromVer && tok.RefreshToken != from.RefreshToken {
			m.adoptStore(e, tok, ver)
			if !needs(tok) {
				return tok.AccessToken, nil
			}
		}
		m.needsLogin(e, from.RefreshToken, "the token endpoint refused the refresh token ("+ee.Code+")")
		return "", e.needsLoginErr()
	}
	now := m.o.Now()
	e.mu.Lock()
	e.failures++
	n := e.failures
	e.retryAt = now.Add(min(firstRetryWait<<min(n-1, 16), maxRetryWait))
	e.mu.Unlock()
	if n >= m.o.MaxFailures {
		m.needsLogin(e, "", fmt.Sprintf("%d token refreshes in a row failed, the last: %v", n, err))
		return "", e.needsLoginErr()
	}
	m.setState(e, StateError, err.Error())
	m.log.Warn("oauth: token refresh failed", "account", e.name, "attempt", n, "err", err)
	return m.fallback(e, fmt.Errorf("account %q: token refresh: %w (%w)", e.name, err, ErrNoFreshToken))
}

// fallback returns the current access token while it has not expired and was not rejected,
// else err.
func (m *Manager) fallback(e *entry, err error) (string, error) {
	if c := e.cur.Load(); c != nil && !e.isBad(c.tok.AccessToken) && !c.tok.ExpiresWithin(m.o.Now(), 0) {
		return c.tok.AccessToken, nil
	}
	return "", err
}

// storeFailed: without the store no replica may refresh (two could at once and kill the
// account), so keep using the current token while it lasts.
func (m *Manager) storeFailed(e *entry, err error) (string, error) {
	if !m.storeDown.Swap(true) {
		m.log.Warn("oauth: token store unavailable; refreshes wait for it", "account", e.name, "err", err)
	}
	return m.fallback(e, fmt.Errorf("account %q: token store unavailable: %w", e.name, ErrNoFreshToken))
}

func (m *Manager) storeOK() {
	if m.storeDown.Swap(false) {
		m.log.Info("oauth: token store available again")
	}
}

// adopt makes tok (store version ver) the account's pair if it is newer than the current one,
// and brings the account back from needs-login unless tok carries the refused refresh token.
func (m *Manager) adopt(e *entry, tok Token, ver int64, source string) bool {
	e.mu.Lock()
	c := e.cur.Load()
	if c != nil && !(ver > c.ver || (ver == c.ver && tok.ExpiresAt.After(c.tok.ExpiresAt))) {
		e.mu.Unlock()
		return false
	}
	e.cur.Store(&current{tok: tok, ver: ver})
	revive := e.dead == "" || tok.RefreshToken != e.dead
	prev := *e.state.Load()
	if revive {
		e.dead = ""
		e.failures = 0
		e.retryAt = time.Time{}
	}
	e.mu.Unlock()
	if revive && prev != StateValid {
		if prev == StateNeedsLogin {
			m.log.Info("oauth: account logged in again", "account", e.name, "source", source)
		}
		m.setState(e, StateValid, "")
	}
	return true
}

// adoptStore adopts a pair another replica saved and keeps this replica's file in step.
func (m *Manager) adoptStore(e *entry, tok Token, ver int64) {
	if m.adopt(e, tok, ver, "store") {
		m.writeCurrent(e)
	}
}

// writeCurrent writes the account's current pair to its file. Writing the current pair
// (rather than the one just adopted) keeps concurrent adoptions from leaving an older pair
// in the file.
func (m *Manager) writeCurrent(e *entry) {
	e.fileMu.Lock()
	defer e.fileMu.Unlock()
	if c := e.cur.Load(); c != nil {
		m.writeFileLocked(e, c.tok)
	}
}

// needsLogin marks e needs-login; dead is the refresh token the endpoint refused ("" when
// the failures were transient).
func (m *Manager) needsLogin(e *entry, dead, reason string) {
	e.mu.Lock()
	if dead != "" {
		e.dead = dead
	}
	e.retryAt = m.o.Now().Add(maxRetryWait)
	e.mu.Unlock()
	if m.setState(e, StateNeedsLogin, reason) {
		m.log.Error("oauth: account needs a new login; it is out of the pool until `claude-lb login "+e.name+"` is run",
			"account", e.name, "reason", reason)
	}
}

// setState records the state and calls OnState on a change; it reports whether it changed.
func (m *Manager) setState(e *entry, state, reason string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reason = reason
	if *e.state.Load() == state {
		return false
	}
	e.state.Store(&state)
	if m.o.OnState != nil {
		m.o.OnState(e.name, state)
	}
	return true
}

// writeFile saves tok in the account's file; a failure is logged once (the store still has it).
func (m *Manager) writeFile(e *entry, tok Token) {
	e.fileMu.Lock()
	defer e.fileMu.Unlock()
	m.writeFileLocked(e, tok)
}

func (m *Manager) writeFileLocked(e *entry, tok Token) {
	err := WriteFile(e.file, tok)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		if !e.fileWarned {
			e.fileWarned = true
			m.log.Warn("oauth: could not update the token file; the store keeps the current pair", "account", e.name, "err", err)
		}
		return
	}
	e.fileWarned = false
	e.fileStat = statFile(e.file)
}

// syncFile reads the account's file and the store and keeps the newer pair (see SetAccounts).
func (m *Manager) syncFile(ctx context.Context, e *entry) {
	st := statFile(e.file)
	ftok, ferr := ReadFile(e.file)
	e.mu.Lock()
	e.fileStat = st
	dead := e.dead
	e.mu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	stok, sver, serr := m.o.Store.Get(sctx, e.name)
	if serr != nil {
		m.storeFailed(e, serr)
	} else {
		m.storeOK()
	}
	c := e.cur.Load()

	fileWins := ferr == nil && (c == nil || newer(ftok, c.tok, dead)) &&
		(serr != nil || sver == 0 || newer(ftok, stok, dead))
	switch {
	case fileWins:
		if serr == nil {
			ver := sver + 1
			if c != nil {
				ver = max(ver, c.ver+1)
			}
			err := m.o.Store.Put(sctx, e.name, ftok, ver)
			if err == nil {
				m.adopt(e, ftok, ver, "file")
				return
			}
			if errors.Is(err, ErrStale) { // someone was faster: take theirs
				m.syncStore(ctx, e)
				return
			}
			m.log.Warn("oauth: could not save the token file's pair in the store", "account", e.name, "err", err)
		}
		ver := int64(0)
		if c != nil {
			ver = c.ver
		}
		m.adopt(e, ftok, ver, "file")
	case serr == nil && sver > 0 && (c == nil || sver > c.ver):
		if m.adopt(e, stok, sver, "store") && (ferr != nil || newer(stok, ftok, "")) {
			m.writeCurrent(e)
		}
	case c == nil:
		reason := "no token: run `claude-lb login " + e.name + "`"
		if ferr != nil && !errors.Is(ferr, os.ErrNotExist) {
			reason = ferr.Error()
		}
		m.needsLogin(e, "", reason)
	}
}

// syncStore adopts a newer pair from the store (one another replica rotated or a login
// saved) and writes it to this replica's file.
func (m *Manager) syncStore(ctx context.Context, e *entry) {
	sctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	tok, ver, err := m.o.Store.Get(sctx, e.name)
	if err != nil {
		m.storeFailed(e, err)
		return
	}
	m.storeOK()
	if c := e.cur.Load(); ver > 0 && (c == nil || ver > c.ver) {
		m.adoptStore(e, tok, ver)
	}
}

// newer reports whether a should replace b: it expires later, or b's refresh token is the
// one the endpoint refused and a carries another.
func newer(a, b Token, dead string) bool {
	if a.AccessToken == "" && a.RefreshToken == "" {
		return false
	}
	if dead != "" && b.RefreshToken == dead && a.RefreshToken != dead {
		return true
	}
	return a.ExpiresAt.After(b.ExpiresAt)
}
