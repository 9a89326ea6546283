package main

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"
)

// row is one line of the table.
type row struct {
	metric string
	label  string
	sum    bool // add the rounds up (counts) instead of taking their median
	added  bool // latency: targets show their excess over direct, paired by round
	prec   int
	goal   string
	check  func(v func(target string) (float64, bool)) (bool, bool) // (met, known)
}

func le(target string, limit float64) func(v func(string) (float64, bool)) (bool, bool) {
	return func(v func(string) (float64, bool)) (bool, bool) {
		x, ok := v(target)
		return x <= limit, ok
	}
}

func ratioLE(a, b string, limit float64) func(v func(string) (float64, bool)) (bool, bool) {
	return func(v func(string) (float64, bool)) (bool, bool) {
		x, ok1 := v(a)
		y, ok2 := v(b)
		return y > 0 && x/y <= limit, ok1 && ok2 && y > 0
	}
}

func zero(targets ...string) func(v func(string) (float64, bool)) (bool, bool) {
	return func(v func(string) (float64, bool)) (bool, bool) {
		met, known := true, false
		for _, t := range targets {
			if x, ok := v(t); ok {
				known = true
				met = met && x == 0
			}
		}
		return met, known
	}
}

func (b *bench) rows() []row {
	rs := []row{
		{metric: "cpu_1k", label: "CPU per plain request, 1 KB body (µs)", prec: 1, goal: "memory ≤ 1.1× floor", check: ratioLE(tMem, tFloor, 1.1)},
		{metric: "rps_1k", label: "requests/s at 64 connections, 1 KB", prec: 0},
		{metric: "cpu_100k", label: "CPU per request, 100 KB body (µs)", prec: 1},
		{metric: "cpu_2m", label: "CPU per request, 2 MB body (µs)", prec: 0},
		{metric: "cpu_per_mb", label: "CPU per MB of request body (µs)", prec: 0, goal: "one copy, no decode (see -benchmem)"},
		{metric: "rps_2m", label: "requests/s at 64 connections, 2 MB", prec: 0},
		{metric: "lat_p50", label: "added latency p50 at 200 req/s (ms)", added: true, prec: 3, goal: "memory ≤ 0.25, Redis ≤ 0.5", check: func(v func(string) (float64, bool)) (bool, bool) {
			m, ok := v(tMem)
			r, okr := v(tRedis)
			return m <= 0.25 && (!okr || r <= 0.5), ok
		}},
		{metric: "lat_p99", label: "added latency p99 at 200 req/s (ms)", added: true, prec: 3, goal: "memory ≤ 0.6", check: le(tMem, 0.6)},
		{metric: "ttfb_p50", label: fmt.Sprintf("%d streams: time to first byte p50 (ms)", b.set.streams), prec: 1},
		{metric: "ttfb_p99", label: fmt.Sprintf("%d streams: time to first byte p99 (ms)", b.set.streams), prec: 1},
		{metric: "ttlb_p50", label: fmt.Sprintf("%d streams: time to last byte p50 (ms)", b.set.streams), prec: 1},
		{metric: "ttlb_p99", label: fmt.Sprintf("%d streams: time to last byte p99 (ms)", b.set.streams), prec: 1, goal: "memory ≤ 1.1× nginx", check: ratioLE(tMem, tNginx, 1.1)},
		{metric: "sse_cut", label: fmt.Sprintf("streams cut short or altered (of %d×%d)", b.set.streams, b.set.rounds), sum: true, goal: "0", check: zero(tMem, tRedis)},
	}
	if b.set.full > 0 {
		rs = append(rs, row{metric: "full_cut", label: fmt.Sprintf("streams cut short or altered (of %d concurrent)", b.set.full), sum: true, goal: "0", check: zero(tMem, tRedis)})
	}
	rs = append(rs, row{metric: "rss_idle", label: "idle RSS (MB)", prec: 1, goal: "< 30", check: le(tMem, 30)})
	for _, n := range b.set.hold {
		r := row{metric: fmt.Sprintf("rss_hold_%d", n), label: fmt.Sprintf("RSS with %d open streams, %s requests (MB)", n, sizeLabel(holdBody)), prec: 0}
		if n == 10000 {
			r.goal, r.check = "< 600", le(tMem, 600)
		}
		rs = append(rs, r)
		k := row{metric: fmt.Sprintf("kb_stream_%d", n), label: fmt.Sprintf("memory per open stream at %d, %s requests (KB)", n, sizeLabel(holdBody)), prec: 1}
		if n == 2000 {
			k.goal, k.check = "≤ 60", le(tMem, 60)
		}
		rs = append(rs, k)
	}
	if b.redis != nil {
		rs = append(rs,
			row{metric: "redis_evals", label: "Redis scripts (EVALSHA) per request", prec: 2, goal: "1 before the upstream call", check: le(tRedis, 1)},
			row{metric: "redis_cmds", label: "Redis commands per request (incl. inside scripts)", prec: 1},
			row{metric: "redis_reads", label: "Redis round trips per request (read events)", prec: 2},
			row{metric: "redis_cpu", label: "redis-server CPU per request (µs)", prec: 1},
		)
	}
	return rs
}

