package fakeapi

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Models the fake lists on GET /v1/models, newest family first.
const (
	ModelOpus   = "claude-opus-5-5"
	ModelSonnet = "claude-sonnet-5-5"
	ModelHaiku  = "claude-haiku-5-5"

	// DefaultModel is echoed by the default POST /v1/messages reply when the
	// body names no model.
	DefaultModel = ModelSonnet
)

// Usage is the token accounting of one Message. The JSON carries it as
// usage.input_tokens, usage.output_tokens, usage.cache_creation_input_tokens and
// usage.cache_read_input_tokens.
type Usage struct {
	InputTokens              int
	OutputTokens             int
	CacheCreationInputTokens int
	CacheReadInputTokens     int
}

// DefaultUsage is the usage of the default POST /v1/messages reply, plain and
// streamed. Every count is distinct and non-zero so that a test can tell the
// fields apart.
func DefaultUsage() Usage {
	return Usage{InputTokens: 21, OutputTokens: 9, CacheCreationInputTokens: 34, CacheReadInputTokens: 1055}
}

// Event is one server-sent event, written as "event: Name\ndata: Data\n\n"
// (a Data with newlines becomes one data line per line; an empty Name omits the
// event line) and flushed at once.
type Event struct {
	Name string
	Data string
	// Raw, if set, is written as is instead of Name and Data: for line-ending
	// and chunking tests ("data: {...}\r\n\r\n", half a frame, a comment line).
	Raw string
	// Delay is slept before this event is written (on top of Reply.EventDelay).
	Delay time.Duration
}

// MessageJSON is the exact body of a non-streaming Messages reply: one text
// block, stop_reason end_turn, and usage with in input and out output tokens
// (no cache tokens).
func MessageJSON(model, text string, in, out int) []byte {
	return MessageWithUsage(model, text, Usage{InputTokens: in, OutputTokens: out})
}

// MessageWithUsage is MessageJSON with every usage count given.
func MessageWithUsage(model, text string, u Usage) []byte {
	return appendMessage(nil, randomID("msg_01", 22), model, text, u)
}

// StreamEvents is the exact event sequence of a streamed Messages reply whose
// text is the concatenation of chunks: message_start, content_block_start,
// ping, one content_block_delta (text_delta) per chunk, content_block_stop,
// message_delta (stop_reason end_turn, usage.output_tokens = out) and
// message_stop.
func StreamEvents(model string, chunks []string, in, out int) []Event {
	return StreamEventsWithUsage(model, chunks, Usage{InputTokens: in, OutputTokens: out})
}

// StreamEventsWithUsage is StreamEvents with every usage count given.
func StreamEventsWithUsage(model string, chunks []string, u Usage) []Event {
	id := randomID("msg_01", 22)
	evs := make([]Event, 0, len(chunks)+6)
	evs = append(evs,
		Event{Name: "message_start", Data: string(appendMessageStart(nil, id, model, u))},
		Event{Name: "content_block_start", Data: contentBlockStartData},
		Event{Name: "ping", Data: pingData},
	)
	for _, c := range chunks {
		evs = append(evs, Event{Name: "content_block_delta", Data: string(appendTextDelta(nil, c))})
	}
	return append(evs,
		Event{Name: "content_block_stop", Data: contentBlockStopData},
		Event{Name: "message_delta", Data: string(appendMessageDelta(nil, u))},
		Event{Name: "message_stop", Data: messageStopData},
	)
}

// ErrorJSON is the exact body of an API error:
// {"type":"error","error":{"type":errType,"message":msg},"request_id":"req_..."}
// with a fresh request id. When a Reply carries it and no request-id header, the
// fake sends the same id in the request-id header.
func ErrorJSON(errType, msg string) []byte {
	return appendError(nil, errType, msg, randomID("req_011C", 20))
}

// ErrorEvent is the SSE error frame the API sends when a stream fails after it
// started, e.g. ErrorEvent("overloaded_error", "Overloaded") is
// event: error / data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}.
func ErrorEvent(errType, msg string) Event {
	b := append([]byte(nil), `{"type":"error","error":{"type":`...)
	b = appendString(b, errType)
	b = append(b, `,"message":`...)
	b = appendString(b, msg)
	b = append(b, "}}"...)
	return Event{Name: "error", Data: string(b)}
}

