package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/routing"
)

// oauthBeta is the beta flag the API requires with OAuth (Max plan) tokens.
const oauthBeta = "oauth-2025-04-20"

// attempt is one client request's state across its upstream attempts. It travels in the
// request context, because go-retryablehttp's hooks see only the context or the request.
type attempt struct {
	g          *Gateway
	s          *Snapshot
	w          http.ResponseWriter
	r          *http.Request
	start      time.Time
	fields     routing.Fields
	family     string
	scopes     [1]string
	session    string
	sessionTTL time.Duration
	client     string
	cands      []routing.Candidate // still untried
	current    int                 // index into s.Accounts of the account being tried
	token      string              // the credential sent with the current attempt
	why        string
	n          int // attempts made
	tried      []string
	upstream   time.Duration // time spent waiting on the upstream, attempts in flight excluded
	sent       time.Time     // when the current attempt started
	inFlight   bool          // an attempt is waiting on the upstream (sent is its start)
	wrote      atomic.Bool   // the current attempt's request was written out whole
	backoff    bool          // the last outcome asks for a pause before the next attempt
	blocked    *routing.Pick // set when no candidate was left for a pick
	relay      *relay        // the stream being held back, for a 200 SSE answer
	body       *replayBody   // the request body, replayed on every attempt
	status     int
}

type ctxKey struct{}

func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request) {
	at := &attempt{g: g, s: g.Snapshot(), w: w, r: r, start: g.now(), current: -1}
	s := at.s
	if len(s.clients) > 0 {
		name, ok := s.authenticate(r)
		if !ok {
			at.fail(http.StatusUnauthorized, "invalid client key: send a key listed under clients in claude-lb.yaml as x-api-key or Authorization: Bearer")
			return
		}
		at.client = name
	}
	if !cleanPath(r.URL.Path) {
		at.fail(http.StatusBadRequest, "the request path must be a clean path under /v1/ (no . or .. segments)")
		return
	}
	if !s.sameOrigin(r) {
		at.fail(http.StatusForbidden, "cross-site requests are refused: without clients configured, only local programs may use the gateway")
		return
	}
	body, status, msg := readBody(w, r, int64(s.Config.MaxBody))
	if status != 0 {
		at.fail(status, msg)
		return
	}
	if looksJSON(r, body) {
		f, err := routing.Extract(body)
		if err != nil {
			at.fail(http.StatusBadRequest, "the request body is not a valid JSON object")
			return
		}
		at.fields = f
	}
	at.family = routing.Family(at.fields.Model)
	at.scopes[0] = routing.FamilyScope(at.family)
	idx, err := s.Table.Candidates(at.fields.Model)
	if err != nil {
		at.noCandidates(err)
		return
	}
	at.cands = make([]routing.Candidate, 0, len(idx))
	for _, i := range idx {
		at.cands = append(at.cands, s.Accounts[i].candidate)
	}
	at.sessionTTL = s.Config.Routing.AffinityTTL
	if k := resourceKey(r.URL.Path); k != "" {
		// Not a preference but a necessity: the batch or file exists in one account only.
		at.session, at.sessionTTL = k, resourceTTL
	} else if s.Config.Routing.Affinity == "session" {
		at.session = sessionKey(r, at.fields.UserID)
	}

	ctx, cancel := context.WithCancel(context.WithValue(r.Context(), ctxKey{}, at))
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { at.wrote.Store(i.Err == nil) },
	})
	// One deadline for the whole request until its answer starts; a stream then runs as long
	// as the upstream sends.
	deadline := time.AfterFunc(s.Config.Upstream.Timeout, cancel)
	if !at.pick(ctx) {
		deadline.Stop()
		at.allBlocked()
		return
	}
	// No body bytes, no body: go-retryablehttp would wrap even an empty slice in a reader,
	// and a GET would reach the upstream with a (chunked, empty) body.
	var raw any
	if len(body) > 0 {
		at.body = &replayBody{b: body}
		raw = retryablehttp.ReaderFunc(at.body.reader)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, r.Method, s.upstream+r.URL.EscapedPath(), raw)
	if err != nil {
		deadline.Stop()
		at.fail(http.StatusBadRequest, "the request path cannot be forwarded")
		return
	}
	req.URL.RawQuery = r.URL.RawQuery
	req.Header = outboundHeader(r.Header)
	at.authorize(req.Header)
	resp, err := g.client.Do(req)
	deadline.Stop()
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		if at.relay != nil && at.relay.stop() {
			// The holdback timer had already started the answer; it ends here.
			at.status = 499
			at.finish("client closed request during the stream's holdback")
			return
		}
		at.upstreamFailed(ctx, err)
		return
	}
	at.respond(resp)
}

