package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/gateway"
	"github.com/claude-lb/claude-lb/routing"
)

const accountsHelp = `Usage: claude-lb accounts COMMAND

Commands:
  list      the accounts with plan, models, usage, cooldowns and credential state
  add       add an account to the config file
  remove    remove an account from the config file

Run 'claude-lb accounts COMMAND --help' for its flags.

Exit codes: 0 success, 1 failure (a refused change, an unreachable or refusing gateway),
2 usage error or unreadable config file.
`

const accountsListHelp = `Usage: claude-lb accounts list [--json] [--server URL] [-c FILE]

Lists the pool's accounts as the running gateway sees them: plan (🎯 marks the accounts that
may serve Opus), the model globs each may serve, last use, request and token counts, cooldowns
with their reason and time left, and the credential's state and fingerprint (never the secret).

When no gateway answers at --server, the accounts are listed from the config file alone and
the live state (usage, cooldowns, token state) is reported unavailable.

Flags:
  --json                print JSON instead of text
` + liveFlagsHelp + `

Exit codes:
  0  listed (from the gateway, or from the config when no gateway answered)
  1  the gateway refused (for example a wrong admin key), or the config is invalid
  2  the command line is wrong, or the config file cannot be read
`

const accountsAddHelp = `Usage: claude-lb accounts add NAME [--plan PLAN] (--oauth-token-env VAR | --api-key-env VAR | --api-key-file FILE) [-c FILE]

Adds an account at the end of the accounts list of the config file, keeping its comments and
order, checks that the result is a valid config, and replaces the file atomically (running
gateways then reload it). The secret itself never goes into the file: the account refers to an
environment variable (written as ${VAR}) or to a file.

Flags:
  --plan PLAN             the account's plan, one of the config's plans (default console;
                          max for accounts that may serve Opus)
  --oauth-token-env VAR   a Max plan OAuth token (claude setup-token) in the variable VAR
  --api-key-env VAR       a console API key in the variable VAR
  --api-key-file FILE     a console API key in FILE (made absolute)
  -c FILE                 the config file; default $CLAUDE_LB_CONFIG, then ./claude-lb.yaml

For refreshable Max plan tokens, use 'claude-lb login NAME --plan max' instead.

Exit codes:
  0  added
  1  refused (the name exists, the plan is unknown, the result would be invalid); the file
     is unchanged
  2  the command line is wrong, or the config file cannot be read or written
`

const accountsRemoveHelp = `Usage: claude-lb accounts remove NAME [-c FILE]

Removes the account's entry (and the comment lines that belong to it) from the config file,
checks that the result is a valid config, and replaces the file atomically (running gateways
then reload it). Its usage counters stay in the store until 'claude-lb stats reset'.

Flags:
  -c FILE   the config file; default $CLAUDE_LB_CONFIG, then ./claude-lb.yaml

Exit codes:
  0  removed
  1  refused (no such account, or the result would be invalid); the file is unchanged
  2  the command line is wrong, or the config file cannot be read or written
`

// runAccounts is `claude-lb accounts`.
func runAccounts(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, accountsHelp)
		return 2
	}
	switch args[0] {
	case "list", "ls":
		return runAccountsList(args[1:], stdout, stderr, env)
	case "add":
		return runAccountsAdd(args[1:], stdout, stderr, env)
	case "remove", "rm":
		return runAccountsRemove(args[1:], stdout, stderr, env)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, accountsHelp)
		return 0
	}
	fmt.Fprintf(stderr, "claude-lb accounts: unknown command %q\n\n%s", args[0], accountsHelp)
	return 2
}

// accountsList is what `accounts list --json` prints: the admin API's answer, or the config's
// accounts without live state, and where it came from.
type accountsList struct {
	// Source is "gateway" (live) or "config" (no gateway answered).
	Source string `json:"source"`
	Server string `json:"server"`
	// Unavailable says why live state is missing, when Source is config.
	Unavailable string `json:"unavailable,omitempty"`
	gateway.AccountsResponse
}

