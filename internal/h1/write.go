package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
)

// outBody is what goes out after the head: n bytes of r, or r chunked when n < 0.
type outBody struct {
	r         io.ReadCloser
	n         int64
	closeConn bool // the request asks to close the connection after this exchange
}

func (b outBody) close() {
	if b.r != nil {
		b.r.Close()
	}
}

// outgoing settles how req's body is sent. A Content-Length of 0 with a body means "unknown"
// to net/http's clients: one byte is read to tell an empty body (sent as none, as net/http
// does, so a GET does not go out chunked) from one of unknown length (sent chunked).
func outgoing(req *http.Request) (outBody, error) {
	ob := outBody{closeConn: req.Close || hasToken(req.Header["Connection"], "close")}
	if req.Body == nil || req.Body == http.NoBody {
		if req.ContentLength > 0 {
			return ob, fmt.Errorf("h1: the request declares a Content-Length of %d without a body", req.ContentLength)
		}
		return ob, nil
	}
	switch {
	case req.ContentLength > 0:
		ob.r, ob.n = req.Body, req.ContentLength
	case req.ContentLength < 0:
		ob.r, ob.n = req.Body, -1
	default:
		var one [1]byte
		n, err := io.ReadFull(req.Body, one[:])
		if n == 0 {
			req.Body.Close()
			if err != nil && err != io.EOF {
				return ob, fmt.Errorf("h1: reading the request body: %w", err)
			}
			return ob, nil
		}
		ob.r = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(one[:n]), req.Body), req.Body}
		ob.n = -1
	}
	return ob, nil
}

// writeRequest writes req's head and body in one buffered write where they fit; a large body
// that can write itself (the gateway's replayed bodies) goes out in one more write, with no
// copy buffer. It never writes more body than the head declares.
func writeRequest(w io.Writer, req *http.Request, ob outBody) (err error) {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		writers.Put(bw)
	}()
	defer ob.close()

	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case ob.n < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case ob.n > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), ob.n, 10))
		bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if ob.closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	switch {
	case ob.n < 0:
		cw := httputil.NewChunkedWriter(bw)
		if _, err = io.Copy(cw, ob.r); err == nil {
			err = cw.Close()
		}
		if err == nil {
			_, err = bw.WriteString("\r\n")
		}
	case ob.n > 0:
		err = copyBody(bw, ob.r, ob.n)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

var errBodyTooLong = errors.New("h1: the request body is longer than its Content-Length")

// copyBody writes exactly n bytes of r to bw. Bytes past n are refused before they reach the
// connection, and a body that ends early leaves the request unfinished: either way the
// upstream never sees a complete request that is not the one declared.
func copyBody(bw *bufio.Writer, r io.Reader, n int64) error {
	lw := &limitWriter{w: bw, left: n}
	// A body that writes itself may do so in one call past the buffer, straight to the
	// connection: only one that knows it holds exactly n bytes (the gateway's replayed
	// bodies, bytes.Reader) is trusted to. Any other could complete the declared request in
	// one write and then try to add to it.
	if wt, ok := r.(io.WriterTo); ok && lenOf(r) == n {
		if _, err := wt.WriteTo(lw); err != nil {
			return err
		}
	} else {
		// Read straight into the writer's free space: no copy buffer of our own.
		for lw.left > 0 {
			if bw.Available() == 0 {
				if err := bw.Flush(); err != nil {
					return err
				}
			}
			p := bw.AvailableBuffer()[:min(int64(bw.Available()), lw.left)]
			m, err := r.Read(p)
			bw.Write(p[:m])
			lw.left -= int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		// The declared bytes are written but the last of them not yet flushed: a body with
		// more to give is refused while the request is still incomplete on the wire.
		if lw.left == 0 {
			var one [1]byte
			if m, _ := r.Read(one[:]); m > 0 {
				return errBodyTooLong
			}
		}
	}
	if lw.left != 0 {
		return fmt.Errorf("h1: the request body had %d bytes, not its Content-Length %d", n-lw.left, n)
	}
	return nil
}

func lenOf(r io.Reader) int64 {
	if l, ok := r.(interface{ Len() int }); ok {
		return int64(l.Len())
	}
	return -1
}

// limitWriter passes writes through while they fit the declared length, and refuses whole any
// write that would pass it.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, errBodyTooLong
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// checkRequest refuses what would split the request or smuggle another into it: the method,
// the Host and every header name and value are checked, since some of them (credentials
// from the config) passed no parser on their way here. Errors never repeat a value.
func checkRequest(req *http.Request) error {
	if !validToken(req.Method) {
		return errors.New("h1: invalid method")
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c == 0x7f {
			return errors.New("h1: invalid Host")
		}
	}
	for k, vs := range req.Header {
		if !validToken(k) {
			return fmt.Errorf("h1: invalid header name %q", k)
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
					return fmt.Errorf("h1: invalid value for header %s", k)
				}
			}
		}
	}
	return nil
}

// validToken is RFC 9110's token: visible ASCII without separators.
func validToken(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func hasToken(vals []string, token string) bool {
	for _, v := range vals {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
