package app_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/enrollment"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// Helpers of this file are prefixed enr so they do not collide with other tests of the package.

const enrEnrollPath = "/api/v1/agents/enroll"

func enrHeartbeatPath(agentID string) string {
	return "/api/v1/agents/" + agentID + "/telemetry/heartbeat"
}

// enrToken is a freshly minted enrollment token: the secret and its listing id.
type enrToken struct{ Secret, ID string }

// enrMint mints an enrollment token through GraphQL with optional collector, ttl and uses.
func enrMint(env *testenv.Env, admin, siteID string, collectorID *string, ttlSeconds, maxUses int) enrToken {
	env.T.Helper()
	vars := map[string]any{"s": siteID}
	if collectorID != nil {
		vars["c"] = *collectorID
	}
	if ttlSeconds != 0 {
		vars["ttl"] = ttlSeconds
	}
	if maxUses != 0 {
		vars["m"] = maxUses
	}
	d := env.MustGQL(admin, `mutation($s: ID!, $c: ID, $ttl: Int, $m: Int) {
		createEnrollmentToken(input: {siteId: $s, collectorId: $c, ttlSeconds: $ttl, maxUses: $m}) { token enrollmentToken { id } } }`, vars)
	p := d["createEnrollmentToken"].(map[string]any)
	return enrToken{Secret: p["token"].(string), ID: p["enrollmentToken"].(map[string]any)["id"].(string)}
}

// enrTokenNode returns the listing entry of one enrollment token.
func enrTokenNode(env *testenv.Env, admin, id string) map[string]any {
	env.T.Helper()
	d := env.MustGQL(admin, `{ enrollmentTokens(first: 500) { edges { node { id prefix uses maxUses expiresAt revokedAt createdBy { id } } } } }`, nil)
	for _, e := range d["enrollmentTokens"].(map[string]any)["edges"].([]any) {
		n := e.(map[string]any)["node"].(map[string]any)
		if n["id"] == id {
			return n
		}
	}
	env.T.Fatalf("enrollment token %s not listed", id)
	return nil
}

func enrUses(env *testenv.Env, admin, id string) int {
	env.T.Helper()
	return int(enrTokenNode(env, admin, id)["uses"].(float64))
}

// enrCount returns a connection's totalCount.
func enrCount(env *testenv.Env, token, query string) int {
	env.T.Helper()
	d := env.MustGQL(token, query, nil)
	for _, v := range d {
		return int(v.(map[string]any)["totalCount"].(float64))
	}
	env.T.Fatalf("no connection in %v", d)
	return 0
}

func enrIdentities(env *testenv.Env, token string) int {
	env.T.Helper()
	return enrCount(env, token, `{ agentIdentities { totalCount } }`)
}

// enrIdentity reads one identity through GraphQL (nil if absent).
func enrIdentity(env *testenv.Env, token, agentID string) map[string]any {
	env.T.Helper()
	d := env.MustGQL(token, `query($a: ID!) { agentIdentity(agentId: $a) {
		agentId status revokedAt revokedReason lastSeenAt enrolledAt machineId site { id } collector { id } asset { id } } }`,
		map[string]any{"a": agentID})
	id, _ := d["agentIdentity"].(map[string]any)
	return id
}

func enrStatus(env *testenv.Env, token, agentID string) string {
	env.T.Helper()
	id := enrIdentity(env, token, agentID)
	if id == nil {
		env.T.Fatalf("identity %s not found", agentID)
	}
	return id["status"].(string)
}

// enrEvents lists the events of one agent, optionally of one type, oldest first.
func enrEvents(env *testenv.Env, token, agentID, typ string) []map[string]any {
	env.T.Helper()
	filter := map[string]any{"agentId": agentID}
	if typ != "" {
		filter["type"] = typ
	}
	d := env.MustGQL(token, `query($f: EventFilter) { events(first: 500, filter: $f) { totalCount edges { node { id type agentId assetId occurredAt payload } } } }`,
		map[string]any{"f": filter})
	var out []map[string]any
	for _, e := range d["events"].(map[string]any)["edges"].([]any) {
		out = append(out, e.(map[string]any)["node"].(map[string]any))
	}
	// The listing order is the query's business; the audit trail is read oldest first.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j]["id"].(string) < out[j-1]["id"].(string); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func enrPayload(ev map[string]any) map[string]any {
	p, _ := ev["payload"].(map[string]any)
	if p == nil {
		if s, ok := ev["payload"].(string); ok {
			_ = json.Unmarshal([]byte(s), &p)
		}
	}
	return p
}

// enrPrincipalID is the id of the principal behind a token.
func enrPrincipalID(env *testenv.Env, token string) string {
	env.T.Helper()
	return env.MustGQL(token, `{ viewer { id } }`, nil)["viewer"].(map[string]any)["id"].(string)
}

func enrHeartbeat(env *testenv.Env, a *testenv.Agent) *testenv.Response {
	env.T.Helper()
	return env.Do(http.MethodPost, enrHeartbeatPath(a.ID), a.Token, map[string]any{"hostname": "host-" + a.ID[:8]})
}

func enrMustHeartbeat(env *testenv.Env, a *testenv.Agent) {
	env.T.Helper()
	if r := enrHeartbeat(env, a); r.Status != http.StatusOK {
		env.T.Fatalf("heartbeat of %s: %d %s", a.ID, r.Status, r.Body)
	}
}

func enrWantGQLCode(t *testing.T, r *testenv.GQLResult, code, field string) {
	t.Helper()
	if r.Code() != code {
		t.Fatalf("code %q, want %q: %s", r.Code(), code, r.Raw)
	}
	if field != "" && r.Errors[0].Extensions["field"] != field {
		t.Fatalf("field %v, want %q: %s", r.Errors[0].Extensions["field"], field, r.Raw)
	}
}

func enrTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("not a time: %v", v)
	}
	return ts
}

