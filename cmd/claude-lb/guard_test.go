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
