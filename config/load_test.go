package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testEnv holds the variables the testdata files use; secrets are recognisable so that tests
// can look for them in output.
var testEnv = map[string]string{
	"PERSONAL_API_KEY":  "sk-ant-api03-PERSONAL-secret-value",
	"WORK_OAUTH_TOKEN":  "sk-ant-oat01-WORK-secret-value",
	"OTHER_API_KEY":     "sk-ant-api03-OTHER-secret-value",
	"THIRD_API_KEY":     "sk-ant-api03-THIRD-secret-value",
	"FOURTH_API_KEY":    "sk-ant-api03-FOURTH-secret-value",
	"FIFTH_API_KEY":     "sk-ant-api03-FIFTH-secret-value",
	"OTHER_OAUTH_TOKEN": "sk-ant-oat01-OTHER-secret-value",
	"ENCRYPTION_KEY":    "ENCRYPTION-secret-value",
	"REDIS_PASSWORD":    "REDIS-secret-value",
	"HISTORY_SIZE":      "50",
	"NUMERIC_VAR":       "12345",
	"NOT_A_NUMBER":      "many",
}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func load(t *testing.T, file string, checkEnv bool) (*Config, error) {
	t.Helper()
	return LoadWith(file, Options{CheckEnv: checkEnv, Env: lookup(testEnv)})
}

func mustLoad(t *testing.T, file string) *Config {
	t.Helper()
	c, err := load(t, file, true)
	if err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	return c
}

func TestGoodConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good testdata: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := mustLoad(t, f)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after Load: %v", err)
			}
			// Without CheckEnv the same file is valid too.
			if _, err := load(t, f, false); err != nil {
				t.Errorf("load without CheckEnv: %v", err)
			}
		})
	}
}

