// Package gateway is claude-lb's HTTP side: the proxy for /v1/ with its retry transport, the
// SSE relay and usage tap, client authentication, health endpoints, and the mounting of the
// admin API, dashboard and metrics. It reads config only through immutable Snapshots.
package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/h1"
	"github.com/claude-lb/claude-lb/routing"
)

// Observer receives the gateway's measurements; *Metrics implements it. Calls happen on the
// request path and must be cheap.
type Observer interface {
	Request(model, account string, status int, attempts int, d time.Duration)
	Attempt(account, reason string)
	Upstream(account string, d time.Duration)
	Tokens(account, model string, in, out, cacheRead, cacheWrite int64)
	Cooldown(account, scope, reason string)
}

// TokenSource supplies access tokens for oauth_file accounts (the oauth package's Manager).
type TokenSource interface {
	// Token returns a valid access token, refreshing first when it is about to expire.
	Token(ctx context.Context, account string) (string, error)
	// Invalidate reports that the upstream rejected token (401), so it is refreshed.
	Invalidate(ctx context.Context, account, token string)
	// State is valid, refreshing, needs-login or error.
	State(account string) string
}

// Options wires a Gateway.
type Options struct {
	// Store holds usage, cooldowns and affinity; AdminStore is the same store's admin side.
	Store      routing.Store
	AdminStore routing.AdminStore
	Logger     *slog.Logger
	// Observer records metrics; nil records nothing.
	Observer Observer
	// Metrics serves /metrics; nil serves 404.
	Metrics http.Handler
	// Tokens supplies oauth_file access tokens; nil makes those accounts unusable.
	Tokens TokenSource
	// Transport sends upstream requests; nil uses a tuned http.Transport.
	Transport http.RoundTripper
	// Replica names this process in history and the admin API.
	Replica string
	// Degraded reports whether the store is serving from local state.
	Degraded func() bool
	// Reload re-reads the config file (POST /api/reload); nil when unsupported.
	Reload func(ctx context.Context) error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// FlushBeforeRecord sends a plain answer's last bytes to the client before the usage is
	// recorded, so a store that costs a network round trip (Redis) does not delay the client.
	// Off, the store holds the usage by the time the client has the answer (tests rely on it).
	FlushBeforeRecord bool
}

// Gateway is the http.Handler of a running claude-lb.
type Gateway struct {
	opts     Options
	log      *slog.Logger
	obs      Observer
	snap     atomic.Pointer[Snapshot]
	client   *retryablehttp.Client
	mux      *http.ServeMux
	now      func() time.Time
	failures failureCounter
	idlePing time.Duration // tests shorten it
}

// New builds a gateway serving cfg.
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	g := &Gateway{opts: opts, log: opts.Logger, obs: opts.Observer, now: opts.Now, idlePing: defaultIdlePing}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.obs == nil {
		g.obs = nopObserver{}
	}
	if g.now == nil {
		g.now = time.Now
	}
	if err := g.Swap(cfg); err != nil {
		return nil, err
	}
	rt := opts.Transport
	if rt == nil {
		rt = NewTransport(cfg.Upstream)
	}
	g.client = g.newRetryClient(rt)
	g.routes()
	return g, nil
}

// Transport is what the gateway needs of its upstream transport.
type Transport interface {
	http.RoundTripper
	CloseIdleConnections()
}

// NewTransport returns the upstream transport: pooled keep-alive connections, per-attempt
// connect and header timeouts, and no overall client timeout (streams may run long).
//
// It is h1's HTTP/1.1 transport, which runs each exchange on the request's goroutine (see
// docs/performance.md: a fifth less CPU and latency per request, a third less memory per
// open stream than net/http's), unless a proxy from the
// environment (HTTPS_PROXY, HTTP_PROXY) applies to the upstream, upstream.http2 asks for
// HTTP/2, or the system cannot check idle connections (h1.Supported): then net/http's.
func NewTransport(u config.Upstream) Transport {
	if !u.HTTP2 && h1.Supported() && proxyFor(u.URL) == nil {
		return &h1.Transport{
			DialTimeout:           u.ConnectTimeout,
			ResponseHeaderTimeout: u.HeaderTimeout,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   512,
		}
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: u.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   u.ConnectTimeout,
		ResponseHeaderTimeout: u.HeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// proxyFor is the proxy the environment sets for the upstream URL, nil for none.
func proxyFor(upstream string) *url.URL {
	req, err := http.NewRequest(http.MethodPost, upstream, nil)
	if err != nil {
		return nil
	}
	p, _ := http.ProxyFromEnvironment(req)
	return p
}

// Swap publishes a new config; requests in flight finish on the snapshot they started with.
func (g *Gateway) Swap(cfg *config.Config) error {
	s, err := NewSnapshot(cfg, g.now())
	if err != nil {
		return err
	}
	g.snap.Store(s)
	return nil
}

// Snapshot returns the config snapshot currently serving.
func (g *Gateway) Snapshot() *Snapshot { return g.snap.Load() }

func (g *Gateway) routes() {
	m := http.NewServeMux()
	m.HandleFunc("/v1/", g.proxy)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	m.HandleFunc("GET /readyz", g.readyz)
	if g.opts.Metrics != nil {
		m.Handle("GET /metrics", g.opts.Metrics)
	}
	m.Handle("/api/", g.admin())
	m.Handle("/dashboard", g.dashboard())
	m.Handle("/dashboard/", g.dashboard())
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			http.Redirect(w, r, "/dashboard", http.StatusFound)
			return
		}
		writeError(w, http.StatusNotFound, "not_found_error", "claude-lb serves /v1/…, /healthz, /readyz, /metrics, /dashboard and /api/; not "+r.URL.Path)
	})
	g.mux = m
}

// ServeHTTP routes a request. /v1/ goes straight to the proxy, skipping the mux.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; len(p) > 4 && p[:4] == "/v1/" {
		g.proxy(w, r)
		return
	}
	g.mux.ServeHTTP(w, r)
}

func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	s := g.Snapshot()
	usable := 0
	for _, a := range s.Accounts {
		if a.Disabled {
			continue
		}
		if a.kind == config.CredOAuthFile && (g.opts.Tokens == nil || g.opts.Tokens.State(a.Name) == "needs-login") {
			continue
		}
		usable++
	}
	degraded := g.opts.Degraded != nil && g.opts.Degraded()
	body := map[string]any{
		"ready":           usable > 0,
		"accounts":        len(s.Accounts),
		"usable_accounts": usable,
		"store_degraded":  degraded,
		"config_hash":     s.Config.Hash,
		"config_loaded":   s.LoadedAt.UTC().Format(time.RFC3339Nano),
		"replica":         g.opts.Replica,
	}
	w.Header().Set("Content-Type", "application/json")
	if usable == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

type nopObserver struct{}

func (nopObserver) Request(string, string, int, int, time.Duration)   {}
func (nopObserver) Attempt(string, string)                            {}
func (nopObserver) Upstream(string, time.Duration)                    {}
func (nopObserver) Tokens(string, string, int64, int64, int64, int64) {}
func (nopObserver) Cooldown(string, string, string)                   {}
