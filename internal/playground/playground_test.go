package playground

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// refsRE matches src/href attribute values in the page.
var refsRE = regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*"([^"]*)"`)

func pageRefs(t *testing.T, html string) []string {
	t.Helper()
	var refs []string
	for _, m := range refsRE.FindAllStringSubmatch(html, -1) {
		refs = append(refs, m[1])
	}
	if len(refs) == 0 {
		t.Fatal("page references no assets")
	}
	return refs
}

func TestPage(t *testing.T) {
	h := Handler("Telemetry API", "/playground", "/query")
	for _, target := range []string{"/playground", "/playground/"} {
		rec := get(t, h, http.MethodGet, target, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: status %d", target, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", target, ct)
		}
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", target, got)
		}
		csp := rec.Header().Get("Content-Security-Policy")
		for _, want := range []string{
			"default-src 'none'",
			"script-src 'self';",
			"style-src 'self' ",
			"connect-src 'self' ws://example.com wss://example.com;",
			"frame-ancestors 'none'",
		} {
			if !strings.Contains(csp, want) {
				t.Errorf("CSP %q lacks %q", csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("CSP is not strict: %q", csp)
		}

		body := rec.Body.String()
		for _, name := range []string{graphiqlJS, graphiqlCSS, reactJS, reactDOMJS, graphqlWSJS, playgroundJS, playgroundCSS} {
			if !strings.Contains(body, `"/playground/assets/`+name+`"`) {
				t.Errorf("page does not reference asset %s", name)
			}
		}
		if !strings.Contains(body, `data-endpoint="/query"`) {
			t.Error("page does not carry the endpoint")
		}
		if !strings.Contains(body, "<title>Telemetry API</title>") {
			t.Error("page does not carry the title")
		}
	}
}

func TestPageHasNoInlineScriptOrExternalURLs(t *testing.T) {
	rec := get(t, Handler("", "/playground", ""), http.MethodGet, "/playground", nil)
	body := rec.Body.String()
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, `"//`) {
		t.Errorf("page contains an absolute URL:\n%s", body)
	}
	for _, ref := range pageRefs(t, body) {
		if ref != "data:," && !strings.HasPrefix(ref, "/playground/assets/") {
			t.Errorf("page references %q outside the playground assets", ref)
		}
	}
	// Every <script> must load a same-origin file (script-src 'self').
	for _, m := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(body, -1) {
		if !strings.Contains(m[1], `src="/playground/assets/`) || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline or foreign script: %q", m[0])
		}
	}
	if strings.Contains(strings.ToLower(body), "<style") || strings.Contains(strings.ToLower(body), " style=") {
		t.Error("page contains inline styles")
	}
}

func TestAssets(t *testing.T) {
	h := Handler("", "/playground", "/query")
	page := get(t, h, http.MethodGet, "/playground", nil).Body.String()
	seen := 0
	for _, ref := range pageRefs(t, page) {
		if strings.HasPrefix(ref, "data:") {
			continue
		}
		seen++
		wantCT := map[bool]string{true: "text/javascript; charset=utf-8", false: "text/css; charset=utf-8"}[strings.HasSuffix(ref, ".js")]

		rec := get(t, h, http.MethodGet, ref, nil)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: status %d", ref, rec.Code)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); ct != wantCT {
			t.Errorf("GET %s: Content-Type %q, want %q", ref, ct, wantCT)
		}
		if rec.Body.Len() == 0 {
			t.Errorf("GET %s: empty body", ref)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: missing nosniff", ref)
		}
		if rec.Header().Get("Content-Encoding") != "" {
			t.Errorf("GET %s: encoded without Accept-Encoding", ref)
		}
		cc := rec.Header().Get("Cache-Control")
		versioned := strings.Contains(ref, "-3.8.3.") || strings.Contains(ref, "-18.3.1.") || strings.Contains(ref, "-5.16.2.")
		if versioned && !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s: Cache-Control %q, want immutable", ref, cc)
		}
		if !versioned && cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", ref, cc)
		}
		if bytes.Contains(rec.Body.Bytes(), []byte("sourceMappingURL=")) {
			t.Errorf("GET %s: references a source map that is not shipped", ref)
		}

		// Compressed variant decodes to the same bytes.
		gz := get(t, h, http.MethodGet, ref, map[string]string{"Accept-Encoding": "br, gzip"})
		if gz.Code != http.StatusOK {
			t.Errorf("GET %s (gzip): status %d", ref, gz.Code)
			continue
		}
		if gz.Header().Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(gz.Body)
			if err != nil {
				t.Fatalf("GET %s: %v", ref, err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("GET %s: %v", ref, err)
			}
			if !bytes.Equal(plain, rec.Body.Bytes()) {
				t.Errorf("GET %s: gzip body differs", ref)
			}
			if gz.Header().Get("ETag") == rec.Header().Get("ETag") {
				t.Errorf("GET %s: gzip and identity share an ETag", ref)
			}
		} else if rec.Body.Len() > 4096 {
			t.Errorf("GET %s: large asset not compressed", ref)
		}

		// Conditional request.
		etag := rec.Header().Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", ref)
		} else if c := get(t, h, http.MethodGet, ref, map[string]string{"If-None-Match": etag}); c.Code != http.StatusNotModified {
			t.Errorf("GET %s If-None-Match: status %d", ref, c.Code)
		}

		// HEAD
		if hd := get(t, h, http.MethodHead, ref, nil); hd.Code != http.StatusOK || hd.Body.Len() != 0 {
			t.Errorf("HEAD %s: status %d, %d body bytes", ref, hd.Code, hd.Body.Len())
		}
	}
	if seen != 7 {
		t.Errorf("page references %d assets, want 7", seen)
	}
}

