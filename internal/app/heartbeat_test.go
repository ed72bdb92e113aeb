package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// The heartbeat tests: one table of cases, each through REST and GraphQL, on SQLite and
// PostgreSQL, plus projection contents, concurrency, rebuild and an unreachable database.

const submitMutation = `mutation($agentId: ID!, $input: HeartbeatInput!) {
  submitHeartbeat(agentId: $agentId, input: $input) {
    agentId assetId status accepted duplicate receivedAt nextHeartbeatSeconds
  }
}`

func hbPath(agentID string) string {
	return "/api/v1/agents/" + url.PathEscape(agentID) + "/telemetry/heartbeat"
}

// fullBody is a heartbeat with every field of CONTRACT §4.
func fullBody(id string) map[string]any {
	return map[string]any{
		"heartbeat_id":  id,
		"sent_at":       "2026-11-28T12:00:00Z",
		"hostname":      "web-01",
		"agent_version": "1.4.2",
		"inventory": map[string]any{
			"os":             map[string]any{"name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-18-amd64", "arch": "amd64"},
			"ip_addresses":   []any{"10.0.0.5"},
			"mac_addresses":  []any{"aa:bb:cc:dd:ee:ff"},
			"cpu_count":      4,
			"memory_bytes":   8589934592,
			"uptime_seconds": 12345,
			"facts":          map[string]any{"role": "web"},
		},
	}
}

// withInventory returns fullBody(id) with inventory key k set to v.
func withInventory(id, k string, v any) map[string]any {
	b := fullBody(id)
	b["inventory"].(map[string]any)[k] = v
	return b
}

func with(b map[string]any, kv ...any) map[string]any {
	for i := 0; i+1 < len(kv); i += 2 {
		b[kv[i].(string)] = kv[i+1]
	}
	return b
}

func strs(n int, format string) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

func manyFacts(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = "v"
	}
	return m
}

// gqlNames maps the REST body's keys to HeartbeatInput's. Fact keys are data, not renamed.
var gqlNames = map[string]string{
	"heartbeat_id": "heartbeatId", "sent_at": "sentAt", "agent_version": "agentVersion",
	"ip_addresses": "ipAddresses", "mac_addresses": "macAddresses", "cpu_count": "cpuCount",
	"memory_bytes": "memoryBytes", "uptime_seconds": "uptimeSeconds",
}

// toGQL converts a REST body into the equivalent GraphQL HeartbeatInput.
func toGQL(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for k, val := range m {
		name := k
		if n, ok := gqlNames[k]; ok {
			name = n
		}
		if k == "facts" {
			out[name] = val
			continue
		}
		out[name] = toGQL(val)
	}
	return out
}

// hbFixture is the world the table's cases run in, one per database. Rejected cases write
// nothing, so they all share it; accepted cases use fresh heartbeat ids.
type hbFixture struct {
	env              *testenv.Env
	a, b             *testenv.Tenant
	siteA, branchA   string
	c1ID, c1Token    string
	c2ID, c2Token    string
	collectorBToken  string
	plain, other     *testenv.Agent // no collector
	bound            *testenv.Agent // bound to collector c1
	revoked, stale   *testenv.Agent // both sent hb-existing before they were revoked or went stale
	neverSeen        *testenv.Agent // revoked before any heartbeat
	revokedToken     *testenv.Agent // its token is revoked
	expiredToken     *testenv.Agent // its token has expired
	expiringToken    *testenv.Agent // its token expired after an accepted heartbeat
	agentB           *testenv.Agent // tenant B
	existingID       string         // a heartbeat id plain has sent with fullBody
	existingReceived string
}

func newHBFixture(t *testing.T, env *testenv.Env) *hbFixture {
	t.Helper()
	f := &hbFixture{env: env}
	f.a = env.Tenant("Acme")
	f.b = env.Tenant("Globex")
	f.siteA = env.Site(f.a, "HQ")
	// The stale agent enrolls first; the clock then passes --stale-after, so the sweep marks
	// only it.
	// It has been heard from, so the service may have it cached as ACTIVE.
	f.stale = env.Enroll(env.EnrollmentToken(f.a, f.siteA, nil, 1), "stale-host", "")
	if r := env.Do(http.MethodPost, hbPath(f.stale.ID), f.stale.Token, fullBody("hb-existing")); r.Status != 200 {
		t.Fatalf("stale agent's heartbeat: %d %s", r.Status, r.Body)
	}
	env.Clock.Advance(env.App.Config.StaleAfter + time.Hour)
	if n, err := env.App.Enrollment.Sweep(context.Background(), env.App.Config.StaleAfter); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	f.branchA = env.Site(f.a, "Branch")
	f.c1ID, f.c1Token = env.Collector(f.a, f.siteA, "relay-1")
	f.c2ID, f.c2Token = env.Collector(f.a, f.siteA, "relay-2")
	tok := env.EnrollmentToken(f.a, f.siteA, nil, 10)
	f.plain = env.Enroll(tok, "plain-host", "")
	f.other = env.Enroll(tok, "other-host", "")
	f.revoked = env.Enroll(tok, "revoked-host", "")
	f.bound = env.Enroll(env.EnrollmentToken(f.a, f.siteA, &f.c1ID, 1), "bound-host", "")
	// revoked is revoked after an accepted heartbeat, so a cached ACTIVE status must not win.
	if r := env.Do(http.MethodPost, hbPath(f.revoked.ID), f.revoked.Token, fullBody("hb-existing")); r.Status != 200 {
		t.Fatalf("revoked agent's heartbeat: %d %s", r.Status, r.Body)
	}
	env.MustGQL(f.a.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a, reason: "test") { status } }`,
		map[string]any{"a": f.revoked.ID})
	f.neverSeen = env.Enroll(tok, "never-seen-host", "")
	env.MustGQL(f.a.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`,
		map[string]any{"a": f.neverSeen.ID})
	// No API revokes or expires a service account's token; set those states in the database.
	f.revokedToken = env.Enroll(tok, "revoked-token-host", "")
	f.expiredToken = env.Enroll(tok, "expired-token-host", "")
	now := env.Clock.Now().UnixMicro()
	for _, u := range []struct {
		set   string
		agent string
	}{{"revoked_at = ?", f.revokedToken.ID}, {"expires_at = ?", f.expiredToken.ID}} {
		_, err := env.App.Store.W.NewRaw(`UPDATE api_tokens SET `+u.set+` WHERE principal_id =
			(SELECT principal_id FROM agent_identities WHERE agent_id = ?)`, now, u.agent).Exec(context.Background())
		if err != nil {
			t.Fatal(err)
		}
	}
	// A token that expires after it was used (and so may sit in a cache).
	f.expiringToken = env.Enroll(tok, "expiring-token-host", "")
	if _, err := env.App.Store.W.NewRaw(`UPDATE api_tokens SET expires_at = ? WHERE principal_id =
		(SELECT principal_id FROM agent_identities WHERE agent_id = ?)`, now+60_000_000, f.expiringToken.ID).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := env.Do(http.MethodPost, hbPath(f.expiringToken.ID), f.expiringToken.Token, fullBody("hb-before-expiry")); r.Status != 200 {
		t.Fatalf("heartbeat before expiry: %d %s", r.Status, r.Body)
	}
	env.Clock.Advance(2 * time.Minute)
	siteB := env.Site(f.b, "HQ")
	_, f.collectorBToken = env.Collector(f.b, siteB, "relay-b")
	f.agentB = env.Enroll(env.EnrollmentToken(f.b, siteB, nil, 1), "b-host", "")

	f.existingID = "hb-existing"
	r := env.Do(http.MethodPost, hbPath(f.plain.ID), f.plain.Token, fullBody(f.existingID))
	if r.Status != http.StatusOK || r.JSON["duplicate"] != false {
		t.Fatalf("first heartbeat: %d %s", r.Status, r.Body)
	}
	f.existingReceived = r.JSON["received_at"].(string)
	env.Clock.Advance(time.Second) // so that a wrongly accepted repeat would show in lastSeenAt
	return f
}

