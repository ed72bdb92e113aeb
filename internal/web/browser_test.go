package web_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// chromium finds a headless-capable Chromium. Locally a missing browser skips the test with
// a clear message; under CI (CI set, as .ci/run does) it fails, since CI installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: .ci/run installs it (apt-get install -y chromium)")
	}
	t.Skip("browser test skipped: no chromium on PATH (Debian: apt-get install -y chromium)")
	return ""
}

// browser starts a headless Chromium for the test, with the network cut. Every request the
// page makes is checked too:
// one that leaves the test server (a CDN, a font service) fails the test, as does any
// JavaScript exception (a CSP violation shows up as one too).
func browser(t *testing.T, base string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		// The network is cut for everything but the test server: no name resolves, and any
		// request that is not to the loopback goes to a proxy that is not there.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.ProxyServer("http://127.0.0.1:9"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	// A guard against a hung browser, not a timing assertion.
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })

	host := mustHost(t, base)
	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			if u, err := url.Parse(e.Request.URL); err == nil && u.Scheme != "data" && u.Host != host && u.Host != probeHost {
				problems = append(problems, "request off the machine: "+e.Request.URL)
			}
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			problems = append(problems, fmt.Sprintf("javascript exception at %s:%d: %s", d.URL, d.LineNumber+1, desc))
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Error(p)
		}
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// probeHost is fetched on purpose, to show that the network is cut.
const probeHost = "example.com"

