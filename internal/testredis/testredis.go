// Package testredis runs a private redis-server for tests: on a unix socket in the test's
// temporary directory (or on a free loopback TCP port), with persistence off, killed when the
// test ends. Tests never touch a shared Redis.
//
// When redis-server is not on PATH the test is skipped, unless the environment variable CI is
// set, where it fails: CI must run every test.
package testredis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claude-lb/claude-lb/internal/syncbuf"
)

// maxSocketPath keeps unix socket paths under Linux's limit (sun_path is 108 bytes).
const maxSocketPath = 100

// Server is one private redis-server process.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	sock string // unix socket path; "" in TCP mode
	port int    // TCP port; 0 in unix mode

	mu   sync.Mutex      // guards proc and done
	proc *exec.Cmd       // the running server; nil when stopped
	done chan struct{}   // closed when proc has exited
	log  *syncbuf.Buffer // proc's output, shown when it fails to start
}

// Start runs a redis-server listening only on a unix socket in a temporary directory, waits
// until it answers PING and kills it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := newServer(t)
	s.sock = filepath.Join(s.dir, "redis.sock")
	s.start()
	return s
}

// StartTCP is Start on a free 127.0.0.1 port instead of a unix socket, for tests that need a
// TCP address (for example another process).
func StartTCP(t testing.TB) *Server {
	t.Helper()
	s := newServer(t)
	s.port = freePort(t)
	s.start()
	return s
}

func newServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; .ci/run installs it")
		}
		t.Skip("redis-server not found on PATH (set CI=1 to make this a failure)")
	}
	dir := t.TempDir()
	if len(dir)+len("/redis.sock") > maxSocketPath {
		// A long TMPDIR/GOTMPDIR would overflow the unix socket path limit.
		if dir, err = os.MkdirTemp("/tmp", "testredis"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	s := &Server{t: t, bin: bin, dir: dir}
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's address: the socket path in unix mode, 127.0.0.1:port in TCP mode.
func (s *Server) Addr() string {
	if s.sock != "" {
		return s.sock
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Network is "unix" or "tcp", as redis.Options.Network takes it.
func (s *Server) Network() string {
	if s.sock != "" {
		return "unix"
	}
	return "tcp"
}

// URL is the address as config's store.redis.url takes it: unix:///path or
// redis://127.0.0.1:port/0.
func (s *Server) URL() string {
	if s.sock != "" {
		return "unix://" + s.sock
	}
	return "redis://" + s.Addr() + "/0"
}

// Client returns a new client of the server, closed when the test ends. Each call makes a
// separate client with its own connection pool, as separate replicas would have.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{
		Network:               s.Network(),
		Addr:                  s.Addr(),
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
	})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop kills the server with SIGKILL, as a crash would, and waits until the process is gone.
// Clients get connection errors until Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Process.Kill()
	<-s.done
	s.proc = nil
	if s.sock != "" {
		_ = os.Remove(s.sock)
	}
}

// Restart stops the server if it runs and starts an empty one on the same address.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	args := []string{
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	}
	if s.sock != "" {
		args = append(args, "--port", "0", "--unixsocket", s.sock, "--unixsocketperm", "700")
	} else {
		args = append(args, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1")
	}
	s.log = new(syncbuf.Buffer)
	proc := exec.Command(s.bin, args...)
	proc.Stdout, proc.Stderr = s.log, s.log
	if err := proc.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = proc.Wait(); close(done) }()
	if err := s.waitReady(done); err != nil {
		_ = proc.Process.Kill()
		<-done
		s.t.Fatalf("redis-server did not become ready: %v\n%s", err, s.log.String())
	}
	s.proc, s.done = proc, done
}

// waitReady pings until the server answers, it exits, or 10s pass.
func (s *Server) waitReady(exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{
		Network:     s.Network(),
		Addr:        s.Addr(),
		DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond,
		MaxRetries:  -1,
	})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("redis-server exited")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING at %s: %w", s.Addr(), err)
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