const assetFields = `id hostname site { id } agent { agentId status }
  os { name version kernel arch } ipAddresses macAddresses cpuCount memoryBytes uptimeSeconds facts
  firstSeenAt lastSeenAt online heartbeatCount`

// stateQuery reads, as an admin, everything a heartbeat may write in a tenant.
const stateQuery = `{
  events { totalCount }
  agentIdentities(first: 50) { edges { node { agentId status hostname agentVersion lastSeenAt revokedAt } } }
  assets(first: 50) { totalCount edges { node { ` + assetFields + ` } } }
}`

// snapshot is the state of both tenants, as JSON.
func (f *hbFixture) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, tn := range []*testenv.Tenant{f.a, f.b} {
		d := f.env.MustGQL(tn.AdminToken, stateQuery, nil)
		data, _ := json.Marshal(d)
		b.Write(data)
		b.WriteByte('\n')
	}
	return b.String()
}

type hbCase struct {
	name   string
	token  func(f *hbFixture) string // bearer token; "" for none
	header []string                  // extra request headers, e.g. a malformed Authorization
	agent  func(f *hbFixture) string
	// body is the REST body for a fresh heartbeat id; GraphQL gets it converted by toGQL.
	body      func(f *hbFixture, id string) map[string]any
	raw       string // a REST body sent as is (then body is unused)
	emptyBody bool   // send an empty REST body
	// gqlInput replaces the converted body where GraphQL's typed input differs.
	gqlInput func(f *hbFixture, id string) any
	restOnly bool // identity fields, media type, unknown fields: only REST has them

	status    int    // REST status
	code      string // REST error code; "" when accepted
	field     string // the field the error names, if any
	gqlCode   string // defaults to strings.ToUpper(code)
	gqlField  string // defaults to field
	duplicate bool   // 200 with duplicate: true, nothing written
}

func agentToken(f *hbFixture) string { return f.plain.Token }
func plainID(f *hbFixture) string    { return f.plain.ID }
func validBody(_ *hbFixture, id string) map[string]any {
	return fullBody(id)
}

