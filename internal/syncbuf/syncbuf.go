// Package syncbuf is a goroutine-safe text buffer, for tests that capture what many
// goroutines (or a child process's pipes) write: logs to grep for secrets, a server's output
// to show when it fails to start.
package syncbuf

import (
	"strings"
	"sync"
)

// Buffer collects writes; the zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder // guarded by mu
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