// enrPost sends a raw enroll request without the test's Fatal (safe from goroutines).
func enrPost(url string, body any) (int, []byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.Post(url+enrEnrollPath, "application/json", bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}

func TestEnrollmentAdminMutations(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		a := env.Tenant("Acme")
		b := env.Tenant("Globex")
		hq := env.Site(a, "HQ")
		branch := env.Site(a, "Branch")
		bSite := env.Site(b, "Globex HQ")
		bCollector, _ := env.Collector(b, bSite, "globex relay")

		t.Run("createCollector returns the collector and a service-account token", func(t *testing.T) {
			d := env.MustGQL(a.AdminToken, `mutation($s: ID!) { createCollector(input: {siteId: $s, name: "relay 1"}) {
				token collector { id name site { id } } } }`, map[string]any{"s": hq})
			p := d["createCollector"].(map[string]any)
			c := p["collector"].(map[string]any)
			tok := p["token"].(string)
			if !strings.HasPrefix(tok, auth.PrefixServiceAccount) || c["name"] != "relay 1" || c["site"].(map[string]any)["id"] != hq {
				t.Fatalf("createCollector = %v", p)
			}
			v := env.MustGQL(tok, `{ viewer { kind role } }`, nil)["viewer"].(map[string]any)
			if v["kind"] != "SERVICE_ACCOUNT" || v["role"] != nil {
				t.Fatalf("collector token is %v", v)
			}
			for _, tc := range []struct{ name, site, code string }{
				{"another tenant's site", bSite, "NOT_FOUND"},
				{"unknown site", ids.New(), "NOT_FOUND"},
				{"malformed site id", "not-an-id", "NOT_FOUND"},
			} {
				r := env.GQL(a.AdminToken, `mutation($s: ID!) { createCollector(input: {siteId: $s, name: "x"}) { token } }`, map[string]any{"s": tc.site})
				enrWantGQLCode(t, r, tc.code, "")
			}
			for _, name := range []string{"   ", strings.Repeat("n", 201)} {
				r := env.GQL(a.AdminToken, `mutation($s: ID!, $n: String!) { createCollector(input: {siteId: $s, name: $n}) { token } }`,
					map[string]any{"s": hq, "n": name})
				enrWantGQLCode(t, r, "INVALID_REQUEST", "name")
			}
			if n := len(env.MustGQL(a.AdminToken, `{ collectors { id } }`, nil)["collectors"].([]any)); n != 1 {
				t.Fatalf("%d collectors after the refused ones, want 1", n)
			}
		})

		t.Run("createEnrollmentToken defaults to 24h and one use", func(t *testing.T) {
			d := env.MustGQL(a.AdminToken, `mutation($s: ID!) { createEnrollmentToken(input: {siteId: $s}) {
				token expiresAt maxUses enrollmentToken { id prefix uses maxUses site { id } collector { id } createdBy { id } } } }`,
				map[string]any{"s": hq})
			p := d["createEnrollmentToken"].(map[string]any)
			tok := p["token"].(string)
			node := p["enrollmentToken"].(map[string]any)
			if !strings.HasPrefix(tok, auth.PrefixEnrollment) {
				t.Fatalf("token %q lacks the enrollment prefix", tok)
			}
			if got, want := enrTime(t, p["expiresAt"]), env.Clock.Now().Add(24*time.Hour); !got.Equal(want) {
				t.Fatalf("expiresAt %v, want %v", got, want)
			}
			if p["maxUses"] != 1.0 || node["maxUses"] != 1.0 || node["uses"] != 0.0 || node["collector"] != nil ||
				node["site"].(map[string]any)["id"] != hq || node["createdBy"].(map[string]any)["id"] != enrPrincipalID(env, a.AdminToken) {
				t.Fatalf("payload %v", p)
			}
			prefix := node["prefix"].(string)
			if !strings.HasPrefix(tok, prefix) || len(prefix) >= len(tok)/2 {
				t.Fatalf("listing prefix %q of %q shows too much or the wrong thing", prefix, tok)
			}
		})

		t.Run("createEnrollmentToken with explicit ttl, uses and collector", func(t *testing.T) {
			col, _ := env.Collector(a, branch, "branch relay")
			d := env.MustGQL(a.AdminToken, `mutation($s: ID!, $c: ID) { createEnrollmentToken(input: {siteId: $s, collectorId: $c, ttlSeconds: 90, maxUses: 7}) {
				expiresAt maxUses enrollmentToken { maxUses collector { id } } } }`, map[string]any{"s": branch, "c": col})
			p := d["createEnrollmentToken"].(map[string]any)
			if got, want := enrTime(t, p["expiresAt"]), env.Clock.Now().Add(90*time.Second); !got.Equal(want) {
				t.Fatalf("expiresAt %v, want %v", got, want)
			}
			node := p["enrollmentToken"].(map[string]any)
			if p["maxUses"] != 7.0 || node["maxUses"] != 7.0 || node["collector"].(map[string]any)["id"] != col {
				t.Fatalf("payload %v", p)
			}
		})

		t.Run("bad input is refused and writes nothing", func(t *testing.T) {
			before := enrCount(env, a.AdminToken, `{ enrollmentTokens { totalCount } }`)
			otherSiteCollector, _ := env.Collector(a, hq, "hq relay")
			cases := []struct {
				name, field, code string
				vars              map[string]any
			}{
				{"ttl zero", "ttlSeconds", "INVALID_REQUEST", map[string]any{"s": hq, "ttl": 0}},
				{"ttl negative", "ttlSeconds", "INVALID_REQUEST", map[string]any{"s": hq, "ttl": -60}},
				{"ttl over a year", "ttlSeconds", "INVALID_REQUEST", map[string]any{"s": hq, "ttl": 2_000_000_000}},
				{"maxUses zero", "maxUses", "INVALID_REQUEST", map[string]any{"s": hq, "m": 0}},
				{"maxUses negative", "maxUses", "INVALID_REQUEST", map[string]any{"s": hq, "m": -1}},
				{"maxUses huge", "maxUses", "INVALID_REQUEST", map[string]any{"s": hq, "m": 2_000_000_000}},
				{"another tenant's site", "siteId", "NOT_FOUND", map[string]any{"s": bSite}},
				{"unknown site", "siteId", "NOT_FOUND", map[string]any{"s": ids.New()}},
				{"malformed site id", "siteId", "NOT_FOUND", map[string]any{"s": "x'; DROP TABLE sites; --"}},
				{"another tenant's collector", "collectorId", "NOT_FOUND", map[string]any{"s": hq, "c": bCollector}},
				{"unknown collector", "collectorId", "NOT_FOUND", map[string]any{"s": hq, "c": ids.New()}},
				{"malformed collector id", "collectorId", "NOT_FOUND", map[string]any{"s": hq, "c": "nope"}},
				{"collector on another site", "collectorId", "INVALID_REQUEST", map[string]any{"s": branch, "c": otherSiteCollector}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := env.GQL(a.AdminToken, `mutation($s: ID!, $c: ID, $ttl: Int, $m: Int) {
						createEnrollmentToken(input: {siteId: $s, collectorId: $c, ttlSeconds: $ttl, maxUses: $m}) { token } }`, tc.vars)
					enrWantGQLCode(t, r, tc.code, tc.field)
					if r.Data["createEnrollmentToken"] != nil {
						t.Fatalf("data despite the error: %s", r.Raw)
					}
					if strings.Contains(string(r.Raw), "Globex") || strings.Contains(strings.ToLower(string(r.Raw)), "select") {
						t.Fatalf("error leaks: %s", r.Raw)
					}
				})
			}
			// An Int beyond 32 bits never reaches the service.
			r := env.GQL(a.AdminToken, `mutation($s: ID!) { createEnrollmentToken(input: {siteId: $s, ttlSeconds: 99999999999}) { token } }`, map[string]any{"s": hq})
			if r.Code() != "INVALID_REQUEST" && r.Code() != "GRAPHQL_VALIDATION_FAILED" {
				t.Fatalf("64-bit ttlSeconds: %s", r.Raw)
			}
			if after := enrCount(env, a.AdminToken, `{ enrollmentTokens { totalCount } }`); after != before {
				t.Fatalf("refused requests wrote tokens: %d -> %d", before, after)
			}
		})

		t.Run("tokens list per tenant; revokeEnrollmentToken of another tenant is NOT_FOUND", func(t *testing.T) {
			aTok := enrMint(env, a.AdminToken, hq, nil, 0, 0)
			bTok := enrMint(env, b.AdminToken, bSite, nil, 0, 0)
			if n := enrCount(env, b.AdminToken, `{ enrollmentTokens { totalCount } }`); n != 1 {
				t.Fatalf("tenant b sees %d tokens, want 1", n)
			}
			for _, id := range []string{bTok.ID, ids.New(), "garbage"} {
				r := env.GQL(a.AdminToken, `mutation($id: ID!) { revokeEnrollmentToken(id: $id) { id } }`, map[string]any{"id": id})
				enrWantGQLCode(t, r, "NOT_FOUND", "")
			}
			if n := enrTokenNode(env, b.AdminToken, bTok.ID); n["revokedAt"] != nil {
				t.Fatalf("tenant a revoked tenant b's token: %v", n)
			}
			d := env.MustGQL(a.AdminToken, `mutation($id: ID!) { revokeEnrollmentToken(id: $id) { id revokedAt } }`, map[string]any{"id": aTok.ID})
			if d["revokeEnrollmentToken"].(map[string]any)["revokedAt"] == nil {
				t.Fatalf("not revoked: %v", d)
			}
		})
	})
}

