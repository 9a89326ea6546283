package main

// End-to-end harness shared by serve_test.go and reload_test.go: a pool of three API-key
// accounts in front of internal/fakeapi, config files written the three ways people (and
// Kubernetes) change them, the gateway run in process (newApp + the reload loop) or as a real
// process (this test binary re-executed as claude-lb), and a steady request load.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/internal/syncbuf"
)

// e2eChildEnv, set to 1, makes this test binary act as the claude-lb command: TestMain runs
// run() on the process's arguments. The subprocess tests start it that way, so they need no
// separate `go build` and the child runs with the race detector when the tests do.
const e2eChildEnv = "CLAUDE_LB_E2E_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(e2eChildEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv))
	}
	os.Exit(m.Run())
}

const (
	modelOpus   = "claude-opus-5-5"
	modelSonnet = "claude-sonnet-5-5"
	modelHaiku  = "claude-haiku-5-5"
	// e2eClientKey is what the test clients send; no clients are configured, so the gateway
	// accepts it and must never forward it (the fake accepts only the pool's keys).
	e2eClientKey = "sk-client-e2e-never-upstream"
)

// e2eKey is an account's API key. Its last 4 characters differ per account and appear in
// the fake's answer text ("Hello from XXXX"), tying each answer to the credential used.
func e2eKey(name string) string { return "sk-ant-api03-e2e-000000000000000-" + name }

func last4(s string) string { return s[len(s)-4:] }

type e2eAccount struct{ name, plan string }

// maxOn lists alpha and beta (and any extra names), all console except maxName.
func maxOn(maxName string, names ...string) []e2eAccount {
	if len(names) == 0 {
		names = []string{"alpha", "beta"}
	}
	out := make([]e2eAccount, 0, len(names))
	for _, n := range names {
		p := "console"
		if n == maxName {
			p = "max"
		}
		out = append(out, e2eAccount{n, p})
	}
	return out
}

func other(name string) string {
	if name == "alpha" {
		return "beta"
	}
	return "alpha"
}

// writeMode is how a new version of the config reaches the disk.
type writeMode int

const (
	inPlace    writeMode = iota // truncate and write the file itself (os.WriteFile)
	renameOver                  // editors: write a temporary file, rename it over the config
	k8sSwap                     // Kubernetes ConfigMap: new folder, ..data symlink swapped
)

func (m writeMode) String() string {
	return [...]string{"in-place", "rename-over", "k8s-symlink-swap"}[m]
}

// e2eFixture is a config folder, the fake upstream and the accounts' key files.
type e2eFixture struct {
	t    *testing.T
	fake *fakeapi.Server
	mode writeMode
	dir  string // the folder holding the config
	path string // the config path given to the gateway (a symlink with k8sSwap)
	keys map[string]string
	rev  int // bumped per rendered version, written into it as a comment
	gen  int // k8s: current ..data target generation
}