func mustHost(t *testing.T, base string) string {
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// waitText evaluates js until its result satisfies ok, then returns it.
func waitText(t *testing.T, ctx context.Context, what, js string, ok func(string) bool) string {
	t.Helper()
	var last string
	for {
		var err error
		if last, err = chromedp.Run(ctx, chromedp.Evaluate[string](js)); err != nil {
			t.Fatalf("%s: %v (last %q)", what, err, last)
		}
		if ok(last) {
			return last
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still %q", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestFleetViewInABrowser(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		env.Clock.Advance(time.Since(env.Clock.Now())) // the browser's clock: "last seen" reads true
		ten := env.Tenant("Browser Co")
		hq := env.Site(ten, "HQ")
		branch := env.Site(ten, "Branch")
		tokHQ := env.EnrollmentToken(ten, hq, nil, 10)
		tokBranch := env.EnrollmentToken(ten, branch, nil, 10)
		other := env.Tenant("Other Co") // never shown
		otherAgent := env.Enroll(env.EnrollmentToken(other, env.Site(other, "X"), nil, 1), "other-tenant-host", "")

		beat := func(a *testenv.Agent, id, hostname, os string) {
			t.Helper()
			r := env.Do("POST", "/api/v1/agents/"+a.ID+"/telemetry/heartbeat", a.Token, map[string]any{
				"heartbeat_id": id, "hostname": hostname, "agent_version": "1.4.2",
				"inventory": map[string]any{"os": map[string]any{"name": os, "version": "12"}, "ip_addresses": []string{"10.0.0.1"}}})
			if r.Status != 200 {
				t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
			}
		}
		var agents []*testenv.Agent
		for i, h := range []string{"web-01", "web-02", "db-01"} {
			a := env.Enroll(tokHQ, h, "")
			beat(a, "first", h, []string{"Debian GNU/Linux", "Debian GNU/Linux", "Ubuntu"}[i])
			agents = append(agents, a)
		}
		b := env.Enroll(tokBranch, "branch-01", "")
		beat(b, "first", "branch-01", "Windows")
		env.Enroll(tokHQ, "never-beat", "") // enrolled, no asset yet
		beat(otherAgent, "first", "other-tenant-host", "Debian GNU/Linux")

		ctx := browser(t, env.Server.URL)

		t.Run("the network is cut", func(t *testing.T) {
			// On about:blank, before any page of ours: no Content-Security-Policy blocks the request,
			// only the cut network does.
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](
				`fetch('http://`+probeHost+`/', {mode: 'no-cors'}).then(() => 'reached', () => 'blocked')`, chromedp.EvalAwaitPromise))
			if err != nil || got != "blocked" {
				t.Fatalf("a request to %s: %q %v", probeHost, got, err)
			}
		})

		t.Run("a bad token shows a readable error", func(t *testing.T) {
			if err := chromedp.Do(ctx,
				chromedp.Navigate(env.Server.URL+"/"),
				chromedp.WaitVisible(chromedp.ID("token")),
				chromedp.SendKeys(chromedp.ID("token"), "opu_not-a-real-token"),
				chromedp.Click(chromedp.ID("connect")),
			); err != nil {
				t.Fatal(err)
			}
			msg := waitText(t, ctx, "error box", `document.getElementById('error').hidden ? '' : document.getElementById('error').textContent`,
				func(s string) bool { return s != "" })
			if !strings.Contains(msg, "token was refused") || strings.Contains(msg, "at ") && strings.Contains(msg, ".js:") {
				t.Fatalf("error shown: %q", msg)
			}
			stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('oneprotect.fleet.token') || ''`))
			if err != nil || stored != "" {
				t.Fatalf("a refused token stayed in session storage")
			}
		})

		summary := env.MustGQL(ten.ViewerToken, `{ fleetSummary { totalAssets online offline } }`, nil)["fleetSummary"].(map[string]any)
		list := env.MustGQL(ten.ViewerToken, `{ assets(first: 50) { edges { node { id hostname } } } }`, nil)["assets"].(map[string]any)["edges"].([]any)
		var want []string
		for _, e := range list {
			want = append(want, e.(map[string]any)["node"].(map[string]any)["hostname"].(string))
		}
		sort.Strings(want)

		t.Run("tiles and table match GraphQL", func(t *testing.T) {
			if err := chromedp.Do(ctx,
				chromedp.Navigate(env.Server.URL+"/"),
				chromedp.WaitVisible(chromedp.ID("token")),
				chromedp.SendKeys(chromedp.ID("token"), ten.ViewerToken),
				chromedp.Click(chromedp.ID("connect")),
			); err != nil {
				t.Fatal(err)
			}
			tiles := fmt.Sprintf("%v/%v/%v", summary["totalAssets"], summary["online"], summary["offline"])
			waitText(t, ctx, "tiles", `['tile-total','tile-online','tile-offline'].map(id => document.getElementById(id).textContent).join('/')`,
				func(s string) bool { return s == tiles })
			got := waitText(t, ctx, "table", `[...document.querySelectorAll('#rows tr')].map(r => r.dataset.hostname).sort().join(',')`,
				func(s string) bool { return s != "" })
			if got != strings.Join(want, ",") {
				t.Fatalf("table shows %s, GraphQL lists %s", got, strings.Join(want, ","))
			}
			if strings.Contains(got, "other-tenant-host") {
				t.Fatal("another tenant's asset is shown")
			}
		})

		t.Run("a heartbeat appears live", func(t *testing.T) {
			waitText(t, ctx, "live indicator", `document.getElementById('live').dataset.state`, func(s string) bool { return s == "on" })
			a := agents[0]
			sel := fmt.Sprintf(`(document.querySelector('#rows tr[data-asset-id=%q]') || {dataset: {}}).dataset.hostname || ''`, a.AssetID)
			// The subscription is registered a moment after the page says "live"; a heartbeat
			// sent before that would be missed, so one is sent until the row shows it.
			for i := 0; ; i++ {
				beat(a, fmt.Sprintf("live-%d", i), "web-01-renamed", "Debian GNU/Linux")
				var got string
				ok := false
				for range 20 {
					var err error
					if got, err = chromedp.Run(ctx, chromedp.Evaluate[string](sel)); err != nil {
						t.Fatal(err)
					}
					if got == "web-01-renamed" {
						ok = true
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if ok {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("the row still shows %q", got)
				}
			}
			count, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('live').textContent`))
			if !strings.Contains(count, "update") {
				t.Fatalf("live indicator %q: the change did not come through the subscription", count)
			}
		})

		t.Run("site filter and details", func(t *testing.T) {
			if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("site"), branch)); err != nil {
				t.Fatal(err)
			}
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('site').dispatchEvent(new Event('change'))`)); err != nil {
				t.Fatal(err)
			}
			waitText(t, ctx, "branch rows", `[...document.querySelectorAll('#rows tr')].map(r => r.dataset.hostname).join(',')`,
				func(s string) bool { return s == "branch-01" })
			waitText(t, ctx, "branch tiles", `document.getElementById('tile-total').textContent`, func(s string) bool { return s == "1" })
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#rows tr`))); err != nil {
				t.Fatal(err)
			}
			waitText(t, ctx, "details", `document.getElementById('details').hidden ? '' : document.getElementById('d-events').textContent`,
				func(s string) bool {
					return strings.Contains(s, "asset.discovered") && strings.Contains(s, "agent.enrolled")
				})
		})

		t.Run("an inventory change reads old and new", func(t *testing.T) {
			if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("site"), "")); err != nil {
				t.Fatal(err)
			}
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('site').dispatchEvent(new Event('change'))`)); err != nil {
				t.Fatal(err)
			}
			row := fmt.Sprintf(`#rows tr[data-asset-id=%q]`, agents[0].AssetID)
			if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(row)), chromedp.Click(chromedp.CSS(row))); err != nil {
				t.Fatal(err)
			}
			waitText(t, ctx, "inventory change", `document.getElementById('details').hidden ? '' : document.getElementById('d-events').textContent`,
				func(s string) bool { return strings.Contains(s, "hostname: web-01 → web-01-renamed") })
		})

		t.Run("legible at 420 px", func(t *testing.T) {
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(420, 800)); err != nil {
				t.Fatal(err)
			}
			overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
			if err != nil {
				t.Fatal(err)
			}
			if overflow {
				t.Fatal("the page is wider than a 420 px screen")
			}
			if dir := os.Getenv("ONEPROTECT_SCREENSHOTS"); dir != "" {
				shoot(t, ctx, filepath.Join(dir, "fleet-view-420.png"))
				_ = chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900))
				shoot(t, ctx, filepath.Join(dir, "fleet-view.png"))
			}
		})
	})
}

// shoot saves a screenshot of the page (ONEPROTECT_SCREENSHOTS=dir, for the README).
func shoot(t *testing.T, ctx context.Context, path string) {
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