func TestEnrollmentAdminAccess(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("Acme")
		a := f.Tenant
		colID, colToken := env.Collector(a, f.SiteID, "relay")
		tok := enrMint(env, a.AdminToken, f.SiteID, nil, 0, 5)
		vars := map[string]any{"s": f.SiteID, "id": tok.ID, "a": f.Agent.ID, "c": colID}
		ops := []struct{ field, query string }{
			{"createSite", `mutation { createSite(input: {name: "Intruder"}) { id } }`},
			{"createCollector", `mutation($s: ID!) { createCollector(input: {siteId: $s, name: "intruder"}) { token } }`},
			{"createEnrollmentToken", `mutation($s: ID!, $c: ID) { createEnrollmentToken(input: {siteId: $s, collectorId: $c}) { token } }`},
			{"revokeEnrollmentToken", `mutation($id: ID!) { revokeEnrollmentToken(id: $id) { id } }`},
			{"revokeAgentIdentity", `mutation($a: ID!) { revokeAgentIdentity(agentId: $a, reason: "x") { status } }`},
			{"reactivateAgentIdentity", `mutation($a: ID!) { reactivateAgentIdentity(agentId: $a) { status } }`},
			{"enrollmentTokens", `{ enrollmentTokens { totalCount edges { node { id prefix } } } }`},
		}
		callers := []struct{ name, token, code string }{
			{"viewer", a.ViewerToken, "FORBIDDEN"},
			{"agent service account", f.Agent.Token, "FORBIDDEN"},
			{"collector service account", colToken, "FORBIDDEN"},
			{"anonymous", "", "UNAUTHENTICATED"},
		}
		tokensBefore := enrCount(env, a.AdminToken, `{ enrollmentTokens { totalCount } }`)
		for _, c := range callers {
			for _, op := range ops {
				t.Run(c.name+"/"+op.field, func(t *testing.T) {
					used := map[string]any{}
					for k, v := range vars {
						if strings.Contains(op.query, "$"+k) {
							used[k] = v
						}
					}
					r := env.GQL(c.token, op.query, used)
					enrWantGQLCode(t, r, c.code, "")
					if r.Data[op.field] != nil {
						t.Fatalf("data despite the refusal: %s", r.Raw)
					}
				})
			}
		}
		// Nothing the refused callers tried took effect.
		if n := len(env.MustGQL(a.AdminToken, `{ sites { id } }`, nil)["sites"].([]any)); n != 1 {
			t.Fatalf("%d sites, want 1", n)
		}
		if n := len(env.MustGQL(a.AdminToken, `{ collectors { id } }`, nil)["collectors"].([]any)); n != 1 {
			t.Fatalf("%d collectors, want 1", n)
		}
		if n := enrCount(env, a.AdminToken, `{ enrollmentTokens { totalCount } }`); n != tokensBefore {
			t.Fatalf("enrollment tokens %d -> %d", tokensBefore, n)
		}
		if n := enrTokenNode(env, a.AdminToken, tok.ID); n["revokedAt"] != nil {
			t.Fatalf("token revoked by a refused caller: %v", n)
		}
		if s := enrStatus(env, a.AdminToken, f.Agent.ID); s != "ENROLLED" {
			t.Fatalf("identity status %s after refused calls", s)
		}
		// The token still works: the refused revoke changed nothing.
		env.Enroll(tok.Secret, "still-works", "")
	})
}

// enrRequestID matches the only part of two error bodies allowed to differ.
var enrRequestID = regexp.MustCompile(`"request_id":"[^"]*"`)

