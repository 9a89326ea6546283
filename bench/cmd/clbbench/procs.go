package main

// Child processes: starting them, reading their CPU time and RSS from /proc, stopping them.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one measured process (nginx: its master; workers are found as its children).
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string // host:port it serves on
	log  string // its stderr
	pids []int  // every process whose CPU and memory count: the master and its workers
	done chan struct{}
}

// startSelf runs this binary's subcommand and waits for its "READY http://ADDR" line.
func startSelf(dir, name string, env []string, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	p, stdout, err := startCmd(dir, name, cmd)
	if err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "READY http://"); ok {
				line <- s
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case a := <-line:
		p.addr = a
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready: %s", name, tail(p.log))
	case <-time.After(20 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s not ready after 20s: %s", name, tail(p.log))
	}
	return p, nil
}

// startCmd starts cmd with its stderr in dir/NAME.log.
func startCmd(dir, name string, cmd *exec.Cmd) (*proc, io.Reader, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = lf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, pids: []int{cmd.Process.Pid}, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, stdout, nil
}

// startAt starts an external server (nginx, the claude-lb binary) told to listen on addr and
// waits until GET readyPath answers.
func startAt(dir, name, addr, readyPath string, cmd *exec.Cmd) (*proc, error) {
	p, stdout, err := startCmd(dir, name, cmd)
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	p.addr = addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited before it was ready: %s", name, tail(p.log))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+readyPath, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not ready after 20s: %v; %s", name, err, tail(p.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// findChildren adds the processes whose parent is the master (nginx's workers).
func (p *proc) findChildren() {
	master := p.cmd.Process.Pid
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		// Fields after the command name "(…)": state ppid …
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(master) {
			p.pids = append(p.pids, pid)
		}
	}
}

// cpu is the CPU time the process (all its threads, and its workers) has used, from
// /proc/PID/task/TID/schedstat (nanoseconds), or utime+stime ticks when that is missing.
func (p *proc) cpu() time.Duration {
	var total time.Duration
	for _, pid := range p.pids {
		total += pidCPU(pid)
	}
	return total
}

func pidCPU(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err == nil {
		var sum time.Duration
		ok := true
		for _, t := range tasks {
			b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
			if err != nil {
				ok = false
				break
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				ok = false
				break
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
		if ok {
			return sum
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // CLK_TCK is 100 on Linux
}

// rss is the resident set of the process and its workers, in bytes.
func (p *proc) rss() int64 {
	var total int64
	for _, pid := range p.pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return strings.TrimSpace(string(b))
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// raiseNoFile lifts the open-file limit (inherited by every child) so that thousands of
// streams fit: each open stream costs the gateway two descriptors.
func raiseNoFile(want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Max < want {
		// Only root may raise the hard limit; try, and fall back to the hard limit.
		nl := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl) == nil {
			return want
		}
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}

// nginxConf is a proxy_pass reference: keep-alive to the upstream, no response buffering
// (SSE), request bodies buffered in memory up to 4 MiB (nginx's default is to read the whole
// body first, spilling to disk past client_body_buffer_size), no access log.
func nginxConf(dir, listen, upstream string, workers, conns int) string {
	return fmt.Sprintf(`worker_processes %d;
worker_rlimit_nofile 200000;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log warn;
events { worker_connections %[5]d; multi_accept on; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream fake { server %[4]s; keepalive 512; }
  server {
    listen %[3]s backlog=4096;
    keepalive_requests 1000000;
    client_max_body_size 32m;
    client_body_buffer_size 4m;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Api-Key sk-bench-nginx-account;
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
`, workers, dir, listen, upstream, conns)
}

// startNginx runs nginx with two workers (one per core, as worker_processes auto would here)
// and room for conns connections per worker (nginx allocates them up front).
func startNginx(dir, bin, upstreamAddr string, conns int) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return nil, err
	}
	conf := nginxConf(ndir, addr, upstreamAddr, 2, max(conns, 4096))
	if os.Geteuid() == 0 {
		// As root nginx would switch its workers to "nobody", who cannot write the temp dirs.
		conf = "user root;\n" + conf
	}
	cf := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", ndir, "-c", cf, "-e", filepath.Join(ndir, "nginx-error.log"), "-g", "daemon off;")
	p, err := startAt(dir, "nginx", addr, "/v1/models", cmd)
	if err != nil {
		return nil, err
	}
	p.findChildren()
	if len(p.pids) < 2 {
		p.stop()
		return nil, errors.New("nginx: no worker process found")
	}
	return p, nil
}

// startRedis runs a private redis-server on a free loopback port, persistence off.
func startRedis(dir, bin string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", rdir, "--protected-mode", "no", "--maxclients", "10000")
	p, stdout, err := startCmd(dir, "redis", cmd)
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	p.addr = addr
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("redis-server did not answer PING: %s", tail(p.log))
}

// redisInfo reads INFO SECTION from addr as field -> value.
func redisInfo(addr, section string) (map[string]string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "INFO %s\r\n", section); err != nil {
		return nil, err
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	if err != nil || len(head) < 2 || head[0] != '$' {
		return nil, fmt.Errorf("INFO: unexpected reply %q", head)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(head[1:]))
	body := make([]byte, n+2)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(body), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// redisCounts returns the commands executed (all, from commandstats, each command run inside
// a script counted too; and per command) and the read events processed (about one per
// client round trip: a pipeline arrives in one read).
func redisCounts(addr string) (calls map[string]int64, reads int64, err error) {
	cs, err := redisInfo(addr, "commandstats")
	if err != nil {
		return nil, 0, err
	}
	calls = map[string]int64{}
	for k, v := range cs {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(kv, "calls="); ok {
				calls[name], _ = strconv.ParseInt(n, 10, 64)
			}
		}
	}
	st, err := redisInfo(addr, "stats")
	if err != nil {
		return nil, 0, err
	}
	reads, _ = strconv.ParseInt(st["total_reads_processed"], 10, 64)
	return calls, reads, nil
}
