// Package redisstore is the routing store shared by every replica through Redis: usage
// counters, marks (cooldowns), session bindings and the request history.
//
// A pick is one Lua script (one round trip) that reads the candidates' counters and marks and
// the session binding, applies routing.Choose's policy against Redis's clock, reserves the
// winner and binds the session, so replicas never pile onto the same account. A record is one
// pipelined round trip.
//
// Key layout; every key carries the one hash tag {PREFIX}, so the scripts also run on Redis
// Cluster, and every key has a TTL or a cap:
//
//	{PREFIX}:acct:NAME     hash: requests errors input_tokens output_tokens cache_read_tokens
//	                       cache_creation_tokens last_used (Unix ms); TTL 30 days, renewed on use
//	{PREFIX}:marks:NAME    hash: "h:SCOPE" (hard) or "s:SCOPE" (soft) -> "UNTIL_MS|REASON";
//	                       expires with its latest mark
//	{PREFIX}:aff:SESSION   string: the account the conversation is bound to; TTL affinity_ttl
//	{PREFIX}:rr            string: round-robin position; TTL 30 days
//	{PREFIX}:accounts      set: names of accounts with counters or marks; TTL 30 days
//	{PREFIX}:models        hash: model -> requests; TTL 30 days
//	{PREFIX}:history       list: compact JSON routing.Usage, newest first, capped at HistorySize
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claude-lb/claude-lb/routing"
)

const (
	// DefaultPrefix is the key prefix when Options.Prefix is "".
	DefaultPrefix = "claude-lb"
	// DefaultHistorySize is the history length when Options.HistorySize is 0.
	DefaultHistorySize = 1000
	// DefaultTimeout bounds each call when Options.Timeout is 0.
	DefaultTimeout = time.Second
	// keepTTL is how long counters, the account set, the model counts and the history live
	// without any use.
	keepTTL = 30 * 24 * time.Hour
)

var (
	_ routing.Store      = (*Store)(nil)
	_ routing.AdminStore = (*Store)(nil)
)

// Options configure a Store.
type Options struct {
	// Prefix of every key, used as the keys' hash tag: {Prefix}:…. Replicas sharing a pool
	// share a prefix. It must not contain '{' or '}'. "" means DefaultPrefix.
	Prefix string
	// HistorySize caps the history list; 0 means DefaultHistorySize.
	HistorySize int
	// Timeout bounds each call to Redis; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Store is the Redis-backed routing.Store and routing.AdminStore. It is safe for concurrent
// use; any number of Stores (replicas) may share one Redis and prefix.
type Store struct {
	c       redis.UniversalClient
	tag     string // "{prefix}:"
	histCap int
	timeout time.Duration
	keepMs  int64
}

// New returns a store on client. The client's lifetime is the caller's.
func New(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.HistorySize <= 0 {
		opts.HistorySize = DefaultHistorySize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &Store{
		c:       client,
		tag:     "{" + opts.Prefix + "}:",
		histCap: opts.HistorySize,
		timeout: opts.Timeout,
		keepMs:  keepTTL.Milliseconds(),
	}
}

func (s *Store) acctKey(name string) string    { return s.tag + "acct:" + name }
func (s *Store) marksKey(name string) string   { return s.tag + "marks:" + name }
func (s *Store) bindKey(session string) string { return s.tag + "aff:" + session }

// Bind implements routing.Store: one SET with the binding's TTL.
func (s *Store) Bind(ctx context.Context, session, account string, ttl time.Duration) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.c.Set(ctx, s.bindKey(session), account, ttl).Err(); err != nil {
		return fmt.Errorf("redis bind: %w", err)
	}
	return nil
}
func (s *Store) key(name string) string { return s.tag + name }
func markField(scope string, soft bool) string {
	if soft {
		return "s:" + scope
	}
	return "h:" + scope
}

func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// Ping checks that Redis answers; the fallback store probes with it while degraded.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	return s.c.Ping(ctx).Err()
}

