// Command clbbench measures claude-lb against a fake Anthropic API, side by side with the Go
// floor (a bare httputil.ReverseProxy) and nginx proxy_pass, in one run, interleaved: every
// round runs each phase on every target in turn, and the table shows the medians over rounds.
//
//	go run ./bench/cmd/clbbench             # the full run, about 5 minutes on 2 cores
//	go run ./bench/cmd/clbbench -quick      # about 30 seconds
//	go run ./bench/cmd/clbbench profile     # CPU and allocation profiles of the gateway
//
// Each server runs in its own process (subcommands of this binary: upstream, floor, gateway;
// or the claude-lb binary built from ./cmd/claude-lb; nginx and redis-server when installed),
// so the CPU time and memory read from /proc are each server's own. Everything listens on
// 127.0.0.1 only. See bench/README.md and docs/performance.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	cmd, args := "run", os.Args[1:]
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = cmdRun(args)
	case "profile":
		err = cmdProfile(args)
	case "upstream":
		err = cmdUpstream(args)
	case "floor":
		err = cmdFloor(args)
	case "gateway":
		err = cmdGateway(args)
	default:
		err = fmt.Errorf("unknown command %q: use run (the default), profile, upstream, floor or gateway", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clbbench:", err)
		os.Exit(1)
	}
}
