// Package fakeapi is an in-process fake of the Anthropic API
// (api.anthropic.com) for tests and benchmarks: an httptest.Server on
// 127.0.0.1 that speaks the API's JSON and server-sent events byte for byte,
// records what it receives, and can be scripted per request (status, headers,
// body, events, delays, a cut connection, a hang).
//
// Without a script it answers like the real API:
//
//   - POST /v1/messages: a Message echoing the body's model (DefaultModel when
//     there is none) with the text "Hello from " and the last 4 characters of
//     the credential, and DefaultUsage(); with "stream": true the exact event
//     sequence of StreamEvents, in the three chunks "Hello", " from", " XXXX",
//     each event flushed at once.
//   - POST /v1/messages/count_tokens: {"input_tokens":N}, N = body length / 4
//     (at least 1).
//   - GET /v1/models (after_id, before_id and limit work) and
//     GET /v1/models/{id}: ModelOpus, ModelSonnet and ModelHaiku.
//   - A body that is not JSON: 400 invalid_request_error. Any other method or
//     path: 404 not_found_error.
//
// Every answer carries a request-id header (req_011C...) and a content-type
// (application/json, or text/event-stream; charset=utf-8 for streams). Default
// answers also carry the rate-limit headers of the credential's kind: OAuth
// tokens (sk-ant-oat...) get anthropic-ratelimit-unified-* (see
// UnifiedHeaders, status "allowed"), anything else the API-key set
// anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}.
// Scripted answers get only request-id and content-type besides their own
// headers, so that a test controls exactly which rate-limit headers a 429 has.
//
// Authentication follows the API: the credential is x-api-key, else the
// token of "Authorization: Bearer". With Accept, an unknown or missing
// credential gets 401 authentication_error. An OAuth token (sk-ant-oat...)
// sent as a Bearer token also needs "oauth-2025-04-20" among its anthropic-beta
// values, and is refused in x-api-key, as the API does.
package fakeapi

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// Server is an httptest.Server faking api.anthropic.com. All methods are safe
// for concurrent use, also while requests are being served.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:PORT", to use as the upstream URL
	// or with option.WithBaseURL.
	URL string

	ts        *httptest.Server
	quit      chan struct{} // closed by Close: ends delays, holds and hangs
	closeOnce sync.Once

	accept   atomic.Pointer[map[string]struct{}] // nil: accept anything
	script   atomic.Pointer[func(*Request) *Reply]
	noRecord atomic.Bool
	inFlight atomic.Int64
	seq      atomic.Uint64 // request and message ids
	tag      string        // random per server, part of every id

	mu       sync.Mutex
	reqs     []Request     // guarded by mu; recorded requests since Reset
	count    int           // guarded by mu; requests since Reset
	canceled int           // guarded by mu; of those, cut short by the client
	gen      uint64        // guarded by mu; bumped by Reset
	changed  chan struct{} // guarded by mu; closed on a change, nil without waiters

	bodies sync.Pool // *[]byte request bodies when not recording
	outs   sync.Pool // *[]byte default answers being built

	// Precomputed, read-only after NewServer; header values are shared by
	// responses, which net/http only reads.
	ctJSON, ctSSE, noCache []string
	modelsPage             []byte
	unifiedHdrs            []headerValue
	apiKeyLimits           atomic.Pointer[limitStamp]
}

// Request is what the fake received.
type Request struct {
	Method, Path, RawQuery string
	// Header is a clone of what arrived (with Record(false): the live header,
	// valid only during the Script call).
	Header http.Header
	// Credential is the x-api-key value, or else the Bearer token.
	Credential string
	// Bearer reports that Credential came from "Authorization: Bearer".
	Bearer bool
	// Model is the body's top-level "model", "" if none.
	Model string
	// Stream is the body's top-level "stream" == true.
	Stream  bool
	BodyLen int
	// Proto, TransferEncoding and ContentLength are the request's framing as it
	// arrived.
	Proto            string
	TransferEncoding []string
	ContentLength    int64
	// Body is the raw body as received (with Record(false): valid only during
	// the Script call).
	Body []byte
	// N is the 1-based index of this request on the server since the last Reset.
	N int
	// Canceled reports that the client went away before the fake finished its
	// answer. Only the copies Requests returns after that moment show it.
	Canceled bool
}

