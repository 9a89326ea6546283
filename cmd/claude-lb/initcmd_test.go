package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claude-lb/claude-lb/config"
)

func TestInit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lb.yaml")
	var stdout, stderr bytes.Buffer
	if code := runInit([]string{"-c", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("init: code %d, stderr %q", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "wrote "+path+"\n") || stderr.Len() != 0 {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != config.Starter {
		t.Fatalf("written file differs from the starter: %v", err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm()&^0o022 != 0o644&^0o022 {
		t.Errorf("mode %v, want 0644 (less umask)", fi.Mode().Perm())
	}
	// What init writes, validate accepts.
	stdout.Reset()
	if code := runValidate([]string{path}, &stdout, &stderr, envOf(nil)); code != 0 {
		t.Errorf("validate of the starter: code %d, stderr %q", code, stderr.String())
	}

	// Never overwrites.
	if err := os.WriteFile(path, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := runInit([]string{"-c", path}, &stdout, &stderr); code != 1 {
		t.Errorf("existing file: code %d, want 1", code)
	}
	if want := "claude-lb init: " + path + " already exists; edit it, or write the starter elsewhere with -c FILE\n"; stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
	if b, _ := os.ReadFile(path); string(b) != "mine" {
		t.Errorf("existing file was changed to %q", b)
	}

	stderr.Reset()
	if code := runInit([]string{"-c", filepath.Join(dir, "no", "such", "dir.yaml")}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "cannot write") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("missing folder: code %d, stderr %q", code, stderr.String())
	}
}

func TestInitDefaultPathAndUsage(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("CLAUDE_LB_CONFIG", "")
	var stdout, stderr bytes.Buffer
	if code := runInit(nil, &stdout, &stderr); code != 0 {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "claude-lb.yaml")); err != nil {
		t.Errorf("init without -c should write ./claude-lb.yaml: %v", err)
	}
	t.Setenv("CLAUDE_LB_CONFIG", filepath.Join(dir, "from-env.yaml"))
	if code := runInit(nil, &stdout, &stderr); code != 0 {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "from-env.yaml")); err != nil {
		t.Errorf("init should honour $CLAUDE_LB_CONFIG: %v", err)
	}

	for _, tt := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, 0, "Exit codes:"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--force"}, 2, "usage: claude-lb init"},
	} {
		stdout.Reset()
		stderr.Reset()
		code := runInit(tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stdout.String()+stderr.String(), tt.out) {
			t.Errorf("init %v: code %d, output %q %q", tt.args, code, stdout.String(), stderr.String())
		}
	}
}
