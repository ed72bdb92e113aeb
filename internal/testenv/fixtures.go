package testenv

import (
	"context"
	"net/http"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Tenant is a tenant with an admin and a viewer token.
type Tenant struct {
	ID, Slug    string
	AdminToken  string
	ViewerToken string
}

// Tenant creates a tenant with an ADMIN and a VIEWER user (through the same service the CLI
// uses).
func (e *Env) Tenant(name string) *Tenant {
	e.T.Helper()
	ctx := context.Background()
	t, err := e.App.Tenancy.CreateTenant(ctx, name+" "+Unique(), "")
	if err != nil {
		e.T.Fatal(err)
	}
	_, admin, err := e.App.Tenancy.CreateUser(ctx, t.ID, "admin", domain.RoleAdmin)
	if err != nil {
		e.T.Fatal(err)
	}
	_, viewer, err := e.App.Tenancy.CreateUser(ctx, t.ID, "viewer", domain.RoleViewer)
	if err != nil {
		e.T.Fatal(err)
	}
	return &Tenant{ID: t.ID, Slug: t.Slug, AdminToken: admin, ViewerToken: viewer}
}

// Site creates a site through GraphQL and returns its id.
func (e *Env) Site(t *Tenant, name string) string {
	e.T.Helper()
	d := e.MustGQL(t.AdminToken, `mutation($n: String!) { createSite(input: {name: $n}) { id } }`, map[string]any{"n": name})
	return d["createSite"].(map[string]any)["id"].(string)
}

// Collector creates a collector through GraphQL; it returns its id and token.
func (e *Env) Collector(t *Tenant, siteID, name string) (id, token string) {
	e.T.Helper()
	d := e.MustGQL(t.AdminToken, `mutation($s: ID!, $n: String!) { createCollector(input: {siteId: $s, name: $n}) { token collector { id } } }`,
		map[string]any{"s": siteID, "n": name})
	p := d["createCollector"].(map[string]any)
	return p["collector"].(map[string]any)["id"].(string), p["token"].(string)
}

// EnrollmentToken mints an enrollment token through GraphQL.
func (e *Env) EnrollmentToken(t *Tenant, siteID string, collectorID *string, maxUses int) string {
	e.T.Helper()
	vars := map[string]any{"s": siteID, "m": maxUses}
	if collectorID != nil {
		vars["c"] = *collectorID
	}
	d := e.MustGQL(t.AdminToken, `mutation($s: ID!, $c: ID, $m: Int) { createEnrollmentToken(input: {siteId: $s, collectorId: $c, maxUses: $m}) { token } }`, vars)
	return d["createEnrollmentToken"].(map[string]any)["token"].(string)
}

// Agent is an enrolled agent as the enroll call answered it.
type Agent struct {
	ID, AssetID, TenantID, SiteID string
	CollectorID                   *string
	Token                         string
}

// Enroll enrolls an agent through REST and fails the test unless it gets 201.
func (e *Env) Enroll(enrollmentToken, hostname, machineID string) *Agent {
	e.T.Helper()
	body := map[string]any{"enrollment_token": enrollmentToken, "hostname": hostname, "agent_version": "1.0.0"}
	if machineID != "" {
		body["machine_id"] = machineID
	}
	r := e.Do(http.MethodPost, "/api/v1/agents/enroll", "", body)
	if r.Status != http.StatusCreated {
		e.T.Fatalf("enroll: %d %s", r.Status, r.Body)
	}
	a := &Agent{ID: r.JSON["agent_id"].(string), AssetID: r.JSON["asset_id"].(string), TenantID: r.JSON["tenant_id"].(string),
		SiteID: r.JSON["site_id"].(string), Token: r.JSON["token"].(string)}
	if c, ok := r.JSON["collector_id"].(string); ok {
		a.CollectorID = &c
	}
	return a
}

// Fleet is a tenant with one site, an enrollment token and one enrolled agent: the usual
// starting point.
type Fleet struct {
	Tenant *Tenant
	SiteID string
	Agent  *Agent
}

// NewFleet makes a Fleet.
func (e *Env) NewFleet(name string) *Fleet {
	e.T.Helper()
	t := e.Tenant(name)
	site := e.Site(t, "HQ")
	tok := e.EnrollmentToken(t, site, nil, 10)
	return &Fleet{Tenant: t, SiteID: site, Agent: e.Enroll(tok, name+"-host", "")}
}
