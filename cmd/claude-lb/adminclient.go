package main

// The client side of the admin API, shared by the commands that read or change the live state
// of a running gateway (accounts list, history, stats): flags, finding the server and the
// admin key, calling the API, and turning its failures into one sentence.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/claude-lb/claude-lb/config"
)

// defaultAdminKeyEnv names the variable the admin key is read from.
const defaultAdminKeyEnv = "CLAUDE_LB_ADMIN_KEY"

// liveFlags are the flags of the commands that talk to a running gateway.
type liveFlags struct {
	config  string
	server  string
	keyEnv  string
	timeout time.Duration
}

func (f *liveFlags) register(fset *flag.FlagSet) {
	fset.StringVar(&f.config, "c", "", "the config file (default $CLAUDE_LB_CONFIG, then ./claude-lb.yaml)")
	fset.StringVar(&f.server, "server", "", "the gateway's URL (default: http:// and the config's listen)")
	fset.StringVar(&f.keyEnv, "admin-key-env", defaultAdminKeyEnv, "the environment variable holding the admin key")
	fset.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the gateway")
}

// liveFlagsHelp documents liveFlags in each command's --help.
const liveFlagsHelp = `  -c FILE               the config file; default $CLAUDE_LB_CONFIG, then ./claude-lb.yaml
  --server URL          the gateway's URL; default http:// and the config's listen address
  --admin-key-env VAR   read the admin key from VAR (default CLAUDE_LB_ADMIN_KEY); without
                        it, the config's admin.key is used
  --timeout D           how long to wait for the gateway (default 10s)`

// liveTarget is where a command sends its admin calls, and the config when one was read.
type liveTarget struct {
	path   string
	cfg    *config.Config // nil when no config file was found and none was asked for
	server string
	key    string
	client *adminClient
}

// cliError is a failure already phrased for a person, with its exit code.
type cliError struct {
	code int
	msg  string
}

func (e *cliError) Error() string { return e.msg }

func failf(code int, format string, args ...any) *cliError {
	return &cliError{code: code, msg: fmt.Sprintf(format, args...)}
}

// resolveLive reads the config (when there is one: a missing default ./claude-lb.yaml is
// fine with --server or the default address) and finds the server and the admin key.
func resolveLive(f liveFlags, env func(string) (string, bool)) (*liveTarget, *cliError) {
	t := &liveTarget{path: configPath(f.config, env)}
	explicit := f.config != ""
	if v, ok := env("CLAUDE_LB_CONFIG"); ok && v != "" {
		explicit = true
	}
	cfg, err := config.LoadWith(t.path, config.Options{Env: env})
	var cerr *config.Error
	switch {
	case err == nil:
		t.cfg = cfg
	case errors.As(err, &cerr):
		if f.server == "" {
			return nil, failf(1, "%s is not a valid config (%d problems; run `claude-lb validate -c %s`); fix it or give the gateway's address with --server", t.path, len(cerr.Problems), t.path)
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		// No config here: the default address, or --server.
	default:
		return nil, failf(2, "%s", unreadable(t.path, err))
	}

	t.server = f.server
	if t.server == "" {
		listen := config.Default().Listen
		if t.cfg != nil {
			if addr, err := t.cfg.ListenAddr(env); err == nil {
				listen = addr
			}
		}
		t.server = serverURL(listen)
	}
	u, err := url.Parse(t.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, failf(2, "--server %q is not an http:// or https:// URL", t.server)
	}
	t.server = strings.TrimRight(t.server, "/")

	if v, ok := env(f.keyEnv); ok && v != "" {
		t.key = v
	} else if t.cfg != nil {
		t.key = t.cfg.Admin.Key.Reveal()
		if t.key == "" && t.cfg.Admin.KeyFile != "" {
			if b, err := os.ReadFile(t.cfg.Admin.KeyFile); err == nil {
				t.key = strings.TrimRight(string(b), "\r\n")
			}
		}
	}
	t.client = &adminClient{base: t.server, key: t.key, hc: &http.Client{Timeout: f.timeout}, keyEnv: f.keyEnv}
	return t, nil
}

// serverURL turns a listen address into the URL a client on this machine reaches it at.
func serverURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// adminClient calls a gateway's admin API.
type adminClient struct {
	base   string
	key    string
	keyEnv string
	hc     *http.Client
}

// unreachableError means no gateway answered at all: the caller may fall back to the config.
type unreachableError struct {
	server string
	err    error
}

func (e *unreachableError) Error() string {
	reason := e.err.Error()
	var op *net.OpError
	switch {
	case errors.As(e.err, &op) && op.Err != nil:
		reason = op.Err.Error()
		if se, ok := op.Err.(*os.SyscallError); ok {
			reason = se.Err.Error()
		}
	case errors.Is(e.err, context.DeadlineExceeded) || strings.Contains(reason, "Client.Timeout"):
		reason = "timed out"
	}
	return fmt.Sprintf("no gateway answered at %s (%s)", e.server, reason)
}

// call sends one request and decodes a 2xx JSON answer into out (when out is not nil). Other
// answers become a *cliError that says what to do.
func (c *adminClient) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return failf(2, "bad request to %s: %v", c.base, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "claude-lb-cli/"+versionString())
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &unreachableError{server: c.base, err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return failf(1, "reading the answer of %s: %v", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			hint := "set " + c.keyEnv + " to the gateway's admin.key"
			if c.key != "" {
				hint = "check that " + c.keyEnv + " (or the config's admin.key) holds the gateway's admin.key"
			}
			return failf(1, "the gateway at %s refused the admin key (401: %s); %s", c.base, msg, hint)
		case http.StatusNotFound:
			return failf(1, "%s answered 404 to %s %s: is it a claude-lb gateway? (%s)", c.base, method, path, msg)
		}
		return failf(1, "the gateway at %s answered %d to %s %s: %s", c.base, resp.StatusCode, method, path, msg)
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(out); err != nil {
		return failf(1, "the answer of %s to %s %s is not what claude-lb sends: %v", c.base, method, path, err)
	}
	return nil
}

// exitFor prints err (if any) on stderr as "claude-lb CMD: message" and returns its exit code.
func exitFor(stderr io.Writer, cmd string, err error) int {
	if err == nil {
		return 0
	}
	var ce *cliError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "claude-lb %s: %s\n", cmd, ce.msg)
		return ce.code
	}
	var ue *unreachableError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "claude-lb %s: %s; start one with `claude-lb serve`, or point --server at it\n", cmd, ue.Error())
		return 1
	}
	fmt.Fprintf(stderr, "claude-lb %s: %v\n", cmd, err)
	return 1
}

// parseInterspersed parses flags that may come before, between or after positional
// arguments (flag stops at the first positional) and returns the positionals. --help gives
// flag.ErrHelp.
func parseInterspersed(fset *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			return nil, err
		}
		if fset.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fset.Arg(0))
		args = fset.Args()[1:]
	}
}

// newFlagSet is a FlagSet that reports errors itself (to stderr, once) and prints no usage.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fset := flag.NewFlagSet(name, flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {}
	return fset
}

// usageError handles a flag error: --help prints help on stdout (exit 0), anything else
// points at --help (exit 2).
func usageError(err error, stdout, stderr io.Writer, cmd, help string) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, help)
		return 0
	}
	fmt.Fprintf(stderr, "see `claude-lb %s --help`\n", cmd)
	return 2
}
