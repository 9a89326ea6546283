package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/claude-lb/claude-lb/config"
)

// ErrStateMismatch means the pasted code was issued for another login attempt (or was
// tampered with): it is refused without contacting the token endpoint.
var ErrStateMismatch = errors.New("the pasted code belongs to another login attempt (state mismatch): start again with a fresh URL and paste the code it gives")

// ErrBadCode means the pasted value is not of the form code#state.
var ErrBadCode = errors.New("the pasted value is not a code of the form CODE#STATE: copy the whole code the page shows")

// Login is one PKCE authorization-code login (S256 challenge, random state), as Claude Code
// performs it: the user opens AuthorizeURL, signs in, and pastes back the code#state the
// callback page shows; Exchange trades it for a token pair.
type Login struct {
	cfg      config.OAuth
	verifier string
	state    string
	now      func() time.Time
}

// NewLogin starts a login with a fresh code verifier and state.
func NewLogin(cfg config.OAuth) *Login {
	return &Login{cfg: cfg, verifier: randomString(32), state: randomString(32), now: time.Now}
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// challenge is the S256 code challenge of the verifier.
func (l *Login) challenge() string {
	sum := sha256.Sum256([]byte(l.verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// AuthorizeURL is the page the user opens to sign in.
func (l *Login) AuthorizeURL() string {
	q := url.Values{}
	q.Set("code", "true")
	q.Set("client_id", l.cfg.ClientID)
	q.Set("response_type", "code")
	q.Set("redirect_uri", l.cfg.RedirectURI)
	q.Set("scope", strings.Join(l.cfg.Scopes, " "))
	q.Set("code_challenge", l.challenge())
	q.Set("code_challenge_method", "S256")
	q.Set("state", l.state)
	sep := "?"
	if strings.Contains(l.cfg.AuthorizeURL, "?") {
		sep = "&"
	}
	return l.cfg.AuthorizeURL + sep + q.Encode()
}

// parsePasted splits what the user pasted: "code#state", or the whole callback URL
// (…?code=…&state=…) for users who copy the address bar.
func parsePasted(pasted string) (code, state string, err error) {
	s := strings.TrimSpace(pasted)
	if strings.Contains(s, "://") {
		if u, perr := url.Parse(s); perr == nil && u.Query().Get("code") != "" {
			code, state = u.Query().Get("code"), u.Query().Get("state")
			if state == "" {
				state = u.Fragment
			}
			if state == "" {
				return "", "", ErrBadCode
			}
			return code, state, nil
		}
	}
	code, state, ok := strings.Cut(s, "#")
	if !ok || code == "" || state == "" || strings.ContainsAny(s, " \t") {
		return "", "", ErrBadCode
	}
	return code, state, nil
}

// Exchange checks the pasted code#state against this login's state and trades the code for
// a token pair at cfg.TokenURL (POST JSON: grant_type=authorization_code, code, state,
// client_id, redirect_uri, code_verifier). A state mismatch is refused (ErrStateMismatch)
// before anything is sent.
func (l *Login) Exchange(ctx context.Context, client *http.Client, pasted string) (Token, error) {
	code, state, err := parsePasted(pasted)
	if err != nil {
		return Token{}, err
	}
	if subtle.ConstantTimeCompare([]byte(state), []byte(l.state)) != 1 {
		return Token{}, ErrStateMismatch
	}
	tok, err := postToken(ctx, client, l.cfg.TokenURL, map[string]string{
		"grant_type":    "authorization_code",
		"code":          code,
		"state":         state,
		"client_id":     l.cfg.ClientID,
		"redirect_uri":  l.cfg.RedirectURI,
		"code_verifier": l.verifier,
	}, l.now(), code, l.verifier, state)
	if err != nil {
		return Token{}, fmt.Errorf("exchange the code: %w", err)
	}
	if tok.RefreshToken == "" {
		return Token{}, errors.New("exchange the code: the token endpoint gave no refresh_token, so the gateway could not keep this account logged in")
	}
	return tok, nil
}
