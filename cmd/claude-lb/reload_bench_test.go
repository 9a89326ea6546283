package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
)

// bigConfig renders n accounts; max moves to account maxIdx.
func bigConfig(upstream string, n, maxIdx, rev int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\n# revision %d\nupstream:\n  url: %s\naccounts:\n", rev, upstream)
	for i := range n {
		plan := "console"
		if i == maxIdx {
			plan = "max"
		}
		fmt.Fprintf(&b, "  - name: acct-%04d\n    plan: %s\n    api_key: sk-ant-api03-bench-%032d\n", i, plan, i)
	}
	return b.String()
}

// BenchmarkReload1000 measures DESIGN.md section 11's reload goal: the time from writing a
// 1,000-account file (editor-style rename) to the new snapshot serving, through the real
// folder watch and reload loop, while requests keep flowing. It reports write-to-serving time
// as ns/op, bytes allocated per reload, and fails if any request fails meanwhile.
//
//	go test -run='^$' -bench=Reload1000 -benchtime=20x ./cmd/claude-lb
func BenchmarkReload1000(b *testing.B) {
	fake := fakeapi.NewServer()
	defer fake.Close()
	fake.Record(false)
	dir := b.TempDir()
	path := filepath.Join(dir, "claude-lb.yaml")
	write := func(s string) {
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			b.Fatal(err)
		}
	}
	write(bigConfig(fake.URL, 1000, 0, 0))
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := newApp(ctx, cfg, path, slog.New(slog.DiscardHandler), os.LookupEnv)
	if err != nil {
		b.Fatal(err)
	}
	defer a.close()
	srv := httptest.NewServer(a.gw)
	defer srv.Close()
	go a.reloads(ctx, make(chan os.Signal), true)

	// Steady traffic through the reloads.
	var failed, sent atomic.Int64
	var wg sync.WaitGroup
	lctx, lcancel := context.WithCancel(ctx)
	for range 2 {
		wg.Go(func() {
			for lctx.Err() == nil {
				r, err := e2eSend(srv.URL, modelSonnet, false)
				sent.Add(1)
				if err != nil || r.status != 200 {
					failed.Add(1)
				}
			}
		})
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		content := bigConfig(fake.URL, 1000, (i+1)%1000, i+1)
		want := sha256Hex(content)
		start := time.Now()
		write(content)
		for a.gw.Snapshot().Config.Hash != want {
			if time.Since(start) > 10*time.Second {
				b.Fatalf("reload %d not serving after 10s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
		total += time.Since(start)
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	lcancel()
	wg.Wait()
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/reload")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(b.N)/(1<<20), "MiB-alloc/reload")
	b.ReportMetric(float64(sent.Load()), "requests")
	if failed.Load() != 0 {
		b.Fatalf("%d of %d requests failed during reloads", failed.Load(), sent.Load())
	}
}