// pick chooses the next account among the untried candidates, fetching its credential; false
// when none is available (a.blocked says why).
func (at *attempt) pick(ctx context.Context) bool {
	s := at.s
	for len(at.cands) > 0 {
		p, err := at.g.opts.Store.Pick(ctx, routing.PickRequest{
			Candidates:  at.cands,
			Strategy:    s.Strategy,
			Scopes:      at.scopes[:],
			Session:     at.session,
			AffinityTTL: at.sessionTTL,
		})
		if err != nil || p.Account == "" {
			if err != nil {
				p = routing.Pick{Reason: "state store unavailable: " + err.Error()}
			}
			at.blocked = &p
			return false
		}
		i := s.byName[p.Account]
		at.exclude(p.Account)
		a := &s.Accounts[i]
		tok := a.secret.Reveal()
		if a.kind == config.CredOAuthFile {
			if at.g.opts.Tokens == nil {
				continue
			}
			t, err := at.g.opts.Tokens.Token(ctx, a.Name)
			if err != nil {
				at.g.log.Warn("oauth token unavailable", "account", a.Name, "err", err)
				at.tried = append(at.tried, a.Name+":token")
				continue
			}
			tok = t
		}
		at.current, at.token, at.why = i, tok, p.Why
		return true
	}
	if at.blocked == nil {
		at.blocked = &routing.Pick{Reason: "no account left to try"}
	}
	return false
}

func (at *attempt) exclude(name string) {
	for k, c := range at.cands {
		if c.Name == name {
			at.cands = append(at.cands[:k], at.cands[k+1:]...)
			return
		}
	}
}

// authorize puts the current account's credential on h.
func (at *attempt) authorize(h http.Header) {
	a := &at.s.Accounts[at.current]
	if a.kind == config.CredAPIKey {
		h["X-Api-Key"] = []string{at.token}
		delete(h, "Authorization")
		return
	}
	delete(h, "X-Api-Key")
	h["Authorization"] = []string{"Bearer " + at.token}
	h["Anthropic-Beta"] = []string{mergeBeta(h["Anthropic-Beta"])}
}

func mergeBeta(vals []string) string {
	for _, v := range vals {
		for _, b := range strings.Split(v, ",") {
			if strings.TrimSpace(b) == oauthBeta {
				return strings.Join(vals, ",")
			}
		}
	}
	if len(vals) == 0 {
		return oauthBeta
	}
	return strings.Join(vals, ",") + "," + oauthBeta
}

