package rest

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/oneprotect/telemetry/internal/engine"
	"github.com/oneprotect/telemetry/internal/observe"
)

// The prebuilt answer to a request shed at capacity is the one the encoder writes: the same
// status, headers and bytes as writeError gives an equal error that is not engine.ErrOverloaded
// itself (and so takes the general path), the request id included.
func TestShedAnswerIsTheEncodedOne(t *testing.T) {
	var req *http.Request
	observe.WithRequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { req = r })).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", nil))
	id := observe.RequestID(req.Context())
	if id == "" {
		t.Fatal("no request id")
	}
	log := slog.New(slog.DiscardHandler)
	fast := httptest.NewRecorder()
	writeError(fast, req, log, engine.ErrOverloaded)
	same := *engine.ErrOverloaded
	slow := httptest.NewRecorder()
	writeError(slow, req, log, &same)

	if fast.Code != http.StatusServiceUnavailable || slow.Code != fast.Code {
		t.Errorf("status: shed %d, encoded %d", fast.Code, slow.Code)
	}
	for _, k := range []string{"Content-Type", "Cache-Control", "Retry-After"} {
		if fast.Header().Get(k) == "" || fast.Header().Get(k) != slow.Header().Get(k) {
			t.Errorf("%s: shed %q, encoded %q", k, fast.Header().Get(k), slow.Header().Get(k))
		}
	}
	if fast.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", fast.Header().Get("Retry-After"))
	}
	if !bytes.Equal(fast.Body.Bytes(), slow.Body.Bytes()) || !bytes.Contains(fast.Body.Bytes(), []byte(`"request_id":"`+id+`"`)) {
		t.Errorf("body:\nshed    %q\nencoded %q", fast.Body, slow.Body)
	}
}
