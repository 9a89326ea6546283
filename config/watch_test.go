package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Helpers here carry a watch prefix: other files of this package have their own tests.

// watchRecorder keeps, for every onChange call, the file's content as a reload would read it.
type watchRecorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *watchRecorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *watchRecorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *watchRecorder) last() string {
	c := r.snapshot()
	if len(c) == 0 {
		return ""
	}
	return c[len(c)-1]
}

// watchLog is a concurrency-safe log sink.
type watchLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *watchLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *watchLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *watchLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func watchHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// startTestWatch runs Watch on path until the test ends; onChange reads the file, as the reload
// that it triggers would. The cleanup cancels and checks that Watch returns nil promptly.
func startTestWatch(t *testing.T, path string, opts WatchOptions) *watchRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rec := &watchRecorder{}
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, path, opts, func() {
			data, _ := os.ReadFile(path)
			rec.add(string(data))
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return within 5s of cancel")
		}
	})
	return rec
}

// watchEventually fails the test unless cond holds within a generous deadline.
func watchEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func watchWaitFor(t *testing.T, rec *watchRecorder, want string) {
	t.Helper()
	watchEventually(t, fmt.Sprintf("onChange to see %q (last seen %q)", want, rec.last()), func() bool {
		return rec.last() == want
	})
}

func watchWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// watchStyle is one way the config file gets laid out and edited.
type watchStyle struct {
	name string
	// setup creates the file in dir with content and returns the path to watch.
	setup func(t *testing.T, dir, content string) string
	edit  func(t *testing.T, path, content string)
}

func watchPlainSetup(t *testing.T, dir, content string) string {
	path := filepath.Join(dir, "claude-lb.yaml")
	watchWrite(t, path, content)
	return path
}

var watchStyles = []watchStyle{
	{
		name:  "in-place write",
		setup: watchPlainSetup,
		edit:  watchWrite, // O_TRUNC, then write
	},
	{
		name:  "editor rename-over",
		setup: watchPlainSetup,
		edit: func(t *testing.T, path, content string) {
			f, err := os.CreateTemp(filepath.Dir(path), ".claude-lb.yaml.*.tmp")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(content); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(f.Name(), path); err != nil {
				t.Fatal(err)
			}
		},
	},
	{
		name:  "remove and recreate",
		setup: watchPlainSetup,
		edit: func(t *testing.T, path, content string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			watchWrite(t, path, content)
		},
	},
	{
		// The layout kubelet gives a ConfigMap volume, and its atomic writer's swap.
		name: "kubernetes ..data swap",
		setup: func(t *testing.T, dir, content string) string {
			if err := os.Mkdir(filepath.Join(dir, "..2026_A"), 0o755); err != nil {
				t.Fatal(err)
			}
			watchWrite(t, filepath.Join(dir, "..2026_A", "claude-lb.yaml"), content)
			if err := os.Symlink("..2026_A", filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "claude-lb.yaml")
			if err := os.Symlink(filepath.Join("..data", "claude-lb.yaml"), path); err != nil {
				t.Fatal(err)
			}
			return path
		},
		edit: func(t *testing.T, path, content string) {
			dir := filepath.Dir(path)
			data := filepath.Join(dir, "..data")
			old, err := os.Readlink(data)
			if err != nil {
				t.Fatal(err)
			}
			next, err := os.MkdirTemp(dir, "..2026_B")
			if err != nil {
				t.Fatal(err)
			}
			watchWrite(t, filepath.Join(next, "claude-lb.yaml"), content)
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink(filepath.Base(next), tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, data); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		},
	},
}

func TestWatchEditStyles(t *testing.T) {
	for _, st := range watchStyles {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			path := st.setup(t, t.TempDir(), "version: 1 # v0\n")
			rec := startTestWatch(t, path, WatchOptions{Debounce: 20 * time.Millisecond, LoadedHash: watchHash("version: 1 # v0\n")})

			st.edit(t, path, "version: 1 # v1\n")
			watchWaitFor(t, rec, "version: 1 # v1\n")
			if got := rec.snapshot(); len(got) != 1 {
				t.Fatalf("one edit gave %d onChange calls %q, want 1", len(got), got)
			}

			// 50 distinct versions in quick succession: whatever is coalesced, the last one
			// is always observed.
			var want string
			for i := 2; i <= 51; i++ {
				want = fmt.Sprintf("version: 1 # v%d\n", i)
				st.edit(t, path, want)
				time.Sleep(2 * time.Millisecond)
			}
			watchWaitFor(t, rec, want)
		})
	}
}

