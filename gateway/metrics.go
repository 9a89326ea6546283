package gateway

import (
	"context"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/claude-lb/claude-lb/routing"
)

// Metrics records the gateway's Prometheus series, all named claude_lb_…. Its recording
// methods run on the request path: they look up a labelled child and add to it, nothing more.
// Label values are bounded: model ids that do not look like claude-[a-z0-9.-]{1,60} count as
// "other", reasons that are not short tokens as "other", and an empty account or model as
// "none". A Metrics is safe for concurrent use.
type Metrics struct {
	gatherer prometheus.Gatherer

	requests        *prometheus.CounterVec   // model, account, status
	requestDuration *prometheus.HistogramVec // model
	requestAttempts prometheus.Histogram
	attempts        *prometheus.CounterVec   // account, reason
	upstream        *prometheus.HistogramVec // account
	tokens          *prometheus.CounterVec   // account, model, type
	cooldowns       *prometheus.CounterVec   // account, scope, reason
	reloads         *prometheus.CounterVec   // result
	reloadSuccess   prometheus.Gauge
	storeDegraded   prometheus.Gauge
	needsLogin      *prometheus.GaugeVec // account

	// models are the model labels in use; past maxModelLabels new ids count as "other".
	models     sync.Map // string -> struct{}
	modelCount atomic.Int32

	statsMu sync.Mutex // guards stats
	stats   func(ctx context.Context) (routing.Stats, error)
}

// Durations of LLM requests run from tens of milliseconds (count_tokens) to minutes (long
// streams); these buckets cover both ends.
var latencyBuckets = []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640}

// NewMetrics creates the gateway's metrics and registers them with reg. A nil reg gets a new
// registry of its own. Handler serves reg when it is also a Gatherer (a *prometheus.Registry
// is), else the default gatherer. Registering twice on one registry panics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_lb_requests_total",
			Help: "Requests answered by the gateway, by model, account that served the last attempt (none when no account was chosen) and HTTP status.",
		}, []string{"model", "account", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "claude_lb_request_duration_seconds",
			Help:    "Time from receiving a request to its last response byte, all attempts included, by model.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		requestAttempts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "claude_lb_request_attempts",
			Help:    "Upstream attempts (accounts tried) per request.",
			Buckets: []float64{1, 2, 3, 4, 5, 8},
		}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_lb_attempts_total",
			Help: "Upstream attempts by account and outcome (ok, 429, 529, 5xx, 401, 403, 4xx, network, timeout, ...).",
		}, []string{"account", "reason"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "claude_lb_upstream_duration_seconds",
			Help:    "Time from sending an attempt upstream to its response headers, by account.",
			Buckets: latencyBuckets,
		}, []string{"account"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_lb_tokens_total",
			Help: "Tokens reported by the upstream's usage blocks, by account, model and type (input, output, cache_read, cache_write).",
		}, []string{"account", "model", "type"}),
		cooldowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_lb_cooldowns_total",
			Help: "Cooldowns taken, by account, scope (account, family:NAME, cred) and reason.",
		}, []string{"account", "scope", "reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claude_lb_config_reloads_total",
			Help: "Config loads and reloads by result (success, failure).",
		}, []string{"result"}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "claude_lb_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful config load.",
		}),
		storeDegraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "claude_lb_store_degraded",
			Help: "1 while the shared store is unavailable and the gateway serves from local state.",
		}),
		needsLogin: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "claude_lb_account_needs_login",
			Help: "1 while an OAuth account's refresh token was rejected and it needs `claude-lb login`.",
		}, []string{"account"}),
	}
	version := "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "claude_lb_build_info",
		Help: "Always 1; the labels tell the build.",
	}, []string{"version", "go_version"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	// Both results exist from the start, so rate() and alerts see a zero, not a gap.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")

	reg.MustRegister(m.requests, m.requestDuration, m.requestAttempts, m.attempts, m.upstream,
		m.tokens, m.cooldowns, m.reloads, m.reloadSuccess, m.storeDegraded, m.needsLogin, build,
		(*activeCooldowns)(m))
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	} else {
		m.gatherer = prometheus.DefaultGatherer
	}
	return m
}

// Handler serves the metrics in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// Request counts one answered request: its model as sent, the account of its last attempt
// ("" when none was chosen), the status the client got, how many attempts it took and its
// duration.
func (m *Metrics) Request(model, account string, status int, attempts int, d time.Duration) {
	model = m.modelLabel(model)
	m.requests.WithLabelValues(model, orNone(account), statusLabel(status)).Inc()
	m.requestDuration.WithLabelValues(model).Observe(d.Seconds())
	if attempts > 0 {
		m.requestAttempts.Observe(float64(attempts))
	}
}

// Attempt counts one upstream attempt on account with its outcome: a short token such as ok,
// 429, 529, 5xx, 401, 403, 4xx, network or timeout.
func (m *Metrics) Attempt(account, reason string) {
	m.attempts.WithLabelValues(orNone(account), tokenLabel(reason)).Inc()
}

// Upstream observes the time one attempt on account took to get response headers.
func (m *Metrics) Upstream(account string, d time.Duration) {
	m.upstream.WithLabelValues(orNone(account)).Observe(d.Seconds())
}

// Tokens adds one request's token usage.
func (m *Metrics) Tokens(account, model string, in, out, cacheRead, cacheWrite int64) {
	account, model = orNone(account), m.modelLabel(model)
	add := func(typ string, n int64) {
		if n > 0 {
			m.tokens.WithLabelValues(account, model, typ).Add(float64(n))
		}
	}
	add("input", in)
	add("output", out)
	add("cache_read", cacheRead)
	add("cache_write", cacheWrite)
}

