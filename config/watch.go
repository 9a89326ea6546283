package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions tunes Watch. The zero value is ready to use.
type WatchOptions struct {
	// Debounce is how long the folder must stay quiet after an event before the file is
	// re-read; default 100ms. A burst that never goes quiet is still checked every 10×Debounce.
	Debounce time.Duration
	// Logger receives the watcher's few lines (file missing, folder gone, watch errors);
	// default: discarded.
	Logger *slog.Logger
	// Poll, when positive, also re-reads the file every Poll: a fallback for file systems whose
	// changes inotify does not report (NFS, some container bind mounts) and for a config that is
	// a symlink into another folder. It is also how often a vanished folder is looked for
	// (default 1s). Zero: no polling.
	Poll time.Duration
	// LoadedHash is the SHA-256 (hex, as Config.Hash) of the content the caller has already
	// loaded. When set, a file that changed between that load and the start of Watch is reported
	// at once. When empty, whatever the file holds when Watch starts counts as seen.
	LoadedHash string
}

// defaultWatchRetry is how often a vanished config folder is looked for when Poll is zero.
const defaultWatchRetry = time.Second

// Watch calls onChange after the content of the config file at path has changed, and blocks
// until ctx is done; then it returns nil. It returns an error only for a path it cannot use.
//
// It watches the file's folder, not the file (a watched file is lost when an editor renames a
// new one over it), so editors that write a temporary file and rename it, remove-and-recreate,
// and Kubernetes ConfigMap "..data" symlink swaps are all seen. Chmod-only events and events
// for unrelated files in the folder are ignored; a burst of events is debounced; then the file
// is read through its symlinks and onChange runs only when the SHA-256 of its content differs
// from the last one seen. A missing or empty file (between a remove and its re-creation, or a
// truncate and its write) is waited for, never reported. If the folder itself disappears, Watch
// logs it once and looks for it again every Poll (or 1s) instead of returning.
//
// onChange runs on the goroutine that called Watch, one call at a time. It should be quick,
// typically a non-blocking send to the goroutine that owns reloads, which then loads the file
// itself: the content may have moved on again, in which case onChange is called again.
func Watch(ctx context.Context, path string, opts WatchOptions, onChange func()) error {
	if path == "" {
		return errors.New("watch config: no file path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watch config %q: %w", path, err)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	retry := opts.Poll
	if retry <= 0 {
		retry = defaultWatchRetry
	}
	w := &fileWatch{
		path:     abs,
		dir:      filepath.Dir(abs),
		name:     filepath.Base(abs),
		opts:     opts,
		retry:    retry,
		log:      opts.Logger.With("path", abs),
		onChange: onChange,
	}
	w.run(ctx)
	return nil
}

// fileWatch is the state of one Watch call. Only the goroutine running Watch touches it.
type fileWatch struct {
	path, dir, name string // the config file (absolute), its folder and its name in the folder
	opts            WatchOptions
	retry           time.Duration // how often to poll or to look for a vanished folder
	log             *slog.Logger
	onChange        func()

	fsw      *fsnotify.Watcher // nil when inotify could not be set up: polling only
	watching bool              // the folder is under fsw's watch
	warned   bool              // "cannot watch the folder" was logged since the last success
	ticker   *time.Ticker      // runs while polling or while the folder is not watched

	debounce *time.Timer
	pending  bool      // debounce is armed
	first    time.Time // first event of the pending burst

	seen    string // SHA-256 of the content last reported (or loaded by the caller)
	real    string // the file's resolved path at the last read ("" when it did not resolve)
	hop     string // the folder entry the file's symlink points through (k8s: "..data"), or ""
	problem string // why the last read gave no content ("" when it did), to log once per streak
}

func (w *fileWatch) run(ctx context.Context) {
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("cannot watch the config folder; polling the file instead", "every", w.retry, "err", err)
	} else {
		w.fsw = fsw
		defer fsw.Close()
		events, errs = fsw.Events, fsw.Errors
		w.watch()
	}
	w.debounce = time.NewTimer(time.Hour)
	w.debounce.Stop()
	defer w.debounce.Stop()
	w.resetTicker()
	defer func() {
		if w.ticker != nil {
			w.ticker.Stop()
		}
	}()

	// The folder is watched before this first read, so no change after it can be missed.
	if w.opts.LoadedHash == "" {
		w.seen, _ = w.read()
	} else {
		w.seen = w.opts.LoadedHash
		w.check()
	}

	for {
		var tick <-chan time.Time
		if w.ticker != nil {
			tick = w.ticker.C
		}
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.event(ev)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Usually fsnotify.ErrEventOverflow: events were lost, so look at the file again.
			w.log.Warn("config watch error; re-reading the file", "err", err)
			w.schedule()
		case <-w.debounce.C:
			w.pending = false
			w.check()
		case <-tick:
			if w.fsw != nil && !w.watching {
				if !w.watch() {
					continue
				}
				w.log.Info("watching the config folder again", "dir", w.dir)
				w.resetTicker()
			}
			w.check()
		}
	}
}

