// Package config defines claude-lb's declarative configuration: the version 1 schema of
// claude-lb.yaml, its defaults, loading with ${VAR} and *_file secrets, validation that reports
// every problem with its file:line:col, and the watcher that tells when the file changed.
// It knows nothing of HTTP or Redis.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"
)

// Config is one parsed, defaulted and validated claude-lb.yaml. It is immutable once Load
// returns it: reloads build a new one.
type Config struct {
	// Version of the schema; only 1 exists.
	Version int `koanf:"version"`
	// Listen is the address the gateway serves on. PORT, when set, replaces the port.
	Listen string `koanf:"listen"`
	// AllowUnauthenticated permits a non-loopback Listen without any clients configured.
	AllowUnauthenticated bool `koanf:"allow_unauthenticated"`
	// ExposeAccount adds x-claude-lb-account to responses; false hides the account name.
	ExposeAccount bool `koanf:"expose_account"`
	// MaxBody caps request bodies; larger ones get 413.
	MaxBody ByteSize `koanf:"max_body"`
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight requests and streams.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// Watch reloads the file when it changes on disk (SIGHUP always reloads).
	Watch bool `koanf:"watch"`
	// Replica names this process in history and metrics; defaults to the host name.
	Replica string `koanf:"replica"`

	// Upstream is the Anthropic API the gateway forwards to.
	Upstream Upstream `koanf:"upstream"`
	// Store says where usage, cooldowns and history live (memory unless store.redis is set).
	Store Store `koanf:"store"`
	// Routing tunes account selection and failover.
	Routing Routing `koanf:"routing"`
	// Plans maps plan names to descriptions. The file's entries are added to the built-in
	// console and max (which it may redescribe).
	Plans map[string]string `koanf:"plans"`
	// Models is the model matrix: the first rule whose globs match the model id says which
	// plans may serve it. A file without models gets DefaultModels(); models: [] has no rules.
	Models []ModelRule `koanf:"models"`
	// Accounts are the pooled Claude accounts, in the order ties are broken.
	Accounts []Account `koanf:"accounts"`
	// Clients may call the gateway; with none, anyone who can reach listen may.
	Clients []Client `koanf:"clients"`
	// Admin guards the admin API and the dashboard.
	Admin Admin `koanf:"admin"`
	// OAuth configures refreshing oauth_file tokens.
	OAuth OAuth `koanf:"oauth"`
	// History bounds the request history.
	History History `koanf:"history"`
	// Log configures log output.
	Log Log `koanf:"log"`

	// Path is the file this config was loaded from ("" for built-in defaults).
	Path string `koanf:"-"`
	// Hash is the SHA-256 (hex) of the file's bytes, to tell reloads apart.
	Hash string `koanf:"-"`
	// Warnings are non-fatal findings (for example literal secrets), as file:line:col: message.
	Warnings []string `koanf:"-"`

	// unresolved maps key paths to the unset variable their value needs; only a config loaded
	// without Options.CheckEnv has any. Validate treats those values as given.
	unresolved map[string]string
}

// Upstream is where requests are forwarded.
type Upstream struct {
	// URL of the Anthropic API (or a compatible endpoint).
	URL string `koanf:"url"`
	// ConnectTimeout bounds the TCP+TLS connect of one attempt.
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// HeaderTimeout bounds the time to the first response byte of one attempt.
	HeaderTimeout time.Duration `koanf:"header_timeout"`
	// Timeout bounds a whole request, all attempts included, until the first response byte
	// reaches the client; streams then run as long as the upstream sends.
	Timeout time.Duration `koanf:"timeout"`
	// HTTP2 sends upstream requests through net/http's transport, which speaks HTTP/2 when
	// the upstream offers it. Off, the gateway's own HTTP/1.1 transport (lower latency and
	// memory per stream) serves, unless a proxy from the environment applies.
	HTTP2 bool `koanf:"http2"`
}

// Store selects where usage counters, cooldowns and history live.
type Store struct {
	// Redis, when set, shares state between replicas. Omitted: in-memory, single replica.
	Redis *Redis `koanf:"redis"`
	// EncryptionKey encrypts OAuth tokens kept in Redis.
	EncryptionKey Secret `koanf:"encryption_key"`
	// EncryptionKeyFile holds the encryption key; relative to the config's folder.
	EncryptionKeyFile string `koanf:"encryption_key_file"`
}

