package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := runVersion(nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !regexp.MustCompile(`^claude-lb \S+ \(go1\.[0-9.]+, ` + runtime.GOOS + `/` + runtime.GOARCH + `(, commit [0-9a-f]+(\+dirty)?)?\)\n$`).MatchString(out.String()) {
		t.Errorf("version line %q", out.String())
	}
	out.Reset()
	if code := runVersion([]string{"--json"}, &out, &errOut); code != 0 {
		t.Fatal(code)
	}
	var b buildInfo
	if err := json.Unmarshal(out.Bytes(), &b); err != nil || b.Version == "" || b.GoVersion != runtime.Version() {
		t.Errorf("--json %q: %+v %v", out.String(), b, err)
	}
	if code := runVersion([]string{"extra"}, &out, &errOut); code != 2 {
		t.Errorf("stray argument: exit %d", code)
	}
}

// TestHelp: every command of this file set answers --help on stdout with its exit codes.
func TestOpsHelp(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	tests := []struct {
		name string
		run  func(stdout, stderr *bytes.Buffer) int
	}{
		{"accounts", func(o, e *bytes.Buffer) int { return runAccounts([]string{"--help"}, o, e, env) }},
		{"accounts list", func(o, e *bytes.Buffer) int { return runAccounts([]string{"list", "--help"}, o, e, env) }},
		{"accounts add", func(o, e *bytes.Buffer) int { return runAccounts([]string{"add", "--help"}, o, e, env) }},
		{"accounts remove", func(o, e *bytes.Buffer) int { return runAccounts([]string{"remove", "-h"}, o, e, env) }},
		{"history", func(o, e *bytes.Buffer) int { return runHistory([]string{"--help"}, o, e, env) }},
		{"history clear", func(o, e *bytes.Buffer) int { return runHistory([]string{"clear", "--help"}, o, e, env) }},
		{"stats", func(o, e *bytes.Buffer) int { return runStats([]string{"--help"}, o, e, env) }},
		{"stats reset", func(o, e *bytes.Buffer) int { return runStats([]string{"reset", "--help"}, o, e, env) }},
		{"version", func(o, e *bytes.Buffer) int { return runVersion([]string{"--help"}, o, e) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := tt.run(&out, &errOut); code != 0 || errOut.Len() != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut.String())
			}
			if !strings.HasPrefix(out.String(), "Usage: claude-lb "+strings.Fields(tt.name)[0]) || !strings.Contains(out.String(), "Exit codes") {
				t.Errorf("help:\n%s", out.String())
			}
		})
	}
}
