package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// checker runs the checks on values, after the walk and the decode. With a walker it knows
// where each value is in the file and which keys the file wrote; without (Config.Validate) it
// checks the values alone.
type checker struct {
	c     *Config
	w     *walker
	file  string
	probs []Problem
	warns []Problem
}

// nameRE is what account, client and plan names may contain: they appear in headers, metrics
// labels and store keys.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

const nameRule = "use 1 to 64 letters, digits, '.', '_' or '-'"

var (
	strategies    = []string{"least-used", "round-robin", "priority"}
	affinities    = []string{"session", "none"}
	unknownModels = []string{"all", "reject"}
	logLevels     = []string{"debug", "info", "warn", "error"}
	logFormats    = []string{"text", "json"}
)

func (k *checker) present(path string) bool { return k.w != nil && k.w.present[path] }

func (k *checker) unresolved(path string) bool {
	if k.w != nil {
		_, ok := k.w.unresolved[path]
		return ok
	}
	_, ok := k.c.unresolved[path]
	return ok
}

// skip reports whether nothing more should be said about path: it (or what holds it) already
// had a problem, or needs a variable that is not set.
func (k *checker) skip(path string) bool {
	for p := path; p != ""; p = parentPath(p) {
		if k.unresolved(p) || (k.w != nil && k.w.bad[p]) {
			return true
		}
	}
	return false
}

// given reports whether a value is set: not empty, or written in the file (even as ""), or
// taken as given (an unset variable) or already reported.
func (k *checker) given(path, v string) bool { return v != "" || k.present(path) || k.skip(path) }

func (k *checker) at(path string, key bool) pos {
	if k.w == nil {
		return pos{}
	}
	for p := path; ; p = parentPath(p) {
		if l, ok := k.w.at[p]; ok {
			if key {
				return l.key
			}
			return l.val
		}
		if p == "" {
			return pos{1, 1}
		}
	}
}

// errf reports a problem with the value at path.
func (k *checker) errf(path, format string, args ...any) { k.add(path, false, format, args...) }

// errKey reports a problem with the key at path (or the list element).
func (k *checker) errKey(path, format string, args ...any) { k.add(path, true, format, args...) }

func (k *checker) add(path string, key bool, format string, args ...any) {
	if k.skip(path) {
		return
	}
	p := k.at(path, key)
	k.probs = append(k.probs, Problem{File: k.file, Line: p.line, Col: p.col, Msg: oneLine(fmt.Sprintf(format, args...))})
}

func (k *checker) warnf(path, format string, args ...any) {
	p := k.at(path, false)
	k.warns = append(k.warns, Problem{File: k.file, Line: p.line, Col: p.col, Msg: oneLine(fmt.Sprintf(format, args...))})
}

func (k *checker) positive(path string, d time.Duration, example string) {
	if d <= 0 {
		k.errf(path, "%s must be more than 0, like %s", path, example)
	}
}

func (k *checker) oneOf(path, v string, valid []string) {
	if !slices.Contains(valid, v) {
		k.errf(path, "%s: unknown value %q; use %s", path, v, orList(valid))
	}
}

