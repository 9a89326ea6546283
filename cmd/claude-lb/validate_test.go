package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/claude-lb/claude-lb/config"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = "version: 1\naccounts:\n  - name: work\n    plan: max\n    oauth_token: ${WORK_TOKEN}\n  - name: personal\n    api_key: ${KEY}\n"

const badConfig = `version: 1
routing:
  max_attempts: x
accounts:
  - name: work
    plna: max
    oauth_token: ${WORK_TOKEN}
  - name: work
    api_key: sk-ant-api03-LITERAL-secret
`

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", goodConfig)
	bad := writeFile(t, dir, "bad.yaml", badConfig)
	literal := writeFile(t, dir, "literal.yaml", "version: 1\naccounts: [{name: a, api_key: sk-ant-api03-LITERAL-secret}]\n")
	missing := filepath.Join(dir, "missing.yaml")
	set := map[string]string{"WORK_TOKEN": "t", "KEY": "k"}

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		stdout     string   // exact
		stderr     []string // each a regexp one line must match, in order; nil: empty
		stderrNot  string
		stderrRows int // -1: do not count
	}{
		{name: "valid file argument", args: []string{good}, code: 0, stdout: good + ": ok (2 accounts)\n"},
		{name: "valid -c", args: []string{"-c", good}, code: 0, stdout: good + ": ok (2 accounts)\n"},
		{name: "flags after the file", args: []string{good, "--check-env"}, env: set, code: 0, stdout: good + ": ok (2 accounts)\n"},
		{name: "CLAUDE_LB_CONFIG", env: map[string]string{"CLAUDE_LB_CONFIG": good}, code: 0, stdout: good + ": ok (2 accounts)\n"},
		{name: "check-env with unset variables", args: []string{"--check-env", good}, code: 1, stderrRows: 2, stderr: []string{
			`^` + regexp.QuoteMeta(good) + `:5:18: accounts\[0\]\.oauth_token uses \$\{WORK_TOKEN\}, which is not set`,
			`^` + regexp.QuoteMeta(good) + `:7:14: accounts\[1\]\.api_key uses \$\{KEY\}, which is not set`,
		}},
		{name: "invalid: every problem, one per line", args: []string{bad}, code: 1, stderrRows: 4, stderrNot: "LITERAL", stderr: []string{
			`^` + regexp.QuoteMeta(bad) + `:3:17: routing\.max_attempts: want a whole number, got "x"$`,
			`^` + regexp.QuoteMeta(bad) + `:6:5: unknown key "plna" in accounts\[0\] \(did you mean "plan"\?\)$`,
			`^` + regexp.QuoteMeta(bad) + `:8:11: account name "work" is used twice`,
			`^` + regexp.QuoteMeta(bad) + `:9:14: warning: accounts\[1\]\.api_key is a literal secret`,
		}},
		{name: "valid with a warning", args: []string{literal}, code: 0, stdout: literal + ": ok (1 account)\n", stderrRows: 1, stderrNot: "LITERAL", stderr: []string{
			`^` + regexp.QuoteMeta(literal) + `:2:31: warning: accounts\[0\]\.api_key is a literal secret; use \$\{VAR\} or api_key_file`,
		}},
		{name: "missing file", args: []string{missing}, code: 2, stderrRows: 1, stderr: []string{
			`^cannot read ` + regexp.QuoteMeta(missing) + ": no such file; run `claude-lb init` to write a starter config$",
		}},
		{name: "a directory", args: []string{dir}, code: 2, stderrRows: 1, stderr: []string{`^cannot read .*: it is a directory`}},
		{name: "unknown flag", args: []string{"--nope"}, code: 2, stderrRows: -1, stderr: []string{`flag provided but not defined: -nope`, `^usage: claude-lb validate`}},
		{name: "two files", args: []string{good, bad}, code: 2, stderrRows: 1, stderr: []string{`one file at a time`}},
		{name: "-c and a file", args: []string{"-c", good, bad}, code: 2, stderrRows: 1, stderr: []string{`either with -c or as an argument, not both`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runValidate(tt.args, &stdout, &stderr, envOf(tt.env))
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			if stdout.String() != tt.stdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if stderr.Len() == 0 {
				lines = nil
			}
			if tt.stderrRows >= 0 && len(lines) != tt.stderrRows {
				t.Errorf("stderr has %d lines, want %d:\n%s", len(lines), tt.stderrRows, stderr.String())
			}
			i := 0
			for _, re := range tt.stderr {
				for i < len(lines) && !regexp.MustCompile(re).MatchString(lines[i]) {
					i++
				}
				if i == len(lines) {
					t.Errorf("no stderr line (in order) matches %s:\n%s", re, stderr.String())
					break
				}
				i++
			}
			if tt.stderrNot != "" && strings.Contains(stderr.String()+stdout.String(), tt.stderrNot) {
				t.Errorf("output contains %q:\n%s", tt.stderrNot, stderr.String())
			}
		})
	}
}

func TestValidateDefaultPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	if code := runValidate(nil, &stdout, &stderr, envOf(nil)); code != 2 || !strings.Contains(stderr.String(), "cannot read claude-lb.yaml: no such file; run `claude-lb init`") {
		t.Errorf("no file: code %d, stderr %q", code, stderr.String())
	}
	writeFile(t, dir, "claude-lb.yaml", config.Starter)
	stdout.Reset()
	stderr.Reset()
	if code := runValidate(nil, &stdout, &stderr, envOf(nil)); code != 0 || stdout.String() != "claude-lb.yaml: ok (1 account)\n" || stderr.Len() != 0 {
		t.Errorf("starter: code %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestValidateHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		code := runValidate([]string{arg}, &stdout, &stderr, envOf(nil))
		if code != 0 || !strings.Contains(stdout.String(), "Exit codes:") || !strings.Contains(stdout.String(), "2  the file cannot be read") || stderr.Len() != 0 {
			t.Errorf("%s: code %d stdout %q stderr %q", arg, code, stdout.String(), stderr.String())
		}
	}
}
