package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
)

// chunkReader returns the data in pieces of the given sizes (cycling).
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := c.sizes[c.i%len(c.sizes)]
	c.i++
	n = max(1, min(n, len(p), len(c.data)))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func testAttempt(t testing.TB, w http.ResponseWriter) *attempt {
	cfg := config.Default()
	cfg.Accounts = pool()
	g, err := New(cfg, Options{Store: nil})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
	return &attempt{g: g, s: g.Snapshot(), w: w, r: r, current: -1, start: time.Now()}
}

// relayBytes runs data through holdback and finish as the gateway does, and returns what the
// client received.
func relayBytes(t testing.TB, data []byte, sizes []int) ([]byte, usage, string) {
	rec := httptest.NewRecorder()
	at := testAttempt(t, rec)
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(&chunkReader{data: data, sizes: sizes})}
	rl := newRelay(at, resp)
	failed := rl.holdback(time.Minute)
	if failed != "" {
		return nil, usage{}, failed
	}
	u, _ := rl.finish()
	return rec.Body.Bytes(), u, ""
}

func streamBytes(eol string) []byte {
	var b strings.Builder
	for _, ev := range fakeapi.StreamEventsWithUsage("claude-opus-5-5", []string{"Hel", "lo ", strings.Repeat("x", 70<<10)}, fakeapi.DefaultUsage()) {
		b.WriteString("event: " + ev.Name + eol + "data: " + ev.Data + eol + eol)
	}
	return []byte(b.String())
}

func TestRelayChunkingsAndLineEndings(t *testing.T) {
	want := fakeapi.DefaultUsage()
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		data := streamBytes(eol)
		for _, sizes := range [][]int{{1}, {2}, {3, 7}, {64}, {1000}, {4096}, {1, 4096, 13}, {1 << 20}} {
			got, u, failed := relayBytes(t, data, sizes)
			if failed != "" {
				t.Fatalf("eol %q sizes %v: holdback failed: %s", eol, sizes, failed)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("eol %q sizes %v: relayed bytes differ (%d vs %d)", eol, sizes, len(got), len(data))
			}
			if u.in != int64(want.InputTokens) || u.out != int64(want.OutputTokens) ||
				u.cacheRead != int64(want.CacheReadInputTokens) || u.cacheWrite != int64(want.CacheCreationInputTokens) {
				t.Fatalf("eol %q sizes %v: usage %+v, want %+v", eol, sizes, u, want)
			}
		}
	}
}

func TestRelayEndsBrokenStreamWithError(t *testing.T) {
	data := streamBytes("\n")
	cut := bytes.Index(data, []byte("event: content_block_stop"))
	got, _, failed := relayBytes(t, data[:cut+10], []int{100})
	if failed != "" {
		t.Fatal(failed)
	}
	if !bytes.HasPrefix(got, data[:cut+10]) {
		t.Fatal("relayed prefix differs")
	}
	tail := string(got[cut+10:])
	if !strings.HasPrefix(tail, "\n\nevent: error\ndata: ") || !strings.Contains(tail, `"api_error"`) || !strings.HasSuffix(tail, "\n\n") {
		t.Fatalf("tail %q", tail)
	}
}

func TestHoldbackDetectsEarlyFailure(t *testing.T) {
	start := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n"
	tests := map[string]struct {
		data string
		want string
	}{
		"overloaded event": {start + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", "overloaded_error"},
		"cut":              {start, "network"},
		"content":          {start + "event: content_block_start\ndata: {}\n\n", ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, failed := relayBytes(t, []byte(tt.data), []int{7})
			if failed != tt.want {
				t.Fatalf("holdback = %q, want %q", failed, tt.want)
			}
		})
	}
}

func TestTailUsage(t *testing.T) {
	body := fakeapi.MessageWithUsage("claude-opus-5-5", strings.Repeat("long answer with \"usage\": {} inside ", 500), fakeapi.DefaultUsage())
	rec := httptest.NewRecorder()
	var tail tailBuf
	msg := copyPlain(rec, &chunkReader{data: body, sizes: []int{333}}, &tail)
	u := tail.usage()
	want := fakeapi.DefaultUsage()
	if msg != "" || !bytes.Equal(rec.Body.Bytes(), body) || u.in != int64(want.InputTokens) || u.out != int64(want.OutputTokens) || u.cacheRead != int64(want.CacheReadInputTokens) {
		t.Fatalf("usage %+v, msg %q", u, msg)
	}
}

// FuzzSSERelay: any bytes, any chunking: what the client receives starts with exactly the
// bytes the upstream sent (the relay may only append its own error event), and nothing panics.
func FuzzSSERelay(f *testing.F) {
	f.Add(streamBytes("\n")[:2000], uint8(1), uint8(7))
	f.Add(streamBytes("\r\n")[:3000], uint8(64), uint8(3))
	f.Add([]byte("event: content_block_start\r\rdata: x\r\n\n"), uint8(2), uint8(2))
	f.Add([]byte("data: {\"type\":\"message_start\"}\n\nevent: message_stop\n\n"), uint8(5), uint8(1))
	// One gateway for every run: building one per run makes fuzzing crawl.
	base := testAttempt(f, nil)
	f.Fuzz(func(t *testing.T, data []byte, a, b uint8) {
		if len(data) > 16<<10 {
			// Large inputs in 1-byte reads make one run slow; short ones exercise it all.
			data = data[:16<<10]
		}
		sizes := []int{int(a) + 1, int(b)*16 + 1}
		rec := httptest.NewRecorder()
		at := &attempt{g: base.g, s: base.s, w: rec, r: base.r, current: -1, start: time.Now()}
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(&chunkReader{data: data, sizes: sizes})}
		rl := newRelay(at, resp)
		if rl.holdback(time.Minute) != "" {
			// A failed holdback sends nothing: the gateway fails over.
			if rec.Body.Len() != 0 {
				t.Fatalf("failed holdback wrote %d bytes", rec.Body.Len())
			}
			return
		}
		rl.finish()
		if !bytes.HasPrefix(rec.Body.Bytes(), data) {
			t.Fatalf("client got %q, upstream sent %q", rec.Body.Bytes(), data)
		}
	})
}

func BenchmarkRelay(b *testing.B) {
	data := streamBytes("\n")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		relayBytes(b, data, []int{4096})
	}
}
