package fakeapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/claude-lb/claude-lb/internal/fakeapi"
)

// client is an SDK client of s that never retries, so that each call is one
// request on the fake.
func client(s *fakeapi.Server, opts ...option.RequestOption) *anthropic.Client {
	c := anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(s.URL),
		option.WithAPIKey("sk-ant-api03-test-key-abcd"),
		option.WithMaxRetries(0),
	}, opts...)...)
	return &c
}

func params(model string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}
}

// do sends a raw request and returns the response with its whole body.
func do(t *testing.T, method, url, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res, string(b)
}

var (
	msgIDRe = regexp.MustCompile(`"id":"msg_01[1-9A-HJ-NP-Za-km-z]{22}"`)
	reqIDRe = regexp.MustCompile(`^req_011C[1-9A-HJ-NP-Za-km-z]{20}$`)
)

// maskID replaces the message id, which is unique per answer.
func maskID(s string) string { return msgIDRe.ReplaceAllString(s, `"id":"msg_ID"`) }

func TestSDKMessage(t *testing.T) {
	s := fakeapi.New(t)
	s.Accept("sk-ant-api03-test-key-abcd")
	var raw *http.Response
	msg, err := client(s).Messages.New(t.Context(), params(fakeapi.ModelOpus), option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Model != fakeapi.ModelOpus || msg.Role != "assistant" || msg.StopReason != anthropic.StopReasonEndTurn {
		t.Errorf("model %q role %q stop %q", msg.Model, msg.Role, msg.StopReason)
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text != "Hello from abcd" {
		t.Errorf("content = %+v", msg.Content)
	}
	want := fakeapi.DefaultUsage()
	u := msg.Usage
	if u.InputTokens != int64(want.InputTokens) || u.OutputTokens != int64(want.OutputTokens) ||
		u.CacheCreationInputTokens != int64(want.CacheCreationInputTokens) || u.CacheReadInputTokens != int64(want.CacheReadInputTokens) {
		t.Errorf("usage = %s, want %+v", u.RawJSON(), want)
	}
	if !strings.HasPrefix(msg.ID, "msg_01") || len(msg.ID) != 28 {
		t.Errorf("id = %q", msg.ID)
	}
	if got := raw.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content-type = %q", got)
	}
	if got := raw.Header.Get("Request-Id"); !reqIDRe.MatchString(got) {
		t.Errorf("request-id = %q", got)
	}
	if raw.Header.Get("Anthropic-Ratelimit-Requests-Limit") == "" || raw.Header.Get("Anthropic-Ratelimit-Tokens-Reset") == "" {
		t.Errorf("no API-key rate-limit headers in %v", raw.Header)
	}

	reqs := s.Requests()
	if len(reqs) != 1 || s.Count() != 1 {
		t.Fatalf("recorded %d requests, Count %d", len(reqs), s.Count())
	}
	r := reqs[0]
	// The v2 SDK sends its API key as a Bearer token, not as x-api-key.
	if r.N != 1 || r.Method != "POST" || r.Path != "/v1/messages" || r.Model != fakeapi.ModelOpus || r.Stream ||
		r.Credential != "sk-ant-api03-test-key-abcd" || !r.Bearer || r.BodyLen != len(r.Body) || r.Header.Get("Anthropic-Version") == "" {
		t.Errorf("recorded %+v", r)
	}
}

func TestSDKStream(t *testing.T) {
	s := fakeapi.New(t)
	stream := client(s).Messages.NewStreaming(t.Context(), params(fakeapi.ModelHaiku))
	defer stream.Close()
	var msg anthropic.Message
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		if err := msg.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	// The SDK drops ping events.
	wantTypes := "message_start content_block_start content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(types, " "); got != wantTypes {
		t.Errorf("events:\n got %s\nwant %s", got, wantTypes)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "Hello from abcd" {
		t.Errorf("accumulated content = %+v", msg.Content)
	}
	want := fakeapi.DefaultUsage()
	if msg.Model != fakeapi.ModelHaiku || msg.StopReason != anthropic.StopReasonEndTurn ||
		msg.Usage.OutputTokens != int64(want.OutputTokens) || msg.Usage.InputTokens != int64(want.InputTokens) ||
		msg.Usage.CacheReadInputTokens != int64(want.CacheReadInputTokens) {
		t.Errorf("accumulated %s", msg.RawJSON())
	}
	if r := s.Requests()[0]; !r.Stream || r.Model != fakeapi.ModelHaiku {
		t.Errorf("recorded %+v", r)
	}
}

// TestDefaultStreamWire pins the exact bytes of the default stream.
func TestDefaultStreamWire(t *testing.T) {
	s := fakeapi.New(t)
	res, body := do(t, "POST", s.URL+"/v1/messages?beta=true", `{"model":"claude-sonnet-5-5","stream":true,"max_tokens":5}`,
		"x-api-key", "key-wxyz")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("status %d, headers %v", res.StatusCode, res.Header)
	}
	want := `event: message_start
data: {"type":"message_start","message":{"model":"claude-sonnet-5-5","id":"msg_ID","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"stop_details":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":34,"cache_read_input_tokens":1055,"cache_creation":{"ephemeral_5m_input_tokens":34,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" from"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" wxyz"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null,"stop_details":null},"usage":{"input_tokens":21,"cache_creation_input_tokens":34,"cache_read_input_tokens":1055,"output_tokens":9}}

event: message_stop
data: {"type":"message_stop"}

`
	if got := maskID(body); got != want {
		t.Errorf("stream:\n%s\nwant:\n%s", got, want)
	}

	// StreamEventsWithUsage builds the same sequence.
	var b strings.Builder
	for _, ev := range fakeapi.StreamEventsWithUsage("claude-sonnet-5-5", []string{"Hello", " from", " wxyz"}, fakeapi.DefaultUsage()) {
		b.WriteString("event: " + ev.Name + "\ndata: " + ev.Data + "\n\n")
	}
	if got := maskID(b.String()); got != want {
		t.Errorf("StreamEventsWithUsage:\n%s\nwant:\n%s", got, want)
	}
	if r := s.Requests()[0]; r.RawQuery != "beta=true" || r.Credential != "key-wxyz" || r.Bearer {
		t.Errorf("recorded %+v", r)
	}
}