func TestBadConfigs(t *testing.T) {
	tests := []struct {
		file     string
		noEnv    bool // load without CheckEnv
		wantErrs []string
	}{
		{file: "syntax.bad.yaml", wantErrs: []string{"2:1: invalid YAML: did not find expected '-' indicator"}},
		{file: "unknown-keys.bad.yaml", wantErrs: []string{
			`2:1: unknown key "lisen" at the top level (did you mean "listen"?)`,
			`3:1: unknown key "routng" at the top level (did you mean "routing"?)`,
			`6:3: unknown key "stratgy" in routing (did you mean "strategy"?)`,
			`7:3: unknown key "zzz" in routing; valid keys: strategy, affinity`,
			`10:5: unknown key "plna" in accounts[0] (did you mean "plan"?)`,
		}},
		{file: "types.bad.yaml", wantErrs: []string{
			`2:11: max_body: want a size like 32MiB`,
			`3:8: watch: want true or false, got "yes"`,
			`5:17: routing.max_attempts: want a whole number, got "x"`,
			`6:15: routing.soft_limit: want a number, got "high"`,
			`7:13: routing.cooldown: 60 has no unit`,
			`8:13: routing.holdback: want a duration like 60s, got a list`,
			`10:9: history.size: want a whole number, got "1.5"`,
			`11:9: models: want a list with one entry per line`,
			`13:11: accounts[0].name: want a string, got "2024"; put it in quotes`,
			`14:14: accounts[0].api_key: want a string; put the value in quotes`,
			`15:15: accounts[0].disabled: want true or false, got "yes"`,
			`16:13: accounts[0].models: want a list like`,
			`17:5: accounts[1]: want a mapping of keys, got "just a string"`,
			`18:10: clients: want a list with one entry per line`,
		}},
		{file: "version-missing.bad.yaml", wantErrs: []string{"1:1: version is missing; add version: 1"}},
		{file: "version-2.bad.yaml", wantErrs: []string{"1:10: version 2 is not supported"}},
		{file: "no-accounts.bad.yaml", wantErrs: []string{"1:1: no accounts; add at least one under accounts:"}},
		{file: "accounts-empty.bad.yaml", wantErrs: []string{"2:11: accounts is empty"}},
		{file: "empty.bad.yaml", wantErrs: []string{"1:1: version is missing", "1:1: no accounts"}},
		{file: "not-mapping.bad.yaml", wantErrs: []string{"1:1: the file must be a mapping of keys"}},
		{file: "multidoc.bad.yaml", wantErrs: []string{"4:1: the file holds more than one YAML document"}},
		{file: "duplicate-keys.bad.yaml", wantErrs: []string{
			`3:1: key "listen" appears twice at the top level (first on line 2)`,
			`7:5: key "name" appears twice in accounts[0] (first on line 5)`,
		}},
		{file: "names.bad.yaml", wantErrs: []string{
			`5:11: account name "work" is used twice (first by accounts[0])`,
			`7:5: accounts[2] has no name`,
			`8:11: account name "has space": use 1 to 64 letters`,
			`10:5: accounts[4] has no name`,
		}},
		{file: "credentials.bad.yaml", wantErrs: []string{
			`3:5: account "none" has no credential; set one of api_key`,
			`7:5: account "two" has 2 credentials (api_key, oauth_token); keep exactly one`,
			`10:19: accounts[2].api_key and accounts[2].api_key_file are both set; keep one`,
			`12:14: accounts[3].api_key is empty`,
			`13:5: account "same-key" uses the same credential as "both-forms"`,
			`20:17: account "t2" uses the same oauth_file as "t1"`,
		}},
		{file: "plans.bad.yaml", wantErrs: []string{
			`3:3: plan name "team plan": use 1 to 64 letters`,
			`7:13: models[0].plans[0]: plan "maxx" is not defined under plans (defined: console, max, pro, team plan); did you mean "max"?`,
			`9:13: models[1].plans[0]: plan "enterprise" is not defined under plans`,
			`12:11: accounts[0].plan: plan "pro-plan" is not defined under plans`,
		}},
		{file: "globs.bad.yaml", wantErrs: []string{
			`3:13: models[0].match[0]: "claude-[opus" is not a valid glob`,
			`5:13: models[1].match[0] is empty`,
			`7:5: models[2] has no match globs`,
			`8:5: models[3] lists no plans`,
			`9:5: models[4] lists no plans`,
			`14:14: accounts[0].models[0]: "claude-\\" is not a valid glob`,
		}},
		{file: "dead-rule.bad.yaml", wantErrs: []string{
			`5:5: models[1] can never match: every model it names is matched first by models[0]`,
			`9:5: models[3] can never match: every model it names is matched first by models[0] and models[2]`,
			`13:5: models[5] can never match: every model it names is matched first by models[4]`,
		}},
		{file: "durations.bad.yaml", wantErrs: []string{
			`2:19: shutdown_timeout must not be negative`,
			`4:20: upstream.connect_timeout: "5 minutes" is not a duration`,
			`5:19: upstream.header_timeout must be more than 0`,
			`6:12: upstream.timeout must be more than 0`,
			`8:17: routing.affinity_ttl must be more than 0`,
			`10:17: routing.max_cooldown (1m0s) is shorter than routing.cooldown (10m0s)`,
			`11:13: routing.holdback must not be negative`,
			`13:19: oauth.refresh_before must be more than 0`,
		}},
		{file: "ranges.bad.yaml", wantErrs: []string{
			`2:11: max_body must be more than 0`,
			`4:17: routing.max_attempts must be at least 1`,
			`5:15: routing.soft_limit is a utilization from 0 (excluded) to 1`,
			`7:9: history.size must be from 1 to 1000000, got 0`,
			`11:13: accounts[0].weight must be at least 1, got -1`,
			`14:13: accounts[1].weight must be at least 1 (the default); to stop using the account, set disabled: true`,
		}},
		{file: "soft-limit-zero.bad.yaml", wantErrs: []string{`3:15: routing.soft_limit is a utilization from 0 (excluded) to 1, like 0.9; got 0`}},
		{file: "enums.bad.yaml", wantErrs: []string{
			`3:13: routing.strategy: unknown value "fastest"; use least-used, round-robin or priority`,
			`4:13: routing.affinity: unknown value "sticky"; use session or none`,
			`5:19: routing.unknown_models: unknown value "deny"; use all or reject`,
			`7:10: log.level: unknown value "verbose"`,
			`8:11: log.format: unknown value "xml"; use text or json`,
		}},
		{file: "urls.bad.yaml", wantErrs: []string{
			`3:8: upstream.url is not a http or https URL`,
			`5:14: oauth.token_url is not a https or http URL`,
			`6:18: oauth.authorize_url must not hold a user name or password`,
			`7:17: oauth.redirect_uri must not have a query`,
			`8:14: oauth.client_id is empty`,
			`9:11: oauth.scopes is empty`,
		}},
		{file: "listen.bad.yaml", wantErrs: []string{`2:9: listen "8080" is not host:port`}},
		{file: "listen-port.bad.yaml", wantErrs: []string{`2:9: listen "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`}},
		{file: "listen-open.bad.yaml", wantErrs: []string{`2:9: listen 0.0.0.0:8080 accepts connections from other machines, but no clients are configured`}},
		{file: "redis-empty.bad.yaml", wantErrs: []string{`3:3: store.redis needs url`}},
		{file: "redis.bad.yaml", wantErrs: []string{
			`4:10: store.redis.url is not a redis://, rediss:// or unix:// URL`,
			`5:5: store.redis has both url and addrs`,
			`5:28: store.redis.addrs[1]: "10.0.0.2" is not host:port`,
			`5:40: store.redis.addrs[2]: port "http" is not a number`,
			`7:20: store.redis.password and store.redis.password_file are both set`,
			`8:9: store.redis.db must not be negative`,
			`9:13: store.redis.prefix must be a non-empty word without braces`,
			`10:14: store.redis.timeout must be more than 0`,
			`12:24: store.encryption_key and store.encryption_key_file are both set`,
		}},
		{file: "sentinel.bad.yaml", wantErrs: []string{`5:18: store.redis.master_name selects Sentinel, which needs addrs`}},
		{file: "clients.bad.yaml", wantErrs: []string{
			`5:17: clients[0].key_sha256 must be 64 hex digits`,
			`6:11: client name "laptop" is used twice`,
			`7:17: clients[1].key_sha256 must be 64 hex digits`,
			`11:17: clients[3].key_sha256 is the same as clients[2]'s`,
			`12:5: clients[4] has no name`,
		}},
		{file: "env.bad.yaml", wantErrs: []string{
			`2:9: listen uses ${UNSET_LISTEN}, which is not set`,
			`4:17: routing.max_attempts: want a whole number, got "many"`,
			`7:14: accounts[0].api_key uses ${UNSET_API_KEY}, which is not set`,
			`9:14: accounts[1].api_key has a ${ without its closing }`,
			`11:14: accounts[2].api_key has a malformed ${...} reference`,
		}},
		// Without CheckEnv, unset variables are fine and their values are taken as given.
		{file: "env.bad.yaml", noEnv: true, wantErrs: []string{
			`4:17: routing.max_attempts: want a whole number, got "many"`,
			`9:14: accounts[1].api_key has a ${ without its closing }`,
			`11:14: accounts[2].api_key has a malformed ${...} reference`,
		}},
		{file: "files.bad.yaml", wantErrs: []string{
			`3:13: admin.key_file: cannot read testdata/secrets/missing: no such file`,
			`6:19: accounts[0].api_key_file: testdata/secrets/empty is empty`,
			`8:23: accounts[1].oauth_token_file: cannot read testdata/secrets: is a directory`,
			`11:17: accounts[2].oauth_file: folder testdata/no-such-dir does not exist`,
			`14:17: accounts[3].oauth_file: testdata/secrets is a directory`,
		}},
		// Without CheckEnv no secret file is read or looked at.
		{file: "files.bad.yaml", noEnv: true, wantErrs: nil},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		name := tt.file
		if tt.noEnv {
			name += "/no-check-env"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			c, err := load(t, path, !tt.noEnv)
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("want valid, got:\n%v", err)
				}
				return
			}
			if c != nil {
				t.Errorf("Load returned a config with an error")
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want *config.Error, got %T: %v", err, err)
			}
			got := make([]string, len(cerr.Problems))
			for i, p := range cerr.Problems {
				if p.File != path {
					t.Errorf("problem file %q, want %q", p.File, path)
				}
				got[i] = fmt.Sprintf("%d:%d: %s", p.Line, p.Col, p.Msg)
			}
			for _, want := range tt.wantErrs {
				// want is "line:col: substring of the message".
				at, sub, _ := strings.Cut(want, ": ")
				if !slices.ContainsFunc(got, func(g string) bool {
					gat, msg, _ := strings.Cut(g, ": ")
					return gat == at && strings.Contains(msg, sub)
				}) {
					t.Errorf("missing problem %q", want)
				}
			}
			if len(got) != len(tt.wantErrs) {
				t.Errorf("got %d problems, want %d:\n%s", len(got), len(tt.wantErrs), strings.Join(got, "\n"))
			}
			// Every line of the error is file:line:col: message.
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Errorf("error line %q does not start with %s:", line, path)
				}
			}
		})
	}
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no entry in TestBadConfigs", f)
		}
	}
}