func newE2EFixture(t *testing.T, mode writeMode) *e2eFixture {
	t.Helper()
	f := &e2eFixture{t: t, fake: fakeapi.New(t), mode: mode, dir: t.TempDir(), keys: map[string]string{}}
	keyDir := t.TempDir()
	var creds []string
	for _, n := range []string{"alpha", "beta", "gamma"} {
		p := filepath.Join(keyDir, n+".key")
		if err := os.WriteFile(p, []byte(e2eKey(n)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		f.keys[n] = p
		creds = append(creds, e2eKey(n))
	}
	f.fake.Accept(creds...)
	f.path = filepath.Join(f.dir, "claude-lb.yaml")
	return f
}

// render returns a complete config: extra (top-level YAML lines) and the accounts.
func (f *e2eFixture) render(accts []e2eAccount, extra string) string {
	f.rev++
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\n# revision %d\nlisten: 127.0.0.1:0\nupstream:\n  url: %s\n", f.rev, f.fake.URL)
	b.WriteString(extra)
	b.WriteString("accounts:\n")
	for _, a := range accts {
		fmt.Fprintf(&b, "  - name: %s\n    plan: %s\n    api_key_file: %s\n", a.name, a.plan, f.keys[a.name])
	}
	return b.String()
}

// write puts content on disk in the fixture's mode. The first call also lays out the folder
// (with k8sSwap: claude-lb.yaml -> ..data/claude-lb.yaml, ..data -> ..2026_…_1).
func (f *e2eFixture) write(content string) {
	f.t.Helper()
	if err := f.writeErr(content); err != nil {
		f.t.Fatal(err)
	}
}

func (f *e2eFixture) writeErr(content string) error {
	switch f.mode {
	case inPlace:
		return os.WriteFile(f.path, []byte(content), 0o644)
	case renameOver:
		tmp := filepath.Join(f.dir, ".claude-lb.yaml.swp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, f.path)
	}
	// What the kubelet's AtomicWriter does: a fresh timestamped folder, a new symlink to it,
	// renamed over ..data in one step, then the old folder removed.
	f.gen++
	dirName := fmt.Sprintf("..2026_01_02_03_04_05.%09d", f.gen)
	if err := os.Mkdir(filepath.Join(f.dir, dirName), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.dir, dirName, "claude-lb.yaml"), []byte(content), 0o644); err != nil {
		return err
	}
	tmpLink := filepath.Join(f.dir, "..data_tmp")
	if err := os.Symlink(dirName, tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(f.dir, "..data")); err != nil {
		return err
	}
	if f.gen == 1 {
		return os.Symlink(filepath.Join("..data", "claude-lb.yaml"), f.path)
	}
	return os.RemoveAll(filepath.Join(f.dir, fmt.Sprintf("..2026_01_02_03_04_05.%09d", f.gen-1)))
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// e2eApp is the gateway run in process, as runServe wires it.
type e2eApp struct {
	app  *app
	srv  *httptest.Server
	logs *syncbuf.Buffer
	hup  chan os.Signal
}

func startE2EApp(t *testing.T, path string, watch bool) *e2eApp {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("initial config: %v", err)
	}
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := newApp(ctx, cfg, path, log, os.LookupEnv)
	if err != nil {
		cancel()
		t.Fatalf("newApp: %v", err)
	}
	g := &e2eApp{app: a, srv: httptest.NewServer(a.gw), logs: logs, hup: make(chan os.Signal, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.reloads(ctx, g.hup, watch)
	}()
	t.Cleanup(func() {
		g.srv.Close()
		cancel()
		<-done
		a.close()
		if t.Failed() {
			t.Logf("gateway log:\n%s", tail(logs.String(), 6000))
		}
	})
	return g
}

var e2eClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// e2eResp is one answer of the gateway, read to the end.
type e2eResp struct {
	status  int
	account string
	body    string
	stream  bool
}

func e2eRequest(ctx context.Context, base, model string, stream bool) (*http.Request, error) {
	body := fmt.Sprintf(`{"model":%q,"max_tokens":64,"stream":%t,"messages":[{"role":"user","content":"hello"}]}`, model, stream)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/messages", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", e2eClientKey)
	return req, nil
}

func e2eSend(base, model string, stream bool) (e2eResp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := e2eRequest(ctx, base, model, stream)
	if err != nil {
		return e2eResp{}, err
	}
	resp, err := e2eClient.Do(req)
	if err != nil {
		return e2eResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := e2eResp{status: resp.StatusCode, account: resp.Header.Get("X-Claude-Lb-Account"), body: string(b), stream: stream}
	if err != nil {
		return r, fmt.Errorf("reading the body: %w", err)
	}
	return r, nil
}

// problem says what is wrong with a proxied answer, "" when it is a complete success that
// was served with the credential of the account the header names.
func (r e2eResp) problem() string {
	switch {
	case r.status != http.StatusOK:
		return fmt.Sprintf("status %d: %.300s", r.status, r.body)
	case r.account == "":
		return "no x-claude-lb-account header"
	case r.stream && !strings.Contains(r.body, "event: message_stop"):
		return fmt.Sprintf("stream without message_stop: %.300s", r.body)
	case r.stream && strings.Contains(r.body, "event: error"):
		return fmt.Sprintf("stream with an error event: %.300s", r.body)
	case !r.stream && !strings.Contains(r.body, `"type":"message"`):
		return fmt.Sprintf("not a message: %.300s", r.body)
	case !strings.Contains(r.body, last4(e2eKey(r.account))):
		return fmt.Sprintf("header says %s but the upstream saw another credential: %.300s", r.account, r.body)
	}
	return ""
}

// opusAccount sends one Opus request and returns the account that served it.
func opusAccount(base string) (string, error) {
	r, err := e2eSend(base, modelOpus, false)
	if err != nil {
		return "", err
	}
	if p := r.problem(); p != "" {
		return "", errors.New(p)
	}
	return r.account, nil
}

// eventually polls cond until it holds, failing the test after timeout with cond's last word.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v; last: %s", what, timeout, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitServing waits until /readyz reports the config with hash and an Opus request is served
// by wantOpus: proof that exactly this version is the one serving.
func waitServing(t *testing.T, base, hash, wantOpus string) {
	t.Helper()
	eventually(t, 15*time.Second, "version "+hash[:12]+" serving with Opus on "+wantOpus, func() (bool, string) {
		h, err := readyHash(base)
		if err != nil {
			return false, err.Error()
		}
		if h != hash {
			return false, "readyz config_hash " + h
		}
		acct, err := opusAccount(base)
		if err != nil {
			return false, err.Error()
		}
		return acct == wantOpus, "opus served by " + acct
	})
}

func getJSON(url string, v any) (int, error) {
	resp, err := e2eClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}

func readyHash(base string) (string, error) {
	var body struct {
		Hash string `json:"config_hash"`
	}
	if _, err := getJSON(base+"/readyz", &body); err != nil {
		return "", err
	}
	return body.Hash, nil
}

// metric returns the value of one series (name with its labels, as exposed) from /metrics.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := e2eClient.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not in /metrics", series)
	return 0
}

const (
	reloadsOK   = `claude_lb_config_reloads_total{result="success"}`
	reloadsFail = `claude_lb_config_reloads_total{result="failure"}`
)

// load is a steady stream of requests from a few goroutines: Opus, Sonnet and Haiku, plain
// and streaming, each checked to the last byte.
type load struct {
	stopping atomic.Bool
	done     atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	fails    []string // guarded by mu
}

func startLoad(base string, workers int) *load {
	l := &load{}
	models := []string{modelOpus, modelSonnet, modelOpus, modelHaiku}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; !l.stopping.Load(); i++ {
				model, stream := models[(w+i)%len(models)], (w+i/2)%2 == 0
				r, err := e2eSend(base, model, stream)
				p := r.problem()
				if err != nil {
					p = err.Error()
				}
				if p != "" {
					l.mu.Lock()
					l.fails = append(l.fails, fmt.Sprintf("%s stream=%t: %s", model, stream, p))
					l.mu.Unlock()
				}
				l.done.Add(1)
			}
		}()
	}
	return l
}

