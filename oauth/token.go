// Package oauth keeps Max-plan accounts logged in: the PKCE login behind `claude-lb login`,
// the token file an oauth_file account points at, and the Manager that refreshes access tokens
// ahead of expiry with exactly one refresh per account in flight across all replicas.
//
// Refresh tokens rotate on every use, so two refreshes of one account at once kill it. The
// Manager prevents that with an in-process single-flight plus a lock in a TokenStore shared by
// the replicas (Redis in production); whoever loses the lock waits and re-reads the pair the
// winner saved. The rotated pair is saved (store, with a version, then the file) before it is
// used.
//
// No token value ever reaches a log line, an error string or fmt output: Token redacts itself.
package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Token is one OAuth token pair as kept in an oauth_file and in the TokenStore.
//
// Its JSON form is {"access_token", "refresh_token", "expires_at" (RFC 3339)}; any other field
// of the file is kept in Extra and written back unchanged.
type Token struct {
	AccessToken  string
	RefreshToken string
	// ExpiresAt is when the access token stops working; zero means unknown (treated as expired).
	ExpiresAt time.Time
	// Extra holds the file's other fields (scope, account, …), round-tripped as they were.
	Extra map[string]any
}

// Known JSON keys of a token file.
const (
	keyAccess  = "access_token"
	keyRefresh = "refresh_token"
	keyExpires = "expires_at"
)

// MarshalJSON writes the three known fields and every Extra field.
func (t Token) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(t.Extra)+3)
	for k, v := range t.Extra {
		m[k] = v
	}
	m[keyAccess] = t.AccessToken
	m[keyRefresh] = t.RefreshToken
	if t.ExpiresAt.IsZero() {
		delete(m, keyExpires)
	} else {
		m[keyExpires] = t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads the known fields and keeps the others in Extra. expires_at is RFC 3339;
// a number is accepted as Unix seconds (or milliseconds, when it is that large).
func (t *Token) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var out Token
	for k, v := range raw {
		switch k {
		case keyAccess:
			if err := json.Unmarshal(v, &out.AccessToken); err != nil {
				return fmt.Errorf("%s: not a string", keyAccess)
			}
		case keyRefresh:
			if err := json.Unmarshal(v, &out.RefreshToken); err != nil {
				return fmt.Errorf("%s: not a string", keyRefresh)
			}
		case keyExpires:
			exp, err := parseExpiry(v)
			if err != nil {
				return err
			}
			out.ExpiresAt = exp
		default:
			var x any
			if err := json.Unmarshal(v, &x); err != nil {
				return err
			}
			if out.Extra == nil {
				out.Extra = make(map[string]any)
			}
			out.Extra[k] = x
		}
	}
	*t = out
	return nil
}

func parseExpiry(v json.RawMessage) (time.Time, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		if s == "" {
			return time.Time{}, nil
		}
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: want an RFC 3339 time like 2026-11-25T21:00:00Z, got %q", keyExpires, s)
		}
		return ts, nil
	}
	var n float64
	if err := json.Unmarshal(v, &n); err == nil {
		if n > 1e12 { // milliseconds
			return time.UnixMilli(int64(n)).UTC(), nil
		}
		return time.Unix(int64(n), 0).UTC(), nil
	}
	if string(v) == "null" {
		return time.Time{}, nil
	}
	return time.Time{}, fmt.Errorf("%s: want an RFC 3339 time", keyExpires)
}

// String redacts: it shows the expiry and fingerprints, never a token value.
func (t Token) String() string {
	exp := "unknown"
	if !t.ExpiresAt.IsZero() {
		exp = t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("oauth token (access %s, refresh %s, expires %s)",
		Fingerprint(t.AccessToken), Fingerprint(t.RefreshToken), exp)
}

// GoString redacts too, so %#v cannot leak a token.
func (t Token) GoString() string { return t.String() }

// LogValue redacts for log/slog.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access", Fingerprint(t.AccessToken)),
		slog.String("refresh", Fingerprint(t.RefreshToken)),
		slog.Time("expires_at", t.ExpiresAt),
	)
}

// Fingerprint identifies a token without revealing it: its last 4 characters, and only for
// values long enough that 4 characters give nothing useful away.
func Fingerprint(s string) string {
	switch {
	case s == "":
		return "none"
	case len(s) < 16:
		return "…"
	default:
		return "…" + s[len(s)-4:]
	}
}

// ExpiresWithin reports whether the access token expires within d of now (a zero ExpiresAt
// counts as already expired).
func (t Token) ExpiresWithin(now time.Time, d time.Duration) bool {
	return t.ExpiresAt.IsZero() || !now.Add(d).Before(t.ExpiresAt)
}

// clone returns a copy whose Extra map is not shared.
func (t Token) clone() Token {
	if t.Extra != nil {
		m := make(map[string]any, len(t.Extra))
		for k, v := range t.Extra {
			m[k] = v
		}
		t.Extra = m
	}
	return t
}

// ErrNoToken is returned by ReadFile when the file holds no access or refresh token.
var ErrNoToken = errors.New("no access_token or refresh_token")

// ReadFile reads a token file. The error names the file but never contains its content.
func ReadFile(path string) (Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Token{}, fmt.Errorf("read token file: %w", err)
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			// A syntax error quotes no input, but say plainly what is wrong.
			return Token{}, fmt.Errorf("token file %q is not valid JSON (offset %d)", path, se.Offset)
		}
		var ue *json.UnmarshalTypeError
		if errors.As(err, &ue) {
			return Token{}, fmt.Errorf("token file %q is not a JSON object", path)
		}
		return Token{}, fmt.Errorf("token file %q: %w", path, err)
	}
	if t.AccessToken == "" && t.RefreshToken == "" {
		return Token{}, fmt.Errorf("token file %q: %w", path, ErrNoToken)
	}
	return t, nil
}

// WriteFile writes tok to path atomically with mode 0600: a temporary file in the same
// folder, fsynced, then renamed over path (and the folder fsynced). When path is a symlink
// the file it points at is replaced, so the link stays.
func WriteFile(path string, tok Token) error {
	b, err := json.MarshalIndent(tok, "", "  ")
	if err != nil {
		return fmt.Errorf("encode token: %w", err)
	}
	b = append(b, '\n')
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: makes the rename durable
		d.Close()
	}
	return nil
}