func orList(vs []string) string {
	if len(vs) == 1 {
		return vs[0]
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
}

// run applies every check.
func (k *checker) run() {
	c := k.c
	if k.w != nil && !k.present("version") && !k.skip("version") {
		k.probs = append(k.probs, Problem{File: k.file, Line: 1, Col: 1, Msg: "version is missing; add version: 1 as the first line"})
	} else if c.Version != 1 {
		k.errf("version", "version %d is not supported; this claude-lb reads version: 1", c.Version)
	}
	k.listen()
	if c.MaxBody <= 0 {
		k.errf("max_body", "max_body must be more than 0, like 32MiB")
	}
	if c.ShutdownTimeout < 0 {
		k.errf("shutdown_timeout", "shutdown_timeout must not be negative")
	}
	k.url("upstream.url", c.Upstream.URL, "https://api.anthropic.com", "http", "https")
	k.positive("upstream.connect_timeout", c.Upstream.ConnectTimeout, "10s")
	k.positive("upstream.header_timeout", c.Upstream.HeaderTimeout, "5m")
	k.positive("upstream.timeout", c.Upstream.Timeout, "10m")
	k.store()
	k.routing()
	k.plans()
	k.models()
	k.accounts()
	k.clients()
	k.oauth()
	if s := c.History.Size; s < 1 || s > 1_000_000 {
		k.errf("history.size", "history.size must be from 1 to 1000000, got %d", s)
	}
	k.oneOf("log.level", c.Log.Level, logLevels)
	k.oneOf("log.format", c.Log.Format, logFormats)
}

// listen checks the address and the rule of DESIGN.md section 8: off loopback, callers must
// present a client key unless allow_unauthenticated says otherwise.
func (k *checker) listen() {
	c := k.c
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		k.errf("listen", "listen %q is not host:port; write it like 127.0.0.1:8080, or :8080 for every interface", c.Listen)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		k.errf("listen", "listen %q: port %q is not a number from 0 to 65535", c.Listen, port)
		return
	}
	if !IsLoopbackHost(host) && len(c.Clients) == 0 && !c.AllowUnauthenticated {
		k.errf("listen", "listen %s accepts connections from other machines, but no clients are configured; "+
			"add clients (name and key_sha256), or set allow_unauthenticated: true if everyone who can reach it may use the accounts", c.Listen)
	}
}

// IsLoopbackHost reports whether host (a name or an IP, brackets allowed) is this machine
// only: localhost, *.localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// url checks an http(s) URL. It never prints the URL whole: it could hold a password.
func (k *checker) url(p, s, example string, schemes ...string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || !slices.Contains(schemes, u.Scheme) {
		k.errf(p, "%s is not a %s URL; write it like %s", p, orList(schemes), example)
		return nil
	}
	if u.User != nil {
		k.errf(p, "%s must not hold a user name or password", p)
		return nil
	}
	if u.RawQuery != "" || u.Fragment != "" {
		k.errf(p, "%s must not have a query (?…) or fragment (#…)", p)
		return nil
	}
	return u
}

func (k *checker) store() {
	r := k.c.Store.Redis
	if r == nil {
		return
	}
	switch {
	case !k.given("store.redis.url", r.URL) && !k.given("store.redis.addrs", strings.Join(r.Addrs, "")):
		k.errKey("store.redis", "store.redis needs url (one server: redis://host:6379/0) or addrs (Cluster or Sentinel nodes)")
	case r.URL != "" && len(r.Addrs) > 0:
		k.errKey("store.redis.addrs", "store.redis has both url and addrs; keep url for one server, addrs for Cluster or Sentinel")
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		switch {
		case err != nil || !slices.Contains([]string{"redis", "rediss", "unix"}, u.Scheme):
			k.errf("store.redis.url", "store.redis.url is not a redis://, rediss:// or unix:// URL; write it like redis://127.0.0.1:6379/0")
		case u.Scheme != "unix" && u.Host == "":
			k.errf("store.redis.url", "store.redis.url has no host; write it like redis://127.0.0.1:6379/0")
		case u.Scheme == "unix" && u.Path == "":
			k.errf("store.redis.url", "store.redis.url has no socket path; write it like unix:///run/redis.sock")
		}
	}
	for i, a := range r.Addrs {
		p := fmt.Sprintf("store.redis.addrs[%d]", i)
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			k.errf(p, "%s: %q is not host:port; write it like 10.0.0.1:6379", p, a)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			k.errf(p, "%s: port %q is not a number from 1 to 65535", p, port)
		}
	}
	if r.MasterName != "" && len(r.Addrs) == 0 && !k.skip("store.redis.addrs") {
		k.errf("store.redis.master_name", "store.redis.master_name selects Sentinel, which needs addrs (the Sentinels), not url")
	}
	if r.DB < 0 {
		k.errf("store.redis.db", "store.redis.db must not be negative")
	}
	if r.Prefix == "" || strings.ContainsAny(r.Prefix, "{}") || strings.TrimSpace(r.Prefix) != r.Prefix {
		k.errf("store.redis.prefix", "store.redis.prefix must be a non-empty word without braces or spaces (keys are {prefix}:…), like claude-lb")
	}
	k.positive("store.redis.timeout", r.Timeout, "500ms")
}