func TestDefaultsAndOverlay(t *testing.T) {
	c := mustLoad(t, "testdata/minimal.good.yaml")
	d := Default()
	if c.Listen != d.Listen || c.Routing != d.Routing || c.Upstream != d.Upstream || c.History != d.History || c.MaxBody != d.MaxBody {
		t.Errorf("minimal config differs from Default:\n%+v\n%+v", c, d)
	}
	if !slices.EqualFunc(c.Models, DefaultModels(), func(a, b ModelRule) bool {
		return slices.Equal(a.Match, b.Match) && slices.Equal(a.Plans, b.Plans)
	}) {
		t.Errorf("models = %+v, want the default matrix", c.Models)
	}
	a := c.Accounts[0]
	if a.Plan != "console" || a.Weight != 1 || a.APIKey.Reveal() != testEnv["PERSONAL_API_KEY"] || a.CredentialKind() != CredAPIKey {
		t.Errorf("account = %+v (plan %q weight %d kind %s)", a, a.Plan, a.Weight, a.CredentialKind())
	}
	if c.Path != "testdata/minimal.good.yaml" || len(c.Hash) != 64 {
		t.Errorf("Path %q Hash %q", c.Path, c.Hash)
	}

	f := mustLoad(t, "testdata/full.good.yaml")
	want := Routing{Strategy: "round-robin", Affinity: "none", AffinityTTL: 30 * time.Minute, SoftLimit: 1,
		MaxAttempts: 5, Cooldown: 30 * time.Second, MaxCooldown: time.Hour, Holdback: 0, UnknownModels: "reject"}
	if f.Routing != want {
		t.Errorf("routing = %+v, want %+v", f.Routing, want)
	}
	if f.Listen != "127.0.0.1:9090" || f.ExposeAccount || f.Watch || f.MaxBody != 16<<20 || f.ShutdownTimeout != 45*time.Second || f.Replica != "r1" {
		t.Errorf("top level = %+v", f)
	}
	if len(f.Models) != 3 || !slices.Equal(f.Models[0].Plans, []string{"max", "team"}) {
		t.Errorf("models did not replace the default list: %+v", f.Models)
	}
	// plans add to the built-in ones; the file may redescribe them.
	if f.Plans["console"] != "Pro plan" || f.Plans["team"] != "Team seats" || f.Plans["max"] == "" {
		t.Errorf("plans = %v", f.Plans)
	}
	if !slices.Equal(f.OAuth.Scopes, []string{"user:inference"}) {
		t.Errorf("scopes did not replace the default list: %v", f.OAuth.Scopes)
	}
	r := f.Store.Redis
	if r == nil || r.URL != "redis://127.0.0.1:6379/2" || r.Password.Reveal() != "hunter2-redis-password" || r.Prefix != "lb" || r.Timeout != 250*time.Millisecond || r.DB != 2 {
		t.Errorf("redis = %+v (password moved out of the url?)", r)
	}
	p := f.Accounts[0]
	abs, _ := filepath.Abs("testdata/secrets/personal")
	if p.APIKeyFile != filepath.Join("testdata", "secrets", "personal") && p.APIKeyFile != abs {
		t.Errorf("api_key_file = %q, want it relative to the config's folder", p.APIKeyFile)
	}
	if p.APIKey.Reveal() != "sk-ant-api03-from-file-secret" {
		t.Errorf("api_key from file = %q (trailing newline trimmed?)", p.APIKey.Reveal())
	}
	if p.Weight != 2 || p.Priority != 3 || !slices.Equal(p.Models, []string{"claude-*haiku*"}) {
		t.Errorf("account 0 = %+v", p)
	}
	if !f.Accounts[1].Disabled || f.Accounts[1].CredentialKind() != CredOAuthToken || f.Accounts[2].CredentialKind() != CredOAuthFile {
		t.Errorf("accounts = %+v", f.Accounts)
	}
	if f.Clients[0].KeySHA256 != strings.ToLower(f.Clients[0].KeySHA256) {
		t.Errorf("client key hash not lowercased: %s", f.Clients[0].KeySHA256)
	}
	if f.Admin.Key.Reveal() != "admin-key-from-file" || f.Store.EncryptionKey.Reveal() != testEnv["ENCRYPTION_KEY"] {
		t.Errorf("admin key %q, encryption key %q", f.Admin.Key.Reveal(), f.Store.EncryptionKey.Reveal())
	}
	if f.Log != (Log{Level: "debug", Format: "json"}) || f.History.Size != 10 {
		t.Errorf("log %+v history %+v", f.Log, f.History)
	}
}

