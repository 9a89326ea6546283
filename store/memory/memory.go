// Package memory is the in-process routing store: usage counters, marks (cooldowns), session
// bindings and the request history of one replica, behind one mutex. It is the default store
// and the local fallback of the Redis store.
package memory

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/claude-lb/claude-lb/routing"
)

// DefaultHistorySize is the history length when Options.HistorySize is 0.
const DefaultHistorySize = 1000

// minAffinitySweep is the binding count below which expired bindings are not swept.
const minAffinitySweep = 1024

var (
	_ routing.Store      = (*Store)(nil)
	_ routing.AdminStore = (*Store)(nil)
)

// Options configure a Store.
type Options struct {
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// HistorySize is how many requests the history keeps; 0 means DefaultHistorySize.
	HistorySize int
}

// Store is the in-memory routing.Store and routing.AdminStore. It is safe for concurrent use.
// Times are kept at millisecond resolution, as in the Redis store.
type Store struct {
	now func() time.Time

	mu       sync.Mutex          // guards every field below
	accounts map[string]*account // by account name
	models   map[string]int64    // requests by model
	bindings map[string]binding  // session -> account
	sweepAt  int                 // len(bindings) at which expired bindings are swept
	rr       uint64              // round-robin counter
	hist     []routing.Usage     // ring buffer of cap HistorySize
	histNext int                 // where the next entry goes
	histLen  int                 // entries in hist
}

type account struct {
	// counted: the account has counters (picked or recorded since the last reset).
	counted bool
	routing.AccountStats
	lastUsedMs int64
	marks      []mark
}

type mark struct {
	scope   string
	soft    bool
	untilMs int64
	reason  string
}

type binding struct {
	account string
	untilMs int64
}

// New returns an empty store.
func New(opts Options) *Store {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HistorySize <= 0 {
		opts.HistorySize = DefaultHistorySize
	}
	return &Store{
		now:      opts.Now,
		accounts: make(map[string]*account),
		models:   make(map[string]int64),
		bindings: make(map[string]binding),
		sweepAt:  minAffinitySweep,
		hist:     make([]routing.Usage, opts.HistorySize),
	}
}

// Pick implements routing.Store.
func (s *Store) Pick(_ context.Context, req routing.PickRequest) (routing.Pick, error) {
	// Small candidate lists (the usual case) keep their state on the stack.
	var buf [16]routing.CandidateState
	st := buf[:0]
	if len(req.Candidates) > len(buf) {
		st = make([]routing.CandidateState, 0, len(req.Candidates))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()

	// The earliest moment a blocked candidate becomes free, for when none is available.
	retryMs, retryReason := int64(-1), ""
	for _, c := range req.Candidates {
		var cs routing.CandidateState
		if a := s.accounts[c.Name]; a != nil {
			cs.Requests, cs.LastUsed = a.Requests, a.lastUsedMs
			freeMs, reason := a.stateLocked(now, req.Scopes, c.CredScope, &cs)
			if cs.Hard && (retryMs < 0 || freeMs < retryMs) {
				retryMs, retryReason = freeMs, reason
			}
		}
		st = append(st, cs)
	}

	win, why := -1, ""
	if req.Session != "" {
		if b, ok := s.bindings[req.Session]; ok && b.untilMs > now {
			for i, c := range req.Candidates {
				if c.Name == b.account && !st[i].Hard {
					win, why = i, "affinity"
					break
				}
			}
		}
	}
	if win < 0 {
		win, why = routing.Choose(req.Strategy, req.Candidates, st, s.rr)
		if win >= 0 && req.Strategy == routing.RoundRobin {
			s.rr++
		}
	}
	if win < 0 {
		if retryMs < 0 {
			return routing.Pick{}, nil
		}
		return routing.Pick{RetryAt: time.UnixMilli(retryMs), Reason: retryReason}, nil
	}

	name := req.Candidates[win].Name
	a := s.accountLocked(name)
	a.counted = true
	a.Requests++
	a.lastUsedMs = now
	if req.Session != "" && req.AffinityTTL > 0 {
		s.bindLocked(req.Session, name, now, now+req.AffinityTTL.Milliseconds())
	}
	return routing.Pick{Account: name, Why: why}, nil
}

// stateLocked sets cs.Hard and cs.Soft from the account's unexpired marks on scope "", the
// request's scopes and the credential's scope, dropping expired marks. When hard, it returns
// when the account becomes free (its latest blocking hard mark) and that mark's reason.
func (a *account) stateLocked(now int64, scopes []string, cred string, cs *routing.CandidateState) (int64, string) {
	var freeMs int64
	var reason string
	live := a.marks[:0]
	for _, m := range a.marks {
		if m.untilMs <= now {
			continue
		}
		live = append(live, m)
		if !applies(m.scope, scopes, cred) {
			continue
		}
		if m.soft {
			cs.Soft = true
			continue
		}
		cs.Hard = true
		if m.untilMs > freeMs {
			freeMs, reason = m.untilMs, m.reason
		}
	}
	clear(a.marks[len(live):])
	a.marks = live
	return freeMs, reason
}

func applies(scope string, scopes []string, cred string) bool {
	return scope == "" || (cred != "" && scope == cred) || slices.Contains(scopes, scope)
}

func (s *Store) accountLocked(name string) *account {
	a := s.accounts[name]
	if a == nil {
		a = new(account)
		s.accounts[name] = a
	}
	return a
}

// Bind implements routing.Store.
func (s *Store) Bind(_ context.Context, session, account string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	s.bindLocked(session, account, now, now+ttl.Milliseconds())
	return nil
}

// bindLocked binds session to account until untilMs, sweeping expired bindings when the map
// has doubled since the last sweep, so it stays bounded by the live bindings.
func (s *Store) bindLocked(session, account string, now, untilMs int64) {
	if b, ok := s.bindings[session]; !ok || b.account != account || b.untilMs != untilMs {
		s.bindings[session] = binding{account: account, untilMs: untilMs}
	}
	if len(s.bindings) < s.sweepAt {
		return
	}
	for k, b := range s.bindings {
		if b.untilMs <= now {
			delete(s.bindings, k)
		}
	}
	s.sweepAt = max(minAffinitySweep, 2*len(s.bindings))
}

// Mark implements routing.Store. A mark is identified by account, scope and Soft: setting one
// replaces the previous mark of the same identity, and an Until not after now clears it.
func (s *Store) Mark(_ context.Context, m routing.Mark) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	until := m.Until.UnixMilli()
	a := s.accounts[m.Account]
	if a == nil {
		if until <= now {
			return nil
		}
		a = s.accountLocked(m.Account)
	}
	i := slices.IndexFunc(a.marks, func(x mark) bool { return x.scope == m.Scope && x.soft == m.Soft })
	switch {
	case until <= now && i >= 0:
		a.marks = slices.Delete(a.marks, i, i+1)
	case until <= now:
	case i >= 0:
		a.marks[i].untilMs, a.marks[i].reason = until, m.Reason
	default:
		a.marks = append(a.marks, mark{scope: m.Scope, soft: m.Soft, untilMs: until, reason: m.Reason})
	}
	if !a.counted && len(a.marks) == 0 {
		delete(s.accounts, m.Account)
	}
	return nil
}