func (k *checker) routing() {
	r := k.c.Routing
	k.oneOf("routing.strategy", r.Strategy, strategies)
	k.oneOf("routing.affinity", r.Affinity, affinities)
	k.oneOf("routing.unknown_models", r.UnknownModels, unknownModels)
	k.positive("routing.affinity_ttl", r.AffinityTTL, "1h")
	if !(r.SoftLimit > 0 && r.SoftLimit <= 1) {
		k.errf("routing.soft_limit", "routing.soft_limit is a utilization from 0 (excluded) to 1, like 0.9; got %v", r.SoftLimit)
	}
	if r.MaxAttempts < 1 {
		k.errf("routing.max_attempts", "routing.max_attempts must be at least 1 (accounts tried per request), got %d", r.MaxAttempts)
	}
	k.positive("routing.cooldown", r.Cooldown, "60s")
	k.positive("routing.max_cooldown", r.MaxCooldown, "30m")
	if r.Cooldown > 0 && r.MaxCooldown > 0 && r.MaxCooldown < r.Cooldown {
		k.errf("routing.max_cooldown", "routing.max_cooldown (%s) is shorter than routing.cooldown (%s); raise it or lower cooldown", r.MaxCooldown, r.Cooldown)
	}
	if r.Holdback < 0 {
		k.errf("routing.holdback", "routing.holdback must not be negative (0 turns it off)")
	}
}

func (k *checker) definedPlans() string {
	return strings.Join(slices.Sorted(maps.Keys(k.c.Plans)), ", ")
}

func (k *checker) plans() {
	c := k.c
	used := map[string]bool{}
	for _, r := range c.Models {
		for _, p := range r.Plans {
			used[p] = true
		}
	}
	for _, a := range c.Accounts {
		used[a.Plan] = true
	}
	for _, name := range slices.Sorted(maps.Keys(c.Plans)) {
		p := "plans." + name
		if !nameRE.MatchString(name) {
			k.errKey(p, "plan name %q: %s", name, nameRule)
			continue
		}
		if k.present(p) && !used[name] && !k.skip(p) {
			k.warnf(p, "plan %q is used by no model rule and no account", name)
		}
	}
}

// checkPlan reports a plan that plans does not define.
func (k *checker) checkPlan(p, plan string) {
	if _, ok := k.c.Plans[plan]; ok {
		return
	}
	msg := fmt.Sprintf("%s: plan %q is not defined under plans (defined: %s)", p, plan, k.definedPlans())
	if s := suggest(plan, slices.Sorted(maps.Keys(k.c.Plans))); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else {
		msg += "; add it to plans or use one of those"
	}
	k.errf(p, "%s", msg)
}

func (k *checker) glob(p, g string) bool {
	if g == "" {
		k.errf(p, "%s is empty; write a glob like \"claude-*opus*\"", p)
		return false
	}
	if _, err := path.Match(g, ""); err != nil {
		k.errf(p, "%s: %q is not a valid glob (path.Match syntax: * any run of characters, ? one character, [a-z] a class, \\ escapes)", p, g)
		return false
	}
	return true
}

func (k *checker) models() {
	c := k.c
	for i, r := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if len(r.Match) == 0 {
			k.errKey(p, "%s has no match globs; add match: [\"claude-*opus*\"] or remove the rule", p)
		}
		for j, g := range r.Match {
			k.glob(fmt.Sprintf("%s.match[%d]", p, j), g)
		}
		if len(r.Plans) == 0 {
			k.errKey(p, "%s lists no plans; add the plans that may serve these models, like plans: [max]", p)
		}
		for j, pl := range r.Plans {
			k.checkPlan(fmt.Sprintf("%s.plans[%d]", p, j), pl)
		}
		if len(r.Match) == 0 || k.skip(p) {
			continue
		}
		// A rule can never match when each of its globs is covered by an earlier rule's.
		var by []string
		for _, g := range r.Match {
			cov := -1
			for e := 0; e < i && cov < 0; e++ {
				for _, h := range c.Models[e].Match {
					if globCovers(h, g) {
						cov = e
						break
					}
				}
			}
			if cov < 0 {
				by = nil
				break
			}
			if s := fmt.Sprintf("models[%d]", cov); !slices.Contains(by, s) {
				by = append(by, s)
			}
		}
		if len(by) > 0 {
			k.errKey(p, "%s can never match: every model it names is matched first by %s; move it up or remove it", p, andList(by))
		}
	}
}

