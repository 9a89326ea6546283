package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/claude-lb/claude-lb/gateway"
)

const historyHelp = `Usage: claude-lb history [--limit N] [--offset N] [--model M] [--account A] [--status CODE] [--json]
       claude-lb history clear

Shows the recent requests a running gateway recorded, newest first: time, model, the account
that served it, attempts (and the accounts tried), status, latency, tokens, client and replica.
'history clear' empties the history (with the Redis store, for every replica).

Flags:
  --limit N       how many requests (default 20, at most 1000)
  --offset N      skip the N newest matching requests
  --model M       only requests for this model id
  --account A     only requests served by this account
  --status CODE   only requests answered with this HTTP status
  --json          print the admin API's JSON
` + liveFlagsHelp + `

Exit codes:
  0  shown (or cleared)
  1  no gateway answered, or it refused (for example a wrong admin key)
  2  the command line is wrong, or the config file cannot be read
`

// runHistory is `claude-lb history`.
func runHistory(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	if len(args) > 0 && args[0] == "clear" {
		return runHistoryClear(args[1:], stdout, stderr, env)
	}
	fset := newFlagSet("history", stderr)
	var lf liveFlags
	lf.register(fset)
	limit := fset.Int("limit", 20, "how many requests")
	offset := fset.Int("offset", 0, "skip this many")
	model := fset.String("model", "", "only this model")
	account := fset.String("account", "", "only this account")
	status := fset.Int("status", 0, "only this status")
	asJSON := fset.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, "history", historyHelp)
	}
	switch {
	case len(pos) > 0:
		fmt.Fprintf(stderr, "claude-lb history: unexpected argument %q (the only subcommand is clear); see `claude-lb history --help`\n", pos[0])
		return 2
	case *limit < 1 || *limit > 1000:
		fmt.Fprintln(stderr, "claude-lb history: --limit must be from 1 to 1000")
		return 2
	case *offset < 0:
		fmt.Fprintln(stderr, "claude-lb history: --offset cannot be negative")
		return 2
	case *status != 0 && (*status < 100 || *status > 599):
		fmt.Fprintln(stderr, "claude-lb history: --status must be an HTTP status code (100-599)")
		return 2
	}
	t, cerr := resolveLive(lf, env)
	if cerr != nil {
		return exitFor(stderr, "history", cerr)
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *offset > 0 {
		q.Set("offset", strconv.Itoa(*offset))
	}
	if *model != "" {
		q.Set("model", *model)
	}
	if *account != "" {
		q.Set("account", *account)
	}
	if *status != 0 {
		q.Set("status", strconv.Itoa(*status))
	}
	ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
	defer cancel()
	var h gateway.HistoryResponse
	if err := t.client.call(ctx, "GET", "/api/history?"+q.Encode(), &h); err != nil {
		return exitFor(stderr, "history", err)
	}
	if *asJSON {
		out, _ := json.MarshalIndent(h, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	writeHistory(stdout, h, cliLocation(env))
	return 0
}

func writeHistory(w io.Writer, h gateway.HistoryResponse, loc *time.Location) {
	if len(h.Entries) == 0 {
		fmt.Fprintln(w, "No requests recorded (with these filters).")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMODEL\tACCOUNT\tTRIES\tSTATUS\tLATENCY\tTOKENS IN/OUT\tCLIENT\tREPLICA")
	for _, e := range h.Entries {
		tries := strconv.Itoa(e.Attempts)
		if e.Attempts > 1 && len(e.Tried) > 0 {
			tries += " (" + strings.Join(e.Tried, " → ") + ")"
		}
		st := strconv.Itoa(e.Status)
		if e.Error != "" {
			st += " !"
		}
		model := e.Model
		if model == "" {
			model = "-"
		}
		if e.Stream {
			model += " (stream)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\n",
			e.Time.In(loc).Format("2006-01-02 15:04:05"), model, dash(e.Account), tries, st,
			latency(e.Latency), commas(e.InputTokens), commas(e.OutputTokens), dash(e.Client), dash(e.Replica))
	}
	_ = tw.Flush()
	if h.More {
		fmt.Fprintf(w, "… more with --offset %d\n", h.Offset+len(h.Entries))
	}
	for _, e := range h.Entries {
		if e.Error != "" {
			fmt.Fprintf(w, "! %s %s: %s\n", e.Time.In(loc).Format("15:04:05"), dash(e.Model), e.Error)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func latency(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

const historyClearHelp = `Usage: claude-lb history clear [--server URL]

Empties the request history of the running gateway (with the Redis store, of every replica).
Usage counters are kept; 'claude-lb stats reset' resets those.

Flags:
` + liveFlagsHelp + `

Exit codes:
  0  cleared
  1  no gateway answered, or it refused (for example a wrong admin key)
  2  the command line is wrong, or the config file cannot be read
`

func runHistoryClear(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	fset := newFlagSet("history clear", stderr)
	var lf liveFlags
	lf.register(fset)
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return usageError(err, stdout, stderr, "history clear", historyClearHelp)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "claude-lb history clear: unexpected argument %q\n", pos[0])
		return 2
	}
	t, cerr := resolveLive(lf, env)
	if cerr != nil {
		return exitFor(stderr, "history clear", cerr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
	defer cancel()
	if err := t.client.call(ctx, "DELETE", "/api/history", nil); err != nil {
		return exitFor(stderr, "history clear", err)
	}
	fmt.Fprintf(stdout, "Request history cleared on %s.\n", t.server)
	return 0
}
