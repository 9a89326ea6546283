package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/routing"
)

// AdminOptions wires the admin API to the running gateway. Every func is called per request,
// so it must read the current snapshot, not a copy taken at start.
type AdminOptions struct {
	// Store is the admin side of the routing store (counters, marks, history).
	Store routing.AdminStore
	// Accounts returns the current snapshot's accounts in config order.
	Accounts func() []AccountInfo
	// Config describes the current snapshot.
	Config func() ConfigInfo
	// Key returns the current admin key; "" lets only loopback clients in.
	Key func() config.Secret
	// Reload re-reads the config (POST /api/reload); nil answers 501.
	Reload func(ctx context.Context) error
	// Replica names this process.
	Replica string
	// Degraded reports whether the store serves from local state; nil means never.
	Degraded func() bool
	// Logger gets one line per state-changing call; nil discards.
	Logger *slog.Logger
	// Now is the clock for cooldown countdowns; nil is time.Now.
	Now func() time.Time
}

// AccountInfo describes one configured account without its secret.
type AccountInfo struct {
	Name string `json:"name"`
	Plan string `json:"plan"`
	// Models are the globs this account may serve: its own list or its plan's rules.
	Models      []string `json:"models"`
	OpusCapable bool     `json:"opus_capable"`
	// Credential is the kind: api_key, oauth_token or oauth_file.
	Credential string `json:"credential"`
	// Fingerprint identifies the credential, such as "…4f3a"; never the secret.
	Fingerprint string `json:"fingerprint"`
	// TokenState: valid, invalid, needs-login, expired, refreshing, error.
	TokenState string `json:"token_state"`
	Disabled   bool   `json:"disabled,omitempty"`
	Weight     int    `json:"weight"`
	Priority   int    `json:"priority"`
	// CredScope is the mark scope of the current credential (routing.Candidate.CredScope). When
	// set, invalid-credential marks of an older credential are not shown; when empty, all are.
	CredScope string `json:"-"`
}

// ConfigInfo describes the config snapshot in use.
type ConfigInfo struct {
	Path     string    `json:"path"`
	Hash     string    `json:"hash"`
	LoadedAt time.Time `json:"loaded_at"`
	Accounts int       `json:"accounts"`
}

// Counters are an account's (or the pool's) usage counters.
type Counters struct {
	Requests            int64 `json:"requests"`
	Errors              int64 `json:"errors"`
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_tokens"`
}

func (c *Counters) add(s routing.AccountStats) {
	c.Requests += s.Requests
	c.Errors += s.Errors
	c.InputTokens += s.InputTokens
	c.OutputTokens += s.OutputTokens
	c.CacheReadTokens += s.CacheReadTokens
	c.CacheCreationTokens += s.CacheCreationTokens
}