func andList(vs []string) string {
	if len(vs) == 1 {
		return vs[0]
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " and " + vs[len(vs)-1]
}

// globCovers reports whether every model id g matches is also matched by h, for the cases
// that are simple to prove: the same glob; h made only of * while g cannot match a '/'
// (path.Match's * stops at '/'); or g is a literal id that h matches.
func globCovers(h, g string) bool {
	if h == g {
		return true
	}
	if h != "" && strings.Trim(h, "*") == "" {
		return !strings.ContainsAny(g, "/[\\")
	}
	if !strings.ContainsAny(g, "*?[\\") {
		ok, _ := path.Match(h, g)
		return ok
	}
	return false
}

func (k *checker) accounts() {
	c := k.c
	if len(c.Accounts) == 0 {
		switch {
		case k.skip("accounts"):
		case k.present("accounts"):
			k.errf("accounts", "accounts is empty; add at least one account (name, plan and a credential)")
		default:
			p := k.at("accounts", true)
			k.probs = append(k.probs, Problem{File: k.file, Line: p.line, Col: p.col,
				Msg: "no accounts; add at least one under accounts: (name, plan and a credential)"})
		}
		return
	}
	names := map[string]int{}
	oauthFiles := map[string]int{}
	creds := map[Secret]int{}
	enabled := 0
	for i := range c.Accounts {
		a := &c.Accounts[i]
		p := fmt.Sprintf("accounts[%d]", i)
		if !a.Disabled {
			enabled++
		}
		k.name(p, "account", "accounts", a.Name, i, names)
		label := p
		if a.Name != "" {
			label = fmt.Sprintf("account %q", a.Name)
		}
		k.checkPlan(p+".plan", a.Plan)
		if _, ok := c.Plans[a.Plan]; ok && len(c.Models) > 0 && !k.skip(p+".plan") && !slices.ContainsFunc(c.Models, func(r ModelRule) bool { return slices.Contains(r.Plans, a.Plan) }) {
			what := "only models that match no rule"
			if c.Routing.UnknownModels == "reject" {
				what = "no model at all"
			}
			k.warnf(p+".plan", "%s: no rule in models allows plan %q, so this account serves %s; add the plan to a rule", label, a.Plan, what)
		}

		// Exactly one credential source. An inline secret and its *_file count once here;
		// giving both is reported when the file is loaded.
		var kinds []string
		if k.given(p+".api_key", string(a.APIKey)) || k.given(p+".api_key_file", a.APIKeyFile) {
			kinds = append(kinds, "api_key")
		}
		if k.given(p+".oauth_token", string(a.OAuthToken)) || k.given(p+".oauth_token_file", a.OAuthTokenFile) {
			kinds = append(kinds, "oauth_token")
		}
		if k.given(p+".oauth_file", a.OAuthFile) {
			kinds = append(kinds, "oauth_file")
		}
		switch len(kinds) {
		case 0:
			k.errKey(p, "%s has no credential; set one of api_key, api_key_file, oauth_token, oauth_token_file or oauth_file", label)
		case 1:
		default:
			k.errKey(p+"."+kinds[1], "%s has %d credentials (%s); keep exactly one", label, len(kinds), strings.Join(kinds, ", "))
		}
		for _, f := range []string{"api_key", "oauth_token", "api_key_file", "oauth_token_file", "oauth_file"} {
			if k.present(p+"."+f) && accountField(a, f) == "" {
				k.errf(p+"."+f, "%s.%s is empty; give the value, or remove the key", p, f)
			}
		}
		if len(kinds) == 1 {
			for _, s := range []Secret{a.APIKey, a.OAuthToken} {
				if s == "" {
					continue
				}
				if j, dup := creds[s]; dup {
					k.errKey(p, "%s uses the same credential as %q; each account needs its own", label, c.Accounts[j].Name)
				} else {
					creds[s] = i
				}
			}
			if a.OAuthFile != "" {
				if j, dup := oauthFiles[a.OAuthFile]; dup {
					k.errf(p+".oauth_file", "%s uses the same oauth_file as %q; refresh tokens rotate, so each account needs its own file", label, c.Accounts[j].Name)
				} else {
					oauthFiles[a.OAuthFile] = i
				}
			}
		}
		for j, g := range a.Models {
			k.glob(fmt.Sprintf("%s.models[%d]", p, j), g)
		}
		switch {
		case a.Weight < 0:
			k.errf(p+".weight", "%s.weight must be at least 1, got %d", p, a.Weight)
		case a.Weight == 0 && k.present(p+".weight"):
			k.errf(p+".weight", "%s.weight must be at least 1 (the default); to stop using the account, set disabled: true", p)
		}
	}
	if enabled == 0 {
		k.warnf("accounts", "every account is disabled; requests will fail until one is enabled")
	}
}

// accountField returns the credential field f of a.
func accountField(a *Account, f string) string {
	switch f {
	case "api_key":
		return string(a.APIKey)
	case "oauth_token":
		return string(a.OAuthToken)
	case "api_key_file":
		return a.APIKeyFile
	case "oauth_token_file":
		return a.OAuthTokenFile
	}
	return a.OAuthFile
}

// name checks the name of list entry i (at path p): present, well formed, and not used by an
// earlier entry of the same list (names maps each name to its first index).
func (k *checker) name(p, kind, list, name string, i int, names map[string]int) {
	switch {
	case k.skip(p + ".name"):
	case name == "":
		k.errKey(p, "%s has no name; add name: (%s)", p, nameRule)
	case !nameRE.MatchString(name):
		k.errf(p+".name", "%s name %q: %s", kind, name, nameRule)
	default:
		if j, dup := names[name]; dup {
			k.errf(p+".name", "%s name %q is used twice (first by %s[%d]); names must be unique", kind, name, list, j)
		} else {
			names[name] = i
		}
	}
}

func (k *checker) clients() {
	names := map[string]int{}
	keys := map[string]int{}
	for i, cl := range k.c.Clients {
		p := fmt.Sprintf("clients[%d]", i)
		k.name(p, "client", "clients", cl.Name, i, names)
		h := strings.ToLower(cl.KeySHA256)
		switch {
		case k.skip(p + ".key_sha256"):
		case !isHex64(h):
			k.errf(p+".key_sha256", "%s.key_sha256 must be 64 hex digits, the SHA-256 of the client's key: printf %%s \"$KEY\" | sha256sum", p)
		default:
			if j, dup := keys[h]; dup {
				k.errf(p+".key_sha256", "%s.key_sha256 is the same as clients[%d]'s; each client needs its own key", p, j)
			} else {
				keys[h] = i
			}
		}
	}
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (k *checker) oauth() {
	o := k.c.OAuth
	k.url("oauth.token_url", o.TokenURL, "https://platform.claude.com/v1/oauth/token", "https", "http")
	k.url("oauth.authorize_url", o.AuthorizeURL, "https://claude.ai/oauth/authorize", "https", "http")
	k.url("oauth.redirect_uri", o.RedirectURI, "https://platform.claude.com/oauth/code/callback", "https", "http")
	if strings.TrimSpace(o.ClientID) == "" {
		k.errf("oauth.client_id", "oauth.client_id is empty; remove the key to use the default")
	}
	if len(o.Scopes) == 0 {
		k.errf("oauth.scopes", "oauth.scopes is empty; remove the key to use the default")
	}
	k.positive("oauth.refresh_before", o.RefreshBefore, "10m")
}
