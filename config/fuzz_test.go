package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: no input panics; whatever Parse accepts passes Validate again and parses the same
// way twice; whatever it refuses comes back as *Error with one-line, positioned problems.
func FuzzLoad(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{"testdata/*.yaml", "../examples/*.yaml", "../claude-lb.yaml"} {
		m, _ := filepath.Glob(pattern)
		seeds = append(seeds, m...)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Starter))
	f.Add([]byte("version: 1\naccounts: [{name: a, api_key: \"${A:-x}\"}]\nx-a: &a {plan: max}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, checkEnv := range []bool{false, true} {
			opts := exampleOptions(checkEnv)
			c, err := ParseWith("fuzz.yaml", data, opts)
			if err != nil {
				var cerr *Error
				if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
					t.Fatalf("Parse returned %T %v, want *Error with problems", err, err)
				}
				for _, p := range cerr.Problems {
					if p.Line < 1 || p.Col < 1 || p.File != "fuzz.yaml" || strings.ContainsAny(p.Msg, "\n\r") || p.Msg == "" {
						t.Fatalf("malformed problem %#v", p)
					}
				}
				continue
			}
			if c == nil {
				t.Fatal("Parse returned neither a config nor an error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted config fails Validate: %v\ninput:\n%s", err, data)
			}
			c2, err := ParseWith("fuzz.yaml", data, opts)
			if err != nil || c2.Hash != c.Hash || len(c2.Accounts) != len(c.Accounts) {
				t.Fatalf("second parse differs: %v", err)
			}
		}
	})
}
