package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// Fields are the few parts of a request body routing needs.
type Fields struct {
	Model  string
	UserID string // metadata.user_id
	Stream bool
}

// ErrMalformed is returned for a body that is not a JSON object.
var ErrMalformed = errors.New("malformed JSON body")

// Extract reads model, stream and metadata.user_id from a JSON object body without decoding
// the rest: it walks the top level and skips every other value with a structural scan
// (strings via bytes.IndexByte), so a 2 MB body costs one pass and no allocation. It checks
// structure (balanced brackets, terminated strings, commas and colons at the top level), not
// every token inside skipped values: the upstream judges those.
func Extract(b []byte) (Fields, error) {
	var f Fields
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return f, ErrMalformed
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return f, trailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return f, ErrMalformed
		}
		ks := i
		i = skipString(b, i)
		if i < 0 {
			return f, ErrMalformed
		}
		key := keyOf(b[ks:i])
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return f, ErrMalformed
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return f, ErrMalformed
		}
		vs := i
		i = skipValue(b, i)
		if i < 0 {
			return f, ErrMalformed
		}
		v := b[vs:i]
		switch string(key) {
		case "model":
			f.Model, _ = stringValue(v)
		case "stream":
			f.Stream = string(v) == "true"
		case "metadata":
			if len(v) > 0 && v[0] == '{' {
				f.UserID = userID(v)
			}
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return f, ErrMalformed
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return f, trailing(b, i+1)
		default:
			return f, ErrMalformed
		}
	}
}

func trailing(b []byte, i int) error {
	if skipWS(b, i) != len(b) {
		return ErrMalformed
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"', or -1.
func skipString(b []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		q := i + j
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
}

// skipValue returns the index just past the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		// A small stack of open brackets; deeper nesting than 64 levels falls back to a
		// counter (real bodies nest a handful of levels).
		var stack [64]byte
		depth := 0
		for i < len(b) {
			c := b[i]
			switch c {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				if depth < len(stack) {
					stack[depth] = c
				}
				depth++
			case '}', ']':
				depth--
				if depth < 0 {
					return -1
				}
				if depth < len(stack) && stack[depth] != c-2 { // '{'+2 == '}', '['+2 == ']'
					return -1
				}
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		// number, true, false, null: up to the next delimiter.
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				if j == i {
					return -1
				}
				return j
			case '{', '[', '"', ':':
				return -1
			}
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// keyOf returns an object key's text. Keys are compared decoded, so an escaped key such as
// "mod\u0065l" is still the model: a body must not reach a console account as model-less
// while the upstream reads an Opus model from it.
func keyOf(lit []byte) []byte {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	s, _ := stringValue(lit)
	return []byte(s)
}

// stringValue decodes a JSON string literal; escapes and invalid UTF-8 (which encoding/json,
// and so the upstream, reads as U+FFFD) are rare and take the slow path.
func stringValue(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// userID finds "user_id" among the metadata object's top-level keys.
func userID(obj []byte) string {
	i := skipWS(obj, 1)
	for i < len(obj) && obj[i] == '"' {
		ks := i
		i = skipString(obj, i)
		if i < 0 {
			return ""
		}
		key := keyOf(obj[ks:i])
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] != ':' {
			return ""
		}
		i = skipWS(obj, i+1)
		if i >= len(obj) {
			return ""
		}
		vs := i
		i = skipValue(obj, i)
		if i < 0 {
			return ""
		}
		if string(key) == "user_id" {
			s, _ := stringValue(obj[vs:i])
			return s
		}
		i = skipWS(obj, i)
		if i < len(obj) && obj[i] == ',' {
			i = skipWS(obj, i+1)
		}
	}
	return ""
}

// SessionFromUserID returns the conversation id inside Claude Code's metadata.user_id: either
// its JSON-string form {"device_id","account_uuid","session_id"} or the older
// user_<hash>_account_<uuid>_session_<id> form. "" when there is none.
func SessionFromUserID(uid string) string {
	if uid == "" {
		return ""
	}
	if uid[0] == '{' {
		var v struct {
			SessionID string `json:"session_id"`
		}
		if json.Unmarshal([]byte(uid), &v) == nil {
			return v.SessionID
		}
		return ""
	}
	if k := strings.LastIndex(uid, "_session_"); k >= 0 {
		return uid[k+len("_session_"):]
	}
	return ""
}
