package routing

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Store holds the runtime state routing depends on: usage counters, cooldowns, affinity
// bindings and history. It is keyed by account name, so it outlives config reloads. The memory
// store serves one replica; the Redis store shares one view between replicas. Both pass the
// contract suite in store/storetest.
type Store interface {
	// Pick chooses one of req.Candidates and reserves it, as one atomic step: it skips
	// accounts under a hard mark (cooldown, invalid credential) for the request's scopes,
	// honours the session binding while its account is available, puts soft-marked accounts
	// last, applies the strategy, increments the winner's request count and last-used time,
	// and (re)binds the session. With no available candidate it returns a Pick with Account
	// "" and RetryAt/Reason of the mark that frees first.
	Pick(ctx context.Context, req PickRequest) (Pick, error)
	// Mark sets (or, with Until in the past, clears) a mark on an account.
	Mark(ctx context.Context, m Mark) error
	// Record adds a finished request's usage to the counters and appends it to the history.
	Record(ctx context.Context, u Usage) error
	// Bind binds a session key to an account for ttl, as a pick with affinity would. The
	// gateway binds resources that live in one account (a message batch, a file) to the
	// account that created them, so later requests for them reach it.
	Bind(ctx context.Context, session, account string, ttl time.Duration) error
}

// AdminStore is what the admin API and CLI read and reset.
type AdminStore interface {
	// Stats returns every known account's counters and live marks, and per-model counts.
	Stats(ctx context.Context) (Stats, error)
	// History returns the newest entries first, filtered.
	History(ctx context.Context, q HistoryQuery) ([]Usage, error)
	ResetStats(ctx context.Context) error
	ClearHistory(ctx context.Context) error
}

// PickRequest is one selection.
type PickRequest struct {
	// Candidates are the accounts allowed for the model, in config order, minus those already
	// tried by this request.
	Candidates []Candidate
	// Strategy is least-used, round-robin or priority.
	Strategy Strategy
	// Scopes are the mark scopes that block this request besides the whole-account scope "":
	// the model family (for example "family:opus").
	Scopes []string
	// Session is the conversation key; "" means no affinity.
	Session string
	// AffinityTTL is how long the binding lives after this use.
	AffinityTTL time.Duration
}

// Candidate is an account as selection sees it.
type Candidate struct {
	Name     string
	Weight   int // >= 1
	Priority int
	// CredScope is the mark scope of this account's current credential ("cred:…4f3a"), so an
	// invalid-credential mark stops applying when a reload changes the credential.
	CredScope string
}

// Pick is the outcome of a selection.
type Pick struct {
	// Account is the chosen account, "" if none is available.
	Account string
	// Why: "affinity", "least-used", "round-robin", "priority", "only-soft" (all were near limit).
	Why string
	// RetryAt and Reason describe the earliest-expiring blocking mark when Account is "".
	RetryAt time.Time
	Reason  string
}

// Mark is a cooldown or note on an account, in a scope: "" the whole account, "family:NAME"
// a model family, "cred:FINGERPRINT" one credential.
type Mark struct {
	Account string
	Scope   string
	Until   time.Time
	Reason  string
	// Soft marks only move the account to the back (near its limit); hard marks exclude it.
	Soft bool
}

// Usage is one finished request, as counted and as kept in the history.
type Usage struct {
	Time      time.Time     `json:"time"`
	RequestID string        `json:"request_id,omitempty"`
	Replica   string        `json:"replica,omitempty"`
	Client    string        `json:"client,omitempty"`
	Method    string        `json:"method,omitempty"`
	Path      string        `json:"path,omitempty"`
	Model     string        `json:"model,omitempty"`
	Account   string        `json:"account,omitempty"`
	Attempts  int           `json:"attempts"`
	Status    int           `json:"status"`
	Stream    bool          `json:"stream,omitempty"`
	Latency   time.Duration `json:"latency_ns"`
	Error     string        `json:"error,omitempty"`
	// Tokens as reported by the upstream's usage block.
	InputTokens         int64 `json:"input_tokens,omitempty"`
	OutputTokens        int64 `json:"output_tokens,omitempty"`
	CacheReadTokens     int64 `json:"cache_read_tokens,omitempty"`
	CacheCreationTokens int64 `json:"cache_creation_tokens,omitempty"`
	// Tried lists every attempt as "account:reason" (e.g. "work:429", "team:ok").
	Tried []string `json:"tried,omitempty"`
}

// Failed reports whether a finished request counts as an error of its account. A client that
// hung up (499) is not the account's failure.
func (u *Usage) Failed() bool {
	if u.Status == 499 {
		return false
	}
	return u.Status >= 400 || u.Error != ""
}

// HistoryQuery filters the history. Zero values match everything.
type HistoryQuery struct {
	Limit   int
	Offset  int
	Model   string
	Account string
	Status  int
}

// Stats is the live state of the pool.
type Stats struct {
	Accounts map[string]AccountStats `json:"accounts"`
	Models   map[string]int64        `json:"models"`
}

// AccountStats are one account's counters and live marks.
type AccountStats struct {
	Requests            int64     `json:"requests"`
	Errors              int64     `json:"errors"`
	InputTokens         int64     `json:"input_tokens"`
	OutputTokens        int64     `json:"output_tokens"`
	CacheReadTokens     int64     `json:"cache_read_tokens"`
	CacheCreationTokens int64     `json:"cache_creation_tokens"`
	LastUsed            time.Time `json:"last_used,omitzero"`
	Marks               []Mark    `json:"marks,omitempty"`
}

// SortMarks orders marks by scope, hard before soft: the order every store reports them in.
func SortMarks(marks []Mark) {
	slices.SortFunc(marks, func(a, b Mark) int {
		if c := strings.Compare(a.Scope, b.Scope); c != 0 {
			return c
		}
		switch {
		case a.Soft == b.Soft:
			return 0
		case b.Soft:
			return -1
		}
		return 1
	})
}
