package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/oauth"
)

const loginHelp = `Usage: claude-lb login NAME [--plan max] [--file PATH] [-c FILE]

Signs a Max-plan account in with OAuth (the PKCE flow Claude Code uses) and keeps its tokens
in a file the gateway refreshes by itself:

  1. open the printed URL in a browser and sign in to claude.ai as the account's owner;
  2. paste the code the page shows (CODE#STATE) back here;
  3. the token pair is written to PATH with mode 0600, and account NAME is added to the config
     (comments and order kept) with oauth_file: PATH. Running gateways pick it up on reload.

Run it again for an existing account to log in anew (after "needs-login", for example): only
the token file is rewritten, and running gateways take the new tokens within seconds.

Flags:
  -c FILE       the config file (default $CLAUDE_LB_CONFIG, then ./claude-lb.yaml)
  --plan max    the account's plan; only max accounts log in with OAuth
  --file PATH   where to keep the tokens (default: NAME.oauth.json next to the config, or the
                oauth_file an existing account already has)

Exit codes:
  0  logged in: the token file is written (and the account added)
  1  the login failed (state mismatch, code refused, token file or config not writable,
     or NAME exists with another credential)
  2  the command line is wrong, or the config file cannot be read
`

// loginTimeout bounds the code exchange.
const loginTimeout = time.Minute

// runLogin is `claude-lb login`.
func runLogin(args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fset := flag.NewFlagSet("login", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	fset.Usage = func() {}
	cfgFlag := fset.String("c", "", "the config file")
	plan := fset.String("plan", "max", "the account's plan")
	fileFlag := fset.String("file", "", "where to keep the tokens")
	var names []string
	// Flags may come before or after NAME.
	for {
		if err := fset.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, loginHelp)
				return 0
			}
			fmt.Fprintf(stderr, "claude-lb login: %v\nusage: claude-lb login NAME [--plan max] [--file PATH] [-c FILE]; see claude-lb login --help\n", err)
			return 2
		}
		if fset.NArg() == 0 {
			break
		}
		names = append(names, fset.Arg(0))
		args = fset.Args()[1:]
	}
	if len(names) != 1 {
		fmt.Fprintln(stderr, "claude-lb login: name exactly one account, e.g. claude-lb login team --plan max")
		return 2
	}
	name := names[0]
	if *plan != "max" {
		fmt.Fprintf(stderr, "claude-lb login: --plan %s: only max-plan accounts log in with OAuth; add a %s account with `claude-lb accounts add %s --plan %s --api-key-env VAR`\n",
			*plan, *plan, name, *plan)
		return 2
	}
	path := configPath(*cfgFlag, env)

	src, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "claude-lb login: config %s does not exist; create it with `claude-lb init -c %s`, or name another with -c\n", path, path)
		} else {
			fmt.Fprintf(stderr, "claude-lb login: cannot read config %s: %v\n", path, pathReason(err))
		}
		return 2
	}
	// Other accounts' ${VAR}s need not be set to log one in.
	cfg, err := config.ParseWith(path, src, config.Options{Env: env})
	if err != nil {
		fmt.Fprintf(stderr, "claude-lb login: %s is not a valid config; fix it first (claude-lb validate -c %s):\n%v\n", path, path, err)
		return 1
	}

	target, yamlFile, existing, msg := loginTarget(cfg, path, name, *fileFlag)
	if msg != "" {
		fmt.Fprintln(stderr, "claude-lb login: "+msg)
		return 1
	}
	newAcct := config.NewAccount{Name: name, Plan: "max", OAuthFile: yamlFile}
	if !existing {
		// Find out before the browser round trip whether the account can be added.
		if _, err := loginAddAccount(path, src, newAcct, env); err != nil {
			fmt.Fprintf(stderr, "claude-lb login: cannot add account %q to %s: %v\n", name, path, err)
			return 1
		}
	}

	l := oauth.NewLogin(cfg.OAuth)
	fmt.Fprintf(stdout, "Open this URL in a browser and sign in to claude.ai as the owner of account %q:\n\n  %s\n\n", name, l.AuthorizeURL())
	fmt.Fprint(stdout, "Then paste the code the page shows (CODE#STATE) and press Enter: ")
	pasted, err := bufio.NewReader(stdin).ReadString('\n')
	fmt.Fprintln(stdout)
	if strings.TrimSpace(pasted) == "" {
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(stderr, "claude-lb login: read the code: %v\n", err)
		} else {
			fmt.Fprintln(stderr, "claude-lb login: no code was pasted; run claude-lb login again")
		}
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), loginTimeout)
	defer cancel()
	tok, err := l.Exchange(ctx, &http.Client{Timeout: loginTimeout}, pasted)
	if err != nil {
		// Exchange errors never contain the code, verifier or tokens.
		fmt.Fprintf(stderr, "claude-lb login: %v\n", err)
		return 1
	}

	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		fmt.Fprintf(stderr, "claude-lb login: cannot create the folder of %s: %v\n", target, pathReason(err))
		return 1
	}
	if err := oauth.WriteFile(target, tok); err != nil {
		fmt.Fprintf(stderr, "claude-lb login: cannot write the token file %s: %v\n", target, pathReason(err))
		return 1
	}
	expires := "unknown"
	if !tok.ExpiresAt.IsZero() {
		expires = tok.ExpiresAt.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "Logged in: the tokens of %q are in %s (mode 0600; access token expires %s, the gateway refreshes it).\n", name, target, expires)

	if existing {
		fmt.Fprintf(stdout, "Account %q already uses this file; running gateways take the new tokens within seconds.\n", name)
		return 0
	}
	// The config may have changed while the user was in the browser: edit what is there now.
	src, err = os.ReadFile(path)
	var out []byte
	if err == nil {
		out, err = loginAddAccount(path, src, newAcct, env)
	}
	if err == nil {
		err = config.WriteFileAtomic(path, out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "claude-lb login: the token file is written, but account %q could not be added to %s: %v\nadd it by hand:\n  - name: %s\n    plan: max\n    oauth_file: %s\n",
			name, path, err, name, yamlFile)
		return 1
	}
	fmt.Fprintf(stdout, "Added account %q (plan max, oauth_file: %s) to %s; running gateways reload it.\n", name, yamlFile, path)
	return 0
}