// Redis connection settings. Either URL or Addrs.
type Redis struct {
	// URL of a single server: redis://[:password@]host:port/db, rediss://, or unix:///path.
	URL string `koanf:"url"`
	// Addrs of a Cluster's or Sentinels' nodes (with MasterName for Sentinel).
	Addrs []string `koanf:"addrs"`
	// MasterName selects Sentinel: Addrs are then the Sentinels.
	MasterName string `koanf:"master_name"`
	// Username for Redis ACLs.
	Username string `koanf:"username"`
	// Password overrides any password in URL. Load moves a password written in URL here, so
	// that URL never holds a secret.
	Password Secret `koanf:"password"`
	// PasswordFile holds the password; relative to the config's folder.
	PasswordFile string `koanf:"password_file"`
	// DB selects the database (not with Cluster).
	DB int `koanf:"db"`
	// Prefix of every key; keys carry it as one hash tag, {prefix}:…, for Cluster.
	// Default claude-lb.
	Prefix string `koanf:"prefix"`
	// Timeout per Redis call; past it the gateway serves from local state (degraded).
	// Default DefaultRedisTimeout (500ms).
	Timeout time.Duration `koanf:"timeout"`
}

// Format prints the settings with the password redacted. Without it, a verb that does not
// suit a pointer (fmt.Sprintf("%s", cfg)) would print the Redis fields without their methods.
func (r *Redis) Format(f fmt.State, verb rune) {
	if r == nil {
		io.WriteString(f, "<nil>")
		return
	}
	type redis Redis // the fields, without this method
	c := redis(*r)
	c.Password = Secret(c.Password.String())
	fmt.Fprintf(f, fmt.FormatString(f, verb), &c)
}

// Routing tunes how accounts are chosen and failed over.
type Routing struct {
	// Strategy: least-used | round-robin | priority.
	Strategy string `koanf:"strategy"`
	// Affinity: session | none. Keeps a conversation on the account that served it.
	Affinity string `koanf:"affinity"`
	// AffinityTTL is how long an idle conversation stays bound to its account.
	AffinityTTL time.Duration `koanf:"affinity_ttl"`
	// SoftLimit is the upstream-reported utilization (0..1) at which an account goes to the back.
	SoftLimit float64 `koanf:"soft_limit"`
	// MaxAttempts is how many accounts one request may try.
	MaxAttempts int `koanf:"max_attempts"`
	// Cooldown applies when a 429 carries no reset time.
	Cooldown time.Duration `koanf:"cooldown"`
	// MaxCooldown caps any cooldown taken from response headers.
	MaxCooldown time.Duration `koanf:"max_cooldown"`
	// Holdback is how long the opening frames of a stream are held so a failing stream can
	// still be failed over invisibly.
	Holdback time.Duration `koanf:"holdback"`
	// UnknownModels: all | reject, for models that match no rule.
	UnknownModels string `koanf:"unknown_models"`
}

// ModelRule maps model id globs to the plans that may serve them. The first match wins.
type ModelRule struct {
	// Match lists globs (path.Match syntax: * ? [a-z]) on the model id.
	Match []string `koanf:"match"`
	// Plans may serve the models this rule matches.
	Plans []string `koanf:"plans"`
}

// Account is one pooled Claude account. Exactly one credential source is set.
type Account struct {
	// Name identifies the account in responses, logs, metrics and the store (letters, digits,
	// '.', '_', '-'). Usage counters are keyed by it, so they survive reloads.
	Name string `koanf:"name"`
	// Plan names an entry of plans; default console.
	Plan string `koanf:"plan"`
	// APIKey is sent as x-api-key.
	APIKey Secret `koanf:"api_key"`
	// APIKeyFile holds the API key (trailing newline trimmed); relative to the config's folder.
	APIKeyFile string `koanf:"api_key_file"`
	// OAuthToken is sent as Authorization: Bearer with the oauth beta header.
	OAuthToken Secret `koanf:"oauth_token"`
	// OAuthTokenFile holds a long-lived OAuth token; relative to the config's folder.
	OAuthTokenFile string `koanf:"oauth_token_file"`
	// OAuthFile is a refreshable token pair written by `claude-lb login` (JSON, managed by the
	// oauth package; Load only checks that it can be read or created). Relative paths are
	// resolved against the config's folder.
	OAuthFile string `koanf:"oauth_file"`
	// Models optionally narrows what this account may serve (globs).
	Models []string `koanf:"models"`
	// Weight scales least-used counts: an account of weight 2 takes twice the requests.
	// Default 1; it must be at least 1.
	Weight int `koanf:"weight"`
	// Priority orders accounts under the priority strategy, lowest first.
	Priority int `koanf:"priority"`
	// Disabled accounts get no requests.
	Disabled bool `koanf:"disabled"`
}

// Client is a caller allowed to use the gateway.
type Client struct {
	// Name identifies the client in history and logs.
	Name string `koanf:"name"`
	// KeySHA256 is the hex SHA-256 of the client's key (64 hex digits; Load lowercases it).
	KeySHA256 string `koanf:"key_sha256"`
}

