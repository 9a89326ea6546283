package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/gateway"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// opsT0 is the fixed clock of the CLI tests.
var opsT0 = time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)

// Secrets of the CLI fixture: no output may contain them.
const (
	opsWorkToken = "sk-ant-oat01-cli-work-SECRET-00000000004f3a"
	opsAPIKey    = "sk-ant-api03-cli-personal-SECRET-000000009b1c"
	opsAdminKey  = "cli-admin-SECRET-key-123456"
)

const opsConfig = `version: 1
listen: 127.0.0.1:1
# Accounts of the CLI tests.
accounts:
  - name: work        # Max plan, long-lived token
    plan: max
    oauth_token: ${WORK_TOKEN}
  - name: team
    plan: max
    oauth_file: team.oauth.json
    weight: 2
  - name: personal
    plan: console
    api_key: ${PERSONAL_KEY}
  - name: spare
    plan: console
    api_key: ${SPARE_KEY}
    disabled: true
admin:
  key: ${CLAUDE_LB_ADMIN_KEY}
`

// opsFixture is a config file and a gateway admin API (memory store, fixed clock) in a known
// state.
type opsFixture struct {
	dir, path string
	env       map[string]string
	store     *memory.Store
	srv       *httptest.Server
}

func (f *opsFixture) lookup(k string) (string, bool) { v, ok := f.env[k]; return v, ok }