// Cooldown is a mark in force on an account.
type Cooldown struct {
	// Scope: "account" (the whole account), "family:NAME" (one model family) or "credential".
	Scope  string    `json:"scope"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
	// SecondsLeft is rounded up, so a mark in force never shows 0.
	SecondsLeft int64 `json:"seconds_left"`
	// Soft marks only send the account to the back of the line (near its limit).
	Soft bool `json:"soft,omitempty"`
}

// AccountState is an account with its live state, as GET /api/accounts lists it.
type AccountState struct {
	AccountInfo
	Counters
	LastUsed time.Time `json:"last_used,omitzero"`
	// Status sums it up: ok, near-limit, cooling, disabled, or the token state when it is bad
	// (invalid, needs-login, expired, error).
	Status    string     `json:"status"`
	Cooldowns []Cooldown `json:"cooldowns"`
}

// AccountsResponse is the body of GET /api/accounts.
type AccountsResponse struct {
	Replica  string         `json:"replica"`
	Degraded bool           `json:"degraded"`
	Now      time.Time      `json:"now"`
	Config   ConfigInfo     `json:"config"`
	Accounts []AccountState `json:"accounts"`
}

// AccountCounters are one account's counters in GET /api/stats.
type AccountCounters struct {
	Name string `json:"name"`
	// Configured is false for accounts the store still counts but the config no longer has.
	Configured bool `json:"configured"`
	Counters
	LastUsed  time.Time  `json:"last_used,omitzero"`
	Cooldowns []Cooldown `json:"cooldowns,omitempty"`
}

// Outcomes counts successes (2xx without a stream error) and failures among recent requests.
type Outcomes struct {
	Success int64 `json:"success"`
	Failure int64 `json:"failure"`
	// SuccessRate is Success/(Success+Failure), 0 when there were none.
	SuccessRate float64 `json:"success_rate"`
}

func (o *Outcomes) count(u *routing.Usage) {
	if u.Status >= 200 && u.Status < 300 && u.Error == "" {
		o.Success++
	} else {
		o.Failure++
	}
}

func (o *Outcomes) finish() {
	if n := o.Success + o.Failure; n > 0 {
		o.SuccessRate = float64(o.Success) / float64(n)
	}
}

// ModelStats is one model's counts in GET /api/stats.
type ModelStats struct {
	Model string `json:"model"`
	// Requests since the last reset (all replicas, from the store).
	Requests int64 `json:"requests"`
	// Recent are the outcomes among the requests still in the history.
	Recent Outcomes `json:"recent"`
}

// StatsResponse is the body of GET /api/stats.
type StatsResponse struct {
	Replica  string     `json:"replica"`
	Degraded bool       `json:"degraded"`
	Now      time.Time  `json:"now"`
	Config   ConfigInfo `json:"config"`
	// Totals add up every account's counters.
	Totals   Counters          `json:"totals"`
	Accounts []AccountCounters `json:"accounts"`
	Models   []ModelStats      `json:"models"`
	// Opus sums the models of the opus family: requests since the last reset and the outcomes
	// of the recent ones.
	Opus struct {
		Requests int64 `json:"requests"`
		Outcomes
	} `json:"opus"`
	// Window is how many history entries the recent outcomes were counted over.
	Window int `json:"window"`
}

// HistoryEntry is one request in GET /api/history.
type HistoryEntry struct {
	routing.Usage
	LatencyMS float64 `json:"latency_ms"`
}

// HistoryResponse is the body of GET /api/history.
type HistoryResponse struct {
	Replica string         `json:"replica"`
	Limit   int            `json:"limit"`
	Offset  int            `json:"offset"`
	More    bool           `json:"more"`
	Entries []HistoryEntry `json:"entries"`
}

// History paging bounds.
const (
	defaultHistoryLimit = 50
	maxHistoryLimit     = 1000
	// statsWindow is how many history entries /api/stats reads for success rates.
	statsWindow = 1000
)

type admin struct {
	o    AdminOptions
	log  *slog.Logger
	now  func() time.Time
	csrf *http.CrossOriginProtection
}

// NewAdmin returns the admin API, to be mounted at /api/. With a key set, each request must
// carry it as "Authorization: Bearer KEY" or "x-api-key: KEY"; without one, only clients on a
// loopback address, not relayed by a proxy, get in. State-changing calls from another origin's
// web page are refused. Errors use Anthropic's shape. No response ever holds a credential.
func NewAdmin(o AdminOptions) http.Handler {
	a := &admin{o: o, log: o.Logger, now: o.Now, csrf: http.NewCrossOriginProtection()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a
}

func (a *admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !a.authorize(w, r) {
		return
	}
	type route struct {
		method string
		h      func(http.ResponseWriter, *http.Request)
	}
	var rt route
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/api/accounts":
		rt = route{http.MethodGet, a.accounts}
	case "/api/stats":
		rt = route{http.MethodGet, a.stats}
	case "/api/stats/reset":
		rt = route{http.MethodPost, a.resetStats}
	case "/api/history":
		if r.Method == http.MethodDelete {
			rt = route{http.MethodDelete, a.clearHistory}
		} else {
			rt = route{http.MethodGet, a.history}
		}
	case "/api/reload":
		rt = route{http.MethodPost, a.reload}
	default:
		adminError(w, http.StatusNotFound, "not_found_error",
			"no admin endpoint "+r.URL.Path+"; see GET /api/accounts, /api/stats, /api/history, POST /api/stats/reset, /api/reload, DELETE /api/history")
		return
	}
	if r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead) {
		allow := rt.method
		if r.URL.Path == "/api/history" {
			allow = "GET, HEAD, DELETE"
		} else if rt.method == http.MethodGet {
			allow = "GET, HEAD"
		}
		w.Header().Set("Allow", allow)
		adminError(w, http.StatusMethodNotAllowed, "invalid_request_error", r.Method+" is not allowed on "+r.URL.Path+"; use "+allow)
		return
	}
	if a.o.Store == nil {
		adminError(w, http.StatusServiceUnavailable, "api_error", "this gateway has no store to report from")
		return
	}
	if err := a.csrf.Check(r); err != nil {
		adminError(w, http.StatusForbidden, "permission_error", "cross-origin request refused: the admin API only takes state changes from its own dashboard or from non-browser clients")
		return
	}
	rt.h(w, r)
}

// authorize checks the admin key, or the loopback rule when no key is set.
func (a *admin) authorize(w http.ResponseWriter, r *http.Request) bool {
	var key config.Secret
	if a.o.Key != nil {
		key = a.o.Key()
	}
	if key == "" {
		if !loopbackClient(r) {
			adminError(w, http.StatusForbidden, "permission_error",
				"the admin API answers only loopback clients when admin.key is not set; set admin.key to reach it from elsewhere or through a proxy")
			return false
		}
		return true
	}
	got := r.Header.Get("x-api-key")
	if auth := r.Header.Get("Authorization"); got == "" && len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		got = strings.TrimSpace(auth[7:])
	}
	// Hashing first makes the comparison constant-time in the key's length too.
	want, have := sha256.Sum256([]byte(key.Reveal())), sha256.Sum256([]byte(got))
	if got == "" || subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="claude-lb admin"`)
		msg := "the admin API needs the admin key (admin.key) as Authorization: Bearer KEY or x-api-key: KEY"
		if got != "" {
			msg = "the admin key sent is not this gateway's admin.key"
		}
		a.log.Info("admin request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", "bad admin key")
		adminError(w, http.StatusUnauthorized, "authentication_error", msg)
		return false
	}
	return true
}

