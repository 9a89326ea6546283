package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/claude-lb/claude-lb/config"
	"github.com/claude-lb/claude-lb/internal/fakeapi"
	"github.com/claude-lb/claude-lb/routing"
	"github.com/claude-lb/claude-lb/store/memory"
)

const chromiumPath = "/usr/bin/chromium"

// browserLog collects what the page reports: exceptions, console messages of level error or
// warning, and log entries (network failures, CSP violations, …).
type browserLog struct {
	mu   sync.Mutex
	errs []string
	// network: failed-resource entries, kept apart because the admin-key test expects a 401.
	network []string
}

func (b *browserLog) add(network bool, s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if network {
		b.network = append(b.network, s)
	} else {
		b.errs = append(b.errs, s)
	}
}

func (b *browserLog) get() (errs, network []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...), append([]string(nil), b.network...)
}

// newBrowser starts Debian's chromium headless with a fresh profile and returns a tab context
// and what the page logs. Without chromium the test is skipped, unless CI is set.
func newBrowser(t *testing.T) (context.Context, *browserLog) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (install Debian's chromium package): %v", chromiumPath, err)
		}
		t.Skipf("%s is missing; apt-get install chromium to run the dashboard browser test", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	logs := &browserLog{}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			logs.add(false, "exception: "+msg)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				logs.add(false, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				logs.add(ev.Entry.Source == cdplog.EntrySourceNetwork, "log("+string(ev.Entry.Source)+"): "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, logs
}

// dashboardGateway is a whole gateway (memory store, fake upstream) serving the ORIGIN.md
// pool: personal (console) and work, team (max).
func dashboardGateway(t *testing.T, adminKey config.Secret) (*httptest.Server, *memory.Store) {
	t.Helper()
	const (
		keyP = "sk-ant-api03-dash-personal-000000000000001"
		tokW = "sk-ant-oat01-dash-work-00000000000000000002"
		tokT = "sk-ant-oat01-dash-team-00000000000000000003"
	)
	fake := fakeapi.New(t)
	fake.Accept(keyP, tokW, tokT)
	cfg := config.Default()
	cfg.Upstream.URL = fake.URL
	cfg.Hash = "0123456789abcdef0123456789abcdef"
	cfg.Path = "claude-lb.yaml"
	cfg.Admin.Key = adminKey
	cfg.Accounts = []config.Account{
		{Name: "personal", Plan: "console", APIKey: keyP},
		{Name: "work", Plan: "max", OAuthToken: tokW},
		{Name: "team", Plan: "max", OAuthToken: tokT},
	}
	st := memory.New(memory.Options{})
	m := NewMetrics(nil)
	gw, err := New(cfg, Options{Store: st, AdminStore: st, Replica: "browser-r1", Observer: m, Metrics: m.Handler()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv, st
}

func sendMessage(t *testing.T, base, model string) {
	t.Helper()
	resp, err := http.Post(base+"/v1/messages", "application/json",
		strings.NewReader(`{"model":"`+model+`","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s through the gateway: %d", model, resp.StatusCode)
	}
}

type accountRow struct {
	Name string `json:"name"`
	Opus bool   `json:"opus"`
	Plan string `json:"plan"`
	Text string `json:"text"`
}

// browserRun runs one action with a deadline and fails the test with what the page logged.
func browserRun[T any](t *testing.T, ctx context.Context, logs *browserLog, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		errs, network := logs.get()
		t.Fatalf("%s: %v\npage errors: %q\nnetwork: %q", what, err, errs, network)
	}
	return v
}

func browserDo(t *testing.T, ctx context.Context, logs *browserLog, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	browserRun(t, ctx, logs, what, chromedp.Steps(steps...))
}

func waitJS(expr string, d time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(100*time.Millisecond))(ctx, t)
		return err
	})
}

func TestDashboardBrowser(t *testing.T) {
	ctx, logs := newBrowser(t)
	srv, st := dashboardGateway(t, "")
	sendMessage(t, srv.URL, "claude-sonnet-5-5") // something in the history before the page opens

	browserDo(t, ctx, logs, "open the dashboard",
		chromedp.Navigate(srv.URL+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-account="team"]`)),
	)
	rows := browserRun(t, ctx, logs, "list the accounts", chromedp.Evaluate[[]accountRow](
		`[...document.querySelectorAll('#accounts tbody tr')].map(r => ({
			name: r.dataset.account,
			opus: !!r.querySelector('.opus-mark') && r.querySelector('td').textContent.includes('🎯'),
			plan: r.querySelector('.plan').textContent,
			text: r.textContent}))`))
	want := []accountRow{{Name: "personal", Plan: "CONSOLE"}, {Name: "work", Opus: true, Plan: "MAX"}, {Name: "team", Opus: true, Plan: "MAX"}}
	if len(rows) != len(want) {
		t.Fatalf("account rows %+v", rows)
	}
	for i, w := range want {
		if rows[i].Name != w.Name || rows[i].Opus != w.Opus || rows[i].Plan != w.Plan {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], w)
		}
		if !strings.Contains(rows[i].Text, "Valid") || !strings.Contains(rows[i].Text, "…000") {
			t.Errorf("row %s lacks the credential state and fingerprint: %q", w.Name, rows[i].Text)
		}
	}

	// A request sent through the gateway shows up without a reload: the marker set on the
	// window survives only if the page is never reloaded.
	before := browserRun(t, ctx, logs, "mark the page",
		chromedp.Evaluate[int](`window.__noReload = 42; document.querySelectorAll('#history tbody tr').length`))
	if before != 1 {
		t.Errorf("history rows before: %d, want 1", before)
	}
	sendMessage(t, srv.URL, "claude-opus-5-5")
	browserDo(t, ctx, logs, "wait for the opus request in the history",
		waitJS(`document.querySelector('#history tbody tr[data-model="claude-opus-5-5"]') !== null`, 20*time.Second))
	if marker := browserRun(t, ctx, logs, "read the marker", chromedp.Evaluate[int](`window.__noReload`)); marker != 42 {
		t.Error("the page was reloaded")
	}
	cells := browserRun(t, ctx, logs, "read the history row", chromedp.Evaluate[[]string](
		`[...document.querySelector('#history tbody tr[data-model="claude-opus-5-5"]').cells].map(c => c.textContent)`))
	if len(cells) != 9 || !strings.Contains(cells[2], "claude-opus-5-5") || (cells[3] != "work" && cells[3] != "team") ||
		cells[5] != "200" || cells[8] != "browser-r1" || cells[4] != "1" {
		t.Fatalf("history row cells %q", cells)
	}

	// Filters: the account filter narrows the table (to the other max account: no rows).
	other := "work"
	if cells[3] == "work" {
		other = "team"
	}
	browserDo(t, ctx, logs, "filter the history by account",
		waitJS(`[...document.querySelectorAll('#f-account option')].some(o => o.value === '`+other+`')`, 10*time.Second),
		chromedp.SetValue(chromedp.CSS(`#f-account`), other),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[chromedp.Void](`document.getElementById('f-account').dispatchEvent(new Event('change'))`)(ctx, t)
			return err
		}),
		waitJS(`document.querySelectorAll('#history tbody tr').length === 0 && !document.getElementById('history-empty').hidden`, 10*time.Second),
	)

	// Model counts and the Opus success rate.
	browserDo(t, ctx, logs, "opus success rate",
		waitJS(`document.getElementById('opus-rate').textContent === '100%'`, 10*time.Second))
	models := browserRun(t, ctx, logs, "models table", chromedp.Text(chromedp.CSS(`#models tbody`)))
	if !strings.Contains(models, "claude-opus-5-5") || !strings.Contains(models, "claude-sonnet-5-5") {
		t.Errorf("models table %q", models)
	}
	plotted := browserRun(t, ctx, logs, "plot", chromedp.Evaluate[int](`document.querySelectorAll('#plot rect[data-account]').length`))
	if plotted < 1 {
		t.Errorf("the requests-per-account plot draws %d bars", plotted)
	}

	// On a phone-sized screen nothing overflows sideways.
	browserDo(t, ctx, logs, "phone viewport",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Sleep(300*time.Millisecond))
	if overflow := browserRun(t, ctx, logs, "overflow", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > 391 || [...document.querySelectorAll('section')].some(e => e.getBoundingClientRect().right > 391)`)); overflow {
		t.Error("the page is wider than a phone's screen")
	}
	if dir := os.Getenv("DASHBOARD_SCREENSHOT_DIR"); dir != "" {
		// For a person to look at: some traffic and a cooldown.
		for i := range 12 {
			sendMessage(t, srv.URL, []string{"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"}[i%3])
		}
		_ = st.Mark(t.Context(), routing.Mark{Account: "work", Scope: "family:opus", Until: time.Now().Add(4 * time.Minute), Reason: "429 rate limited (unified reset)"})
		browserDo(t, ctx, logs, "clear the filter", chromedp.SetValue(chromedp.CSS(`#f-account`), ""),
			chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				_, err := chromedp.Evaluate[chromedp.Void](`document.getElementById('f-account').dispatchEvent(new Event('change'))`)(ctx, t)
				return err
			}), chromedp.Sleep(2500*time.Millisecond))
		phone := browserRun(t, ctx, logs, "phone screenshot", chromedp.FullScreenshot(100))
		browserDo(t, ctx, logs, "laptop viewport", chromedp.EmulateViewport(1280, 900), chromedp.Sleep(300*time.Millisecond))
		laptop := browserRun(t, ctx, logs, "laptop screenshot", chromedp.FullScreenshot(100))
		_ = os.WriteFile(filepath.Join(dir, "dashboard-phone.png"), phone, 0o644)
		_ = os.WriteFile(filepath.Join(dir, "dashboard-laptop.png"), laptop, 0o644)
	}

	errs, network := logs.get()
	if len(errs)+len(network) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(append(errs, network...), "\n"))
	}
}