func TestEnvSubstitution(t *testing.T) {
	c := mustLoad(t, "testdata/env.good.yaml")
	if c.Listen != "127.0.0.1:8080" {
		t.Errorf("listen = %q", c.Listen)
	}
	if c.Routing.MaxAttempts != 4 || c.Routing.SoftLimit != 0.75 || c.Routing.Cooldown != 45*time.Second || c.History.Size != 50 {
		t.Errorf("typed values from variables: %+v history %d", c.Routing, c.History.Size)
	}
	if c.Replica != "literal ${NOT_A_VAR} here" {
		t.Errorf("$${ escape: replica = %q", c.Replica)
	}
	if c.Accounts[0].Name != "personal" || c.Accounts[0].Plan != "console" {
		t.Errorf("defaults: %+v", c.Accounts[0])
	}
	// A variable holding digits stays a string where a string is expected.
	if c.Accounts[1].APIKey.Reveal() != "prefix-12345" {
		t.Errorf("api_key = %q", c.Accounts[1].APIKey.Reveal())
	}

	// Values from the environment are taken literally: no YAML injection.
	env := map[string]string{"K": "x\nplan: max\n  - y: [z", "N": "a: b"}
	data := []byte("version: 1\naccounts:\n  - name: ${N:-x}\n    api_key: ${K}\n")
	_, err := ParseWith("inj.yaml", data, Options{CheckEnv: true, Env: lookup(env)})
	if err == nil || !strings.Contains(err.Error(), `account name "a: b"`) {
		t.Errorf("want the name taken literally (and refused), got %v", err)
	}
	env["N"] = "ok"
	c, err = ParseWith("inj.yaml", data, Options{CheckEnv: true, Env: lookup(env)})
	if err != nil || c.Accounts[0].APIKey.Reveal() != env["K"] || c.Accounts[0].Plan != "console" {
		t.Errorf("got %v, %v", c, err)
	}
}