func heartbeatCases() []hbCase {
	tooBig := strings.Repeat("x", 1<<20+1)
	return []hbCase{
		// Accepted.
		{name: "agent for itself", status: 200},
		{name: "minimal body", body: func(*hbFixture, string) map[string]any { return map[string]any{} }, status: 200},
		{name: "content type with charset", header: []string{"Content-Type", "application/json; charset=utf-8"}, status: 200},
		{name: "own collector", token: func(f *hbFixture) string { return f.c1Token },
			agent: func(f *hbFixture) string { return f.bound.ID }, status: 200},
		{name: "bound agent for itself", token: func(f *hbFixture) string { return f.bound.Token },
			agent: func(f *hbFixture) string { return f.bound.ID }, status: 200},
		{name: "echoing its own identity", restOnly: true, token: func(f *hbFixture) string { return f.bound.Token },
			agent: func(f *hbFixture) string { return f.bound.ID },
			body: func(f *hbFixture, id string) map[string]any {
				return with(fullBody(id), "tenant_id", f.bound.TenantID, "site_id", f.bound.SiteID,
					"collector_id", *f.bound.CollectorID, "asset_id", f.bound.AssetID, "agent_id", f.bound.ID)
			}, status: 200},
		{name: "echoing no collector", restOnly: true, body: func(f *hbFixture, id string) map[string]any {
			return with(fullBody(id), "collector_id", nil, "tenant_id", f.plain.TenantID)
		}, status: 200},
		{name: "unknown fields are ignored", restOnly: true, body: func(_ *hbFixture, id string) map[string]any {
			return with(withInventory(id, "gpu", map[string]any{"model": "x"}), "plugins", []any{1, 2}, "future", true)
		}, status: 200},
		// REST only: a second transport would repeat the same key for the same agent.
		{name: "another agent's heartbeat_id is its own", restOnly: true, token: func(f *hbFixture) string { return f.other.Token },
			agent: func(f *hbFixture) string { return f.other.ID },
			body:  func(f *hbFixture, id string) map[string]any { return with(fullBody(f.existingID), "hostname", id) }, status: 200},
		{name: "heartbeat_id of 128 multibyte characters", body: func(_ *hbFixture, id string) map[string]any {
			return fullBody(strings.Repeat("é", 120) + id[len(id)-8:])
		}, status: 200},
		{name: "duplicate of an accepted heartbeat", body: func(f *hbFixture, _ string) map[string]any {
			return fullBody(f.existingID)
		}, status: 200, duplicate: true},
		{name: "duplicate with another offset for sent_at", body: func(f *hbFixture, _ string) map[string]any {
			return with(fullBody(f.existingID), "sent_at", "2026-11-28T13:00:00+01:00")
		}, status: 200, duplicate: true},

		// 401 unauthenticated.
		{name: "no token", token: func(*hbFixture) string { return "" }, status: 401, code: "unauthenticated"},
		{name: "malformed authorization", token: func(*hbFixture) string { return "" },
			header: []string{"Authorization", "Basic dXNlcjpwYXNz"}, status: 401, code: "unauthenticated"},
		{name: "bearer without token", token: func(*hbFixture) string { return "" },
			header: []string{"Authorization", "Bearer "}, status: 401, code: "unauthenticated"},
		{name: "unknown token", token: func(*hbFixture) string { return "opsa_" + strings.Repeat("a", 43) },
			status: 401, code: "unauthenticated"},
		{name: "revoked token", token: func(f *hbFixture) string { return f.revokedToken.Token },
			agent: func(f *hbFixture) string { return f.revokedToken.ID }, status: 401, code: "unauthenticated"},
		{name: "expired token", token: func(f *hbFixture) string { return f.expiredToken.Token },
			agent: func(f *hbFixture) string { return f.expiredToken.ID }, status: 401, code: "unauthenticated"},
		{name: "token expired after use", token: func(f *hbFixture) string { return f.expiringToken.Token },
			agent: func(f *hbFixture) string { return f.expiringToken.ID }, status: 401, code: "unauthenticated"},
		{name: "no token and wrong media type", restOnly: true, token: func(*hbFixture) string { return "" },
			header: []string{"Content-Type", "text/plain"}, status: 401, code: "unauthenticated"},

		// 403 service_account_required.
		{name: "admin user", token: func(f *hbFixture) string { return f.a.AdminToken }, status: 403, code: "service_account_required"},
		{name: "viewer user", token: func(f *hbFixture) string { return f.a.ViewerToken }, status: 403, code: "service_account_required"},
		{name: "viewer with an oversized body", restOnly: true, token: func(f *hbFixture) string { return f.a.ViewerToken },
			raw: `{"hostname": "` + tooBig + `"}`, status: 403, code: "service_account_required"},

		// 415, 413 (REST's transport checks; GraphQL's /query has the same body limit).
		{name: "text/plain", restOnly: true, header: []string{"Content-Type", "text/plain"}, status: 415, code: "unsupported_media_type"},
		{name: "no content type", restOnly: true, header: []string{"Content-Type", ""}, status: 415, code: "unsupported_media_type"},
		{name: "wrong media type and oversized", restOnly: true, header: []string{"Content-Type", "application/xml"},
			raw: `{"hostname": "` + tooBig + `"}`, status: 415, code: "unsupported_media_type"},
		{name: "oversized", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "facts", map[string]any{"pad": tooBig})
		}, status: 413, code: "payload_too_large"},
		{name: "oversized malformed JSON", restOnly: true, raw: `{"hostname": ` + tooBig, status: 413, code: "payload_too_large"},

		// 400 invalid_request, naming the field.
		{name: "malformed JSON", restOnly: true, raw: `{"hostname": "web-01",`, status: 400, code: "invalid_request", field: "body"},
		{name: "not an object", restOnly: true, raw: `[1, 2]`, status: 400, code: "invalid_request", field: "body"},
		{name: "null", restOnly: true, raw: `null`, status: 400, code: "invalid_request", field: "body"},
		{name: "two JSON values", restOnly: true, raw: `{} {}`, status: 400, code: "invalid_request", field: "body"},
		{name: "empty body", restOnly: true, emptyBody: true, status: 400, code: "invalid_request", field: "body"},
		{name: "cpu_count a string", body: func(_ *hbFixture, id string) map[string]any { return withInventory(id, "cpu_count", "x") },
			status: 400, code: "invalid_request", field: "inventory.cpu_count", gqlCode: "GRAPHQL_VALIDATION_FAILED", gqlField: "-"},
		{name: "ip_addresses a string", body: func(_ *hbFixture, id string) map[string]any { return withInventory(id, "ip_addresses", "a") },
			// GraphQL coerces a single value to a list of one (and a number to a String), so
			// its wrong type is an object.
			gqlInput: func(_ *hbFixture, id string) any {
				return toGQL(withInventory(id, "ip_addresses", []any{map[string]any{"a": 1}}))
			},
			status: 400, code: "invalid_request", field: "inventory.ip_addresses", gqlCode: "GRAPHQL_VALIDATION_FAILED", gqlField: "-"},
		{name: "a fact that is not a string", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "facts", map[string]any{"k": 1})
		}, status: 400, code: "invalid_request", field: "inventory.facts.k"},
		{name: "facts not an object", body: func(_ *hbFixture, id string) map[string]any { return withInventory(id, "facts", "x") },
			status: 400, code: "invalid_request", field: "inventory.facts"},
		{name: "cpu_count negative", body: func(_ *hbFixture, id string) map[string]any { return withInventory(id, "cpu_count", -1) },
			status: 400, code: "invalid_request", field: "inventory.cpu_count"},
		{name: "cpu_count beyond 32 bits", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "cpu_count", 1<<33)
		}, status: 400, code: "invalid_request", field: "inventory.cpu_count", gqlField: "inventory.cpuCount"},
		{name: "memory_bytes negative", body: func(_ *hbFixture, id string) map[string]any { return withInventory(id, "memory_bytes", -5) },
			status: 400, code: "invalid_request", field: "inventory.memory_bytes"},
		{name: "a NUL in the hostname", body: func(_ *hbFixture, id string) map[string]any { return with(fullBody(id), "hostname", "a\x00b") },
			status: 400, code: "invalid_request", field: "hostname"},
		{name: "an empty ip address", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "ip_addresses", []any{"10.0.0.1", ""})
		}, status: 400, code: "invalid_request", field: "inventory.ip_addresses"},
		{name: "sent_at not a time", body: func(_ *hbFixture, id string) map[string]any { return with(fullBody(id), "sent_at", "yesterday") },
			status: 400, code: "invalid_request", field: "sent_at", gqlField: "sentAt"},
		{name: "sent_at a number", body: func(_ *hbFixture, id string) map[string]any { return with(fullBody(id), "sent_at", 5) },
			status: 400, code: "invalid_request", field: "sent_at", gqlField: "sentAt"},
		{name: "hostname of 256 characters", body: func(_ *hbFixture, id string) map[string]any {
			return with(fullBody(id), "hostname", strings.Repeat("h", 256))
		}, status: 400, code: "invalid_request", field: "hostname"},
		{name: "empty heartbeat_id", body: func(_ *hbFixture, _ string) map[string]any { return fullBody("") },
			status: 400, code: "invalid_request", field: "heartbeat_id"},
		{name: "heartbeat_id of 129 characters", body: func(_ *hbFixture, _ string) map[string]any {
			return fullBody(strings.Repeat("i", 129))
		}, status: 400, code: "invalid_request", field: "heartbeat_id"},
		{name: "65 ip addresses", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "ip_addresses", strs(65, "10.0.0.%d"))
		}, status: 400, code: "invalid_request", field: "inventory.ip_addresses"},
		{name: "65 mac addresses", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "mac_addresses", strs(65, "aa:bb:cc:dd:ee:%02x"))
		}, status: 400, code: "invalid_request", field: "inventory.mac_addresses"},
		{name: "65 facts", body: func(_ *hbFixture, id string) map[string]any { return withInventory(id, "facts", manyFacts(65)) },
			status: 400, code: "invalid_request", field: "inventory.facts"},
		{name: "a fact value over 1 KiB", body: func(_ *hbFixture, id string) map[string]any {
			return withInventory(id, "facts", map[string]any{"big": strings.Repeat("v", 1025)})
		}, status: 400, code: "invalid_request", field: "inventory.facts.big"},
		{name: "invalid body for an unknown agent", agent: func(*hbFixture) string { return "0190f7c1-0000-7000-8000-000000000000" },
			body: func(_ *hbFixture, id string) map[string]any {
				return with(fullBody(id), "hostname", strings.Repeat("h", 256))
			},
			status: 400, code: "invalid_request", field: "hostname"},

		// 401 unknown_agent.
		{name: "unknown agent id", agent: func(*hbFixture) string { return "0190f7c1-0000-7000-8000-000000000000" },
			status: 401, code: "unknown_agent"},
		{name: "malformed agent id", agent: func(*hbFixture) string { return "not-an-id' OR '1'='1" },
			status: 401, code: "unknown_agent"},
		{name: "agent of tenant B naming tenant A's agent", token: func(f *hbFixture) string { return f.agentB.Token },
			status: 401, code: "unknown_agent"},
		{name: "collector of tenant B naming tenant A's agent", token: func(f *hbFixture) string { return f.collectorBToken },
			agent: func(f *hbFixture) string { return f.bound.ID }, status: 401, code: "unknown_agent"},

		// 403 actor_mismatch, collector_mismatch.
		{name: "another agent's token", token: func(f *hbFixture) string { return f.other.Token },
			status: 403, code: "actor_mismatch"},
		{name: "another agent's token for a revoked identity", token: func(f *hbFixture) string { return f.other.Token },
			agent: func(f *hbFixture) string { return f.revoked.ID }, status: 403, code: "actor_mismatch"},
		{name: "another collector", token: func(f *hbFixture) string { return f.c2Token },
			agent: func(f *hbFixture) string { return f.bound.ID }, status: 403, code: "collector_mismatch"},
		{name: "a collector for an identity without one", token: func(f *hbFixture) string { return f.c1Token },
			status: 403, code: "collector_mismatch"},

		// 403 agent_revoked, agent_stale.
		{name: "revoked", token: func(f *hbFixture) string { return f.revoked.Token },
			agent: func(f *hbFixture) string { return f.revoked.ID }, status: 403, code: "agent_revoked"},
		{name: "revoked and naming another site", restOnly: true, token: func(f *hbFixture) string { return f.revoked.Token },
			agent:  func(f *hbFixture) string { return f.revoked.ID },
			body:   func(f *hbFixture, id string) map[string]any { return with(fullBody(id), "site_id", f.branchA) },
			status: 403, code: "agent_revoked"},
		{name: "revoked before any heartbeat", token: func(f *hbFixture) string { return f.neverSeen.Token },
			agent: func(f *hbFixture) string { return f.neverSeen.ID }, status: 403, code: "agent_revoked"},
		{name: "revoked, repeating an accepted heartbeat", token: func(f *hbFixture) string { return f.revoked.Token },
			agent: func(f *hbFixture) string { return f.revoked.ID },
			body:  func(f *hbFixture, _ string) map[string]any { return fullBody(f.existingID) }, status: 403, code: "agent_revoked"},
		{name: "revoked, conflicting with an accepted heartbeat", token: func(f *hbFixture) string { return f.revoked.Token },
			agent: func(f *hbFixture) string { return f.revoked.ID },
			body: func(f *hbFixture, _ string) map[string]any {
				return with(fullBody(f.existingID), "hostname", "changed")
			}, status: 403, code: "agent_revoked"},
		{name: "stale", token: func(f *hbFixture) string { return f.stale.Token },
			agent: func(f *hbFixture) string { return f.stale.ID }, status: 403, code: "agent_stale"},
		{name: "stale, repeating an accepted heartbeat", token: func(f *hbFixture) string { return f.stale.Token },
			agent: func(f *hbFixture) string { return f.stale.ID },
			body:  func(f *hbFixture, _ string) map[string]any { return fullBody(f.existingID) }, status: 403, code: "agent_stale"},
		{name: "stale and naming another site", restOnly: true, token: func(f *hbFixture) string { return f.stale.Token },
			agent:  func(f *hbFixture) string { return f.stale.ID },
			body:   func(f *hbFixture, id string) map[string]any { return with(fullBody(id), "site_id", f.branchA) },
			status: 403, code: "agent_stale"},

		// 403 identity_override (REST only: GraphQL's input has no identity fields).
		{name: "override tenant_id", restOnly: true, body: func(f *hbFixture, id string) map[string]any {
			return with(fullBody(id), "tenant_id", f.b.ID)
		}, status: 403, code: "identity_override", field: "tenant_id"},
		{name: "override site_id", restOnly: true, body: func(f *hbFixture, id string) map[string]any {
			return with(fullBody(id), "site_id", f.branchA)
		}, status: 403, code: "identity_override", field: "site_id"},
		{name: "override collector_id", restOnly: true, body: func(f *hbFixture, id string) map[string]any {
			return with(fullBody(id), "collector_id", f.c1ID)
		}, status: 403, code: "identity_override", field: "collector_id"},
		{name: "override collector_id by its collector", restOnly: true, token: func(f *hbFixture) string { return f.c1Token },
			agent:  func(f *hbFixture) string { return f.bound.ID },
			body:   func(f *hbFixture, id string) map[string]any { return with(fullBody(id), "collector_id", f.c2ID) },
			status: 403, code: "identity_override", field: "collector_id"},
		{name: "override asset_id", restOnly: true, body: func(f *hbFixture, id string) map[string]any {
			return with(fullBody(id), "asset_id", f.other.AssetID)
		}, status: 403, code: "identity_override", field: "asset_id"},
		{name: "override agent_id", restOnly: true, body: func(f *hbFixture, id string) map[string]any {
			return with(fullBody(id), "agent_id", f.other.ID)
		}, status: 403, code: "identity_override", field: "agent_id"},
		{name: "override with a conflicting heartbeat_id", restOnly: true, body: func(f *hbFixture, _ string) map[string]any {
			return with(fullBody(f.existingID), "hostname", "changed", "site_id", f.branchA)
		}, status: 403, code: "identity_override", field: "site_id"},

		// 409 idempotency_conflict.
		{name: "same heartbeat_id, other body", body: func(f *hbFixture, _ string) map[string]any {
			return with(fullBody(f.existingID), "hostname", "changed")
		}, status: 409, code: "idempotency_conflict", field: "heartbeat_id"},
		{name: "same heartbeat_id, empty list for absent", body: func(f *hbFixture, _ string) map[string]any {
			return withInventory(f.existingID, "facts", map[string]any{})
		}, status: 409, code: "idempotency_conflict", field: "heartbeat_id"},
	}
}

