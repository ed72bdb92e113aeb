package web_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/oneprotect/telemetry/internal/browsertest"
	"github.com/oneprotect/telemetry/internal/testenv"
)

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

		ctx := browsertest.Start(t, env.Server.URL)

		t.Run("the network is cut", func(t *testing.T) { browsertest.NetworkIsCut(t, ctx) })

		t.Run("a bad token shows a readable error", func(t *testing.T) {
			if err := chromedp.Do(ctx,
				chromedp.Navigate(env.Server.URL+"/"),
				chromedp.WaitVisible(chromedp.ID("token")),
				chromedp.SendKeys(chromedp.ID("token"), "opu_not-a-real-token"),
				chromedp.Click(chromedp.ID("connect")),
			); err != nil {
				t.Fatal(err)
			}
			msg := browsertest.WaitText(t, ctx, "error box", `document.getElementById('error').hidden ? '' : document.getElementById('error').textContent`,
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
			browsertest.WaitText(t, ctx, "tiles", `['tile-total','tile-online','tile-offline'].map(id => document.getElementById(id).textContent).join('/')`,
				func(s string) bool { return s == tiles })
			got := browsertest.WaitText(t, ctx, "table", `[...document.querySelectorAll('#rows tr')].map(r => r.dataset.hostname).sort().join(',')`,
				func(s string) bool { return s != "" })
			if got != strings.Join(want, ",") {
				t.Fatalf("table shows %s, GraphQL lists %s", got, strings.Join(want, ","))
			}
			if strings.Contains(got, "other-tenant-host") {
				t.Fatal("another tenant's asset is shown")
			}
		})

		t.Run("a heartbeat appears live", func(t *testing.T) {
			browsertest.WaitText(t, ctx, "live indicator", `document.getElementById('live').dataset.state`, func(s string) bool { return s == "on" })
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
			browsertest.WaitText(t, ctx, "branch rows", `[...document.querySelectorAll('#rows tr')].map(r => r.dataset.hostname).join(',')`,
				func(s string) bool { return s == "branch-01" })
			browsertest.WaitText(t, ctx, "branch tiles", `document.getElementById('tile-total').textContent`, func(s string) bool { return s == "1" })
			browsertest.WaitText(t, ctx, "details", openDetails(`#rows tr`),
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
			browsertest.WaitText(t, ctx, "inventory change", openDetails(row),
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
				browsertest.Shoot(t, ctx, filepath.Join(dir, "fleet-view-420.png"))
				_ = chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900))
				browsertest.Shoot(t, ctx, filepath.Join(dir, "fleet-view.png"))
			}
		})
	})
}

// openDetails is a script that clicks the row matching selector until the details pane shows
// that row's asset, then returns the pane's events. Clicking from the page, again on each poll,
// survives the table being drawn anew (a live update re-reads it) between finding the row and
// clicking it.
func openDetails(selector string) string {
	return `(() => {
  const row = document.querySelector(` + strconv.Quote(selector) + `);
  const shown = row && !document.getElementById('details').hidden &&
    document.getElementById('d-fields').textContent.includes(row.dataset.assetId);
  if (!shown) {
    if (row) row.click();
    return '';
  }
  return document.getElementById('d-events').textContent;
})()`
}