// stop ends the load after the requests in flight and returns how many ran and what failed.
func (l *load) stop() (int64, []string) {
	l.stopping.Store(true)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done.Load(), l.fails
}

// heldStream is a streaming request whose upstream answer is paused by the fake (Reply.Hold)
// after its first content event.
type heldStream struct {
	resp *http.Response
	br   *bufio.Reader
	seen strings.Builder
}

// holdScript makes the fake hold the first streaming request of model after its first content
// event, until release is closed. Other requests get the default answers.
func holdScript(fake *fakeapi.Server, model string, release <-chan struct{}) {
	var once atomic.Bool
	fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		if !r.Stream || r.Model != model || !once.CompareAndSwap(false, true) {
			return nil
		}
		chunks := []string{"begun", " on the old", " snapshot from " + last4(r.Credential)}
		// message_start, content_block_start, ping, first delta: then hold.
		return &fakeapi.Reply{Events: fakeapi.StreamEvents(r.Model, chunks, 10, 3), Hold: release, HoldAfter: 4}
	})
}

// startHeldStream sends a streaming request and reads until its first content event arrived,
// so the request is surely in flight in the gateway.
func startHeldStream(t *testing.T, base, model string) *heldStream {
	t.Helper()
	req, err := e2eRequest(context.Background(), base, model, true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("held stream: status %d: %s", resp.StatusCode, b)
	}
	h := &heldStream{resp: resp, br: bufio.NewReader(resp.Body)}
	for !strings.Contains(h.seen.String(), "event: content_block_delta\ndata: ") ||
		!strings.HasSuffix(h.seen.String(), "\n\n") {
		line, err := h.br.ReadString('\n')
		h.seen.WriteString(line)
		if err != nil {
			t.Fatalf("held stream ended before its first content event: %v; got %q", err, h.seen.String())
		}
	}
	return h
}

// finish reads the rest of the stream and returns everything it carried.
func (h *heldStream) finish(t *testing.T) string {
	t.Helper()
	rest, err := io.ReadAll(h.br)
	h.seen.Write(rest)
	if err != nil {
		t.Fatalf("held stream broke: %v; got %q", err, h.seen.String())
	}
	return h.seen.String()
}

// ---- claude-lb as a real process ----

