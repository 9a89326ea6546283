package gateway

import (
	"net/http"

	"github.com/claude-lb/claude-lb/config"
)

// admin mounts the admin API (admin.go) on the live snapshot.
func (g *Gateway) admin() http.Handler {
	state := func(name string) string {
		if g.opts.Tokens == nil {
			return "no token source"
		}
		return g.opts.Tokens.State(name)
	}
	return NewAdmin(AdminOptions{
		Store:    g.opts.AdminStore,
		Accounts: func() []AccountInfo { return g.Snapshot().AccountInfos(state) },
		Config: func() ConfigInfo {
			s := g.Snapshot()
			return ConfigInfo{Path: s.Config.Path, Hash: s.Config.Hash, LoadedAt: s.LoadedAt, Accounts: len(s.Accounts)}
		},
		Key:      func() config.Secret { return g.Snapshot().Config.Admin.Key },
		Reload:   g.opts.Reload,
		Replica:  g.opts.Replica,
		Degraded: g.opts.Degraded,
		Logger:   g.log,
	})
}

// dashboard serves the page under the same rule as the admin API: with no admin key, only
// loopback clients; with one, the page itself asks for the key before reading the API.
func (g *Gateway) dashboard() http.Handler {
	h := DashboardHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.Snapshot().Config.Admin.Key == "" && !loopbackClient(r) {
			writeError(w, http.StatusForbidden, "permission_error", "the dashboard is served to loopback clients only until admin.key is set in claude-lb.yaml")
			return
		}
		h.ServeHTTP(w, r)
	})
}
