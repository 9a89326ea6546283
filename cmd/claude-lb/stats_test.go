package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/claude-lb/claude-lb/gateway"
)

func (f *opsFixture) stats() func([]string, *bytes.Buffer, *bytes.Buffer) int {
	return func(a []string, o, e *bytes.Buffer) int { return runStats(a, o, e, f.lookup) }
}

func TestStatsCommand(t *testing.T) {
	f := newOpsFixture(t)
	code, out, errOut := cli(t, f.stats(), "--server", f.srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"Requests: 3 (1 error) · Tokens: 13,200 in",
		"🎯 Opus: 2 requests · 1 ok, 1 failed of the recent ones (50.0% success)",
		"work", "personal", "claude-opus-5-5", "claude-sonnet-5-5", "Recent: the 3 newest",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stats lacks %q:\n%s", want, out)
		}
	}
	assertNoSecrets(t, out)

	code, js, _ := cli(t, f.stats(), "--json", "--server", f.srv.URL)
	var s gateway.StatsResponse
	if err := json.Unmarshal([]byte(js), &s); code != 0 || err != nil || s.Totals.Requests != 3 || s.Opus.Failure != 1 {
		t.Errorf("--json: exit %d %v %+v", code, err, s)
	}

	code, out, errOut = cli(t, f.stats(), "reset", "--server", f.srv.URL)
	if code != 0 || !strings.Contains(out, "Usage counters reset") {
		t.Fatalf("reset: exit %d %s %s", code, out, errOut)
	}
	st, err := f.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range st.Accounts {
		if a.Requests != 0 || a.InputTokens != 0 {
			t.Errorf("%s after reset: %+v", name, a)
		}
	}
	// A wrong key is refused, and nothing is reset.
	f.env["CLAUDE_LB_ADMIN_KEY"] = "wrong"
	if code, _, errOut := cli(t, f.stats(), "reset", "--server", f.srv.URL); code != 1 || !strings.Contains(errOut, "refused the admin key") {
		t.Errorf("wrong key: %d %q", code, errOut)
	}
	if code, _, errOut := cli(t, f.stats(), "reset", "now"); code != 2 || !strings.Contains(errOut, `unexpected argument "now"`) {
		t.Errorf("stray argument: %d %q", code, errOut)
	}
}