func TestNotFound(t *testing.T) {
	h := Handler("", "/playground", "/query")
	for _, target := range []string{
		"/playground/assets/",
		"/playground/assets/unknown.js",
		"/playground/assets/graphiql.min.js",
		"/playground/assets/LICENSES/react.LICENSE",
		"/playground/assets/README.md",
		"/playground/assets/../index.html",
		"/playground/index.html",
		"/playground/other",
		"/playgroundx",
		"/query",
		"/",
	} {
		if rec := get(t, h, http.MethodGet, target, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", target, rec.Code)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := Handler("", "/playground", "/query")
	for _, target := range []string{"/playground", "/playground/assets/" + playgroundJS} {
		rec := get(t, h, http.MethodPost, target, nil)
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: status %d, want 405", target, rec.Code)
		}
		if rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: Allow %q", target, rec.Header().Get("Allow"))
		}
	}
}

func TestMountPathAndEscaping(t *testing.T) {
	h := Handler(`<b>"API"</b>`, "pg/", "/api/graphql?x=1&y=2")
	rec := get(t, h, http.MethodGet, "/pg", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	if strings.Contains(body, "<b>") {
		t.Error("title is not escaped")
	}
	if !strings.Contains(body, `data-endpoint="/api/graphql?x=1&amp;y=2"`) {
		t.Errorf("endpoint not rendered as expected:\n%s", body)
	}
	if !strings.Contains(body, `src="/pg/assets/`+graphiqlJS+`"`) {
		t.Error("assets not under the mount path")
	}
	if rec := get(t, h, http.MethodGet, "/pg/assets/"+graphiqlCSS, nil); rec.Code != http.StatusOK {
		t.Errorf("asset under /pg: status %d", rec.Code)
	}
}

func TestRootMountDefaults(t *testing.T) {
	h := Handler("", "/", "")
	rec := get(t, h, http.MethodGet, "/", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	if !strings.Contains(body, `data-endpoint="/query"`) || !strings.Contains(body, "<title>"+DefaultTitle+"</title>") {
		t.Errorf("defaults not applied:\n%s", body)
	}
	if rec := get(t, h, http.MethodGet, "/assets/"+reactJS, nil); rec.Code != http.StatusOK {
		t.Errorf("asset at root mount: status %d", rec.Code)
	}
}

func TestCSPConnectSrc(t *testing.T) {
	h := Handler("", "/playground", "https://api.example.net:8443/query")
	req := httptest.NewRequest(http.MethodGet, "/playground", nil)
	req.Host = "ops.example.com"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	csp := rec.Header().Get("Content-Security-Policy")
	want := "connect-src 'self' ws://ops.example.com wss://ops.example.com https://api.example.net:8443 wss://api.example.net:8443;"
	if !strings.Contains(csp, want) {
		t.Errorf("CSP %q lacks %q", csp, want)
	}

	// A hostile Host header must not be able to inject CSP directives.
	req = httptest.NewRequest(http.MethodGet, "/playground", nil)
	req.Host = "evil.example; script-src *"
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if csp := rec.Header().Get("Content-Security-Policy"); strings.Contains(csp, "evil") || strings.Contains(csp, "script-src *") {
		t.Errorf("Host header leaked into CSP: %q", csp)
	}
}

func TestBootstrapConfig(t *testing.T) {
	js := string(assets[playgroundJS].body)
	for _, want := range []string{
		`"Authorization": "Bearer <paste token here>"`,
		"createFetcher(",
		"graphqlWs.createClient(",
		"retryAttempts:",
		"shouldRetry:",
		"4403:",
		"'wss:' : 'ws:'",
		"defaultEditorToolsVisibility: 'headers'",
		"shouldPersistHeaders: false",
		"viewer {",
		"tenant {",
	} {
		if !strings.Contains(js, want) {
			t.Errorf("playground.js lacks %q", want)
		}
	}
	for name, a := range map[string]*asset{playgroundJS: assets[playgroundJS], playgroundCSS: assets[playgroundCSS]} {
		if bytes.Contains(a.body, []byte("http://")) || bytes.Contains(a.body, []byte("https://")) {
			t.Errorf("%s contains an absolute URL", name)
		}
	}
}

// TestStylesLoadNothingExternal checks that stylesheets only reference
// embedded data: URIs (GraphiQL inlines its fonts) and import nothing.
func TestStylesLoadNothingExternal(t *testing.T) {
	urlRE := regexp.MustCompile(`url\(\s*['"]?([^'")]*)`)
	for _, name := range []string{graphiqlCSS, playgroundCSS} {
		css := assets[name].body
		if bytes.Contains(css, []byte("@import")) {
			t.Errorf("%s uses @import", name)
		}
		for _, m := range urlRE.FindAllSubmatch(css, -1) {
			if !bytes.HasPrefix(m[1], []byte("data:")) {
				t.Errorf("%s loads %q", name, m[1])
			}
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{
		"":                    false,
		"gzip":                true,
		"br, gzip, deflate":   true,
		"gzip;q=0":            false,
		"gzip; q=0.5":         true,
		"x-gzip":              false,
		"identity, GZIP;q=1":  true,
		"deflate, br;q=1.0, ": false,
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if v != "" {
			req.Header.Set("Accept-Encoding", v)
		}
		if got := acceptsGzip(req); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", v, got, want)
		}
	}
}
