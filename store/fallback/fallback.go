// Package fallback keeps the gateway serving when its shared store does not answer: it calls
// the primary store (Redis) with a short timeout and, when that fails, serves from a local
// store (memory) and reports itself degraded until a background probe sees the primary answer
// again. A request never fails because the primary did.
package fallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claude-lb/claude-lb/routing"
)

// Defaults for Options.
const (
	DefaultTimeout    = 500 * time.Millisecond
	DefaultProbeEvery = time.Second
)

// Backend is a complete store: the router's side and the admin side.
type Backend interface {
	routing.Store
	routing.AdminStore
}

var (
	_ routing.Store      = (*Store)(nil)
	_ routing.AdminStore = (*Store)(nil)
)

// pinger is the cheap health check a primary may offer (the Redis store does); without it the
// probe reads one history entry.
type pinger interface {
	Ping(ctx context.Context) error
}

// Options configure a Store.
type Options struct {
	// Logger gets one line per transition between the primary and the local store; nil
	// discards.
	Logger *slog.Logger
	// OnChange, if set, is called on each transition with the new state (for a metric). Calls
	// are serialized and in order.
	OnChange func(degraded bool)
	// ProbeEvery is how often Run checks the primary while degraded; 0 means
	// DefaultProbeEvery.
	ProbeEvery time.Duration
	// Timeout bounds each call to the primary; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Store serves from primary while it answers and from local otherwise. Run must be running for
// a degraded Store to return to the primary.
//
// While the primary is healthy, marks and records are also applied to the local store, and
// each pick is mirrored to it (the winner's count and the session binding), so that a switch
// to the local store keeps cooldowns, conversations and a rough least-used view of this
// replica.
type Store struct {
	primary, local Backend
	log            *slog.Logger
	onChange       func(bool)
	probeEvery     time.Duration
	timeout        time.Duration

	degraded atomic.Bool
	mu       sync.Mutex // serializes transitions and their log lines and OnChange calls
}

// New returns a Store over primary and local.
func New(primary, local Backend, opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ProbeEvery <= 0 {
		opts.ProbeEvery = DefaultProbeEvery
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &Store{
		primary:    primary,
		local:      local,
		log:        opts.Logger,
		onChange:   opts.OnChange,
		probeEvery: opts.ProbeEvery,
		timeout:    opts.Timeout,
	}
}

// Degraded reports whether the Store is serving from the local store.
func (s *Store) Degraded() bool { return s.degraded.Load() }

// Run probes the primary every ProbeEvery while degraded and switches back to it once it
// answers. While healthy it also pings the primary every healthyProbes ticks, so an idle
// replica's /readyz and metrics notice a dead Redis before a request does. It returns when
// ctx is done.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.probeEvery)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !s.degraded.Load() {
			if tick%healthyProbes == 0 {
				if err := s.probe(ctx); err != nil {
					s.failed(ctx, "probe", err)
				}
			}
			continue
		}
		if err := s.probe(ctx); err == nil {
			s.setDegraded(false, nil)
		}
	}
}

// healthyProbes is how many ProbeEvery ticks pass between pings of a healthy primary.
const healthyProbes = 5

func (s *Store) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if p, ok := s.primary.(pinger); ok {
		return p.Ping(ctx)
	}
	_, err := s.primary.History(ctx, routing.HistoryQuery{Limit: 1})
	return err
}

// setDegraded makes a transition, if it is one, with one log line and one OnChange call.
func (s *Store) setDegraded(degraded bool, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.degraded.Load() == degraded {
		return
	}
	s.degraded.Store(degraded)
	if degraded {
		s.log.Warn("store degraded: primary store failed, serving from local state", "err", cause)
	} else {
		s.log.Info("store recovered: serving from the primary store again")
	}
	if s.onChange != nil {
		s.onChange(degraded)
	}
}

// failed notes a failed primary call made for ctx. A call cut short by its own caller
// (canceled or past its deadline) says nothing about the primary.
func (s *Store) failed(ctx context.Context, op string, err error) {
	if ctx.Err() != nil {
		return
	}
	s.setDegraded(true, fmt.Errorf("%s: %w", op, err))
}

