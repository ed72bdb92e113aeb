// Package web serves the fleet view at /: a single page, embedded in the binary (no CDN, so it
// works without internet access), that reads the fleet through the GraphQL API with a token
// the user pastes and follows it live through the assetUpdated subscription. It holds no data
// and no credential of its own: everything it shows comes from /query under that token.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/playground"
)

//go:embed index.html assets
var files embed.FS

// AssetsPrefix is where the page's script and stylesheet are served.
const AssetsPrefix = "/ui/"

type file struct {
	contentType string
	body        []byte
	etag        string
}

func load(name, contentType string) *file {
	body, err := files.ReadFile(name)
	if err != nil {
		panic("web: missing embedded file: " + err.Error())
	}
	sum := sha256.Sum256(body)
	return &file{contentType: contentType, body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

var (
	page   = load("index.html", "text/html; charset=utf-8")
	assets = map[string]*file{
		"fleet.js":  load("assets/fleet.js", "text/javascript; charset=utf-8"),
		"fleet.css": load("assets/fleet.css", "text/css; charset=utf-8"),
	}
)

// Handler serves the page at "/" and its assets under AssetsPrefix. Register it as
//
//	mux.Handle("GET /{$}", h)
//	mux.Handle("GET /ui/", h)
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := page
		if r.URL.Path != "/" {
			f = assets[strings.TrimPrefix(r.URL.Path, AssetsPrefix)]
		}
		if f == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("Cache-Control", "no-cache") // revalidated with the ETag: a new binary shows at once
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if f == page {
			h.Set("Content-Security-Policy", csp(r))
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Cross-Origin-Opener-Policy", "same-origin")
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}

// csp allows nothing but the page's own script and stylesheet and its calls to /query: no
// inline code, no other origin.
func csp(r *http.Request) string {
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src " + playground.SelfConnectSrc(r) + "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