// e2eProc is `claude-lb serve` running as a child process.
type e2eProc struct {
	cmd    *exec.Cmd
	base   string
	stderr *syncbuf.Buffer
	exited chan struct{} // closed when the process has exited; then code is set
	code   int
}

var listenRE = regexp.MustCompile(`msg="claude-lb listening" addr=http://(127\.0\.0\.1:\d+)`)

// startProc runs `claude-lb serve` with args and env (plus PORT) and waits for /readyz.
// The port is a free one found just before; if another process takes it first, it tries
// again with another.
func startProc(t *testing.T, env []string, args ...string) *e2eProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		p, err := tryStartProc(t, env, args)
		if err == nil {
			return p
		}
		if attempt == 2 || !strings.Contains(p.stderr.String(), "cannot listen") {
			t.Fatalf("claude-lb serve did not start: %v\n%s", err, p.stderr.String())
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func tryStartProc(t *testing.T, env []string, args []string) (*e2eProc, error) {
	port := freePort(t)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), e2eChildEnv+"=1", "PORT="+port), env...)
	p := &e2eProc{cmd: cmd, stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		p.code = 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.exited:
			return p, fmt.Errorf("exited with code %d", p.code)
		default:
		}
		if m := listenRE.FindStringSubmatch(p.stderr.String()); m != nil {
			if !strings.HasSuffix(m[1], ":"+port) {
				return p, fmt.Errorf("listening on %s, not on PORT=%s", m[1], port)
			}
			p.base = "http://" + m[1]
			var ready struct {
				Ready bool `json:"ready"`
			}
			if code, err := getJSON(p.base+"/readyz", &ready); err == nil && code == http.StatusOK && ready.Ready {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return p, errors.New("not ready after 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *e2eProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("kill -%v: %v", sig, err)
	}
}

// TestServeProcessSIGHUPAndDrain runs `claude-lb serve --watch=false` as a real process:
// SIGHUP (a real signal) applies a change the watcher was told to ignore and does not kill
// the process; SIGTERM stops new connections, lets a stream in flight run to its end, then
// the process exits 0.
func TestServeProcessSIGHUPAndDrain(t *testing.T) {
	f := newE2EFixture(t, renameOver)
	release := make(chan struct{})
	holdScript(f.fake, modelOpus, release)
	f.write(f.render(maxOn("alpha"), ""))
	p := startProc(t, nil, "serve", "-c", f.path, "--watch=false")

	if acct, err := opusAccount(p.base); err != nil || acct != "alpha" {
		t.Fatalf("before the change: Opus served by %q (%v), want alpha", acct, err)
	}
	v2 := f.render(maxOn("beta"), "")
	f.write(v2)
	p.signal(t, syscall.SIGHUP)
	waitServing(t, p.base, sha256Hex(v2), "beta")
	// Log lines are written in batches (at most 50 ms late).
	eventually(t, 5*time.Second, "a reload logged for SIGHUP", func() (bool, string) {
		out := p.stderr.String()
		return regexp.MustCompile(`msg="config reloaded" trigger=SIGHUP`).MatchString(out), out
	})

	// A stream in flight, held by the upstream after its first content event.
	h := startHeldStream(t, p.base, modelOpus)
	if got := h.resp.Header.Get("X-Claude-Lb-Account"); got != "beta" {
		t.Errorf("held stream served by %q, want beta", got)
	}
	p.signal(t, syscall.SIGTERM)
	// Shutdown closes the listener first: once new connections are refused, draining is on.
	eventually(t, 10*time.Second, "listener closed after SIGTERM", func() (bool, string) {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.base, "http://"), time.Second)
		if err != nil {
			return true, ""
		}
		c.Close()
		return false, "still accepting connections"
	})
	select {
	case <-p.exited:
		t.Fatalf("process exited (code %d) while a stream was in flight:\n%s", p.code, p.stderr.String())
	default:
	}
	close(release)
	body := h.finish(t)
	if !strings.Contains(body, "event: message_stop") || strings.Contains(body, "event: error") {
		t.Errorf("stream in flight at SIGTERM did not complete cleanly:\n%s", body)
	}
	if !strings.Contains(body, "snapshot from "+last4(e2eKey("beta"))) {
		t.Errorf("stream did not carry its last chunk:\n%s", body)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("process still running 20s after its last stream ended:\n%s", p.stderr.String())
	}
	if p.code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0:\n%s", p.code, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "shutting down: draining in-flight requests") {
		t.Errorf("no drain logged:\n%s", p.stderr.String())
	}
}