func runAccountsList(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fset := newFlagSet("accounts list", stderr)
	var lf liveFlags
	lf.register(fset)
	asJSON := fset.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, "accounts list", accountsListHelp)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "claude-lb accounts list: unexpected argument %q; see `claude-lb accounts list --help`\n", pos[0])
		return 2
	}
	t, cerr := resolveLive(lf, env)
	if cerr != nil {
		return exitFor(stderr, "accounts list", cerr)
	}
	list := accountsList{Source: "gateway", Server: t.server}
	ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
	defer cancel()
	err = t.client.call(ctx, "GET", "/api/accounts", &list.AccountsResponse)
	var ue *unreachableError
	switch {
	case errors.As(err, &ue) && t.cfg != nil:
		list = accountsFromConfig(t.cfg, t.server, ue.Error(), time.Now())
	case err != nil:
		return exitFor(stderr, "accounts list", err)
	}
	if *asJSON {
		out, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return exitFor(stderr, "accounts list", err)
		}
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	writeAccountsList(stdout, list, cliLocation(env))
	return 0
}

// accountsFromConfig lists the config's accounts without live state.
func accountsFromConfig(cfg *config.Config, server, why string, now time.Time) accountsList {
	list := accountsList{Source: "config", Server: server, Unavailable: why}
	list.Now = now
	list.Config = gateway.ConfigInfo{Path: cfg.Path, Hash: cfg.Hash, Accounts: len(cfg.Accounts)}
	snap, err := gateway.NewSnapshot(cfg, now)
	if err != nil {
		return list
	}
	kinds := credentialKinds(cfg)
	for _, info := range snap.AccountInfos(nil) {
		info.TokenState = "unknown"
		if k := kinds[info.Name]; k != "" {
			info.Credential = k
		}
		if info.Models == nil {
			info.Models = []string{}
		}
		st := gateway.AccountState{AccountInfo: info, Status: "unknown", Cooldowns: []gateway.Cooldown{}}
		if info.Disabled {
			st.Status = "disabled"
		}
		list.Accounts = append(list.Accounts, st)
	}
	return list
}

// credentialKinds reads which credential key each account has from the file itself: without
// the gateway's environment, a ${VAR} that is not set here leaves the secret empty, and the
// parsed config cannot tell an unset oauth_token from a missing one.
func credentialKinds(cfg *config.Config) map[string]string {
	src, err := os.ReadFile(cfg.Path)
	if err != nil {
		return nil
	}
	var doc struct {
		Accounts []map[string]any `yaml:"accounts"`
	}
	if yaml.Unmarshal(src, &doc) != nil {
		return nil
	}
	out := map[string]string{}
	for _, a := range doc.Accounts {
		name, _ := a["name"].(string)
		for key, kind := range map[string]string{
			"api_key": config.CredAPIKey, "api_key_file": config.CredAPIKey,
			"oauth_token": config.CredOAuthToken, "oauth_token_file": config.CredOAuthToken,
			"oauth_file": config.CredOAuthFile,
		} {
			if _, ok := a[key]; ok {
				out[name] = kind
			}
		}
	}
	return out
}

// cliLocation is the time zone for printed times: TZ from env when set, else the local one.
func cliLocation(env func(string) (string, bool)) *time.Location {
	if tz, ok := env("TZ"); ok && tz != "" {
		if loc, err := time.LoadLocation(strings.TrimPrefix(tz, ":")); err == nil {
			return loc
		}
	}
	return time.Local
}

const ruler = "────────────────────────────────────────────────────────────────────────────────"

