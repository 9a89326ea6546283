package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/gateway"
	"github.com/claude-lb/claude-lb/oauth"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/fallback"
	"github.com/claude-lb/claude-lb/store/memory"
	redisstore "github.com/claude-lb/claude-lb/store/redis"
)

// storeAll is a store with both its routing and admin sides.
type storeAll interface {
	routing.Store
	routing.AdminStore
}

// app is one running gateway process: its store, metrics, gateway and reload loop.
type app struct {
	path      string
	log       *slog.Logger
	gw        *gateway.Gateway
	metrics   *gateway.Metrics
	store     storeAll
	storeKind string
	replica   string
	closers   []func()
	tokens    *oauth.Manager

	env       func(string) (string, bool)
	ctx       context.Context // the process's lifetime
	reloadReq chan chan error // admin reload requests, answered by the reload loop
	listen    string          // the address served since start; a reload cannot move it
	mu        sync.Mutex      // guards cfg
	cfg       *config.Config
}

func newApp(ctx context.Context, cfg *config.Config, path string, log *slog.Logger, env func(string) (string, bool)) (*app, error) {
	a := &app{path: path, log: log, cfg: cfg, env: env, ctx: ctx, reloadReq: make(chan chan error)}
	a.listen, _ = cfg.ListenAddr(env)
	a.replica = cfg.Replica
	if a.replica == "" {
		a.replica = hostname()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = gateway.NewMetrics(reg)

	local := memory.New(memory.Options{HistorySize: cfg.History.Size})
	var tokens oauth.TokenStore = oauth.NewMemoryTokenStore()
	a.store, a.storeKind = local, "memory"
	var degraded func() bool
	if r := cfg.Store.Redis; r != nil {
		// go-redis logs every failed dial through a global logger; the fallback store already
		// logs each transition once, so its lines go to debug.
		redis.SetLogger(redisLogger{log})
		client, err := redisstore.NewClient(r)
		if err != nil {
			return nil, fmt.Errorf("store.redis: %w", err)
		}
		primary := redisstore.New(client, redisstore.Options{Prefix: r.Prefix, HistorySize: cfg.History.Size, Timeout: r.Timeout})
		fb := fallback.New(primary, local, fallback.Options{
			Logger:   log,
			OnChange: func(d bool) { a.metrics.StoreDegraded(d) },
			Timeout:  r.Timeout,
		})
		a.goRun(ctx, fb.Run)
		a.closers = append(a.closers, func() { _ = client.Close() })
		a.store, a.storeKind, degraded = fb, "redis", fb.Degraded
		var key []byte
		if k := cfg.Store.EncryptionKey.Reveal(); k != "" {
			sum := sha256.Sum256([]byte(k))
			key = sum[:]
		}
		tokens = oauth.NewRedisTokenStore(client, r.Prefix, key)
	}
	a.tokens = oauth.NewManager(oauth.ManagerOptions{
		Config: func() config.OAuth { return a.current().OAuth },
		Store:  tokens,
		Logger: log,
		OnState: func(account, state string) {
			a.metrics.NeedsLogin(account, state == oauth.StateNeedsLogin)
		},
	})
	a.tokens.SetAccounts(ctx, fileAccounts(cfg))
	a.goRun(ctx, a.tokens.Run)

	gw, err := gateway.New(cfg, gateway.Options{
		Store:      a.store,
		AdminStore: a.store,
		Logger:     log,
		Observer:   a.metrics,
		Metrics:    a.metrics.Handler(),
		Replica:    a.replica,
		Degraded:   degraded,
		Reload:     a.requestReload,
		Tokens:     a.tokens,
		// With Redis the usage record is a round trip: the client need not wait for it.
		FlushBeforeRecord: a.storeKind == "redis",
	})
	if err != nil {
		return nil, err
	}
	a.gw = gw
	a.metrics.SetStatsSource(a.store.Stats)
	a.metrics.Reload(true, time.Now())
	return a, nil
}

// goRun runs f until ctx ends; close waits for it.
func (a *app) goRun(ctx context.Context, f func(context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("background task stopped", "err", err)
		}
	}()
	a.closers = append(a.closers, func() { cancel(); <-done })
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.Debug("redis: " + fmt.Sprintf(format, v...))
	}
}

func fileAccounts(cfg *config.Config) []oauth.FileAccount {
	var out []oauth.FileAccount
	for _, x := range cfg.Accounts {
		if x.OAuthFile != "" {
			out = append(out, oauth.FileAccount{Name: x.Name, File: x.OAuthFile})
		}
	}
	return out
}

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