func TestMessageJSON(t *testing.T) {
	got := maskID(string(fakeapi.MessageJSON("m", "a \"quoted\" <b>\n", 3, 4)))
	want := `{"model":"m","id":"msg_ID","type":"message","role":"assistant","content":[{"type":"text","text":"a \"quoted\" <b>\n"}],"stop_reason":"end_turn","stop_sequence":null,"stop_details":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":4,"service_tier":"standard"}}`
	if got != want {
		t.Errorf("MessageJSON:\n got %s\nwant %s", got, want)
	}
	var m anthropic.Message
	if err := json.Unmarshal(fakeapi.MessageJSON("m", "x", 1, 2), &m); err != nil || m.Content[0].Text != "x" {
		t.Errorf("SDK decode: %v %+v", err, m)
	}
}

func TestSDKCountTokensAndModels(t *testing.T) {
	s := fakeapi.New(t)
	c := client(s)
	n, err := c.Messages.CountTokens(t.Context(), anthropic.MessageCountTokensParams{
		Model:    fakeapi.ModelSonnet,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(max(1, s.Requests()[0].BodyLen/4)); n.InputTokens != want {
		t.Errorf("input_tokens = %d, want %d", n.InputTokens, want)
	}

	page, err := c.Models.List(t.Context(), anthropic.ModelListParams{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Type != "model" || m.DisplayName == "" || m.CreatedAt.IsZero() {
			t.Errorf("model %s", m.RawJSON())
		}
	}
	if got := strings.Join(ids, ","); got != "claude-opus-5-5,claude-sonnet-5-5,claude-haiku-5-5" ||
		page.HasMore || page.FirstID != fakeapi.ModelOpus || page.LastID != fakeapi.ModelHaiku {
		t.Errorf("page %s", page.RawJSON())
	}

	// Paging one at a time walks the same list.
	ids = nil
	iter := c.Models.ListAutoPaging(t.Context(), anthropic.ModelListParams{Limit: anthropic.Int(1)})
	for iter.Next() {
		ids = append(ids, iter.Current().ID)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids, ","); got != "claude-opus-5-5,claude-sonnet-5-5,claude-haiku-5-5" {
		t.Errorf("auto-paged %s", got)
	}

	m, err := c.Models.Get(t.Context(), fakeapi.ModelHaiku, anthropic.ModelGetParams{})
	if err != nil || m.ID != fakeapi.ModelHaiku || m.DisplayName != "Claude Haiku 5.5" {
		t.Errorf("get: %v %+v", err, m)
	}
	_, err = c.Models.Get(t.Context(), "claude-nope", anthropic.ModelGetParams{})
	if apiErr := asAPIError(t, err); apiErr.StatusCode != 404 || apiErr.Type() != "not_found_error" {
		t.Errorf("unknown model: %v", err)
	}
}

func asAPIError(t *testing.T, err error) *anthropic.Error {
	t.Helper()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v (%T) is not an *anthropic.Error", err, err)
	}
	return apiErr
}

func TestAuth(t *testing.T) {
	s := fakeapi.New(t)
	s.Accept("good-key", "sk-ant-oat01-token-1234")

	_, err := client(s, option.WithAPIKey("bad-key")).Messages.New(t.Context(), params(fakeapi.ModelSonnet))
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 401 || apiErr.Type() != "authentication_error" || !reqIDRe.MatchString(apiErr.RequestID) {
		t.Errorf("unknown key: status %d type %q request-id %q", apiErr.StatusCode, apiErr.Type(), apiErr.RequestID)
	}
	if !strings.Contains(apiErr.RawJSON(), `"request_id":"`+apiErr.RequestID+`"`) {
		t.Errorf("body %s does not carry request-id %s", apiErr.RawJSON(), apiErr.RequestID)
	}

	tests := []struct {
		name   string
		header []string
		status int
		want   string // in the body
	}{
		{"x-api-key", []string{"x-api-key", "good-key"}, 200, "Hello from -key"},
		{"bearer", []string{"Authorization", "Bearer good-key"}, 200, "Hello from -key"},
		{"unknown x-api-key", []string{"x-api-key", "nope"}, 401, `"invalid x-api-key"`},
		{"none", nil, 401, `"x-api-key header is required"`},
		{"oauth without beta", []string{"Authorization", "Bearer sk-ant-oat01-token-1234"}, 401, "OAuth authentication is currently not supported."},
		{"oauth in x-api-key", []string{"x-api-key", "sk-ant-oat01-token-1234", "anthropic-beta", "oauth-2025-04-20"}, 401, "invalid x-api-key"},
		{"oauth", []string{"Authorization", "Bearer sk-ant-oat01-token-1234", "anthropic-beta", "prompt-caching-2024-07-31, oauth-2025-04-20"}, 200, "Hello from 1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := do(t, "POST", s.URL+"/v1/messages", `{"model":"m"}`, tt.header...)
			if res.StatusCode != tt.status || !strings.Contains(body, tt.want) {
				t.Errorf("got %d %s, want %d with %s", res.StatusCode, body, tt.status, tt.want)
			}
			if tt.status == 401 && !strings.Contains(body, `"type":"authentication_error"`) {
				t.Errorf("body %s", body)
			}
		})
	}

	// OAuth accounts get the unified rate-limit headers, API keys the classic ones.
	res, _ := do(t, "POST", s.URL+"/v1/messages", `{}`, "Authorization", "Bearer sk-ant-oat01-token-1234", "anthropic-beta", "oauth-2025-04-20")
	if res.Header.Get("Anthropic-Ratelimit-Unified-Status") != "allowed" || res.Header.Get("Anthropic-Ratelimit-Unified-5h-Utilization") == "" ||
		res.Header.Get("Anthropic-Ratelimit-Requests-Limit") != "" {
		t.Errorf("oauth headers %v", res.Header)
	}

	s.Accept()
	if res, _ := do(t, "POST", s.URL+"/v1/messages", `{}`); res.StatusCode != 200 {
		t.Errorf("Accept() did not reopen: %d", res.StatusCode)
	}
}

func TestDefaultErrors(t *testing.T) {
	s := fakeapi.New(t)
	tests := []struct {
		name, method, path, body string
		status                   int
		errType                  string
	}{
		{"malformed", "POST", "/v1/messages", `{"model":`, 400, "invalid_request_error"},
		{"empty", "POST", "/v1/messages", ``, 400, "invalid_request_error"},
		{"malformed count", "POST", "/v1/messages/count_tokens", `nope`, 400, "invalid_request_error"},
		{"unknown path", "POST", "/v1/complete", `{}`, 404, "not_found_error"},
		{"wrong method", "GET", "/v1/messages", ``, 404, "not_found_error"},
		{"bad limit", "GET", "/v1/models?limit=0", ``, 400, "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := do(t, tt.method, s.URL+tt.path, tt.body)
			var e struct {
				Type  string `json:"type"`
				Error struct {
					Type    string `json:"type"`
					Message string `json:"message"`
				} `json:"error"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("%v in %s", err, body)
			}
			if res.StatusCode != tt.status || e.Type != "error" || e.Error.Type != tt.errType || e.Error.Message == "" ||
				e.RequestID != res.Header.Get("Request-Id") || res.Header.Get("Content-Type") != "application/json" {
				t.Errorf("got %d %s (request-id %s)", res.StatusCode, body, res.Header.Get("Request-Id"))
			}
		})
	}
}

func TestScriptedErrors(t *testing.T) {
	s := fakeapi.New(t)
	s.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		switch r.Model {
		case "overloaded":
			return &fakeapi.Reply{Status: 529}
		case "limited":
			r := fakeapi.ErrorReply(429, "rate_limit_error", "slow down")
			r.Header = http.Header{"retry-after": {"17"}}
			return r
		}
		return nil
	})
	c := client(s)

	_, err := c.Messages.New(t.Context(), params("overloaded"))
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 529 || apiErr.Type() != "overloaded_error" || apiErr.Message != "Overloaded" ||
		!strings.Contains(apiErr.RawJSON(), apiErr.RequestID) {
		t.Errorf("529: %v", err)
	}

	_, err = c.Messages.New(t.Context(), params("limited"))
	apiErr = asAPIError(t, err)
	if apiErr.StatusCode != 429 || apiErr.Type() != "rate_limit_error" || apiErr.Message != "slow down" ||
		apiErr.Response.Header.Get("Retry-After") != "17" || !strings.Contains(apiErr.RawJSON(), `"request_id":"`+apiErr.RequestID+`"`) {
		t.Errorf("429: %v, headers %v", err, apiErr.Response.Header)
	}
	// Scripted replies carry no default rate-limit headers.
	if h := apiErr.Response.Header.Get("Anthropic-Ratelimit-Requests-Reset"); h != "" {
		t.Errorf("scripted 429 has anthropic-ratelimit-requests-reset %q", h)
	}

	// nil from the script is the default answer.
	if msg, err := c.Messages.New(t.Context(), params("fine")); err != nil || msg.Model != "fine" {
		t.Errorf("default through script: %v", err)
	}
}

func TestStreamCut(t *testing.T) {
	s := fakeapi.New(t)
	s.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, []string{"a", "b", "c"}, 5, 3), CutAfter: 4}
	})
	stream := client(s).Messages.NewStreaming(t.Context(), params(fakeapi.ModelSonnet))
	defer stream.Close()
	var msg anthropic.Message
	for stream.Next() {
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if stream.Err() == nil {
		t.Fatal("a cut stream ended without an error")
	}
	if !errors.Is(stream.Err(), io.ErrUnexpectedEOF) {
		t.Logf("cut stream error: %v", stream.Err())
	}
	if got := msg.Content[0].Text; got != "a" {
		t.Errorf("text before the cut = %q, want %q", got, "a")
	}
}

func TestStreamErrorEvent(t *testing.T) {
	s := fakeapi.New(t)
	s.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		evs := fakeapi.StreamEvents(r.Model, []string{"partial"}, 5, 3)[:4]
		return &fakeapi.Reply{Events: append(evs, fakeapi.ErrorEvent("overloaded_error", "Overloaded"))}
	})
	stream := client(s).Messages.NewStreaming(t.Context(), params(fakeapi.ModelSonnet))
	defer stream.Close()
	n := 0
	for stream.Next() {
		n++
	}
	apiErr := asAPIError(t, stream.Err())
	if apiErr.Type() != "overloaded_error" || apiErr.Message != "Overloaded" || apiErr.StatusCode != 200 {
		t.Errorf("stream error %v (type %q)", apiErr, apiErr.Type())
	}
	if n != 3 {
		t.Errorf("%d events before the error, want 3 (ping is dropped)", n)
	}
}

func TestCutBody(t *testing.T) {
	s := fakeapi.New(t)
	body := fakeapi.MessageJSON("m", "hello", 1, 1)
	s.Script(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Body: body, CutAfter: 10} })
	res, err := http.Post(s.URL+"/v1/messages", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(got) != string(body[:10]) || res.ContentLength != int64(len(body)) {
		t.Errorf("read %q, %v (content-length %d)", got, err, res.ContentLength)
	}
}

// TestHold checks that headers and early events reach the client while the
// fake still holds the rest back, the stdlib reverseproxy flush test pattern.
func TestHold(t *testing.T) {
	s := fakeapi.New(t)
	hold := make(chan struct{})
	s.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{
			Header:    http.Header{"X-Test": {"1"}},
			Events:    fakeapi.StreamEvents(r.Model, []string{"x"}, 1, 1),
			Hold:      hold,
			HoldAfter: 1,
		}
	})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", s.URL+"/v1/messages", strings.NewReader(`{"stream":true}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("X-Test") != "1" {
		t.Errorf("header %v", res.Header)
	}
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "event: message_start\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // data
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err != nil { // blank
		t.Fatal(err)
	}
	if br.Buffered() != 0 {
		t.Errorf("%d bytes arrived while held", br.Buffered())
	}
	close(hold)
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasSuffix(string(rest), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Errorf("rest %q, %v", rest, err)
	}
	if s.CanceledCount() != 0 {
		t.Errorf("CanceledCount = %d after a complete answer", s.CanceledCount())
	}
}

// TestCanceled proves that a client hang-up is observed while the fake still
// answers, whatever it is doing.
func TestCanceled(t *testing.T) {
	tests := []struct {
		name  string
		reply fakeapi.Reply
	}{
		{"hang", fakeapi.Reply{Events: []fakeapi.Event{{Name: "ping", Data: `{"type": "ping"}`}}, Hang: true}},
		{"delay", fakeapi.Reply{Delay: time.Hour}},
		{"event delay", fakeapi.Reply{Events: fakeapi.StreamEvents("m", []string{"a", "b"}, 1, 1), EventDelay: time.Hour}},
		{"hold", fakeapi.Reply{Body: []byte(`{}`), Hold: make(chan struct{})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fakeapi.New(t)
			s.Script(func(*fakeapi.Request) *fakeapi.Reply { return &tt.reply })
			ctx, cancel := context.WithCancel(t.Context())
			req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/messages", strings.NewReader(`{}`))
			done := make(chan error, 1)
			go func() {
				res, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				done <- err
			}()
			if err := s.WaitCount(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			cancel() // the fake may be anywhere in its answer: each wait also watches the context
			if err := <-done; err == nil {
				t.Error("the client finished without an error")
			}
			wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer wcancel()
			if err := s.WaitCanceled(wctx, 1); err != nil {
				t.Fatalf("cancel not observed: %v", err)
			}
			if r := s.Requests(); !r[0].Canceled {
				t.Errorf("request not marked canceled: %+v", r[0])
			}
			for s.InFlight() != 0 {
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestCloseEndsHang(t *testing.T) {
	s := fakeapi.NewServer()
	s.Script(func(*fakeapi.Request) *fakeapi.Reply { return &fakeapi.Reply{Hang: true, Delay: time.Millisecond} })
	go func() {
		res, err := http.Post(s.URL+"/v1/messages", "application/json", strings.NewReader(`{}`))
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	if err := s.WaitCount(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a hanging request")
	}
}

func TestRawEventsAndEventDelay(t *testing.T) {
	s := fakeapi.New(t)
	raw := "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
	s.Script(func(*fakeapi.Request) *fakeapi.Reply {
		return &fakeapi.Reply{
			Events: []fakeapi.Event{
				{Raw: raw[:5]},
				{Raw: raw[5:]},
				{Name: "x", Data: "line1\nline2", Delay: 10 * time.Millisecond},
				{Data: "nameless"},
			},
			EventDelay: 5 * time.Millisecond,
		}
	})
	start := time.Now()
	res, body := do(t, "POST", s.URL+"/v1/messages", `{}`)
	want := raw + "event: x\ndata: line1\ndata: line2\n\ndata: nameless\n\n"
	if body != want || res.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Errorf("body %q", body)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Errorf("answered in %v, want at least 3 event delays and one event's delay", d)
	}
}

func TestUnifiedHeaders(t *testing.T) {
	reset := time.Unix(1800000000, 0)
	h := fakeapi.UnifiedHeaders(fakeapi.Unified{Status: "rejected", FiveHour: 1, SevenDay: 0.5, FiveHourReset: reset})
	for k, want := range map[string]string{
		"anthropic-ratelimit-unified-status":               "rejected",
		"anthropic-ratelimit-unified-reset":                "1800000000",
		"anthropic-ratelimit-unified-representative-claim": "five_hour",
		"anthropic-ratelimit-unified-5h-status":            "rejected",
		"anthropic-ratelimit-unified-5h-utilization":       "1.00",
		"anthropic-ratelimit-unified-7d-status":            "allowed",
		"anthropic-ratelimit-unified-7d-utilization":       "0.50",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestRecordOffAndReset(t *testing.T) {
	s := fakeapi.New(t)
	s.Record(false)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			res, err := http.Post(s.URL+"/v1/messages", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		})
	}
	wg.Wait()
	if s.Count() != 50 || len(s.Requests()) != 0 {
		t.Errorf("Count %d, %d recorded", s.Count(), len(s.Requests()))
	}
	s.Reset()
	s.Record(true)
	do(t, "GET", s.URL+"/v1/models", "")
	if r := s.Requests(); s.Count() != 1 || len(r) != 1 || r[0].N != 1 {
		t.Errorf("after Reset: Count %d, %+v", s.Count(), r)
	}
}

func BenchmarkDefaultMessage(b *testing.B) {
	s := fakeapi.New(b)
	s.Record(false)
	body := `{"model":"claude-sonnet-5-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := http.Post(s.URL+"/v1/messages", "application/json", strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

func BenchmarkDefaultStream(b *testing.B) {
	s := fakeapi.New(b)
	s.Record(false)
	body := `{"model":"claude-sonnet-5-5","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := http.Post(s.URL+"/v1/messages", "application/json", strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
