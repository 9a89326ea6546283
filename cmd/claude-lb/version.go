package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3". Without it, the
// module version from the build info is used ("(devel)" for a plain go build in the repo).
var version = ""

const versionHelp = `Usage: claude-lb version [--json]

Prints the version of this binary, the Go version it was built with, and the commit when the
build recorded one.

Exit codes:
  0  printed
  2  the command line is wrong
`

// buildInfo describes this binary.
type buildInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
	Commit    string `json:"commit,omitempty"`
	Time      string `json:"commit_time,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	return b
}

// versionString is the version alone, for User-Agent headers and logs.
func versionString() string { return readBuildInfo().Version }

// runVersion is `claude-lb version`.
func runVersion(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("version", stderr)
	asJSON := fset.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, "version", versionHelp)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "claude-lb version: unexpected argument %q; see `claude-lb version --help`\n", pos[0])
		return 2
	}
	b := readBuildInfo()
	if *asJSON {
		out, _ := json.MarshalIndent(b, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	fmt.Fprintf(stdout, "claude-lb %s (%s, %s", b.Version, b.GoVersion, b.Platform)
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if b.Modified {
			c += "+dirty"
		}
		fmt.Fprintf(stdout, ", commit %s", c)
	}
	fmt.Fprintln(stdout, ")")
	return 0
}
