// Package routing decides which pooled account serves a request: the compiled model table
// (which plans and accounts may serve a model), the failover policy (what an upstream answer
// means for the account and the request), and the Store interface that holds usage, cooldowns
// and affinity. It is pure logic: no net/http, no Redis.
package routing

import (
	"errors"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/claude-lb/claude-lb/config"
)

// ErrNoCompatibleAccount means no configured account's plan (or model list) allows the model.
var ErrNoCompatibleAccount = errors.New("no compatible account")

// ErrUnknownModel means the model matches no rule and unknown_models is reject.
var ErrUnknownModel = errors.New("unknown model")

// Account is what routing needs to know of a configured account.
type Account struct {
	Name     string
	Plan     string
	Models   []string // the account's own globs; empty = no narrowing
	Weight   int
	Priority int
	Disabled bool
}

// Table is the compiled model matrix of one config snapshot. It is immutable apart from an
// internal cache, and safe for concurrent use.
type Table struct {
	rules    []config.ModelRule
	accounts []Account
	reject   bool

	// cache maps a model id to its candidate indices; model ids are few, but clients choose
	// them, so the cache stops growing at cacheMax.
	cache  sync.Map // string -> *entry
	cached atomic.Int32
}

const cacheMax = 512

type entry struct {
	idx  []int
	rule int // index of the matching rule, -1 none
}

// NewTable compiles a validated config.
func NewTable(cfg *config.Config) *Table {
	t := &Table{rules: cfg.Models, reject: cfg.Routing.UnknownModels == "reject"}
	for _, a := range cfg.Accounts {
		t.accounts = append(t.accounts, Account{
			Name: a.Name, Plan: a.Plan, Models: a.Models,
			Weight: max(a.Weight, 1), Priority: a.Priority, Disabled: a.Disabled,
		})
	}
	return t
}

// Accounts returns the accounts in config order. The slice must not be modified.
func (t *Table) Accounts() []Account { return t.accounts }

// Candidates returns the indices (into Accounts) of the enabled accounts that may serve
// model, in config order. An empty model (GET /v1/models, batches) may use every account.
// The returned slice is shared and must not be modified.
func (t *Table) Candidates(model string) ([]int, error) {
	if v, ok := t.cache.Load(model); ok {
		e := v.(*entry)
		return e.idx, t.errFor(e)
	}
	e := t.compute(model)
	if t.cached.Load() < cacheMax {
		if _, loaded := t.cache.LoadOrStore(model, e); !loaded {
			t.cached.Add(1)
		}
	}
	return e.idx, t.errFor(e)
}

func (t *Table) errFor(e *entry) error {
	if len(e.idx) > 0 {
		return nil
	}
	if e.rule < 0 && t.reject {
		return ErrUnknownModel
	}
	return ErrNoCompatibleAccount
}

func (t *Table) compute(model string) *entry {
	e := &entry{rule: -1}
	var plans []string
	if model != "" {
		if r := t.Rule(model); r >= 0 {
			e.rule, plans = r, t.rules[r].Plans
		} else if t.reject {
			return e
		}
	}
	for i, a := range t.accounts {
		if a.Disabled {
			continue
		}
		if plans != nil && !contains(plans, a.Plan) {
			continue
		}
		if model != "" && len(a.Models) > 0 && !MatchAny(a.Models, model) {
			continue
		}
		e.idx = append(e.idx, i)
	}
	return e
}

// Rule returns the index of the first rule matching model, or -1.
func (t *Table) Rule(model string) int {
	for i, r := range t.rules {
		if MatchAny(r.Match, model) {
			return i
		}
	}
	return -1
}

// Plans returns the plans the first matching rule allows, or nil when no rule matches.
func (t *Table) Plans(model string) []string {
	if r := t.Rule(model); r >= 0 {
		return t.rules[r].Plans
	}
	return nil
}

// OpusCapable reports whether an account may serve Opus models, for the 🎯 marker.
func (t *Table) OpusCapable(a Account) bool {
	for _, m := range []string{"claude-opus-5-5", "claude-opus-4-1", "claude-3-opus-20240229"} {
		plans := t.Plans(m)
		if (plans == nil || contains(plans, a.Plan)) && (len(a.Models) == 0 || MatchAny(a.Models, m)) {
			return true
		}
	}
	return false
}

// EffectiveModels returns the globs an account may serve: its own list, or the match globs of
// every rule that allows its plan.
func (t *Table) EffectiveModels(a Account) []string {
	if len(a.Models) > 0 {
		return a.Models
	}
	var out []string
	for _, r := range t.rules {
		if contains(r.Plans, a.Plan) {
			out = append(out, r.Match...)
		}
	}
	return out
}

// MatchAny reports whether model matches one of the globs (path.Match syntax).
func MatchAny(globs []string, model string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, model); ok {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// FamilyScope is the mark scope of a model family. The known families' scopes are constants,
// so the request path does not build the string.
func FamilyScope(family string) string {
	switch family {
	case "opus":
		return "family:opus"
	case "sonnet":
		return "family:sonnet"
	case "haiku":
		return "family:haiku"
	}
	return "family:" + family
}

// Family names the model family used to scope cooldowns: opus, sonnet, haiku, or the model
// id itself for anything else.
func Family(model string) string {
	for _, f := range [...]string{"opus", "sonnet", "haiku"} {
		if strings.Contains(model, f) {
			return f
		}
	}
	return model
}
