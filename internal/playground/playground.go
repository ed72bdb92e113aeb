// Package playground serves a GraphiQL playground for the GraphQL API from
// assets embedded in the binary. Nothing is loaded from a CDN, so the
// playground works on hosts without internet access.
//
// Vendored assets (see assets/README.md for provenance and how to update):
//
//   - graphiql 3.8.3 UMD build (bundles @graphiql/react, @graphiql/toolkit,
//     graphql-js and graphql-ws), re-minified with esbuild
//   - react 18.3.1 and react-dom 18.3.1 UMD production builds
//   - graphql-ws 5.16.2 UMD build: the playground's own subscription client, so that a
//     refused connection is reported at once instead of retried
//
// Page-specific code lives in assets/playground.js and assets/playground.css,
// so the page runs under a strict Content-Security-Policy without inline
// scripts or styles.
package playground

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// DefaultEndpoint is the GraphQL endpoint path used when Handler is given an
// empty endpoint.
const DefaultEndpoint = "/query"

// DefaultTitle is the page title used when Handler is given an empty title.
const DefaultTitle = "GraphQL Playground"

//go:embed assets index.html
var files embed.FS

// Asset file names. Vendored files carry their upstream version in the name,
// so they can be cached forever (immutable).
const (
	graphiqlJS    = "graphiql-3.8.3.min.js"
	graphiqlCSS   = "graphiql-3.8.3.min.css"
	reactJS       = "react-18.3.1.production.min.js"
	reactDOMJS    = "react-dom-18.3.1.production.min.js"
	graphqlWSJS   = "graphql-ws-5.16.2.min.js"
	playgroundJS  = "playground.js"
	playgroundCSS = "playground.css"
)

const (
	contentTypeJS   = "text/javascript; charset=utf-8"
	contentTypeCSS  = "text/css; charset=utf-8"
	contentTypeHTML = "text/html; charset=utf-8"

	cacheImmutable = "public, max-age=31536000, immutable"
	// Own, unversioned files and the page: always revalidate (ETag).
	cacheRevalidate = "no-cache"
)

type asset struct {
	contentType  string
	cacheControl string
	body         []byte
	etag         string

	gzOnce sync.Once
	gzBody []byte // nil if compression does not pay off
	gzEtag string
}

// gzipped returns the gzip-compressed body, computed on first use.
func (a *asset) gzipped() ([]byte, string) {
	a.gzOnce.Do(func() {
		if len(a.body) < 1024 {
			return
		}
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		if err != nil {
			return
		}
		if _, err := zw.Write(a.body); err != nil {
			return
		}
		if err := zw.Close(); err != nil {
			return
		}
		if buf.Len() < len(a.body) {
			a.gzBody = buf.Bytes()
			a.gzEtag = strings.TrimSuffix(a.etag, `"`) + `-gzip"`
		}
	})
	return a.gzBody, a.gzEtag
}

var (
	assets    map[string]*asset
	indexTmpl *template.Template
)

func init() {
	assets = map[string]*asset{
		graphiqlJS:    mustAsset(graphiqlJS, contentTypeJS, cacheImmutable),
		graphiqlCSS:   mustAsset(graphiqlCSS, contentTypeCSS, cacheImmutable),
		reactJS:       mustAsset(reactJS, contentTypeJS, cacheImmutable),
		reactDOMJS:    mustAsset(reactDOMJS, contentTypeJS, cacheImmutable),
		graphqlWSJS:   mustAsset(graphqlWSJS, contentTypeJS, cacheImmutable),
		playgroundJS:  mustAsset(playgroundJS, contentTypeJS, cacheRevalidate),
		playgroundCSS: mustAsset(playgroundCSS, contentTypeCSS, cacheRevalidate),
	}
	indexTmpl = template.Must(template.ParseFS(files, "index.html"))
}

func mustAsset(name, contentType, cacheControl string) *asset {
	body, err := fs.ReadFile(files, "assets/"+name)
	if err != nil {
		panic("playground: missing embedded asset: " + err.Error())
	}
	return &asset{
		contentType:  contentType,
		cacheControl: cacheControl,
		body:         body,
		etag:         etagOf(body),
	}
}

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

type handler struct {
	mount        string // normalized, no trailing slash; "" for root
	assetsPrefix string // mount + "/assets/"
	page         *asset
	extraConnect string // CSP connect-src sources for a cross-origin endpoint
}