// ErrorReply is a Reply with the given status and an ErrorJSON body.
func ErrorReply(status int, errType, msg string) *Reply {
	return &Reply{Status: status, Body: ErrorJSON(errType, msg)}
}

// ErrorType is the error.type the API uses for an HTTP status: 400
// invalid_request_error, 401 authentication_error, 402 billing_error, 403
// permission_error, 404 not_found_error, 413 request_too_large, 429
// rate_limit_error, 504 timeout_error, 529 overloaded_error, any other api_error.
func ErrorType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 504:
		return "timeout_error"
	case 529:
		return "overloaded_error"
	}
	return "api_error"
}

// errorMessage is the message of a reply that set only a status.
func errorMessage(status int) string {
	switch status {
	case 429:
		return "This request would exceed your account's rate limit. Please try again later."
	case 529:
		return "Overloaded"
	case 500:
		return "Internal server error"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Error"
}

// Unified is the state of a subscription (Pro/Max, OAuth) account as the API
// reports it in its anthropic-ratelimit-unified-* headers.
type Unified struct {
	// Status is the overall decision: "allowed", "allowed_warning" or
	// "rejected"; "" means "allowed".
	Status string
	// FiveHour and SevenDay are the utilizations of the two windows (1.0 = 100%).
	FiveHour, SevenDay float64
	// FiveHourReset and SevenDayReset end the windows; zero means 5h and 7d from now.
	FiveHourReset, SevenDayReset time.Time
	// Claim is the representative claim, the window the decision is about:
	// "five_hour" (the default) or "seven_day".
	Claim string
}

// UnifiedHeaders renders u as the headers the API sends for OAuth accounts:
// anthropic-ratelimit-unified-status, -reset (unix seconds of the claim's
// window), -representative-claim, -fallback-percentage and, for each window,
// -5h-status/-5h-reset/-5h-utilization and the same for 7d. A window's status
// is u.Status if it is the claim's, else "rejected" at utilization >= 1 and
// "allowed" below.
func UnifiedHeaders(u Unified) http.Header {
	now := time.Now()
	if u.Status == "" {
		u.Status = "allowed"
	}
	if u.Claim == "" {
		u.Claim = "five_hour"
	}
	if u.FiveHourReset.IsZero() {
		u.FiveHourReset = now.Add(5 * time.Hour)
	}
	if u.SevenDayReset.IsZero() {
		u.SevenDayReset = now.Add(7 * 24 * time.Hour)
	}
	status := func(claim string, util float64) string {
		switch {
		case claim == u.Claim:
			return u.Status
		case util >= 1:
			return "rejected"
		}
		return "allowed"
	}
	reset := u.FiveHourReset
	if u.Claim == "seven_day" {
		reset = u.SevenDayReset
	}
	unix := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	util := func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }
	h := http.Header{}
	h.Set("anthropic-ratelimit-unified-status", u.Status)
	h.Set("anthropic-ratelimit-unified-reset", unix(reset))
	h.Set("anthropic-ratelimit-unified-representative-claim", u.Claim)
	h.Set("anthropic-ratelimit-unified-fallback-percentage", "0.5")
	h.Set("anthropic-ratelimit-unified-5h-status", status("five_hour", u.FiveHour))
	h.Set("anthropic-ratelimit-unified-5h-reset", unix(u.FiveHourReset))
	h.Set("anthropic-ratelimit-unified-5h-utilization", util(u.FiveHour))
	h.Set("anthropic-ratelimit-unified-7d-status", status("seven_day", u.SevenDay))
	h.Set("anthropic-ratelimit-unified-7d-reset", unix(u.SevenDayReset))
	h.Set("anthropic-ratelimit-unified-7d-utilization", util(u.SevenDay))
	return h
}

