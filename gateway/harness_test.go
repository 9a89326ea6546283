package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/internal/syncbuf"
	"github.com/claude-lb/claude-lb/store/memory"
)

// Credentials of the test pool. The fake upstream accepts only these, so a request that
// arrives with anything else (the client's key) fails loudly.
const (
	keyPersonal = "sk-ant-api03-personal-0000000000000000001"
	tokWork     = "sk-ant-oat01-work-00000000000000000000002"
	tokTeam     = "sk-ant-oat01-team-00000000000000000000003"
	clientKey   = "sk-client-laptop-key-should-never-go-upstream"
)

// env is one gateway in front of a fake Anthropic API.
type env struct {
	t     *testing.T
	fake  *fakeapi.Server
	gw    *Gateway
	srv   *httptest.Server
	store *memory.Store
	logs  *syncbuf.Buffer
}

// pool is the ORIGIN.md setup plus a second max account.
func pool() []config.Account {
	return []config.Account{
		{Name: "personal", Plan: "console", APIKey: keyPersonal},
		{Name: "work", Plan: "max", OAuthToken: tokWork},
		{Name: "team", Plan: "max", OAuthToken: tokTeam},
	}
}

// poolConfig is the test pool's config in front of fake, which accepts the pool's credentials.
func poolConfig(fake *fakeapi.Server) *config.Config {
	fake.Accept(keyPersonal, tokWork, tokTeam)
	cfg := config.Default()
	cfg.Upstream.URL = fake.URL
	cfg.Accounts = pool()
	cfg.Hash = "test"
	return cfg
}

func newEnv(t *testing.T, mutate func(*config.Config)) *env {
	t.Helper()
	fake := fakeapi.New(t)
	cfg := poolConfig(fake)
	if mutate != nil {
		mutate(cfg)
	}
	return newEnvWith(t, fake, cfg, nil)
}

func newEnvWith(t *testing.T, fake *fakeapi.Server, cfg *config.Config, rt http.RoundTripper) *env {
	t.Helper()
	st := memory.New(memory.Options{HistorySize: 100})
	logs := &syncbuf.Buffer{}
	gw, err := New(cfg, Options{
		Store: st, AdminStore: st, Transport: rt, Replica: "test-replica",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &env{t: t, fake: fake, gw: gw, srv: srv, store: st, logs: logs}
}

// sdk is the official Go SDK pointed at the gateway.
func (e *env) sdk(opts ...option.RequestOption) anthropic.Client {
	base := []option.RequestOption{option.WithBaseURL(e.srv.URL), option.WithAPIKey(clientKey), option.WithMaxRetries(0)}
	return anthropic.NewClient(append(base, opts...)...)
}

// post sends a raw request and returns status, headers and body.
func (e *env) post(path, body string, hdr ...string) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", clientKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func msgBody(model string) string {
	return `{"model":"` + model + `","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`
}

// accountOf maps an upstream credential back to the pool account that owns it.
func accountOf(cred string) string {
	switch cred {
	case keyPersonal:
		return "personal"
	case tokWork:
		return "work"
	case tokTeam:
		return "team"
	}
	return "UNKNOWN:" + cred
}

// served counts the upstream requests per account.
func (e *env) served() map[string]int {
	out := map[string]int{}
	for _, r := range e.fake.Requests() {
		out[accountOf(r.Credential)]++
	}
	return out
}

// streamOpus sends a streaming Opus request through the SDK and returns the accumulated
// message and the stream's error.
func (e *env) streamOpus() (anthropic.Message, error) {
	c := e.sdk()
	stream := c.Messages.NewStreaming(e.t.Context(), anthropic.MessageNewParams{
		Model: "claude-opus-5-5", MaxTokens: 64,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			return acc, err
		}
	}
	return acc, stream.Err()
}
