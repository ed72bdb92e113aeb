package app_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/apidoc"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The served document is the embedded one and is a valid OpenAPI 3.1 document; every REST
// answer the tests get goes through testenv.CheckOpenAPI (in Env.Do), and this test makes
// each documented status happen at least once.
func TestOpenAPIDocumentDescribesTheRealAnswers(t *testing.T) {
	if _, err := testenv.OpenAPIRouter(); err != nil {
		t.Fatalf("the OpenAPI document does not validate: %v", err)
	}
	t.Run("the validator refuses an answer that breaks the document", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/agents/x/telemetry/heartbeat", nil)
		h := http.Header{"Content-Type": {"application/json"}}
		if err := testenv.CheckOpenAPI(req, 200, h, []byte(`{"accepted": "yes"}`)); err == nil {
			t.Fatal("a 200 heartbeat answer without its fields passed")
		}
		if err := testenv.CheckOpenAPI(req, 404, h, []byte(`{"message": "no"}`)); err == nil {
			t.Fatal("an error without the envelope passed")
		}
	})

	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		r := env.Do("GET", "/openapi.json", "", nil)
		if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || string(r.Body) != string(apidoc.OpenAPI) {
			t.Fatalf("/openapi.json: %d %s", r.Status, r.Header.Get("Content-Type"))
		}
		var doc struct {
			OpenAPI string `json:"openapi"`
		}
		if json.Unmarshal(r.Body, &doc) != nil || doc.OpenAPI != "3.1.0" {
			t.Fatalf("openapi = %q", doc.OpenAPI)
		}

		f := env.NewFleet("Spec Co")
		tok := env.EnrollmentToken(f.Tenant, f.SiteID, nil, 5)
		hb := "/api/v1/agents/" + f.Agent.ID + "/telemetry/heartbeat"
		body := map[string]any{"heartbeat_id": "spec-1", "hostname": "spec-host", "inventory": map[string]any{"cpu_count": 2}}
		for _, c := range []struct {
			name, method, path, token string
			body                      any
			header                    []string
			status                    int
		}{
			{"enroll", "POST", "/api/v1/agents/enroll", "", map[string]any{"enrollment_token": tok, "hostname": "h"}, nil, 201},
			{"enroll bad token", "POST", "/api/v1/agents/enroll", "", map[string]any{"enrollment_token": "opet_nope"}, nil, 401},
			{"enroll bad json", "POST", "/api/v1/agents/enroll", "", `{"enrollment_token": 1}`, nil, 400},
			{"enroll media type", "POST", "/api/v1/agents/enroll", "", `{}`, []string{"Content-Type", "text/plain"}, 415},
			{"enroll too large", "POST", "/api/v1/agents/enroll", "", `{"hostname":"` + strings.Repeat("a", 2<<20) + `"}`, nil, 413},
			{"heartbeat", "POST", hb, f.Agent.Token, body, nil, 200},
			{"duplicate", "POST", hb, f.Agent.Token, body, nil, 200},
			{"conflict", "POST", hb, f.Agent.Token, map[string]any{"heartbeat_id": "spec-1", "hostname": "other"}, nil, 409},
			{"no token", "POST", hb, "", body, nil, 401},
			{"user token", "POST", hb, f.Tenant.AdminToken, body, nil, 403},
			{"identity override", "POST", hb, f.Agent.Token, map[string]any{"tenant_id": "someone-else"}, nil, 403},
			{"unknown agent", "POST", "/api/v1/agents/01a00000-0000-7000-8000-000000000000/telemetry/heartbeat", f.Agent.Token, body, nil, 401},
			{"bad field", "POST", hb, f.Agent.Token, map[string]any{"hostname": strings.Repeat("h", 300)}, nil, 400},
			{"healthz", "GET", "/healthz", "", nil, nil, 200},
			{"readyz", "GET", "/readyz", "", nil, nil, 200},
			{"metrics", "GET", "/metrics", "", nil, nil, 200},
		} {
			r := env.Do(c.method, c.path, c.token, c.body, c.header...) // Do checks the answer against the document
			if r.Status != c.status {
				t.Errorf("%s: status %d, want %d: %s", c.name, r.Status, c.status, r.Body)
			}
		}
	})
}