// writeAccountsList prints the original tool's `npm run cli list` layout, with cooldowns,
// tokens and credential fingerprints added.
func writeAccountsList(w io.Writer, l accountsList, loc *time.Location) {
	now := l.Now
	fmt.Fprintf(w, "📊 Claude Accounts (%d)", len(l.Accounts))
	if l.Source == "gateway" {
		fmt.Fprintf(w, " · live from %s", l.Server)
		if l.Replica != "" {
			fmt.Fprintf(w, " · replica %s", l.Replica)
		}
		if l.Degraded {
			fmt.Fprint(w, " · ⚠ store degraded (this replica serves from local state)")
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, " · from %s\n", l.Config.Path)
		fmt.Fprintf(w, "⚠ Live state unavailable: %s; usage, cooldowns and token state are not shown.\n", l.Unavailable)
	}
	fmt.Fprintln(w, ruler)

	for _, a := range l.Accounts {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "🔑 %s", a.Name)
		if a.OpusCapable {
			fmt.Fprint(w, " 🎯")
		}
		fmt.Fprintln(w)
		plan := strings.ToUpper(a.Plan)
		if a.OpusCapable {
			plan += " (Opus enabled)"
		}
		fmt.Fprintf(w, "   Plan: %s\n", plan)
		if a.Status != "unknown" && a.Status != "ok" || a.Disabled {
			fmt.Fprintf(w, "   Status: %s\n", statusText(a.Status))
		}
		if a.Weight > 1 || a.Priority != 0 {
			fmt.Fprintf(w, "   Weight: %d · Priority: %d\n", a.Weight, a.Priority)
		}
		fmt.Fprintf(w, "   Models: %d supported\n", len(a.Models))
		for _, g := range a.Models {
			mark := "•"
			if opusGlob(g) {
				mark = "🎯"
			}
			fmt.Fprintf(w, "     %s %s\n", mark, g)
		}
		if l.Source == "gateway" {
			last := "Never"
			if !a.LastUsed.IsZero() {
				last = a.LastUsed.In(loc).Format("2006-01-02 15:04:05 MST") + " (" + ago(now.Sub(a.LastUsed)) + ")"
			}
			fmt.Fprintf(w, "   Last Used: %s\n", last)
			req := commas(a.Requests)
			switch {
			case a.Errors == 1:
				req += " (1 error)"
			case a.Errors > 1:
				req += fmt.Sprintf(" (%s errors)", commas(a.Errors))
			}
			fmt.Fprintf(w, "   Requests: %s\n", req)
			fmt.Fprintf(w, "   Tokens: %s in · %s out · %s cache read · %s cache write\n",
				commas(a.InputTokens), commas(a.OutputTokens), commas(a.CacheReadTokens), commas(a.CacheCreationTokens))
			writeCooldowns(w, a.Cooldowns, loc)
		}
		fmt.Fprintf(w, "   Token: %s · %s\n", tokenText(a.TokenState), credText(a.AccountInfo))
		if a.TokenState == "needs-login" {
			fmt.Fprintf(w, "   → run `claude-lb login %s --plan %s` to log in again\n", a.Name, a.Plan)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, ruler)
	opus, cooling := 0, 0
	for _, a := range l.Accounts {
		if a.OpusCapable {
			opus++
		}
		if a.Status == "cooling" {
			cooling++
		}
	}
	fmt.Fprintf(w, "%d accounts · %d Opus-capable 🎯", len(l.Accounts), opus)
	if l.Source == "gateway" {
		fmt.Fprintf(w, " · %d cooling down", cooling)
	}
	if h := l.Config.Hash; h != "" {
		fmt.Fprintf(w, " · config %s", h[:min(12, len(h))])
		if !l.Config.LoadedAt.IsZero() {
			fmt.Fprintf(w, " loaded %s", l.Config.LoadedAt.In(loc).Format("2006-01-02 15:04:05 MST"))
		}
	}
	fmt.Fprintln(w)
}

func writeCooldowns(w io.Writer, cds []gateway.Cooldown, loc *time.Location) {
	if len(cds) == 0 {
		fmt.Fprintln(w, "   Cooldown: none")
		return
	}
	for i, c := range cds {
		label := "   Cooldown: "
		if i > 0 {
			label = "             "
		}
		scope := "all models"
		switch {
		case strings.HasPrefix(c.Scope, "family:"):
			scope = strings.TrimPrefix(c.Scope, "family:") + " models"
		case c.Scope == "credential":
			scope = "credential"
		}
		icon := "🧊"
		if c.Soft {
			icon, scope = "⚠", "near its limit, used last"
		}
		fmt.Fprintf(w, "%s%s %s: %s, %s left (until %s)\n", label, icon, scope, c.Reason,
			humanDuration(time.Duration(c.SecondsLeft)*time.Second), c.Until.In(loc).Format("15:04:05"))
	}
}

