package testredis

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *Server
		url   string
	}{
		{"unix", Start, "unix://"},
		{"tcp", StartTCP, "redis://127.0.0.1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.start(t)
			if !strings.HasPrefix(s.URL(), tc.url) {
				t.Fatalf("URL() = %q, want prefix %q", s.URL(), tc.url)
			}
			ctx := t.Context()
			c := s.Client()
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			s.Stop()
			if tc.name == "unix" {
				if _, err := os.Stat(s.Addr()); !os.IsNotExist(err) {
					t.Errorf("socket still there after Stop: %v", err)
				}
			}
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err := c.Ping(short).Err()
			cancel()
			if err == nil {
				t.Fatal("PING succeeded after Stop")
			}
			s.Restart()
			got, err := s.Client().Exists(ctx, "k").Result()
			if err != nil {
				t.Fatalf("EXISTS after Restart: %v", err)
			}
			if got != 0 {
				t.Errorf("restarted server kept key k: it must start empty")
			}
			// The old client reconnects to the restarted server at the same address.
			deadline := time.Now().Add(5 * time.Second)
			for c.Ping(ctx).Err() != nil {
				if time.Now().After(deadline) {
					t.Fatal("old client never reconnected after Restart")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestPersistenceOff(t *testing.T) {
	s := Start(t)
	cfg, err := s.Client().ConfigGet(t.Context(), "save").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["save"] != "" {
		t.Errorf("save = %q, want \"\" (no RDB snapshots)", cfg["save"])
	}
}