// Cooldown counts a cooldown (or a bench, an invalid-credential mark) taken on account. scope
// is the mark scope: "" (the whole account), "family:NAME" or "cred:…"; reason a short token.
func (m *Metrics) Cooldown(account, scope, reason string) {
	m.cooldowns.WithLabelValues(orNone(account), m.scopeLabel(scope), tokenLabel(reason)).Inc()
}

// Reload counts a config load by result; a success also sets the last-success time.
func (m *Metrics) Reload(ok bool, at time.Time) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.reloadSuccess.Set(float64(at.UnixNano()) / 1e9)
}

// StoreDegraded sets whether the store serves from local state.
func (m *Metrics) StoreDegraded(degraded bool) {
	m.storeDegraded.Set(b2f(degraded))
}

// NeedsLogin sets whether an OAuth account needs a new login.
func (m *Metrics) NeedsLogin(account string, needs bool) {
	m.needsLogin.WithLabelValues(orNone(account)).Set(b2f(needs))
}

// ForgetAccount drops an account's needs-login series, for accounts a reload removed.
func (m *Metrics) ForgetAccount(account string) {
	m.needsLogin.DeleteLabelValues(account)
}

// SetStatsSource makes every scrape report claude_lb_cooldowns_active{account,scope} (hard
// marks in force) and claude_lb_account_near_limit{account} (soft marks) from the store, read
// with a short deadline. Pass the AdminStore's Stats method; nil turns both series off.
func (m *Metrics) SetStatsSource(stats func(ctx context.Context) (routing.Stats, error)) {
	m.statsMu.Lock()
	m.stats = stats
	m.statsMu.Unlock()
}

// activeCooldowns is the scrape-time collector behind SetStatsSource.
type activeCooldowns Metrics

var (
	activeDesc = prometheus.NewDesc("claude_lb_cooldowns_active",
		"Cooldowns in force now (hard marks), by account and scope.", []string{"account", "scope"}, nil)
	nearLimitDesc = prometheus.NewDesc("claude_lb_account_near_limit",
		"1 while the upstream reports an account near its limit (it is used last).", []string{"account"}, nil)
)

func (c *activeCooldowns) Describe(ch chan<- *prometheus.Desc) {
	ch <- activeDesc
	ch <- nearLimitDesc
}

func (c *activeCooldowns) Collect(ch chan<- prometheus.Metric) {
	c.statsMu.Lock()
	stats := c.stats
	c.statsMu.Unlock()
	if stats == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := stats(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	for name, as := range st.Accounts {
		hard := map[string]float64{}
		soft := false
		for _, mk := range as.Marks {
			if !mk.Until.After(now) {
				continue
			}
			if mk.Soft {
				soft = true
				continue
			}
			hard[(*Metrics)(c).scopeLabel(mk.Scope)]++
		}
		for scope, n := range hard {
			ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, n, name, scope)
		}
		if soft {
			ch <- prometheus.MustNewConstMetric(nearLimitDesc, prometheus.GaugeValue, 1, name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// maxModelLabels bounds the distinct model ids the metrics carry.
const maxModelLabels = 200

// modelLabel caps the model label's cardinality: clients choose model ids, so only ids shaped
// like claude-[a-z0-9.-]{1,60} are kept, and only the first maxModelLabels distinct ones;
// anything else is "other".
func (m *Metrics) modelLabel(model string) string {
	if model == "" {
		return "none"
	}
	if !validModelID(model) {
		return "other"
	}
	if _, ok := m.models.Load(model); ok {
		return model
	}
	if m.modelCount.Load() >= maxModelLabels {
		return "other"
	}
	if _, loaded := m.models.LoadOrStore(model, struct{}{}); !loaded {
		m.modelCount.Add(1)
	}
	return model
}

func validModelID(model string) bool {
	const prefix = "claude-"
	if len(model) <= len(prefix) || len(model) > len(prefix)+60 || !strings.HasPrefix(model, prefix) {
		return false
	}
	for i := len(prefix); i < len(model); i++ {
		c := model[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// tokenLabel keeps short lowercase tokens ([a-z0-9_.:-]{1,40}) and turns anything else into
// "other", so that a reason carrying free text cannot grow the series without bound.
func tokenLabel(s string) string {
	if s == "" {
		return "none"
	}
	if len(s) > 40 {
		return "other"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return "other"
		}
	}
	return s
}

// scopeLabel maps a mark scope to a bounded label: "" is "account", "cred:…" is "cred" (the
// fingerprint changes with each credential), "family:NAME" stays when NAME is a family or a
// model id the model labels keep, else "family:other".
func (m *Metrics) scopeLabel(scope string) string {
	switch {
	case scope == "":
		return "account"
	case strings.HasPrefix(scope, "cred:"):
		return "cred"
	case strings.HasPrefix(scope, "family:"):
		switch f := scope[len("family:"):]; f {
		case "opus", "sonnet", "haiku":
			return scope
		default:
			if m == nil || m.modelLabel(f) == "other" {
				return "family:other"
			}
			return scope
		}
	}
	return "other"
}

// statusCodes holds the decimal form of every HTTP status, so the hot path does not format one.
var statusCodes = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusLabel(status int) string {
	if status >= 0 && status < len(statusCodes) {
		return statusCodes[status]
	}
	return "other"
}
