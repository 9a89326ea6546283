package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Errors of AddAccount and RemoveAccount, for errors.Is.
var (
	// ErrAccountExists means AddAccount was given a name the file already has.
	ErrAccountExists = errors.New("account already exists")
	// ErrAccountNotFound means RemoveAccount was given a name the file does not have.
	ErrAccountNotFound = errors.New("account not found")
)

// NewAccount is an account for AddAccount. Exactly one credential source is set, and it is
// always a reference (an environment variable or a file), never the secret itself.
type NewAccount struct {
	Name string
	// Plan is written as given; "" leaves it out (the account is then console).
	Plan string
	// OAuthTokenEnv writes oauth_token: ${VAR}.
	OAuthTokenEnv string
	// APIKeyEnv writes api_key: ${VAR}.
	APIKeyEnv string
	// APIKeyFile writes api_key_file: PATH.
	APIKeyFile string
	// OAuthFile writes oauth_file: PATH (the token file of `claude-lb login`).
	OAuthFile string
}

var accountNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (a NewAccount) check() error {
	if !accountNameRE.MatchString(a.Name) {
		return fmt.Errorf("account name %q must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", a.Name)
	}
	if a.Plan != "" && !accountNameRE.MatchString(a.Plan) {
		return fmt.Errorf("plan name %q must be letters, digits, '.', '_' or '-'", a.Plan)
	}
	n := 0
	for _, v := range []string{a.OAuthTokenEnv, a.APIKeyEnv, a.APIKeyFile, a.OAuthFile} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("an account needs exactly one credential: an OAuth token variable, an API key variable, an API key file or an OAuth token file")
	}
	for _, v := range []string{a.OAuthTokenEnv, a.APIKeyEnv} {
		if v != "" && !validEnvName(v) {
			return fmt.Errorf("%q is not an environment variable name (letters, digits and _, not starting with a digit)", v)
		}
	}
	for _, p := range []string{a.APIKeyFile, a.OAuthFile} {
		if strings.ContainsAny(p, "\x00\r\n") {
			return errors.New("a file path cannot contain a newline or NUL")
		}
	}
	return nil
}

// AddAccount returns src with the account appended to its accounts list. Everything else
// (comments, order, blank lines, quoting) stays byte for byte, and the new entry copies the
// list's indentation and line endings. The result is not validated: parse it before writing.
// RemoveAccount of the same name gives src back exactly.
func AddAccount(src []byte, a NewAccount) ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	doc, err := parseDoc(src)
	if err != nil {
		return nil, err
	}
	lines := splitLines(src)
	nl := "\n"
	if bytes.Contains(src, []byte("\r\n")) {
		nl = "\r\n"
	}
	key, seq := findAccounts(doc)

	var at, dashCol, keyCol int
	switch {
	case key == nil:
		// No accounts key: a new one at the end of the file.
		out := append([]byte(nil), src...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, nl...)
		}
		out = append(out, "accounts:"+nl...)
		return append(out, accountBlock(a, 2, 4, nl)...), nil
	case seq.Kind == yaml.ScalarNode && seq.Tag == "!!null" && seq.Value == "":
		// "accounts:" with nothing after it: the entry goes right below the key.
		at = key.Line
		dashCol, keyCol = key.Column-1+2, key.Column-1+4
	case seq.Kind != yaml.SequenceNode:
		return nil, fmt.Errorf("line %d: accounts must be a list of accounts", seq.Line)
	case seq.Style&yaml.FlowStyle != 0:
		return nil, fmt.Errorf("line %d: accounts is written in flow style ([...]); write it as a block list (one \"- name: ...\" entry per account) to add accounts from the command line", seq.Line)
	default:
		for _, item := range seq.Content {
			if n := itemName(item); n == a.Name {
				return nil, fmt.Errorf("line %d: an account named %q already exists: %w", item.Line, a.Name, ErrAccountExists)
			}
		}
		dashCol = seq.Column - 1
		keyCol = dashCol + 2
		if len(seq.Content) > 0 {
			first := seq.Content[0]
			if first.Line == seq.Line && first.Kind == yaml.MappingNode {
				keyCol = first.Column - 1 // "-   name:" keeps its spacing
			}
			last := seq.Content[len(seq.Content)-1]
			at = blockEnd(lines, dashLine(lines, last, dashCol), dashCol)
		} else {
			at = blockEnd(lines, seq.Line-1, dashCol)
		}
	}

	var out bytes.Buffer
	for _, l := range lines[:at] {
		out.WriteString(l)
	}
	if at > 0 && !strings.HasSuffix(lines[at-1], "\n") {
		out.WriteString(nl) // the list ended the file without a final newline
	}
	block := accountBlock(a, dashCol, keyCol, nl)
	if at == len(lines) && len(lines) > 0 && !strings.HasSuffix(lines[len(lines)-1], "\n") {
		block = strings.TrimSuffix(block, nl) // keep the file's missing final newline
	}
	out.WriteString(block)
	for _, l := range lines[at:] {
		out.WriteString(l)
	}
	return out.Bytes(), nil
}