func TestEnroll(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn, func(c *app.Config) { c.MaxBody = 4096 })
		a := env.Tenant("Acme")
		hq := env.Site(a, "HQ")

		t.Run("201 with the contract's body", func(t *testing.T) {
			tok := enrMint(env, a.AdminToken, hq, nil, 0, 0)
			r := env.Do(http.MethodPost, enrEnrollPath, "", map[string]any{"enrollment_token": tok.Secret,
				"hostname": "web-01", "agent_version": "1.4.2", "machine_id": "machine-web-01"})
			if r.Status != http.StatusCreated {
				t.Fatalf("enroll: %d %s", r.Status, r.Body)
			}
			want := []string{"agent_id", "asset_id", "tenant_id", "site_id", "collector_id", "status", "token", "heartbeat_interval_seconds"}
			for _, k := range want {
				if _, ok := r.JSON[k]; !ok {
					t.Fatalf("body lacks %s: %s", k, r.Body)
				}
			}
			if r.JSON["tenant_id"] != a.ID || r.JSON["site_id"] != hq || r.JSON["collector_id"] != nil ||
				r.JSON["status"] != "enrolled" || r.JSON["heartbeat_interval_seconds"] != 60.0 ||
				!ids.Valid(r.JSON["agent_id"].(string)) || !ids.Valid(r.JSON["asset_id"].(string)) ||
				!strings.HasPrefix(r.JSON["token"].(string), auth.PrefixServiceAccount) {
				t.Fatalf("body %s", r.Body)
			}
			agentID := r.JSON["agent_id"].(string)
			v := env.MustGQL(r.JSON["token"].(string), `{ viewer { id kind tenant { id } } }`, nil)["viewer"].(map[string]any)
			if v["kind"] != "SERVICE_ACCOUNT" || v["tenant"].(map[string]any)["id"] != a.ID {
				t.Fatalf("agent token is %v", v)
			}
			id := enrIdentity(env, a.ViewerToken, agentID)
			if id["status"] != "ENROLLED" || id["machineId"] != "machine-web-01" || id["site"].(map[string]any)["id"] != hq ||
				id["asset"] != nil || !enrTime(t, id["enrolledAt"]).Equal(env.Clock.Now()) {
				t.Fatalf("identity %v", id)
			}
			if u := enrUses(env, a.AdminToken, tok.ID); u != 1 {
				t.Fatalf("uses %d, want 1", u)
			}
			evs := enrEvents(env, a.ViewerToken, agentID, "agent.enrolled")
			if len(evs) != 1 {
				t.Fatalf("%d agent.enrolled events, want 1", len(evs))
			}
			p := enrPayload(evs[0])
			if p["actor_id"] != v["id"] || p["actor_kind"] != "SERVICE_ACCOUNT" || p["authorized_by"] != enrPrincipalID(env, a.AdminToken) ||
				p["site_id"] != hq || p["enrollment_token_id"] != tok.ID || evs[0]["assetId"] != r.JSON["asset_id"] {
				t.Fatalf("agent.enrolled = %v", evs[0])
			}
		})

		t.Run("a collector-bound token binds the collector", func(t *testing.T) {
			col, _ := env.Collector(a, hq, "relay")
			tok := enrMint(env, a.AdminToken, hq, &col, 0, 0)
			ag := env.Enroll(tok.Secret, "behind-relay", "")
			if ag.CollectorID == nil || *ag.CollectorID != col {
				t.Fatalf("collector_id %v, want %s", ag.CollectorID, col)
			}
			if id := enrIdentity(env, a.ViewerToken, ag.ID); id["collector"].(map[string]any)["id"] != col {
				t.Fatalf("identity %v", id)
			}
		})

		t.Run("unknown, expired, used-up and revoked tokens answer alike", func(t *testing.T) {
			expiring := enrMint(env, a.AdminToken, hq, nil, 60, 5)
			usedUp := enrMint(env, a.AdminToken, hq, nil, 0, 1)
			env.Enroll(usedUp.Secret, "first", "")
			revoked := enrMint(env, a.AdminToken, hq, nil, 0, 5)
			env.MustGQL(a.AdminToken, `mutation($id: ID!) { revokeEnrollmentToken(id: $id) { id } }`, map[string]any{"id": revoked.ID})
			env.Clock.Advance(61 * time.Second)
			before := enrIdentities(env, a.AdminToken)
			var first []byte
			for _, tc := range []struct{ name, token string }{
				{"unknown", auth.PrefixEnrollment + strings.Repeat("a", 52)},
				{"expired", expiring.Secret},
				{"used up", usedUp.Secret},
				{"revoked", revoked.Secret},
				{"not even a token", "hello"},
			} {
				r := env.Do(http.MethodPost, enrEnrollPath, "", map[string]any{"enrollment_token": tc.token, "hostname": "h"})
				if r.Status != http.StatusUnauthorized || r.ErrorCode() != "invalid_enrollment_token" {
					t.Fatalf("%s: %d %s", tc.name, r.Status, r.Body)
				}
				body := enrRequestID.ReplaceAll(r.Body, nil)
				if first == nil {
					first = body
				} else if !bytes.Equal(first, body) {
					t.Fatalf("%s answers differently:\n%s\n%s", tc.name, first, body)
				}
			}
			if after := enrIdentities(env, a.AdminToken); after != before {
				t.Fatalf("identities %d -> %d", before, after)
			}
			for _, tok := range []enrToken{expiring, revoked} {
				if u := enrUses(env, a.AdminToken, tok.ID); u != 0 {
					t.Fatalf("a refused enrollment used token %s: %d", tok.ID, u)
				}
			}
			if u := enrUses(env, a.AdminToken, usedUp.ID); u != 1 {
				t.Fatalf("used-up token uses %d, want 1", u)
			}
		})

		t.Run("bad bodies are refused and write nothing", func(t *testing.T) {
			tok := enrMint(env, a.AdminToken, hq, nil, 0, 5)
			long := strings.Repeat("x", 256)
			before := enrIdentities(env, a.AdminToken)
			cases := []struct {
				name        string
				contentType string
				body        string
				status      int
				code, field string
			}{
				{"wrong content type", "text/plain", `{"enrollment_token":"` + tok.Secret + `"}`, 415, "unsupported_media_type", ""},
				{"no content type", "", `{"enrollment_token":"` + tok.Secret + `"}`, 415, "unsupported_media_type", ""},
				{"malformed JSON", "application/json", `{"enrollment_token":"` + tok.Secret + `"`, 400, "invalid_request", ""},
				{"two JSON values", "application/json", `{"enrollment_token":"` + tok.Secret + `"} {}`, 400, "invalid_request", ""},
				{"not an object", "application/json", `["` + tok.Secret + `"]`, 400, "invalid_request", ""},
				{"missing enrollment_token", "application/json", `{"hostname":"h"}`, 400, "invalid_request", "enrollment_token"},
				{"enrollment_token of the wrong type", "application/json", `{"enrollment_token":5}`, 400, "invalid_request", "enrollment_token"},
				{"hostname too long", "application/json", `{"enrollment_token":"` + tok.Secret + `","hostname":"` + long + `"}`, 400, "invalid_request", "hostname"},
				{"agent_version too long", "application/json", `{"enrollment_token":"` + tok.Secret + `","agent_version":"` + long + `"}`, 400, "invalid_request", "agent_version"},
				{"machine_id too long", "application/json", `{"enrollment_token":"` + tok.Secret + `","machine_id":"` + long + `"}`, 400, "invalid_request", "machine_id"},
				{"over --max-body", "application/json", `{"enrollment_token":"` + tok.Secret + `","facts":"` + strings.Repeat("y", 5000) + `"}`, 413, "payload_too_large", ""},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					hdr := []string{"Content-Type", tc.contentType}
					r := env.Do(http.MethodPost, enrEnrollPath, "", tc.body, hdr...)
					if r.Status != tc.status || r.ErrorCode() != tc.code {
						t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
					}
					if tc.field != "" {
						if e := r.JSON["error"].(map[string]any); e["field"] != tc.field || !strings.Contains(e["message"].(string), tc.field) {
							t.Fatalf("error does not name %s: %s", tc.field, r.Body)
						}
					}
					if strings.Contains(string(r.Body), tok.Secret) {
						t.Fatalf("error echoes the token: %s", r.Body)
					}
				})
			}
			if after := enrIdentities(env, a.AdminToken); after != before {
				t.Fatalf("identities %d -> %d", before, after)
			}
			if u := enrUses(env, a.AdminToken, tok.ID); u != 0 {
				t.Fatalf("refused bodies used the token: uses %d", u)
			}
			// And the token is intact.
			env.Enroll(tok.Secret, "after-bad-bodies", "")
		})
	})
}

