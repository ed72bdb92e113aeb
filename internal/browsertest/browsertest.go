// Package browsertest runs a headless Chromium for the browser tests of the pages the server
// serves (the fleet view, the playground). The network is cut for everything but the test
// server, and every request that leaves it, and every JavaScript exception, fails the test.
package browsertest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// ProbeHost is fetched on purpose, to show that the network is cut.
const ProbeHost = "example.com"

// Chromium finds a headless-capable Chromium. Locally a missing browser skips the test with a
// clear message; under CI (CI set, as .ci/run does) it fails, since CI installs it.
func Chromium(t testing.TB) string {
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

// Start starts a headless Chromium for the test, with the network cut, that may talk only to
// base's host (and try ProbeHost).
func Start(t testing.TB, base string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium(t)),
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

	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	var mu sync.Mutex
	var problems []string
	err = chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			if u, err := url.Parse(e.Request.URL); err == nil && u.Scheme != "data" && u.Host != host && u.Host != ProbeHost {
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

// NetworkIsCut fails the test unless a request from about:blank (where no page's
// Content-Security-Policy could be what blocks it) to ProbeHost fails.
func NetworkIsCut(t testing.TB, ctx context.Context) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`fetch('http://`+ProbeHost+`/', {mode: 'no-cors'}).then(() => 'reached', () => 'blocked')`, chromedp.EvalAwaitPromise))
	if err != nil || got != "blocked" {
		t.Fatalf("a request to %s: %q %v", ProbeHost, got, err)
	}
}

// WaitText evaluates js until its result satisfies ok, then returns it.
func WaitText(t testing.TB, ctx context.Context, what, js string, ok func(string) bool) string {
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

// Shoot saves a screenshot of the page.
func Shoot(t testing.TB, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