// hopHeaders are hop-by-hop (RFC 9110 section 7.6.1): never forwarded in either direction.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func outboundHeader(in http.Header) http.Header {
	h := make(http.Header, len(in))
	for k, v := range in {
		h[k] = v
	}
	for _, f := range in["Connection"] {
		for _, k := range strings.Split(f, ",") {
			delete(h, http.CanonicalHeaderKey(strings.TrimSpace(k)))
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	// The client's own credentials never go upstream; the encoding is the transport's to
	// negotiate, so the usage tap reads plain bytes.
	delete(h, "X-Api-Key")
	delete(h, "Authorization")
	delete(h, "Accept-Encoding")
	delete(h, "X-Claude-Lb-Session")
	// The body is already read; an Expect: 100-continue (curl sends one for bodies over 1 MB)
	// would only make the transport wait for the upstream's go-ahead.
	delete(h, "Expect")
	return h
}

func (s *Snapshot) authenticate(r *http.Request) (string, bool) {
	key := r.Header.Get("X-Api-Key")
	if key == "" {
		if v := r.Header.Get("Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			key = v[7:]
		}
	}
	if key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	name, ok := "", false
	for _, c := range s.clients {
		if subtle.ConstantTimeCompare(sum[:], c.hash[:]) == 1 {
			name, ok = c.name, true
		}
	}
	return name, ok
}

func sessionKey(r *http.Request, userID string) string {
	if v := r.Header.Get("X-Claude-Code-Session-Id"); v != "" {
		return v
	}
	if v := routing.SessionFromUserID(userID); v != "" {
		return v
	}
	return r.Header.Get("X-Claude-Lb-Session")
}

// looksJSON decides whether a body is routed by its model: any JSON media type (in any case),
// or any body that starts as a JSON object whatever its declared type, since the upstream
// reads it as JSON either way. Multipart uploads (/v1/files) are not.
func looksJSON(r *http.Request, body []byte) bool {
	if len(body) == 0 {
		return false
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return true
	}
	ct := strings.ToLower(r.Header.Get("Content-Type"))
	return ct == "" || strings.HasPrefix(ct, "application/json")
}

// cleanPath refuses dot segments, so /v1/../api/… never reaches the upstream with a pooled
// credential.
func cleanPath(p string) bool {
	c := path.Clean(p)
	return strings.HasPrefix(c, "/v1/") && (c == p || c+"/" == p)
}

// sameOrigin protects an unauthenticated loopback gateway from web pages. A browser sends
// Origin with every POST (Sec-Fetch-Site too), also after a DNS rebinding, so a page on
// another site cannot spend the pool's quota; Claude Code and the SDKs send neither. With
// clients configured, or with allow_unauthenticated, the keys (or the operator) decide.
func (s *Snapshot) sameOrigin(r *http.Request) bool {
	if len(s.clients) > 0 || s.Config.AllowUnauthenticated {
		return true
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !config.IsLoopbackHost(u.Hostname()) {
			return false
		}
	}
	return true
}

// bodyReadTimeout bounds the upload of one request body, so slow senders cannot hold
// buffers forever; it is lifted before the answer streams.
const bodyReadTimeout = 2 * time.Minute

// maxPrealloc caps what a declared Content-Length reserves before its bytes arrive.
const maxPrealloc = 4 << 20

// readBody reads the whole body once (it is replayed on every attempt), bounded by max.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, int, string) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, 0, ""
	}
	// Only the error paths need the message; formatting it per request cost an allocation.
	tooLarge := func() string { return fmt.Sprintf("request body is larger than max_body (%s)", config.ByteSize(max)) }
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, tooLarge()
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(bodyReadTimeout)) == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	n := min(r.ContentLength, maxPrealloc)
	if n < 0 {
		n = 512
	}
	buf := getBody(int(n) + 1) // +1 so a body of exactly ContentLength ends without a regrow
	rd := http.MaxBytesReader(nil, r.Body, max)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, 0, ""
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, http.StatusRequestEntityTooLarge, tooLarge()
			}
			return nil, http.StatusBadRequest, "cannot read the request body"
		}
	}
}

// newRetryClient is the one retry policy (DESIGN.md section 6) on go-retryablehttp: CheckRetry
// classifies each answer with routing.Classify and picks the next account, Backoff waits only
// after overloads, PrepareRetry swaps the credential, and ErrorHandler keeps the last answer.
func (g *Gateway) newRetryClient(rt http.RoundTripper) *retryablehttp.Client {
	return &retryablehttp.Client{
		HTTPClient: &http.Client{
			// Wrapped so go-retryablehttp cannot reach CloseIdleConnections: it calls it after
			// every failed Do (v0.7.8 client.go:788, :811), which would drop the whole upstream
			// connection pool whenever one client hangs up.
			Transport: struct{ http.RoundTripper }{rt},
			// Redirects go back to the client as they are.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		// The attempt count is bounded by routing.max_attempts in checkRetry; this is a backstop.
		RetryMax:     64,
		RetryWaitMin: 50 * time.Millisecond,
		RetryWaitMax: 250 * time.Millisecond,
		// Logger stays nil: the library would format a redacted URL per request at Debug;
		// the gateway logs every attempt itself.
		Logger:         nil,
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, _ int) { attemptOf(req.Context()).begin() },
		CheckRetry:     checkRetry,
		Backoff:        backoff,
		PrepareRetry:   prepareRetry,
		ErrorHandler:   func(resp *http.Response, err error, _ int) (*http.Response, error) { return resp, err },
	}
}