func TestWatchDebouncesBursts(t *testing.T) {
	t.Parallel()
	path := watchPlainSetup(t, t.TempDir(), "version: 1 # v0\n")
	rec := startTestWatch(t, path, WatchOptions{LoadedHash: watchHash("version: 1 # v0\n")}) // default 100ms

	var want string
	for i := 1; i <= 50; i++ {
		want = fmt.Sprintf("version: 1 # burst %d\n", i)
		watchWrite(t, path, want)
	}
	watchWaitFor(t, rec, want)
	// 50 writes with no pause: a few calls at most (1 unless the machine stalls mid-burst).
	if n := len(rec.snapshot()); n > 5 {
		t.Errorf("a burst of 50 writes gave %d onChange calls, want a few", n)
	}
}

// TestWatchIgnoresNoOps does something that must not call onChange, lets the watcher settle,
// then makes a real edit: the calls must be exactly the setup edit and the real one.
func TestWatchIgnoresNoOps(t *testing.T) {
	k8s := watchStyles[3]
	tests := []struct {
		name  string
		setup func(t *testing.T, dir, content string) string
		noop  func(t *testing.T, path string, log *watchLog)
		edit  func(t *testing.T, path, content string)
	}{
		{
			name: "chmod only",
			noop: func(t *testing.T, path string, _ *watchLog) {
				if err := os.Chmod(path, 0o600); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "unrelated file in the folder",
			noop: func(t *testing.T, path string, _ *watchLog) {
				other := filepath.Join(filepath.Dir(path), "notes.txt")
				watchWrite(t, other, "hello")
				watchWrite(t, other, "hello again")
				if err := os.Rename(other, other+".bak"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "identical content written in place",
			noop: func(t *testing.T, path string, _ *watchLog) { watchWrite(t, path, "version: 1 # v1\n") },
		},
		{
			name: "identical content renamed over",
			noop: func(t *testing.T, path string, _ *watchLog) {
				watchStyles[1].edit(t, path, "version: 1 # v1\n")
			},
		},
		{
			name:  "kubernetes swap to identical content",
			setup: k8s.setup,
			edit:  k8s.edit,
			noop:  func(t *testing.T, path string, _ *watchLog) { k8s.edit(t, path, "version: 1 # v1\n") },
		},
		{
			name: "file missing for a while",
			noop: func(t *testing.T, path string, log *watchLog) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				watchEventually(t, "the watcher to notice the missing file", func() bool {
					return log.count("config file is missing") == 1
				})
			},
		},
		{
			name: "file emptied for a while",
			noop: func(t *testing.T, path string, log *watchLog) {
				watchWrite(t, path, "")
				watchEventually(t, "the watcher to notice the empty file", func() bool {
					return log.count("config file is empty") == 1
				})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.setup == nil {
				tt.setup, tt.edit = watchPlainSetup, watchWrite
			}
			log := &watchLog{}
			path := tt.setup(t, t.TempDir(), "version: 1 # v0\n")
			rec := startTestWatch(t, path, WatchOptions{
				Debounce:   20 * time.Millisecond,
				Logger:     log.logger(),
				LoadedHash: watchHash("version: 1 # v0\n"),
			})
			tt.edit(t, path, "version: 1 # v1\n")
			watchWaitFor(t, rec, "version: 1 # v1\n")

			tt.noop(t, path, log)
			// Spacing, not an assertion: lets the no-op's events settle on their own, so a
			// wrong call would show up below instead of being coalesced with the next edit.
			time.Sleep(200 * time.Millisecond)
			tt.edit(t, path, "version: 1 # v2\n")
			watchWaitFor(t, rec, "version: 1 # v2\n")

			want := []string{"version: 1 # v1\n", "version: 1 # v2\n"}
			if got := rec.snapshot(); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("onChange saw %q, want %q", got, want)
			}
		})
	}
}

func TestWatchReportsChangeSinceLoad(t *testing.T) {
	t.Parallel()
	// The caller loaded v0, then the file changed before Watch started: no event will come,
	// yet the change must be reported.
	path := watchPlainSetup(t, t.TempDir(), "version: 1 # v1\n")
	rec := startTestWatch(t, path, WatchOptions{LoadedHash: watchHash("version: 1 # v0\n")})
	watchWaitFor(t, rec, "version: 1 # v1\n")
}

func TestWatchSurvivesFolderRemoval(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := watchPlainSetup(t, dir, "version: 1 # v0\n")
	log := &watchLog{}
	rec := startTestWatch(t, path, WatchOptions{
		Debounce:   20 * time.Millisecond,
		Logger:     log.logger(),
		LoadedHash: watchHash("version: 1 # v0\n"),
	})
	watchWrite(t, path, "version: 1 # v1\n")
	watchWaitFor(t, rec, "version: 1 # v1\n")

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	watchEventually(t, "the folder's removal to be logged", func() bool {
		return log.count("config folder is gone") == 1
	})
	// Spacing, not an assertion: let at least one retry (every 1s) fail.
	time.Sleep(1200 * time.Millisecond)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	watchWrite(t, path, "version: 1 # v2\n")
	watchWaitFor(t, rec, "version: 1 # v2\n")
	if n := log.count("config folder is gone") + log.count("cannot watch the config folder"); n != 1 {
		t.Errorf("the folder's absence was logged %d times, want once", n)
	}
	if log.count("watching the config folder again") != 1 {
		t.Error("the folder's return was not logged")
	}

	// Events flow again once the folder is back.
	watchStyles[1].edit(t, path, "version: 1 # v3\n")
	watchWaitFor(t, rec, "version: 1 # v3\n")
	if got := rec.snapshot(); len(got) != 3 {
		t.Errorf("onChange saw %q, want v1, v2, v3", got)
	}
}

func TestWatchPollSeesEditsOutsideTheFolder(t *testing.T) {
	t.Parallel()
	// claude-lb.yaml -> ../elsewhere/real.yaml, edited in place: the folder watch sees nothing,
	// the poll does.
	root := t.TempDir()
	for _, d := range []string{"conf", "elsewhere"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(root, "elsewhere", "real.yaml")
	watchWrite(t, real, "version: 1 # v0\n")
	path := filepath.Join(root, "conf", "claude-lb.yaml")
	if err := os.Symlink(filepath.Join("..", "elsewhere", "real.yaml"), path); err != nil {
		t.Fatal(err)
	}
	rec := startTestWatch(t, path, WatchOptions{Poll: 50 * time.Millisecond, LoadedHash: watchHash("version: 1 # v0\n")})
	watchWrite(t, real, "version: 1 # v1\n")
	watchWaitFor(t, rec, "version: 1 # v1\n")
}

func TestWatchRejectsEmptyPath(t *testing.T) {
	t.Parallel()
	err := Watch(t.Context(), "", WatchOptions{}, func() { t.Error("onChange called") })
	if err == nil {
		t.Fatal("Watch with an empty path returned nil, want an error")
	}
}

// watchGoroutines lists the goroutines that belong to a watcher.
func watchGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/fsnotify/fsnotify") || strings.Contains(g, "config.(*fileWatch)") {
			found = append(found, g)
		}
	}
	return found
}

