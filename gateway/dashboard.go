package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/claude-lb/claude-lb/gateway/web"
)

// dashboardCSP allows the page's own script, style sheet and API calls, and nothing else: no
// inline script, no other origin, no framing.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type dashboardFile struct {
	body  []byte
	ctype string
	etag  string
}

// DashboardHandler serves the dashboard, to be mounted at /dashboard and /dashboard/. The page
// reads the admin API at ../api/ relative to itself, so it also works behind a path prefix.
// It holds no data itself; the admin API's rules decide what it shows.
func DashboardHandler() http.Handler {
	files := map[string]dashboardFile{}
	types := map[string]string{
		".html": "text/html; charset=utf-8",
		".js":   "text/javascript; charset=utf-8",
		".css":  "text/css; charset=utf-8",
	}
	_ = fs.WalkDir(web.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(web.FS, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[p] = dashboardFile{body: body, ctype: types[path.Ext(p)], etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			adminError(w, http.StatusMethodNotAllowed, "invalid_request_error", "the dashboard only answers GET")
			return
		}
		p := r.URL.Path
		i := strings.Index(p, "/dashboard")
		if i < 0 {
			adminError(w, http.StatusNotFound, "not_found_error", "no such page")
			return
		}
		rest := p[i+len("/dashboard"):]
		if rest == "" {
			// Relative, so the page's relative links keep working behind a path prefix.
			w.Header().Set("Location", "dashboard/")
			w.WriteHeader(http.StatusFound)
			return
		}
		name := strings.TrimPrefix(rest, "/")
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok || f.ctype == "" {
			adminError(w, http.StatusNotFound, "not_found_error", "no dashboard file "+name)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("ETag", f.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", dashboardCSP)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	})
}