// Wire fragments. The ping data has a space after the colon, as the API sends it.
const (
	contentBlockStartData = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	pingData              = `{"type": "ping"}`
	contentBlockStopData  = `{"type":"content_block_stop","index":0}`
	messageStopData       = `{"type":"message_stop"}`
)

// appendMessage appends a complete non-streaming Message object.
func appendMessage(dst []byte, id, model, text string, u Usage) []byte {
	dst = append(dst, `{"model":`...)
	dst = appendString(dst, model)
	dst = append(dst, `,"id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","type":"message","role":"assistant","content":[{"type":"text","text":`...)
	dst = appendString(dst, text)
	dst = append(dst, `}],"stop_reason":"end_turn","stop_sequence":null,"stop_details":null,"usage":`...)
	dst = appendUsage(dst, u, u.OutputTokens)
	return append(dst, '}')
}

// appendUsage appends the usage object of a Message; message_start reports
// out = 1, the whole message its real output count.
func appendUsage(dst []byte, u Usage, out int) []byte {
	dst = append(dst, `{"input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.InputTokens), 10)
	dst = append(dst, `,"cache_creation_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CacheCreationInputTokens), 10)
	dst = append(dst, `,"cache_read_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CacheReadInputTokens), 10)
	dst = append(dst, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CacheCreationInputTokens), 10)
	dst = append(dst, `,"ephemeral_1h_input_tokens":0},"output_tokens":`...)
	dst = strconv.AppendInt(dst, int64(out), 10)
	return append(dst, `,"service_tier":"standard"}`...)
}

func appendMessageStart(dst []byte, id, model string, u Usage) []byte {
	dst = append(dst, `{"type":"message_start","message":{"model":`...)
	dst = appendString(dst, model)
	dst = append(dst, `,"id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"stop_details":null,"usage":`...)
	dst = appendUsage(dst, u, min(1, u.OutputTokens))
	return append(dst, "}}"...)
}

func appendTextDelta(dst []byte, text string) []byte {
	dst = append(dst, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`...)
	dst = appendString(dst, text)
	return append(dst, "}}"...)
}

// appendMessageDelta appends the closing message_delta: its usage counts are
// cumulative totals for the whole message, as the API sends them.
func appendMessageDelta(dst []byte, u Usage) []byte {
	dst = append(dst, `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null,"stop_details":null},"usage":{"input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.InputTokens), 10)
	dst = append(dst, `,"cache_creation_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CacheCreationInputTokens), 10)
	dst = append(dst, `,"cache_read_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CacheReadInputTokens), 10)
	dst = append(dst, `,"output_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.OutputTokens), 10)
	return append(dst, "}}"...)
}

func appendError(dst []byte, errType, msg, requestID string) []byte {
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = appendString(dst, errType)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	dst = append(dst, `},"request_id":"`...)
	dst = append(dst, requestID...)
	return append(dst, `"}`...)
}

// appendFrame appends one SSE frame. A data with newlines becomes one data
// line per line.
func appendFrame(dst []byte, name, data string) []byte {
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	for {
		line, rest, more := strings.Cut(data, "\n")
		dst = append(dst, "data: "...)
		dst = append(dst, line...)
		dst = append(dst, '\n')
		if !more {
			break
		}
		data = rest
	}
	return append(dst, '\n')
}

// appendString appends s as a JSON string the way the API encodes it: <, >
// and & stay literal, control characters are escaped, invalid UTF-8 becomes
// U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// base58 is the alphabet of the API's object ids (msg_01..., req_011C...).
const base58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// randomID is prefix followed by n random base58 characters.
func randomID(prefix string, n int) string {
	b := make([]byte, len(prefix), len(prefix)+n)
	copy(b, prefix)
	for range n {
		b = append(b, base58[rand.IntN(len(base58))])
	}
	return string(b)
}

// appendCounterID appends prefix, the server's random tag, and seq in
// base58 padded to width: unique per server without locking or randomness.
func appendCounterID(dst []byte, prefix, tag string, seq uint64, width int) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, tag...)
	var digits [16]byte
	for i := width - 1; i >= 0; i-- {
		digits[i] = base58[seq%58]
		seq /= 58
	}
	return append(dst, digits[:width]...)
}