// TestWatchCancelLeavesNoGoroutines is deliberately not parallel: it counts goroutines.
func TestWatchCancelLeavesNoGoroutines(t *testing.T) {
	tests := []struct {
		name  string
		poll  time.Duration
		noDir bool // the folder does not exist: Watch is retrying
	}{
		{name: "watching"},
		{name: "watching and polling", poll: 10 * time.Millisecond},
		{name: "folder missing", noDir: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if g := watchGoroutines(); len(g) != 0 {
				t.Fatalf("watcher goroutines before the test:\n%s", strings.Join(g, "\n\n"))
			}
			before := runtime.NumGoroutine()
			dir := t.TempDir()
			if tt.noDir {
				dir = filepath.Join(dir, "absent")
			}
			path := filepath.Join(dir, "claude-lb.yaml")
			log := &watchLog{}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rec := &watchRecorder{}
			done := make(chan error, 1)
			go func() {
				done <- Watch(ctx, path, WatchOptions{Debounce: 10 * time.Millisecond, Poll: tt.poll, Logger: log.logger()},
					func() { rec.add("") })
			}()
			if tt.noDir {
				watchEventually(t, "the missing folder to be logged", func() bool {
					return log.count("cannot watch the config folder") == 1
				})
			} else {
				// The file does not exist yet: the watcher says so once it has read it, after
				// its folder watch is set up; then creating the file must be reported.
				watchEventually(t, "the watcher to start", func() bool {
					return log.count("config file is missing") == 1
				})
				watchWrite(t, path, "version: 1\n")
				watchEventually(t, "onChange", func() bool { return len(rec.snapshot()) == 1 })
			}
			if len(watchGoroutines()) == 0 {
				t.Fatal("no watcher goroutine found while Watch runs: the leak check below would prove nothing")
			}

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Watch returned %v after cancel, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return within 5s of cancel")
			}
			watchEventually(t, "the watcher's goroutines to exit", func() bool {
				return len(watchGoroutines()) == 0 && runtime.NumGoroutine() <= before
			})
		})
	}
}