func TestExpand(t *testing.T) {
	env := lookup(map[string]string{"A": "1", "EMPTY": "", "B_2": "two"})
	tests := []struct {
		in, want, unset string
		refs, err       bool
	}{
		{in: "plain", want: "plain"},
		{in: "$HOME and $", want: "$HOME and $"},
		{in: "${A}", want: "1", refs: true},
		{in: "x${A}y${B_2}z", want: "x1ytwoz", refs: true},
		{in: "${MISSING}", want: "", unset: "MISSING", refs: true},
		{in: "${MISSING:-dflt}", want: "dflt", refs: true},
		{in: "${EMPTY:-dflt}", want: "dflt", refs: true},
		{in: "${EMPTY}", want: "", refs: true},
		{in: "${A:-}", want: "1", refs: true},
		{in: "${MISSING:-a:-b}", want: "a:-b", refs: true},
		{in: "$${A}", want: "${A}"},
		{in: "$$${A}", want: "$${A}"},
		{in: "${", err: true},
		{in: "${A", err: true},
		{in: "${}", err: true},
		{in: "${1A}", err: true},
		{in: "${A-b}", err: true},
	}
	for _, tt := range tests {
		x := expand(tt.in, env)
		if (x.err != nil) != tt.err {
			t.Errorf("expand(%q) err = %v, want err %v", tt.in, x.err, tt.err)
			continue
		}
		if tt.err {
			if strings.Contains(x.err.Error(), tt.in) && len(tt.in) > 3 {
				t.Errorf("expand(%q) error quotes the value: %v", tt.in, x.err)
			}
			continue
		}
		if x.value != tt.want || x.unset != tt.unset || x.refs != tt.refs {
			t.Errorf("expand(%q) = %q unset %q refs %v, want %q %q %v", tt.in, x.value, x.unset, x.refs, tt.want, tt.unset, tt.refs)
		}
	}
}

