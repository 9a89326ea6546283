package main

// The processes the benchmark measures, each a subcommand of this binary so that its CPU and
// memory are its own: the fake upstream, the Go floor and the in-process claude-lb gateway.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	_ "net/http/pprof" // served only on -pprof's own listener
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/gateway"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/fallback"
	"github.com/claude-lb/claude-lb/store/memory"
	redisstore "github.com/claude-lb/claude-lb/store/redis"
)

// Request headers that script the fake upstream.
const (
	benchHeader = "X-Bench"
	modeStream  = "stream" // a scripted stream of streamDeltas deltas, streamGap apart
	modeHold    = "hold"   // a stream that sends its first content event, then stays open
)

const (
	streamDeltas = 20
	holdEvents   = 4 // message_start, content_block_start, ping, one delta
)

// streamEvents is the scripted stream: Claude Code's event sequence with 20 text deltas of
// about 40 bytes each, the deltas gap apart (the opening frames come at once, as the API
// sends them).
func streamEvents(gap time.Duration) []fakeapi.Event {
	chunks := make([]string, streamDeltas)
	for i := range chunks {
		chunks[i] = fmt.Sprintf(" token %02d of the benchmark's streamed answer.", i)
	}
	evs := fakeapi.StreamEventsWithUsage(benchModel, chunks, fakeapi.Usage{InputTokens: 1200, OutputTokens: streamDeltas, CacheReadInputTokens: 800})
	for i := range evs {
		if evs[i].Name == "content_block_delta" {
			evs[i].Delay = gap
		}
	}
	return evs
}

// serveReady serves h on addr and prints "READY http://ADDR" for the parent, then blocks
// until SIGTERM/SIGINT.
func serveReady(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	fmt.Printf("READY http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	_ = srv.Close()
	return nil
}

// cmdUpstream runs the fake Anthropic API without recording (memory stays flat), scripted by
// the X-Bench request header.
func cmdUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	gap := fs.Duration("gap", 10*time.Millisecond, "time between two text deltas of a scripted stream")
	_ = fs.Parse(args)

	up := fakeapi.NewServer()
	defer up.Close()
	up.Record(false)
	stream := &fakeapi.Reply{Events: streamEvents(*gap)}
	hold := &fakeapi.Reply{Events: streamEvents(0)[:holdEvents], Hold: make(chan struct{}), HoldAfter: holdEvents}
	up.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		switch r.Header.Get(benchHeader) {
		case modeStream:
			return stream
		case modeHold:
			return hold
		}
		return nil
	})
	// The fake is a plain handler; serve it on a bare http.Server (httptest's connection
	// tracking costs CPU that would compete with the processes being measured).
	return serveReady(*addr, up)
}

// cmdFloor is the Go floor: the smallest correct Go reverse proxy for SSE, as a Go user would
// write it in 60 lines: httputil.ReverseProxy, FlushInterval -1, pooled connections. It
// deliberately does nothing about golang/go#40747 (the HTTP/1 server closes the request body
// once the response starts, racing the transport still sending it), as a naive proxy does not.
func cmdFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream base URL")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address")
	_ = fs.Parse(args)
	if err := servePprof(*pprofAddr); err != nil {
		return err
	}
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		return fmt.Errorf("floor: -upstream %q is not a URL", *upstream)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("X-Api-Key", "sk-bench-floor-account")
		},
		FlushInterval: -1,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorLog: nil,
	}
	return serveReady(*addr, rp)
}

// gatewayConfig is the claude-lb.yaml the benchmark serves: three console accounts whose keys
// come from the environment, the built-in model matrix and every default (least-used,
// session affinity, info logs, metrics).
func gatewayConfig(listen, upstream, redisURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nlisten: %s\nupstream:\n  url: %s\n", listen, upstream)
	if redisURL != "" {
		fmt.Fprintf(&b, "store:\n  redis:\n    url: %s\n    prefix: clbbench\n", redisURL)
	}
	b.WriteString("accounts:\n")
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&b, "  - name: bench%d\n    plan: console\n    api_key: ${CLBBENCH_KEY_%d}\n", i, i)
	}
	return b.String()
}

// gatewayEnv holds the accounts' keys for gatewayConfig.
func gatewayEnv() []string {
	return []string{
		"CLBBENCH_KEY_1=sk-ant-api03-bench-0000000000000000000001",
		"CLBBENCH_KEY_2=sk-ant-api03-bench-0000000000000000000002",
		"CLBBENCH_KEY_3=sk-ant-api03-bench-0000000000000000000003",
	}
}

type storeAll interface {
	routing.Store
	routing.AdminStore
}

// cmdGateway runs claude-lb in process, wired as cmd/claude-lb wires it (metrics registry with
// the Go and process collectors, memory store or Redis behind the fallback store, a text
// logger on stderr at the config's level), for when the binary does not build and for
// profiling (-pprof serves net/http/pprof on its own listener).
func cmdGateway(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	cfgPath := fs.String("c", "", "claude-lb.yaml")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address")
	_ = fs.Parse(args)
	data, err := os.ReadFile(*cfgPath)
	if err != nil {
		return err
	}
	cfg, err := config.Parse(*cfgPath, data, os.LookupEnv)
	if err != nil {
		return err
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(cfg.Log.Level)))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := gateway.NewMetrics(reg)
	local := memory.New(memory.Options{HistorySize: cfg.History.Size})
	var st storeAll = local
	var degraded func() bool
	if r := cfg.Store.Redis; r != nil {
		client, err := redisstore.NewClient(r)
		if err != nil {
			return err
		}
		defer client.Close()
		primary := redisstore.New(client, redisstore.Options{Prefix: r.Prefix, HistorySize: cfg.History.Size, Timeout: r.Timeout})
		fb := fallback.New(primary, local, fallback.Options{Logger: log, OnChange: metrics.StoreDegraded, Timeout: r.Timeout})
		go func() { _ = fb.Run(ctx) }()
		st, degraded = fb, fb.Degraded
	}
	gw, err := gateway.New(cfg, gateway.Options{
		Store: st, AdminStore: st, Logger: log, Observer: metrics, Metrics: metrics.Handler(),
		Replica: "clbbench", Degraded: degraded,
	})
	if err != nil {
		return err
	}
	metrics.SetStatsSource(st.Stats)
	if err := servePprof(*pprofAddr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	// The same server settings as cmd/claude-lb's serve.
	srv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	fmt.Printf("READY http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
	}
	_ = srv.Close()
	return nil
}

// servePprof serves net/http/pprof on addr ("" serves nothing), on a listener of its own.
func servePprof(addr string) error {
	if addr == "" {
		return nil
	}
	pl, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(pl, http.DefaultServeMux) }()
	return nil
}