func attemptOf(ctx context.Context) *attempt { return ctx.Value(ctxKey{}).(*attempt) }

func (at *attempt) begin() {
	at.n++
	at.sent = at.g.now()
	at.inFlight = true
	at.wrote.Store(false)
}

func checkRetry(ctx context.Context, resp *http.Response, doErr error) (bool, error) {
	at := attemptOf(ctx)
	defer at.end()
	if ctx.Err() != nil {
		// The client went away or the request's deadline passed: that says nothing about the
		// account, and nobody waits for another attempt.
		return false, ctx.Err()
	}
	now := at.g.now()
	var o routing.Outcome
	switch {
	case doErr != nil:
		o = routing.Classify(now, at.s.Policy, 0, nil, nil, true, at.family)
		if at.wrote.Load() {
			// The upstream got the whole request: another account would run (and bill) it
			// again. The account is benched; the client gets a 502/504.
			o.Retry = false
		}
	case resp.StatusCode == http.StatusOK && isEventStream(resp.Header):
		at.relay = newRelay(at, resp)
		failed := at.relay.holdback(at.s.Config.Routing.Holdback)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		switch failed {
		case "":
			o = routing.Classify(now, at.s.Policy, resp.StatusCode, resp.Header.Get, nil, false, at.family)
		case "overloaded_error":
			o = routing.Classify(now, at.s.Policy, 529, nil, nil, false, at.family)
		default:
			o = routing.Classify(now, at.s.Policy, 0, nil, nil, true, at.family)
		}
		if failed != "" {
			o.Reason = "stream:" + failed
		}
	default:
		var peek []byte
		if resp.StatusCode == http.StatusTooManyRequests {
			peek = peekBody(resp, 4<<10)
		}
		o = routing.Classify(now, at.s.Policy, resp.StatusCode, resp.Header.Get, peek, false, at.family)
	}
	at.record(o, resp)
	if !o.Retry || at.n >= at.s.Config.Routing.MaxAttempts || !at.pick(ctx) {
		// The last answer goes to the client as it came (a held-back stream whole, with an
		// error event at its end); a network error becomes a 502.
		return false, doErr
	}
	at.relay = nil // retrying: the held-back stream is dropped unseen
	at.backoff = o.Backoff
	return true, nil
}

// end closes the accounting of an attempt that got its answer (or failed).
func (at *attempt) end() {
	if at.inFlight {
		at.upstream += at.g.now().Sub(at.sent)
		at.inFlight = false
	}
}