// Pick implements routing.Store in one round trip (see pickScript).
func (s *Store) Pick(ctx context.Context, req routing.PickRequest) (routing.Pick, error) {
	n := len(req.Candidates)
	keys := make([]string, 3, 3+2*n)
	keys[0], keys[1], keys[2] = s.key("rr"), s.key("accounts"), s.tag+"aff:"
	hasSession := "0"
	if req.Session != "" {
		keys[2], hasSession = s.bindKey(req.Session), "1"
	}
	args := make([]any, 0, 6+len(req.Scopes)+4*n)
	args = append(args, int(req.Strategy), n, hasSession, req.AffinityTTL.Milliseconds(), s.keepMs, len(req.Scopes))
	for _, sc := range req.Scopes {
		args = append(args, sc)
	}
	for _, c := range req.Candidates {
		keys = append(keys, s.acctKey(c.Name), s.marksKey(c.Name))
		args = append(args, c.Name, c.Weight, c.Priority, c.CredScope)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	res, err := pickScript.Run(ctx, s.c, keys, args...).Slice()
	if err != nil {
		return routing.Pick{}, fmt.Errorf("redis pick: %w", err)
	}
	return parsePick(res)
}

func parsePick(res []any) (routing.Pick, error) {
	bad := func() (routing.Pick, error) {
		return routing.Pick{}, fmt.Errorf("redis pick: unexpected reply %v", res)
	}
	if len(res) < 2 {
		return bad()
	}
	acct, _ := res[0].(string)
	why, _ := res[1].(string)
	if acct != "" {
		return routing.Pick{Account: acct, Why: why}, nil
	}
	if len(res) != 4 {
		return bad()
	}
	retry, ok := res[2].(int64)
	reason, _ := res[3].(string)
	if !ok {
		return bad()
	}
	if retry < 0 {
		return routing.Pick{}, nil
	}
	return routing.Pick{RetryAt: time.UnixMilli(retry), Reason: reason}, nil
}

// Mark implements routing.Store in one round trip. A mark is identified by account, scope and
// Soft: setting one replaces the previous mark of the same identity, and an Until not after
// Redis's clock clears it.
func (s *Store) Mark(ctx context.Context, m routing.Mark) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	err := markScript.Run(ctx, s.c,
		[]string{s.marksKey(m.Account), s.key("accounts")},
		m.Account, markField(m.Scope, m.Soft), m.Until.UnixMilli(), m.Reason, s.keepMs,
	).Err()
	if err != nil {
		return fmt.Errorf("redis mark: %w", err)
	}
	return nil
}

// Record implements routing.Store in one pipelined round trip: error and token counters and
// last-used time of the account, the model's count, and the history entry. The request itself
// was counted by Pick. A zero u.Time is set to now.
func (s *Store) Record(ctx context.Context, u routing.Usage) error {
	now := time.Now()
	if u.Time.IsZero() {
		u.Time = now
	}
	entry, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("redis record: %w", err)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	pipe := s.c.Pipeline()
	if u.Account != "" {
		k := s.acctKey(u.Account)
		if u.Failed() {
			pipe.HIncrBy(ctx, k, "errors", 1)
		}
		for _, f := range []struct {
			name string
			n    int64
		}{
			{"input_tokens", u.InputTokens},
			{"output_tokens", u.OutputTokens},
			{"cache_read_tokens", u.CacheReadTokens},
			{"cache_creation_tokens", u.CacheCreationTokens},
		} {
			if f.n != 0 {
				pipe.HIncrBy(ctx, k, f.name, f.n)
			}
		}
		pipe.HSet(ctx, k, "last_used", now.UnixMilli())
		pipe.PExpire(ctx, k, keepTTL)
		pipe.SAdd(ctx, s.key("accounts"), u.Account)
		pipe.PExpire(ctx, s.key("accounts"), keepTTL)
	}
	if u.Model != "" {
		pipe.HIncrBy(ctx, s.key("models"), u.Model, 1)
		pipe.PExpire(ctx, s.key("models"), keepTTL)
	}
	hk := s.key("history")
	pipe.LPush(ctx, hk, entry)
	pipe.LTrim(ctx, hk, 0, int64(s.histCap-1))
	pipe.PExpire(ctx, hk, keepTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis record: %w", err)
	}
	return nil
}

