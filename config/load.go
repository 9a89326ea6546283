package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	kyaml "github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"go.yaml.in/yaml/v3"
)

// Options tune how a file is loaded.
type Options struct {
	// CheckEnv requires the environment to be complete: every ${VAR} without a default is set,
	// every *_file secret can be read, and every oauth_file can be read or created. Load and
	// Parse (what serve and reloads use) always check; `claude-lb validate` checks only with
	// --check-env, so that a config can be validated in CI without its secrets. Without
	// CheckEnv, a value that needs an unset variable is taken as given but not checked, and
	// *_file secrets are not read (their Secret fields stay empty).
	CheckEnv bool
	// Env looks variables up; nil means os.LookupEnv.
	Env func(string) (string, bool)
	// ReadFile reads *_file secrets; nil means os.ReadFile.
	ReadFile func(string) ([]byte, error)
	// Stat looks at oauth_file paths; nil means os.Stat.
	Stat func(string) (fs.FileInfo, error)
}

func (o Options) withDefaults() Options {
	if o.Env == nil {
		o.Env = os.LookupEnv
	}
	if o.ReadFile == nil {
		o.ReadFile = os.ReadFile
	}
	if o.Stat == nil {
		o.Stat = os.Stat
	}
	return o
}

// Load reads, parses and validates the config file at path, with the process environment,
// requiring every ${VAR} to be set and every *_file to be readable (Options.CheckEnv). It
// returns an *fs.PathError when the file cannot be read and an *Error listing every problem
// when it is not a valid config. Each call is independent: safe to call concurrently.
func Load(path string) (*Config, error) {
	return LoadWith(path, Options{CheckEnv: true})
}

// LoadWith is Load with options.
func LoadWith(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseWith(path, data, opts)
}

// Parse parses and validates a config file's bytes; path names it in messages and anchors
// relative *_file paths. env looks variables up (os.LookupEnv in Load). Like Load it requires
// the environment to be complete (CheckEnv), and reads *_file secrets with os.ReadFile.
func Parse(path string, data []byte, env func(string) (string, bool)) (*Config, error) {
	return ParseWith(path, data, Options{CheckEnv: true, Env: env})
}

// ParseWith is Parse with options. It never returns both a Config and an error; on success,
// non-fatal findings are in Config.Warnings.
func ParseWith(path string, data []byte, opts Options) (*Config, error) {
	opts = opts.withDefaults()
	file := path
	if file == "" {
		file = "config"
	}
	w := newWalker(file, &opts)
	doc, ok := parseYAML(w, data)
	if !ok {
		return nil, &Error{Problems: w.probs}
	}
	if !w.root(doc) {
		return nil, &Error{Problems: w.probs}
	}

	cfg := Default()
	if err := decode(doc, w.extensions, cfg); err != nil {
		w.decodeProblems(err)
	}
	sum := sha256.Sum256(data)
	cfg.Path, cfg.Hash = path, hex.EncodeToString(sum[:])
	if len(w.unresolved) > 0 {
		cfg.unresolved = w.unresolved
	}

	k := &checker{c: cfg, w: w, file: file}
	k.finalize(path)
	k.secrets(&opts)
	if opts.CheckEnv {
		k.port(opts.Env)
	}
	k.run()

	probs := dedupe(append(w.probs, k.probs...))
	warns := dedupe(append(w.warns, k.warns...))
	sortProblems(probs)
	sortProblems(warns)
	var ws []string
	for _, p := range warns {
		ws = append(ws, p.Error())
	}
	if len(probs) > 0 {
		return nil, &Error{Problems: probs, Warnings: ws}
	}
	cfg.Warnings = ws
	return cfg, nil
}

// Validate checks a config built or changed in code, with the checks Load applies to values
// (not those that need the file: unknown keys, types, missing version, env). It returns nil or
// an *Error whose problems carry no line numbers.
func (c *Config) Validate() error {
	file := c.Path
	if file == "" {
		file = "config"
	}
	k := &checker{c: c, file: file}
	k.run()
	if len(k.probs) == 0 {
		return nil
	}
	return &Error{Problems: dedupe(k.probs)}
}

func dedupe(ps []Problem) []Problem {
	seen := map[Problem]bool{}
	out := ps[:0:0]
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

var yamlLineRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// parseYAML reads the one YAML document of the file as a node tree.
func parseYAML(w *walker, data []byte) (doc *yaml.Node, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			w.problem(pos{1, 1}, "", "the YAML parser failed on this file (%v); check its syntax", r)
			doc, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc = &yaml.Node{}
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			return doc, true
		}
		w.yamlProblem(err)
		return nil, false
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		w.yamlProblem(err)
		return nil, false
	default:
		w.problem(pos{max(extra.Line-1, 1), 1}, "", "the file holds more than one YAML document (---); keep only one")
		return nil, false
	}
	return doc, true
}