// loopbackClient reports whether r comes straight from this machine: a loopback address (or
// a unix socket), and no proxy header saying it was relayed for someone else.
func loopbackClient(r *http.Request) bool {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return true // unix socket: the file's permissions guard it
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (a *admin) degraded() bool { return a.o.Degraded != nil && a.o.Degraded() }

func (a *admin) configInfo() ConfigInfo {
	if a.o.Config == nil {
		return ConfigInfo{}
	}
	return a.o.Config()
}

func (a *admin) accountInfos() []AccountInfo {
	if a.o.Accounts == nil {
		return nil
	}
	return a.o.Accounts()
}

func (a *admin) accounts(w http.ResponseWriter, r *http.Request) {
	st, err := a.o.Store.Stats(r.Context())
	if err != nil {
		a.storeError(w, "read account stats", err)
		return
	}
	now := a.now()
	resp := AccountsResponse{Replica: a.o.Replica, Degraded: a.degraded(), Now: now, Config: a.configInfo()}
	infos := a.accountInfos()
	resp.Accounts = make([]AccountState, 0, len(infos))
	for _, info := range infos {
		s := st.Accounts[info.Name]
		as := AccountState{AccountInfo: info, LastUsed: s.LastUsed}
		as.Models = nonNil(as.Models)
		as.Counters.add(s)
		as.Cooldowns = cooldowns(s.Marks, info.CredScope, now)
		as.TokenState, as.Status = accountStatus(info, as.Cooldowns)
		resp.Accounts = append(resp.Accounts, as)
	}
	writeAdminJSON(w, http.StatusOK, resp)
}

// cooldowns turns the marks in force into their public form. Marks of a credential other than
// the current one (credScope, when known) no longer apply and are left out.
func cooldowns(marks []routing.Mark, credScope string, now time.Time) []Cooldown {
	out := []Cooldown{}
	for _, m := range marks {
		if !m.Until.After(now) {
			continue
		}
		scope := m.Scope
		switch {
		case scope == "":
			scope = "account"
		case strings.HasPrefix(scope, "cred:"):
			if credScope != "" && scope != credScope {
				continue
			}
			scope = "credential"
		}
		left := m.Until.Sub(now)
		out = append(out, Cooldown{
			Scope: scope, Reason: m.Reason, Until: m.Until.UTC(), Soft: m.Soft,
			SecondsLeft: int64((left + time.Second - 1) / time.Second),
		})
	}
	slices.SortStableFunc(out, func(x, y Cooldown) int {
		if x.Soft != y.Soft {
			if x.Soft {
				return 1
			}
			return -1
		}
		return x.Until.Compare(y.Until)
	})
	return out
}

// accountStatus returns the token state (a credential mark in force makes it invalid) and the
// one-word status of an account.
func accountStatus(info AccountInfo, cds []Cooldown) (tokenState, status string) {
	tokenState = info.TokenState
	if tokenState == "" {
		tokenState = "valid"
	}
	hard, soft := false, false
	for _, c := range cds {
		if c.Soft {
			soft = true
			continue
		}
		hard = true
		if c.Scope == "credential" && tokenState == "valid" {
			tokenState = "invalid"
		}
	}
	switch {
	case info.Disabled:
		status = "disabled"
	case tokenState != "valid" && tokenState != "refreshing":
		status = tokenState
	case hard:
		status = "cooling"
	case soft:
		status = "near-limit"
	default:
		status = "ok"
	}
	return tokenState, status
}

func (a *admin) stats(w http.ResponseWriter, r *http.Request) {
	st, err := a.o.Store.Stats(r.Context())
	if err != nil {
		a.storeError(w, "read stats", err)
		return
	}
	recent, err := a.o.Store.History(r.Context(), routing.HistoryQuery{Limit: statsWindow})
	if err != nil {
		a.storeError(w, "read history", err)
		return
	}
	now := a.now()
	resp := StatsResponse{Replica: a.o.Replica, Degraded: a.degraded(), Now: now, Config: a.configInfo(), Window: len(recent)}

	infos := a.accountInfos()
	seen := make(map[string]bool, len(infos))
	resp.Accounts = []AccountCounters{}
	for _, info := range infos {
		seen[info.Name] = true
		resp.Accounts = append(resp.Accounts, accountCounters(info.Name, true, st.Accounts[info.Name], info.CredScope, now))
	}
	var gone []string
	for name := range st.Accounts {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		resp.Accounts = append(resp.Accounts, accountCounters(name, false, st.Accounts[name], "", now))
	}
	for _, ac := range resp.Accounts {
		resp.Totals.Requests += ac.Requests
		resp.Totals.Errors += ac.Errors
		resp.Totals.InputTokens += ac.InputTokens
		resp.Totals.OutputTokens += ac.OutputTokens
		resp.Totals.CacheReadTokens += ac.CacheReadTokens
		resp.Totals.CacheCreationTokens += ac.CacheCreationTokens
	}

	byModel := make(map[string]*ModelStats, len(st.Models))
	get := func(model string) *ModelStats {
		ms := byModel[model]
		if ms == nil {
			ms = &ModelStats{Model: model}
			byModel[model] = ms
		}
		return ms
	}
	for model, n := range st.Models {
		get(model).Requests = n
	}
	for i := range recent {
		u := &recent[i]
		get(u.Model).Recent.count(u)
		if routing.Family(u.Model) == "opus" {
			resp.Opus.count(u)
		}
	}
	resp.Models = make([]ModelStats, 0, len(byModel))
	for _, ms := range byModel {
		ms.Recent.finish()
		if routing.Family(ms.Model) == "opus" {
			resp.Opus.Requests += ms.Requests
		}
		resp.Models = append(resp.Models, *ms)
	}
	resp.Opus.finish()
	slices.SortFunc(resp.Models, func(x, y ModelStats) int {
		if c := cmp.Compare(y.Requests, x.Requests); c != 0 {
			return c
		}
		return strings.Compare(x.Model, y.Model)
	})
	writeAdminJSON(w, http.StatusOK, resp)
}

func accountCounters(name string, configured bool, s routing.AccountStats, credScope string, now time.Time) AccountCounters {
	ac := AccountCounters{Name: name, Configured: configured, LastUsed: s.LastUsed}
	ac.Counters.add(s)
	if cds := cooldowns(s.Marks, credScope, now); len(cds) > 0 {
		ac.Cooldowns = cds
	}
	return ac
}

func (a *admin) history(w http.ResponseWriter, r *http.Request) {
	q, err := parseHistoryQuery(r)
	if err != nil {
		adminError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	want := q.Limit
	q.Limit++ // one more tells whether there is a next page
	entries, err := a.o.Store.History(r.Context(), q)
	if err != nil {
		a.storeError(w, "read history", err)
		return
	}
	resp := HistoryResponse{Replica: a.o.Replica, Limit: want, Offset: q.Offset, Entries: []HistoryEntry{}}
	if len(entries) > want {
		resp.More = true
		entries = entries[:want]
	}
	for _, u := range entries {
		resp.Entries = append(resp.Entries, HistoryEntry{Usage: u, LatencyMS: float64(u.Latency.Microseconds()) / 1000})
	}
	writeAdminJSON(w, http.StatusOK, resp)
}

func parseHistoryQuery(r *http.Request) (routing.HistoryQuery, error) {
	v := r.URL.Query()
	q := routing.HistoryQuery{Limit: defaultHistoryLimit, Model: v.Get("model"), Account: v.Get("account")}
	num := func(name string, lo, hi int, dst *int) error {
		s := v.Get(name)
		if s == "" {
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return errors.New("query parameter " + name + " must be a whole number from " + strconv.Itoa(lo) + " to " + strconv.Itoa(hi))
		}
		*dst = n
		return nil
	}
	if err := num("limit", 1, maxHistoryLimit, &q.Limit); err != nil {
		return q, err
	}
	if err := num("offset", 0, 1<<30, &q.Offset); err != nil {
		return q, err
	}
	if err := num("status", 100, 599, &q.Status); err != nil {
		return q, err
	}
	if len(q.Model) > 200 || len(q.Account) > 200 {
		return q, errors.New("query parameters model and account must be at most 200 characters")
	}
	return q, nil
}

func (a *admin) resetStats(w http.ResponseWriter, r *http.Request) {
	if err := a.o.Store.ResetStats(r.Context()); err != nil {
		a.storeError(w, "reset stats", err)
		return
	}
	a.log.Info("admin: usage counters reset", "remote", r.RemoteAddr, "replica", a.o.Replica)
	writeAdminJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "usage counters reset"})
}