// record applies an attempt's outcome to the account: marks, metrics, and the attempt list.
func (at *attempt) record(o routing.Outcome, resp *http.Response) {
	a := &at.s.Accounts[at.current]
	at.g.obs.Attempt(a.Name, o.Reason)
	at.g.obs.Upstream(a.Name, at.g.now().Sub(at.sent))
	at.tried = append(at.tried, a.Name+":"+o.Reason)
	if resp != nil {
		at.status = resp.StatusCode
	}
	if o.Reason == "5xx" || o.Reason == "529" || strings.HasPrefix(o.Reason, "stream") || o.Reason == "network" {
		if n := at.g.failures.add(a.Name); n >= 3 && o.Mark.Until.IsZero() {
			o.Mark = routing.Mark{Until: at.g.now().Add(routing.OverloadBench), Reason: "repeated upstream errors (" + o.Reason + ")"}
		}
	} else if o.Reason == "ok" {
		at.g.failures.reset(a.Name)
	}
	if o.CredentialInvalid && a.kind == config.CredOAuthFile && at.g.opts.Tokens != nil {
		// A refresh may fix it; the token source decides whether the account needs a login.
		at.g.opts.Tokens.Invalidate(context.WithoutCancel(at.r.Context()), a.Name, at.token)
		return
	}
	if o.Mark.Until.IsZero() {
		return
	}
	m := o.Mark
	m.Account = a.Name
	if o.CredentialInvalid {
		m.Scope = a.candidate.CredScope
	}
	if err := at.g.opts.Store.Mark(context.WithoutCancel(at.r.Context()), m); err != nil {
		at.g.log.Warn("cannot store cooldown", "account", a.Name, "err", err)
	}
	if !m.Soft {
		at.g.obs.Cooldown(a.Name, m.Scope, o.Reason)
		at.g.log.Warn("account cooling down", "account", a.Name, "scope", m.Scope, "until", m.Until.UTC().Format(time.RFC3339), "reason", m.Reason)
	}
}

func backoff(_, _ time.Duration, _ int, resp *http.Response) time.Duration {
	if resp == nil || resp.Request == nil || !attemptOf(resp.Request.Context()).backoff {
		return 0 // a rate-limited or unreachable account: the next one is tried at once
	}
	return 50*time.Millisecond + rand.N(200*time.Millisecond)
}

func prepareRetry(req *http.Request) error {
	at := attemptOf(req.Context())
	// A fresh header map: the old one is shared with the previous attempt's request, and
	// holds that account's credential (and, from an OAuth account, its beta flag).
	req.Header = outboundHeader(at.r.Header)
	at.authorize(req.Header)
	return nil
}

// peekBody reads up to n bytes of an error body and puts them back in front of the rest.
func peekBody(resp *http.Response, n int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, n))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	return b
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}

// failureCounter counts consecutive upstream failures per account in this process, so an
// account that keeps failing is benched briefly while one overload is not held against it.
type failureCounter struct {
	mu sync.Mutex
	n  map[string]int // guarded by mu
}

func (f *failureCounter) add(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[name]++
	return f.n[name]
}

func (f *failureCounter) reset(name string) {
	f.mu.Lock()
	if f.n[name] != 0 {
		delete(f.n, name)
	}
	f.mu.Unlock()
}

// fail answers with the gateway's own error.
func (at *attempt) fail(status int, msg string) {
	at.ownHeaders()
	writeError(at.w, status, errorTypeFor(status), msg)
	at.status = status
	at.finish(msg)
}

func (at *attempt) noCandidates(err error) {
	s, model := at.s, at.fields.Model
	var e *apiError
	if errors.Is(err, routing.ErrUnknownModel) {
		e = newAPIError("invalid_request_error", fmt.Sprintf("Model %s matches no rule in the models section of claude-lb.yaml, and unknown_models is reject.", model))
	} else {
		msg := fmt.Sprintf("No accounts support the requested model: %s.", model)
		if plans := s.Table.Plans(model); len(plans) > 0 {
			if routing.Family(model) == "opus" && len(plans) == 1 && plans[0] == "max" {
				msg += " Opus requires Max plan accounts."
			} else {
				msg += fmt.Sprintf(" It needs an account on plan %s.", strings.Join(plans, " or "))
			}
		}
		e = newAPIError("invalid_request_error", msg)
	}
	e.RequestedModel = model
	e.AvailableAccounts = []accountBrief{}
	for _, a := range s.Accounts {
		if a.Disabled {
			continue
		}
		e.AvailableAccounts = append(e.AvailableAccounts, accountBrief{Name: a.Name, Plan: a.Plan, Models: s.Table.EffectiveModels(a.Account)})
	}
	at.ownHeaders()
	writeAPIError(at.w, http.StatusBadRequest, e)
	at.status = http.StatusBadRequest
	at.finish(e.Error.Message)
}

