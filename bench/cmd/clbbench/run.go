package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Target keys, in table order.
const (
	tDirect = "direct"
	tFloor  = "floor"
	tNginx  = "nginx"
	tMem    = "mem"
	tRedis  = "redis"
)

// target is one server the load goes through (or the upstream itself, "direct").
type target struct {
	key, label string
	p          *proc // nil for direct
	addr       string

	req1k, req100k, req2m, reqStream, reqHold []byte
}

// holdBody is the size of the open streams' requests (-hold-body).
var holdBody = streamBody

func (t *target) build() {
	// Claude Code names the conversation in a header as well as in metadata.user_id.
	sess := func(id string) []string { return []string{"X-Claude-Code-Session-Id", "0d6f1c2e-" + id} }
	t.req1k = request(t.addr, claudeCodeBody(1<<10, false, "s1k"), sess("s1k")...)
	t.req100k = request(t.addr, claudeCodeBody(100<<10, false, "s100k"), sess("s100k")...)
	t.req2m = request(t.addr, claudeCodeBody(2<<20, false, "s2m"), sess("s2m")...)
	t.reqStream = request(t.addr, claudeCodeBody(streamBody, true, "sse"), append(sess("sse"), benchHeader, modeStream)...)
	t.reqHold = request(t.addr, claudeCodeBody(holdBody, true, "hold"), append(sess("hold"), benchHeader, modeHold)...)
}

type settings struct {
	rounds   int
	plain    int // requests per 1 KB CPU phase
	conns    int
	rate     int
	latFor   time.Duration
	streams  int
	hold     []int
	maxHold  int // the most streams one proxy can hold under the open-file limit
	noFile   uint64
	gwEnv    []string
	extras   extraFlag
	holdLast bool
	full     int // concurrent complete streams checked once per target
	gap      time.Duration
	phases   map[string]bool // nil: all
	skip     map[string]bool
}

func (s settings) on(phase string) bool { return s.phases == nil || s.phases[phase] }

func listSet(list string) map[string]bool {
	if list == "" {
		return nil
	}
	m := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		m[strings.TrimSpace(f)] = true
	}
	return m
}

// bench is one run: its processes, targets and samples.
type bench struct {
	set     settings
	dir     string
	up      *proc
	redis   *proc
	targets []*target
	notes   []string
	stats   stats
	want    [32]byte // SHA-256 of the scripted stream as the upstream sends it
	log     io.Writer
}

// stats holds per-round samples: metric -> target -> values.
type stats map[string]map[string][]float64

func (s stats) add(metric, target string, v float64) {
	if s[metric] == nil {
		s[metric] = map[string][]float64{}
	}
	s[metric][target] = append(s[metric][target], v)
}

