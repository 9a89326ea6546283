package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/oauth"
)

// loginIssuer is a fake token endpoint for the authorization_code grant: it accepts the code
// "good-code" with the verifier of the challenge the authorize URL carried.
type loginIssuer struct {
	srv *httptest.Server

	mu        sync.Mutex
	challenge string
	calls     int
	issued    []string
}

func newLoginIssuer(t *testing.T) *loginIssuer {
	li := &loginIssuer{}
	li.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		li.mu.Lock()
		defer li.mu.Unlock()
		li.calls++
		sum := sha256.Sum256([]byte(body["code_verifier"]))
		if body["grant_type"] != "authorization_code" || body["code"] != "good-code" ||
			base64.RawURLEncoding.EncodeToString(sum[:]) != li.challenge {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid code"}`)
			return
		}
		access, refresh := "sk-ant-oat01-LOGINACCESS"+li.challenge[:8], "sk-ant-ort01-LOGINREFRESH"+li.challenge[:8]
		li.issued = append(li.issued, access, refresh)
		json.NewEncoder(w).Encode(map[string]any{"access_token": access, "refresh_token": refresh, "expires_in": 28800})
	}))
	t.Cleanup(li.srv.Close)
	return li
}

func (li *loginIssuer) secrets() []string {
	li.mu.Lock()
	defer li.mu.Unlock()
	return append([]string{"good-code"}, li.issued...)
}

const loginConfig = `# claude-lb config for the login test
version: 1
oauth:
  token_url: %URL%/v1/oauth/token        # the local fake
  authorize_url: %URL%/oauth/authorize
  redirect_uri: %URL%/oauth/code/callback
accounts:
  # the console account
  - name: personal
    plan: console
    api_key: ${PERSONAL_KEY}   # unset: login does not need it
%EXTRA%`

// urlWatcher is stdout for runLogin: it hands the authorize URL to the test as soon as it is
// printed, so the test can paste a code with the right (or wrong) state.
type urlWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	urls chan string
	sent bool
}

var authorizeURLRe = regexp.MustCompile(`http://\S+/oauth/authorize\?\S+`)

func (w *urlWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := authorizeURLRe.FindString(w.buf.String()); m != "" && !w.sent {
		w.sent = true
		w.urls <- m
	}
	return len(p), nil
}

