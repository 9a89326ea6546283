package main

import (
	"bytes"
	"strconv"
)

// benchModel is the model every benchmark request names: Sonnet, which every pooled account
// may serve, so the gateway's selection has real candidates to choose between.
const benchModel = "claude-sonnet-5-5"

// claudeCodeBody builds a request body shaped like Claude Code's: model first, one user turn,
// a long system prompt and tool definitions (where Claude Code's ~90 KB for a two-word prompt
// come from), metadata.user_id carrying the session, and max_tokens; padded with tool
// descriptions to at least size bytes. The text has escaped quotes and newlines, as real
// prompts do, so a JSON scanner cannot skip them with a plain byte search.
func claudeCodeBody(size int, stream bool, session string) []byte {
	var b bytes.Buffer
	b.Grow(size + 1024)
	b.WriteString(`{"model":"` + benchModel + `","messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>\nContext for this turn.\n</system-reminder>\n"},{"type":"text","text":"fix the tests"}]}],`)
	b.WriteString(`"system":[{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude.","cache_control":{"type":"ephemeral"}}],"tools":[`)
	const desc = `Executes a given bash command in a persistent shell session with optional timeout.\n\nBefore executing the command:\n1. If the command creates directories, first use the LS tool to verify the parent exists\n   - e.g. before \"mkdir foo/bar\", check that \"foo\" exists\n\n`
	const tail = 330 // metadata, max_tokens and stream
	for i := 0; b.Len()+tail < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		tool := `{"name":"Tool` + strconv.Itoa(i) + `","description":"` + desc + `","input_schema":{"type":"object","properties":{"command":{"type":"string","description":"The command to execute"},"timeout":{"type":"number"}},"required":["command"]}}`
		if room := size - tail - b.Len(); room < len(tool) {
			// The last tool's description is cut to land on size (whole runes of ASCII).
			cut := len(desc) - (len(tool) - room)
			for cut > 0 && desc[cut-1] == '\\' {
				cut--
			}
			tool = `{"name":"Tool` + strconv.Itoa(i) + `","description":"` + desc[:max(cut, 0)] + `","input_schema":{"type":"object","properties":{"command":{"type":"string","description":"The command to execute"},"timeout":{"type":"number"}},"required":["command"]}}`
		}
		b.WriteString(tool)
	}
	b.WriteString(`],"metadata":{"user_id":"user_4f1d0c6e9b2a7358e1c4d9a6b0f2e8d7c3a5b1f9e6d4c2a0b8f7e5d3c1a9b7f5_account_6b1f7a9e-0c2d-4e8f-9a1b-3c5d7e9f0a2b_session_` + session + `"},"max_tokens":32000`)
	if stream {
		b.WriteString(`,"stream":true`)
	}
	b.WriteString(`}`)
	return b.Bytes()
}

// streamBody is the size of a streamed request: what Claude Code sends for a short prompt
// (its system prompt and tool definitions come to about 90 KB).
const streamBody = 90 << 10
