package routing_test

// Allocation counts of account selection as the gateway runs it per request (Extract's and
// Candidates'/Choose's own counts are asserted in extract_test.go and routing_test.go).
// Counts are stable, unlike times; the benchmark figures live in docs/performance.md.

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
)

func candidates(n int) []routing.Candidate {
	out := make([]routing.Candidate, n)
	for i := range out {
		out[i] = routing.Candidate{Name: "acct" + strconv.Itoa(i), Weight: 1, Priority: i % 3, CredScope: "cred:" + strconv.Itoa(i)}
	}
	return out
}

func TestMemoryPickAllocs(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		req      routing.PickRequest
		mark     bool // a live hard mark on the first candidate, and a soft one on the second
		maxAlloc float64
	}{
		{name: "least-used", req: routing.PickRequest{Candidates: candidates(3), Strategy: routing.LeastUsed}},
		{name: "least-used with affinity", req: routing.PickRequest{Candidates: candidates(3), Strategy: routing.LeastUsed, Session: "0d6f1c2e-session", AffinityTTL: time.Hour}},
		{name: "round-robin", req: routing.PickRequest{Candidates: candidates(3), Strategy: routing.RoundRobin}},
		{name: "priority", req: routing.PickRequest{Candidates: candidates(8), Strategy: routing.Priority}},
		{name: "cooldowns in force", req: routing.PickRequest{Candidates: candidates(3), Scopes: []string{"family:opus"}, Session: "s", AffinityTTL: time.Hour}, mark: true},
		// Past 16 candidates the per-pick state no longer fits the stack buffer.
		{name: "20 candidates", req: routing.PickRequest{Candidates: candidates(20)}, maxAlloc: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := memory.New(memory.Options{})
			if tt.mark {
				c := tt.req.Candidates
				for _, m := range []routing.Mark{
					{Account: c[0].Name, Scope: "family:opus", Until: time.Now().Add(time.Hour), Reason: "429"},
					{Account: c[1].Name, Until: time.Now().Add(time.Hour), Reason: "near limit", Soft: true},
				} {
					if err := st.Mark(ctx, m); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The first picks create the accounts' counters and the session binding.
			for range len(tt.req.Candidates) + 1 {
				if p, err := st.Pick(ctx, tt.req); err != nil || p.Account == "" {
					t.Fatalf("Pick = %+v, %v", p, err)
				}
			}
			got := testing.AllocsPerRun(1000, func() { _, _ = st.Pick(ctx, tt.req) })
			if got > tt.maxAlloc {
				t.Fatalf("memory Pick allocates %v times per call, want at most %v", got, tt.maxAlloc)
			}
		})
	}
}

func TestSessionFromUserIDAllocs(t *testing.T) {
	tests := []struct {
		name, uid, want string
		maxAlloc        float64
	}{
		// The older form is a substring of the field: free.
		{name: "underscore form", uid: "user_4f1d0c6e_account_6b1f7a9e-0c2d_session_0d6f1c2e-9a1b", want: "0d6f1c2e-9a1b"},
		// The JSON-string form goes through encoding/json (see docs/performance.md).
		{name: "json form", uid: `{"device_id":"4f1d0c6e","account_uuid":"6b1f7a9e","session_id":"0d6f1c2e-9a1b"}`, want: "0d6f1c2e-9a1b", maxAlloc: 8},
		{name: "none", uid: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := routing.SessionFromUserID(tt.uid); got != tt.want {
				t.Fatalf("SessionFromUserID = %q, want %q", got, tt.want)
			}
			if got := testing.AllocsPerRun(1000, func() { routing.SessionFromUserID(tt.uid) }); got > tt.maxAlloc {
				t.Fatalf("SessionFromUserID allocates %v times, want at most %v", got, tt.maxAlloc)
			}
		})
	}
}

// selectionBody is a Claude Code-shaped body of about size bytes with the model and the
// session last, so that Extract walks all of it.
func selectionBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[{"role":"user","content":[{"type":"text","text":"fix the tests"}]}],"system":[{"type":"text","text":"`)
	for b.Len() < size {
		b.WriteString(`You are Claude Code, Anthropic's official CLI. Use \"tools\" {wisely} [always].\n`)
	}
	b.WriteString(`"}],"metadata":{"user_id":"user_4f1d_account_6b1f_session_0d6f1c2e"},"max_tokens":32000,"stream":true,"model":"claude-sonnet-5-5"}`)
	return b.Bytes()
}

func selectionConfig() *config.Config {
	cfg := config.Default()
	cfg.Accounts = []config.Account{
		{Name: "personal", Plan: "console", APIKey: "k1"},
		{Name: "work", Plan: "max", OAuthToken: "t1"},
		{Name: "team", Plan: "max", OAuthToken: "t2"},
	}
	return cfg
}

// TestSelectionPathAllocs runs the gateway's selection steps for one request: Extract, the
// candidates of the model, the session key and the memory store's Pick. Only the model and
// user_id strings are allocated, whatever the body's size.
func TestSelectionPathAllocs(t *testing.T) {
	tab := routing.NewTable(selectionConfig())
	st := memory.New(memory.Options{})
	ctx := context.Background()
	var cands [8]routing.Candidate
	scopes := []string{"family:sonnet"}
	for _, size := range []int{1 << 10, 100 << 10, 2 << 20} {
		body := selectionBody(size)
		step := func() {
			f, err := routing.Extract(body)
			if err != nil {
				t.Fatal(err)
			}
			idx, err := tab.Candidates(f.Model)
			if err != nil {
				t.Fatal(err)
			}
			cs := cands[:0]
			for _, i := range idx {
				a := tab.Accounts()[i]
				cs = append(cs, routing.Candidate{Name: a.Name, Weight: a.Weight})
			}
			p, err := st.Pick(ctx, routing.PickRequest{Candidates: cs, Scopes: scopes, Session: routing.SessionFromUserID(f.UserID), AffinityTTL: time.Hour})
			if err != nil || p.Account == "" {
				t.Fatalf("Pick = %+v, %v", p, err)
			}
		}
		step()
		if got := testing.AllocsPerRun(100, step); got > 2 {
			t.Errorf("%d byte body: selection allocates %v times per request, want at most 2", len(body), got)
		}
	}
}

func BenchmarkMemoryPick(b *testing.B) {
	for _, n := range []int{3, 20} {
		b.Run(strconv.Itoa(n)+"accounts", func(b *testing.B) {
			st := memory.New(memory.Options{})
			req := routing.PickRequest{Candidates: candidates(n), Scopes: []string{"family:sonnet"}, Session: "s", AffinityTTL: time.Hour}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, _ = st.Pick(ctx, req)
			}
		})
	}
}

func BenchmarkSelectionPath(b *testing.B) {
	tab := routing.NewTable(selectionConfig())
	st := memory.New(memory.Options{})
	ctx := context.Background()
	scopes := []string{"family:sonnet"}
	for _, size := range []int{1 << 10, 100 << 10, 2 << 20} {
		body := selectionBody(size)
		b.Run(strconv.Itoa(size>>10)+"KB", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var cands [8]routing.Candidate
			for b.Loop() {
				f, _ := routing.Extract(body)
				idx, _ := tab.Candidates(f.Model)
				cs := cands[:0]
				for _, i := range idx {
					cs = append(cs, routing.Candidate{Name: tab.Accounts()[i].Name, Weight: 1})
				}
				_, _ = st.Pick(ctx, routing.PickRequest{Candidates: cs, Scopes: scopes, Session: routing.SessionFromUserID(f.UserID), AffinityTTL: time.Hour})
			}
		})
	}
}