func TestWithoutCheckEnv(t *testing.T) {
	data := []byte(`version: 1
listen: ${LISTEN}
routing:
  max_attempts: ${ATTEMPTS}
accounts:
  - name: work
    plan: max
    oauth_token: ${WORK_OAUTH_TOKEN}
  - name: personal
    api_key_file: /nonexistent/secret
`)
	none := lookup(nil)
	c, err := ParseWith("ci.yaml", data, Options{Env: none, ReadFile: func(string) ([]byte, error) {
		t.Error("a secret file was read without CheckEnv")
		return nil, fs.ErrNotExist
	}})
	if err != nil {
		t.Fatalf("without CheckEnv: %v", err)
	}
	if c.Listen != Default().Listen || c.Routing.MaxAttempts != 3 || c.Accounts[0].OAuthToken != "" || c.Accounts[1].APIKey != "" {
		t.Errorf("unset values should keep defaults / stay empty: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate of a config loaded without CheckEnv: %v", err)
	}
	_, err = ParseWith("ci.yaml", data, Options{CheckEnv: true, Env: none})
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 4 {
		t.Fatalf("with CheckEnv want 4 problems (3 unset, 1 unreadable), got %v", err)
	}
}

func TestWarnings(t *testing.T) {
	c := mustLoad(t, "testdata/literal-secrets.good.yaml")
	want := []string{
		"testdata/literal-secrets.good.yaml:5:10: store.redis.url holds a literal password",
		"testdata/literal-secrets.good.yaml:8:14: accounts[0].api_key is a literal secret; use ${VAR} or api_key_file",
		"testdata/literal-secrets.good.yaml:10:8: admin.key is a literal secret; use ${VAR} or key_file",
	}
	if len(c.Warnings) != len(want) {
		t.Fatalf("warnings = %q", c.Warnings)
	}
	for i, w := range want {
		if !strings.HasPrefix(c.Warnings[i], w) {
			t.Errorf("warning %d = %q, want prefix %q", i, c.Warnings[i], w)
		}
	}
	for _, w := range c.Warnings {
		for _, s := range []string{"literal-redis-password", "sk-ant-api03-literal-secret-in-file", "literal-admin-key"} {
			if strings.Contains(w, s) {
				t.Errorf("warning %q shows the secret", w)
			}
		}
	}
	if c.Store.Redis.Password.Reveal() != "literal-redis-password" || strings.Contains(c.Store.Redis.URL, "literal") {
		t.Errorf("redis url %q password %q", c.Store.Redis.URL, c.Store.Redis.Password.Reveal())
	}
	if m := mustLoad(t, "testdata/minimal.good.yaml"); len(m.Warnings) != 0 {
		t.Errorf("secrets from ${VAR} should not warn: %q", m.Warnings)
	}
	// An account whose plan no rule allows is a warning.
	c, err := ParseWith("w.yaml", []byte("version: 1\nplans: {team: seats}\naccounts: [{name: a, plan: team, api_key: \"${K:-k}\"}]\n"), Options{})
	if err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], `w.yaml:3:28: account "a": no rule in models allows plan "team"`) {
		t.Errorf("plan no rule allows: %v %q", err, c.Warnings)
	}
	// Unused plans are a warning, shown also when the file is invalid.
	_, err = load(t, "testdata/plans.bad.yaml", true)
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Warnings) != 1 || !strings.Contains(cerr.Warnings[0], `:4:8: plan "pro" is used by no model rule and no account`) {
		t.Errorf("warnings of an invalid file: %v", cerr)
	}
}

func TestErrorType(t *testing.T) {
	_, err := load(t, "testdata/enums.bad.yaml", true)
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("%T", err)
	}
	parts := cerr.Unwrap()
	if len(parts) != 5 {
		t.Fatalf("Unwrap: %d errors", len(parts))
	}
	var p Problem
	if !errors.As(parts[0], &p) || p.Line != 3 || p.Col != 13 {
		t.Errorf("first problem %+v", p)
	}
	for i := 1; i < len(cerr.Problems); i++ {
		if cerr.Problems[i].Line < cerr.Problems[i-1].Line {
			t.Errorf("problems not in file order: %v", cerr.Problems)
		}
	}
	if got := (Problem{File: "f", Msg: "m"}).Error(); got != "f: m" {
		t.Errorf("problem without position = %q", got)
	}
	_, err = Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &cerr) {
		t.Errorf("missing file: %v", err)
	}
}