func newOpsFixture(t *testing.T) *opsFixture {
	t.Helper()
	f := &opsFixture{dir: t.TempDir()}
	f.path = filepath.Join(f.dir, "claude-lb.yaml")
	if err := os.WriteFile(f.path, []byte(opsConfig), 0o640); err != nil {
		t.Fatal(err)
	}
	tokens := `{"access_token":"sk-ant-oat01-team-SECRET-access","refresh_token":"sk-ant-ort01-team-SECRET-refresh","expires_at":"2026-11-25T22:00:00Z"}`
	if err := os.WriteFile(filepath.Join(f.dir, "team.oauth.json"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	f.env = map[string]string{
		"WORK_TOKEN": opsWorkToken, "PERSONAL_KEY": opsAPIKey, "SPARE_KEY": opsAPIKey + "x",
		"CLAUDE_LB_ADMIN_KEY": opsAdminKey, "TZ": "UTC", "CLAUDE_LB_CONFIG": f.path,
	}
	cfg, err := config.Parse(f.path, []byte(opsConfig), f.lookup)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := gateway.NewSnapshot(cfg, opsT0.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	now := opsT0
	f.store = memory.New(memory.Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	use := func(at time.Time, account, model string, status int, in, out int64) {
		now = at
		if _, err := f.store.Pick(ctx, routing.PickRequest{Candidates: []routing.Candidate{{Name: account, Weight: 1}}}); err != nil {
			t.Fatal(err)
		}
		tried := []string{account + ":ok"}
		attempts := 1
		if status != 200 {
			tried = []string{"team:529", account + ":" + strconv.Itoa(status)}
			attempts = 2
		}
		err := f.store.Record(ctx, routing.Usage{Time: at, Model: model, Account: account, Status: status, Attempts: attempts,
			Tried: tried, Latency: 1234 * time.Millisecond, InputTokens: in, OutputTokens: out, CacheReadTokens: 1055,
			CacheCreationTokens: 34, Client: "laptop", Replica: "r1"})
		if err != nil {
			t.Fatal(err)
		}
	}
	use(opsT0.Add(-50*time.Minute), "personal", "claude-sonnet-5-5", 200, 1200, 300)
	use(opsT0.Add(-20*time.Minute), "work", "claude-opus-5-5", 200, 12000, 3456)
	use(opsT0.Add(-3*time.Minute), "work", "claude-opus-5-5", 529, 0, 0)
	now = opsT0
	marks := []routing.Mark{
		{Account: "work", Scope: "family:opus", Until: opsT0.Add(4*time.Minute + 12*time.Second), Reason: "429 rate limited (unified reset)"},
		{Account: "personal", Scope: "", Until: opsT0.Add(time.Hour), Soft: true, Reason: "5h utilization 0.93"},
	}
	for _, m := range marks {
		if err := f.store.Mark(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	state := func(name string) string {
		if name == "team" {
			return "needs-login"
		}
		return "valid"
	}
	admin := gateway.NewAdmin(gateway.AdminOptions{
		Store:    f.store,
		Accounts: func() []gateway.AccountInfo { return snap.AccountInfos(state) },
		Config: func() gateway.ConfigInfo {
			return gateway.ConfigInfo{Path: f.path, Hash: "3f9a0c1b2d4e5f60718293a4b5c6d7e8", LoadedAt: opsT0.Add(-2 * time.Hour), Accounts: 4}
		},
		Key:     func() config.Secret { return opsAdminKey },
		Replica: "r1",
		Now:     func() time.Time { return opsT0 },
	})
	f.srv = httptest.NewServer(admin)
	t.Cleanup(f.srv.Close)
	return f
}

// cli runs one command function and returns its exit code and output.
func cli(t *testing.T, f func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := f(args, &out, &errb)
	return code, out.String(), errb.String()
}

func (f *opsFixture) accounts() func([]string, *bytes.Buffer, *bytes.Buffer) int {
	return func(a []string, o, e *bytes.Buffer) int { return runAccounts(a, o, e, f.lookup) }
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func assertNoSecrets(t *testing.T, outputs ...string) {
	t.Helper()
	for _, out := range outputs {
		for _, s := range []string{opsWorkToken, opsAPIKey, opsAdminKey, "SECRET"} {
			if strings.Contains(out, s) {
				t.Errorf("output contains a secret (%q):\n%s", s, out)
			}
		}
	}
}

func TestAccountsListGolden(t *testing.T) {
	f := newOpsFixture(t)
	code, out, errOut := cli(t, f.accounts(), "list", "--server", f.srv.URL)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "accounts_list.golden", strings.NewReplacer(f.srv.URL, "http://SERVER", f.dir, "/CONFIG").Replace(out))
	assertNoSecrets(t, out)

	code, js, errOut := cli(t, f.accounts(), "list", "--json", "--server", f.srv.URL)
	if code != 0 {
		t.Fatalf("--json exit %d: %s", code, errOut)
	}
	assertNoSecrets(t, js)
	var l accountsList
	if err := json.Unmarshal([]byte(js), &l); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, js)
	}
	if l.Source != "gateway" || l.Replica != "r1" || !l.Now.Equal(opsT0) || len(l.Accounts) != 4 {
		t.Fatalf("parsed back: %+v", l)
	}
	w := l.Accounts[0]
	if w.Name != "work" || !w.OpusCapable || w.Requests != 2 || w.Errors != 1 || w.InputTokens != 12000 ||
		w.Fingerprint != "…4f3a" || w.Status != "cooling" || len(w.Cooldowns) != 1 || w.Cooldowns[0].SecondsLeft != 252 ||
		!w.LastUsed.Equal(opsT0.Add(-3*time.Minute)) {
		t.Errorf("work parsed back: %+v", w)
	}
	if team := l.Accounts[1]; team.TokenState != "needs-login" || team.Credential != "oauth_file" || team.Weight != 2 {
		t.Errorf("team parsed back: %+v", team)
	}
	if p := l.Accounts[2]; p.OpusCapable || p.Status != "near-limit" || len(p.Cooldowns) != 1 || !p.Cooldowns[0].Soft {
		t.Errorf("personal parsed back: %+v", p)
	}
	if s := l.Accounts[3]; !s.Disabled || s.Status != "disabled" {
		t.Errorf("spare parsed back: %+v", s)
	}
}

func TestAccountsListOffline(t *testing.T) {
	f := newOpsFixture(t)
	f.srv.Close()
	code, out, errOut := cli(t, f.accounts(), "list", "-c", f.path, "--server", "http://127.0.0.1:1")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "accounts_list_offline.golden", strings.ReplaceAll(out, f.dir, "/CONFIG"))
	assertNoSecrets(t, out)

	// Without the gateway's environment the kinds still show, from the file.
	delete(f.env, "WORK_TOKEN")
	code, js, _ := cli(t, f.accounts(), "list", "--json", "--server", "http://127.0.0.1:1")
	var l accountsList
	if err := json.Unmarshal([]byte(js), &l); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s", code, err, js)
	}
	if l.Source != "config" || !strings.Contains(l.Unavailable, "connection refused") || l.Accounts[0].Credential != "oauth_token" ||
		l.Accounts[0].TokenState != "unknown" || l.Accounts[0].Fingerprint != "…" {
		t.Errorf("offline json: %+v", l)
	}
}

func TestAccountsListErrors(t *testing.T) {
	f := newOpsFixture(t)
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"wrong admin key", map[string]string{"CLAUDE_LB_ADMIN_KEY": "nope"}, []string{"list", "--server", f.srv.URL}, 1, "refused the admin key (401"},
		{"$CLAUDE_LB_CONFIG names a missing file", map[string]string{"CLAUDE_LB_CONFIG": filepath.Join(f.dir, "none.yaml")}, []string{"list", "--server", f.srv.URL}, 2, "no such file"},
		{"key from another variable", map[string]string{"CLAUDE_LB_ADMIN_KEY": "nope", "MY_KEY": opsAdminKey}, []string{"list", "--admin-key-env", "MY_KEY", "--server", f.srv.URL}, 0, ""},
		{"unreadable explicit config", nil, []string{"list", "-c", filepath.Join(f.dir, "missing.yaml")}, 2, "missing.yaml: no such file"},
		{"bad flag", nil, []string{"list", "--nope"}, 2, "see `claude-lb accounts list --help`"},
		{"stray argument", nil, []string{"list", "extra"}, 2, `unexpected argument "extra"`},
		{"bad server", nil, []string{"list", "--server", "ftp://x"}, 2, "not an http:// or https:// URL"},
		{"unknown subcommand", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"no subcommand", nil, nil, 2, "Usage: claude-lb accounts COMMAND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saved := map[string]string{}
			for k, v := range f.env {
				saved[k] = v
			}
			t.Cleanup(func() { f.env = saved })
			for k, v := range tt.env {
				f.env[k] = v
			}
			code, _, errOut := cli(t, f.accounts(), tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tt.code, tt.stderr)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") > 0 && tt.code != 2 {
				t.Errorf("more than one line: %q", errOut)
			}
		})
	}
}

