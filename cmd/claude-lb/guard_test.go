package main

import (
	"strings"
	"testing"

	"github.com/claude-lb/claude-lb/config"
)

// TestReloadKeepsNonLoopbackGuarded: listen applies only at start, so a reload that removes
// the clients of a gateway serving other machines is refused (DESIGN.md section 8).
func TestReloadKeepsNonLoopbackGuarded(t *testing.T) {
	open := &config.Config{Listen: "127.0.0.1:8080"}
	keyed := &config.Config{Clients: []config.Client{{Name: "ci"}}}
	optedOut := &config.Config{AllowUnauthenticated: true}
	tests := []struct {
		served string
		cfg    *config.Config
		ok     bool
	}{
		{"0.0.0.0:8080", open, false},
		{"10.1.2.3:8080", open, false},
		{"[::]:8080", open, false},
		{"0.0.0.0:8080", keyed, true},
		{"0.0.0.0:8080", optedOut, true},
		{"127.0.0.1:8080", open, true},
		{"[::1]:8080", open, true},
		{"localhost:8080", open, true},
	}
	for _, tt := range tests {
		err := checkStillGuarded(tt.served, tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("served %s, clients %d: err %v", tt.served, len(tt.cfg.Clients), err)
		}
		if err != nil && !strings.Contains(err.Error(), "clients") {
			t.Errorf("message does not say what to do: %v", err)
		}
	}
}

// A reload applies accounts, routing and the upstream URL and timeout at once; the settings
// the running process built its parts from are named in a warning instead of silently kept.
func TestRestartOnlySettings(t *testing.T) {
	load := func(extra string) *config.Config {
		t.Helper()
		cfg, err := config.Parse("claude-lb.yaml", []byte("version: 1\n"+extra+"accounts:\n  - name: a\n    plan: console\n    api_key: ${KEY}\n"),
			func(k string) (string, bool) { return "sk-ant-api03-test", k == "KEY" })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := load("")
	for _, c := range []struct{ extra, want string }{
		{"", ""},
		{"upstream:\n  timeout: 1m\n  url: http://127.0.0.1:9\n", ""},
		{"upstream:\n  http2: true\n", "upstream.http2"},
		{"upstream:\n  connect_timeout: 3s\n  header_timeout: 1m\n", "upstream.connect_timeout upstream.header_timeout"},
		{"listen: 127.0.0.1:9999\nhistory:\n  size: 10\n", "listen history.size"},
		{"log:\n  level: debug\n", "log"},
	} {
		if got := strings.Join(restartOnly(base, load(c.extra)), " "); got != c.want {
			t.Errorf("%q: restart-only %q, want %q", c.extra, got, c.want)
		}
	}
}