// Handler serves the playground page at mountPath (e.g. "/playground") and
// its assets under mountPath+"/assets/". endpoint is the GraphQL endpoint
// the playground talks to: a path on the same origin (default "/query") or
// an absolute http(s) URL. Subscriptions use the same endpoint over
// ws:// or wss:// (graphql-transport-ws).
//
// The handler expects to see the full request path (do not wrap it in
// http.StripPrefix). With http.ServeMux register both patterns:
//
//	h := playground.Handler("Telemetry API", "/playground", "/query")
//	mux.Handle("/playground", h)
//	mux.Handle("/playground/", h)
//
// The page is served at mountPath and mountPath+"/"; any other path under
// mountPath, including unknown assets, gets 404. Only GET and HEAD are
// allowed.
func Handler(title, mountPath, endpoint string) http.Handler {
	if title == "" {
		title = DefaultTitle
	}
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	mount := "/" + strings.Trim(mountPath, "/")
	if mount != "/" {
		mount = path.Clean(mount)
	}
	if mount == "/" {
		mount = ""
	}
	h := &handler{
		mount:        mount,
		assetsPrefix: mount + "/assets/",
		extraConnect: crossOriginConnectSrc(endpoint),
	}

	var buf bytes.Buffer
	err := indexTmpl.Execute(&buf, struct {
		Title, Assets, Endpoint                 string
		GraphiQLJS, GraphiQLCSS, ReactJS        string
		ReactDOMJS, PlaygroundJS, PlaygroundCSS string
		GraphQLWSJS                             string
	}{
		Title:         title,
		Assets:        mount + "/assets",
		Endpoint:      endpoint,
		GraphiQLJS:    graphiqlJS,
		GraphiQLCSS:   graphiqlCSS,
		ReactJS:       reactJS,
		ReactDOMJS:    reactDOMJS,
		GraphQLWSJS:   graphqlWSJS,
		PlaygroundJS:  playgroundJS,
		PlaygroundCSS: playgroundCSS,
	})
	if err != nil {
		// The template is embedded and the data is plain strings, so this
		// is a programming error.
		panic("playground: render index.html: " + err.Error())
	}
	h.page = &asset{
		contentType:  contentTypeHTML,
		cacheControl: cacheRevalidate,
		body:         buf.Bytes(),
		etag:         etagOf(buf.Bytes()),
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	var a *asset
	isPage := false
	switch {
	case p == h.mount || p == h.mount+"/":
		a, isPage = h.page, true
	case strings.HasPrefix(p, h.assetsPrefix):
		a = assets[strings.TrimPrefix(p, h.assetsPrefix)]
	}
	if a == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}

	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Cache-Control", a.cacheControl)
	hdr.Set("X-Content-Type-Options", "nosniff")
	if isPage {
		hdr.Set("Content-Security-Policy", h.csp(r))
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	}

	body, etag := a.body, a.etag
	hdr.Add("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		if gz, gzEtag := a.gzipped(); gz != nil {
			body, etag = gz, gzEtag
			hdr.Set("Content-Encoding", "gzip")
		}
	}
	hdr.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// scrollLockStyleHash is the CSP hash of the one <style> element GraphiQL
// injects at runtime: react-remove-scroll-bar adds it while a modal dialog
// (settings, keyboard shortcuts) is open. Its content is constant because the
// page body never scrolls (see playground.css). Without the hash the browser
// blocks it (harmless, since the body does not scroll anyway) and logs a CSP
// violation. Regenerate it from the browser console message if GraphiQL is
// upgraded.
const scrollLockStyleHash = "'sha256-Y/huXlwoYkVyQlxwSVcCi1RCDGDCSVBzDt0hYP9qlTc='"

// csp returns the Content-Security-Policy for the page. Scripts and styles
// are only loaded from the page's origin; fonts are embedded in the GraphiQL
// stylesheet as data: URIs. connect-src allows the endpoint over HTTP and
// WebSocket; ws:/wss: for the page's own host is listed explicitly because
// older browsers do not match WebSocket URLs against 'self'.
func (h *handler) csp(r *http.Request) string {
	connect := SelfConnectSrc(r) + h.extraConnect
	return "default-src 'none'; " +
		"script-src 'self'; " +
		"style-src 'self' " + scrollLockStyleHash + "; " +
		"font-src 'self' data:; " +
		"img-src 'self' data:; " +
		"connect-src " + connect + "; " +
		"base-uri 'none'; " +
		"form-action 'none'; " +
		"frame-ancestors 'none'"
}

// SelfConnectSrc is the CSP connect-src that lets a page of this server call its own API over
// HTTP and WebSocket: ws:/wss: for the request's host are listed because older browsers do not
// match WebSocket URLs against 'self'. The fleet view shares it.
func SelfConnectSrc(r *http.Request) string {
	connect := "'self'"
	if validHost(r.Host) {
		connect += " ws://" + r.Host + " wss://" + r.Host
	}
	return connect
}

// crossOriginConnectSrc returns extra connect-src sources (with a leading
// space) when endpoint is an absolute http(s) URL, else "".
func crossOriginConnectSrc(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || !validHost(u.Host) {
		return ""
	}
	switch u.Scheme {
	case "http":
		return " http://" + u.Host + " ws://" + u.Host
	case "https":
		return " https://" + u.Host + " wss://" + u.Host
	}
	return ""
}

// validHost reports whether host (host[:port], possibly a bracketed IPv6
// literal) is safe to copy into a CSP header.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