func TestAccountsAddRemove(t *testing.T) {
	f := newOpsFixture(t)
	orig, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		now, err := os.ReadFile(f.path)
		if err != nil || !bytes.Equal(now, orig) {
			t.Fatalf("the file changed:\n%s", now)
		}
	}

	code, out, errOut := cli(t, f.accounts(), "add", "extra", "--plan", "max", "--oauth-token-env", "EXTRA_TOKEN")
	if code != 0 || !strings.Contains(out, `Added account "extra" (plan max, oauth_token from ${EXTRA_TOKEN})`) ||
		!strings.Contains(errOut, "EXTRA_TOKEN is not set in this shell") {
		t.Fatalf("add: exit %d\n%s\n%s", code, out, errOut)
	}
	added, _ := os.ReadFile(f.path)
	if want := string(orig) + "  - name: extra\n    plan: max\n    oauth_token: ${EXTRA_TOKEN}\n"; !strings.HasPrefix(string(added), strings.TrimSuffix(opsConfig, "admin:\n  key: ${CLAUDE_LB_ADMIN_KEY}\n")) || !strings.Contains(string(added), "    disabled: true\n  - name: extra\n    plan: max\n    oauth_token: ${EXTRA_TOKEN}\nadmin:") {
		t.Errorf("added file:\n%s\nwant the entry after spare:\n%s", added, want)
	}
	if fi, _ := os.Stat(f.path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if code, out, errOut = cli(t, f.accounts(), "remove", "extra"); code != 0 || !strings.Contains(out, `Removed account "extra"`) {
		t.Fatalf("remove: exit %d\n%s\n%s", code, out, errOut)
	}
	unchanged(t)

	// An API key file: written as an absolute path; the round trip holds too.
	keyFile := filepath.Join(f.dir, "extra.key")
	if err := os.WriteFile(keyFile, []byte("sk-ant-api03-file-SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut = cli(t, f.accounts(), "add", "--api-key-file", keyFile, "filed"); code != 0 || errOut != "" {
		t.Fatalf("add --api-key-file: exit %d %s", code, errOut)
	}
	if added, _ := os.ReadFile(f.path); !strings.Contains(string(added), "  - name: filed\n    plan: console\n    api_key_file: "+keyFile+"\n") {
		t.Errorf("added file:\n%s", added)
	}
	if code, _, errOut = cli(t, f.accounts(), "remove", "filed", "-c", f.path); code != 0 {
		t.Fatalf("remove: exit %d %s", code, errOut)
	}
	unchanged(t)

	bad := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"duplicate name", []string{"add", "work", "--plan", "max", "--oauth-token-env", "X"}, 1, `an account named "work" already exists`},
		{"unknown plan", []string{"add", "new", "--plan", "maxx", "--oauth-token-env", "X"}, 1, `plan "maxx" is not defined in ` + f.path + ` (its plans: console, max)`},
		{"two credentials", []string{"add", "new", "--api-key-env", "X", "--api-key-file", "/k"}, 2, "exactly one of"},
		{"no credential", []string{"add", "new"}, 2, "exactly one of"},
		{"no name", []string{"add", "--api-key-env", "X"}, 2, "give one account NAME"},
		{"bad variable name", []string{"add", "new", "--api-key-env", "sk-ant-api03-oops"}, 1, "not an environment variable name"},
		{"bad account name", []string{"add", "a b", "--api-key-env", "X"}, 1, "account name"},
		{"remove unknown", []string{"remove", "ghost"}, 1, `no account named "ghost" (accounts: work, team, personal, spare)`},
		{"remove without name", []string{"remove"}, 2, "give one account NAME"},
		{"missing file", []string{"add", "new", "--api-key-env", "X", "-c", filepath.Join(f.dir, "nope.yaml")}, 2, "no such file"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, f.accounts(), tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, tt.code, tt.stderr)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("not one sentence: %q", errOut)
			}
			unchanged(t)
		})
	}

	// Removing every account leaves an invalid config: the last removal is refused.
	for _, name := range []string{"work", "team", "personal"} {
		if code, _, errOut := cli(t, f.accounts(), "remove", name); code != 0 {
			t.Fatalf("remove %s: %d %s", name, code, errOut)
		}
	}
	before, _ := os.ReadFile(f.path)
	code, _, errOut = cli(t, f.accounts(), "remove", "spare")
	after, _ := os.ReadFile(f.path)
	if code != 1 || !strings.Contains(errOut, "would not be a valid config") || !bytes.Equal(before, after) {
		t.Errorf("removing the last account: exit %d %q", code, errOut)
	}
}