func TestEnrollConcurrentMaxUses(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		a := env.Tenant("Acme")
		hq := env.Site(a, "HQ")
		const parallel, maxUses = 25, 5
		tok := enrMint(env, a.AdminToken, hq, nil, 0, maxUses)

		statuses := make([]int, parallel)
		errs := make([]error, parallel)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				statuses[i], _, errs[i] = enrPost(env.Server.URL, map[string]any{"enrollment_token": tok.Secret,
					"hostname": fmt.Sprintf("race-%02d", i), "machine_id": fmt.Sprintf("race-machine-%02d", i)})
			}()
		}
		close(start)
		wg.Wait()

		count := map[int]int{}
		for i := range parallel {
			if errs[i] != nil {
				t.Fatalf("request %d: %v", i, errs[i])
			}
			count[statuses[i]]++
		}
		if count[http.StatusCreated] != maxUses || count[http.StatusUnauthorized] != parallel-maxUses || len(count) != 2 {
			t.Fatalf("statuses %v, want %d x 201 and %d x 401", count, maxUses, parallel-maxUses)
		}
		if n := enrIdentities(env, a.AdminToken); n != maxUses {
			t.Fatalf("%d identities, want %d", n, maxUses)
		}
		if u := enrUses(env, a.AdminToken, tok.ID); u != maxUses {
			t.Fatalf("token uses %d, want %d", u, maxUses)
		}
		if n := enrCount(env, a.AdminToken, `{ events(filter: {type: "agent.enrolled"}) { totalCount } }`); n != maxUses {
			t.Fatalf("%d agent.enrolled events, want %d", n, maxUses)
		}
	})
}

func TestReenrollment(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		a := env.Tenant("Acme")
		b := env.Tenant("Globex")
		hq := env.Site(a, "HQ")
		branch := env.Site(a, "Branch")
		hqTok := enrMint(env, a.AdminToken, hq, nil, 0, 20)
		branchTok := enrMint(env, a.AdminToken, branch, nil, 0, 20)
		const machine = "4c4c4544-0042-3510-8052-b4c04f4e3232"

		first := env.Enroll(hqTok.Secret, "web-01", machine)
		enrMustHeartbeat(env, first)
		env.Clock.Advance(time.Minute)
		second := env.Enroll(branchTok.Secret, "web-01-reimaged", machine)

		t.Run("the asset id is kept and the old identity superseded", func(t *testing.T) {
			if second.AssetID != first.AssetID || second.ID == first.ID || second.SiteID != branch {
				t.Fatalf("first %+v, second %+v", first, second)
			}
			old := enrIdentity(env, a.ViewerToken, first.ID)
			if old["status"] != "REVOKED" || old["revokedReason"] != "superseded" || !enrTime(t, old["revokedAt"]).Equal(env.Clock.Now()) {
				t.Fatalf("old identity %v", old)
			}
			if s := enrStatus(env, a.ViewerToken, second.ID); s != "ENROLLED" {
				t.Fatalf("new identity %s", s)
			}
		})

		t.Run("the asset follows the new identity's site", func(t *testing.T) {
			d := env.MustGQL(a.ViewerToken, `query($id: ID!) { asset(id: $id) { id site { id } agent { agentId } } }`, map[string]any{"id": first.AssetID})
			as := d["asset"].(map[string]any)
			if as["site"].(map[string]any)["id"] != branch || as["agent"].(map[string]any)["agentId"] != second.ID {
				t.Fatalf("asset %v", as)
			}
		})

		t.Run("the superseded agent learns why; the new one reports on the same asset", func(t *testing.T) {
			if r := enrHeartbeat(env, first); r.Status != http.StatusForbidden || r.ErrorCode() != "agent_revoked" {
				t.Fatalf("old agent heartbeat: %d %s", r.Status, r.Body)
			}
			r := enrHeartbeat(env, second)
			if r.Status != http.StatusOK || r.JSON["asset_id"] != first.AssetID {
				t.Fatalf("new agent heartbeat: %d %s", r.Status, r.Body)
			}
			if n := enrCount(env, a.ViewerToken, `{ assets { totalCount } }`); n != 1 {
				t.Fatalf("%d assets, want 1", n)
			}
		})

		t.Run("the supersession is audited", func(t *testing.T) {
			evs := enrEvents(env, a.ViewerToken, first.ID, "agent.revoked")
			if len(evs) != 1 {
				t.Fatalf("%d agent.revoked events, want 1", len(evs))
			}
			p := enrPayload(evs[0])
			if p["reason"] != "superseded" || p["superseded_by"] != second.ID || p["actor_id"] != enrPrincipalID(env, second.Token) ||
				p["actor_kind"] != "SERVICE_ACCOUNT" || evs[0]["assetId"] != first.AssetID {
				t.Fatalf("agent.revoked = %v", evs[0])
			}
		})

		// An agent's events are found through its asset, which two identities now share.
		t.Run("the agent filter keeps each identity's events apart on a shared asset", func(t *testing.T) {
			q := `query($f: EventFilter) { events(first: 100, filter: $f) { totalCount edges { node { agentId assetId type } } } }`
			byAgent := map[string]int{}
			for _, agent := range []string{first.ID, second.ID} {
				d := env.MustGQL(a.ViewerToken, q, map[string]any{"f": map[string]any{"agentId": agent}})
				conn := d["events"].(map[string]any)
				edges := conn["edges"].([]any)
				if len(edges) == 0 || int(conn["totalCount"].(float64)) != len(edges) {
					t.Fatalf("agent %s: %v", agent, conn)
				}
				for _, e := range edges {
					if n := e.(map[string]any)["node"].(map[string]any); n["agentId"] != agent || n["assetId"] != first.AssetID {
						t.Fatalf("agent %s got %v", agent, n)
					}
				}
				byAgent[agent] = len(edges)
			}
			d := env.MustGQL(a.ViewerToken, q, map[string]any{"f": map[string]any{"assetId": first.AssetID}})
			if n := len(d["events"].(map[string]any)["edges"].([]any)); n != byAgent[first.ID]+byAgent[second.ID] {
				t.Fatalf("asset has %d events, agents %v", n, byAgent)
			}
			// Another tenant naming this agent sees nothing.
			d = env.MustGQL(b.AdminToken, q, map[string]any{"f": map[string]any{"agentId": first.ID}})
			if conn := d["events"].(map[string]any); conn["totalCount"].(float64) != 0 || len(conn["edges"].([]any)) != 0 {
				t.Fatalf("tenant b: %v", conn)
			}
		})

		t.Run("after an admin revocation the machine re-enrolls onto its asset", func(t *testing.T) {
			env.MustGQL(a.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": second.ID})
			third := env.Enroll(hqTok.Secret, "web-01", machine)
			if third.AssetID != first.AssetID {
				t.Fatalf("asset %s, want %s", third.AssetID, first.AssetID)
			}
			d := env.MustGQL(a.ViewerToken, `query($id: ID!) { asset(id: $id) { site { id } agent { agentId } } }`, map[string]any{"id": first.AssetID})
			as := d["asset"].(map[string]any)
			if as["site"].(map[string]any)["id"] != hq || as["agent"].(map[string]any)["agentId"] != third.ID {
				t.Fatalf("asset %v", as)
			}
			// Already revoked by the admin: no second agent.revoked for the supersession.
			if evs := enrEvents(env, a.ViewerToken, second.ID, "agent.revoked"); len(evs) != 1 {
				t.Fatalf("%d agent.revoked events for %s, want 1", len(evs), second.ID)
			}
		})

		t.Run("the same machine in another tenant is another asset", func(t *testing.T) {
			bSite := env.Site(b, "Globex HQ")
			other := env.Enroll(enrMint(env, b.AdminToken, bSite, nil, 0, 0).Secret, "web-01", machine)
			if other.AssetID == first.AssetID || other.TenantID != b.ID {
				t.Fatalf("other tenant's enrollment %+v", other)
			}
			d := env.MustGQL(a.ViewerToken, `{ agentIdentities(filter: {status: REVOKED}) { totalCount } }`, nil)
			if n := d["agentIdentities"].(map[string]any)["totalCount"].(float64); n != 2 {
				t.Fatalf("tenant a has %v revoked identities, want 2", n)
			}
			if n := enrCount(env, a.ViewerToken, `{ agentIdentities(filter: {status: ENROLLED}) { totalCount } }`); n != 1 {
				t.Fatalf("tenant a's live identity was touched: %d enrolled", n)
			}
			if enrIdentity(env, a.ViewerToken, other.ID) != nil || enrIdentity(env, b.ViewerToken, first.ID) != nil {
				t.Fatal("an identity is visible across tenants")
			}
		})

		t.Run("concurrent re-enrollments of one machine leave one live identity", func(t *testing.T) {
			const parallel = 10
			// One token each, so that nothing but the machine serializes the enrollments.
			toks := make([]enrToken, parallel)
			for i := range toks {
				toks[i] = enrMint(env, a.AdminToken, hq, nil, 0, 0)
			}
			bodies := make([][]byte, parallel)
			statuses := make([]int, parallel)
			errs := make([]error, parallel)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					statuses[i], bodies[i], errs[i] = enrPost(env.Server.URL, map[string]any{"enrollment_token": toks[i].Secret,
						"hostname": "twin", "machine_id": "twin-machine"})
				}()
			}
			close(start)
			wg.Wait()
			assets := map[string]bool{}
			agents := map[string]bool{}
			for i := range parallel {
				if errs[i] != nil || statuses[i] != http.StatusCreated {
					t.Fatalf("enrollment %d: %d %s %v", i, statuses[i], bodies[i], errs[i])
				}
				var out map[string]any
				_ = json.Unmarshal(bodies[i], &out)
				assets[out["asset_id"].(string)] = true
				agents[out["agent_id"].(string)] = true
			}
			if len(assets) != 1 || len(agents) != parallel {
				t.Fatalf("%d asset ids and %d agent ids, want 1 and %d", len(assets), len(agents), parallel)
			}
			live := 0
			for id := range agents {
				node := enrIdentity(env, a.ViewerToken, id)
				switch {
				case node["status"] == "ENROLLED":
					live++
				case node["status"] != "REVOKED" || node["revokedReason"] != "superseded":
					t.Fatalf("identity %v", node)
				}
				if n := len(enrEvents(env, a.ViewerToken, id, "agent.revoked")); n > 1 {
					t.Fatalf("%s revoked %d times", id, n)
				}
			}
			if live != 1 {
				t.Fatalf("%d live identities for one machine, want 1", live)
			}
		})
	})
}

