package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/internal/testredis"
	"github.com/claude-lb/claude-lb/oauth"
	"github.com/claude-lb/claude-lb/store/memory"
)

// rotatingIssuer is a token endpoint whose refresh tokens rotate on every use and die when
// used twice (invalid_grant), and which tells the fake API which access token is current.
type rotatingIssuer struct {
	api       *fakeapi.Server
	mu        sync.Mutex
	n         int
	refresh   string
	refreshes atomic.Int32
}

func (f *rotatingIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.refreshes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if body["grant_type"] != "refresh_token" || body["refresh_token"] != f.refresh {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"refresh token already used"}`))
		return
	}
	f.n++
	access := "sk-ant-oat01-access-" + strconv.Itoa(f.n) + "-0000000000000000"
	f.refresh = "sk-ant-ort01-refresh-" + strconv.Itoa(f.n)
	f.api.Accept(access) // only the newest access token works upstream
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": access, "refresh_token": f.refresh, "expires_in": 3600, "token_type": "Bearer"})
}

// TestOAuthRefreshOnceAcrossReplicas: 50 concurrent requests through three replicas on one
// Redis, for a Max account whose access token has expired: exactly one refresh reaches the
// token endpoint, every request succeeds with the new token, and the account stays alive.
func TestOAuthRefreshOnceAcrossReplicas(t *testing.T) {
	rs := testredis.Start(t)
	api := fakeapi.New(t)
	api.Accept("nothing-valid-yet")
	iss := &rotatingIssuer{api: api, refresh: "sk-ant-ort01-refresh-0"}
	tokenSrv := httptest.NewServer(iss)
	t.Cleanup(tokenSrv.Close)

	file := filepath.Join(t.TempDir(), "team.oauth.json")
	if err := oauth.WriteFile(file, oauth.Token{AccessToken: "sk-ant-oat01-access-0-expired", RefreshToken: "sk-ant-ort01-refresh-0", ExpiresAt: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Upstream.URL = api.URL
	cfg.OAuth.TokenURL = tokenSrv.URL
	cfg.Accounts = []config.Account{{Name: "team", Plan: "max", OAuthFile: file}}

	var servers []*httptest.Server
	for i := range 3 {
		client := rs.Client()
		mgr := oauth.NewManager(oauth.ManagerOptions{
			Config: func() config.OAuth { return cfg.OAuth },
			Store:  oauth.NewRedisTokenStore(client, "t", nil),
			Logger: slog.New(slog.DiscardHandler),
		})
		mgr.SetAccounts(t.Context(), []oauth.FileAccount{{Name: "team", File: file}})
		st := memory.New(memory.Options{})
		gw, err := New(cfg, Options{Store: st, AdminStore: st, Tokens: mgr, Replica: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(gw)
		t.Cleanup(srv.Close)
		servers = append(servers, srv)
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			if code, _ := send(t, servers[i%3].URL, "claude-opus-5-5"); code != 200 {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || iss.refreshes.Load() != 1 {
		t.Fatalf("%d requests failed; %d refreshes reached the token endpoint, want exactly 1", failed.Load(), iss.refreshes.Load())
	}
	// The rotated pair was saved: the file holds the new refresh token, so the account lives on.
	tok, err := oauth.ReadFile(file)
	if err != nil || tok.RefreshToken != "sk-ant-ort01-refresh-1" {
		t.Fatalf("token file after refresh: %v (refresh token ends %q)", err, oauth.Fingerprint(tok.RefreshToken))
	}
	// Every replica goes on serving with the rotated token, without another refresh.
	for _, srv := range servers {
		if code, _ := send(t, srv.URL, "claude-opus-5-5"); code != 200 {
			t.Fatalf("after the refresh: %d", code)
		}
	}
	if n := iss.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
}
