package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/syncbuf"
)

// fakeIssuer is a local OAuth token endpoint that behaves like Anthropic's: refresh tokens
// rotate on every use and a refresh token used twice gets invalid_grant.
type fakeIssuer struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	refreshes int             // refresh requests that reached the endpoint
	exchanges int             // authorization_code requests
	valid     map[string]bool // refresh tokens not yet used
	access    string          // the access token issued last
	codes     map[string]string
	issued    []string // every secret handed out, for leak checks
	delay     time.Duration
	expiresIn int
	failNext  int // answer the next N refreshes with 500 (echoing the refresh token)
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{t: t, valid: map[string]bool{}, codes: map[string]string{}, expiresIn: 3600}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

const testClientID = "test-client-id"

// cfg is an oauth config section pointing at the fake.
func (f *fakeIssuer) cfg() config.OAuth {
	return config.OAuth{
		TokenURL:      f.srv.URL + "/v1/oauth/token",
		AuthorizeURL:  f.srv.URL + "/oauth/authorize",
		RedirectURI:   f.srv.URL + "/oauth/code/callback",
		ClientID:      testClientID,
		Scopes:        []string{"org:create_api_key", "user:profile", "user:inference"},
		RefreshBefore: 10 * time.Minute,
	}
}

func secret(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// issueLocked hands out a new pair.
func (f *fakeIssuer) issueLocked() (access, refresh string) {
	access, refresh = secret("sk-ant-oat01-"), secret("sk-ant-ort01-")
	f.valid[refresh] = true
	f.access = access
	f.issued = append(f.issued, access, refresh)
	return access, refresh
}

// login issues a pair as a completed `claude-lb login` would have, expiring at exp.
func (f *fakeIssuer) login(exp time.Time) Token {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, r := f.issueLocked()
	return Token{AccessToken: a, RefreshToken: r, ExpiresAt: exp.UTC().Truncate(time.Second)}
}

// expectCode makes code redeemable by the holder of the verifier of challenge.
func (f *fakeIssuer) expectCode(code, challenge string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.codes[code] = challenge
	f.issued = append(f.issued, code)
}

func (f *fakeIssuer) counts() (refreshes, exchanges int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes, f.exchanges
}

func (f *fakeIssuer) current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.access
}

func (f *fakeIssuer) isValid(refresh string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.valid[refresh]
}

func (f *fakeIssuer) secrets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.issued...)
}

func (f *fakeIssuer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/oauth/token" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want POST JSON to /v1/oauth/token", http.StatusBadRequest)
		return
	}
	var body map[string]string
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	oauthErr := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if body["client_id"] != testClientID {
		oauthErr(http.StatusBadRequest, "invalid_client", "unknown client")
		return
	}
	f.mu.Lock()
	delay := f.delay
	f.mu.Unlock()
	time.Sleep(delay)

	f.mu.Lock()
	defer f.mu.Unlock()
	switch body["grant_type"] {
	case "refresh_token":
		f.refreshes++
		rt := body["refresh_token"]
		if f.failNext > 0 {
			f.failNext--
			oauthErr(http.StatusInternalServerError, "server_error", "temporarily broken for "+rt)
			return
		}
		if !f.valid[rt] {
			oauthErr(http.StatusBadRequest, "invalid_grant", "Refresh token not found or invalid")
			return
		}
		delete(f.valid, rt)
	case "authorization_code":
		f.exchanges++
		challenge, ok := f.codes[body["code"]]
		sum := sha256.Sum256([]byte(body["code_verifier"]))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != challenge || body["state"] == "" ||
			!strings.HasSuffix(body["redirect_uri"], "/oauth/code/callback") {
			oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid code or verifier")
			return
		}
		delete(f.codes, body["code"])
	default:
		oauthErr(http.StatusBadRequest, "unsupported_grant_type", body["grant_type"])
		return
	}
	a, rt := f.issueLocked()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": a, "refresh_token": rt, "expires_in": f.expiresIn,
		"token_type": "Bearer", "scope": "user:inference user:profile",
		"account": map[string]string{"email_address": "team@example.com"},
	})
}

func testLogger(buf *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// assertNoSecrets fails when any issued secret appears in text.
func assertNoSecrets(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a token value (%s)", what, Fingerprint(s))
		}
	}
}