// Reply is a scripted answer. The zero Reply is an empty 200.
type Reply struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Header holds extra headers; they replace the fake's request-id and
	// content-type when they name them.
	Header http.Header
	// Body, if set, is written as is, with content-type application/json and
	// a Content-Length. Left nil with a Status >= 400 and no Events, the body
	// is the API's error JSON for that status (see ErrorType).
	Body []byte
	// Events, if set, are streamed as SSE after Body, each flushed at once,
	// with content-type text/event-stream; charset=utf-8.
	Events []Event
	// EventDelay is slept between two events.
	EventDelay time.Duration
	// Delay is slept before the headers are written.
	Delay time.Duration
	// CutAfter > 0 closes the connection abruptly (no message_stop, no final
	// chunk) after this many events, or after the last one if there are fewer.
	// For a reply without Events it cuts after this many bytes of Body, which
	// was announced with its full Content-Length.
	CutAfter int
	// Hold, if set, is waited for after the headers and the first HoldAfter
	// events were written and flushed; the answer then goes on.
	Hold      <-chan struct{}
	HoldAfter int
	// Hang blocks after the headers, body and events were written and flushed,
	// until the client goes away (or the server closes).
	Hang bool
}

// New starts a fake and registers t.Cleanup(Close).
func New(t testing.TB) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// NewTLS starts a fake on https, offering HTTP/2 and HTTP/1.1 as the real API
// does, and registers t.Cleanup(Close). ClientTLS trusts its certificate.
func NewTLS(t testing.TB) *Server {
	t.Helper()
	s := newServer(true)
	t.Cleanup(s.Close)
	return s
}

// ClientTLS is a TLS client config that trusts the fake's certificate (NewTLS).
func (s *Server) ClientTLS() *tls.Config {
	return s.ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

// NewServer starts a fake without a testing.TB (for benchmark programs); the
// caller calls Close.
func NewServer() *Server { return newServer(false) }

func newServer(https bool) *Server {
	var tag [8]byte
	_, _ = rand.Read(tag[:])
	for i := range tag {
		tag[i] = base58[int(tag[i])%len(base58)]
	}
	s := &Server{quit: make(chan struct{}), tag: string(tag[:])}
	s.ctJSON = []string{"application/json"}
	s.ctSSE = []string{"text/event-stream; charset=utf-8"}
	s.noCache = []string{"no-cache"}
	s.bodies.New = func() any { b := make([]byte, 0, 32<<10); return &b }
	s.outs.New = func() any { b := make([]byte, 0, 4<<10); return &b }
	now := time.Now()
	s.modelsPage = modelsPageJSON(defaultModels, 0, len(defaultModels), false)
	s.unifiedHdrs = headerValues(UnifiedHeaders(Unified{
		FiveHour: 0.02, SevenDay: 0.01,
		FiveHourReset: now.Add(5 * time.Hour).Truncate(time.Hour),
		SevenDayReset: now.Add(7 * 24 * time.Hour).Truncate(time.Hour),
	}))
	s.ts = httptest.NewUnstartedServer(s)
	if https {
		s.ts.EnableHTTP2 = true
		s.ts.StartTLS()
	} else {
		s.ts.Start()
	}
	s.URL = s.ts.URL
	return s
}

// Close ends every delay, hold and hang, drops open connections and stops the
// server. It may be called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.quit)
		s.ts.CloseClientConnections()
		s.ts.Close()
	})
}

// CloseClientConnections drops every open connection to the fake at once, as
// a crashing upstream would; the server keeps listening.
func (s *Server) CloseClientConnections() { s.ts.CloseClientConnections() }