func TestRevokeAndReactivate(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("Acme")
		a := f.Tenant
		other := env.NewFleet("Globex")
		tok := enrMint(env, a.AdminToken, f.SiteID, nil, 0, 5)
		adminID := enrPrincipalID(env, a.AdminToken)
		revoke := `mutation($a: ID!, $r: String) { revokeAgentIdentity(agentId: $a, reason: $r) { agentId status revokedAt revokedReason } }`
		reactivate := `mutation($a: ID!) { reactivateAgentIdentity(agentId: $a) { agentId status } }`

		t.Run("revoke, then the heartbeat answers agent_revoked", func(t *testing.T) {
			ag := env.Enroll(tok.Secret, "doomed", "")
			enrMustHeartbeat(env, ag)
			env.Clock.Advance(time.Second)
			d := env.MustGQL(a.AdminToken, revoke, map[string]any{"a": ag.ID, "r": "laptop stolen"})
			id := d["revokeAgentIdentity"].(map[string]any)
			if id["status"] != "REVOKED" || id["revokedReason"] != "laptop stolen" || !enrTime(t, id["revokedAt"]).Equal(env.Clock.Now()) {
				t.Fatalf("revoked identity %v", id)
			}
			if r := enrHeartbeat(env, ag); r.Status != http.StatusForbidden || r.ErrorCode() != "agent_revoked" {
				t.Fatalf("heartbeat after revoke: %d %s", r.Status, r.Body)
			}
			// The token still authenticates (CONTRACT §2).
			if v := env.MustGQL(ag.Token, `{ viewer { kind } }`, nil)["viewer"].(map[string]any); v["kind"] != "SERVICE_ACCOUNT" {
				t.Fatalf("viewer %v", v)
			}
			enrWantGQLCode(t, env.GQL(a.AdminToken, reactivate, map[string]any{"a": ag.ID}), "AGENT_REVOKED", "")
			if s := enrStatus(env, a.ViewerToken, ag.ID); s != "REVOKED" {
				t.Fatalf("status %s after refused reactivation", s)
			}
			// Revoking again changes nothing and is not audited twice.
			env.MustGQL(a.AdminToken, revoke, map[string]any{"a": ag.ID, "r": "again"})
			evs := enrEvents(env, a.ViewerToken, ag.ID, "agent.revoked")
			if len(evs) != 1 {
				t.Fatalf("%d agent.revoked events, want 1", len(evs))
			}
			if p := enrPayload(evs[0]); p["reason"] != "laptop stolen" || p["actor_id"] != adminID || p["actor_kind"] != "USER" {
				t.Fatalf("agent.revoked payload %v", p)
			}
			if s := enrIdentity(env, a.ViewerToken, ag.ID); s["revokedReason"] != "laptop stolen" {
				t.Fatalf("second revoke rewrote the reason: %v", s)
			}
		})

		t.Run("revoke without a reason", func(t *testing.T) {
			ag := env.Enroll(tok.Secret, "plain", "")
			id := env.MustGQL(a.AdminToken, revoke, map[string]any{"a": ag.ID})["revokeAgentIdentity"].(map[string]any)
			if id["status"] != "REVOKED" || id["revokedReason"] == nil || id["revokedReason"] == "" {
				t.Fatalf("identity %v", id)
			}
		})

		t.Run("reactivating a live identity returns it unchanged", func(t *testing.T) {
			ag := env.Enroll(tok.Secret, "live", "")
			d := env.MustGQL(a.AdminToken, reactivate, map[string]any{"a": ag.ID})
			if s := d["reactivateAgentIdentity"].(map[string]any)["status"]; s != "ENROLLED" {
				t.Fatalf("ENROLLED reactivated to %v", s)
			}
			enrMustHeartbeat(env, ag)
			d = env.MustGQL(a.AdminToken, reactivate, map[string]any{"a": ag.ID})
			if s := d["reactivateAgentIdentity"].(map[string]any)["status"]; s != "ACTIVE" {
				t.Fatalf("ACTIVE reactivated to %v", s)
			}
			if n := len(enrEvents(env, a.ViewerToken, ag.ID, "agent.reactivated")); n != 0 {
				t.Fatalf("%d agent.reactivated events for no-op reactivations", n)
			}
		})

		t.Run("unknown and other tenants' identities are NOT_FOUND", func(t *testing.T) {
			for _, id := range []string{ids.New(), "not-an-id", other.Agent.ID} {
				enrWantGQLCode(t, env.GQL(a.AdminToken, revoke, map[string]any{"a": id}), "NOT_FOUND", "")
				enrWantGQLCode(t, env.GQL(a.AdminToken, reactivate, map[string]any{"a": id}), "NOT_FOUND", "")
			}
			if s := enrStatus(env, other.Tenant.ViewerToken, other.Agent.ID); s != "ENROLLED" {
				t.Fatalf("other tenant's identity is %s", s)
			}
			if n := len(enrEvents(env, other.Tenant.ViewerToken, other.Agent.ID, "agent.revoked")); n != 0 {
				t.Fatalf("other tenant's identity has %d agent.revoked events", n)
			}
		})

		t.Run("an over-long reason is INVALID_REQUEST", func(t *testing.T) {
			enrWantGQLCode(t, env.GQL(a.AdminToken, revoke, map[string]any{"a": f.Agent.ID, "r": strings.Repeat("r", 1001)}), "INVALID_REQUEST", "reason")
			if s := enrStatus(env, a.ViewerToken, f.Agent.ID); s != "ENROLLED" {
				t.Fatalf("status %s", s)
			}
		})
	})
}