// hbAnswer is what either transport answered, in REST terms.
type hbAnswer struct {
	status    int // REST status; GraphQL: 200 or the HTTP status of a request-level error
	code      string
	field     string
	message   string
	accepted  bool
	duplicate bool
	received  string
	raw       []byte
}

func sendREST(env *testenv.Env, tc *hbCase, token, agentID string, body map[string]any) hbAnswer {
	var payload any = body
	if tc.raw != "" || tc.emptyBody {
		payload = []byte(tc.raw)
	}
	r := env.Do(http.MethodPost, hbPath(agentID), token, payload, tc.header...)
	a := hbAnswer{status: r.Status, raw: r.Body}
	if e, ok := r.JSON["error"].(map[string]any); ok {
		a.code, _ = e["code"].(string)
		a.field, _ = e["field"].(string)
		a.message, _ = e["message"].(string)
	} else {
		a.accepted, _ = r.JSON["accepted"].(bool)
		a.duplicate, _ = r.JSON["duplicate"].(bool)
		a.received, _ = r.JSON["received_at"].(string)
	}
	return a
}

func sendGQL(env *testenv.Env, token string, header []string, agentID string, input any) hbAnswer {
	r := env.Do(http.MethodPost, "/query", token, map[string]any{"query": submitMutation,
		"variables": map[string]any{"agentId": agentID, "input": input}}, header...)
	var out struct {
		Data struct {
			SubmitHeartbeat *struct {
				Accepted, Duplicate bool
				ReceivedAt          string
			}
		}
		Errors []testenv.GQLError
	}
	a := hbAnswer{status: r.Status, raw: r.Body}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		a.code = "not JSON"
		return a
	}
	if len(out.Errors) > 0 {
		e := out.Errors[0]
		a.code, _ = e.Extensions["code"].(string)
		a.field, _ = e.Extensions["field"].(string)
		a.message = e.Message
	}
	if hb := out.Data.SubmitHeartbeat; hb != nil {
		a.accepted, a.duplicate, a.received = hb.Accepted, hb.Duplicate, hb.ReceivedAt
	}
	return a
}

