package config

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParse1000 parses a 1,000-account file, the size DESIGN.md section 11 reloads in
// under 100 ms.
func BenchmarkParse1000(b *testing.B) {
	var s strings.Builder
	s.WriteString("version: 1\naccounts:\n")
	for i := range 1000 {
		fmt.Fprintf(&s, "  - name: acct-%d\n    plan: max\n    oauth_token: ${TOKEN_%d:-tok-%d}\n    models: [\"claude-*\"]\n    weight: 2\n", i, i, i)
	}
	data := []byte(s.String())
	opts := Options{CheckEnv: true, Env: lookup(nil)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseWith("big.yaml", data, opts); err != nil {
			b.Fatal(err)
		}
	}
}
