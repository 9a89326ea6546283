package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokenJSON(t *testing.T) {
	exp := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    Token
		wantErr string
	}{
		{
			name: "rfc3339 with extra fields",
			in:   `{"access_token":"a1","refresh_token":"r1","expires_at":"2026-11-25T21:00:00Z","scope":"user:inference","account":{"email":"x@example.com"}}`,
			want: Token{AccessToken: "a1", RefreshToken: "r1", ExpiresAt: exp,
				Extra: map[string]any{"scope": "user:inference", "account": map[string]any{"email": "x@example.com"}}},
		},
		{
			name: "offset time",
			in:   `{"access_token":"a1","refresh_token":"r1","expires_at":"2026-11-25T22:00:00+01:00"}`,
			want: Token{AccessToken: "a1", RefreshToken: "r1", ExpiresAt: exp},
		},
		{
			name: "unix milliseconds",
			in:   `{"access_token":"a1","refresh_token":"r1","expires_at":1795640400000}`,
			want: Token{AccessToken: "a1", RefreshToken: "r1", ExpiresAt: exp},
		},
		{
			name: "unix seconds",
			in:   `{"access_token":"a1","refresh_token":"r1","expires_at":1795640400}`,
			want: Token{AccessToken: "a1", RefreshToken: "r1", ExpiresAt: exp},
		},
		{
			name: "no expiry",
			in:   `{"access_token":"a1","refresh_token":"r1"}`,
			want: Token{AccessToken: "a1", RefreshToken: "r1"},
		},
		{name: "bad time", in: `{"access_token":"a1","expires_at":"tomorrow"}`, wantErr: "RFC 3339"},
		{name: "token not a string", in: `{"access_token":1}`, wantErr: "access_token: not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Token
			err := json.Unmarshal([]byte(tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessToken != tt.want.AccessToken || got.RefreshToken != tt.want.RefreshToken || !got.ExpiresAt.Equal(tt.want.ExpiresAt) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if fmt.Sprint(got.Extra) != fmt.Sprint(tt.want.Extra) {
				t.Errorf("extra = %v, want %v", got.Extra, tt.want.Extra)
			}
			// Round trip keeps every field; expires_at comes back as RFC 3339 UTC.
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			var again Token
			if err := json.Unmarshal(b, &again); err != nil {
				t.Fatal(err)
			}
			if !again.ExpiresAt.Equal(got.ExpiresAt) || fmt.Sprint(again.Extra) != fmt.Sprint(got.Extra) {
				t.Errorf("round trip changed the token: %s", b)
			}
			if !got.ExpiresAt.IsZero() && !strings.Contains(string(b), `"expires_at":"2026-11-25T21:00:00Z"`) {
				t.Errorf("expires_at not written as RFC 3339 UTC: %s", b)
			}
		})
	}
}

func TestTokenNeverPrints(t *testing.T) {
	tok := Token{AccessToken: "sk-ant-oat01-SECRETACCESSVALUE-abcd", RefreshToken: "sk-ant-ort01-SECRETREFRESHVALUE-wxyz",
		ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var logBuf strings.Builder
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "tok", tok)
	outs := map[string]string{
		"%v": fmt.Sprintf("%v", tok), "%+v": fmt.Sprintf("%+v", tok), "%#v": fmt.Sprintf("%#v", tok),
		"%s": fmt.Sprintf("%s", tok), "pointer": fmt.Sprintf("%v", &tok), "slog": logBuf.String(),
	}
	for how, out := range outs {
		if strings.Contains(out, "SECRET") {
			t.Errorf("%s prints a token: %s", how, out)
		}
	}
	if !strings.Contains(outs["%v"], "…abcd") || !strings.Contains(outs["slog"], "…wxyz") {
		t.Errorf("fingerprints missing: %q / %q", outs["%v"], outs["slog"])
	}
}

func TestWriteFileReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "team.oauth.json")
	tok := Token{AccessToken: "access-1", RefreshToken: "refresh-1",
		ExpiresAt: time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC), Extra: map[string]any{"scope": "user:inference"}}
	// An existing file with looser permissions is replaced by a 0600 one.
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, tok); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "access-1" || got.RefreshToken != "refresh-1" || !got.ExpiresAt.Equal(tok.ExpiresAt) || got.Extra["scope"] != "user:inference" {
		t.Errorf("read back %+v", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// A symlinked file (a Kubernetes-style mount) keeps its link; the target is replaced.
	target := filepath.Join(dir, "real.json")
	link := filepath.Join(dir, "link.json")
	if err := WriteFile(target, tok); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	tok.AccessToken = "access-2"
	if err := WriteFile(link, tok); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced by a file")
	}
	if got, _ := ReadFile(target); got.AccessToken != "access-2" {
		t.Errorf("target not updated: %v", got)
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		wantErr string
		is      error
	}{
		{"missing", filepath.Join(dir, "nope.json"), "no such file", os.ErrNotExist},
		{"not json", write("bad.json", `{"access_token":"SECRETVALUE",`), "not valid JSON", nil},
		{"array", write("arr.json", `["SECRETVALUE"]`), "not a JSON object", nil},
		{"empty", write("empty.json", `{"other":1}`), "no access_token", ErrNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFile(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.is)
			}
			if strings.Contains(err.Error(), "SECRETVALUE") {
				t.Errorf("error quotes the file's content: %v", err)
			}
		})
	}
}

func TestWriteFileFailsInMissingDir(t *testing.T) {
	err := WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir", "t.json"), Token{AccessToken: "SECRETVALUE"})
	if err == nil || strings.Contains(err.Error(), "SECRETVALUE") {
		t.Fatalf("err = %v, want a failure without the token", err)
	}
}