// Accept sets the credentials the fake accepts (x-api-key values or Bearer
// tokens). Any other, or none, gets 401 authentication_error. Accept() with no
// credentials accepts anything, the initial state.
func (s *Server) Accept(creds ...string) {
	if len(creds) == 0 {
		s.accept.Store(nil)
		return
	}
	set := make(map[string]struct{}, len(creds))
	for _, c := range creds {
		set[c] = struct{}{}
	}
	s.accept.Store(&set)
}

// Script sets the function that decides the reply to each authenticated
// request; it runs concurrently and returns nil for the default answer.
// Script(nil) restores the default behaviour.
func (s *Server) Script(f func(r *Request) *Reply) {
	if f == nil {
		s.script.Store(nil)
		return
	}
	s.script.Store(&f)
}

// Record sets whether requests are kept for Requests (on by default). Turn it
// off for load tests: memory then stays flat, Count and CanceledCount still
// work, and the Request a Script sees shares the live header and a reused body
// buffer.
func (s *Server) Record(on bool) { s.noRecord.Store(!on) }

// Requests returns a copy of the requests recorded since the last Reset, in
// arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// Count is the number of requests received since the last Reset.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// CanceledCount is the number of requests since the last Reset whose client
// went away (context canceled, or a failed write) while the fake was still
// answering: sleeping a Delay or EventDelay, holding, hanging or writing.
func (s *Server) CanceledCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.canceled
}

// InFlight is the number of requests being answered right now.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// Reset forgets the requests and zeroes Count and CanceledCount; the next
// request has N == 1.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs, s.count, s.canceled = nil, 0, 0
	s.gen++
	s.notifyLocked()
}

// WaitCount waits until Count() >= n, or returns ctx's error.
func (s *Server) WaitCount(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return s.count >= n })
}

// WaitCanceled waits until CanceledCount() >= n, or returns ctx's error.
func (s *Server) WaitCanceled(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return s.canceled >= n })
}

// wait blocks until cond, evaluated under mu, holds.
func (s *Server) wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifyLocked wakes the waiters, if any; free when nobody waits.
func (s *Server) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// record counts req, stores a copy when recording, and returns its N and the
// generation it belongs to.
func (s *Server) record(req *Request, keep bool) (int, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	req.N = s.count
	if keep {
		s.reqs = append(s.reqs, *req)
	}
	s.notifyLocked()
	return req.N, s.gen
}

func (s *Server) markCanceled(n int, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	s.canceled++
	for i := len(s.reqs) - 1; i >= 0; i-- {
		if s.reqs[i].N == n {
			s.reqs[i].Canceled = true
			break
		}
	}
	s.notifyLocked()
}

// ServeHTTP answers one request: record, authenticate, script or default.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)

	keep := !s.noRecord.Load()
	var body []byte
	var pooled *[]byte
	if keep {
		body = make([]byte, 0, max(r.ContentLength, 0)+1)
	} else {
		pooled = s.bodies.Get().(*[]byte)
		body = (*pooled)[:0]
		defer func() { *pooled = body[:0]; s.bodies.Put(pooled) }()
	}
	body, err := readBody(body, r.Body)
	if err != nil {
		return // the client went away while sending
	}

	req := Request{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header,
		BodyLen:  len(body),
		Body:     body,

		Proto:            r.Proto,
		TransferEncoding: r.TransferEncoding,
		ContentLength:    r.ContentLength,
	}
	if keep {
		req.Header = r.Header.Clone()
	}
	if k := r.Header.Get("X-Api-Key"); k != "" {
		req.Credential = k
	} else if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		req.Credential, req.Bearer = strings.TrimSpace(a[7:]), true
	}
	valid := len(body) > 0 && gjson.ValidBytes(body)
	if valid {
		if m := gjson.GetBytes(body, "model"); m.Type == gjson.String {
			req.Model = m.Str
		}
		req.Stream = gjson.GetBytes(body, "stream").Type == gjson.True
	}

	x := &exchange{s: s, w: w, r: r, req: &req}
	x.n, x.gen = s.record(&req, keep)
	var idb [32]byte
	x.id = string(appendCounterID(idb[:0], "req_011C", s.tag, s.seq.Add(1), 12))

	if msg := s.authError(&req, r.Header); msg != "" {
		x.writeError(http.StatusUnauthorized, "authentication_error", msg)
		return
	}
	if f := s.script.Load(); f != nil {
		if rep := (*f)(&req); rep != nil {
			x.play(rep)
			return
		}
	}
	x.serveDefault(valid)
}