// Record implements routing.Store: it counts errors (status >= 400 or an error) and tokens on
// the account, sets its last-used time, counts the model and appends u to the history. The
// request itself was counted by Pick. A zero u.Time is set to now.
func (s *Store) Record(_ context.Context, u routing.Usage) error {
	u.Tried = slices.Clone(u.Tried)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if u.Time.IsZero() {
		u.Time = now
	}
	if u.Account != "" {
		a := s.accountLocked(u.Account)
		a.counted = true
		if u.Failed() {
			a.Errors++
		}
		a.InputTokens += u.InputTokens
		a.OutputTokens += u.OutputTokens
		a.CacheReadTokens += u.CacheReadTokens
		a.CacheCreationTokens += u.CacheCreationTokens
		a.lastUsedMs = now.UnixMilli()
	}
	if u.Model != "" {
		s.models[u.Model]++
	}
	s.hist[s.histNext] = u
	s.histNext = (s.histNext + 1) % len(s.hist)
	s.histLen = min(s.histLen+1, len(s.hist))
	return nil
}

// Stats implements routing.AdminStore: accounts with counters or live marks (sorted by scope,
// hard before soft), and per-model counts.
func (s *Store) Stats(context.Context) (routing.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UnixMilli()
	out := routing.Stats{
		Accounts: make(map[string]routing.AccountStats, len(s.accounts)),
		Models:   make(map[string]int64, len(s.models)),
	}
	for name, a := range s.accounts {
		var marks []routing.Mark
		for _, m := range a.marks {
			if m.untilMs > now {
				marks = append(marks, routing.Mark{Account: name, Scope: m.scope, Until: time.UnixMilli(m.untilMs), Reason: m.reason, Soft: m.soft})
			}
		}
		if !a.counted && len(marks) == 0 {
			continue
		}
		routing.SortMarks(marks)
		as := a.AccountStats
		as.Marks = marks
		if a.lastUsedMs != 0 {
			as.LastUsed = time.UnixMilli(a.lastUsedMs)
		}
		out.Accounts[name] = as
	}
	for m, n := range s.models {
		out.Models[m] = n
	}
	return out, nil
}

// History implements routing.AdminStore: newest first, filtered, then Offset and Limit.
func (s *Store) History(_ context.Context, q routing.HistoryQuery) ([]routing.Usage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []routing.Usage
	skip := max(q.Offset, 0)
	for i := range s.histLen {
		u := &s.hist[(s.histNext-1-i+2*len(s.hist))%len(s.hist)]
		if !matches(q, u) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		out = append(out, *u)
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
	}
	return out, nil
}

// matches reports whether u passes q's filters (not its Limit and Offset).
func matches(q routing.HistoryQuery, u *routing.Usage) bool {
	return (q.Model == "" || u.Model == q.Model) &&
		(q.Account == "" || u.Account == q.Account) &&
		(q.Status == 0 || u.Status == q.Status)
}

// ResetStats implements routing.AdminStore: it zeroes every account's counters and last-used
// time, the per-model counts and the round-robin position. Marks, session bindings and the
// history stay.
func (s *Store) ResetStats(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, a := range s.accounts {
		if len(a.marks) == 0 {
			delete(s.accounts, name)
			continue
		}
		*a = account{marks: a.marks}
	}
	clear(s.models)
	s.rr = 0
	return nil
}

// ClearHistory implements routing.AdminStore.
func (s *Store) ClearHistory(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.hist)
	s.histNext, s.histLen = 0, 0
	return nil
}