func opusGlob(g string) bool {
	if strings.Contains(g, "opus") {
		return true
	}
	for _, m := range []string{"claude-opus-5-5", "claude-opus-4-1", "claude-3-opus-20240229"} {
		if routing.MatchAny([]string{g}, m) && !routing.MatchAny([]string{g}, "claude-sonnet-5-5") {
			return true
		}
	}
	return false
}

func statusText(s string) string {
	switch s {
	case "ok":
		return "✅ available"
	case "cooling":
		return "🧊 cooling down"
	case "near-limit":
		return "⚠ near its limit (used last)"
	case "disabled":
		return "⏸ disabled in the config"
	case "invalid":
		return "❌ credential rejected by the upstream (401)"
	case "needs-login":
		return "❌ needs a new login"
	}
	return s
}

func tokenText(state string) string {
	switch state {
	case "valid":
		return "✅ Valid"
	case "refreshing":
		return "🔄 Refreshing"
	case "invalid":
		return "❌ Invalid (the upstream answered 401; a new credential and a reload clear it)"
	case "needs-login":
		return "❌ Needs login"
	case "expired":
		return "❌ Expired"
	case "unknown":
		return "❔ Unknown"
	}
	return "❌ " + state
}

func credText(a gateway.AccountInfo) string {
	if a.Fingerprint == "" || a.Fingerprint == "…" {
		return a.Credential
	}
	return a.Credential + " " + a.Fingerprint
}

// ago is a short, coarse "3m ago".
func ago(d time.Duration) string {
	switch {
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	}
	return humanDuration(d) + " ago"
}