// Stats implements routing.AdminStore for every replica's shared state: accounts with
// counters or live marks (marks sorted by scope, hard before soft; expiry judged by the local
// clock), and per-model counts.
func (s *Store) Stats(ctx context.Context) (routing.Stats, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	names, err := s.c.SMembers(ctx, s.key("accounts")).Result()
	if err != nil {
		return routing.Stats{}, fmt.Errorf("redis stats: %w", err)
	}
	slices.Sort(names)
	pipe := s.c.Pipeline()
	counters := make([]*redis.MapStringStringCmd, len(names))
	marks := make([]*redis.MapStringStringCmd, len(names))
	for i, n := range names {
		counters[i] = pipe.HGetAll(ctx, s.acctKey(n))
		marks[i] = pipe.HGetAll(ctx, s.marksKey(n))
	}
	models := pipe.HGetAll(ctx, s.key("models"))
	if _, err := pipe.Exec(ctx); err != nil {
		return routing.Stats{}, fmt.Errorf("redis stats: %w", err)
	}
	now := time.Now().UnixMilli()
	out := routing.Stats{
		Accounts: make(map[string]routing.AccountStats, len(names)),
		Models:   make(map[string]int64),
	}
	for i, name := range names {
		c := counters[i].Val()
		as := routing.AccountStats{
			Requests:            atoi(c["requests"]),
			Errors:              atoi(c["errors"]),
			InputTokens:         atoi(c["input_tokens"]),
			OutputTokens:        atoi(c["output_tokens"]),
			CacheReadTokens:     atoi(c["cache_read_tokens"]),
			CacheCreationTokens: atoi(c["cache_creation_tokens"]),
		}
		if ms := atoi(c["last_used"]); ms != 0 {
			as.LastUsed = time.UnixMilli(ms)
		}
		for field, v := range marks[i].Val() {
			m, ok := parseMark(name, field, v)
			if ok && m.Until.UnixMilli() > now {
				as.Marks = append(as.Marks, m)
			}
		}
		if len(c) == 0 && len(as.Marks) == 0 {
			continue
		}
		routing.SortMarks(as.Marks)
		out.Accounts[name] = as
	}
	for m, v := range models.Val() {
		out.Models[m] = atoi(v)
	}
	return out, nil
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func parseMark(account, field, v string) (routing.Mark, bool) {
	kind, scope, ok := strings.Cut(field, ":")
	if !ok || (kind != "h" && kind != "s") {
		return routing.Mark{}, false
	}
	until, reason, ok := strings.Cut(v, "|")
	if !ok {
		return routing.Mark{}, false
	}
	ms, err := strconv.ParseInt(until, 10, 64)
	if err != nil {
		return routing.Mark{}, false
	}
	return routing.Mark{Account: account, Scope: scope, Until: time.UnixMilli(ms), Reason: reason, Soft: kind == "s"}, true
}

// History implements routing.AdminStore: newest first, filtered, then Offset and Limit.
func (s *Store) History(ctx context.Context, q routing.HistoryQuery) ([]routing.Usage, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	q.Offset, q.Limit = max(q.Offset, 0), max(q.Limit, 0)
	filtered := q.Model != "" || q.Account != "" || q.Status != 0
	start, stop := int64(0), int64(-1)
	if !filtered {
		// Without filters Redis does the paging.
		start = int64(q.Offset)
		if q.Limit > 0 {
			stop = start + int64(q.Limit) - 1
		}
	}
	raw, err := s.c.LRange(ctx, s.key("history"), start, stop).Result()
	if err != nil {
		return nil, fmt.Errorf("redis history: %w", err)
	}
	var out []routing.Usage
	skip := 0
	if filtered {
		skip = q.Offset
	}
	for _, r := range raw {
		var u routing.Usage
		if err := json.Unmarshal([]byte(r), &u); err != nil {
			continue // not written by this version; skip rather than fail the page
		}
		if (q.Model != "" && u.Model != q.Model) || (q.Account != "" && u.Account != q.Account) ||
			(q.Status != 0 && u.Status != q.Status) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		out = append(out, u)
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
	}
	return out, nil
}

// ResetStats implements routing.AdminStore for every replica: it deletes every known
// account's counters, the per-model counts and the round-robin position. Marks, session
// bindings and the history stay.
func (s *Store) ResetStats(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	names, err := s.c.SMembers(ctx, s.key("accounts")).Result()
	if err != nil {
		return fmt.Errorf("redis reset stats: %w", err)
	}
	keys := []string{s.key("models"), s.key("rr")}
	for _, n := range names {
		keys = append(keys, s.acctKey(n))
	}
	// One slot (the hash tag), so one DEL works on Cluster too.
	if err := s.c.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("redis reset stats: %w", err)
	}
	return nil
}

// ClearHistory implements routing.AdminStore for every replica.
func (s *Store) ClearHistory(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.c.Del(ctx, s.key("history")).Err(); err != nil {
		return fmt.Errorf("redis clear history: %w", err)
	}
	return nil
}

// errNoRedis is returned by NewClient without any address.
var errNoRedis = errors.New("store.redis needs url or addrs")
