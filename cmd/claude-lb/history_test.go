package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/claude-lb/claude-lb/gateway"
	"github.com/claude-lb/claude-lb/routing"
)

func (f *opsFixture) history() func([]string, *bytes.Buffer, *bytes.Buffer) int {
	return func(a []string, o, e *bytes.Buffer) int { return runHistory(a, o, e, f.lookup) }
}

func TestHistoryCommand(t *testing.T) {
	f := newOpsFixture(t)
	tests := []struct {
		name  string
		args  []string
		lines []string // data lines expected, by a distinctive piece
		more  bool
	}{
		{"all", nil, []string{"529", "claude-opus-5-5", "claude-sonnet-5-5"}, false},
		{"limit", []string{"--limit", "1"}, []string{"529"}, true},
		{"offset", []string{"--limit", "1", "--offset", "2"}, []string{"claude-sonnet-5-5"}, false},
		{"model", []string{"--model", "claude-opus-5-5"}, []string{"529", "12,000/3,456"}, false},
		{"account", []string{"--account", "personal"}, []string{"1,200/300"}, false},
		{"status", []string{"--status", "529"}, []string{"team:529 → work:529"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, f.history(), append(tt.args, "--server", f.srv.URL)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[0], "ACCOUNT") {
				t.Fatalf("no header: %q", out)
			}
			data := lines[1:]
			if tt.more {
				if last := data[len(data)-1]; !strings.HasPrefix(last, "… more with --offset") {
					t.Errorf("no paging hint: %q", out)
				}
				data = data[:len(data)-1]
			}
			if len(data) != len(tt.lines) {
				t.Fatalf("%d lines, want %d:\n%s", len(data), len(tt.lines), out)
			}
			for i, want := range tt.lines {
				if !strings.Contains(data[i], want) || !strings.Contains(data[i], "laptop") || !strings.Contains(data[i], "r1") {
					t.Errorf("line %d %q lacks %q", i, data[i], want)
				}
			}
			assertNoSecrets(t, out)
		})
	}

	code, js, _ := cli(t, f.history(), "--json", "--limit", "2", "--server", f.srv.URL)
	var h gateway.HistoryResponse
	if err := json.Unmarshal([]byte(js), &h); code != 0 || err != nil || len(h.Entries) != 2 || !h.More || h.Entries[0].Status != 529 || h.Entries[0].LatencyMS != 1234 {
		t.Errorf("--json: exit %d %v %+v", code, err, h)
	}

	code, out, errOut := cli(t, f.history(), "clear", "--server", f.srv.URL)
	if code != 0 || !strings.Contains(out, "Request history cleared") {
		t.Fatalf("clear: exit %d %s %s", code, out, errOut)
	}
	if left, _ := f.store.History(context.Background(), routing.HistoryQuery{}); len(left) != 0 {
		t.Errorf("%d entries left after clear", len(left))
	}
	if code, out, _ := cli(t, f.history(), "--server", f.srv.URL); code != 0 || !strings.Contains(out, "No requests recorded") {
		t.Errorf("empty history: %d %q", code, out)
	}
}

func TestHistoryErrors(t *testing.T) {
	f := newOpsFixture(t)
	f.srv.Close()
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--server", "http://127.0.0.1:1"}, 1, "no gateway answered at http://127.0.0.1:1 (connection refused); start one"},
		{[]string{"clear", "--server", "http://127.0.0.1:1"}, 1, "no gateway answered"},
		{[]string{"--limit", "0"}, 2, "--limit must be from 1 to 1000"},
		{[]string{"--status", "42"}, 2, "--status must be an HTTP status code"},
		{[]string{"--offset", "-1"}, 2, "--offset cannot be negative"},
		{[]string{"purge"}, 2, `unexpected argument "purge"`},
		{[]string{"--limit", "x"}, 2, "see `claude-lb history --help`"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := cli(t, f.history(), tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, tt.code, tt.stderr)
			}
		})
	}
}