func TestHeartbeatCases(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := newHBFixture(t, env)
		for _, tc := range heartbeatCases() {
			t.Run(tc.name, func(t *testing.T) {
				token, agentID, body := agentToken(f), plainID(f), validBody
				if tc.token != nil {
					token = tc.token(f)
				}
				if tc.agent != nil {
					agentID = tc.agent(f)
				}
				if tc.body != nil {
					body = tc.body
				}
				transports := []string{"rest", "graphql"}
				if tc.restOnly {
					transports = transports[:1]
				}
				for _, tr := range transports {
					t.Run(tr, func(t *testing.T) {
						id := "hb-" + testenv.Unique()
						before := f.snapshot(t)
						var got hbAnswer
						wantCode, wantField, wantStatus := tc.code, tc.field, tc.status
						if tr == "rest" {
							got = sendREST(env, &tc, token, agentID, body(f, id))
						} else {
							var input any = toGQL(body(f, id))
							if tc.gqlInput != nil {
								input = tc.gqlInput(f, id)
							}
							got = sendGQL(env, token, tc.header, agentID, input)
							wantCode, wantField = strings.ToUpper(tc.code), tc.field
							if tc.gqlCode != "" {
								wantCode = tc.gqlCode
							}
							if tc.gqlField != "" {
								wantField = tc.gqlField
							}
							wantStatus = 0 // GraphQL answers errors in the body
							if tc.code == "payload_too_large" {
								wantStatus = http.StatusRequestEntityTooLarge
							}
						}
						if wantStatus != 0 && got.status != wantStatus {
							t.Errorf("status %d, want %d: %s", got.status, wantStatus, got.raw)
						}
						if got.code != wantCode {
							t.Fatalf("code %q, want %q: %s", got.code, wantCode, got.raw)
						}
						if wantField == "-" {
							wantField = "" // gqlgen's own validation error
						}
						if got.field != wantField {
							t.Errorf("field %q, want %q: %s", got.field, wantField, got.raw)
						}
						if bytes.Contains(got.raw, []byte("SELECT")) || bytes.Contains(got.raw, []byte("goroutine")) {
							t.Errorf("error body leaks internals: %s", got.raw)
						}
						after := f.snapshot(t)
						switch {
						case wantCode != "":
							if got.accepted || before != after {
								t.Errorf("a rejected heartbeat wrote something:\nbefore %s\nafter  %s", before, after)
							}
						case tc.duplicate:
							if !got.accepted || !got.duplicate || got.received != f.existingReceived {
								t.Errorf("want a duplicate received at %s: %s", f.existingReceived, got.raw)
							}
							if before != after {
								t.Errorf("a duplicate wrote something:\nbefore %s\nafter  %s", before, after)
							}
						default:
							if !got.accepted || got.duplicate {
								t.Errorf("want accepted, not duplicate: %s", got.raw)
							}
							if before == after {
								t.Errorf("an accepted heartbeat changed nothing")
							}
						}
					})
				}
			})
		}
	})
}

// gqlAsset reads one asset, its identity and its event counts as an admin.
func gqlAsset(t *testing.T, env *testenv.Env, token, assetID, agentID string) map[string]any {
	t.Helper()
	return env.MustGQL(token, `query($asset: ID!, $agent: ID!) {
  asset(id: $asset) { `+assetFields+` }
  agentIdentity(agentId: $agent) { status lastSeenAt hostname agentVersion }
  discovered: events(filter: {assetId: $asset, type: "asset.discovered"}) { totalCount }
  received: events(filter: {assetId: $asset, type: "asset.telemetry.received"}) { totalCount }
  all: events { totalCount }
}`, map[string]any{"asset": assetID, "agent": agentID})
}

func expectFields(t *testing.T, what string, got map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		gotJSON, _ := json.Marshal(got[k])
		wantJSON, _ := json.Marshal(w)
		if !bytes.Equal(gotJSON, wantJSON) {
			t.Errorf("%s.%s = %s, want %s", what, k, gotJSON, wantJSON)
		}
	}
}

