package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file walks the yaml.Node tree of a file against the Config struct before anything is
// decoded. On the way it records where every key and value is (so that later checks can point
// at file:line:col), replaces ${VAR} references, reports unknown keys, duplicate keys and values
// of the wrong type, and prunes whatever is wrong so the decode that follows only sees keys it
// can take. The decode (koanf + mapstructure with ErrorUnused) is the safety net behind it.

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	secretType   = reflect.TypeFor[Secret]()
)

// maxSteps bounds the walk, so that alias bombs ("billion laughs") cost nothing.
const maxSteps = 1 << 18

type pos struct{ line, col int }

func posOf(n *yaml.Node) pos { return pos{n.Line, n.Column} }

// loc is where a key path sits in the file: its key and its value. List elements have both
// set to the element.
type loc struct{ key, val pos }

type structInfo struct {
	fields map[string]reflect.StructField // by koanf tag
	names  []string                       // tags in declaration order
}

type walker struct {
	file string
	opts *Options

	probs []Problem
	warns []Problem

	at      map[string]loc
	present map[string]bool
	// bad holds paths that had a structural problem; later checks say nothing more about them.
	bad map[string]bool
	// unresolved maps a path to the unset variable its value needs (without CheckEnv).
	unresolved map[string]string
	// fromEnv holds paths whose value came from ${VAR} references.
	fromEnv map[string]bool
	// extensions are the top-level x- keys, dropped before the decode.
	extensions []string
	memo       map[*yaml.Node]expansion
	infos      map[reflect.Type]*structInfo
	steps      int
	stopped    bool
}

func newWalker(file string, opts *Options) *walker {
	return &walker{
		file:       file,
		opts:       opts,
		at:         map[string]loc{},
		present:    map[string]bool{},
		bad:        map[string]bool{},
		unresolved: map[string]string{},
		fromEnv:    map[string]bool{},
		memo:       map[*yaml.Node]expansion{},
		infos:      map[reflect.Type]*structInfo{},
	}
}

func (w *walker) problem(p pos, path, format string, args ...any) {
	if path != "" {
		w.bad[path] = true
	}
	w.probs = append(w.probs, Problem{File: w.file, Line: p.line, Col: p.col, Msg: oneLine(fmt.Sprintf(format, args...))})
}

func (w *walker) warn(p pos, format string, args ...any) {
	w.warns = append(w.warns, Problem{File: w.file, Line: p.line, Col: p.col, Msg: oneLine(fmt.Sprintf(format, args...))})
}

func (w *walker) info(t reflect.Type) *structInfo {
	if si, ok := w.infos[t]; ok {
		return si
	}
	si := &structInfo{fields: map[string]reflect.StructField{}}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("koanf")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		si.fields[tag] = f
		si.names = append(si.names, tag)
	}
	w.infos[t] = si
	return si
}

// root walks the document. It returns false when the file is not a mapping at all.
func (w *walker) root(doc *yaml.Node) bool {
	if doc == nil || doc.Kind == 0 {
		return true
	}
	n := doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return true
		}
		n = n.Content[0]
	}
	if isNull(n) {
		return true
	}
	if r := resolve(n); r == nil || r.Kind != yaml.MappingNode {
		w.problem(posOf(n), "", "the file must be a mapping of keys, starting with version: 1")
		return false
	}
	w.walk(n, reflect.TypeFor[Config](), "")
	return !w.stopped
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func nullNode() *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"} }

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// where names a path for messages: "at the top level" or "in accounts[0]".
func where(path string) string {
	if path == "" {
		return "at the top level"
	}
	return "in " + path
}

