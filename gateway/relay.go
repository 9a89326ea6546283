package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// defaultIdlePing is how long an upstream stream may stay silent before the gateway sends a
// ping, so clients with stall watchdogs (Claude Code gives up after about 20 s) keep waiting.
const defaultIdlePing = 10 * time.Second

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ssePool holds the stream relay's read buffers. A stream keeps its buffer for as long as it
// is open, blocked in Read, and SSE events are small: 4 KiB per open stream instead of 32.
var ssePool = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// relay copies one upstream SSE stream to the client: byte for byte, each read flushed at once.
// Until the first content event it holds the opening frames back (holdback), so a stream that
// fails right after opening can still be failed over; a timer commits them early when the
// upstream is slow to start, and pings the client when the upstream goes quiet.
type relay struct {
	at   *attempt
	resp *http.Response
	rc   *http.ResponseController
	tap  sseTap

	mu        sync.Mutex // guards the fields below and every write to the client
	committed bool       // headers and held bytes were sent
	holdDone  bool       // holdback returned; its timer may no longer commit
	finished  bool       // finish returned; the ping timer may no longer write
	held      []byte
	writeErr  error
	ping      *time.Timer
}

func newRelay(at *attempt, resp *http.Response) *relay {
	r := &relay{at: at, resp: resp, rc: http.NewResponseController(at.w)}
	r.tap.boundary = true // nothing sent yet: a ping may go first
	return r
}

// holdback reads the stream until its first content event. It returns "" when the stream is
// good (or was committed by the timer), or the failure ("network", or the SSE error type such
// as "overloaded_error") when it broke before any content reached the client. The decision and
// holdDone are taken under mu, so the timer either committed before it or never will.
func (r *relay) holdback(d time.Duration) string {
	timer := time.AfterFunc(d, func() {
		r.mu.Lock()
		if !r.holdDone {
			r.commitLocked()
		}
		r.mu.Unlock()
	})
	defer timer.Stop()
	bp := ssePool.Get().(*[]byte)
	defer ssePool.Put(bp)
	for {
		n, err := r.resp.Body.Read(*bp)
		r.mu.Lock()
		if n > 0 {
			r.tap.feed((*bp)[:n])
			if r.committed {
				r.writeLocked((*bp)[:n])
			} else {
				r.held = append(r.held, (*bp)[:n]...)
			}
		}
		result, done := "", false
		switch {
		case r.committed:
			done = true // nothing can be failed over once bytes reached the client
		case r.tap.errType != "":
			result, done = r.tap.errType, true
		case r.tap.content:
			done = true
		case err != nil:
			result, done = "network", true
			if err == io.EOF && r.tap.stopped {
				result = ""
			}
		}
		if done {
			r.holdDone = true
		}
		r.mu.Unlock()
		if done {
			return result
		}
	}
}

// commitLocked sends the headers and any held bytes.
func (r *relay) commitLocked() {
	if r.committed {
		return
	}
	r.committed = true
	r.at.writeHeader(r.resp)
	if len(r.held) > 0 {
		r.writeLocked(r.held)
		r.held = nil
	} else {
		r.writeErr = r.rc.Flush()
	}
	r.ping = time.AfterFunc(r.at.g.idlePing, r.sendPing)
}

func (r *relay) writeLocked(p []byte) {
	if r.writeErr != nil {
		return
	}
	if _, err := r.at.w.Write(p); err != nil {
		r.writeErr = err
		return
	}
	r.writeErr = r.rc.Flush()
	if r.ping != nil {
		r.ping.Reset(r.at.g.idlePing)
	}
}

// stop ends the relay's timers; it reports whether the answer had already started.
func (r *relay) stop() (committed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished, r.holdDone = true, true
	if r.ping != nil {
		r.ping.Stop()
	}
	return r.committed
}

func (r *relay) sendPing() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	if r.writeErr != nil || !r.tap.boundary {
		if r.writeErr == nil {
			r.ping.Reset(r.at.g.idlePing)
		}
		return
	}
	r.writeLocked([]byte("event: ping\ndata: {\"type\": \"ping\"}\n\n"))
}