// value is a row's figure for one target.
func (b *bench) value(r row, target string) (float64, bool) {
	if r.metric == "cpu_per_mb" {
		big, ok1 := b.value(row{metric: "cpu_2m"}, target)
		small, ok2 := b.value(row{metric: "cpu_1k"}, target)
		return (big - small) / (float64(2<<20-1<<10) / (1 << 20)), ok1 && ok2
	}
	v, ok := b.stats.get(r.metric, target)
	if !ok {
		return 0, false
	}
	if r.sum {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s, true
	}
	if r.added && target != tDirect {
		d, ok := b.stats.get(r.metric, tDirect)
		if !ok || len(d) != len(v) {
			return 0, false
		}
		diff := make([]float64, len(v))
		for i := range v {
			diff[i] = v[i] - d[i]
		}
		return median(diff), true
	}
	return median(v), true
}

func format(x float64, prec int) string {
	if math.Abs(x) >= 1000 && prec > 0 {
		prec = 0
	}
	return fmt.Sprintf("%.*f", prec, x)
}

// table renders the results as one markdown table with ratios and goals.
func (b *bench) table(took time.Duration) string {
	var sb strings.Builder
	cols := []string{tDirect, tFloor, tNginx, tMem, tRedis}
	head := map[string]string{tDirect: "direct", tFloor: "Go floor", tNginx: "nginx", tMem: "claude-lb memory", tRedis: "claude-lb Redis"}
	for _, x := range b.set.extras {
		cols = append(cols, "x:"+x.label)
		head["x:"+x.label] = "claude-lb " + x.label
	}
	present := map[string]bool{}
	for _, t := range b.targets {
		present[t.key] = true
	}
	fmt.Fprintf(&sb, "clbbench: %d round(s), interleaved, medians; %d CPUs (%s/%s), %s; took %s\n\n",
		b.set.rounds, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), took.Round(time.Second))
	sb.WriteString("| metric |")
	for _, c := range cols {
		sb.WriteString(" " + head[c] + " |")
	}
	// Ratios: memory against the floor and nginx, and each extra binary against memory.
	type ratio struct{ num, den string }
	ratios := []ratio{{tMem, tFloor}, {tMem, tNginx}}
	sb.WriteString(" memory ÷ floor | memory ÷ nginx |")
	for _, x := range b.set.extras {
		ratios = append(ratios, ratio{"x:" + x.label, tMem})
		sb.WriteString(" " + x.label + " ÷ memory |")
	}
	sb.WriteString(" goal | met |\n|---|")
	for range len(cols) + len(ratios) {
		sb.WriteString("---:|")
	}
	sb.WriteString("---|---|\n")
	for _, r := range b.rows() {
		sb.WriteString("| " + r.label + " |")
		for _, c := range cols {
			x, ok := b.value(r, c)
			switch {
			case !present[c] || !ok:
				sb.WriteString(" — |")
			case r.added && c == tDirect:
				sb.WriteString(" (" + format(x, r.prec) + ") |")
			case r.added && x < 0:
				// Faster than direct: the round's direct figure was the noisier one.
				sb.WriteString(" −" + format(-x, r.prec) + " |")
			case r.added:
				sb.WriteString(" +" + format(x, r.prec) + " |")
			default:
				sb.WriteString(" " + format(x, r.prec) + " |")
			}
		}
		for _, q := range ratios {
			x, ok1 := b.value(r, q.num)
			y, ok2 := b.value(r, q.den)
			if !ok1 || !ok2 || r.sum || y <= 0 || x < 0 {
				sb.WriteString(" — |")
				continue
			}
			fmt.Fprintf(&sb, " %.2f× |", x/y)
		}
		verdict := ""
		if r.check != nil {
			met, known := r.check(func(t string) (float64, bool) { return b.value(r, t) })
			switch {
			case !known:
				verdict = "n/a"
			case met:
				verdict = "met"
			default:
				verdict = "**not met**"
			}
		}
		fmt.Fprintf(&sb, " %s | %s |\n", r.goal, verdict)
	}
	sb.WriteString("\nThe direct column is the fake upstream itself: its CPU rows are the upstream's own cost, its latency rows (in parentheses) the baseline the others are measured against.\n")
	for _, n := range b.notes {
		sb.WriteString("\n- " + n)
	}
	sb.WriteString("\n")
	return sb.String()
}

func sizeLabel(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MB", n>>20)
	}
	return fmt.Sprintf("%d KB", n>>10)
}