// allBlocked answers 429 when every compatible account is cooling down.
func (at *attempt) allBlocked() {
	p := at.blocked
	status, msg := http.StatusTooManyRequests, "All accounts that can serve "+at.modelName()+" are cooling down"
	if p != nil && p.Reason != "" {
		msg += " (" + p.Reason + ")"
	}
	if p != nil && !p.RetryAt.IsZero() {
		secs := int(p.RetryAt.Sub(at.g.now()).Seconds() + 0.999)
		at.w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		msg += "; the first is free at " + p.RetryAt.UTC().Format(time.RFC3339)
	} else if p != nil && strings.HasPrefix(p.Reason, "state store") {
		status = http.StatusServiceUnavailable
	}
	at.ownHeaders()
	writeError(at.w, status, errorTypeFor(status), msg+".")
	at.status = status
	at.finish(msg)
}

func (at *attempt) modelName() string {
	if at.fields.Model == "" {
		return "this request"
	}
	return at.fields.Model
}

// upstreamFailed answers when no attempt produced an answer to pass on.
func (at *attempt) upstreamFailed(ctx context.Context, err error) {
	switch {
	case at.r.Context().Err() != nil:
		at.status = 499 // the client went away; nobody reads this answer
		at.finish("client closed request")
		return
	case ctx.Err() != nil || isTimeout(err):
		at.fail(http.StatusGatewayTimeout, "the upstream did not answer in time")
		return
	case at.blocked != nil && at.n == 0:
		at.allBlocked()
		return
	}
	at.fail(http.StatusBadGateway, "the upstream could not be reached on any account")
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// respond relays the chosen answer: headers with the gateway's own, then the body (streamed
// event by event for SSE).
func (at *attempt) respond(resp *http.Response) {
	defer resp.Body.Close()
	// No attempt follows: the body need not outlive this point, however long the answer runs.
	if at.body != nil {
		at.body.release()
	}
	at.status = resp.StatusCode
	var u usage
	var errMsg string
	if at.relay != nil {
		u, errMsg = at.relay.finish()
	} else {
		at.writeHeader(resp)
		var tail *tailBuf
		if resp.StatusCode == http.StatusOK && strings.HasPrefix(at.r.URL.Path, "/v1/") && at.r.Method != http.MethodGet {
			tail = tailPool.Get().(*tailBuf)
			tail.n = 0
			defer tailPool.Put(tail)
		}
		errMsg = copyPlain(at.w, resp.Body, tail)
		if tail != nil {
			u = tail.usage()
			// Before the client has the id and can ask for the batch or file by it.
			at.bindCreated(tail)
		}
		// The answer goes out before the metrics and the log line (and, with a store that
		// costs a round trip, before the usage record), not when the handler returns.
		if at.g.opts.FlushBeforeRecord {
			at.flushPlain(errMsg)
			at.recordUsage(u, errMsg)
		} else {
			at.recordUsage(u, errMsg)
			at.flushPlain(errMsg)
		}
		at.report(u, errMsg)
		return
	}
	at.finishUsage(u, errMsg)
}

func (at *attempt) flushPlain(errMsg string) {
	if errMsg == "" {
		_ = http.NewResponseController(at.w).Flush()
	}
}

// resourceTTL is how long a created batch or file stays bound to its account: batch results
// are kept 29 days.
const resourceTTL = 30 * 24 * time.Hour

// resourceKey names the account-bound resource a path addresses: message batches and files
// live in the account that created them, so requests for them must go there.
func resourceKey(p string) string {
	for _, r := range [...]struct{ prefix, kind string }{{"/v1/messages/batches/", "batch:"}, {"/v1/files/", "file:"}} {
		if rest, ok := strings.CutPrefix(p, r.prefix); ok && rest != "" {
			id, _, _ := strings.Cut(rest, "/")
			return r.kind + id
		}
	}
	return ""
}

// bindCreated binds a batch or file just created to the account that created it.
func (at *attempt) bindCreated(tail *tailBuf) {
	var kind string
	switch at.r.URL.Path {
	case "/v1/messages/batches":
		kind = "batch:"
	case "/v1/files":
		kind = "file:"
	default:
		return
	}
	id := tail.id()
	if id == "" || at.current < 0 {
		return
	}
	if err := at.g.opts.Store.Bind(context.WithoutCancel(at.r.Context()), kind+id, at.s.Accounts[at.current].Name, resourceTTL); err != nil {
		at.g.log.Warn("cannot bind a created resource to its account", "account", at.s.Accounts[at.current].Name, "err", err)
	}
}

// writeHeader sends the upstream's headers (minus hop-by-hop) with the gateway's own.
func (at *attempt) writeHeader(resp *http.Response) {
	h := at.w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	at.ownHeaders()
	at.w.WriteHeader(resp.StatusCode)
}

// ownHeaders adds the gateway's headers: who served, after how many attempts, and the time
// spent in the gateway itself (an attempt still waiting on the upstream, as when the holdback
// timer commits a slow stream, is not the gateway's time).
func (at *attempt) ownHeaders() {
	h := at.w.Header()
	if at.current >= 0 && at.s.Config.ExposeAccount {
		h["X-Claude-Lb-Account"] = []string{at.s.Accounts[at.current].Name}
	}
	now := at.g.now()
	own := now.Sub(at.start) - at.upstream
	if at.inFlight {
		own -= now.Sub(at.sent)
	}
	h["X-Claude-Lb-Attempts"] = []string{strconv.Itoa(at.n)}
	h["X-Claude-Lb-Overhead-Ms"] = []string{strconv.FormatFloat(float64(max(own, 0))/1e6, 'f', 3, 64)}
}

func (at *attempt) finish(errMsg string) { at.finishUsage(usage{}, errMsg) }

// finishUsage records the request in the store, the metrics and the log.
func (at *attempt) finishUsage(u usage, errMsg string) {
	at.recordUsage(u, errMsg)
	at.report(u, errMsg)
}

func (at *attempt) account() string {
	if at.current >= 0 {
		return at.s.Accounts[at.current].Name
	}
	return ""
}

// recordUsage puts the request in the store: usage counters and history.
func (at *attempt) recordUsage(u usage, errMsg string) {
	acct := at.account()
	if acct == "" && at.status < 400 {
		return
	}
	rec := routing.Usage{
		Time: at.start, RequestID: requestID(at), Replica: at.g.opts.Replica, Client: at.client,
		Method: at.r.Method, Path: at.r.URL.Path, Model: at.fields.Model, Account: acct, Attempts: at.n,
		Status: at.status, Stream: at.fields.Stream, Latency: at.g.now().Sub(at.start), Error: errMsg,
		InputTokens: u.in, OutputTokens: u.out, CacheReadTokens: u.cacheRead, CacheCreationTokens: u.cacheWrite,
		Tried: at.tried,
	}
	if err := at.g.opts.Store.Record(context.WithoutCancel(at.r.Context()), rec); err != nil {
		at.g.log.Warn("cannot record usage", "err", err)
	}
}

// report counts the request in the metrics and logs it.
func (at *attempt) report(u usage, errMsg string) {
	d := at.g.now().Sub(at.start)
	acct, model := at.account(), at.fields.Model
	at.g.obs.Request(model, acct, at.status, at.n, d)
	if acct != "" && (u.in|u.out|u.cacheRead|u.cacheWrite) != 0 {
		at.g.obs.Tokens(acct, model, u.in, u.out, u.cacheRead, u.cacheWrite)
	}
	lvl := slog.LevelInfo
	if at.status >= 500 || at.status == 499 {
		lvl = slog.LevelWarn
	}
	if at.g.log.Enabled(at.r.Context(), lvl) {
		attrs := make([]slog.Attr, 0, 12)
		attrs = append(attrs,
			slog.String("method", at.r.Method),
			slog.String("path", at.r.URL.Path),
			slog.String("model", model),
			slog.String("account", acct),
			slog.String("reason", at.why),
			slog.Int("attempts", at.n),
			slog.String("tried", strings.Join(at.tried, ",")),
			slog.Int("status", at.status),
			slog.Duration("latency", d),
		)
		if id := requestID(at); id != "" {
			attrs = append(attrs, slog.String("request_id", id))
		}
		if at.client != "" {
			attrs = append(attrs, slog.String("client", at.client))
		}
		if errMsg != "" {
			attrs = append(attrs, slog.String("err", errMsg))
		}
		at.g.log.LogAttrs(at.r.Context(), lvl, "request", attrs...)
	}
}

func requestID(at *attempt) string {
	return at.w.Header().Get("Request-Id")
}

// replayBody is the request body, read once and replayed on every attempt. release hands the
// bytes back to bodyPools once the answer is chosen: the transport keeps each attempt's request
// (and so its body reader) until the answer ends, and a stream would otherwise hold its body,
// about 90 KB for Claude Code, for as long as it runs.
type replayBody struct {
	mu   sync.Mutex
	b    []byte      // guarded by mu; nil once released
	last *bodyReader // guarded by mu; the newest attempt's reader
}

func (rb *replayBody) reader() (io.Reader, error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.last = &bodyReader{rb: rb, n: len(rb.b)}
	return rb.last, nil
}

// release recycles the body once the last attempt's transport has read all of it (an upstream
// that answers before reading the whole body keeps it until the request ends: taking it away
// mid-write would cut the answer, golang/go#40747's failure).
func (rb *replayBody) release() {
	rb.mu.Lock()
	b := rb.b
	if rb.last != nil && !rb.last.eof {
		b = nil
	} else {
		rb.b = nil
	}
	rb.mu.Unlock()
	putBody(b)
}

// bodyReader reads one attempt's copy of a replayBody.
type bodyReader struct {
	rb     *replayBody
	off, n int
	eof    bool // guarded by rb.mu
}

// Len is the bytes left; go-retryablehttp reads the Content-Length from it, and the upstream
// transport trusts WriteTo with a body whose Len matches it.
func (r *bodyReader) Len() int { return r.n - r.off }

// Close lets go-retryablehttp use the reader as the request body as it is: wrapped in its
// io.NopCloser, Len would be hidden and the body written 4 KB at a time.
func (r *bodyReader) Close() error { return nil }

func (r *bodyReader) Read(p []byte) (int, error) {
	r.rb.mu.Lock()
	defer r.rb.mu.Unlock()
	if r.off >= len(r.rb.b) {
		r.eof = true
		return 0, io.EOF
	}
	k := copy(p, r.rb.b[r.off:])
	r.off += k
	return k, nil
}

// WriteTo writes what is left in one call, so the upstream transport sends a large body with
// one system call and no copy buffer.
func (r *bodyReader) WriteTo(w io.Writer) (int64, error) {
	r.rb.mu.Lock()
	defer r.rb.mu.Unlock()
	if r.off >= len(r.rb.b) {
		r.eof = true
		return 0, nil
	}
	n, err := w.Write(r.rb.b[r.off:])
	r.off += n
	if err == nil {
		r.eof = true
	}
	return int64(n), err
}

// bodyPools recycle request-body buffers by power-of-two capacity, 4 KiB to 64 MiB, so that
// large bodies neither allocate (and zero) fresh memory per request nor leave it as garbage.
var bodyPools [15]sync.Pool

const minBodyClass = 12 // 4 KiB

func bodyClass(n int) int {
	c := max(bits.Len(uint(n-1)), minBodyClass) - minBodyClass
	if c >= len(bodyPools) {
		return -1
	}
	return c
}

// getBody returns an empty buffer with room for at least n bytes.
func getBody(n int) []byte {
	c := bodyClass(n)
	if c < 0 {
		return make([]byte, 0, n)
	}
	if p, ok := bodyPools[c].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, 1<<(c+minBodyClass))
}

func putBody(b []byte) {
	c := bodyClass(cap(b))
	if c < 0 || cap(b) != 1<<(c+minBodyClass) {
		return
	}
	bodyPools[c].Put(&b)
}