// finish commits (if the holdback has not) and relays the rest of the stream. A stream that
// ends without message_stop gets an SSE error event in Anthropic's shape, so SDKs raise
// instead of returning half a reply.
func (r *relay) finish() (usage, string) {
	r.mu.Lock()
	r.commitLocked()
	r.mu.Unlock()
	defer r.stop()
	// A stream spends most of its life waiting for the next event. A body that can wait
	// without a buffer (internal/h1's) lets the relay take one from the pool only once bytes
	// are there: 4 KiB less per open stream.
	waiter, _ := r.resp.Body.(interface{ Wait() })
	var rerr error
	for {
		if waiter != nil {
			waiter.Wait()
		}
		bp := ssePool.Get().(*[]byte)
		n, err := r.resp.Body.Read(*bp)
		var werr error
		if n > 0 {
			r.mu.Lock()
			r.tap.feed((*bp)[:n])
			r.writeLocked((*bp)[:n])
			werr = r.writeErr
			r.mu.Unlock()
		}
		ssePool.Put(bp)
		if werr != nil {
			return r.tap.usage, "client closed stream"
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	if r.tap.stopped || r.tap.errType != "" {
		if r.tap.errType != "" {
			return r.tap.usage, "upstream stream error: " + r.tap.errType
		}
		return r.tap.usage, ""
	}
	if r.at.r.Context().Err() != nil {
		return r.tap.usage, "client closed stream"
	}
	msg := "upstream stream ended before message_stop"
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		msg = "upstream stream broke: connection lost"
	}
	frame := []byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"" + msg + "\"}}\n\n")
	r.mu.Lock()
	if !r.tap.boundary {
		r.writeLocked([]byte("\n\n"))
	}
	r.writeLocked(frame)
	r.mu.Unlock()
	return r.tap.usage, msg
}

// usage is what the tap reads from an answer.
type usage struct{ in, out, cacheRead, cacheWrite int64 }

type usageJSON struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
}

func (u *usage) add(j usageJSON, withInput bool) {
	if withInput {
		u.in = max(u.in, j.InputTokens)
		u.cacheRead = max(u.cacheRead, j.CacheReadInputTokens)
		u.cacheWrite = max(u.cacheWrite, j.CacheCreationInputTokens)
	}
	// message_delta carries the cumulative output count.
	u.out = max(u.out, j.OutputTokens)
}

// sseTap watches an SSE byte stream without changing it: it tracks event boundaries and
// parses the few data lines that carry usage or errors, with a bounded line buffer.
type sseTap struct {
	line     []byte
	skip     bool // the current line is not needed (or too long)
	cr       bool // the previous byte was \r
	event    []byte
	boundary bool // the bytes so far end on an event boundary
	content  bool // a content event was seen
	stopped  bool // message_stop was seen
	errType  string
	usage    usage
}

// maxTapLine bounds what the tap keeps of one line; usage and error lines are small.
const maxTapLine = 64 << 10

func (t *sseTap) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexAny(p, "\r\n")
		if t.cr && p[0] == '\n' { // the \n of a \r\n pair
			t.cr = false
			p = p[1:]
			continue
		}
		t.cr = false
		if i < 0 {
			t.append(p)
			t.boundary = false
			return
		}
		t.append(p[:i])
		t.cr = p[i] == '\r'
		t.endLine()
		p = p[i+1:]
	}
}

func (t *sseTap) append(p []byte) {
	if len(p) == 0 || t.skip {
		return
	}
	if len(t.line)+len(p) > maxTapLine {
		t.skip, t.line = true, t.line[:0]
		return
	}
	before := len(t.line)
	t.line = append(t.line, p...)
	// Once the line's first 5 bytes are known, decide whether it is worth keeping: the data
	// of content deltas (nearly every byte of a stream) is not.
	if before < 5 && len(t.line) >= 5 && bytes.HasPrefix(t.line, []byte("data:")) && !t.wanted() {
		t.skip, t.line = true, t.line[:0]
	}
}

func (t *sseTap) wanted() bool {
	switch string(t.event) {
	case "message_start", "message_delta", "error":
		return true
	}
	return false
}

func (t *sseTap) endLine() {
	line, skipped := t.line, t.skip
	t.line, t.skip = t.line[:0], false
	if cap(t.line) > 16<<10 {
		t.line = nil // a long line passed: do not keep its buffer for the stream's life
	}
	if len(line) == 0 && !skipped {
		t.event = t.event[:0]
		t.boundary = true
		return
	}
	t.boundary = false
	if skipped {
		return
	}
	switch {
	case bytes.HasPrefix(line, []byte("event:")):
		t.event = append(t.event[:0], bytes.TrimSpace(line[6:])...)
		switch string(t.event) {
		case "content_block_start", "content_block_delta":
			t.content = true
		case "message_stop":
			t.stopped = true
		}
	case bytes.HasPrefix(line, []byte("data:")):
		t.data(bytes.TrimSpace(line[5:]))
	}
}