func (w *urlWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type loginRun struct {
	code           int
	stdout, stderr string
}

// runLoginWith runs `claude-lb login args…` against cfgFile, answering the prompt with
// paste(state) once the URL is printed.
func runLoginWith(t *testing.T, li *loginIssuer, args []string, paste func(state string) string) loginRun {
	t.Helper()
	out := &urlWatcher{urls: make(chan string, 1)}
	var errBuf bytes.Buffer
	stdinR, stdinW := io.Pipe()
	done := make(chan int)
	go func() { done <- runLogin(args, stdinR, out, &errBuf, func(string) (string, bool) { return "", false }) }()
	select {
	case u := <-out.urls:
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		li.mu.Lock()
		li.challenge = pu.Query().Get("code_challenge")
		li.mu.Unlock()
		io.WriteString(stdinW, paste(pu.Query().Get("state"))+"\n")
	case code := <-done: // ended before prompting
		stdinW.Close()
		return loginRun{code, out.String(), errBuf.String()}
	}
	code := <-done
	stdinW.Close()
	return loginRun{code, out.String(), errBuf.String()}
}

func writeLoginConfig(t *testing.T, li *loginIssuer, extra string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "claude-lb.yaml")
	src := strings.NewReplacer("%URL%", li.srv.URL, "%EXTRA%", extra).Replace(loginConfig)
	if err := os.WriteFile(path, []byte(src), 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoginNewAccount(t *testing.T) {
	li := newLoginIssuer(t)
	cfgPath := writeLoginConfig(t, li, "")
	r := runLoginWith(t, li, []string{"team", "--plan", "max", "-c", cfgPath}, func(s string) string { return "good-code#" + s })
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	tokFile := filepath.Join(filepath.Dir(cfgPath), "team.oauth.json")
	fi, err := os.Stat(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	tok, err := oauth.ReadFile(tokFile)
	if err != nil || !strings.HasPrefix(tok.AccessToken, "sk-ant-oat01-LOGINACCESS") || tok.ExpiresAt.IsZero() {
		t.Errorf("token file: %v %v", tok, err)
	}

	// The YAML keeps its comments and gains the account.
	src, _ := os.ReadFile(cfgPath)
	for _, keep := range []string{"# claude-lb config for the login test", "# the local fake", "# unset: login does not need it"} {
		if !strings.Contains(string(src), keep) {
			t.Errorf("comment %q lost:\n%s", keep, src)
		}
	}
	if fi, _ := os.Stat(cfgPath); fi.Mode().Perm() != 0o640 {
		t.Errorf("config mode changed to %v", fi.Mode().Perm())
	}
	cfg, err := config.ParseWith(cfgPath, src, config.Options{Env: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("the updated config is invalid: %v\n%s", err, src)
	}
	var found bool
	for _, a := range cfg.Accounts {
		if a.Name == "team" {
			found = true
			if a.Plan != "max" || a.OAuthFile != tokFile {
				t.Errorf("account team = plan %q oauth_file %q", a.Plan, a.OAuthFile)
			}
		}
	}
	if !found || len(cfg.Accounts) != 2 {
		t.Errorf("accounts after login: %+v", cfg.Accounts)
	}
	assertNoLoginSecrets(t, li, r)
}

func TestLoginRefused(t *testing.T) {
	tests := []struct {
		name      string
		extra     string
		args      []string // after the config flag
		paste     func(state string) string
		wantCode  int
		wantErr   string
		wantCalls int
	}{
		{"state mismatch", "", []string{"team"}, func(s string) string { return "good-code#not-" + s }, 1, "state mismatch", 0},
		{"code refused", "", []string{"team"}, func(s string) string { return "bad-code#" + s }, 1, "invalid_grant", 1},
		{"nothing pasted", "", []string{"team"}, func(string) string { return "" }, 1, "no code was pasted", 0},
		{"name taken by an api key account", "", []string{"personal"}, nil, 1, "already exists with api_key", 0},
		{"other file for an existing account", "  - name: team\n    plan: max\n    oauth_file: team.oauth.json\n",
			[]string{"team", "--file", "/elsewhere/t.json"}, nil, 1, "already keeps its tokens in", 0},
		{"name the config cannot hold", "", []string{"bad name!"}, nil, 1, "must be 1 to 64 letters", 0},
		{"console plan", "", []string{"team", "--plan", "console"}, nil, 2, "only max-plan accounts", 0},
		{"no name", "", []string{"--plan", "max"}, nil, 2, "name exactly one account", 0},
		{"two names", "", []string{"a", "b"}, nil, 2, "name exactly one account", 0},
		{"unknown flag", "", []string{"team", "--plna", "max"}, nil, 2, "flag provided but not defined", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			li := newLoginIssuer(t)
			cfgPath := writeLoginConfig(t, li, tt.extra)
			before, _ := os.ReadFile(cfgPath)
			paste := tt.paste
			if paste == nil {
				paste = func(s string) string { return "good-code#" + s }
			}
			r := runLoginWith(t, li, append([]string{"-c", cfgPath}, tt.args...), paste)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
			li.mu.Lock()
			calls := li.calls
			li.mu.Unlock()
			if calls != tt.wantCalls {
				t.Errorf("token endpoint called %d times, want %d", calls, tt.wantCalls)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(cfgPath), "team.oauth.json")); err == nil {
				t.Errorf("a token file was written")
			}
			if after, _ := os.ReadFile(cfgPath); !bytes.Equal(before, after) {
				t.Errorf("the config changed:\n%s", after)
			}
			assertNoLoginSecrets(t, li, r)
		})
	}
}

// TestLoginAgain: logging an existing oauth_file account in again rewrites only its token file.
func TestLoginAgain(t *testing.T) {
	li := newLoginIssuer(t)
	cfgPath := writeLoginConfig(t, li, "  - name: team\n    plan: max\n    oauth_file: tokens/team.json\n")
	tokFile := filepath.Join(filepath.Dir(cfgPath), "tokens", "team.json")
	before, _ := os.ReadFile(cfgPath)
	r := runLoginWith(t, li, []string{"team", "-c", cfgPath, "--file", tokFile}, func(s string) string { return "good-code#" + s })
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(cfgPath); !bytes.Equal(before, after) {
		t.Errorf("the config changed on a re-login")
	}
	if tok, err := oauth.ReadFile(tokFile); err != nil || tok.RefreshToken == "" {
		t.Errorf("token file: %v", err)
	}
	if !strings.Contains(r.stdout, "already uses this file") {
		t.Errorf("stdout %q", r.stdout)
	}
	assertNoLoginSecrets(t, li, r)
}

func TestLoginHelpAndMissingConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runLogin([]string{"--help"}, strings.NewReader(""), &out, &errb, func(string) (string, bool) { return "", false }); code != 0 ||
		!strings.Contains(out.String(), "Exit codes:") {
		t.Errorf("--help: exit %d, %q", code, out.String())
	}
	out.Reset()
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	env := func(k string) (string, bool) { return missing, k == "CLAUDE_LB_CONFIG" }
	if code := runLogin([]string{"team"}, strings.NewReader(""), &out, &errb, env); code != 2 ||
		!strings.Contains(errb.String(), missing) || !strings.Contains(errb.String(), "claude-lb init") {
		t.Errorf("missing config: exit %d, %q", code, errb.String())
	}
}

func assertNoLoginSecrets(t *testing.T, li *loginIssuer, r loginRun) {
	t.Helper()
	for _, s := range li.secrets() {
		if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
			t.Errorf("CLI output contains a secret (%s)", oauth.Fingerprint(s))
		}
	}
	for _, marker := range []string{"LOGINACCESS", "LOGINREFRESH"} {
		if strings.Contains(r.stdout+r.stderr, marker) {
			t.Errorf("CLI output contains a token")
		}
	}
}