func TestHeartbeatProjection(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		fl := env.NewFleet("Acme")
		ag, admin := fl.Agent, fl.Tenant.AdminToken
		ts := func(tm time.Time) string { return tm.UTC().Format(time.RFC3339Nano) }

		d := gqlAsset(t, env, admin, ag.AssetID, ag.ID)
		if d["asset"] != nil {
			t.Fatalf("asset before the first heartbeat: %v", d["asset"])
		}
		expectFields(t, "identity", d["agentIdentity"].(map[string]any), map[string]any{"status": "ENROLLED", "lastSeenAt": nil})

		// First heartbeat (REST), with strings that must be stored exactly as sent.
		t1 := env.Clock.Now()
		first := fullBody("hb-1")
		first["hostname"] = `wéb-01 "東京" 🚀`
		first["inventory"].(map[string]any)["facts"] = map[string]any{"role": "web", "sql": "'; DROP TABLE assets; --",
			"quote": `it's "quoted" \ back`, "unicode": "Zürich 東京 🚀", "empty": ""}
		r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, first)
		if r.Status != 200 {
			t.Fatalf("first: %d %s", r.Status, r.Body)
		}
		expectFields(t, "first", r.JSON, map[string]any{"agent_id": ag.ID, "asset_id": ag.AssetID, "status": "active",
			"accepted": true, "duplicate": false, "received_at": ts(t1)})
		// Paced: between 0.4 and 1.6 intervals (the pacing tests look closer).
		if n := r.JSON["next_heartbeat_seconds"].(float64); n < 24 || n > 96 {
			t.Fatalf("next_heartbeat_seconds %v outside [24, 96]", n)
		}

		d = gqlAsset(t, env, admin, ag.AssetID, ag.ID)
		expectFields(t, "asset", d["asset"].(map[string]any), map[string]any{
			"id": ag.AssetID, "hostname": first["hostname"], "site": map[string]any{"id": fl.SiteID},
			"agent":       map[string]any{"agentId": ag.ID, "status": "ACTIVE"},
			"os":          map[string]any{"name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-18-amd64", "arch": "amd64"},
			"ipAddresses": []string{"10.0.0.5"}, "macAddresses": []string{"aa:bb:cc:dd:ee:ff"}, "cpuCount": 4,
			"memoryBytes": 8589934592, "uptimeSeconds": 12345, "facts": first["inventory"].(map[string]any)["facts"],
			"firstSeenAt": ts(t1), "lastSeenAt": ts(t1), "online": true, "heartbeatCount": 1})
		expectFields(t, "identity", d["agentIdentity"].(map[string]any), map[string]any{"status": "ACTIVE",
			"lastSeenAt": ts(t1), "hostname": first["hostname"], "agentVersion": "1.4.2"})
		expectFields(t, "events", d, map[string]any{"discovered": map[string]any{"totalCount": 1},
			"received": map[string]any{"totalCount": 1}})

		// Second heartbeat (GraphQL): what it leaves out keeps its previous value.
		env.Clock.Advance(30 * time.Second)
		t2 := env.Clock.Now()
		second := map[string]any{"heartbeatId": "hb-2", "hostname": "web-01.example", "agentVersion": "1.5.0",
			"inventory": map[string]any{"ipAddresses": []any{"10.0.0.6", "fe80::1"}, "cpuCount": 8}}
		g := sendGQL(env, ag.Token, nil, ag.ID, second)
		if !g.accepted || g.duplicate || g.received != ts(t2) {
			t.Fatalf("second: %s", g.raw)
		}
		d = gqlAsset(t, env, admin, ag.AssetID, ag.ID)
		expectFields(t, "asset", d["asset"].(map[string]any), map[string]any{
			"hostname": "web-01.example", "os": map[string]any{"name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-18-amd64", "arch": "amd64"},
			"ipAddresses": []string{"10.0.0.6", "fe80::1"}, "macAddresses": []string{"aa:bb:cc:dd:ee:ff"}, "cpuCount": 8,
			"memoryBytes": 8589934592, "facts": first["inventory"].(map[string]any)["facts"],
			"firstSeenAt": ts(t1), "lastSeenAt": ts(t2), "heartbeatCount": 2})
		expectFields(t, "identity", d["agentIdentity"].(map[string]any), map[string]any{"status": "ACTIVE",
			"lastSeenAt": ts(t2), "hostname": "web-01.example", "agentVersion": "1.5.0"})
		expectFields(t, "events", d, map[string]any{"discovered": map[string]any{"totalCount": 1},
			"received": map[string]any{"totalCount": 2}})

		// Duplicates, whatever the transport, key order or whitespace: 200, the original's
		// received_at, and nothing written.
		env.Clock.Advance(10 * time.Second)
		before, _ := json.Marshal(gqlAsset(t, env, admin, ag.AssetID, ag.ID))
		if g := sendGQL(env, ag.Token, nil, ag.ID, toGQL(first)); !g.duplicate || g.received != ts(t1) {
			t.Errorf("first again over GraphQL: %s", g.raw)
		}
		raw := `  {"inventory":{"cpuCount_is_not_a_field":1, "cpu_count":8,"ip_addresses":["10.0.0.6","fe80::1"]},
			"agent_version":"1.5.0",   "hostname":"web-01.example","heartbeat_id":"hb-2"}`
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, raw); r.Status != 200 || r.JSON["duplicate"] != true ||
			r.JSON["received_at"] != ts(t2) {
			t.Errorf("second again over REST: %d %s", r.Status, r.Body)
		}
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, first); r.Status != 200 || r.JSON["duplicate"] != true {
			t.Errorf("first again over REST: %d %s", r.Status, r.Body)
		}
		after, _ := json.Marshal(gqlAsset(t, env, admin, ag.AssetID, ag.ID))
		if !bytes.Equal(before, after) {
			t.Errorf("duplicates wrote:\nbefore %s\nafter  %s", before, after)
		}

		// An empty list clears; absent keeps; the two are different content for idempotency.
		clear := map[string]any{"heartbeat_id": "hb-3", "inventory": map[string]any{"ip_addresses": []any{}, "facts": map[string]any{}}}
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, clear); r.Status != 200 || r.JSON["duplicate"] != false {
			t.Fatalf("clear: %d %s", r.Status, r.Body)
		}
		if g := sendGQL(env, ag.Token, nil, ag.ID, toGQL(clear)); !g.duplicate {
			t.Errorf("clear again over GraphQL: %s", g.raw)
		}
		if r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, map[string]any{"heartbeat_id": "hb-3"}); r.Status != 409 {
			t.Errorf("hb-3 without the lists: %d %s, want 409", r.Status, r.Body)
		}
		d = gqlAsset(t, env, admin, ag.AssetID, ag.ID)
		expectFields(t, "asset", d["asset"].(map[string]any), map[string]any{"ipAddresses": []string{},
			"macAddresses": []string{"aa:bb:cc:dd:ee:ff"}, "facts": map[string]any{}, "hostname": "web-01.example", "heartbeatCount": 3})

		// Online only while the last heartbeat is younger than --offline-after.
		env.Clock.Advance(env.App.Config.OfflineAfter + time.Second)
		d = gqlAsset(t, env, admin, ag.AssetID, ag.ID)
		expectFields(t, "asset", d["asset"].(map[string]any), map[string]any{"online": false})
	})
}