// readBody appends all of r to b.
func readBody(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// authError is the message of the 401 the API gives req, or "".
func (s *Server) authError(req *Request, h http.Header) string {
	oauth := strings.HasPrefix(req.Credential, "sk-ant-oat")
	if set := s.accept.Load(); set != nil {
		if _, ok := (*set)[req.Credential]; !ok {
			switch {
			case req.Credential == "":
				return "x-api-key header is required"
			case req.Bearer:
				return "Invalid bearer token"
			}
			return "invalid x-api-key"
		}
	}
	switch {
	case oauth && !req.Bearer:
		return "invalid x-api-key"
	case oauth && !hasBeta(h, "oauth-2025-04-20"):
		return "OAuth authentication is currently not supported."
	}
	return ""
}

// hasBeta reports whether the anthropic-beta header lines list beta.
func hasBeta(h http.Header, beta string) bool {
	for _, line := range h.Values("Anthropic-Beta") {
		for v := range strings.SplitSeq(line, ",") {
			if strings.TrimSpace(v) == beta {
				return true
			}
		}
	}
	return false
}

// exchange is one request being answered.
type exchange struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	req  *Request
	id   string // request-id
	n    int
	gen  uint64
	gone bool // already counted as canceled
}

// canceled counts the request as cut short by its client, once.
func (x *exchange) canceled() {
	if !x.gone {
		x.gone = true
		x.s.markCanceled(x.n, x.gen)
	}
}

// sleep waits d; false when the answer must stop (client gone or server closing).
func (x *exchange) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-x.r.Context().Done():
		x.canceled()
		return false
	case <-x.s.quit:
		return false
	}
}

// until waits for ch; false when the answer must stop. A nil ch waits until
// then.
func (x *exchange) until(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-x.r.Context().Done():
		x.canceled()
		return false
	case <-x.s.quit:
		return false
	}
}

// write writes b, false (and counted as canceled) when the client is gone.
func (x *exchange) write(b []byte) bool {
	if _, err := x.w.Write(b); err != nil {
		x.canceled()
		return false
	}
	return true
}

// flush sends what is buffered, false (and counted as canceled) when the
// client is gone.
func (x *exchange) flush() bool {
	if err := http.NewResponseController(x.w).Flush(); err != nil {
		x.canceled()
		return false
	}
	return true
}

// cut closes the connection abruptly, without the final chunk.
func (x *exchange) cut() {
	x.flush()
	conn, _, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2 or a wrapped writer: the server resets the stream
	}
	conn.Close()
}

// setBase sets request-id and content-type (and cache-control for a stream).
func (x *exchange) setBase(sse bool) http.Header {
	h := x.w.Header()
	h["Request-Id"] = []string{x.id}
	if sse {
		h["Content-Type"] = x.s.ctSSE
		h["Cache-Control"] = x.s.noCache
	} else {
		h["Content-Type"] = x.s.ctJSON
	}
	return h
}