func (a *admin) clearHistory(w http.ResponseWriter, r *http.Request) {
	if err := a.o.Store.ClearHistory(r.Context()); err != nil {
		a.storeError(w, "clear history", err)
		return
	}
	a.log.Info("admin: request history cleared", "remote", r.RemoteAddr, "replica", a.o.Replica)
	writeAdminJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "request history cleared"})
}

func (a *admin) reload(w http.ResponseWriter, r *http.Request) {
	if a.o.Reload == nil {
		adminError(w, http.StatusNotImplemented, "api_error", "this gateway cannot reload its config through the admin API")
		return
	}
	if err := a.o.Reload(r.Context()); err != nil {
		a.log.Warn("admin: config reload failed", "remote", r.RemoteAddr, "err", err)
		adminError(w, http.StatusUnprocessableEntity, "invalid_request_error",
			"the config was not reloaded; the previous one keeps serving: "+err.Error())
		return
	}
	a.log.Info("admin: config reloaded", "remote", r.RemoteAddr)
	writeAdminJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "config reloaded", "config": a.configInfo()})
}

func (a *admin) storeError(w http.ResponseWriter, what string, err error) {
	a.log.Error("admin: store failed", "op", what, "err", err)
	adminError(w, http.StatusServiceUnavailable, "api_error", "the store could not "+what+"; see the gateway's log")
}

// adminError writes an error in Anthropic's shape.
func adminError(w http.ResponseWriter, status int, typ, msg string) {
	writeAdminJSON(w, status, map[string]any{
		"type":  "error",
		"error": map[string]string{"type": typ, "message": msg},
	})
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"type":"error","error":{"type":"api_error","message":"could not encode the answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
