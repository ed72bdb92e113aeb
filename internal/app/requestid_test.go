package app_test

import (
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// Every response carries X-Request-Id: the operations endpoints, static pages and the
// router's own 404 and 405 as well as the API; an error body names the same id.
func TestEveryResponseCarriesARequestID(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		for _, c := range []struct{ method, path string }{
			{"GET", "/healthz"}, {"GET", "/readyz"}, {"GET", "/metrics"}, {"GET", "/playground"},
			{"GET", "/no-such-page"}, {"GET", "/api/v1/agents/enroll"}, {"POST", "/query"},
			{"POST", "/api/v1/agents/enroll"},
		} {
			r := env.Do(c.method, c.path, "", nil)
			id := r.Header.Get("X-Request-Id")
			if id == "" {
				t.Errorf("%s %s (%d): no X-Request-Id", c.method, c.path, r.Status)
			}
			if r.Status >= 400 && strings.Contains(string(r.Body), "request_id") && !strings.Contains(string(r.Body), id) {
				t.Errorf("%s %s: body names another id than %q: %s", c.method, c.path, id, r.Body)
			}
		}
	})
}
