package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/routing"
)

// Snapshot is one immutable view of the config: built once per (re)load, published with an
// atomic pointer, and used by a request for all of its attempts.
type Snapshot struct {
	Config   *config.Config
	Table    *routing.Table
	Accounts []account // config order, parallel to Table.Accounts()
	Strategy routing.Strategy
	Policy   routing.PolicyConfig
	LoadedAt time.Time

	byName   map[string]int
	clients  []client
	upstream string // upstream.url without a trailing slash; request paths are appended
}

type account struct {
	routing.Account
	kind        string        // config.CredAPIKey, CredOAuthToken, CredOAuthFile
	secret      config.Secret // api key or oauth token ("" for oauth_file: the TokenSource has it)
	fingerprint string
	candidate   routing.Candidate
}

type client struct {
	name string
	hash [sha256.Size]byte
}

// NewSnapshot compiles a validated config.
func NewSnapshot(cfg *config.Config, now time.Time) (*Snapshot, error) {
	strategy, err := routing.ParseStrategy(cfg.Routing.Strategy)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{
		Config:   cfg,
		Table:    routing.NewTable(cfg),
		Strategy: strategy,
		Policy: routing.PolicyConfig{
			Cooldown: cfg.Routing.Cooldown, MaxCooldown: cfg.Routing.MaxCooldown, SoftLimit: cfg.Routing.SoftLimit,
		},
		LoadedAt: now,
		byName:   make(map[string]int, len(cfg.Accounts)),
		upstream: strings.TrimRight(cfg.Upstream.URL, "/"),
	}
	for i, ra := range s.Table.Accounts() {
		ca := cfg.Accounts[i]
		a := account{Account: ra, kind: ca.CredentialKind()}
		switch a.kind {
		case config.CredAPIKey:
			a.secret = ca.APIKey
		case config.CredOAuthToken:
			a.secret = ca.OAuthToken
		}
		a.fingerprint = a.secret.Fingerprint()
		if a.kind == config.CredOAuthFile {
			a.fingerprint = "file:" + ca.OAuthFile
		}
		// The credential scope changes with the credential, so an "invalid credential" mark
		// stops applying once a reload brings a new one.
		sum := sha256.Sum256([]byte(string(a.secret) + "\x00" + ca.OAuthFile))
		a.candidate = routing.Candidate{
			Name: ra.Name, Weight: ra.Weight, Priority: ra.Priority,
			CredScope: "cred:" + hex.EncodeToString(sum[:6]),
		}
		s.Accounts = append(s.Accounts, a)
		s.byName[ra.Name] = i
	}
	for _, c := range cfg.Clients {
		var cl client
		cl.name = c.Name
		if n, err := hex.Decode(cl.hash[:], []byte(c.KeySHA256)); err != nil || n != sha256.Size {
			return nil, fmt.Errorf("client %q: key_sha256 is not 64 hex characters", c.Name)
		}
		s.clients = append(s.clients, cl)
	}
	return s, nil
}

// AccountInfos describes the accounts for the admin API and the dashboard, without secrets.
func (s *Snapshot) AccountInfos(state func(name string) string) []AccountInfo {
	out := make([]AccountInfo, 0, len(s.Accounts))
	for _, a := range s.Accounts {
		st := "valid"
		if state != nil && a.kind == config.CredOAuthFile {
			st = state(a.Name)
		}
		out = append(out, AccountInfo{
			Name: a.Name, Plan: a.Plan, Models: s.Table.EffectiveModels(a.Account),
			OpusCapable: s.Table.OpusCapable(a.Account), Credential: a.kind,
			Fingerprint: a.fingerprint, TokenState: st, Disabled: a.Disabled,
			Weight: a.Weight, Priority: a.Priority, CredScope: a.candidate.CredScope,
		})
	}
	return out
}