// watch puts the folder under the fsnotify watch, logging the first failure of a streak.
func (w *fileWatch) watch() bool {
	if err := w.fsw.Add(w.dir); err != nil {
		if !w.warned {
			w.log.Warn("cannot watch the config folder; trying again", "every", w.retry, "err", err)
			w.warned = true
		}
		return false
	}
	w.watching, w.warned = true, false
	return true
}

// resetTicker runs the ticker exactly while it is needed: polling, or a folder to look for.
func (w *fileWatch) resetTicker() {
	need := w.opts.Poll > 0 || !w.watching
	switch {
	case need && w.ticker == nil:
		w.ticker = time.NewTicker(w.retry)
	case !need && w.ticker != nil:
		w.ticker.Stop()
		w.ticker = nil
	}
}

func (w *fileWatch) event(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	if name == w.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		// The folder itself was removed or moved away; inotify dropped its watch with it.
		_ = w.fsw.Remove(w.dir)
		w.watching, w.warned = false, true
		w.log.Warn("config folder is gone; looking for it again", "dir", w.dir, "every", w.retry)
		w.resetTicker()
		return
	}
	if ev.Op == fsnotify.Chmod {
		return
	}
	base := filepath.Base(name)
	if base == w.name || (w.hop != "" && base == w.hop) || w.resolve() != w.real {
		w.schedule()
	}
}

// schedule (re)arms the debounce timer: it fires once the folder has been quiet for Debounce,
// or 10×Debounce after the first event of a burst, whichever comes first.
func (w *fileWatch) schedule() {
	now := time.Now()
	if !w.pending {
		w.pending, w.first = true, now
	}
	d := w.opts.Debounce
	if left := w.first.Add(10 * w.opts.Debounce).Sub(now); left < d {
		d = max(left, 0)
	}
	w.debounce.Reset(d)
}

// check reads the file and calls onChange when its content differs from the last seen.
func (w *fileWatch) check() {
	h, ok := w.read()
	if !ok || h == w.seen {
		return
	}
	w.seen = h
	w.log.Debug("config file changed", "sha256", h)
	w.onChange()
}

// resolve returns the file's path with every symlink resolved, or "" when it does not resolve.
func (w *fileWatch) resolve() string {
	p, err := filepath.EvalSymlinks(w.path)
	if err != nil {
		return ""
	}
	return p
}

// read returns the SHA-256 (hex) of the file's content, following symlinks anew. It reports
// false for a missing, empty or unreadable file, logging each such streak once.
func (w *fileWatch) read() (string, bool) {
	w.real = w.resolve()
	w.hop = ""
	if target, err := os.Readlink(w.path); err == nil && !filepath.IsAbs(target) {
		// config.yaml -> ..data/config.yaml: events on "..data" concern the file.
		first, _, _ := strings.Cut(filepath.ToSlash(filepath.Clean(target)), "/")
		if first != "." && first != ".." {
			w.hop = first
		}
	}
	data, err := os.ReadFile(w.path)
	problem := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		problem = "missing"
	case err != nil:
		problem = err.Error()
	case len(data) == 0:
		problem = "empty"
	}
	if problem != w.problem {
		switch problem {
		case "":
			w.log.Info("config file is back")
		case "missing", "empty":
			w.log.Info("config file is "+problem+"; waiting for it to be written", "dir", w.dir)
		default:
			w.log.Warn("cannot read config file; waiting for it to change", "err", err)
		}
		w.problem = problem
	}
	if problem != "" {
		return "", false
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), true
}