// loginTarget decides where the tokens go. existing is true for a re-login of an oauth_file
// account (the config stays as it is); yamlFile is what a new account's oauth_file says
// (relative to the config's folder for the default file). msg explains a refusal.
func loginTarget(cfg *config.Config, cfgPath, name, fileFlag string) (target, yamlFile string, existing bool, msg string) {
	flagAbs := ""
	if fileFlag != "" {
		abs, err := filepath.Abs(fileFlag)
		if err != nil {
			return "", "", false, fmt.Sprintf("--file %s: %v", fileFlag, err)
		}
		flagAbs = abs
	}
	for _, a := range cfg.Accounts {
		if a.Name != name {
			continue
		}
		if kind := a.CredentialKind(); kind != config.CredOAuthFile {
			return "", "", false, fmt.Sprintf("account %q already exists with %s; remove it first (claude-lb accounts remove %s) or log in under another name", name, kind, name)
		}
		// config made oauth_file absolute against the config's folder.
		if flagAbs != "" && filepath.Clean(flagAbs) != filepath.Clean(a.OAuthFile) {
			return "", "", false, fmt.Sprintf("account %q already keeps its tokens in %s; run without --file to log in again", name, a.OAuthFile)
		}
		return a.OAuthFile, a.OAuthFile, true, ""
	}
	if flagAbs != "" {
		return flagAbs, flagAbs, false, ""
	}
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", "", false, fmt.Sprintf("account name %q cannot name a file; choose the token file with --file PATH", name)
	}
	base := name + ".oauth.json"
	return filepath.Join(filepath.Dir(cfgPath), base), base, false, ""
}

// loginAddAccount returns src with the account added, checked to be a valid config.
func loginAddAccount(path string, src []byte, a config.NewAccount, env func(string) (string, bool)) ([]byte, error) {
	out, err := config.AddAccount(src, a)
	if err != nil {
		return nil, err
	}
	if _, err := config.ParseWith(path, out, config.Options{Env: env}); err != nil {
		return nil, fmt.Errorf("the result would not be a valid config:\n%w", err)
	}
	return out, nil
}
