package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/internal/fakeapi"
)

// concurrentStreams is how many streams TestConcurrentStreamsComplete runs at once: 2,000
// (DESIGN.md section 11), 300 under the race detector or -short, and fewer when the open-file
// limit cannot hold four descriptors per stream (client, gateway in and out, upstream).
func concurrentStreams(t *testing.T) int {
	n := 2000
	if raceEnabled || testing.Short() {
		n = 300
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if fit := (int(lim.Cur) - 256) / 4; fit < n {
			t.Logf("open-file limit %d: %d streams instead of %d", lim.Cur, fit, n)
			n = fit
		}
	}
	return n
}

// TestConcurrentStreamsComplete: thousands of streams open through the gateway at the same
// moment all complete, each byte-identical to what the upstream sent. A naive Go proxy cuts
// some of them short (golang/go#40747: the HTTP/1 server closes the request body once the
// response starts, racing the transport that still sends it); the gateway reads the body
// first, so none may be cut.
func TestConcurrentStreamsComplete(t *testing.T) {
	n := concurrentStreams(t)
	fake := fakeapi.New(t)
	fake.Record(false)
	chunks := make([]string, 12)
	for i := range chunks {
		chunks[i] = fmt.Sprintf(" chunk %02d of a streamed answer", i)
	}
	events := fakeapi.StreamEvents("claude-sonnet-5-5", chunks, 1200, len(chunks))
	release := make(chan struct{})
	// Every stream sends its opening frames and first content, then waits until all n are
	// open, so the gateway holds n streams at once; the rest follows with small gaps.
	fake.Script(func(r *fakeapi.Request) *fakeapi.Reply {
		rep := &fakeapi.Reply{Events: events, EventDelay: time.Millisecond}
		if r.Header.Get("X-Test-Hold") != "" {
			rep.Hold, rep.HoldAfter = release, 4
		}
		return rep
	})
	gw := benchGateway(t, fake.URL)
	front := httptest.NewUnstartedServer(gw)
	front.Config.ReadHeaderTimeout = 30 * time.Second
	front.Start()
	t.Cleanup(front.Close)

	// The bytes the upstream sends, read straight from it.
	body := benchBody(4<<10, true)
	want := streamFrom(t, http.DefaultClient, fake.URL, body, keyPersonal, "")
	if !bytes.HasSuffix(want, []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")) {
		t.Fatalf("the upstream's stream does not end with message_stop: %q", want[max(0, len(want)-200):])
	}
	fake.Reset()

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: n,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
	t.Cleanup(client.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	go func() {
		// All n requests reached the upstream and are held there: let them finish.
		if fake.WaitCount(ctx, n) == nil {
			close(release)
		}
	}()

	type outcome struct {
		body []byte
		err  error
	}
	results := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b, err := stream(ctx, client, front.URL, body, clientKey, "1")
			results[i] = outcome{b, err}
		})
	}
	wg.Wait()

	cut := 0
	for i, r := range results {
		switch {
		case r.err != nil:
			cut++
			if cut <= 3 {
				t.Errorf("stream %d: %v", i, r.err)
			}
		case !bytes.Equal(r.body, want):
			cut++
			if cut <= 3 {
				t.Errorf("stream %d: %d bytes differ from the upstream's %d", i, len(r.body), len(want))
			}
		}
	}
	if cut > 0 {
		t.Fatalf("%d of %d concurrent streams were cut short or altered", cut, n)
	}
	if got := fake.Count(); got != n {
		t.Fatalf("the upstream served %d streams, want %d (one attempt each)", got, n)
	}
	if c := fake.CanceledCount(); c != 0 {
		t.Fatalf("%d upstream streams were canceled", c)
	}
}

// streamFrom reads one whole stream from base (the upstream or the gateway).
func streamFrom(t *testing.T, c *http.Client, base string, body []byte, key, hold string) []byte {
	t.Helper()
	b, err := stream(t.Context(), c, base, body, key, hold)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stream sends a streamed Messages request; hold, when set, asks the fake to hold the stream
// after its first content event (X-Test-Hold, which the gateway forwards like any header).
func stream(ctx context.Context, c *http.Client, base string, body []byte, key, hold string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/messages?beta=true", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Api-Key", key)
	if hold != "" {
		req.Header.Set("X-Test-Hold", hold)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return b, fmt.Errorf("after %d bytes: %w", len(b), err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return b, nil
}
