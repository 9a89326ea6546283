package config

import (
	"errors"
	"strings"
)

// expansion is the outcome of replacing the ${VAR} references of one value.
type expansion struct {
	value string
	// unset names the first referenced variable that is not set and has no default.
	unset string
	// refs is true when the value referenced at least one variable.
	refs bool
	err  error
}

// expand replaces ${VAR} and ${VAR:-default} in s with values from lookup. The default applies
// when VAR is unset or empty, as in the shell. $${ writes a literal ${. Default text is not
// expanded again. Error messages never quote s, which may be a secret.
func expand(s string, lookup func(string) (string, bool)) expansion {
	if !strings.Contains(s, "${") {
		return expansion{value: s}
	}
	var (
		b   strings.Builder
		out expansion
	)
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			out.err = errors.New("has a ${ without its closing }; write ${NAME}, or $${ for a literal ${")
			return out
		}
		ref := s[i+2 : i+2+end]
		i += 2 + end + 1
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			out.err = errors.New("has a malformed ${...} reference; write ${NAME} or ${NAME:-default} (letters, digits and _), or $${ for a literal ${")
			return out
		}
		out.refs = true
		v, ok := lookup(name)
		switch {
		case hasDef && v == "":
			v = def
		case !ok && out.unset == "":
			out.unset = name
		}
		b.WriteString(v)
	}
	out.value = b.String()
	return out
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