// rawPost is a goroutine-safe POST (env.Do may only fail the test from the test goroutine).
func rawPost(url, token string, body any) (int, []byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

func TestHeartbeatConcurrentDuplicates(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		fl := env.NewFleet("Acme")
		ag := fl.Agent
		received := func() int {
			d := env.MustGQL(fl.Tenant.AdminToken, `query($a: ID!) { events(filter: {agentId: $a, type: "asset.telemetry.received"}) { totalCount } }`,
				map[string]any{"a": ag.ID})
			return int(d["events"].(map[string]any)["totalCount"].(float64))
		}
		for _, mix := range []bool{false, true} {
			name := "rest"
			if mix {
				name = "rest and graphql"
			}
			t.Run(name, func(t *testing.T) {
				const n = 50
				body := fullBody("hb-concurrent-" + name)
				eventsBefore := received()
				type answer struct {
					status              int
					accepted, duplicate bool
					raw                 []byte
					err                 error
				}
				answers := make([]answer, n)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range n {
					wg.Go(func() {
						<-start
						a := &answers[i]
						if mix && i%2 == 1 {
							a.status, a.raw, a.err = rawPost(env.Server.URL+"/query", ag.Token, map[string]any{"query": submitMutation,
								"variables": map[string]any{"agentId": ag.ID, "input": toGQL(body)}})
							var out struct {
								Data struct {
									SubmitHeartbeat struct{ Accepted, Duplicate bool }
								}
							}
							_ = json.Unmarshal(a.raw, &out)
							a.accepted, a.duplicate = out.Data.SubmitHeartbeat.Accepted, out.Data.SubmitHeartbeat.Duplicate
							return
						}
						a.status, a.raw, a.err = rawPost(env.Server.URL+hbPath(ag.ID), ag.Token, body)
						var out struct{ Accepted, Duplicate bool }
						_ = json.Unmarshal(a.raw, &out)
						a.accepted, a.duplicate = out.Accepted, out.Duplicate
					})
				}
				close(start)
				wg.Wait()
				fresh, dups := 0, 0
				for i, a := range answers {
					switch {
					case a.err != nil:
						t.Errorf("request %d: %v", i, a.err)
					case a.status != 200 || !a.accepted:
						t.Errorf("request %d: %d %s", i, a.status, a.raw)
					case a.duplicate:
						dups++
					default:
						fresh++
					}
				}
				if fresh != 1 || dups != n-1 {
					t.Errorf("%d accepted and %d duplicates, want 1 and %d", fresh, dups, n-1)
				}
				if got := received() - eventsBefore; got != 1 {
					t.Errorf("%d telemetry events written, want 1", got)
				}
			})
		}
	})
}

// readAllAssets reads every asset of the tenant with every field, in id order.
func readAllAssets(t *testing.T, env *testenv.Env, token string) []byte {
	t.Helper()
	var all []any
	after := any(nil)
	for {
		d := env.MustGQL(token, `query($after: String) { assets(first: 20, after: $after) {
  totalCount pageInfo { hasNextPage endCursor } edges { node { `+assetFields+` } } } }`, map[string]any{"after": after})
		conn := d["assets"].(map[string]any)
		for _, e := range conn["edges"].([]any) {
			all = append(all, e.(map[string]any)["node"])
		}
		pi := conn["pageInfo"].(map[string]any)
		if pi["hasNextPage"] != true {
			break
		}
		after = pi["endCursor"]
	}
	out, _ := json.MarshalIndent(all, "", " ")
	return out
}

// buildCLI builds the real oneprotect binary into dir.
func buildCLI(dir string) (string, error) {
	bin := filepath.Join(dir, "oneprotect")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

func TestProjectionRebuild(t *testing.T) {
	binDir := t.TempDir()
	cli := sync.OnceValues(func() (string, error) { return buildCLI(binDir) })
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		acme := env.Tenant("Acme")
		hq, branch := env.Site(acme, "HQ"), env.Site(acme, "Branch")
		relayID, relayToken := env.Collector(acme, hq, "relay")
		tokHQ := env.EnrollmentToken(acme, hq, nil, 10)
		m1 := env.Enroll(tokHQ, "m1", "machine-1")
		m2 := env.Enroll(tokHQ, "m2", "machine-2")
		bound := env.Enroll(env.EnrollmentToken(acme, hq, &relayID, 1), "bound", "")
		m3 := env.Enroll(tokHQ, "m3", "machine-3")
		globex := env.Tenant("Globex")
		gsite := env.Site(globex, "HQ")
		g1 := env.Enroll(env.EnrollmentToken(globex, gsite, nil, 1), "g1", "machine-1") // same machine id, other tenant

		send := func(token string, ag *testenv.Agent, body map[string]any) {
			t.Helper()
			if r := env.Do(http.MethodPost, hbPath(ag.ID), token, body); r.Status != 200 {
				t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
			}
			env.Clock.Advance(7 * time.Second)
		}
		send(m1.Token, m1, fullBody("a"))
		send(m2.Token, m2, withInventory("a", "facts", map[string]any{"x": "1"}))
		send(relayToken, bound, fullBody("a"))
		send(m1.Token, m1, map[string]any{"heartbeat_id": "b", "inventory": map[string]any{"cpu_count": 16, "ip_addresses": []any{}}})
		send(g1.Token, g1, fullBody("a"))
		if g := sendGQL(env, m2.Token, nil, m2.ID, map[string]any{"heartbeatId": "b", "hostname": "m2-renamed",
			"inventory": map[string]any{"os": map[string]any{"name": "Windows"}}}); !g.accepted {
			t.Fatalf("graphql heartbeat: %s", g.raw)
		}
		// Machine 1 re-enrolls in another site: same asset, new identity, new site.
		m1b := env.Enroll(env.EnrollmentToken(acme, branch, nil, 1), "m1-new", "machine-1")
		if m1b.AssetID != m1.AssetID {
			t.Fatalf("re-enrollment changed the asset id")
		}
		send(m1b.Token, m1b, map[string]any{"heartbeat_id": "a", "hostname": "m1-new"})
		if r := env.Do(http.MethodPost, hbPath(m1.ID), m1.Token, fullBody("y")); r.Status != 403 || r.ErrorCode() != "agent_revoked" {
			t.Fatalf("superseded identity that sent heartbeats: %d %s", r.Status, r.Body)
		}
		// Machine 3 re-enrolls before its first heartbeat.
		m3b := env.Enroll(env.EnrollmentToken(acme, branch, nil, 1), "m3-new", "machine-3")
		send(m3b.Token, m3b, fullBody("a"))
		if r := env.Do(http.MethodPost, hbPath(m3.ID), m3.Token, fullBody("z")); r.Status != 403 {
			t.Fatalf("superseded identity: %d %s", r.Status, r.Body)
		}
		env.Clock.Advance(env.App.Config.OfflineAfter) // some online, some not

		read := func() string {
			return string(readAllAssets(t, env, acme.AdminToken)) + string(readAllAssets(t, env, globex.AdminToken))
		}
		live := read()
		if strings.Count(live, `"heartbeatCount"`) != 5 {
			t.Fatalf("want 5 assets: %s", live)
		}

		t.Run("store", func(t *testing.T) {
			n, err := env.App.Store.RebuildProjections(context.Background())
			if err != nil || n == 0 {
				t.Fatalf("rebuild: %d, %v", n, err)
			}
			if rebuilt := read(); rebuilt != live {
				t.Errorf("rebuilt assets differ:\nlive    %s\nrebuilt %s", live, rebuilt)
			}
		})
		t.Run("cli", func(t *testing.T) {
			bin, err := cli()
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "projections", "rebuild", "--db", env.DSN, "--json").Output()
			if err != nil {
				t.Fatalf("oneprotect projections rebuild: %v %s", err, out)
			}
			var res struct {
				EventsReplayed int `json:"events_replayed"`
			}
			if err := json.Unmarshal(out, &res); err != nil || res.EventsReplayed == 0 {
				t.Fatalf("output %q: %v", out, err)
			}
			if rebuilt := read(); rebuilt != live {
				t.Errorf("rebuilt assets differ:\nlive    %s\nrebuilt %s", live, rebuilt)
			}
		})
		// The live projection goes on from the rebuilt model.
		send(m2.Token, m2, map[string]any{"heartbeat_id": "c"})
		if d := gqlAsset(t, env, acme.AdminToken, m2.AssetID, m2.ID); d["asset"].(map[string]any)["heartbeatCount"] != float64(3) {
			t.Errorf("after rebuild: %v", d["asset"])
		}
	})
}