// TestDashboardBrowserAdminKey: with admin.key set, the page asks for the key, says when it
// is wrong, keeps the right one for the tab, and then shows the accounts.
func TestDashboardBrowserAdminKey(t *testing.T) {
	ctx, logs := newBrowser(t)
	const key = "dash-admin-key-0123456789"
	srv, _ := dashboardGateway(t, key)
	browserDo(t, ctx, logs, "wrong key, then the right one",
		chromedp.Navigate(srv.URL+"/dashboard/"),
		chromedp.WaitVisible(chromedp.CSS(`#keydialog[open] #keyinput`)),
		chromedp.SendKeys(chromedp.CSS(`#keyinput`), "wrong-key"),
		chromedp.Click(chromedp.CSS(`#keysubmit`)),
		waitJS(`document.getElementById('keydialog').open && !document.getElementById('keyerror').hidden`, 10*time.Second),
		chromedp.SendKeys(chromedp.CSS(`#keyinput`), key),
		chromedp.Click(chromedp.CSS(`#keysubmit`)),
		chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-account="work"] .opus-mark`)),
	)
	if stored := browserRun(t, ctx, logs, "read sessionStorage", chromedp.Evaluate[string](`sessionStorage.getItem('claude-lb-admin-key')`)); stored != key {
		t.Errorf("sessionStorage holds %q", stored)
	}
	// A reload of the tab keeps the key: no dialog this time.
	browserDo(t, ctx, logs, "reload the tab",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-account="team"]`)))
	if open := browserRun(t, ctx, logs, "dialog state", chromedp.Evaluate[bool](`document.getElementById('keydialog').open`)); open {
		t.Error("the key dialog opened again after a reload of the tab")
	}
	// The two refused calls (no key, wrong key) are network log entries; nothing else may be.
	errs, network := logs.get()
	if len(errs) > 0 {
		t.Errorf("page errors: %q", errs)
	}
	for _, n := range network {
		if !strings.Contains(n, "401") {
			t.Errorf("unexpected network error: %s", n)
		}
	}
}
