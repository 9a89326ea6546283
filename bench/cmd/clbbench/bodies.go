package main

import (
	"bytes"
	"strconv"
	"strings"
)

// benchModel is the model every benchmark request names: Sonnet, which every pooled account
// may serve, so the gateway's selection has real candidates to choose between.
const benchModel = "claude-sonnet-5-5"

// streamBody is the size of a streamed request: what Claude Code sends for a short prompt
// (its system prompt and tool definitions come to about 90 KB).
const streamBody = 90 << 10

// toolDesc is a tool description of the kind Claude Code sends: prose with newlines, quotes
// and code, JSON-escaped.
var toolDesc = jsonEscape(strings.Repeat(`Executes a given bash command in a persistent shell session with optional timeout, ensuring proper handling and security measures.

Before executing the command, please follow these steps:
1. Directory Verification:
   - If the command will create new directories or files, first use the LS tool to verify the parent directory exists
   - For example, before running "mkdir foo/bar", first use LS to check that "foo" exists
2. Command Execution:
   - Always quote file paths that contain spaces with double quotes (e.g., cd "path with spaces/file.txt")
	- Examples of proper quoting: python "/path/with spaces/script.py"
`, 2))

// fileContent is a tool_result as Claude Code sends one after reading a source file: code
// with tabs, quotes and backslashes, JSON-escaped (about 6 KB).
var fileContent = jsonEscape(strings.Repeat(`     1	package main
     2	
     3	import (
     4		"fmt"
     5		"strings"
     6	)
     7	
     8	// quote wraps s in "double quotes" and escapes \ and ".
     9	func quote(s string) string {
    10		return "\"" + strings.ReplaceAll(strings.ReplaceAll(s, "\\", "\\\\"), "\"", "\\\"") + "\""
    11	}
    12	
    13	func main() {
    14		fmt.Printf("%s\t%d\n", quote("hello, world"), len(os.Args))
    15	}
`, 14))

func jsonEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// claudeCodeBody builds a request body shaped like Claude Code's, of about size bytes: model
// first; then the conversation (a prompt, and for larger sizes the tool_use/tool_result turns
// of a long session, whose file contents are most of a multi-megabyte body); the system
// prompt; up to 20 tool definitions with JSON schemas (most of the ~90 KB a short prompt
// sends); metadata.user_id carrying the session; max_tokens; and stream.
func claudeCodeBody(size int, stream bool, session string) []byte {
	var tools bytes.Buffer
	tools.WriteString(`],"system":[{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude.","cache_control":{"type":"ephemeral"}},{"type":"text","text":"You are an interactive CLI tool that helps users with software engineering tasks.\n\nIMPORTANT: Assist with defensive security tasks only.","cache_control":{"type":"ephemeral"}}],"tools":[`)
	for i := 0; i < 20; i++ {
		tool := `{"name":"Tool` + strconv.Itoa(i) + `","description":"` + toolDesc + `","input_schema":{"type":"object","properties":{"command":{"type":"string","description":"The command to execute"},"timeout":{"type":"number","description":"Optional timeout in milliseconds (max 600000)"},"description":{"type":"string","description":"Clear, concise description of what this command does in 5-10 words."}},"required":["command"],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}}`
		if tools.Len()+len(tool) > size*2/3 {
			break
		}
		if i > 0 {
			tools.WriteByte(',')
		}
		tools.WriteString(tool)
	}
	tail := `],"metadata":{"user_id":"user_4f1d0c6e9b2a7358e1c4d9a6b0f2e8d7c3a5b1f9e6d4c2a0b8f7e5d3c1a9b7f5_account_6b1f7a9e-0c2d-4e8f-9a1b-3c5d7e9f0a2b_session_` + session + `"},"max_tokens":32000`
	if stream {
		tail += `,"stream":true`
	}
	tail += `}`
	head := `{"model":"` + benchModel + `","messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>\nAs you answer the user's questions, you can use the following context.\n</system-reminder>\n"},{"type":"text","text":"fix the failing test in main_test.go`
	const headEnd = `"}]}`

	// The conversation fills what is left: tool_use/tool_result turns, the last one cut.
	var convo bytes.Buffer
	budget := size - len(head) - len(headEnd) - tools.Len() - len(tail)
	for i := 0; ; i++ {
		id := "toolu_01" + strconv.Itoa(100000+i)
		use := `,{"role":"assistant","content":[{"type":"text","text":"Let me read the file."},{"type":"tool_use","id":"` + id + `","name":"Read","input":{"file_path":"/home/user/project/main.go"}}]}`
		res := `,{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + id + `","content":"`
		const resEnd = `"}]}`
		room := budget - convo.Len() - len(use) - len(res) - len(resEnd)
		if room < 256 {
			break
		}
		convo.WriteString(use + res + trimEscaped(fileContent, room) + resEnd)
	}
	// The prompt takes up the last few bytes.
	pad := max(0, budget-convo.Len())
	prompt := strings.Repeat(" please", pad/7+1)[:pad]

	var b bytes.Buffer
	b.Grow(size + 64)
	b.WriteString(head + prompt + headEnd)
	b.Write(convo.Bytes())
	b.Write(tools.Bytes())
	b.WriteString(tail)
	return b.Bytes()
}

// trimEscaped cuts a JSON-escaped string to at most n bytes without splitting an escape.
func trimEscaped(s string, n int) string {
	if n >= len(s) {
		return s
	}
	s = s[:n]
	// Drop a trailing odd run of backslashes (half an escape).
	k := 0
	for k < len(s) && s[len(s)-1-k] == '\\' {
		k++
	}
	if k%2 == 1 {
		s = s[:len(s)-1]
	}
	return s
}
