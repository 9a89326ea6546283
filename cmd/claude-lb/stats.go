package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/claude-lb/claude-lb/gateway"
)

const statsHelp = `Usage: claude-lb stats [--json]
       claude-lb stats reset

Shows the running gateway's usage counters: per account (requests, errors, tokens, last use)
and per model, with the Opus success rate over the requests still in the history.
'stats reset' sets the counters back to zero (with the Redis store, for every replica); the
history and the cooldowns stay.

Flags:
  --json   print the admin API's JSON
` + liveFlagsHelp + `

Exit codes:
  0  shown (or reset)
  1  no gateway answered, or it refused (for example a wrong admin key)
  2  the command line is wrong, or the config file cannot be read
`

// runStats is `claude-lb stats`.
func runStats(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	reset := len(args) > 0 && args[0] == "reset"
	cmd := "stats"
	if reset {
		args, cmd = args[1:], "stats reset"
	}
	fset := newFlagSet(cmd, stderr)
	var lf liveFlags
	lf.register(fset)
	asJSON := fset.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, cmd, statsHelp)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "claude-lb %s: unexpected argument %q (the only subcommand is reset); see `claude-lb stats --help`\n", cmd, pos[0])
		return 2
	}
	t, cerr := resolveLive(lf, env)
	if cerr != nil {
		return exitFor(stderr, cmd, cerr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
	defer cancel()
	if reset {
		if err := t.client.call(ctx, "POST", "/api/stats/reset", nil); err != nil {
			return exitFor(stderr, cmd, err)
		}
		fmt.Fprintf(stdout, "Usage counters reset on %s.\n", t.server)
		return 0
	}
	var s gateway.StatsResponse
	if err := t.client.call(ctx, "GET", "/api/stats", &s); err != nil {
		return exitFor(stderr, cmd, err)
	}
	if *asJSON {
		out, _ := json.MarshalIndent(s, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	writeStats(stdout, s)
	return 0
}

func writeStats(w io.Writer, s gateway.StatsResponse) {
	errs := commas(s.Totals.Errors) + " errors"
	if s.Totals.Errors == 1 {
		errs = "1 error"
	}
	fmt.Fprintf(w, "Requests: %s (%s) · Tokens: %s in · %s out · %s cache read · %s cache write\n",
		commas(s.Totals.Requests), errs, commas(s.Totals.InputTokens), commas(s.Totals.OutputTokens),
		commas(s.Totals.CacheReadTokens), commas(s.Totals.CacheCreationTokens))
	o := s.Opus
	fmt.Fprintf(w, "🎯 Opus: %s requests", commas(o.Requests))
	if n := o.Success + o.Failure; n > 0 {
		fmt.Fprintf(w, " · %s ok, %s failed of the recent ones (%.1f%% success)", commas(o.Success), commas(o.Failure), 100*o.SuccessRate)
	}
	fmt.Fprintln(w)
	if s.Degraded {
		fmt.Fprintln(w, "⚠ store degraded: this replica serves from local state")
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tREQUESTS\tERRORS\tIN\tOUT\tCACHE READ\tCACHE WRITE\tLAST USED")
	for _, a := range s.Accounts {
		name := a.Name
		if !a.Configured {
			name += " (not in config)"
		}
		last := "never"
		if !a.LastUsed.IsZero() {
			last = ago(s.Now.Sub(a.LastUsed))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, commas(a.Requests), commas(a.Errors),
			commas(a.InputTokens), commas(a.OutputTokens), commas(a.CacheReadTokens), commas(a.CacheCreationTokens), last)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	if len(s.Models) == 0 {
		fmt.Fprintln(w, "No requests per model yet.")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tREQUESTS\tRECENT OK\tRECENT FAILED")
	for _, m := range s.Models {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", dash(m.Model), commas(m.Requests), commas(m.Recent.Success), commas(m.Recent.Failure))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "Recent: the %d newest requests in the history.\n", s.Window)
}
