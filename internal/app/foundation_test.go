package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/testenv"
)

func TestFoundation(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		a := env.Tenant("Acme")
		b := env.Tenant("Globex")

		t.Run("viewer", func(t *testing.T) {
			d := env.MustGQL(a.AdminToken, `{ viewer { kind role tenant { slug } } }`, nil)
			v := d["viewer"].(map[string]any)
			if v["kind"] != "USER" || v["role"] != "ADMIN" || v["tenant"].(map[string]any)["slug"] != a.Slug {
				t.Fatalf("viewer = %v", v)
			}
		})

		t.Run("anonymous is unauthenticated", func(t *testing.T) {
			for _, q := range []string{`{ viewer { id } }`, `{ sites { id } }`, `mutation { createSite(input: {name: "x"}) { id } }`} {
				if r := env.GQL("", q, nil); r.Code() != "UNAUTHENTICATED" {
					t.Errorf("%s: code %q, want UNAUTHENTICATED (%s)", q, r.Code(), r.Raw)
				}
			}
			if r := env.GQL("opu_not-a-real-token", `{ viewer { id } }`, nil); r.Code() != "UNAUTHENTICATED" {
				t.Errorf("bad token: %s", r.Raw)
			}
		})

		t.Run("introspection without a token", func(t *testing.T) {
			d := env.MustGQL("", `{ __schema { queryType { name } } }`, nil)
			if d["__schema"] == nil {
				t.Fatal("no schema")
			}
		})

		t.Run("admin creates sites, viewer is forbidden", func(t *testing.T) {
			env.Site(a, "HQ")
			r := env.GQL(a.ViewerToken, `mutation { createSite(input: {name: "Branch"}) { id } }`, nil)
			if r.Code() != "FORBIDDEN" {
				t.Fatalf("viewer createSite: %s", r.Raw)
			}
			r = env.GQL(a.AdminToken, `mutation { createSite(input: {name: "HQ"}) { id } }`, nil)
			if r.Code() != "CONFLICT" {
				t.Fatalf("duplicate site name: %s", r.Raw)
			}
			r = env.GQL(a.AdminToken, `mutation { createSite(input: {name: "  "}) { id } }`, nil)
			if r.Code() != "INVALID_REQUEST" {
				t.Fatalf("blank site name: %s", r.Raw)
			}
		})

		t.Run("tenants never see each other's sites", func(t *testing.T) {
			env.Site(b, "Globex Only")
			for _, tc := range []struct {
				tok, want, not string
			}{{a.ViewerToken, "HQ", "Globex Only"}, {b.ViewerToken, "Globex Only", "HQ"}} {
				d := env.MustGQL(tc.tok, `{ sites { name } }`, nil)
				names := []string{}
				for _, s := range d["sites"].([]any) {
					names = append(names, s.(map[string]any)["name"].(string))
				}
				joined := strings.Join(names, ",")
				if !strings.Contains(joined, tc.want) || strings.Contains(joined, tc.not) {
					t.Fatalf("sites = %v", names)
				}
			}
		})

		t.Run("token in the query string is ignored", func(t *testing.T) {
			r := env.Do(http.MethodGet, "/query?query=%7Bviewer%7Bid%7D%7D&access_token="+a.AdminToken, "", nil)
			if !strings.Contains(string(r.Body), "UNAUTHENTICATED") {
				t.Fatalf("token in URL accepted: %s", r.Body)
			}
		})

		t.Run("health", func(t *testing.T) {
			for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
				if r := env.Do(http.MethodGet, p, "", nil); r.Status != 200 {
					t.Errorf("%s: %d", p, r.Status)
				}
			}
		})
	})
}
