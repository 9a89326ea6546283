package routing

import (
	"strconv"
	"strings"
	"time"
)

// Outcome is what one upstream attempt means, for the account and for the request. It is
// DESIGN.md section 6 as a table: Classify is the only place that reads statuses and headers
// to decide failover.
type Outcome struct {
	// Retry: try the next compatible account (nothing has reached the client yet).
	Retry bool
	// Backoff: wait a short jittered moment before the next attempt (5xx/529).
	Backoff bool
	// Mark, when Until is non-zero, is the cooldown/mark to put on the account. Account and
	// the credential scope are filled in by the caller.
	Mark Mark
	// CredentialInvalid: the mark applies to the current credential (401).
	CredentialInvalid bool
	// Reason is a short label for logs, metrics and history: ok, 429, 529, 5xx, 401, 403,
	// network, stream, 4xx.
	Reason string
}

// PolicyConfig holds the routing settings Classify needs.
type PolicyConfig struct {
	Cooldown    time.Duration // when a 429 carries no reset time
	MaxCooldown time.Duration // cap on cooldowns taken from headers
	SoftLimit   float64       // utilization at which an account goes to the back
}

// Bench times for failures that carry no reset information.
const (
	NetworkBench   = 5 * time.Second
	OverloadBench  = 5 * time.Second
	Forbidden      = 10 * time.Minute
	InvalidCredFor = 24 * time.Hour
)

// Header gives access to response headers without net/http (http.Header.Get fits). Keys
// are passed in canonical form, so Get does not allocate.
type Header func(key string) string

// Classify maps one attempt's result to an Outcome. status 0 with netErr means the request did
// not get an answer; streamErr means a 200 stream broke before its first content event.
// body is the start of an error response (for request-scoped 429s), may be nil.
func Classify(now time.Time, cfg PolicyConfig, status int, h Header, body []byte, netErr bool, family string) Outcome {
	switch {
	case netErr:
		return Outcome{Retry: true, Reason: "network",
			Mark: Mark{Until: now.Add(NetworkBench), Reason: "upstream unreachable"}}
	case status == 429:
		o := Outcome{Retry: true, Reason: "429"}
		if h("Anthropic-Ratelimit-Unified-Status") != "rejected" && requestScoped(body) {
			return o // this request is the problem, not the account
		}
		until, why := ResetTime(now, h)
		if !until.IsZero() && !until.After(now) {
			// A reset already past (clock skew, a stale header) still came with a 429.
			until = time.Time{}
		}
		scope := ""
		if c := h("Anthropic-Ratelimit-Unified-Representative-Claim"); c != "" {
			if f := Family(c); f != c {
				scope = FamilyScope(f)
			}
		}
		if until.IsZero() {
			until, why = now.Add(cfg.Cooldown), "rate limited (no reset time given)"
		}
		if cfg.MaxCooldown > 0 && until.Sub(now) > cfg.MaxCooldown {
			until = now.Add(cfg.MaxCooldown)
		}
		o.Mark = Mark{Scope: scope, Until: until, Reason: why}
		return o
	case status == 529 || status == 500 || status == 502 || status == 503 || status == 504:
		r := "5xx"
		if status == 529 {
			r = "529"
		}
		return Outcome{Retry: true, Backoff: true, Reason: r}
	case status == 401:
		return Outcome{Retry: true, Reason: "401", CredentialInvalid: true,
			Mark: Mark{Until: now.Add(InvalidCredFor), Reason: "credential rejected (401)"}}
	case status == 403:
		return Outcome{Retry: true, Reason: "403",
			Mark: Mark{Scope: FamilyScope(family), Until: now.Add(Forbidden), Reason: "forbidden for " + family + " (403)"}}
	case status >= 400:
		return Outcome{Reason: "4xx"}
	}
	o := Outcome{Reason: "ok"}
	if until, near := NearLimit(now, cfg.SoftLimit, h); near {
		o.Mark = Mark{Until: until, Reason: "near its usage limit", Soft: true}
	}
	return o
}

// requestScoped reports a 429 that is about this request rather than the account, such as
// "Extra usage is required for long context requests".
func requestScoped(body []byte) bool {
	s := strings.ToLower(string(body))
	return strings.Contains(s, "long context") || strings.Contains(s, "extra usage")
}

// ResetTime reads when a rate-limited account is free again: the subscription headers first
// (anthropic-ratelimit-unified-reset, Unix seconds), then retry-after (seconds or HTTP date),
// then the latest of the API's per-limit reset headers (RFC 3339) whose remaining is 0, or the
// earliest of them when none says so. Zero when none is present.
func ResetTime(now time.Time, h Header) (time.Time, string) {
	if v := h("Anthropic-Ratelimit-Unified-Reset"); v != "" {
		if sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			if st := h("Anthropic-Ratelimit-Unified-Status"); st != "" {
				return time.Unix(sec, 0), "subscription limit " + st
			}
			return time.Unix(sec, 0), "subscription limit reached"
		}
	}
	if v := strings.TrimSpace(h("Retry-After")); v != "" {
		if sec, err := strconv.ParseFloat(v, 64); err == nil && sec >= 0 {
			return now.Add(time.Duration(sec * float64(time.Second))), "rate limited (retry-after)"
		}
		if t, err := time.Parse(time.RFC1123, v); err == nil {
			return t, "rate limited (retry-after)"
		}
	}
	var earliest, exhausted time.Time
	var which string
	for _, k := range [...]string{"Requests", "Tokens", "Input-Tokens", "Output-Tokens"} {
		v := h("Anthropic-Ratelimit-" + k + "-Reset")
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			continue
		}
		if earliest.IsZero() || t.Before(earliest) {
			earliest = t
		}
		if h("Anthropic-Ratelimit-"+k+"-Remaining") == "0" && t.After(exhausted) {
			exhausted, which = t, k
		}
	}
	if !exhausted.IsZero() {
		return exhausted, "rate limited (" + strings.ToLower(which) + ")"
	}
	if !earliest.IsZero() {
		return earliest, "rate limited"
	}
	return time.Time{}, ""
}

// NearLimit reports an account whose answers say it is close to its subscription limit:
// unified-status allowed_warning, or a 5h/7d utilization at or above softLimit. until is when
// the warning should lapse (the reset the headers name, else an hour).
func NearLimit(now time.Time, softLimit float64, h Header) (time.Time, bool) {
	near := h("Anthropic-Ratelimit-Unified-Status") == "allowed_warning"
	if !near && softLimit > 0 {
		for _, k := range [...]string{"Anthropic-Ratelimit-Unified-5h-Utilization", "Anthropic-Ratelimit-Unified-7d-Utilization"} {
			if v := h(k); v != "" {
				if u, err := strconv.ParseFloat(v, 64); err == nil && u >= softLimit {
					near = true
				}
			}
		}
	}
	if !near {
		return time.Time{}, false
	}
	until := now.Add(time.Hour)
	for _, k := range [...]string{"Anthropic-Ratelimit-Unified-Reset", "Anthropic-Ratelimit-Unified-5h-Reset", "Anthropic-Ratelimit-Unified-7d-Reset"} {
		if v := h(k); v != "" {
			if sec, err := strconv.ParseInt(v, 10, 64); err == nil && time.Unix(sec, 0).After(now) {
				until = time.Unix(sec, 0)
				break
			}
		}
	}
	return until, true
}
