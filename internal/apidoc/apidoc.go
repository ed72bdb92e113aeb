// Package apidoc holds the OpenAPI 3.1 description of the REST endpoints, served at
// /openapi.json. Tests validate the server's real REST answers against it.
package apidoc

import (
	"bytes"
	_ "embed"
	"net/http"
	"time"
)

// OpenAPI is the document (JSON).
//
//go:embed openapi.json
var OpenAPI []byte

// Handler serves the document.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(OpenAPI))
	})
}
