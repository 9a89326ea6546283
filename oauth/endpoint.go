package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrInvalidGrant means the token endpoint refused the code or refresh token for good
// ("invalid_grant"): the account needs a new `claude-lb login`.
var ErrInvalidGrant = errors.New("invalid_grant")

// EndpointError is a refusal from the token endpoint. It carries the OAuth error code and
// description, never the request or any token.
type EndpointError struct {
	// Status is the HTTP status of the answer.
	Status int
	// Code is the OAuth "error" value (invalid_grant, invalid_client, …), when the body had one.
	Code string
	// Description is the endpoint's error_description (or Anthropic error message), shortened.
	Description string
}

func (e *EndpointError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint answered %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalidGrant) true for an invalid_grant refusal.
func (e *EndpointError) Is(target error) bool {
	return target == ErrInvalidGrant && e.Code == "invalid_grant"
}

// Permanent reports whether retrying the same grant cannot succeed.
func (e *EndpointError) Permanent() bool {
	switch e.Code {
	case "invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type":
		return true
	}
	return false
}

// tokenResponse is the token endpoint's success answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
}

// maxAnswer bounds how much of a token endpoint answer is read.
const maxAnswer = 1 << 20

// postToken POSTs body as JSON to url and turns the answer into a Token. secrets are values
// of the request (code, verifier, refresh token) scrubbed from anything the endpoint echoes.
// Fields of the answer other than the three token fields are kept in Token.Extra.
func postToken(ctx context.Context, client *http.Client, url string, body map[string]string, now time.Time, secrets ...string) (Token, error) {
	if client == nil {
		client = http.DefaultClient
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Token{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return Token{}, fmt.Errorf("token endpoint %q: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// *url.Error quotes the URL only, never the body.
		return Token{}, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return Token{}, fmt.Errorf("token endpoint: read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return Token{}, endpointError(resp.StatusCode, raw, secrets)
	}
	var tr tokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil {
		return Token{}, fmt.Errorf("token endpoint answered %d with a body that is not a token (not JSON)", resp.StatusCode)
	}
	if tr.AccessToken == "" {
		return Token{}, fmt.Errorf("token endpoint answered %d without an access_token", resp.StatusCode)
	}
	tok := Token{AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken}
	if tr.ExpiresIn > 0 {
		tok.ExpiresAt = now.Add(time.Duration(tr.ExpiresIn) * time.Second).UTC().Truncate(time.Second)
	}
	var all map[string]any
	if json.Unmarshal(raw, &all) == nil {
		for _, k := range []string{keyAccess, keyRefresh, keyExpires, "expires_in", "id_token"} {
			delete(all, k)
		}
		if len(all) > 0 {
			tok.Extra = all
		}
	}
	return tok, nil
}

// endpointError decodes an OAuth ({"error","error_description"}) or Anthropic
// ({"type":"error","error":{"type","message"}}) refusal.
func endpointError(status int, raw []byte, secrets []string) *EndpointError {
	e := &EndpointError{Status: status}
	var oauthErr struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
	}
	if json.Unmarshal(raw, &oauthErr) == nil && len(oauthErr.Error) > 0 {
		var code string
		var nested struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(oauthErr.Error, &code) == nil:
			e.Code = code
			e.Description = oauthErr.ErrorDescription
		case json.Unmarshal(oauthErr.Error, &nested) == nil:
			e.Code = nested.Type
			e.Description = nested.Message
		}
	}
	e.Code = scrub(e.Code, secrets, 64)
	e.Description = scrub(e.Description, secrets, 200)
	return e
}

// scrub removes any of secrets from s and shortens it to at most n bytes.
func scrub(s string, secrets []string, n int) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "<redacted>")
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// refreshToken runs the refresh_token grant.
func refreshToken(ctx context.Context, client *http.Client, tokenURL, clientID string, old Token, now time.Time) (Token, error) {
	tok, err := postToken(ctx, client, tokenURL, map[string]string{
		"grant_type":    "refresh_token",
		"refresh_token": old.RefreshToken,
		"client_id":     clientID,
	}, now, old.RefreshToken, old.AccessToken)
	if err != nil {
		return Token{}, err
	}
	if tok.RefreshToken == "" { // an endpoint that does not rotate keeps the old one valid
		tok.RefreshToken = old.RefreshToken
	}
	// Keep what the file had (account info, …) and add what the endpoint sent.
	extra := old.clone().Extra
	for k, v := range tok.Extra {
		if extra == nil {
			extra = make(map[string]any)
		}
		extra[k] = v
	}
	tok.Extra = extra
	return tok, nil
}