func (s stats) get(metric, target string) ([]float64, bool) {
	v, ok := s[metric][target]
	return v, ok && len(v) > 0
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	quick := fs.Bool("quick", false, "a ~30-40 s run: one round, fewer requests, 1,000 held streams only")
	rounds := fs.Int("rounds", 3, "interleaved rounds (medians are taken over them)")
	gwMode := fs.String("gateway", "auto", "claude-lb under test: binary (built from ./cmd/claude-lb), inproc (this binary's gateway subcommand), auto (binary when it builds)")
	nginxBin := fs.String("nginx", "", "nginx binary (default: from PATH; \"off\" to skip)")
	redisBin := fs.String("redis", "", "redis-server binary (default: from PATH; \"off\" to skip)")
	holdList := fs.String("hold", "2000,10000", "open-stream counts for the memory phase")
	md := fs.String("md", "", "also write the table (markdown) to this file")
	jsonOut := fs.String("json", "", "also write every per-round sample (JSON) to this file")
	plain := fs.Int("requests", 20000, "requests per round in the 1 KB CPU phase (100 KB: 1/8, 2 MB: 1/64)")
	hb := fs.Int("hold-body", streamBody, "request body size of the open streams (bytes); Claude Code sends about 90 KB")
	holdLast := fs.Bool("hold-last", false, "measure open streams after the load phases (memory reused, as in a long-running process) instead of first")
	keep := fs.Bool("keep", false, "keep the temporary folder (configs and logs)")
	only := fs.String("phases", "", "run only these phases (comma-separated: hold, full, cpu (= cpu1k, cpubig), lat, sse); default all")
	skip := fs.String("skip", "", "targets to leave out (comma-separated: floor, nginx, mem, redis)")
	var extras extraFlag
	fs.Var(&extras, "extra", "another claude-lb binary to measure with the memory store, as LABEL=PATH (repeatable): A/B comparisons of a change in one interleaved run")
	gwEnv := fs.String("gateway-env", "", "extra environment for the claude-lb processes (comma-separated KEY=VALUE, e.g. GOMAXPROCS=1)")
	_ = fs.Parse(args)

	st := settings{rounds: *rounds, plain: *plain, conns: 64, rate: 200, latFor: 5 * time.Second, streams: 500, full: 2000, gap: 10 * time.Millisecond}
	for _, f := range strings.Split(*holdList, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			st.hold = append(st.hold, n)
		}
	}
	st.phases, st.skip = listSet(*only), listSet(*skip)
	st.extras, st.holdLast, holdBody = extras, *holdLast, *hb
	if *gwEnv != "" {
		st.gwEnv = strings.Split(*gwEnv, ",")
	}
	if *quick {
		st.rounds, st.plain, st.latFor, st.hold, st.full = 1, min(st.plain, 3000), time.Second, []int{1000}, 0
	}
	limit := raiseNoFile(1 << 20)
	// Each open stream holds a client and an upstream descriptor in a proxy.
	// A proxy holds two descriptors per open stream (client and upstream); leave room for the
	// rest. Larger counts are measured at this many and extrapolated.
	st.maxHold, st.noFile = (int(limit)/2-200)/500*500, limit

	dir, err := os.MkdirTemp("", "clbbench")
	if err != nil {
		return err
	}
	b := &bench{set: st, dir: dir, stats: stats{}, log: os.Stderr}
	defer func() {
		b.stopAll()
		if *keep {
			fmt.Fprintln(os.Stderr, "kept", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	if err := b.start(*gwMode, lookup(*nginxBin, "nginx"), lookup(*redisBin, "redis-server")); err != nil {
		return err
	}
	started := time.Now()
	if err := b.measure(); err != nil {
		return err
	}
	table := b.table(time.Since(started))
	fmt.Println(table)
	if *md != "" {
		if err := os.WriteFile(*md, []byte(table), 0o644); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		j, err := json.MarshalIndent(b.stats, "", " ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, j, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// lookup resolves a binary flag: "" searches PATH, "off" disables.
func lookup(flagVal, name string) string {
	if flagVal == "off" {
		return ""
	}
	if flagVal != "" {
		return flagVal
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) stopAll() {
	for _, t := range b.targets {
		if t.p != nil {
			t.p.stop()
		}
	}
	b.redis.stop()
	b.up.stop()
}

// start launches the upstream, Redis and every target.
func (b *bench) start(gwMode, nginxBin, redisBin string) error {
	var err error
	b.up, err = startSelf(b.dir, "upstream", nil, "upstream", "-gap", b.set.gap.String())
	if err != nil {
		return err
	}
	upURL := "http://" + b.up.addr
	b.targets = append(b.targets, &target{key: tDirect, label: "direct to the fake upstream", addr: b.up.addr})

	if !b.set.skip[tFloor] {
		floor, err := startSelf(b.dir, "floor", nil, "floor", "-upstream", upURL)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, &target{key: tFloor, label: "Go floor (httputil.ReverseProxy)", p: floor, addr: floor.addr})
	}

	maxHold := 0
	for _, n := range b.set.hold {
		maxHold = max(maxHold, min(n, b.set.maxHold))
	}
	if b.set.skip[tNginx] {
		nginxBin = ""
	}
	if nginxBin != "" {
		ng, err := startNginx(b.dir, nginxBin, b.up.addr, 2*maxHold+1024)
		if err != nil {
			b.notes = append(b.notes, "nginx failed to start: "+err.Error())
		} else {
			b.targets = append(b.targets, &target{key: tNginx, label: "nginx proxy_pass", p: ng, addr: ng.addr})
		}
	} else if !b.set.skip[tNginx] {
		b.notes = append(b.notes, "nginx not installed (apt-get install -y nginx-light): its column is empty")
	}

	bin, kind := "", "in-process gateway (clbbench gateway: cmd/claude-lb's wiring)"
	if gwMode != "inproc" {
		bin, err = buildClaudeLB(b.dir)
		switch {
		case err == nil:
			kind = "the claude-lb binary built from ./cmd/claude-lb"
		case gwMode == "binary":
			return err
		default:
			b.notes = append(b.notes, "cmd/claude-lb does not build ("+firstLine(err.Error())+"); measured the in-process gateway with the same wiring")
		}
	}
	b.notes = append(b.notes, "claude-lb: "+kind)
	if !b.set.skip[tMem] {
		mem, err := b.startGateway("claude-lb-memory", bin, upURL, "")
		if err != nil {
			return err
		}
		b.targets = append(b.targets, &target{key: tMem, label: "claude-lb, memory store", p: mem, addr: mem.addr})
	}

	if b.set.skip[tRedis] {
		redisBin = ""
	}
	if redisBin != "" {
		b.redis, err = startRedis(b.dir, redisBin)
		if err != nil {
			return err
		}
		rg, err := b.startGateway("claude-lb-redis", bin, upURL, "redis://"+b.redis.addr+"/0")
		if err != nil {
			return err
		}
		b.targets = append(b.targets, &target{key: tRedis, label: "claude-lb, Redis store", p: rg, addr: rg.addr})
	} else if !b.set.skip[tRedis] {
		b.notes = append(b.notes, "redis-server not installed: no Redis column")
	}
	for _, x := range b.set.extras {
		// A label starting with "redis" runs on the Redis store (a prefix of its own).
		redisURL, store := "", "memory store"
		if strings.HasPrefix(x.label, "redis") && b.redis != nil {
			redisURL, store = "redis://"+b.redis.addr+"/1", "Redis store"
		}
		p, err := b.startGateway("claude-lb-"+x.label, x.bin, upURL, redisURL)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, &target{key: "x:" + x.label, label: "claude-lb " + x.label + ", " + store, p: p, addr: p.addr})
	}
	for _, t := range b.targets {
		t.build()
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// buildClaudeLB builds ./cmd/claude-lb of the module this run is in.
func buildClaudeLB(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", errors.New("not inside the claude-lb module")
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "claude-lb")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/claude-lb")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// startGateway writes a claude-lb.yaml and runs the binary on it (or, with bin "", this
// binary's gateway subcommand).
func (b *bench) startGateway(name, bin, upstream, redisURL string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(b.dir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(gatewayConfig(addr, upstream, redisURL)), 0o600); err != nil {
		return nil, err
	}
	env := append(gatewayEnv(), b.set.gwEnv...)
	if len(b.set.gwEnv) > 0 {
		b.notes = append(b.notes, name+" ran with "+strings.Join(b.set.gwEnv, " "))
	}
	if bin == "" {
		return startSelf(b.dir, name, env, "gateway", "-c", cfg)
	}
	cmd := exec.Command(bin, "serve", "-c", cfg, "--watch=false")
	cmd.Env = append(os.Environ(), env...)
	return startAt(b.dir, name, addr, "/healthz", cmd)
}

// measure runs every phase: idle memory, held streams, then the interleaved rounds.
func (b *bench) measure() error {
	// The reference stream, as the upstream sends it.
	c, err := dial(b.up.addr)
	if err != nil {
		return err
	}
	r, err := c.do(b.targets[0].reqStream, true)
	c.close()
	if err != nil {
		return fmt.Errorf("reference stream: %w", err)
	}
	b.want = r.sum

	b.logf("idle memory")
	for _, t := range b.targets {
		c, err := dial(t.addr)
		if err != nil {
			return err
		}
		for range 10 {
			if _, err := c.do(t.req1k, false); err != nil {
				return fmt.Errorf("%s: %w", t.label, err)
			}
		}
		// A proxy that cuts streams (the Go floor: golang/go#40747) may cut this one too: that
		// is noted, and only a proxy that cannot relay one stream in three stops the run.
		for try := 1; ; try++ {
			r, err := c.do(t.reqStream, true)
			c.close()
			if err == nil && r.sum == b.want {
				break
			}
			b.notes = append(b.notes, fmt.Sprintf("%s cut a warm-up stream short (try %d of 3): %v", t.label, try, err))
			if try == 3 {
				return fmt.Errorf("%s: the first stream does not match the upstream's: %v", t.label, err)
			}
			if c, err = dial(t.addr); err != nil {
				return err
			}
		}
	}
	time.Sleep(time.Second)
	for _, t := range b.targets {
		if t.p != nil {
			b.stats.add("rss_idle", t.key, mb(t.p.rss()))
		}
	}

	if !b.set.holdLast {
		b.holdPhases()
	}

	b.logf("warm-up")
	for _, t := range b.targets {
		if _, _, err := closedLoop(t.addr, t.req1k, b.set.conns, min(2000, b.set.plain/2)); err != nil {
			return fmt.Errorf("warm-up %s: %w", t.label, err)
		}
		if _, _, err := closedLoop(t.addr, t.req2m, b.set.conns, 64); err != nil {
			return fmt.Errorf("warm-up %s: %w", t.label, err)
		}
	}

	if b.set.full > 0 && b.set.on("full") {
		for _, t := range b.targets {
			b.logf("%d complete concurrent streams through %s", b.set.full, t.label)
			run, err := concurrentStreams(t.addr, t.reqStream, b.set.full, b.want)
			if err != nil {
				b.notes = append(b.notes, fmt.Sprintf("%d streams through %s: %v", b.set.full, t.label, err))
				continue
			}
			b.stats.add("full_cut", t.key, float64(run.cut))
			if run.cutErr != nil {
				b.notes = append(b.notes, fmt.Sprintf("%d concurrent streams through %s: %d cut short (%v)", b.set.full, t.label, run.cut, run.cutErr))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	phases := []struct {
		key, name string
		run       func(t *target) error
	}{
		{"cpu1k", "CPU, 1 KB bodies", func(t *target) error { return b.plainPhase(t, "1k", t.req1k, b.set.plain) }},
		{"cpubig", "CPU, 100 KB bodies", func(t *target) error { return b.plainPhase(t, "100k", t.req100k, b.set.plain/8) }},
		{"cpubig", "CPU, 2 MB bodies", func(t *target) error { return b.plainPhase(t, "2m", t.req2m, max(64, b.set.plain/64)) }},
		{"lat", "latency at a fixed rate", b.latencyPhase},
		{"sse", "concurrent streams", b.streamPhase},
	}
	for round := range b.set.rounds {
		for _, ph := range phases {
			if !b.set.on(ph.key) && !(strings.HasPrefix(ph.key, "cpu") && b.set.on("cpu")) {
				continue
			}
			b.logf("round %d/%d: %s", round+1, b.set.rounds, ph.name)
			// Rotate the order every round so no target always runs first.
			for i := range b.targets {
				t := b.targets[(i+round)%len(b.targets)]
				if err := ph.run(t); err != nil {
					return fmt.Errorf("%s through %s: %w", ph.name, t.label, err)
				}
			}
		}
	}
	if b.set.holdLast {
		b.holdPhases()
	}
	return nil
}

// holdPhases measures the memory of open streams on every proxy.
func (b *bench) holdPhases() {
	for _, n := range b.set.hold {
		if !b.set.on("hold") {
			return
		}
		if n > b.set.maxHold {
			b.notes = append(b.notes, fmt.Sprintf("the open-file limit (%d) lets one process hold about %d streams: the %d-stream figures are measured at %d and extrapolated linearly", b.set.noFile, b.set.maxHold, n, b.set.maxHold))
		}
		for _, t := range b.targets {
			if t.p == nil {
				continue
			}
			b.logf("%d open streams through %s", n, t.label)
			if err := b.holdPhase(t, n); err != nil {
				b.notes = append(b.notes, fmt.Sprintf("%d open streams through %s: %v", n, t.label, err))
			}
		}
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// plainPhase sends n requests over 64 connections and reads the target's CPU time before and
// after (and, for the Redis target, Redis's command counts and CPU).
func (b *bench) plainPhase(t *target, size string, req []byte, n int) error {
	cpu0 := b.cpu(t)
	var calls0 map[string]int64
	var reads0 int64
	var rcpu0 time.Duration
	if t.key == tRedis {
		calls0, reads0, _ = redisCounts(b.redis.addr)
		rcpu0 = b.redis.cpu()
	}
	d, failed, err := closedLoop(t.addr, req, b.set.conns, n)
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed: %w", failed, n, err)
	}
	cpu := b.cpu(t) - cpu0
	b.stats.add("cpu_"+size, t.key, float64(cpu.Microseconds())/float64(n))
	b.stats.add("rps_"+size, t.key, float64(n)/d.Seconds())
	if t.key == tRedis && size == "1k" {
		calls1, reads1, err := redisCounts(b.redis.addr)
		if err != nil {
			return err
		}
		var total int64
		evals := int64(0)
		for k, v := range calls1 {
			if k == "info" {
				continue
			}
			total += v - calls0[k]
			if k == "evalsha" || k == "eval" {
				evals += v - calls0[k]
			}
		}
		b.stats.add("redis_cmds", t.key, float64(total)/float64(n))
		b.stats.add("redis_evals", t.key, float64(evals)/float64(n))
		// Two read events belong to this phase's own INFO calls.
		b.stats.add("redis_reads", t.key, float64(reads1-reads0-2)/float64(n))
		b.stats.add("redis_cpu", t.key, float64((b.redis.cpu()-rcpu0).Microseconds())/float64(n))
	}
	return nil
}

// cpu is the target's CPU time; for direct, the upstream's (shown for reference).
func (b *bench) cpu(t *target) time.Duration {
	if t.p == nil {
		return b.up.cpu()
	}
	return t.p.cpu()
}

func (b *bench) latencyPhase(t *target) error {
	lat, failed, err := fixedRate(t.addr, t.req1k, b.set.rate, b.set.latFor)
	if failed > 0 {
		return fmt.Errorf("%d requests failed: %w", failed, err)
	}
	b.stats.add("lat_p50", t.key, ms(pct(lat, 50)))
	b.stats.add("lat_p99", t.key, ms(pct(lat, 99)))
	return nil
}

func (b *bench) streamPhase(t *target) error {
	run, err := concurrentStreams(t.addr, t.reqStream, b.set.streams, b.want)
	if err != nil {
		return err
	}
	b.stats.add("sse_cut", t.key, float64(run.cut))
	if run.cut > 0 {
		b.notes = append(b.notes, fmt.Sprintf("%d concurrent streams through %s: %d cut short (%v)", b.set.streams, t.label, run.cut, run.cutErr))
	}
	if len(run.first) > 0 {
		b.stats.add("ttfb_p50", t.key, ms(pct(run.first, 50)))
		b.stats.add("ttfb_p99", t.key, ms(pct(run.first, 99)))
		b.stats.add("ttlb_p50", t.key, ms(pct(run.last, 50)))
		b.stats.add("ttlb_p99", t.key, ms(pct(run.last, 99)))
	}
	// Let the proxies close their upstream connections before the next target runs.
	time.Sleep(300 * time.Millisecond)
	return nil
}

// holdPhase opens n streams that stay open, reads the target's RSS, then closes them. When the
// open-file limit cannot hold n, it opens as many as it can and extrapolates linearly.
func (b *bench) holdPhase(t *target, n int) error {
	m := min(n, b.set.maxHold)
	before := t.p.rss()
	conns, err := holdStreams(t.addr, t.reqHold, m)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	with := t.p.rss()
	for _, c := range conns {
		c.close()
	}
	per := float64(with-before) / float64(m)
	b.stats.add(fmt.Sprintf("rss_hold_%d", n), t.key, mb(with+int64(per*float64(n-m))))
	b.stats.add(fmt.Sprintf("kb_stream_%d", n), t.key, per/1024)
	// Give every proxy time to tear the streams down before the next one is measured.
	time.Sleep(time.Duration(n/2000+1) * time.Second)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.SortFunc(s, cmp.Compare)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cmdProfile runs the upstream and an in-process gateway with pprof, drives load through it and
// writes CPU and allocation profiles.
func cmdProfile(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ExitOnError)
	out := fs.String("o", "bench-profiles", "folder for cpu.pprof and allocs.pprof")
	secs := fs.Int("seconds", 10, "profile duration")
	size := fs.String("body", "1k", "load: 1k, 100k or 2m plain requests, stream (scripted streams), or hold (open -streams streams, then a heap profile)")
	streams := fs.Int("streams", 2000, "open streams for -body hold")
	redis := fs.Bool("redis", false, "use the Redis store (needs redis-server)")
	floor := fs.Bool("floor", false, "profile the Go floor instead of claude-lb")
	_ = fs.Parse(args)
	raiseNoFile(1 << 20)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clbbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{dir: dir, log: os.Stderr, set: settings{gap: time.Millisecond}}
	defer b.stopAll()
	b.up, err = startSelf(dir, "upstream", nil, "upstream", "-gap", "1ms")
	if err != nil {
		return err
	}
	redisURL := ""
	if *redis {
		if b.redis, err = startRedis(dir, lookup("", "redis-server")); err != nil {
			return err
		}
		redisURL = "redis://" + b.redis.addr + "/0"
	}
	addr, _ := freeAddr()
	pprofAddr, _ := freeAddr()
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(gatewayConfig(addr, "http://"+b.up.addr, redisURL)), 0o600); err != nil {
		return err
	}
	var gw *proc
	if *floor {
		gw, err = startSelf(dir, "floor", nil, "floor", "-upstream", "http://"+b.up.addr, "-pprof", pprofAddr)
	} else {
		gw, err = startSelf(dir, "gateway", gatewayEnv(), "gateway", "-c", cfg, "-pprof", pprofAddr)
	}
	if err != nil {
		return err
	}
	t := &target{key: tMem, p: gw, addr: gw.addr}
	b.targets = append(b.targets, t)
	t.build()
	if *size == "hold" {
		rss0 := gw.rss()
		conns, err := holdStreams(t.addr, t.reqHold, *streams)
		if err != nil {
			return err
		}
		time.Sleep(time.Second)
		rss1 := gw.rss()
		for _, p := range []struct{ name, path string }{
			{"heap.pprof", "/debug/pprof/heap"},
			{"heap.txt", "/debug/pprof/heap?debug=1"},
			{"goroutine.txt", "/debug/pprof/goroutine?debug=1"},
		} {
			if err := fetch("http://"+pprofAddr+p.path, filepath.Join(*out, p.name)); err != nil {
				return err
			}
		}
		for _, c := range conns {
			c.close()
		}
		fmt.Printf("RSS %.1f MB idle, %.1f MB with %d open streams: %.1f KB per stream\n", mb(rss0), mb(rss1), *streams, float64(rss1-rss0)/1024/float64(*streams))
		fmt.Printf("wrote %s/heap.pprof, heap.txt (MemStats at its end: StackInuse, HeapInuse) and goroutine.txt\n", *out)
		return nil
	}
	req, conns := t.req1k, 64
	switch *size {
	case "100k":
		req = t.req100k
	case "2m":
		req = t.req2m
	case "stream":
		req, conns = t.reqStream, 256
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, _, _ = closedLoop(t.addr, req, conns, 2000)
		}
	}()
	time.Sleep(time.Second)
	for _, p := range []struct{ name, path string }{
		{"cpu.pprof", fmt.Sprintf("/debug/pprof/profile?seconds=%d", *secs)},
		{"allocs.pprof", fmt.Sprintf("/debug/pprof/allocs?seconds=%d", *secs)},
	} {
		if err := fetch("http://"+pprofAddr+p.path, filepath.Join(*out, p.name)); err != nil {
			return err
		}
	}
	cancel()
	<-done
	fmt.Printf("wrote %s/cpu.pprof and %s/allocs.pprof (%s bodies, GOMAXPROCS of the gateway %d)\n", *out, *out, *size, runtime.GOMAXPROCS(0))
	fmt.Printf("  go tool pprof -top -nodecount=40 %s/cpu.pprof\n  go tool pprof -sample_index=alloc_space -top %s/allocs.pprof\n", *out, *out)
	return nil
}

// fetch saves url's body to path.
func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// extraFlag collects -extra LABEL=PATH.
type extraFlag []struct{ label, bin string }

func (e *extraFlag) String() string { return "" }

func (e *extraFlag) Set(v string) error {
	label, bin, ok := strings.Cut(v, "=")
	if !ok || label == "" || bin == "" {
		return fmt.Errorf("want LABEL=PATH, got %q", v)
	}
	*e = append(*e, struct{ label, bin string }{label, bin})
	return nil
}
