package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"syscall"

	"github.com/claude-lb/claude-lb/config"
)

const validateHelp = `Usage: claude-lb validate [-c FILE | FILE] [--check-env]

Checks a config file and lists every problem on stderr, one per line, as FILE:LINE:COL: message.
FILE defaults to $CLAUDE_LB_CONFIG, then ./claude-lb.yaml.

Without --check-env, ${VAR} references need not be set and *_file secrets are not read, so a
config can be checked in CI without its secrets. With --check-env, every variable must be set
and every secret file readable, as serve requires.

Flags:
  -c FILE       the config file
  --check-env   also require the environment variables and secret files

Exit codes:
  0  the config is valid (warnings, if any, on stderr)
  1  the config is invalid
  2  the file cannot be read, or the command line is wrong
`

// runValidate is `claude-lb validate`.
func runValidate(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fset := flag.NewFlagSet("validate", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {}
	cfgFlag := fset.String("c", "", "the config file")
	checkEnv := fset.Bool("check-env", false, "also require the environment variables and secret files")
	var files []string
	// Flags may follow the file: claude-lb validate claude-lb.yaml --check-env.
	for {
		if err := fset.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, validateHelp)
				return 0
			}
			fmt.Fprintln(stderr, "usage: claude-lb validate [-c FILE | FILE] [--check-env]; see claude-lb validate --help")
			return 2
		}
		if fset.NArg() == 0 {
			break
		}
		files = append(files, fset.Arg(0))
		args = fset.Args()[1:]
	}
	switch {
	case len(files) > 1:
		fmt.Fprintf(stderr, "claude-lb validate: one file at a time; got %d (%s, %s, …)\n", len(files), files[0], files[1])
		return 2
	case len(files) == 1 && *cfgFlag != "":
		fmt.Fprintf(stderr, "claude-lb validate: give the file either with -c or as an argument, not both (-c %s, %s)\n", *cfgFlag, files[0])
		return 2
	case len(files) == 1:
		*cfgFlag = files[0]
	}
	path := configPath(*cfgFlag, env)

	cfg, err := config.LoadWith(path, config.Options{CheckEnv: *checkEnv, Env: env})
	var cerr *config.Error
	switch {
	case err == nil:
		for _, w := range cfg.Warnings {
			fmt.Fprintln(stderr, asWarning(w))
		}
		n := len(cfg.Accounts)
		noun := "accounts"
		if n == 1 {
			noun = "account"
		}
		fmt.Fprintf(stdout, "%s: ok (%d %s)\n", path, n, noun)
		return 0
	case errors.As(err, &cerr):
		for _, p := range cerr.Problems {
			fmt.Fprintln(stderr, p.Error())
		}
		for _, w := range cerr.Warnings {
			fmt.Fprintln(stderr, asWarning(w))
		}
		return 1
	}
	fmt.Fprintln(stderr, unreadable(path, err))
	return 2
}

var positionRE = regexp.MustCompile(`^.*?:\d+:\d+: `)

// asWarning marks a config warning as one, after its position: FILE:LINE:COL: warning: ….
func asWarning(w string) string {
	if loc := positionRE.FindStringIndex(w); loc != nil {
		return w[:loc[1]] + "warning: " + w[loc[1]:]
	}
	return "warning: " + w
}

// unreadable says in one sentence why a config file cannot be read, and what to do.
func unreadable(path string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("cannot read %s: no such file; run `claude-lb init` to write a starter config", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("cannot read %s: permission denied", path)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Sprintf("cannot read %s: it is a directory; name the config file itself", path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("cannot read %s: %v", path, err)
}
