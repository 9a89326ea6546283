package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with a config file, at a position in it. Line and Col are 1-based;
// 0 means the problem has no single place (a config built in code, an environment variable).
type Problem struct {
	File      string
	Line, Col int
	Msg       string
}

// Error formats the problem as file:line:col: message, the form editors and CI annotate.
func (p Problem) Error() string {
	file := p.File
	if file == "" {
		file = "config"
	}
	if p.Line <= 0 {
		return file + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, p.Line, p.Col, p.Msg)
}

// Error lists every problem found in one config file. Load and Parse return it (as *Error)
// whenever the file was read but is not a valid config; errors.As finds it.
type Error struct {
	// Problems in file order.
	Problems []Problem
	// Warnings found along the way, as file:line:col: message.
	Warnings []string
}

// Error prints one problem per line.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so errors.Join-aware code sees each one.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// sortProblems orders problems by position, keeping the order of problems at one place.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := cmp.Compare(a.Line, b.Line); c != 0 {
			return c
		}
		return cmp.Compare(a.Col, b.Col)
	})
}

// oneLine keeps a message on one line, so that every problem is one line of output.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	f := strings.Fields(s)
	return strings.Join(f, " ")
}