func (w *walker) yamlProblem(err error) {
	msg := err.Error()
	line := 1
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if m[1] != "" {
			line, _ = strconv.Atoi(m[1])
		}
		msg = msg[len(m[0]):]
	}
	w.problem(pos{line, 1}, "", "invalid YAML: %s", msg)
}

// decode overlays the walked (substituted, pruned) tree on cfg through koanf: YAML bytes from
// the rawbytes provider and the yaml parser, then mapstructure with ErrorUnused, no weak
// typing, the duration and TextUnmarshaler hooks, and ZeroFields so that a list in the file
// replaces the default list instead of merging into it element by element.
func decode(doc *yaml.Node, extensions []string, cfg *Config) (err error) {
	if doc == nil || doc.Kind == 0 || (doc.Kind == yaml.DocumentNode && len(doc.Content) == 0) {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	stripComments(doc, map[*yaml.Node]bool{})
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(buf.Bytes()), kyaml.Parser()); err != nil {
		return err
	}
	for _, x := range extensions {
		k.Delete(x)
	}
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			mapstructure.TextUnmarshallerHookFunc(),
		),
		ErrorUnused:      true,
		WeaklyTypedInput: false,
		ZeroFields:       true,
		TagName:          "koanf",
	}
	return k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: dc})
}

func stripComments(n *yaml.Node, seen map[*yaml.Node]bool) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		stripComments(c, seen)
	}
}

// durationHook reads "60s" as a duration, and refuses a bare number other than 0 (which
// mapstructure would take as nanoseconds).
func durationHook(f, t reflect.Type, data any) (any, error) {
	if t != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return time.ParseDuration(v)
	case int:
		if v != 0 {
			return nil, fmt.Errorf("%d has no unit; write a duration like 60s", v)
		}
		return time.Duration(0), nil
	}
	return data, nil
}

var mapIndexRE = regexp.MustCompile(`\[([^\]]*[^\]0-9][^\]]*)\]`)

// decodeProblems turns what the decode refused (the walk should have caught it first) into
// problems at the right place.
func (w *walker) decodeProblems(err error) {
	var leaves []*mapstructure.DecodeError
	var visit func(error)
	visit = func(e error) {
		var de *mapstructure.DecodeError
		if errors.As(e, &de) && de == e {
			leaves = append(leaves, de)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				visit(x)
			}
		case interface{ Unwrap() error }:
			if x := u.Unwrap(); x != nil {
				visit(x)
			}
		}
	}
	visit(err)
	if len(leaves) == 0 {
		w.problem(pos{1, 1}, "", "cannot decode the file: %v", err)
		return
	}
	for _, de := range leaves {
		path := mapIndexRE.ReplaceAllString(de.Name(), ".$1")
		p := pos{1, 1}
		for q := path; q != ""; q = parentPath(q) {
			if l, ok := w.at[q]; ok {
				p = l.val
				break
			}
		}
		w.problem(p, path, "%s: %v", path, de.Unwrap())
	}
}

// parentPath strips the last segment: accounts[0].plan → accounts[0] → accounts → "".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// finalize fills the defaults that depend on the file: an account's plan (console) and weight
// (1), the Redis prefix and timeout, the default plans, lowercase client hashes, and *_file
// paths made absolute against the config's folder. It moves a password written in the Redis
// URL to Redis.Password.
func (k *checker) finalize(path string) {
	c := k.c
	for name, desc := range Default().Plans {
		if _, ok := c.Plans[name]; !ok {
			if c.Plans == nil {
				c.Plans = map[string]string{}
			}
			c.Plans[name] = desc
		}
	}
	base := ""
	if path != "" {
		base = filepath.Dir(path)
	}
	abs := func(p *string) {
		if *p != "" && base != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for i := range c.Accounts {
		a := &c.Accounts[i]
		p := fmt.Sprintf("accounts[%d]", i)
		if a.Plan == "" && !k.present(p+".plan") {
			a.Plan = "console"
		}
		if !k.present(p + ".weight") {
			a.Weight = 1
		}
		abs(&a.APIKeyFile)
		abs(&a.OAuthTokenFile)
		abs(&a.OAuthFile)
	}
	for i := range c.Clients {
		c.Clients[i].KeySHA256 = strings.ToLower(c.Clients[i].KeySHA256)
	}
	abs(&c.Admin.KeyFile)
	abs(&c.Store.EncryptionKeyFile)
	if r := c.Store.Redis; r != nil {
		if !k.present("store.redis.prefix") {
			r.Prefix = "claude-lb"
		}
		if !k.present("store.redis.timeout") {
			r.Timeout = DefaultRedisTimeout
		}
		abs(&r.PasswordFile)
		if u, err := url.Parse(r.URL); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok {
				if !k.w.expanded("store.redis.url") {
					k.warnf("store.redis.url", "store.redis.url holds a literal password; use ${VAR} in the url, or password / password_file")
				}
				if r.Password == "" {
					r.Password = Secret(pw)
				}
				if name := u.User.Username(); name != "" {
					u.User = url.User(name)
				} else {
					u.User = nil
				}
				r.URL = u.String()
			}
		}
	}
}