// humanDuration is a short, rounded duration: 42s, 4m 12s, 3h 05m, 2d 4h.
func humanDuration(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm %02ds", s/60, s%60)
	case s < 48*3600:
		return fmt.Sprintf("%dh %02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
}

// commas writes n with thousands separators.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// editConfig reads the config file, applies edit, checks the result and replaces the file.
// The file is untouched unless every step succeeds.
func editConfig(path string, env func(string) (string, bool), edit func(src []byte, cfg *config.Config) ([]byte, *cliError)) *cliError {
	src, err := os.ReadFile(path)
	if err != nil {
		return failf(2, "%s", unreadable(path, err))
	}
	cfg, err := config.ParseWith(path, src, config.Options{Env: env})
	if err != nil {
		return failf(1, "%s is not a valid config now, so it was left as it is; fix it first (claude-lb validate -c %s):\n%v", path, path, err)
	}
	out, cerr := edit(src, cfg)
	if cerr != nil {
		return cerr
	}
	if _, err := config.ParseWith(path, out, config.Options{Env: env}); err != nil {
		return failf(1, "the change was not written: %s would not be a valid config:\n%v", path, err)
	}
	if err := config.WriteFileAtomic(path, out); err != nil {
		return failf(2, "cannot write %s: %v", path, err)
	}
	return nil
}

func runAccountsAdd(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fset := newFlagSet("accounts add", stderr)
	cfgFlag := fset.String("c", "", "the config file")
	plan := fset.String("plan", "console", "the account's plan")
	var a config.NewAccount
	fset.StringVar(&a.OAuthTokenEnv, "oauth-token-env", "", "the variable holding an OAuth token")
	fset.StringVar(&a.APIKeyEnv, "api-key-env", "", "the variable holding an API key")
	fset.StringVar(&a.APIKeyFile, "api-key-file", "", "the file holding an API key")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, "accounts add", accountsAddHelp)
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "claude-lb accounts add: give one account NAME; see `claude-lb accounts add --help`")
		return 2
	}
	a.Name, a.Plan = pos[0], *plan
	n := 0
	for _, v := range []string{a.OAuthTokenEnv, a.APIKeyEnv, a.APIKeyFile} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		fmt.Fprintln(stderr, "claude-lb accounts add: give exactly one of --oauth-token-env VAR, --api-key-env VAR or --api-key-file FILE")
		return 2
	}
	if a.APIKeyFile != "" && !filepath.IsAbs(a.APIKeyFile) {
		if abs, err := filepath.Abs(a.APIKeyFile); err == nil {
			a.APIKeyFile = abs
		}
	}
	path := configPath(*cfgFlag, env)
	cerr := editConfig(path, env, func(src []byte, cfg *config.Config) ([]byte, *cliError) {
		if _, ok := cfg.Plans[a.Plan]; !ok {
			known := make([]string, 0, len(cfg.Plans))
			for p := range cfg.Plans {
				known = append(known, p)
			}
			slices.Sort(known)
			return nil, failf(1, "plan %q is not defined in %s (its plans: %s); use one of these, or add it under plans: first", a.Plan, path, strings.Join(known, ", "))
		}
		out, err := config.AddAccount(src, a)
		switch {
		case errors.Is(err, config.ErrAccountExists):
			return nil, failf(1, "%s: %s; choose another name, or remove it first with `claude-lb accounts remove %s`", path, strings.TrimSuffix(err.Error(), ": "+config.ErrAccountExists.Error()), a.Name)
		case err != nil:
			return nil, failf(1, "%s: %v", path, err)
		}
		return out, nil
	})
	if cerr != nil {
		return exitFor(stderr, "accounts add", cerr)
	}
	cred := ""
	switch {
	case a.OAuthTokenEnv != "":
		cred = "oauth_token from ${" + a.OAuthTokenEnv + "}"
	case a.APIKeyEnv != "":
		cred = "api_key from ${" + a.APIKeyEnv + "}"
	default:
		cred = "api_key_file " + a.APIKeyFile
	}
	fmt.Fprintf(stdout, "Added account %q (plan %s, %s) to %s; running gateways reload it.\n", a.Name, a.Plan, cred, path)
	for _, v := range []string{a.OAuthTokenEnv, a.APIKeyEnv} {
		if _, ok := env(v); v != "" && !ok {
			fmt.Fprintf(stderr, "note: %s is not set in this shell; the gateway needs it in its environment.\n", v)
		}
	}
	if a.APIKeyFile != "" {
		if _, err := os.Stat(a.APIKeyFile); err != nil {
			fmt.Fprintf(stderr, "note: %s cannot be read from here (%v); the gateway needs to read it.\n", a.APIKeyFile, pathReason(err))
		}
	}
	return 0
}

func runAccountsRemove(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fset := newFlagSet("accounts remove", stderr)
	cfgFlag := fset.String("c", "", "the config file")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, "accounts remove", accountsRemoveHelp)
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "claude-lb accounts remove: give one account NAME; see `claude-lb accounts remove --help`")
		return 2
	}
	name := pos[0]
	path := configPath(*cfgFlag, env)
	var oauthFile string
	cerr := editConfig(path, env, func(src []byte, cfg *config.Config) ([]byte, *cliError) {
		for _, a := range cfg.Accounts {
			if a.Name == name {
				oauthFile = a.OAuthFile
			}
		}
		out, err := config.RemoveAccount(src, name)
		switch {
		case errors.Is(err, config.ErrAccountNotFound):
			return nil, failf(1, "%s: %s", path, strings.TrimSuffix(err.Error(), ": "+config.ErrAccountNotFound.Error()))
		case err != nil:
			return nil, failf(1, "%s: %v", path, err)
		}
		return out, nil
	})
	if cerr != nil {
		return exitFor(stderr, "accounts remove", cerr)
	}
	fmt.Fprintf(stdout, "Removed account %q from %s; running gateways reload it. Its usage counters stay until `claude-lb stats reset`.\n", name, path)
	if oauthFile != "" {
		fmt.Fprintf(stdout, "Its token file %s was left in place; delete it if the account is gone for good.\n", oauthFile)
	}
	return 0
}
