package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/claude-lb/claude-lb/config"
)

const initHelp = `Usage: claude-lb init [-c FILE]

Writes a commented starter config to FILE (default $CLAUDE_LB_CONFIG, then ./claude-lb.yaml),
with one console account whose key comes from $PERSONAL_API_KEY. It never overwrites a file.

Flags:
  -c FILE   where to write the config

Exit codes:
  0  the file was written
  1  the file already exists, or cannot be written
  2  the command line is wrong
`

// runInit is `claude-lb init`.
func runInit(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("init", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {}
	cfgFlag := fset.String("c", "", "where to write the config")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, initHelp)
			return 0
		}
		fmt.Fprintln(stderr, "usage: claude-lb init [-c FILE]; see claude-lb init --help")
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "claude-lb init: unexpected argument %q; name the file with -c\n", fset.Arg(0))
		return 2
	}
	path := configPath(*cfgFlag, os.LookupEnv)

	// O_EXCL: never overwrite, even when another process creates the file meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			fmt.Fprintf(stderr, "claude-lb init: %s already exists; edit it, or write the starter elsewhere with -c FILE\n", path)
		} else {
			fmt.Fprintf(stderr, "claude-lb init: cannot write %s: %v\n", path, pathReason(err))
		}
		return 1
	}
	_, err = io.WriteString(f, config.Starter)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		fmt.Fprintf(stderr, "claude-lb init: cannot write %s: %v\n", path, pathReason(err))
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s\nnext: export PERSONAL_API_KEY=sk-ant-..., check it with `claude-lb validate -c %s`, then run `claude-lb serve -c %s`\n", path, path, path)
	return 0
}

// pathReason is a file error without the path it repeats.
func pathReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
