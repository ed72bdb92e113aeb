package rest

import (
	"net/http"

	"github.com/oneprotect/telemetry/internal/observe"
)

// Root wraps the server's whole mux. Every response carries X-Content-Type-Options: nosniff,
// so no browser guesses a type for an error or a JSON body; and a request that no route
// takes gets the JSON error envelope (404 not_found, or 405 method_not_allowed with Allow)
// instead of ServeMux's text/plain.
func Root(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No route: let the mux tell 404 from 405 (and compute Allow), then answer in JSON.
		rec := &statusRecorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		var body errorBody
		body.Error.RequestID = observe.RequestID(r.Context())
		status := http.StatusNotFound
		body.Error.Code, body.Error.Message = "not_found", "no such endpoint"
		if rec.status == http.StatusMethodNotAllowed {
			status = http.StatusMethodNotAllowed
			body.Error.Code, body.Error.Message = "method_not_allowed", "this endpoint does not accept "+r.Method
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
		}
		writeJSON(w, status, &body)
	})
}

// statusRecorder keeps only the status and headers of the mux's own error answer.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
func (s *statusRecorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
}
