package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestAuthorizeURL(t *testing.T) {
	f := newFakeIssuer(t)
	l := NewLogin(f.cfg())
	u, err := url.Parse(l.AuthorizeURL())
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != f.cfg().AuthorizeURL {
		t.Errorf("authorize endpoint = %s", got)
	}
	q := u.Query()
	want := map[string]string{
		"code":                  "true",
		"client_id":             testClientID,
		"response_type":         "code",
		"redirect_uri":          f.cfg().RedirectURI,
		"scope":                 "org:create_api_key user:profile user:inference",
		"code_challenge_method": "S256",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, q.Get(k), v)
		}
	}
	sum := sha256.Sum256([]byte(l.verifier))
	if q.Get("code_challenge") != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("code_challenge is not S256 of the verifier")
	}
	if len(q.Get("state")) < 40 || q.Get("state") == l.verifier {
		t.Errorf("state %q: want a long random value distinct from the verifier", q.Get("state"))
	}
	if strings.Contains(l.AuthorizeURL(), l.verifier) {
		t.Errorf("the URL reveals the code verifier")
	}
	if NewLogin(f.cfg()).AuthorizeURL() == l.AuthorizeURL() {
		t.Errorf("two logins share state and challenge")
	}
}

func TestExchange(t *testing.T) {
	tests := []struct {
		name      string
		paste     func(state string) string
		wantErr   error
		wantCalls int
	}{
		{"code#state", func(s string) string { return "the-code#" + s }, nil, 1},
		{"with spaces and newline", func(s string) string { return "  the-code#" + s + "\n" }, nil, 1},
		{"whole callback URL", func(s string) string {
			return "https://platform.claude.com/oauth/code/callback?code=the-code&state=" + s
		}, nil, 1},
		{"state mismatch", func(s string) string { return "the-code#" + s + "x" }, ErrStateMismatch, 0},
		{"no state", func(string) string { return "the-code" }, ErrBadCode, 0},
		{"empty", func(string) string { return "" }, ErrBadCode, 0},
		{"wrong code", func(s string) string { return "other-code#" + s }, ErrInvalidGrant, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			l := NewLogin(f.cfg())
			f.expectCode("the-code", l.challenge())
			start := time.Now()
			tok, err := l.Exchange(t.Context(), f.srv.Client(), tt.paste(l.state))
			if _, calls := f.counts(); calls != tt.wantCalls {
				t.Errorf("token endpoint called %d times, want %d", calls, tt.wantCalls)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				assertNoSecrets(t, "error", err.Error(), append(f.secrets(), l.verifier, l.state))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != f.current() || tok.RefreshToken == "" || !f.isValid(tok.RefreshToken) {
				t.Errorf("token = %v, not the pair the endpoint issued", tok)
			}
			if d := tok.ExpiresAt.Sub(start); d < 59*time.Minute || d > 61*time.Minute {
				t.Errorf("expires_at %v is not about an hour (expires_in 3600) away", tok.ExpiresAt)
			}
			if tok.Extra["scope"] == nil || tok.Extra["account"] == nil || tok.Extra["expires_in"] != nil {
				t.Errorf("extra = %v: want the answer's other fields, without expires_in", tok.Extra)
			}
		})
	}
}

func TestEndpointErrorShapes(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		wantCode  string
		permanent bool
		invalid   bool
	}{
		{"oauth invalid_grant", 400, `{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}`, "invalid_grant", true, true},
		{"anthropic shape", 404, `{"type":"error","error":{"type":"not_found_error","message":"Not Found"}}`, "not_found_error", false, false},
		{"html", 502, `<html>bad gateway</html>`, "", false, false},
		{"echoes a secret", 500, `{"error":"server_error","error_description":"failed for sk-ant-ort01-SECRET"}`, "server_error", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := endpointError(tt.status, []byte(tt.body), []string{"sk-ant-ort01-SECRET"})
			if e.Code != tt.wantCode || e.Permanent() != tt.permanent || errors.Is(e, ErrInvalidGrant) != tt.invalid {
				t.Errorf("got %+v (permanent %v)", e, e.Permanent())
			}
			if strings.Contains(e.Error(), "SECRET") {
				t.Errorf("error echoes a secret: %v", e)
			}
		})
	}
}
