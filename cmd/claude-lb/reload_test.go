package main

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadUnderLoad rewrites the config 50 times in each of the three ways a file changes
// (in place, editor rename-over, Kubernetes ..data symlink swap) while four clients send a
// steady mix of Opus/Sonnet/Haiku requests, plain and streaming. Each version moves the max
// plan to the other account; the next version is written only once /readyz shows this one's
// hash and an Opus request was served by the new max account, so every version was applied.
// Not one request may fail.
func TestReloadUnderLoad(t *testing.T) {
	const versions = 50
	for _, mode := range []writeMode{inPlace, renameOver, k8sSwap} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newE2EFixture(t, mode)
			first := f.render(maxOn("alpha"), "")
			f.write(first)
			g := startE2EApp(t, f.path, true)
			base := g.srv.URL
			waitServing(t, base, sha256Hex(first), "alpha")
			okBefore := metric(t, base, reloadsOK)

			l := startLoad(base, 4)
			defer l.stop()
			want := "alpha"
			for i := 1; i <= versions; i++ {
				want = other(want)
				content := f.render(maxOn(want), "")
				before := l.done.Load()
				f.write(content)
				waitServing(t, base, sha256Hex(content), want)
				// Traffic ran across this reload, not only between reloads.
				eventually(t, 15*time.Second, "requests complete after reload", func() (bool, string) {
					n := l.done.Load()
					return n >= before+4, fmt.Sprintf("%d requests since the write", n-before)
				})
			}
			n, fails := l.stop()
			if len(fails) > 0 {
				t.Errorf("%d of %d requests failed during %d reloads; first ones:\n%s",
					len(fails), n, versions, strings.Join(fails[:min(len(fails), 10)], "\n"))
			}
			if got := metric(t, base, reloadsOK) - okBefore; got < versions {
				t.Errorf("%s went up by %v, want at least %d", reloadsOK, got, versions)
			}
			// Atomic replacements never expose a half-written file. (An in-place write can:
			// a reader may see a partial file between write calls, which is then rejected and
			// superseded, so failures are not checked there.)
			if mode != inPlace {
				if got := metric(t, base, reloadsFail); got != 0 {
					t.Errorf("%s = %v with atomic writes, want 0", reloadsFail, got)
				}
			}
			if got := strings.Count(g.logs.String(), `msg="config reloaded" trigger="file changed"`); got < versions {
				t.Errorf("%d reloads logged, want at least %d", got, versions)
			}
			t.Logf("%d requests, none failed, across %d reloads (%v reloads rejected)", n, versions, metric(t, base, reloadsFail))
		})
	}
}

// TestReloadRejectsInvalidEdit: a bad edit is logged with file:line and counted as a failed
// reload; the previous version keeps serving; fixing the file applies the fix.
func TestReloadRejectsInvalidEdit(t *testing.T) {
	f := newE2EFixture(t, renameOver)
	good := f.render(maxOn("alpha"), "")
	f.write(good)
	g := startE2EApp(t, f.path, true)
	base := g.srv.URL
	goodHash := sha256Hex(good)
	waitServing(t, base, goodHash, "alpha")

	tests := []struct {
		name string
		// edit turns a valid config into a bad one.
		edit func(string) string
		// mark is text on the line the problem must be reported at; msg is part of its message.
		mark, msg string
	}{
		{name: "unknown key", edit: func(s string) string {
			return strings.Replace(s, "    plan: max\n", "    plna: max\n", 1)
		}, mark: "plna: max", msg: `unknown key \"plna\"`},
		{name: "bad plan", edit: func(s string) string {
			return strings.Replace(s, "    plan: max\n", "    plan: ultra\n", 1)
		}, mark: "plan: ultra", msg: "ultra"},
		{name: "unset variable", edit: func(s string) string {
			return s + "routing:\n  strategy: ${CLAUDE_LB_E2E_UNSET_VARIABLE}\n"
		}, mark: "strategy: ${", msg: "CLAUDE_LB_E2E_UNSET_VARIABLE"},
		{name: "broken YAML", edit: func(s string) string {
			return strings.Replace(s, "    plan: max\n", "    plan: [max\n", 1)
		}, mark: "", msg: ""},
	}
	current := "alpha"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			failsBefore := metric(t, base, reloadsFail)
			okHash, _ := readyHash(base)
			bad := tc.edit(f.render(maxOn(other(current)), ""))
			f.write(bad)
			eventually(t, 15*time.Second, "reload failure counted", func() (bool, string) {
				v := metric(t, base, reloadsFail)
				return v > failsBefore, fmt.Sprintf("%s = %v", reloadsFail, v)
			})
			// The previous version still serves.
			if h, _ := readyHash(base); h != okHash {
				t.Errorf("readyz config_hash moved to %s after a rejected edit, want %s", h, okHash)
			}
			for range 5 {
				if acct, err := opusAccount(base); err != nil || acct != current {
					t.Fatalf("after the rejected edit Opus went to %q (%v), want %s", acct, err, current)
				}
			}
			// The log names the file and line of the problem.
			logs := g.logs.String()
			re := regexp.QuoteMeta(f.path) + `:[0-9]+:[0-9]+: `
			if tc.mark != "" {
				re = regexp.QuoteMeta(fmt.Sprintf("%s:%d:", f.path, lineOf(bad, tc.mark))) + `[0-9]+: [^\n]*` + regexp.QuoteMeta(tc.msg)
			}
			if !regexp.MustCompile(`msg="config rejected; the previous config keeps serving"[^\n]*` + re).MatchString(logs) {
				t.Errorf("log has no rejection matching %q:\n%s", re, tail(logs, 3000))
			}

			// Fixing the file applies the fix.
			current = other(current)
			fixed := f.render(maxOn(current), "")
			f.write(fixed)
			waitServing(t, base, sha256Hex(fixed), current)
		})
	}
}