// walk checks n against type t. It returns false when n cannot be decoded into t, and the
// caller then removes it from the tree.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) bool {
	if w.stopped {
		return false
	}
	if w.steps++; w.steps > maxSteps {
		w.stopped = true
		w.problem(posOf(n), path, "the file is too large or expands too many aliases (over %d values)", maxSteps)
		return false
	}
	n = resolve(n)
	if n == nil || n.Kind == yaml.AliasNode {
		return false
	}
	if isNull(n) {
		return true
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType, t == byteSizeType:
		return w.scalar(n, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.problem(posOf(n), path, "%s: want a mapping of keys, got %s", path, describeNode(n, false))
			return false
		}
		w.mapping(n, path, func(k, v *yaml.Node, key string) bool {
			if path == "" && strings.HasPrefix(key, "x-") {
				// Extension keys hold YAML anchors for use elsewhere; they are not config.
				w.extensions = append(w.extensions, key)
				return true
			}
			si := w.info(t)
			f, ok := si.fields[key]
			if !ok {
				w.problem(posOf(k), joinPath(path, key), "%s", unknownKeyMsg(key, path, si.names))
				return false
			}
			return w.field(k, v, f.Type, joinPath(path, key))
		}, func(m *yaml.Node) { w.walk(m, t, path) })
		return true
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.problem(posOf(n), path, "%s: want a mapping of keys, got %s", path, describeNode(n, false))
			return false
		}
		w.mapping(n, path, func(k, v *yaml.Node, key string) bool {
			return w.field(k, v, t.Elem(), joinPath(path, key))
		}, func(m *yaml.Node) { w.walk(m, t, path) })
		return true
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			hint := `like ["a", "b"]`
			if t.Elem().Kind() == reflect.Struct {
				hint = "with one entry per line, each starting with -"
			}
			w.problem(posOf(n), path, "%s: want a list %s, got %s", path, hint, describeNode(n, false))
			return false
		}
		for i, e := range n.Content {
			ep := fmt.Sprintf("%s[%d]", path, i)
			w.at[ep] = loc{posOf(e), posOf(e)}
			w.present[ep] = true
			if !w.walk(e, t.Elem(), ep) {
				// Keep the indices of the other elements: an element that cannot be decoded
				// becomes null, its problem already reported.
				n.Content[i] = nullNode()
			}
		}
		return true
	default:
		return w.scalar(n, t, path)
	}
}

// field walks one key: value pair of a mapping. It returns false to drop the pair.
func (w *walker) field(k, v *yaml.Node, t reflect.Type, path string) bool {
	w.at[path] = loc{posOf(k), posOf(v)}
	if isNull(v) {
		// key: with nothing after it leaves the default in place.
		return false
	}
	w.present[path] = true
	return w.walk(v, t, path)
}

// mapping walks the pairs of a mapping node, dropping those each returns false for, and
// those with duplicate or non-string keys. merge handles the YAML merge key (<<: *anchor).
func (w *walker) mapping(n *yaml.Node, path string, each func(k, v *yaml.Node, key string) bool, merge func(*yaml.Node)) {
	seen := map[string]pos{}
	keep := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if w.mergeValue(v, path, merge) {
				keep = append(keep, k, v)
			}
			continue
		}
		rk := resolve(k)
		if rk == nil || rk.Kind != yaml.ScalarNode || rk.ShortTag() != "!!str" {
			w.problem(posOf(k), path, "key %s %s is not a name; keys are plain words like listen or accounts", describeNode(k, false), where(path))
			continue
		}
		key := rk.Value
		if first, dup := seen[key]; dup {
			w.problem(posOf(k), "", "key %q appears twice %s (first on line %d); keep one", key, where(path), first.line)
			continue
		}
		seen[key] = posOf(k)
		if each(k, v, key) {
			keep = append(keep, k, v)
		}
	}
	n.Content = keep
}

func (w *walker) mergeValue(v *yaml.Node, path string, merge func(*yaml.Node)) bool {
	rv := resolve(v)
	switch {
	case rv != nil && rv.Kind == yaml.MappingNode:
		merge(rv)
		return true
	case rv != nil && rv.Kind == yaml.SequenceNode:
		for _, e := range rv.Content {
			if re := resolve(e); re == nil || re.Kind != yaml.MappingNode {
				w.problem(posOf(e), path, "the merge key << %s takes a mapping or a list of mappings (*anchors)", where(path))
				return false
			}
		}
		for _, e := range rv.Content {
			merge(resolve(e))
		}
		return true
	}
	w.problem(posOf(v), path, "the merge key << %s takes a mapping or a list of mappings (*anchors)", where(path))
	return false
}