// RemoveAccount returns src without the named account's entry: its lines, the comment lines
// right above it at the list's indentation, and the comment lines indented inside it. The
// rest stays byte for byte. The result is not validated: parse it before writing.
func RemoveAccount(src []byte, name string) ([]byte, error) {
	doc, err := parseDoc(src)
	if err != nil {
		return nil, err
	}
	_, seq := findAccounts(doc)
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("no account named %q: the file has no accounts list: %w", name, ErrAccountNotFound)
	}
	if seq.Style&yaml.FlowStyle != 0 {
		return nil, fmt.Errorf("line %d: accounts is written in flow style ([...]); write it as a block list to remove accounts from the command line", seq.Line)
	}
	lines := splitLines(src)
	dashCol := seq.Column - 1
	var target *yaml.Node
	var names []string
	first := false
	for i, item := range seq.Content {
		n := itemName(item)
		names = append(names, n)
		if n == name && target == nil {
			target, first = item, i == 0
		}
	}
	if target == nil {
		return nil, fmt.Errorf("no account named %q (accounts: %s): %w", name, strings.Join(names, ", "), ErrAccountNotFound)
	}
	d := dashLine(lines, target, dashCol)
	start, end := d, blockEnd(lines, d, dashCol)
	for start > 0 && isComment(lines[start-1]) && indentOf(lines[start-1]) == dashCol {
		start--
	}
	// A blank line that separated this entry from the next goes with it when the entry was
	// first in the list, or when one also separated it from the previous entry.
	if end < len(lines) && isBlank(lines[end]) &&
		((first && len(seq.Content) > 1) || (start > 0 && isBlank(lines[start-1]))) {
		end++
	}
	var out bytes.Buffer
	for i, l := range lines[:start] {
		if end == len(lines) && i == start-1 && !strings.HasSuffix(lines[end-1], "\n") {
			l = strings.TrimRight(l, "\r\n") // the entry ended the file without a final newline
		}
		out.WriteString(l)
	}
	for _, l := range lines[end:] {
		out.WriteString(l)
	}
	return out.Bytes(), nil
}

func parseDoc(src []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode}, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the config must be a mapping of keys (version:, accounts:, ...)", root.Line)
	}
	return root, nil
}

func findAccounts(root *yaml.Node) (key, value *yaml.Node) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "accounts" {
			return root.Content[i], root.Content[i+1]
		}
	}
	return nil, nil
}

func itemName(item *yaml.Node) string {
	if item.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(item.Content); i += 2 {
		if item.Content[i].Value == "name" {
			return item.Content[i+1].Value
		}
	}
	return ""
}

// dashLine finds the line (0-based) of the "-" that opens item: its own line, or the nearest
// line above whose first character at dashCol is a dash.
func dashLine(lines []string, item *yaml.Node, dashCol int) int {
	for i := item.Line - 1; i >= 0 && i < len(lines); i-- {
		l := lines[i]
		if indentOf(l) == dashCol && len(l) > dashCol && l[dashCol] == '-' {
			return i
		}
	}
	return item.Line - 1
}

// blockEnd returns the index after the last non-blank line, from the one after start, that is
// indented deeper than col: the end of the entry (or key) at line start, comments inside it
// included, trailing blank lines excluded.
func blockEnd(lines []string, start, col int) int {
	end := start + 1
	for k := start + 1; k < len(lines); k++ {
		if isBlank(lines[k]) {
			continue
		}
		if indentOf(lines[k]) <= col {
			break
		}
		end = k + 1
	}
	return end
}

func accountBlock(a NewAccount, dashCol, keyCol int, nl string) string {
	var b strings.Builder
	pad := strings.Repeat(" ", keyCol)
	b.WriteString(strings.Repeat(" ", dashCol) + "-" + strings.Repeat(" ", max(keyCol-dashCol-1, 1)) + "name: " + yamlScalar(a.Name) + nl)
	if a.Plan != "" {
		b.WriteString(pad + "plan: " + yamlScalar(a.Plan) + nl)
	}
	switch {
	case a.OAuthTokenEnv != "":
		b.WriteString(pad + "oauth_token: ${" + a.OAuthTokenEnv + "}" + nl)
	case a.APIKeyEnv != "":
		b.WriteString(pad + "api_key: ${" + a.APIKeyEnv + "}" + nl)
	case a.APIKeyFile != "":
		b.WriteString(pad + "api_key_file: " + yamlScalar(a.APIKeyFile) + nl)
	case a.OAuthFile != "":
		b.WriteString(pad + "oauth_file: " + yamlScalar(a.OAuthFile) + nl)
	}
	return b.String()
}

var plainScalarRE = regexp.MustCompile(`^[A-Za-z_./][A-Za-z0-9_./+@-]*$`)

// yamlScalar writes s plain when YAML reads it back as the same string, else double-quoted.
func yamlScalar(s string) string {
	if plainScalarRE.MatchString(s) {
		var v any
		if err := yaml.Unmarshal([]byte("v: "+s), &struct{ V *any }{&v}); err == nil {
			if str, ok := v.(string); ok && str == s {
				return s
			}
		}
	}
	return strconv.Quote(s)
}

// splitLines splits src after each "\n", keeping the terminators; the last line may lack one.
func splitLines(src []byte) []string {
	var lines []string
	for len(src) > 0 {
		i := bytes.IndexByte(src, '\n')
		if i < 0 {
			lines = append(lines, string(src))
			break
		}
		lines = append(lines, string(src[:i+1]))
		src = src[i+1:]
	}
	return lines
}

func isBlank(l string) bool { return strings.TrimSpace(l) == "" }

func isComment(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "#") }

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// WriteFileAtomic replaces the file at path with data: a temporary file in the same folder,
// written, given the old file's mode (and owner, where the platform allows), synced, then
// renamed over the old one, so a reader (or a crash) sees the old file or the new one, never
// half of one. A symlink at path is followed: its target is replaced.
func WriteFileAtomic(path string, data []byte) (err error) {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(target)
	if err != nil {
		return err
	}
	dir := filepath.Dir(target)
	f, err := os.CreateTemp(dir, "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create a temporary file next to %s: %w", target, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(fi.Mode().Perm()); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	chownLike(f, fi)
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, target); err != nil {
		return fmt.Errorf("replace %s: %w", target, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // the rename itself survives a crash
		_ = d.Close()
	}
	return nil
}
