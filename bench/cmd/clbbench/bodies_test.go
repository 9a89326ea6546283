package main

import (
	"encoding/json"
	"testing"
)

// The benchmark's bodies are valid JSON of about the size asked for, with the fields the
// gateway reads.
func TestClaudeCodeBody(t *testing.T) {
	for _, size := range []int{1 << 10, streamBody, 100 << 10, 2 << 20} {
		for _, stream := range []bool{false, true} {
			b := claudeCodeBody(size, stream, "abc")
			var v struct {
				Model    string            `json:"model"`
				Stream   bool              `json:"stream"`
				Messages []json.RawMessage `json:"messages"`
				Tools    []json.RawMessage `json:"tools"`
				Metadata struct {
					UserID string `json:"user_id"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("size %d: not JSON: %v", size, err)
			}
			if v.Model != benchModel || v.Stream != stream || v.Metadata.UserID == "" {
				t.Fatalf("size %d: fields %+v", size, v)
			}
			if d := len(b) - size; d < -size/10-200 || d > size/10+200 {
				t.Errorf("size %d: body is %d bytes", size, len(b))
			}
			t.Logf("%d: %d bytes, %d messages, %d tools", size, len(b), len(v.Messages), len(v.Tools))
		}
	}
}
