package playground_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/oneprotect/telemetry/internal/browsertest"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Selectors into GraphiQL 3's page: its editors are CodeMirror 5 instances, reachable from the
// element as .CodeMirror. The editor tools hold the variables editor first, the headers second.
const (
	jsQueryEditor   = `document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror`
	jsHeadersEditor = `document.querySelectorAll('.graphiql-editor-tool .graphiql-editor')[1].querySelector('.CodeMirror').CodeMirror`
	jsResult        = `(() => { const e = document.querySelector('.result-window .CodeMirror'); return e ? e.CodeMirror.getValue() : '' })()`
)

func TestPlaygroundInABrowser(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		fleet := env.NewFleet("Playground Co")
		beat := func(id, hostname string) {
			t.Helper()
			r := env.Do("POST", "/api/v1/agents/"+fleet.Agent.ID+"/telemetry/heartbeat", fleet.Agent.Token,
				map[string]any{"heartbeat_id": id, "hostname": hostname, "agent_version": "1.0.0"})
			if r.Status != 200 {
				t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
			}
		}
		beat("first", "pg-01")

		// The browser talks to the service through this counter of WebSocket handshakes on
		// /query: a client that retries a refused subscription shows up here.
		var wsAttempts atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/query" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				wsAttempts.Add(1)
			}
			env.App.Handler.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)

		ctx := browsertest.Start(t, srv.URL)
		t.Run("the network is cut", func(t *testing.T) { browsertest.NetworkIsCut(t, ctx) })

		// run opens the playground, puts token in the headers editor and query in the query
		// editor, and presses the run button.
		run := func(t *testing.T, token, query string) {
			t.Helper()
			if err := chromedp.Do(ctx,
				chromedp.Navigate(srv.URL+"/playground"),
				chromedp.WaitVisible(chromedp.CSS(".graphiql-execute-button")),
				chromedp.WaitVisible(chromedp.CSS(".graphiql-query-editor .CodeMirror")),
			); err != nil {
				t.Fatal(err)
			}
			headers := fmt.Sprintf(`{"Authorization": "Bearer %s"}`, token)
			js := fmt.Sprintf(`%s.setValue(%q); %s.setValue(%q); true`, jsHeadersEditor, headers, jsQueryEditor, query)
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err != nil {
				t.Fatal(err)
			}
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".graphiql-execute-button"))); err != nil {
				t.Fatal(err)
			}
		}

		t.Run("a query runs", func(t *testing.T) {
			run(t, fleet.Tenant.ViewerToken, `{ viewer { kind role tenant { slug } } }`)
			got := browsertest.WaitText(t, ctx, "result", jsResult, func(s string) bool { return s != "" })
			if !strings.Contains(got, `"slug": "`+fleet.Tenant.Slug+`"`) || !strings.Contains(got, `"role": "VIEWER"`) {
				t.Fatalf("result pane: %s", got)
			}
		})

		t.Run("a subscription streams", func(t *testing.T) {
			run(t, fleet.Tenant.ViewerToken, `subscription { assetUpdated { id hostname } }`)
			// The subscription is registered a moment after the button is pressed; a heartbeat
			// sent before that is missed, so one is sent until the result pane shows one.
			for i := 0; ; i++ {
				host := fmt.Sprintf("pg-01-live-%d", i)
				beat(fmt.Sprintf("live-%d", i), host)
				got := ""
				for range 20 {
					var err error
					if got, err = chromedp.Run(ctx, chromedp.Evaluate[string](jsResult)); err != nil {
						t.Fatal(err)
					}
					if strings.Contains(got, "pg-01-live-") {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if strings.Contains(got, "pg-01-live-") {
					if !strings.Contains(got, fleet.Agent.AssetID) {
						t.Fatalf("result pane: %s", got)
					}
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("no update came through; result pane: %q (%d ws)", got, wsAttempts.Load())
				}
			}
		})

		t.Run("a bad token errors at once", func(t *testing.T) {
			before := wsAttempts.Load()
			run(t, "opu_not-a-real-token", `subscription { assetUpdated { id hostname } }`)
			got := browsertest.WaitText(t, ctx, "result", jsResult, func(s string) bool { return s != "" })
			attempts := wsAttempts.Load() - before
			if attempts < 1 || attempts > 2 {
				t.Errorf("%d WebSocket connection attempts for one refused subscription", attempts)
			}
			if !strings.Contains(got, "refused the token") || strings.Contains(got, ".js:") || strings.Contains(got, `"stack"`) {
				t.Errorf("result pane: %s", got)
			}
			t.Logf("shown: %s", got)
			running, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector('.graphiql-execute-button[aria-label^="Stop"]')`))
			if err != nil || running {
				t.Errorf("the playground still runs the refused subscription (%v)", err)
			}
		})

		t.Run("the result pane stays at 420 px", func(t *testing.T) {
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(420, 800)); err != nil {
				t.Fatal(err)
			}
			// A query right after a subscription: GraphiQL still hands the fetcher the old
			// document for a moment, which must not send the query to the WebSocket.
			run(t, fleet.Tenant.ViewerToken, `{ viewer { kind } }`)
			browsertest.WaitText(t, ctx, "result", jsResult, func(s string) bool { return strings.Contains(s, "USER") })
			box, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](
				`(() => { const r = document.querySelector('.graphiql-response').getBoundingClientRect();
				  return {left: r.left, right: r.right, width: r.width, height: r.height, vw: window.innerWidth,
				          page: document.documentElement.scrollWidth} })()`))
			if err != nil {
				t.Fatal(err)
			}
			if dir := os.Getenv("ONEPROTECT_SCREENSHOTS"); dir != "" {
				browsertest.Shoot(t, ctx, filepath.Join(dir, "playground-420.png"))
			}
			// Readable: most of the screen's width, some height, and inside the screen.
			if box["width"] < box["vw"]*0.6 || box["height"] < 150 || box["right"] > box["vw"]+1 || box["page"] > box["vw"]+1 {
				t.Fatalf("result pane at 420 px: %v", box)
			}
		})
	})
}