func (a *app) current() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// requestReload asks the reload loop to re-read the file and waits for the outcome.
func (a *app) requestReload(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case a.reloadReq <- reply:
	case <-ctx.Done():
		return ctx.Err()
	case <-a.ctx.Done():
		return errors.New("shutting down")
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reloads is the one goroutine that applies config changes: file events, SIGHUP and admin
// requests all come here, so reloads never overlap.
func (a *app) reloads(ctx context.Context, hup <-chan os.Signal, watch bool) {
	changed := make(chan struct{}, 1)
	if watch {
		go func() {
			err := config.Watch(ctx, a.path, config.WatchOptions{Logger: a.log, LoadedHash: a.current().Hash, Debounce: 25 * time.Millisecond}, func() {
				select {
				case changed <- struct{}{}:
				default:
				}
			})
			if err != nil && ctx.Err() == nil {
				a.log.Error("config watch stopped; SIGHUP still reloads", "err", err)
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = a.reload("SIGHUP")
		case <-changed:
			_ = a.reload("file changed")
		case reply := <-a.reloadReq:
			reply <- a.reload("admin API")
		}
	}
}

// reload parses and validates the whole file, then swaps the snapshot; a bad file keeps the
// old one serving.
func (a *app) reload(why string) error {
	start := time.Now()
	cfg, err := config.LoadWith(a.path, config.Options{CheckEnv: true, Env: a.env})
	if err == nil {
		err = checkStillGuarded(a.listen, cfg)
	}
	if err == nil {
		err = a.gw.Swap(cfg)
	}
	if err != nil {
		a.metrics.Reload(false, start)
		a.log.Error("config rejected; the previous config keeps serving", "trigger", why, "file", a.path, "err", err)
		return err
	}
	a.mu.Lock()
	old := a.cfg
	a.cfg = cfg
	a.mu.Unlock()
	a.metrics.Reload(true, time.Now())
	a.tokens.SetAccounts(context.Background(), fileAccounts(cfg))
	added, removed := diffAccounts(old, cfg)
	for _, k := range restartOnly(old, cfg) {
		a.log.Warn("config change takes effect only after a restart", "key", k)
	}
	a.log.Info("config reloaded", "trigger", why, "hash", cfg.Hash[:12], "accounts", len(cfg.Accounts),
		"added", added, "removed", removed, "took", time.Since(start))
	for _, name := range removed {
		a.metrics.ForgetAccount(name)
	}
	for _, w := range cfg.Warnings {
		a.log.Warn("config warning", "warning", w)
	}
	return nil
}

// checkStillGuarded applies DESIGN.md section 8 to the address actually served: listen takes
// effect only at start, so a reload that drops clients (and moves listen to loopback) must not
// leave a gateway that other machines reach without keys.
func checkStillGuarded(served string, cfg *config.Config) error {
	host, _, err := net.SplitHostPort(served)
	if err != nil || len(cfg.Clients) > 0 || cfg.AllowUnauthenticated {
		return nil
	}
	if config.IsLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("this gateway serves %s, reachable from other machines (listen changes only on restart), "+
		"and the new config has no clients; keep clients, or set allow_unauthenticated: true", served)
}

// restartOnly names the changed settings that a running process does not apply.
func restartOnly(old, cur *config.Config) []string {
	var out []string
	if old.Listen != cur.Listen {
		out = append(out, "listen")
	}
	if fmt.Sprintf("%+v", old.Store.Redis) != fmt.Sprintf("%+v", cur.Store.Redis) || old.Store.EncryptionKey != cur.Store.EncryptionKey {
		out = append(out, "store")
	}
	if old.History.Size != cur.History.Size {
		out = append(out, "history.size")
	}
	if old.Watch != cur.Watch {
		out = append(out, "watch")
	}
	if old.Log != cur.Log {
		out = append(out, "log")
	}
	if old.Replica != cur.Replica {
		out = append(out, "replica")
	}
	// The transport is built once; the upstream URL and the overall timeout are per request.
	if old.Upstream.ConnectTimeout != cur.Upstream.ConnectTimeout {
		out = append(out, "upstream.connect_timeout")
	}
	if old.Upstream.HeaderTimeout != cur.Upstream.HeaderTimeout {
		out = append(out, "upstream.header_timeout")
	}
	if old.Upstream.HTTP2 != cur.Upstream.HTTP2 {
		out = append(out, "upstream.http2")
	}
	return out
}

func diffAccounts(old, cur *config.Config) (added, removed []string) {
	had := map[string]bool{}
	for _, x := range old.Accounts {
		had[x.Name] = true
	}
	for _, x := range cur.Accounts {
		if !had[x.Name] {
			added = append(added, x.Name)
		}
		delete(had, x.Name)
	}
	for _, x := range old.Accounts {
		if had[x.Name] {
			removed = append(removed, x.Name)
		}
	}
	return added, removed
}
