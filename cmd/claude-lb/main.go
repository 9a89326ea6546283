// Command claude-lb is a gateway that pools Claude accounts behind one Anthropic-compatible
// endpoint. See `claude-lb help`.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `claude-lb pools Claude accounts behind one Anthropic-compatible endpoint.

Usage:
  claude-lb [serve]  [-c FILE] [--watch=false]   run the gateway (the default command)
  claude-lb validate [-c FILE | FILE] [--check-env]
  claude-lb init     [-c FILE]                   write a commented starter config
  claude-lb accounts list [--json] | add NAME ... | remove NAME
  claude-lb login    NAME --plan max [--file PATH]
  claude-lb stats    reset
  claude-lb history  [--limit N] [--model M] [--account A] | clear
  claude-lb version

-c defaults to $CLAUDE_LB_CONFIG, then ./claude-lb.yaml.
Run 'claude-lb COMMAND --help' for a command's flags and exit codes.

Exit codes: 0 success, 1 failure (invalid config, a refused change, a server error),
2 usage error or unreadable config file.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv))
}

// run dispatches a command line; it is main without the process, so tests can call it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(args, stdout, stderr, env)
	case "validate":
		return runValidate(args, stdout, stderr, env)
	case "init":
		return runInit(args, stdout, stderr)
	case "accounts":
		return runAccounts(args, stdout, stderr, env)
	case "login":
		return runLogin(args, stdin, stdout, stderr, env)
	case "stats":
		return runStats(args, stdout, stderr, env)
	case "history":
		return runHistory(args, stdout, stderr, env)
	case "version", "--version":
		return runVersion(args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "claude-lb: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// configPath is -c, else $CLAUDE_LB_CONFIG, else ./claude-lb.yaml.
func configPath(flagValue string, env func(string) (string, bool)) string {
	if flagValue != "" {
		return flagValue
	}
	if v, ok := env("CLAUDE_LB_CONFIG"); ok && v != "" {
		return v
	}
	return "claude-lb.yaml"
}