func TestValidateStruct(t *testing.T) {
	c := Default()
	c.Accounts = []Account{{Name: "a", Plan: "console", APIKey: "k"}}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	c.Routing.Strategy = "nope"
	c.Accounts = append(c.Accounts, Account{Name: "a", Plan: "gold"})
	err := c.Validate()
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 4 {
		t.Fatalf("want 4 problems (strategy, duplicate, plan, credential), got %v", err)
	}
	for _, p := range cerr.Problems {
		if p.Line != 0 || p.File != "config" {
			t.Errorf("problem of a config built in code has a position: %+v", p)
		}
	}
}

func TestListenAddr(t *testing.T) {
	c := Default()
	tests := []struct {
		listen, port, want string
		ok                 bool
	}{
		{"127.0.0.1:8080", "", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "9000", "127.0.0.1:9000", true},
		{":8080", "9000", ":9000", true},
		{"[::1]:8080", "81", "[::1]:81", true},
		{"127.0.0.1:8080", "http", "", false},
		{"127.0.0.1:8080", "70000", "", false},
	}
	for _, tt := range tests {
		c.Listen = tt.listen
		env := map[string]string{}
		if tt.port != "" {
			env["PORT"] = tt.port
		}
		got, err := c.ListenAddr(lookup(env))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ListenAddr(%q, PORT=%q) = %q, %v; want %q ok=%v", tt.listen, tt.port, got, err, tt.want, tt.ok)
		}
	}
	// Load checks PORT too, so serve never starts with a bad one.
	data := []byte("version: 1\naccounts: [{name: a, api_key: k}]\n")
	_, err := ParseWith("p.yaml", data, Options{CheckEnv: true, Env: lookup(map[string]string{"PORT": "x"})})
	if err == nil || !strings.Contains(err.Error(), `PORT="x" is not a port number`) {
		t.Errorf("bad PORT: %v", err)
	}
}

func TestMergeAndExtensionKeys(t *testing.T) {
	c := mustLoad(t, "testdata/anchors.good.yaml")
	if len(c.Accounts) != 2 || c.Accounts[0].Plan != "max" || c.Accounts[1].Plan != "max" || c.Accounts[1].Name != "work2" {
		t.Errorf("accounts = %+v", c.Accounts)
	}
	// An unknown key inside an anchor is still reported, at the anchor.
	data := []byte("version: 1\nx-a: &a\n  plna: max\naccounts:\n  - <<: *a\n    name: w\n    api_key: k\n")
	_, err := ParseWith("m.yaml", data, Options{})
	if err == nil || !strings.Contains(err.Error(), `m.yaml:3:3: unknown key "plna" in accounts[0]`) {
		t.Errorf("got %v", err)
	}
}

func TestAliasBomb(t *testing.T) {
	// Each level merges the one below ten times: 10^9 mappings once expanded, all of them
	// well typed, so only the walk's step limit stops it.
	var b strings.Builder
	b.WriteString("version: 1\nx-0: &m0 {strategy: least-used}\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&b, "x-%d: &m%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*m%d,", i-1), 10), ","))
	}
	b.WriteString("routing: *m9\naccounts:\n  - name: a\n    api_key: k\n")
	done := make(chan error, 1)
	go func() { _, err := ParseWith("bomb.yaml", []byte(b.String()), Options{}); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "too many aliases") {
			t.Errorf("an alias bomb: got %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("alias bomb: Parse did not return")
	}
}

func TestConcurrentParse(t *testing.T) {
	data, err := os.ReadFile("testdata/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	hashes := make([]string, 8)
	for i := range hashes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ParseWith("testdata/full.good.yaml", data, Options{CheckEnv: true, Env: lookup(testEnv)})
			if err != nil {
				t.Error(err)
				return
			}
			hashes[i] = c.Hash
		}()
	}
	wg.Wait()
	for _, h := range hashes {
		if h != hashes[0] || h == "" {
			t.Errorf("hashes differ: %q", hashes)
		}
	}
}

func TestSuggest(t *testing.T) {
	valid := []string{"name", "plan", "api_key", "oauth_token", "weight"}
	for in, want := range map[string]string{"plna": "plan", "nmae": "name", "apikey": "api_key", "api-key": "api_key", "wieght": "weight", "zzz": "", "oauth": ""} {
		if got := suggest(in, valid); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "api.localhost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true,
		"[::1]": true, "::ffff:127.0.0.1": true, "0.0.0.0": false, "::": false, "": false,
		"10.0.0.1": false, "example.com": false, "localhost.example.com": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