// scalar checks a scalar value, replacing ${VAR} references in strings first.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) bool {
	secret := t == secretType
	if n.Kind != yaml.ScalarNode {
		w.problem(posOf(n), path, "%s: want %s, got %s", path, describeType(t), describeNode(n, secret))
		return false
	}
	_, expanded := w.memo[n]
	if expanded || n.ShortTag() == "!!str" && strings.Contains(n.Value, "${") {
		if !w.substitute(n, t, path) {
			return false
		}
		expanded = true
	}
	if secret && !expanded && n.Value != "" && n.ShortTag() == "!!str" {
		key := path[strings.LastIndexByte(path, '.')+1:]
		w.warn(posOf(n), "%s is a literal secret; use ${VAR} or %s_file so the file can live in git", path, key)
	}
	tag := n.ShortTag()
	switch {
	case t == durationType:
		switch tag {
		case "!!str":
			if _, err := time.ParseDuration(n.Value); err == nil {
				return true
			}
			w.problem(posOf(n), path, "%s: %q is not a duration; write a number with a unit, like 60s, 5m or 1h", path, n.Value)
		case "!!int":
			if v, err := strconv.ParseFloat(n.Value, 64); err == nil && v == 0 {
				return true
			}
			w.problem(posOf(n), path, "%s: %s has no unit; write a duration like 60s, 5m or 1h", path, n.Value)
		default:
			w.problem(posOf(n), path, "%s: want a duration like 60s, 5m or 1h, got %s", path, describeNode(n, false))
		}
		return false
	case t == byteSizeType:
		var b ByteSize
		switch tag {
		case "!!int":
			var v int64
			if err := n.Decode(&v); err == nil {
				return true
			}
		case "!!str":
			if err := b.UnmarshalText([]byte(n.Value)); err == nil {
				return true
			}
		}
		w.problem(posOf(n), path, "%s: want a size like 32MiB, 512KiB or a number of bytes, got %s", path, describeNode(n, false))
		return false
	}
	switch t.Kind() {
	case reflect.String:
		if tag == "!!str" {
			return true
		}
		if secret {
			w.problem(posOf(n), path, "%s: want a string; put the value in quotes", path)
		} else {
			w.problem(posOf(n), path, "%s: want a string, got %s; put it in quotes: %q", path, describeNode(n, false), n.Value)
		}
	case reflect.Bool:
		if tag == "!!bool" {
			return true
		}
		w.problem(posOf(n), path, "%s: want true or false, got %s", path, describeNode(n, false))
	case reflect.Int, reflect.Int64, reflect.Int32:
		var v int64
		if tag == "!!int" && n.Decode(&v) == nil {
			return true
		}
		w.problem(posOf(n), path, "%s: want a whole number, got %s", path, describeNode(n, false))
	case reflect.Float64, reflect.Float32:
		var v float64
		if (tag == "!!int" || tag == "!!float") && n.Decode(&v) == nil {
			return true
		}
		w.problem(posOf(n), path, "%s: want a number, got %s", path, describeNode(n, false))
	default:
		w.problem(posOf(n), path, "%s: unsupported value %s", path, describeNode(n, secret))
	}
	return false
}

// substitute replaces the ${VAR} references of n in place (once per node, even when aliases
// reach it more than once). It returns false when the value must not be decoded: a malformed
// reference, or a variable that is not set.
func (w *walker) substitute(n *yaml.Node, t reflect.Type, path string) bool {
	x, done := w.memo[n]
	if !done {
		x = expand(n.Value, w.opts.Env)
		w.memo[n] = x
		if x.err == nil && x.unset == "" {
			n.Value = x.value
			if t.Kind() == reflect.String {
				n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
			} else {
				// Let the substituted text decide its type: max_attempts: ${N:-3} is a number.
				n.Tag, n.Style = "", 0
			}
		}
	}
	switch {
	case x.err != nil:
		w.problem(posOf(n), path, "%s %s", path, x.err)
		return false
	case x.unset != "" && w.opts.CheckEnv:
		w.problem(posOf(n), path, "%s uses ${%s}, which is not set; set it in the environment or give a default: ${%s:-value}", path, x.unset, x.unset)
		return false
	case x.unset != "":
		w.unresolved[path] = x.unset
		return false
	}
	w.fromEnv[path] = x.refs
	return true
}

// describeNode says what a value is, for "got …" in messages; secret values are not quoted.
func describeNode(n *yaml.Node, secret bool) string {
	n = resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if secret || strings.HasPrefix(n.Value, "sk-") {
			// Never quote a secret, even one written where it does not belong.
			return "a value"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		return strconv.Quote(v)
	}
	return "a value"
}

func describeType(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration like 60s"
	case t == byteSizeType:
		return "a size like 32MiB"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	}
	return "a mapping of keys"
}

// unknownKeyMsg names the unknown key and suggests the closest valid one, or lists them.
func unknownKeyMsg(key, path string, valid []string) string {
	msg := fmt.Sprintf("unknown key %q %s", key, where(path))
	if s := suggest(key, valid); s != "" {
		return msg + fmt.Sprintf(" (did you mean %q?)", s)
	}
	if len(valid) == 0 {
		return msg
	}
	return msg + "; valid keys: " + strings.Join(valid, ", ")
}

// suggest returns the valid key closest to key, if it is close enough to be a typo.
func suggest(key string, valid []string) string {
	best, bestD := "", math.MaxInt
	lk := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	for _, v := range valid {
		d := editDistance(lk, v)
		if d < bestD {
			best, bestD = v, d
		}
	}
	limit := 1
	if len(key) > 5 {
		limit = 2
	}
	if len(key) > 10 {
		limit = 3
	}
	if bestD <= limit {
		return best
	}
	return ""
}

// editDistance is the optimal string alignment distance: insertions, deletions, substitutions
// and transpositions of neighbours ("plna" is one step from "plan").
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		if a == b {
			return 0
		}
		return math.MaxInt / 2
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