// Pick implements routing.Store. It never returns an error from the primary.
func (s *Store) Pick(ctx context.Context, req routing.PickRequest) (routing.Pick, error) {
	if !s.degraded.Load() {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		p, err := s.primary.Pick(pctx, req)
		cancel()
		if err == nil {
			s.mirrorPick(ctx, req, p)
			return p, nil
		}
		s.failed(ctx, "pick", err)
	}
	return s.local.Pick(ctx, req)
}

// mirrorPick reserves the primary's winner in the local store too: its count, last use and
// the session binding.
func (s *Store) mirrorPick(ctx context.Context, req routing.PickRequest, p routing.Pick) {
	if p.Account == "" {
		return
	}
	for _, c := range req.Candidates {
		if c.Name == p.Account {
			_, _ = s.local.Pick(ctx, routing.PickRequest{
				Candidates:  []routing.Candidate{c},
				Strategy:    req.Strategy,
				Session:     req.Session,
				AffinityTTL: req.AffinityTTL,
			})
			return
		}
	}
}

// Mark implements routing.Store: the mark goes to both stores. It never returns an error from
// the primary.
func (s *Store) Mark(ctx context.Context, m routing.Mark) error {
	if !s.degraded.Load() {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := s.primary.Mark(pctx, m)
		cancel()
		if err != nil {
			s.failed(ctx, "mark", err)
		}
	}
	return s.local.Mark(ctx, m)
}

// Bind implements routing.Store: the binding goes to both stores.
func (s *Store) Bind(ctx context.Context, session, account string, ttl time.Duration) error {
	if !s.degraded.Load() {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := s.primary.Bind(pctx, session, account, ttl)
		cancel()
		if err != nil {
			s.failed(ctx, "bind", err)
		}
	}
	return s.local.Bind(ctx, session, account, ttl)
}

// Record implements routing.Store: the usage goes to both stores. It never returns an error
// from the primary.
func (s *Store) Record(ctx context.Context, u routing.Usage) error {
	if !s.degraded.Load() {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := s.primary.Record(pctx, u)
		cancel()
		if err != nil {
			s.failed(ctx, "record", err)
		}
	}
	return s.local.Record(ctx, u)
}

// Stats implements routing.AdminStore: the primary's, or the local store's while degraded.
func (s *Store) Stats(ctx context.Context) (routing.Stats, error) {
	if !s.degraded.Load() {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		st, err := s.primary.Stats(pctx)
		cancel()
		if err == nil {
			return st, nil
		}
		s.failed(ctx, "stats", err)
	}
	return s.local.Stats(ctx)
}

// History implements routing.AdminStore: the primary's, or the local store's while degraded.
func (s *Store) History(ctx context.Context, q routing.HistoryQuery) ([]routing.Usage, error) {
	if !s.degraded.Load() {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		h, err := s.primary.History(pctx, q)
		cancel()
		if err == nil {
			return h, nil
		}
		s.failed(ctx, "history", err)
	}
	return s.local.History(ctx, q)
}

// ErrPrimaryNotReset is returned (wrapped) by ResetStats and ClearHistory when only the local
// store could be reset.
var ErrPrimaryNotReset = errors.New("the shared store did not answer; only this replica's local state was reset")

// ResetStats implements routing.AdminStore: it resets both stores. Unlike the request path it
// reports a primary failure (wrapping ErrPrimaryNotReset), since the shared counters were not
// reset; the local ones were.
func (s *Store) ResetStats(ctx context.Context) error {
	return s.resetBoth(ctx, "reset stats", Backend.ResetStats)
}

// ClearHistory implements routing.AdminStore like ResetStats.
func (s *Store) ClearHistory(ctx context.Context) error {
	return s.resetBoth(ctx, "clear history", Backend.ClearHistory)
}

func (s *Store) resetBoth(ctx context.Context, op string, reset func(Backend, context.Context) error) error {
	if err := reset(s.local, ctx); err != nil {
		return err
	}
	// Tried even while degraded: the operator asked for the shared state to be reset.
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	err := reset(s.primary, pctx)
	cancel()
	if err != nil {
		s.failed(ctx, op, err)
		return fmt.Errorf("%s: %w: %w", op, ErrPrimaryNotReset, err)
	}
	return nil
}