func TestStaleSweeper(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		const staleAfter = time.Hour
		env := testenv.New(t, dsn, func(c *app.Config) { c.StaleAfter = staleAfter })
		ctx := context.Background()
		sweep := func(want int) {
			t.Helper()
			n, err := env.App.Enrollment.Sweep(ctx, env.App.Config.StaleAfter)
			if err != nil {
				t.Fatalf("sweep: %v", err)
			}
			if n != want {
				t.Fatalf("sweep marked %d, want %d", n, want)
			}
		}
		a := env.Tenant("Acme")
		hq := env.Site(a, "HQ")
		tok := enrMint(env, a.AdminToken, hq, nil, 0, 100)
		adminID := enrPrincipalID(env, a.AdminToken)
		status := func(ag *testenv.Agent) string { t.Helper(); return enrStatus(env, a.ViewerToken, ag.ID) }

		// t0: never-seen enrolls; active enrolls and heartbeats at t0+30m; late enrolls at t0+30m.
		never := env.Enroll(tok.Secret, "never", "")
		active := env.Enroll(tok.Secret, "active", "")
		env.Clock.Advance(30 * time.Minute)
		enrMustHeartbeat(env, active)
		late := env.Enroll(tok.Secret, "late", "")

		env.Clock.Advance(31 * time.Minute) // t0+61m
		sweep(1)
		if status(never) != "STALE" || status(active) != "ACTIVE" || status(late) != "ENROLLED" {
			t.Fatalf("at t0+61m: never %s, active %s, late %s", status(never), status(active), status(late))
		}
		if r := enrHeartbeat(env, never); r.Status != http.StatusForbidden || r.ErrorCode() != "agent_stale" {
			t.Fatalf("stale heartbeat: %d %s", r.Status, r.Body)
		}
		// GraphQL answers the same.
		r := env.GQL(never.Token, `mutation($a: ID!) { submitHeartbeat(agentId: $a, input: {}) { status } }`, map[string]any{"a": never.ID})
		enrWantGQLCode(t, r, "AGENT_STALE", "")

		env.Clock.Advance(30 * time.Minute) // t0+91m: active's heartbeat and late's enrollment are 61m old
		sweep(2)
		if status(active) != "STALE" || status(late) != "STALE" {
			t.Fatalf("at t0+91m: active %s, late %s", status(active), status(late))
		}
		sweep(0) // STALE stays STALE, nothing is marked twice

		d := env.MustGQL(a.AdminToken, `mutation($a: ID!) { reactivateAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": never.ID})
		if s := d["reactivateAgentIdentity"].(map[string]any)["status"]; s != "ENROLLED" {
			t.Fatalf("reactivated to %v", s)
		}
		env.Clock.Advance(59 * time.Minute) // enrolled 150m ago, reactivated 59m ago
		sweep(0)
		if status(never) != "ENROLLED" {
			t.Fatalf("reactivated identity swept from its enrollment time: %s", status(never))
		}
		enrMustHeartbeat(env, never)
		if status(never) != "ACTIVE" {
			t.Fatalf("after heartbeat: %s", status(never))
		}
		env.Clock.Advance(staleAfter + time.Second)
		sweep(1)
		if status(never) != "STALE" {
			t.Fatalf("after another hour of silence: %s", status(never))
		}

		t.Run("the lifecycle is audited with its actors", func(t *testing.T) {
			var types []string
			for _, ev := range enrEvents(env, a.ViewerToken, never.ID, "") {
				types = append(types, ev["type"].(string))
				p := enrPayload(ev)
				switch ev["type"] {
				case "agent.stale":
					if p["actor_id"] != enrollment.SweepActor || p["actor_kind"] != "SYSTEM" || p["stale_after_seconds"] != 3600.0 {
						t.Errorf("agent.stale payload %v", p)
					}
				case "agent.reactivated":
					if p["actor_id"] != adminID || p["actor_kind"] != "USER" {
						t.Errorf("agent.reactivated payload %v", p)
					}
				}
			}
			want := "agent.enrolled agent.stale agent.reactivated asset.discovered asset.telemetry.received agent.stale"
			if got := strings.Join(types, " "); got != want {
				t.Fatalf("events:\n got %s\nwant %s", got, want)
			}
		})

		if testenv.IsPostgres(dsn) {
			t.Run("while another replica sweeps, this one marks nothing", func(t *testing.T) {
				ag := env.Enroll(tok.Secret, "replica-test", "")
				env.Clock.Advance(staleAfter + time.Second)
				other, err := sql.Open("pgx", dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer other.Close()
				conn, err := other.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", int64(store.StaleSweepLockKey)); err != nil {
					t.Fatal(err)
				}
				sweep(0)
				if status(ag) != "ENROLLED" {
					t.Fatalf("swept while another replica held the lock: %s", status(ag))
				}
				if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", int64(store.StaleSweepLockKey)); err != nil {
					t.Fatal(err)
				}
				sweep(1)
				if status(ag) != "STALE" {
					t.Fatalf("after the lock was released: %s", status(ag))
				}
			})

			t.Run("a row another transaction holds is skipped, not waited on", func(t *testing.T) {
				held := env.Enroll(tok.Secret, "held", "")
				free := env.Enroll(tok.Secret, "free", "")
				env.Clock.Advance(staleAfter + time.Second)
				other, err := sql.Open("pgx", dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer other.Close()
				tx, err := other.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				if _, err := tx.ExecContext(ctx, "SELECT 1 FROM agent_identities WHERE agent_id = $1 FOR UPDATE", held.ID); err != nil {
					t.Fatal(err)
				}
				// A sweeper that waited for the row would run into this deadline.
				wait, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if n, err := env.App.Enrollment.Sweep(wait, staleAfter); err != nil || n != 1 {
					t.Fatalf("sweep beside a held row: %d, %v", n, err)
				}
				if status(free) != "STALE" || status(held) != "ENROLLED" {
					t.Fatalf("free %s, held %s", status(free), status(held))
				}
				if err := tx.Rollback(); err != nil {
					t.Fatal(err)
				}
				sweep(1)
				if status(held) != "STALE" {
					t.Fatalf("held row after release: %s", status(held))
				}
			})
		}

		t.Run("batches mark every identity of every tenant", func(t *testing.T) {
			env.App.Enrollment.SweepBatch = 3
			defer func() { env.App.Enrollment.SweepBatch = 0 }()
			b := env.Tenant("Globex")
			bSite := env.Site(b, "Globex HQ")
			bTok := enrMint(env, b.AdminToken, bSite, nil, 0, 100)
			for i := range 10 {
				env.Enroll(tok.Secret, fmt.Sprintf("bulk-a-%d", i), "")
				env.Enroll(bTok.Secret, fmt.Sprintf("bulk-b-%d", i), "")
			}
			env.Clock.Advance(staleAfter + time.Second)
			sweep(20)
			for _, tn := range []*testenv.Tenant{a, b} {
				if n := enrCount(env, tn.ViewerToken, `{ agentIdentities(filter: {status: ENROLLED}) { totalCount } }`); n != 0 {
					t.Fatalf("%d identities left ENROLLED", n)
				}
			}
			if n := enrCount(env, b.ViewerToken, `{ agentIdentities(filter: {status: STALE}) { totalCount } }`); n != 10 {
				t.Fatalf("tenant b: %d stale, want 10", n)
			}
			if n := enrCount(env, b.ViewerToken, `{ events(filter: {type: "agent.stale"}) { totalCount } }`); n != 10 {
				t.Fatalf("tenant b: %d agent.stale events, want 10", n)
			}
		})
	})
}

// Heartbeats leave the identity's indexed sweep clock alone (they write only the log and the
// asset's liveness row); the sweeper still counts from the last one, never from the older clock.
func TestStaleSweeperCountsFromTheLastHeartbeat(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		const staleAfter = time.Hour
		env := testenv.New(t, dsn, func(c *app.Config) { c.StaleAfter = staleAfter })
		a := env.Tenant("Acme")
		tok := enrMint(env, a.AdminToken, env.Site(a, "HQ"), nil, 0, 10)
		chatty := env.Enroll(tok.Secret, "chatty", "")
		enrMustHeartbeat(env, chatty)
		step := 30 * time.Second
		env.Clock.Advance(step)
		enrMustHeartbeat(env, chatty) // within the resolution of the first

		sweep := func() int {
			t.Helper()
			n, err := env.App.Enrollment.Sweep(context.Background(), staleAfter)
			if err != nil {
				t.Fatalf("sweep: %v", err)
			}
			return n
		}
		env.Clock.Advance(staleAfter - time.Second) // the first heartbeat is older than staleAfter, the last is not
		if n := sweep(); n != 0 || enrStatus(env, a.ViewerToken, chatty.ID) != "ACTIVE" {
			t.Fatalf("marked %d; status %s one second before the last heartbeat is staleAfter old", n, enrStatus(env, a.ViewerToken, chatty.ID))
		}
		env.Clock.Advance(2 * time.Second)
		if n := sweep(); n != 1 || enrStatus(env, a.ViewerToken, chatty.ID) != "STALE" {
			t.Fatalf("marked %d; status %s one second after", n, enrStatus(env, a.ViewerToken, chatty.ID))
		}
	})
}

func TestSecretsNeverStoredInClear(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		a := env.Tenant("Acme")
		hq := env.Site(a, "HQ")
		_, collectorToken := env.Collector(a, hq, "relay")
		tok := enrMint(env, a.AdminToken, hq, nil, 0, 2)
		ag := env.Enroll(tok.Secret, "web-01", "machine-1")
		enrMustHeartbeat(env, ag)
		secrets := map[string]string{"admin user": a.AdminToken, "viewer user": a.ViewerToken,
			"collector": collectorToken, "enrollment": tok.Secret, "agent": ag.Token}

		values := enrAllColumnValues(t, dsn)
		if len(values) == 0 {
			t.Fatal("read nothing from the database")
		}
		for what, secret := range secrets {
			body := secret[strings.IndexByte(secret, '_')+1:]
			hashFound := false
			for _, v := range values {
				if strings.Contains(v.value, secret) || strings.Contains(v.value, body) {
					t.Errorf("the %s token is stored in clear in %s", what, v.where)
				}
				if strings.Contains(v.value, auth.HashToken(secret)) {
					hashFound = true
				}
			}
			// Proves the scan reads the token tables: the hash must be there.
			if !hashFound {
				t.Errorf("the %s token's hash is nowhere in the database: the scan missed a table", what)
			}
		}
	})
}

type enrColumnValue struct{ where, value string }

// enrAllColumnValues reads every column of every table of the database as text.
func enrAllColumnValues(t *testing.T, dsn string) []enrColumnValue {
	t.Helper()
	driver, listColumns := sqliteshim.ShimName, `SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' ORDER BY 1, 2`
	if testenv.IsPostgres(dsn) {
		driver, listColumns = "pgx", `SELECT table_name, column_name FROM information_schema.columns
			WHERE table_schema = current_schema() ORDER BY 1, 2`
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(listColumns)
	if err != nil {
		t.Fatal(err)
	}
	type column struct{ table, name string }
	var columns []column
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.table, &c.name); err != nil {
			t.Fatal(err)
		}
		columns = append(columns, c)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if len(columns) < 20 {
		t.Fatalf("only %d columns found", len(columns))
	}
	var out []enrColumnValue
	for _, c := range columns {
		q := fmt.Sprintf(`SELECT CAST(%q AS TEXT) FROM %q`, c.name, c.table)
		rows, err := db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var v sql.NullString
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v.Valid {
				out = append(out, enrColumnValue{where: c.table + "." + c.name, value: v.String})
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