// DefaultRedisTimeout bounds each Redis call when store.redis.timeout is not set.
const DefaultRedisTimeout = 500 * time.Millisecond

// expanded reports whether the value at path came from ${VAR} references.
func (w *walker) expanded(path string) bool { return w != nil && w.fromEnv[path] }

// secretPair is a Secret field and the *_file field that may hold it instead.
type secretPair struct {
	path   string // of the secret, e.g. accounts[0].api_key
	secret *Secret
	file   *string
}

func (c *Config) secretPairs() []secretPair {
	var ps []secretPair
	for i := range c.Accounts {
		a := &c.Accounts[i]
		p := fmt.Sprintf("accounts[%d]", i)
		ps = append(ps,
			secretPair{p + ".api_key", &a.APIKey, &a.APIKeyFile},
			secretPair{p + ".oauth_token", &a.OAuthToken, &a.OAuthTokenFile})
	}
	ps = append(ps,
		secretPair{"admin.key", &c.Admin.Key, &c.Admin.KeyFile},
		secretPair{"store.encryption_key", &c.Store.EncryptionKey, &c.Store.EncryptionKeyFile})
	if r := c.Store.Redis; r != nil {
		ps = append(ps, secretPair{"store.redis.password", &r.Password, &r.PasswordFile})
	}
	return ps
}

// secrets checks that no secret is given both inline and as a file, and with CheckEnv reads
// every *_file and checks every oauth_file.
func (k *checker) secrets(opts *Options) {
	for _, p := range k.c.secretPairs() {
		fp := p.path + "_file"
		if k.given(p.path, string(*p.secret)) && k.given(fp, *p.file) {
			k.errf(fp, "%s and %s are both set; keep one", p.path, fp)
			continue
		}
		if !opts.CheckEnv || *p.file == "" || k.skip(fp) {
			continue
		}
		b, err := opts.ReadFile(*p.file)
		if err != nil {
			k.errf(fp, "%s: cannot read %s: %s", fp, *p.file, fsReason(err))
			continue
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			k.errf(fp, "%s: %s is empty; write the secret into it", fp, *p.file)
			continue
		}
		*p.secret = Secret(s)
	}
	if !opts.CheckEnv {
		return
	}
	for i, a := range k.c.Accounts {
		p := fmt.Sprintf("accounts[%d].oauth_file", i)
		if a.OAuthFile == "" || k.skip(p) {
			continue
		}
		fi, err := opts.Stat(a.OAuthFile)
		switch {
		case err == nil && fi.IsDir():
			k.errf(p, "%s: %s is a directory; name a file (claude-lb login writes it)", p, a.OAuthFile)
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			dir := filepath.Dir(a.OAuthFile)
			if di, err := opts.Stat(dir); err != nil || !di.IsDir() {
				k.errf(p, "%s: folder %s does not exist; create it, then run claude-lb login %s", p, dir, a.Name)
			}
		default:
			k.errf(p, "%s: cannot use %s: %s", p, a.OAuthFile, fsReason(err))
		}
	}
}

// fsReason is the cause of a file error without the path repeated.
func fsReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}

// port checks the PORT environment variable that ListenAddr applies.
func (k *checker) port(env func(string) (string, bool)) {
	v, ok := env("PORT")
	if !ok || v == "" {
		return
	}
	if _, err := parsePort(v); err != nil {
		k.errf("listen", "environment variable PORT=%q is not a port number (1-65535); it replaces the port of listen", v)
	}
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return n, nil
}

// ListenAddr returns the address to serve on: Listen, with its port replaced by the PORT
// environment variable when env has it set and not empty (as Heroku, Cloud Run and the
// original tool do). serve calls it with os.LookupEnv; Load has already checked PORT.
func (c *Config) ListenAddr(env func(string) (string, bool)) (string, error) {
	v, ok := env("PORT")
	if !ok || v == "" {
		return c.Listen, nil
	}
	if _, err := parsePort(v); err != nil {
		return "", fmt.Errorf("environment variable PORT: %w", err)
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("listen %q: %w", c.Listen, err)
	}
	return net.JoinHostPort(host, v), nil
}
