package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestServeRefusesToStart: serve exits before listening, with one clear message, on a
// missing config (2, pointing at init), an invalid one (1, every problem as file:line:col), an
// unset ${VAR} (1, naming it), and a non-loopback listen without clients (1, DESIGN.md §8).
func TestServeRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	put := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const account = "accounts:\n  - name: work\n    plan: max\n    api_key: sk-ant-api03-LITERAL-do-not-print\n"
	invalid := put("invalid.yaml", "version: 1\nrouting:\n  cooldown: soon\n"+
		"accounts:\n  - name: work\n    plna: max\n    api_key: sk-ant-api03-LITERAL-do-not-print\n")
	unset := put("unset.yaml", "version: 1\naccounts:\n  - name: work\n    api_key: ${CLAUDE_LB_E2E_UNSET_KEY}\n")
	open := put("open.yaml", "version: 1\nlisten: 0.0.0.0:0\n"+account)
	missing := filepath.Join(dir, "nope", "claude-lb.yaml")
	q := regexp.QuoteMeta

	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		chdir bool // run in an empty folder (for the default ./claude-lb.yaml)
		code  int
		lines []string // regexps, one per stderr line, in order (exact line count)
	}{
		{name: "no config at the default path", args: []string{"serve"}, chdir: true, code: 2, lines: []string{
			"^claude-lb: no config file at claude-lb.yaml; run `claude-lb init` to write a starter config, or pass -c FILE$",
		}},
		{name: "serve is the default command", args: nil, chdir: true, code: 2, lines: []string{
			"^claude-lb: no config file at claude-lb.yaml; run `claude-lb init`",
		}},
		{name: "no config at -c", args: []string{"serve", "-c", missing}, code: 2, lines: []string{
			"^claude-lb: no config file at " + q(missing) + "; run `claude-lb init`",
		}},
		{name: "no config at CLAUDE_LB_CONFIG", args: []string{"serve"}, env: map[string]string{"CLAUDE_LB_CONFIG": missing}, code: 2, lines: []string{
			"^claude-lb: no config file at " + q(missing) + "; run `claude-lb init`",
		}},
		{name: "invalid config: every problem with its line", args: []string{"serve", "-c", invalid}, code: 1, lines: []string{
			"^claude-lb: " + q(invalid) + " is not a valid config; not starting:$",
			"^" + q(invalid) + `:3:13: routing\.cooldown: .*soon`,
			"^" + q(invalid) + `:6:5: unknown key "plna" in accounts\[0\]`,
		}},
		{name: "unset variable", args: []string{"serve", "-c", unset}, code: 1, lines: []string{
			"^claude-lb: " + q(unset) + " is not a valid config; not starting:$",
			"^" + q(unset) + `:4:14: accounts\[0\]\.api_key uses \$\{CLAUDE_LB_E2E_UNSET_KEY\}, which is not set`,
		}},
		{name: "any address without clients", args: []string{"serve", "-c", open}, code: 1, lines: []string{
			"^claude-lb: " + q(open) + " is not a valid config; not starting:$",
			"^" + q(open) + `:2:9: listen 0\.0\.0\.0:0 accepts connections from other machines, but no clients are configured; add clients .* or set allow_unauthenticated: true`,
		}},
		{name: "stray argument", args: []string{"serve", open}, code: 2, lines: []string{
			`^claude-lb serve: unexpected argument .*; pass the config with -c$`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chdir {
				t.Chdir(t.TempDir())
			}
			env := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &stdout, &stderr, env)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout not empty: %q", stdout.String())
			}
			if strings.Contains(stderr.String(), "LITERAL-do-not-print") {
				t.Errorf("a secret reached stderr:\n%s", stderr.String())
			}
			got := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(got) != len(tc.lines) {
				t.Fatalf("stderr has %d lines, want %d:\n%s", len(got), len(tc.lines), stderr.String())
			}
			for i, re := range tc.lines {
				if !regexp.MustCompile(re).MatchString(got[i]) {
					t.Errorf("stderr line %d = %q, want it to match %q", i+1, got[i], re)
				}
			}
		})
	}
}

// TestAdminReload: POST /api/reload applies a good file at once and answers with the new
// config; on a bad file it answers 422 with the file:line problems and keeps the old config.
func TestAdminReload(t *testing.T) {
	f := newE2EFixture(t, inPlace)
	first := f.render(maxOn("alpha"), "")
	f.write(first)
	g := startE2EApp(t, f.path, false) // no watcher: only the admin API reloads
	base := g.srv.URL
	waitServing(t, base, sha256Hex(first), "alpha")

	reload := func() (int, map[string]any) {
		t.Helper()
		resp, err := e2eClient.Post(base+"/api/reload", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("reload answer is not JSON: %v", err)
		}
		return resp.StatusCode, body
	}

	// A good file: applied before the answer, which reports it.
	second := f.render(maxOn("beta"), "")
	f.write(second)
	code, body := reload()
	cfg, _ := body["config"].(map[string]any)
	if code != http.StatusOK || body["ok"] != true || cfg["hash"] != sha256Hex(second) || cfg["accounts"] != 2.0 {
		t.Fatalf("good reload: %d %v, want 200 ok with hash %s and 2 accounts", code, body, sha256Hex(second))
	}
	if acct, err := opusAccount(base); err != nil || acct != "beta" {
		t.Fatalf("right after a successful reload Opus went to %q (%v), want beta", acct, err)
	}

	// A bad file: 422 with every problem, and nothing changes.
	failsBefore := metric(t, base, reloadsFail)
	bad := strings.Replace(f.render(maxOn("alpha"), ""), "    plan: max\n", "    plan: ultra\n", 1)
	bad = strings.Replace(bad, "    plan: console\n", "    plna: console\n", 1)
	f.write(bad)
	code, body = reload()
	e, _ := body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	if code != http.StatusUnprocessableEntity || body["type"] != "error" || e["type"] != "invalid_request_error" {
		t.Fatalf("bad reload: %d %v, want 422 with an error in Anthropic's shape", code, body)
	}
	for _, want := range []struct {
		line int
		re   string // after file:line:col:
	}{
		{lineOf(bad, "plan: ultra"), `accounts\[0\]\.plan: plan "ultra" is not defined`},
		{lineOf(bad, "plna: console"), `unknown key "plna"`},
	} {
		re := regexp.QuoteMeta(fmt.Sprintf("%s:%d:", f.path, want.line)) + `\d+: ` + want.re
		if !regexp.MustCompile(re).MatchString(msg) {
			t.Errorf("reload error message does not match %q:\n%s", re, msg)
		}
	}
	if !strings.Contains(msg, "previous one keeps serving") {
		t.Errorf("reload error does not say the old config serves: %s", msg)
	}
	if got := metric(t, base, reloadsFail); got != failsBefore+1 {
		t.Errorf("%s = %v after a rejected reload, want %v", reloadsFail, got, failsBefore+1)
	}
	if h, _ := readyHash(base); h != sha256Hex(second) {
		t.Errorf("readyz hash %s after a rejected reload, want the previous %s", h, sha256Hex(second))
	}
	if acct, err := opusAccount(base); err != nil || acct != "beta" {
		t.Errorf("after a rejected reload Opus went to %q (%v), want beta", acct, err)
	}
}

// lineOf is the 1-based line of s holding mark.
func lineOf(s, mark string) int {
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, mark) {
			return i + 1
		}
	}
	return 0
}