// Admin guards the admin API and dashboard.
type Admin struct {
	// Key is required by the admin API and the dashboard when set; without it they answer
	// loopback callers only.
	Key Secret `koanf:"key"`
	// KeyFile holds the admin key; relative to the config's folder.
	KeyFile string `koanf:"key_file"`
}

// OAuth configures refreshable Max-plan tokens (oauth_file accounts).
type OAuth struct {
	// TokenURL is where authorization codes are exchanged and tokens refreshed.
	TokenURL string `koanf:"token_url"`
	// AuthorizeURL starts the PKCE login of `claude-lb login`.
	AuthorizeURL string `koanf:"authorize_url"`
	// RedirectURI is the callback registered for ClientID; it shows the code to paste.
	RedirectURI string `koanf:"redirect_uri"`
	// ClientID is the OAuth client the tokens belong to.
	ClientID string `koanf:"client_id"`
	// Scopes requested at login.
	Scopes []string `koanf:"scopes"`
	// RefreshBefore refreshes an access token when it has less than this left.
	RefreshBefore time.Duration `koanf:"refresh_before"`
}

// History bounds the request history.
type History struct {
	// Size is how many requests the history keeps (1 to 1000000).
	Size int `koanf:"size"`
}

// Log configures the process's log output.
type Log struct {
	// Level: debug | info | warn | error.
	Level string `koanf:"level"`
	// Format: text | json.
	Format string `koanf:"format"`
}

// Credential kinds of an account.
const (
	CredAPIKey     = "api_key"
	CredOAuthToken = "oauth_token"
	CredOAuthFile  = "oauth_file"
)

// CredentialKind says which credential source the account uses.
func (a *Account) CredentialKind() string {
	switch {
	case a.OAuthFile != "":
		return CredOAuthFile
	case a.OAuthToken != "" || a.OAuthTokenFile != "":
		return CredOAuthToken
	default:
		return CredAPIKey
	}
}

// Default returns the configuration every file starts from.
func Default() *Config {
	return &Config{
		Version:         1,
		Listen:          "127.0.0.1:8080",
		ExposeAccount:   true,
		MaxBody:         32 << 20,
		ShutdownTimeout: 30 * time.Second,
		Watch:           true,
		Upstream: Upstream{
			URL:            "https://api.anthropic.com",
			ConnectTimeout: 10 * time.Second,
			HeaderTimeout:  5 * time.Minute,
			Timeout:        10 * time.Minute,
		},
		Routing: Routing{
			Strategy:      "least-used",
			Affinity:      "session",
			AffinityTTL:   time.Hour,
			SoftLimit:     0.9,
			MaxAttempts:   3,
			Cooldown:      60 * time.Second,
			MaxCooldown:   30 * time.Minute,
			Holdback:      2 * time.Second,
			UnknownModels: "all",
		},
		Plans: map[string]string{
			"console": "Pro plan, API keys from console.anthropic.com",
			"max":     "Max plan, OAuth tokens from claude.ai",
		},
		Models: DefaultModels(),
		OAuth: OAuth{
			TokenURL:      "https://platform.claude.com/v1/oauth/token",
			AuthorizeURL:  "https://claude.ai/oauth/authorize",
			RedirectURI:   "https://platform.claude.com/oauth/code/callback",
			ClientID:      "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
			Scopes:        []string{"org:create_api_key", "user:profile", "user:inference"},
			RefreshBefore: 10 * time.Minute,
		},
		History: History{Size: 1000},
		Log:     Log{Level: "info", Format: "text"},
	}
}

// DefaultModels is the built-in model matrix: Opus on max only, Sonnet and Haiku anywhere.
func DefaultModels() []ModelRule {
	return []ModelRule{
		{Match: []string{"claude-*opus*"}, Plans: []string{"max"}},
		{Match: []string{"claude-*sonnet*", "claude-*haiku*"}, Plans: []string{"console", "max"}},
	}
}

// Secret is a credential. It never prints, logs or marshals its value.
type Secret string

// String redacts.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<secret>"
}

// LogValue redacts for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Format redacts under every verb, %d and %x included (fmt bypasses String for those).
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		io.WriteString(f, s.GoString())
	case verb == 'q':
		io.WriteString(f, strconv.Quote(s.String()))
	default:
		io.WriteString(f, s.String())
	}
}

// GoString redacts for %#v.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalJSON redacts.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText redacts (YAML and other text encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Fingerprint identifies a secret without revealing it: its last 4 characters.
func (s Secret) Fingerprint() string {
	if len(s) < 12 {
		return "…"
	}
	return "…" + string(s[len(s)-4:])
}

// Reveal returns the value, for the one place that sends it upstream.
func (s Secret) Reveal() string { return string(s) }
