package routing

import (
	"encoding/json"
	"testing"
)

// DESIGN.md §5.1 (read the model from the body) and §1 (Opus to max accounts only): Extract
// must read the fields the upstream reads. A JSON parser decodes escapes in object keys, so
// "mod\u0065l" is the key "model"; when Extract misses it, the model is "" and the request may
// use every account, console ones included.
func TestReviewExtractEscapedKeys(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"model", `{"mod\u0065l":"claude-opus-4-1","max_tokens":1}`},
		{"stream", `{"model":"claude-opus-4-1","str\u0065am":true}`},
		{"metadata", `{"model":"claude-opus-4-1","metad\u0061ta":{"user\u005fid":"user_x_account_y_session_s1"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want struct {
				Model    string `json:"model"`
				Stream   bool   `json:"stream"`
				Metadata struct {
					UserID string `json:"user_id"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal([]byte(tt.body), &want); err != nil {
				t.Fatal(err)
			}
			got, err := Extract([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got.Model != want.Model || got.Stream != want.Stream || got.UserID != want.Metadata.UserID {
				t.Fatalf("Extract = %+v; encoding/json reads model %q stream %v user_id %q",
					got, want.Model, want.Stream, want.Metadata.UserID)
			}
		})
	}
}