// play writes a scripted reply.
func (x *exchange) play(rep *Reply) {
	if !x.sleep(rep.Delay) {
		return
	}
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	body := rep.Body
	if body == nil && len(rep.Events) == 0 && status >= 400 {
		body = appendError(nil, ErrorType(status), errorMessage(status), x.id)
	}
	h := x.setBase(len(rep.Events) > 0)
	if status >= 400 && rep.Header.Get("Request-Id") == "" && body != nil {
		if id := gjson.GetBytes(body, "request_id"); id.Type == gjson.String && id.Str != "" {
			h["Request-Id"] = []string{id.Str}
		}
	}
	if len(rep.Events) == 0 && body != nil && !rep.Hang {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	for k, vs := range rep.Header {
		h[http.CanonicalHeaderKey(k)] = slices.Clone(vs)
	}
	x.w.WriteHeader(status)
	streaming := len(rep.Events) > 0 || rep.Hang || rep.Hold != nil
	if streaming && !x.flush() {
		return
	}

	if rep.Hold != nil && rep.HoldAfter <= 0 && !x.until(rep.Hold) {
		return
	}
	if len(body) > 0 {
		if len(rep.Events) == 0 && rep.CutAfter > 0 && rep.CutAfter < len(body) {
			if x.write(body[:rep.CutAfter]) {
				x.cut()
			}
			return
		}
		if !x.write(body) {
			return
		}
		if streaming && !x.flush() {
			return
		}
	}

	var frame []byte
	for i, ev := range rep.Events {
		if i > 0 && !x.sleep(rep.EventDelay) {
			return
		}
		if !x.sleep(ev.Delay) {
			return
		}
		if ev.Raw != "" {
			frame = append(frame[:0], ev.Raw...)
		} else {
			frame = appendFrame(frame[:0], ev.Name, ev.Data)
		}
		if !x.write(frame) || !x.flush() {
			return
		}
		if rep.CutAfter > 0 && i+1 == rep.CutAfter {
			x.cut()
			return
		}
		if rep.Hold != nil && i+1 == rep.HoldAfter && !x.until(rep.Hold) {
			return
		}
	}
	if rep.Hold != nil && rep.HoldAfter > len(rep.Events) && !x.until(rep.Hold) {
		return
	}
	if rep.CutAfter > 0 && (len(rep.Events) > 0 || len(body) == 0) {
		x.cut()
		return
	}
	if rep.Hang {
		x.until(nil)
	}
}

// writeError writes the API's error JSON.
func (x *exchange) writeError(status int, errType, msg string) {
	bp := x.s.outs.Get().(*[]byte)
	b := appendError((*bp)[:0], errType, msg, x.id)
	x.setBase(false)
	x.w.WriteHeader(status)
	x.write(b)
	*bp = b[:0]
	x.s.outs.Put(bp)
}

// serveDefault gives the answer of the API without a script.
func (x *exchange) serveDefault(valid bool) {
	req := x.req
	switch {
	case req.Path == "/v1/messages" && req.Method == http.MethodPost:
		if !valid {
			x.writeError(http.StatusBadRequest, "invalid_request_error", bodyNotJSON)
			return
		}
		if req.Stream {
			x.defaultStream()
		} else {
			x.defaultMessage()
		}
	case req.Path == "/v1/messages/count_tokens" && req.Method == http.MethodPost:
		if !valid {
			x.writeError(http.StatusBadRequest, "invalid_request_error", bodyNotJSON)
			return
		}
		var buf [40]byte
		b := append(buf[:0], `{"input_tokens":`...)
		b = strconv.AppendInt(b, int64(max(1, req.BodyLen/4)), 10)
		b = append(b, '}')
		x.setBase(false)
		x.w.WriteHeader(http.StatusOK)
		x.write(b)
	case req.Path == "/v1/models" && req.Method == http.MethodGet:
		page := x.s.modelsPage
		if req.RawQuery != "" {
			var ok bool
			if page, ok = modelsQuery(x.r.URL.Query()); !ok {
				x.writeError(http.StatusBadRequest, "invalid_request_error", "limit: Input should be between 1 and 1000")
				return
			}
		}
		x.setBase(false)
		x.w.WriteHeader(http.StatusOK)
		x.write(page)
	case strings.HasPrefix(req.Path, "/v1/models/") && req.Method == http.MethodGet:
		id := strings.TrimPrefix(req.Path, "/v1/models/")
		i := slices.IndexFunc(defaultModels, func(m modelInfo) bool { return m.id == id })
		if i < 0 {
			x.writeError(http.StatusNotFound, "not_found_error", "model: "+id)
			return
		}
		x.setBase(false)
		x.w.WriteHeader(http.StatusOK)
		x.write(appendModel(nil, defaultModels[i]))
	default:
		x.writeError(http.StatusNotFound, "not_found_error", "Not Found")
	}
}

const bodyNotJSON = "There was an error parsing the body of your request as JSON. Check that it is valid JSON."

// greeting is the default answer text, split into the default stream chunks.
func greeting(cred string) (string, string, string) {
	last := "anonymous"
	if cred != "" {
		last = cred[max(0, len(cred)-4):]
	}
	return "Hello", " from", " " + last
}

func (x *exchange) model() string {
	if x.req.Model != "" {
		return x.req.Model
	}
	return DefaultModel
}

// msgID is a per-server unique message id (28 bytes: kept on the stack by
// its callers' string conversion).
func (x *exchange) msgID(buf *[32]byte) []byte {
	return appendCounterID(buf[:0], "msg_01", x.s.tag, x.s.seq.Add(1), 14)
}

func (x *exchange) defaultMessage() {
	a, b, c := greeting(x.req.Credential)
	var idb [32]byte
	bp := x.s.outs.Get().(*[]byte)
	out := appendMessage((*bp)[:0], string(x.msgID(&idb)), x.model(), a+b+c, DefaultUsage())
	x.setLimits(false)
	x.w.WriteHeader(http.StatusOK)
	x.write(out)
	*bp = out[:0]
	x.s.outs.Put(bp)
}

// Constant frames of the default stream.
var (
	frameBlockStart = appendFrame(nil, "content_block_start", contentBlockStartData)
	framePing       = appendFrame(nil, "ping", pingData)
	frameHello      = appendFrame(nil, "content_block_delta", string(appendTextDelta(nil, "Hello")))
	frameFrom       = appendFrame(nil, "content_block_delta", string(appendTextDelta(nil, " from")))
	frameBlockStop  = appendFrame(nil, "content_block_stop", contentBlockStopData)
	frameStop       = appendFrame(nil, "message_stop", messageStopData)
)

func (x *exchange) defaultStream() {
	_, _, last := greeting(x.req.Credential)
	u := DefaultUsage()
	x.setLimits(true)
	x.w.WriteHeader(http.StatusOK)

	bp := x.s.outs.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() { *bp = b[:0]; x.s.outs.Put(bp) }()
	var idb [32]byte
	b = appendMessageStart(append(b, "event: message_start\ndata: "...), string(x.msgID(&idb)), x.model(), u)
	b = append(b, "\n\n"...)
	if !x.write(b) || !x.flush() {
		return
	}
	for _, f := range [][]byte{frameBlockStart, framePing, frameHello, frameFrom} {
		if !x.write(f) || !x.flush() {
			return
		}
	}
	b = appendTextDelta(append(b[:0], "event: content_block_delta\ndata: "...), last)
	b = append(b, "\n\n"...)
	if !x.write(b) || !x.flush() || !x.write(frameBlockStop) || !x.flush() {
		return
	}
	b = appendMessageDelta(append(b[:0], "event: message_delta\ndata: "...), u)
	b = append(b, "\n\n"...)
	if !x.write(b) || !x.flush() {
		return
	}
	x.write(frameStop)
}

// setLimits sets request-id, content-type and the default rate-limit headers
// of the credential's kind.
func (x *exchange) setLimits(sse bool) {
	h := x.setBase(sse)
	hv := x.s.unifiedHdrs
	if !strings.HasPrefix(x.req.Credential, "sk-ant-oat") {
		hv = x.s.apiKeyHeaders()
	}
	for _, v := range hv {
		h[v.key] = v.val
	}
}

// headerValue is one precomputed response header; val is shared between
// responses and never modified.
type headerValue struct {
	key string
	val []string
}

func headerValues(h http.Header) []headerValue {
	hv := make([]headerValue, 0, len(h))
	for k, v := range h {
		hv = append(hv, headerValue{k, v})
	}
	slices.SortFunc(hv, func(a, b headerValue) int { return strings.Compare(a.key, b.key) })
	return hv
}

// limitStamp is the API-key rate-limit header set of one second.
type limitStamp struct {
	sec int64
	hv  []headerValue
}

// apiKeyHeaders returns the API-key rate-limit headers, rebuilt at most once a
// second so that their reset times stay current.
func (s *Server) apiKeyHeaders() []headerValue {
	now := time.Now()
	if st := s.apiKeyLimits.Load(); st != nil && st.sec == now.Unix() {
		return st.hv
	}
	reset := now.Add(time.Second).UTC().Format(time.RFC3339)
	h := http.Header{}
	for _, l := range []struct{ name, limit, remaining string }{
		{"requests", "4000", "3999"},
		{"input-tokens", "2000000", "1999000"},
		{"output-tokens", "400000", "400000"},
		{"tokens", "2400000", "2399000"},
	} {
		h.Set("anthropic-ratelimit-"+l.name+"-limit", l.limit)
		h.Set("anthropic-ratelimit-"+l.name+"-remaining", l.remaining)
		h.Set("anthropic-ratelimit-"+l.name+"-reset", reset)
	}
	hv := headerValues(h)
	s.apiKeyLimits.Store(&limitStamp{sec: now.Unix(), hv: hv})
	return hv
}

// modelInfo is one entry of GET /v1/models.
type modelInfo struct {
	id, name, created string
}

var defaultModels = []modelInfo{
	{ModelOpus, "Claude Opus 5.5", "2026-05-05T00:00:00Z"},
	{ModelSonnet, "Claude Sonnet 5.5", "2026-05-05T00:00:00Z"},
	{ModelHaiku, "Claude Haiku 5.5", "2026-05-05T00:00:00Z"},
}

func appendModel(dst []byte, m modelInfo) []byte {
	dst = append(dst, `{"type":"model","id":`...)
	dst = appendString(dst, m.id)
	dst = append(dst, `,"display_name":`...)
	dst = appendString(dst, m.name)
	dst = append(dst, `,"created_at":`...)
	dst = appendString(dst, m.created)
	return append(dst, '}')
}

// modelsPageJSON is the page of models[from:to].
func modelsPageJSON(models []modelInfo, from, to int, hasMore bool) []byte {
	b := []byte(`{"data":[`)
	for i, m := range models[from:to] {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, m)
	}
	b = append(b, `],"has_more":`...)
	b = strconv.AppendBool(b, hasMore)
	if from == to {
		return append(b, `,"first_id":null,"last_id":null}`...)
	}
	b = append(b, `,"first_id":`...)
	b = appendString(b, models[from].id)
	b = append(b, `,"last_id":`...)
	b = appendString(b, models[to-1].id)
	return append(b, '}')
}

// modelsQuery pages the model list by limit (default 20), after_id and
// before_id; false for a bad limit.
func modelsQuery(q map[string][]string) ([]byte, bool) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	limit := 20
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return nil, false
		}
		limit = n
	}
	index := func(id string) int {
		return slices.IndexFunc(defaultModels, func(m modelInfo) bool { return m.id == id })
	}
	from, to := 0, len(defaultModels)
	if id := get("before_id"); id != "" {
		to = max(0, index(id))
		from = max(0, to-limit)
		return modelsPageJSON(defaultModels, from, to, from > 0), true
	}
	if i := index(get("after_id")); i >= 0 {
		from = i + 1
	}
	to = min(to, from+limit)
	return modelsPageJSON(defaultModels, from, to, to < len(defaultModels)), true
}

// The fake is a plain http.Handler.
var _ http.Handler = (*Server)(nil)