// TestReloadWatchOffNeedsSIGHUP: with watching off a file change is not applied by itself;
// SIGHUP (a value on the signal channel the reload loop reads) applies it.
func TestReloadWatchOffNeedsSIGHUP(t *testing.T) {
	f := newE2EFixture(t, renameOver)
	first := f.render(maxOn("alpha"), "")
	f.write(first)
	g := startE2EApp(t, f.path, false)
	base := g.srv.URL
	waitServing(t, base, sha256Hex(first), "alpha")

	second := f.render(maxOn("beta"), "")
	f.write(second)
	// A negative check cannot be proved by waiting, only made meaningful: the watcher, if it
	// ran, would have applied the file well within this time (debounce 100ms). It cannot
	// make the test flaky, only weaker.
	time.Sleep(500 * time.Millisecond)
	if h, _ := readyHash(base); h != sha256Hex(first) {
		t.Fatalf("the file change was applied with watching off (hash %s)", h)
	}
	if acct, err := opusAccount(base); err != nil || acct != "alpha" {
		t.Fatalf("with watching off, Opus went to %q (%v), want alpha until SIGHUP", acct, err)
	}
	g.hup <- syscall.SIGHUP
	waitServing(t, base, sha256Hex(second), "beta")
	if !strings.Contains(g.logs.String(), `msg="config reloaded" trigger=SIGHUP`) {
		t.Errorf("no SIGHUP reload logged:\n%s", g.logs.String())
	}
}

// TestReloadRemovedAccountAndStreamAcrossSwap: a stream that began on an account finishes on
// the snapshot it began with after a reload removed that account, and from the moment the
// new version serves, the removed account gets no request at all.
func TestReloadRemovedAccountAndStreamAcrossSwap(t *testing.T) {
	f := newE2EFixture(t, k8sSwap)
	release := make(chan struct{})
	holdScript(f.fake, modelOpus, release)
	first := f.render(maxOn("gamma", "alpha", "beta", "gamma"), "")
	f.write(first)
	g := startE2EApp(t, f.path, true)
	base := g.srv.URL
	waitServing(t, base, sha256Hex(first), "gamma")

	h := startHeldStream(t, base, modelOpus)
	if got := h.resp.Header.Get("X-Claude-Lb-Account"); got != "gamma" {
		t.Fatalf("held stream served by %q, want gamma", got)
	}

	second := f.render(maxOn("alpha", "alpha", "beta"), "")
	f.write(second)
	waitServing(t, base, sha256Hex(second), "alpha")
	mark := f.fake.Count()

	for i := range 30 {
		model := []string{modelOpus, modelSonnet, modelHaiku}[i%3]
		r, err := e2eSend(base, model, i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		if p := r.problem(); p != "" {
			t.Fatalf("%s after the swap: %s", model, p)
		}
		if r.account == "gamma" {
			t.Fatalf("%s served by the removed account gamma", model)
		}
	}
	reqs := f.fake.Requests()
	if len(reqs) < mark+30 {
		t.Fatalf("fake saw %d requests, want at least %d", len(reqs), mark+30)
	}
	for _, r := range reqs[mark:] {
		if r.Credential == e2eKey("gamma") {
			t.Errorf("request %d (%s) reached the upstream with the removed account's key", r.N, r.Model)
		}
	}

	// The stream that began on gamma completes after the swap.
	close(release)
	body := h.finish(t)
	if !strings.Contains(body, "event: message_stop") || strings.Contains(body, "event: error") {
		t.Errorf("stream across the swap did not complete cleanly:\n%s", body)
	}
	if !strings.Contains(body, "snapshot from "+last4(e2eKey("gamma"))) {
		t.Errorf("stream across the swap lost its last chunk:\n%s", body)
	}
	var ready struct {
		Accounts int `json:"accounts"`
	}
	if _, err := getJSON(base+"/readyz", &ready); err != nil || ready.Accounts != 2 {
		t.Errorf("readyz accounts = %d (%v), want 2", ready.Accounts, err)
	}
}