func (t *sseTap) data(d []byte) {
	switch string(t.event) {
	case "message_start":
		var v struct {
			Message struct {
				Usage usageJSON `json:"usage"`
			} `json:"message"`
		}
		if json.Unmarshal(d, &v) == nil {
			t.usage.add(v.Message.Usage, true)
		}
	case "message_delta":
		var v struct {
			Usage usageJSON `json:"usage"`
		}
		if json.Unmarshal(d, &v) == nil {
			t.usage.add(v.Usage, v.Usage.InputTokens > 0)
		}
	case "error":
		var v struct {
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if json.Unmarshal(d, &v) == nil && v.Error.Type != "" {
			t.errType = v.Error.Type
		} else {
			t.errType = "api_error"
		}
	}
}

// copyPlain relays a non-stream body. With tail it keeps the last bytes, where the Messages
// API writes its usage block (and where a small answer, such as a created batch, is whole).
func copyPlain(w http.ResponseWriter, body io.Reader, tail *tailBuf) string {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if tail == nil {
		if _, err := io.CopyBuffer(w, body, *bp); err != nil {
			return "relay: " + err.Error()
		}
		return ""
	}
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return "relay: " + werr.Error()
			}
			_, _ = tail.Write(buf[:n])
		}
		if err == io.EOF {
			return ""
		}
		if err != nil {
			return "relay: " + err.Error()
		}
	}
}

// tailPool recycles tail buffers, so a plain answer's usage tap allocates nothing.
var tailPool = sync.Pool{New: func() any { return new(tailBuf) }}

// tailBuf keeps the last 4 KiB written to it.
type tailBuf struct {
	b [4096]byte
	n int // bytes written in total
}

func (t *tailBuf) Write(p []byte) (int, error) {
	n := len(p)
	if n >= len(t.b) {
		copy(t.b[:], p[n-len(t.b):])
	} else {
		keep := min(t.n, len(t.b)-n)
		copy(t.b[:keep], t.b[min(t.n, len(t.b))-keep:min(t.n, len(t.b))])
		copy(t.b[keep:], p)
	}
	t.n += n
	return n, nil
}

func (t *tailBuf) bytes() []byte { return t.b[:min(t.n, len(t.b))] }

// id returns the top-level "id" of a JSON object answer that fits the buffer whole.
func (t *tailBuf) id() string {
	if t.n > len(t.b) {
		return ""
	}
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(t.bytes(), &v) != nil {
		return ""
	}
	return v.ID
}

func (t *tailBuf) usage() usage {
	b := t.bytes()
	i := bytes.LastIndex(b, []byte(`"usage"`))
	if i < 0 {
		return usage{}
	}
	j := bytes.IndexByte(b[i:], '{')
	if j < 0 {
		return usage{}
	}
	obj := b[i+j:]
	k := objectEnd(obj)
	if k < 0 {
		return usage{}
	}
	obj = obj[:k]
	var out usage
	out.add(usageJSON{
		InputTokens:              intField(obj, `"input_tokens"`),
		OutputTokens:             intField(obj, `"output_tokens"`),
		CacheReadInputTokens:     intField(obj, `"cache_read_input_tokens"`),
		CacheCreationInputTokens: intField(obj, `"cache_creation_input_tokens"`),
	}, true)
	return out
}

// objectEnd returns the index just past the JSON object b starts with, or -1.
func objectEnd(b []byte) int {
	depth, inStr := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// intField reads the integer value of key (quotes included, so "input_tokens" does not match
// "cache_read_input_tokens") in obj; 0 when it is missing or not an integer.
func intField(obj []byte, key string) int64 {
	i := bytes.Index(obj, []byte(key))
	if i < 0 {
		return 0
	}
	rest := bytes.TrimLeft(obj[i+len(key):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return 0
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	var n int64
	k := 0
	for ; k < len(rest) && rest[k] >= '0' && rest[k] <= '9'; k++ {
		n = n*10 + int64(rest[k]-'0')
	}
	if k == 0 {
		return 0
	}
	return n
}
