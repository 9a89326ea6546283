package config

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHTTPOrRedis keeps config at the bottom of the import graph (STYLE.md section 1).
func TestNoHTTPOrRedis(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "net/http" || strings.Contains(dep, "redis") || strings.HasPrefix(dep, "github.com/claude-lb/claude-lb/") && dep != "github.com/claude-lb/claude-lb/config" {
			t.Errorf("config depends on %s", dep)
		}
	}
}
