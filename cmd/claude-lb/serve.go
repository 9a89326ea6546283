package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/claude-lb/claude-lb/config"
)

const serveHelp = `Usage: claude-lb serve [-c FILE] [--watch=false]

Runs the gateway on the config's listen address (PORT, when set, replaces the port).
The config is reloaded when the file changes (unless --watch=false or watch: false) and on SIGHUP;
an invalid edit is logged and the previous config keeps serving. SIGTERM or SIGINT drain
in-flight requests, streams included, for up to shutdown_timeout, then exit.

Exit codes: 0 clean shutdown, 1 invalid config or serving failed, 2 usage error or unreadable config.
`

func runServe(args []string, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	// SIGHUP's default action kills the process: catch it before anything else can take time.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fset := flag.NewFlagSet("serve", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprint(stderr, serveHelp) }
	cfgFlag := fset.String("c", "", "config file")
	watch := fset.Bool("watch", true, "reload the config when its file changes")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "claude-lb serve: unexpected argument %q; pass the config with -c\n", fset.Arg(0))
		return 2
	}
	path := configPath(*cfgFlag, env)
	cfg, code := loadForServe(path, env, stderr)
	if cfg == nil {
		return code
	}
	lw := newBatchWriter(stderr, 50*time.Millisecond)
	defer lw.Flush()
	log := newLogger(cfg.Log, lw)
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "warning", w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	app, err := newApp(ctx, cfg, path, log, env)
	if err != nil {
		fmt.Fprintf(stderr, "claude-lb: %v\n", err)
		return 1
	}
	defer app.close()

	addr, err := cfg.ListenAddr(env)
	if err != nil {
		fmt.Fprintf(stderr, "claude-lb: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "claude-lb: cannot listen on %s: %v\n", addr, err)
		return 1
	}
	srv := &http.Server{
		Handler: app.gw,
		// No WriteTimeout: streams run for minutes. Slow clients are bounded by the header
		// timeout and by the request context.
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("claude-lb listening", "addr", "http://"+ln.Addr().String(), "config", path,
		"accounts", len(cfg.Accounts), "store", app.storeKind, "replica", app.replica)

	watchOn := *watch && cfg.Watch
	go app.reloads(ctx, hup, watchOn)

	select {
	case err := <-served:
		log.Error("server stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	// From here a second SIGTERM or Ctrl-C ends the process at once.
	stop()
	log.Info("shutting down: draining in-flight requests", "timeout", app.current().ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), app.current().ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown deadline passed; closing remaining connections", "err", err)
		_ = srv.Close()
	}
	log.Info("stopped")
	return 0
}

// loadForServe loads the config, printing problems the way validate does.
func loadForServe(path string, env func(string) (string, bool), stderr io.Writer) (*config.Config, int) {
	cfg, err := config.LoadWith(path, config.Options{CheckEnv: true, Env: env})
	if err == nil {
		return cfg, 0
	}
	var cerr *config.Error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stderr, "claude-lb: no config file at %s; run `claude-lb init` to write a starter config, or pass -c FILE\n", path)
		return nil, 2
	case errors.As(err, &cerr):
		fmt.Fprintf(stderr, "claude-lb: %s is not a valid config; not starting:\n%v\n", path, err)
		return nil, 1
	}
	fmt.Fprintf(stderr, "claude-lb: cannot read %s: %v\n", path, err)
	return nil, 2
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "claude-lb"
	}
	return h
}

// batchWriter buffers log lines and writes them at most every interval (or when 32 KB are
// pending), so a busy gateway makes one write system call per batch instead of one per
// request.
type batchWriter struct {
	mu       sync.Mutex
	w        *bufio.Writer
	pending  bool
	timer    *time.Timer
	interval time.Duration
}

func newBatchWriter(w io.Writer, interval time.Duration) *batchWriter {
	b := &batchWriter{w: bufio.NewWriterSize(w, 32<<10)}
	b.timer = time.AfterFunc(time.Hour, func() { b.Flush() })
	b.timer.Stop()
	b.interval = interval
	return b
}

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.w.Write(p)
	if !b.pending {
		b.pending = true
		b.timer.Reset(b.interval)
	}
	return n, err
}

// Flush writes what is pending.
func (b *batchWriter) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.w.Flush()
	b.pending = false
}