// pgProxy forwards TCP to PostgreSQL until cut: then it drops every connection and refuses
// new ones (by closing them at once), which is what an unreachable database looks like.
type pgProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newPGProxy(t *testing.T, target string) *pgProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *pgProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *pgProxy) serve(c net.Conn) {
	if !p.track(c) {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(up) {
		c.Close()
		return
	}
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func (p *pgProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func TestHeartbeatDatabaseUnavailable(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		var proxy *pgProxy
		if testenv.IsPostgres(dsn) {
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			proxy = newPGProxy(t, u.Host)
			u.Host = proxy.ln.Addr().String()
			dsn = u.String()
		}
		env := testenv.New(t, dsn)
		fl := env.NewFleet("Acme")
		ag := fl.Agent
		state := func(env *testenv.Env) string {
			return fmt.Sprint(gqlAsset(t, env, fl.Tenant.AdminToken, ag.AssetID, ag.ID))
		}
		before := state(env)

		if proxy != nil {
			proxy.setDown(true)
			env.App.Store.W.DB.SetMaxIdleConns(0) // drop the pool's dead connections now
		} else {
			// A SQLite file cannot become unreachable; closed pools are the nearest thing.
			env.App.Store.R.DB.Close()
			env.App.Store.W.DB.Close()
		}
		r := env.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("hb-down"))
		if r.Status != http.StatusServiceUnavailable || r.ErrorCode() != "unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("REST: %d %v %s", r.Status, r.Header, r.Body)
		}
		g := sendGQL(env, ag.Token, nil, ag.ID, toGQL(fullBody("hb-down")))
		if g.code != "UNAVAILABLE" {
			t.Errorf("GraphQL: %s", g.raw)
		}
		for _, raw := range [][]byte{r.Body, g.raw} {
			if bytes.Contains(raw, []byte("127.0.0.1")) || bytes.Contains(raw, []byte("sql")) {
				t.Errorf("error body leaks internals: %s", raw)
			}
		}

		// Back up: nothing was written, and heartbeats are accepted again.
		check := env
		if proxy != nil {
			proxy.setDown(false)
			env.App.Store.W.DB.SetMaxIdleConns(32)
		} else {
			check = testenv.New(t, dsn)
		}
		if after := state(check); after != before {
			t.Errorf("an unavailable database got writes:\nbefore %s\nafter  %s", before, after)
		}
		if r := check.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody("hb-down")); r.Status != 200 || r.JSON["duplicate"] != false {
			t.Errorf("after recovery: %d %s", r.Status, r.Body)
		}
	})
}

// A body without a Content-Length (chunked) obeys --max-body too, on both transports.
func TestHeartbeatChunkedBodyLimit(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		ag := env.NewFleet("Acme").Agent
		// postChunked posts body as the agent with no Content-Length: io.MultiReader hides the
		// length, so the client sends the body chunked.
		postChunked := func(path, body string) (int, string) {
			t.Helper()
			req, err := http.NewRequest(http.MethodPost, env.Server.URL+path, io.MultiReader(strings.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			if req.ContentLength != 0 {
				t.Fatalf("%s: the request has a Content-Length (%d)", path, req.ContentLength)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+ag.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(got)
		}
		huge := strings.Repeat("x", int(env.App.Config.MaxBody))
		for _, tc := range []struct {
			path, body, want string
		}{
			{hbPath(ag.ID), `{"hostname": "` + huge + `"}`, `"code":"payload_too_large"`},
			{"/query", `{"query": "mutation { submitHeartbeat(agentId: \"` + ag.ID + `\", input: {hostname: \"` + huge + `\"}) { accepted } }"}`,
				`"code":"PAYLOAD_TOO_LARGE"`},
		} {
			if status, body := postChunked(tc.path, tc.body); status != http.StatusRequestEntityTooLarge || !strings.Contains(body, tc.want) {
				t.Errorf("%s: %d %s", tc.path, status, body)
			}
		}
		// A chunked body within the limit is served as usual.
		status, body := postChunked("/query", `{"query": "mutation { submitHeartbeat(agentId: \"`+ag.ID+`\", input: {heartbeatId: \"c\"}) { accepted } }"}`)
		if !strings.Contains(body, `"accepted":true`) {
			t.Errorf("chunked heartbeat: %d %s", status, body)
		}
	})
}

// revokeAgentIdentity on one replica takes effect for the very next heartbeat on another,
// even one that has just accepted a heartbeat of that agent.
func TestHeartbeatRevocationAcrossReplicas(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		one := testenv.New(t, dsn)
		two := testenv.New(t, dsn)
		fl := one.NewFleet("Acme")
		ag := fl.Agent
		for _, id := range []string{"a", "b"} {
			if r := two.Do(http.MethodPost, hbPath(ag.ID), ag.Token, fullBody(id)); r.Status != 200 {
				t.Fatalf("heartbeat on replica two: %d %s", r.Status, r.Body)
			}
		}
		one.MustGQL(fl.Tenant.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": ag.ID})
		before := fmt.Sprint(gqlAsset(t, one, fl.Tenant.AdminToken, ag.AssetID, ag.ID))
		for _, body := range []map[string]any{fullBody("c"), fullBody("a"), with(fullBody("b"), "hostname", "other")} {
			if r := two.Do(http.MethodPost, hbPath(ag.ID), ag.Token, body); r.Status != 403 || r.ErrorCode() != "agent_revoked" {
				t.Errorf("%s after revocation: %d %s", body["heartbeat_id"], r.Status, r.Body)
			}
			if g := sendGQL(two, ag.Token, nil, ag.ID, toGQL(body)); g.code != "AGENT_REVOKED" {
				t.Errorf("%s after revocation over GraphQL: %s", body["heartbeat_id"], g.raw)
			}
		}
		if after := fmt.Sprint(gqlAsset(t, one, fl.Tenant.AdminToken, ag.AssetID, ag.ID)); after != before {
			t.Errorf("refused heartbeats wrote:\nbefore %s\nafter  %s", before, after)
		}
	})
}
