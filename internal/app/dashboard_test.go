package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/testenv"
)

// Dashboard reads over GraphQL (issue 5): queries and filters, tenant isolation, cursors,
// online, batching, cost limits, the fleet summary and GraphQL-over-HTTP conformance.

// stmtCounter counts the SQL statements bun runs (reads and non-heartbeat writes).
type stmtCounter struct{ n atomic.Int64 }

func (c *stmtCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

// AfterQuery counts a statement, except the credential epoch's read: the token cache reads it
// at most twice a second whatever the request, so whether one falls inside a measure depends on
// the clock, not on the query measured.
func (c *stmtCounter) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if !strings.Contains(e.Query, "credential_epoch") {
		c.n.Add(1)
	}
}

// countingEnv starts the service with a statement counter installed before any request.
func countingEnv(t testing.TB, dsn string) (*testenv.Env, *stmtCounter) {
	env := testenv.New(t, dsn)
	c := &stmtCounter{}
	env.App.Store.AddQueryHook(c)
	return env, c
}

// statements runs fn and returns how many statements it cost.
func (c *stmtCounter) statements(fn func()) int64 {
	before := c.n.Load()
	fn()
	return c.n.Load() - before
}

type hb map[string]any

// heartbeat posts an accepted heartbeat through REST.
func heartbeat(t testing.TB, env *testenv.Env, a *testenv.Agent, body hb) {
	t.Helper()
	if body == nil {
		body = hb{}
	}
	r := env.Do(http.MethodPost, "/api/v1/agents/"+a.ID+"/telemetry/heartbeat", a.Token, map[string]any(body))
	if r.Status != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", r.Status, r.Body)
	}
}

func osBody(host, version, osName string) hb {
	return hb{"hostname": host, "agent_version": version, "inventory": map[string]any{"os": map[string]any{"name": osName}}}
}

// conn reads a connection answer: node ids (by idField), end cursor, hasNextPage, totalCount.
type page struct {
	IDs     []string
	End     string
	HasNext bool
	Total   int
}

func readPage(t testing.TB, d map[string]any, field, idField string) page {
	t.Helper()
	c, ok := d[field].(map[string]any)
	if !ok {
		t.Fatalf("no %s in %v", field, d)
	}
	var p page
	for _, e := range c["edges"].([]any) {
		p.IDs = append(p.IDs, e.(map[string]any)["node"].(map[string]any)[idField].(string))
	}
	info := c["pageInfo"].(map[string]any)
	p.HasNext = info["hasNextPage"].(bool)
	if s, ok := info["endCursor"].(string); ok {
		p.End = s
	}
	if n, ok := c["totalCount"].(float64); ok {
		p.Total = int(n)
	}
	return p
}

const assetsPage = `query($first: Int, $after: String, $filter: AssetFilter) {
  assets(first: $first, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id } } } }`

const identitiesPage = `query($first: Int, $after: String, $filter: AgentIdentityFilter) {
  agentIdentities(first: $first, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage endCursor } edges { node { agentId } } } }`

const eventsPage = `query($first: Int, $after: String, $filter: EventFilter) {
  events(first: $first, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } }`

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

func sameSet(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// mixedFleet is tenant A with two sites and four agents in every state worth counting, and
// tenant B with one active agent.
type mixedFleet struct {
	A, B                      *testenv.Tenant
	hq, branch, bSite         string
	collector                 string
	web, db, edge, idle, bAgt *testenv.Agent
}

func newMixedFleet(t *testing.T, env *testenv.Env) *mixedFleet {
	m := &mixedFleet{A: env.Tenant("Acme"), B: env.Tenant("Globex")}
	m.hq, m.branch = env.Site(m.A, "HQ"), env.Site(m.A, "Branch")
	m.collector, _ = env.Collector(m.A, m.branch, "relay")
	hqTok := env.EnrollmentToken(m.A, m.hq, nil, 10)
	brTok := env.EnrollmentToken(m.A, m.branch, &m.collector, 10)
	m.web = env.Enroll(hqTok, "web-01", "m-web")
	m.db = env.Enroll(hqTok, "db-01", "m-db")
	m.edge = env.Enroll(brTok, "edge-01", "m-edge")
	m.idle = env.Enroll(hqTok, "idle-01", "m-idle")
	m.bSite = env.Site(m.B, "HQ")
	m.bAgt = env.Enroll(env.EnrollmentToken(m.B, m.bSite, nil, 1), "web-01", "m-web")

	heartbeat(t, env, m.web, osBody("web-01", "1.4.2", "Debian GNU/Linux"))
	heartbeat(t, env, m.db, osBody("db-01", "1.4.2", "Ubuntu"))
	heartbeat(t, env, m.edge, osBody("edge-01", "2.0.0", "Windows"))
	heartbeat(t, env, m.bAgt, osBody("web-01", "9.9.9", "Globex OS"))
	// --offline-after is 180s: only web (and B's agent) stay online.
	env.Clock.Advance(200 * time.Second)
	heartbeat(t, env, m.web, nil)
	heartbeat(t, env, m.bAgt, nil)
	env.MustGQL(m.A.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a, reason: "lost") { status } }`,
		map[string]any{"a": m.db.ID})
	return m
}

func TestDashboardQueries(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		m := newMixedFleet(t, env)
		viewer := m.A.ViewerToken

		t.Run("asset and agentIdentity by id, never across tenants", func(t *testing.T) {
			d := env.MustGQL(viewer, `query($id: ID!) { asset(id: $id) { id hostname online heartbeatCount os { name }
				site { id } agent { agentId status collector { id } site { id } } } }`, map[string]any{"id": m.edge.AssetID})
			a := d["asset"].(map[string]any)
			if a["hostname"] != "edge-01" || a["online"] != false || a["heartbeatCount"] != 1.0 ||
				a["os"].(map[string]any)["name"] != "Windows" || a["site"].(map[string]any)["id"] != m.branch {
				t.Errorf("asset = %v", a)
			}
			ag := a["agent"].(map[string]any)
			if ag["agentId"] != m.edge.ID || ag["status"] != "ACTIVE" || ag["collector"].(map[string]any)["id"] != m.collector {
				t.Errorf("agent = %v", ag)
			}
			for _, id := range []string{m.bAgt.AssetID, "not-a-uuid", "00000000-0000-0000-0000-000000000000"} {
				if d := env.MustGQL(viewer, `query($id: ID!) { asset(id: $id) { id } }`, map[string]any{"id": id}); d["asset"] != nil {
					t.Errorf("asset(%s) = %v, want null", id, d["asset"])
				}
			}
			if d := env.MustGQL(viewer, `query($id: ID!) { agentIdentity(agentId: $id) { agentId status } }`,
				map[string]any{"id": m.idle.ID}); d["agentIdentity"].(map[string]any)["status"] != "ENROLLED" {
				t.Errorf("idle identity = %v", d)
			}
			if d := env.MustGQL(viewer, `query($id: ID!) { agentIdentity(agentId: $id) { agentId } }`,
				map[string]any{"id": m.bAgt.ID}); d["agentIdentity"] != nil {
				t.Errorf("other tenant's identity visible: %v", d)
			}
		})

		t.Run("assets with filters and totalCount", func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				filter map[string]any
				want   []string
			}{
				{"all", nil, []string{m.web.AssetID, m.db.AssetID, m.edge.AssetID}},
				{"online", map[string]any{"online": true}, []string{m.web.AssetID}},
				{"offline", map[string]any{"online": false}, []string{m.db.AssetID, m.edge.AssetID}},
				{"site", map[string]any{"siteId": m.branch}, []string{m.edge.AssetID}},
				{"site and online", map[string]any{"siteId": m.hq, "online": false}, []string{m.db.AssetID}},
				{"hostname, any case", map[string]any{"hostnameContains": "WEB"}, []string{m.web.AssetID}},
				{"hostname is literal", map[string]any{"hostnameContains": "%"}, nil},
				{"another tenant's site", map[string]any{"siteId": m.bSite}, nil},
				{"unknown site", map[string]any{"siteId": "nope"}, nil},
			} {
				p := readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"filter": tc.filter}), "assets", "id")
				sameSet(t, tc.name, p.IDs, tc.want)
				if p.Total != len(tc.want) || p.HasNext {
					t.Errorf("%s: totalCount %d hasNext %v, want %d false", tc.name, p.Total, p.HasNext, len(tc.want))
				}
			}
			// B sees only its own asset, whatever A has.
			p := readPage(t, env.MustGQL(m.B.ViewerToken, assetsPage, nil), "assets", "id")
			sameSet(t, "B's assets", p.IDs, []string{m.bAgt.AssetID})
		})

		t.Run("online follows --offline-after on the clock", func(t *testing.T) {
			env.Clock.Advance(181 * time.Second) // web's last heartbeat is now 181s old
			p := readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"filter": map[string]any{"online": true}}), "assets", "id")
			if len(p.IDs) != 0 || p.Total != 0 {
				t.Errorf("online after 181s = %v", p)
			}
			heartbeat(t, env, m.web, nil)
			p = readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"filter": map[string]any{"online": true}}), "assets", "id")
			sameSet(t, "online again", p.IDs, []string{m.web.AssetID})
			d := env.MustGQL(viewer, `query($id: ID!) { asset(id: $id) { online } }`, map[string]any{"id": m.web.AssetID})
			if d["asset"].(map[string]any)["online"] != true {
				t.Errorf("asset.online = %v", d)
			}
		})

		t.Run("agentIdentities with filters", func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				filter map[string]any
				want   []string
			}{
				{"all", nil, []string{m.web.ID, m.db.ID, m.edge.ID, m.idle.ID}},
				{"active", map[string]any{"status": "ACTIVE"}, []string{m.web.ID, m.edge.ID}},
				{"revoked", map[string]any{"status": "REVOKED"}, []string{m.db.ID}},
				{"enrolled at HQ", map[string]any{"status": "ENROLLED", "siteId": m.hq}, []string{m.idle.ID}},
				{"branch", map[string]any{"siteId": m.branch}, []string{m.edge.ID}},
				{"another tenant's site", map[string]any{"siteId": m.bSite}, nil},
			} {
				p := readPage(t, env.MustGQL(viewer, identitiesPage, map[string]any{"filter": tc.filter}), "agentIdentities", "agentId")
				sameSet(t, tc.name, p.IDs, tc.want)
				if p.Total != len(tc.want) {
					t.Errorf("%s: totalCount %d, want %d", tc.name, p.Total, len(tc.want))
				}
			}
		})

		t.Run("events with filters", func(t *testing.T) {
			all := readPage(t, env.MustGQL(viewer, eventsPage, map[string]any{"first": 500}), "events", "id")
			if all.Total != len(all.IDs) || all.Total == 0 {
				t.Fatalf("events: %d edges, totalCount %d", len(all.IDs), all.Total)
			}
			bEvents := readPage(t, env.MustGQL(m.B.ViewerToken, eventsPage, map[string]any{"first": 500}), "events", "id")
			for _, id := range bEvents.IDs {
				if slices.Contains(all.IDs, id) {
					t.Fatalf("A sees B's event %s", id)
				}
			}
			count := func(filter map[string]any) page {
				return readPage(t, env.MustGQL(viewer, eventsPage, map[string]any{"first": 500, "filter": filter}), "events", "id")
			}
			if p := count(map[string]any{"type": "asset.discovered"}); p.Total != 3 || len(p.IDs) != 3 {
				t.Errorf("discovered: %+v", p)
			}
			// web: discovered + 3 telemetry (two in the fleet, one in the online subtest).
			if p := count(map[string]any{"assetId": m.web.AssetID, "type": "asset.telemetry.received"}); p.Total != 3 {
				t.Errorf("web telemetry: %+v", p)
			}
			if p := count(map[string]any{"agentId": m.edge.ID, "type": "asset.telemetry.received"}); p.Total != 1 {
				t.Errorf("edge telemetry by agent: %+v", p)
			}
			for _, f := range []map[string]any{{"assetId": m.bAgt.AssetID}, {"agentId": m.bAgt.ID}} {
				if p := count(f); p.Total != 0 || len(p.IDs) != 0 {
					t.Errorf("filter %v on another tenant's object: %+v", f, p)
				}
			}
			// An asset's own events connection.
			d := env.MustGQL(viewer, `query($id: ID!) { asset(id: $id) { events(first: 10) { totalCount edges { node { assetId type } } } } }`,
				map[string]any{"id": m.edge.AssetID})
			ev := d["asset"].(map[string]any)["events"].(map[string]any)
			if ev["totalCount"] != 3.0 { // enrolled, discovered, telemetry
				t.Errorf("edge events = %v", ev)
			}
		})

		t.Run("sites, collectors and enrollment tokens per tenant", func(t *testing.T) {
			d := env.MustGQL(viewer, `{ sites { id } collectors { id site { id } } }`, nil)
			var sites []string
			for _, s := range d["sites"].([]any) {
				sites = append(sites, s.(map[string]any)["id"].(string))
			}
			sameSet(t, "sites", sites, []string{m.hq, m.branch})
			cs := d["collectors"].([]any)
			if len(cs) != 1 || cs[0].(map[string]any)["id"] != m.collector {
				t.Errorf("collectors = %v", cs)
			}
			d = env.MustGQL(viewer, `query($s: ID) { collectors(siteId: $s) { id } }`, map[string]any{"s": m.bSite})
			if len(d["collectors"].([]any)) != 0 {
				t.Errorf("collectors of another tenant's site = %v", d)
			}
			tokens := func(tok string) page {
				return readPage(t, env.MustGQL(tok, `{ enrollmentTokens(first: 500) { totalCount pageInfo { hasNextPage endCursor }
					edges { node { id site { id } } } } }`, nil), "enrollmentTokens", "id")
			}
			a, b := tokens(m.A.AdminToken), tokens(m.B.AdminToken)
			if a.Total != 2 || len(a.IDs) != 2 || b.Total != 1 || len(b.IDs) != 1 || slices.Contains(a.IDs, b.IDs[0]) {
				t.Errorf("enrollment tokens: A %+v, B %+v", a, b)
			}
			if r := env.GQL(viewer, `{ enrollmentTokens { totalCount } }`, nil); r.Code() != "FORBIDDEN" {
				t.Errorf("viewer lists enrollment tokens: %s", r.Raw)
			}
		})

		t.Run("fleetSummary from aggregates", func(t *testing.T) {
			const q = `query($s: ID) { fleetSummary(siteId: $s) { identitiesByStatus { status count } totalAssets online offline
				byOsName { name count } byAgentVersion { name count } } }`
			sum := func(site any) map[string]any {
				return env.MustGQL(viewer, q, map[string]any{"s": site})["fleetSummary"].(map[string]any)
			}
			counts := func(list any, key string) map[string]int {
				out := map[string]int{}
				for _, c := range list.([]any) {
					c := c.(map[string]any)
					k, _ := c[key].(string)
					if n := int(c["count"].(float64)); n > 0 {
						out[k] = n
					}
				}
				return out
			}
			s := sum(nil)
			if s["totalAssets"] != 3.0 || s["online"] != 1.0 || s["offline"] != 2.0 {
				t.Errorf("totals = %v", s)
			}
			if got := fmt.Sprint(counts(s["identitiesByStatus"], "status")); got != "map[ACTIVE:2 ENROLLED:1 REVOKED:1]" {
				t.Errorf("by status = %s", got)
			}
			if got := fmt.Sprint(counts(s["byOsName"], "name")); got != "map[Debian GNU/Linux:1 Ubuntu:1 Windows:1]" {
				t.Errorf("by OS = %s", got)
			}
			if got := fmt.Sprint(counts(s["byAgentVersion"], "name")); got != "map[1.0.0:1 1.4.2:2 2.0.0:1]" {
				t.Errorf("by version = %s", got)
			}
			s = sum(m.branch)
			if s["totalAssets"] != 1.0 || s["offline"] != 1.0 ||
				fmt.Sprint(counts(s["identitiesByStatus"], "status")) != "map[ACTIVE:1]" ||
				fmt.Sprint(counts(s["byOsName"], "name")) != "map[Windows:1]" {
				t.Errorf("branch summary = %v", s)
			}
			s = sum(m.bSite)
			if s["totalAssets"] != 0.0 || len(counts(s["identitiesByStatus"], "status")) != 0 ||
				len(s["byOsName"].([]any)) != 0 || len(s["byAgentVersion"].([]any)) != 0 {
				t.Errorf("summary of another tenant's site = %v", s)
			}
		})
	})
}

func TestDashboardCursors(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		a, b := env.NewFleet("Acme"), env.NewFleet("Globex")
		tokA := env.EnrollmentToken(a.Tenant, a.SiteID, nil, 100)
		addAssets := func(n int) []string {
			var ids []string
			for i := 0; i < n; i++ {
				ag := env.Enroll(tokA, "host-"+testenv.Unique(), "")
				heartbeat(t, env, ag, nil)
				ids = append(ids, ag.AssetID)
			}
			return ids
		}
		heartbeat(t, env, a.Agent, nil)
		heartbeat(t, env, b.Agent, nil)
		heartbeat(t, env, env.Enroll(env.EnrollmentToken(b.Tenant, b.SiteID, nil, 1), "b2", ""), nil)
		before := append([]string{a.Agent.AssetID}, addAssets(6)...)
		viewer := a.Tenant.ViewerToken

		p1 := readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"first": 3}), "assets", "id")
		if len(p1.IDs) != 3 || !p1.HasNext || p1.Total != 7 || p1.End == "" {
			t.Fatalf("page 1 = %+v", p1)
		}
		bPage := readPage(t, env.MustGQL(b.Tenant.ViewerToken, assetsPage, map[string]any{"first": 1}), "assets", "id")
		filtered := readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"first": 1,
			"filter": map[string]any{"online": true}}), "assets", "id")

		t.Run("refused cursors and sizes", func(t *testing.T) {
			tampered := []byte(p1.End)
			tampered[2] ^= 1
			garbage := "bm90LWEtY3Vyc29y"
			for _, tc := range []struct {
				name string
				vars map[string]any
			}{
				{"another tenant's cursor", map[string]any{"after": bPage.End}},
				{"another filter's cursor", map[string]any{"after": filtered.End}},
				{"page cursor under a filter", map[string]any{"after": p1.End, "filter": map[string]any{"siteId": a.SiteID}}},
				{"tampered", map[string]any{"after": string(tampered)}},
				{"garbage", map[string]any{"after": garbage}},
				{"garbage with a dot", map[string]any{"after": "x.y"}},
				{"first 501", map[string]any{"first": 501}},
				{"first -1", map[string]any{"first": -1}},
				{"first over 32 bits", map[string]any{"first": 9999999999}},
			} {
				r := env.GQL(viewer, assetsPage, tc.vars)
				if r.Code() != "INVALID_REQUEST" || r.Data["assets"] != nil {
					t.Errorf("%s: %s", tc.name, r.Raw)
				}
				if strings.Contains(string(r.Raw), b.Agent.AssetID) {
					t.Errorf("%s leaks B's asset: %s", tc.name, r.Raw)
				}
			}
			// A cursor of the assets listing is not one of the events listing either.
			if r := env.GQL(viewer, eventsPage, map[string]any{"after": p1.End}); r.Code() != "INVALID_REQUEST" {
				t.Errorf("assets cursor on events: %s", r.Raw)
			}
			if r := env.GQL(viewer, identitiesPage, map[string]any{"after": p1.End}); r.Code() != "INVALID_REQUEST" {
				t.Errorf("assets cursor on identities: %s", r.Raw)
			}
			for _, q := range []string{`{ assets(first: 9999999999) { totalCount } }`, `{ events(first: -9999999999) { totalCount } }`,
				`{ assets(first: 501) { totalCount } }`, `{ agentIdentities(first: -1) { totalCount } }`} {
				if r := env.GQL(viewer, q, nil); r.Code() != "INVALID_REQUEST" {
					t.Errorf("%s: %s", q, r.Raw)
				}
			}
			if p := readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"first": 500}), "assets", "id"); len(p.IDs) != 7 {
				t.Errorf("first 500: %d", len(p.IDs))
			}
		})

		t.Run("stable while rows are added", func(t *testing.T) {
			added := addAssets(3)
			seen := slices.Clone(p1.IDs)
			after := p1.End
			for after != "" {
				p := readPage(t, env.MustGQL(viewer, assetsPage, map[string]any{"first": 3, "after": after}), "assets", "id")
				seen = append(seen, p.IDs...)
				after = ""
				if p.HasNext {
					after = p.End
				}
			}
			for _, id := range before {
				if n := countOf(seen, id); n != 1 {
					t.Errorf("pre-existing asset %s seen %d times", id, n)
				}
			}
			for _, id := range seen {
				if countOf(seen, id) != 1 || !slices.Contains(before, id) && !slices.Contains(added, id) {
					t.Errorf("asset %s duplicated or foreign", id)
				}
			}
		})

		t.Run("events pages stay stable while heartbeats arrive", func(t *testing.T) {
			all := readPage(t, env.MustGQL(viewer, eventsPage, map[string]any{"first": 500}), "events", "id")
			e1 := readPage(t, env.MustGQL(viewer, eventsPage, map[string]any{"first": 4}), "events", "id")
			for i := 0; i < 3; i++ {
				heartbeat(t, env, a.Agent, nil)
			}
			seen := slices.Clone(e1.IDs)
			after := e1.End
			for after != "" {
				p := readPage(t, env.MustGQL(viewer, eventsPage, map[string]any{"first": 4, "after": after}), "events", "id")
				seen = append(seen, p.IDs...)
				after = ""
				if p.HasNext {
					after = p.End
				}
			}
			if !slices.Equal(seen, all.IDs) {
				t.Errorf("paged events differ from the snapshot:\n got %v\nwant %v", seen, all.IDs)
			}
		})
	})
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func TestDashboardPagesThroughTheFleet(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("Acme")
		n := 2000
		if testing.Short() {
			n = 600
		}
		want := seedFleet(t, env, f, n)
		seen := map[string]int{}
		after, pages := "", 0
		for {
			vars := map[string]any{"first": 500}
			if after != "" {
				vars["after"] = after
			}
			p := readPage(t, env.MustGQL(f.Tenant.ViewerToken, assetsPage, vars), "assets", "id")
			pages++
			if p.Total != n {
				t.Fatalf("totalCount %d, want %d", p.Total, n)
			}
			for _, id := range p.IDs {
				seen[id]++
			}
			if !p.HasNext {
				break
			}
			after = p.End
		}
		if len(seen) != n || pages != (n+499)/500 {
			t.Fatalf("saw %d distinct assets in %d pages, want %d", len(seen), pages, n)
		}
		for _, id := range want {
			if seen[id] != 1 {
				t.Fatalf("asset %s seen %d times", id, seen[id])
			}
		}
	})
}

func TestDashboardBatching(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env, counter := countingEnv(t, dsn)
		f := env.NewFleet("Acme")
		collector, _ := env.Collector(f.Tenant, f.SiteID, "relay")
		tok := env.EnrollmentToken(f.Tenant, f.SiteID, &collector, 5)
		for i := 0; i < 3; i++ {
			heartbeat(t, env, env.Enroll(tok, fmt.Sprint("relayed-", i), ""), nil)
		}
		seedFleet(t, env, f, 600)
		const q = `query($first: Int) { assets(first: $first) { totalCount edges { node { id hostname online
			site { id name } agent { agentId status site { id name } collector { id name site { id } } asset { id } } } } } }`
		cost := func(first int) int64 {
			return counter.statements(func() {
				d := env.MustGQL(f.Tenant.ViewerToken, q, map[string]any{"first": first})
				if got := len(d["assets"].(map[string]any)["edges"].([]any)); got != first {
					t.Fatalf("first %d: %d edges", first, got)
				}
			})
		}
		cost(1) // warms the token cache, so both measures count the same authentication work
		small, large := cost(10), cost(500)
		t.Logf("statements: first:10 -> %d, first:500 -> %d", small, large)
		if small != large || small == 0 {
			t.Fatalf("statements grow with the page: first:10 -> %d, first:500 -> %d", small, large)
		}
	})
}

func TestDashboardCostLimits(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env, counter := countingEnv(t, dsn)
		f := env.NewFleet("Acme")
		heartbeat(t, env, f.Agent, nil)
		viewer := f.Tenant.ViewerToken

		var frag strings.Builder
		frag.WriteString(`query($id: ID!) { asset(id: $id) { ...B30 } }` + "\n")
		for i := 1; i <= 30; i++ {
			if i%2 == 0 {
				fmt.Fprintf(&frag, "fragment B%d on Asset { x: agent { ...A%d } y: agent { ...A%d } }\n", i, i-1, i-1)
			} else {
				fmt.Fprintf(&frag, "fragment A%d on AgentIdentity { x: asset { ...B%d } y: asset { ...B%d } }\n", i, i-1, i-1)
			}
		}
		frag.WriteString("fragment B0 on Asset { id }\n")
		aliases := func(n int, field string) string {
			var b strings.Builder
			b.WriteString("{ ")
			for i := 0; i < n; i++ {
				fmt.Fprintf(&b, "a%d: %s ", i, field)
			}
			return b.String() + "}"
		}
		nested := func(depth int) string {
			return `query($id: ID!) { asset(id: $id) { ` + strings.Repeat("agent { asset { ", depth) + "id" +
				strings.Repeat(" } }", depth) + " } }"
		}
		env.MustGQL(viewer, `{ viewer { id } }`, nil) // warms the token cache
		for _, tc := range []struct{ name, query string }{
			{"deep nesting", nested(50)},
			{"exponential fragments", frag.String()},
			{"alias flood", aliases(2000, "assets { totalCount }")},
			{"alias flood under the field limit", aliases(200, "assets(first: 500) { edges { node { id } } }")},
			{"nested lists multiply", `{ assets(first: 500) { edges { node { events(first: 500) { edges { node { id } } } } } } }`},
			{"huge first in nested lists", `{ a: assets(first: 500) { edges { node { events(first: 500) { totalCount } } } } b: assets(first: 500) { edges { node { events(first: 500) { totalCount } } } } }`},
			{"10,000 repeated fields", "{ viewer { " + strings.Repeat("id ", 10_000) + "} }"},
			{"10,000 repeated list fields", "{ " + strings.Repeat("sites { id } ", 10_000) + "}"},
		} {
			var r *testenv.GQLResult
			start := time.Now()
			n := counter.statements(func() { r = env.GQL(viewer, tc.query, map[string]any{"id": f.Agent.AssetID}) })
			elapsed := time.Since(start)
			code := r.Code()
			if code != "COMPLEXITY_LIMIT_EXCEEDED" && code != "GRAPHQL_PARSE_FAILED" && code != "GRAPHQL_VALIDATION_FAILED" {
				t.Errorf("%s: not refused: %.300s", tc.name, r.Raw)
			}
			// The caller's token is cached (warmed above), so any statement means a resolver ran.
			if n != 0 || r.Data != nil {
				t.Errorf("%s: %d statements, data %v: resolvers ran", tc.name, n, r.Data)
			}
			t.Logf("%s: %s in %v", tc.name, code, elapsed)
		}

		t.Run("the playground's introspection query fits the limits", func(t *testing.T) {
			typeRef := "kind name" + strings.Repeat(" ofType { kind name", 9) + strings.Repeat(" }", 9)
			q := `query IntrospectionQuery { __schema { queryType { name } mutationType { name } subscriptionType { name }
				types { ...FullType } directives { name description locations args { ...InputValue } } } }
			fragment FullType on __Type { kind name description
				fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
				inputFields { ...InputValue } interfaces { ...TypeRef }
				enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
			fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
			fragment TypeRef on __Type { ` + typeRef + ` }`
			if d := env.MustGQL("", q, nil); d["__schema"] == nil {
				t.Fatal("no schema")
			}
		})

		t.Run("the largest accepted operation is still quick", func(t *testing.T) {
			q := "{ viewer { " + strings.Repeat("id ", 990) + "} }"
			start := time.Now()
			env.MustGQL(viewer, q, nil)
			t.Logf("990 repeated fields (the most accepted) answered in %v", time.Since(start))
		})

		t.Run("ten heartbeats per operation, not eleven", func(t *testing.T) {
			collector, ctoken := env.Collector(f.Tenant, f.SiteID, "relay")
			ctok := env.EnrollmentToken(f.Tenant, f.SiteID, &collector, 20)
			var agents []*testenv.Agent
			for i := 0; i < 11; i++ {
				agents = append(agents, env.Enroll(ctok, fmt.Sprint("relayed-", i), ""))
			}
			op := func(n int) (string, map[string]any) {
				var b strings.Builder
				vars := map[string]any{}
				b.WriteString("mutation(")
				for i := 0; i < n; i++ {
					fmt.Fprintf(&b, "$a%d: ID! ", i)
					vars[fmt.Sprint("a", i)] = agents[i].ID
				}
				b.WriteString(") {")
				for i := 0; i < n; i++ {
					fmt.Fprintf(&b, " h%d: submitHeartbeat(agentId: $a%d, input: {hostname: \"h\"}) { accepted status receivedAt nextHeartbeatSeconds agentId assetId duplicate }", i, i)
				}
				return b.String() + " }", vars
			}
			q, vars := op(11)
			r := env.GQL(ctoken, q, vars)
			if r.Code() != "COMPLEXITY_LIMIT_EXCEEDED" || r.Data != nil {
				t.Fatalf("11 heartbeats: %s", r.Raw)
			}
			d := env.MustGQL(viewer, `query($a: ID!) { agentIdentity(agentId: $a) { status } events(filter: {type: "asset.telemetry.received"}) { totalCount } }`,
				map[string]any{"a": agents[0].ID})
			if d["agentIdentity"].(map[string]any)["status"] != "ENROLLED" || d["events"].(map[string]any)["totalCount"] != 1.0 {
				t.Fatalf("11 heartbeats wrote something: %v", d)
			}
			q, vars = op(10)
			d = env.MustGQL(ctoken, q, vars)
			for i := 0; i < 10; i++ {
				if d[fmt.Sprint("h", i)].(map[string]any)["accepted"] != true {
					t.Fatalf("10 heartbeats: %v", d)
				}
			}
			// Fragments count too: six in the operation and five in a fragment are eleven.
			var b strings.Builder
			b.WriteString("mutation($a: ID!) { ...five")
			for i := 0; i < 6; i++ {
				fmt.Fprintf(&b, " o%d: submitHeartbeat(agentId: $a, input: {}) { accepted }", i)
			}
			b.WriteString(" } fragment five on Mutation {")
			for i := 0; i < 5; i++ {
				fmt.Fprintf(&b, " f%d: submitHeartbeat(agentId: $a, input: {}) { accepted }", i)
			}
			if r := env.GQL(ctoken, b.String()+" }", map[string]any{"a": agents[10].ID}); r.Code() != "COMPLEXITY_LIMIT_EXCEEDED" || r.Data != nil {
				t.Fatalf("11 heartbeats through a fragment: %s", r.Raw)
			}
		})
	})
}

func TestGraphQLOverHTTP(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("Acme")
		tok := f.Tenant.AdminToken
		const gqlJSON = "application/graphql-response+json"
		post := func(body any, header ...string) *testenv.Response {
			return env.Do(http.MethodPost, "/query", tok, body, header...)
		}
		get := func(query string, header ...string) *testenv.Response {
			return env.Do(http.MethodGet, "/query?query="+url.QueryEscape(query), tok, nil, header...)
		}
		ctype := func(r *testenv.Response) string { return strings.Split(r.Header.Get("Content-Type"), ";")[0] }
		for _, tc := range []struct {
			name       string
			do         func() *testenv.Response
			status     int
			media      string
			code, data string // extensions.code of the first error; "absent" if there must be no data entry
		}{
			{"query, application/json by default", func() *testenv.Response { return post(map[string]any{"query": "{ viewer { id } }"}) },
				200, "application/json", "", "present"},
			{"query, graphql-response+json when accepted", func() *testenv.Response {
				return post(map[string]any{"query": "{ viewer { id } }"}, "Accept", gqlJSON)
			}, 200, gqlJSON, "", "present"},
			{"parse error, graphql-response+json", func() *testenv.Response {
				return post(map[string]any{"query": "{ viewer { id "}, "Accept", gqlJSON)
			}, 400, gqlJSON, "GRAPHQL_PARSE_FAILED", "absent"},
			{"validation error, graphql-response+json", func() *testenv.Response {
				return post(map[string]any{"query": "{ viewer { nope } }"}, "Accept", gqlJSON)
			}, 400, gqlJSON, "GRAPHQL_VALIDATION_FAILED", "absent"},
			{"over the cost limit, graphql-response+json", func() *testenv.Response {
				return post(map[string]any{"query": "{ assets(first: 500) { edges { node { events(first: 500) { totalCount } } } } }"}, "Accept", gqlJSON)
			}, 400, gqlJSON, "", "absent"},
			{"bad variable, graphql-response+json", func() *testenv.Response {
				return post(map[string]any{"query": "query($n: Int) { assets(first: $n) { totalCount } }",
					"variables": map[string]any{"n": 9999999999}}, "Accept", gqlJSON)
			}, 200, gqlJSON, "INVALID_REQUEST", "present"}, // the scalar refuses it while executing: data is null
			{"no query, graphql-response+json", func() *testenv.Response { return post(map[string]any{}, "Accept", gqlJSON) },
				400, gqlJSON, "", "absent"},
			{"parse error, application/json stays 200", func() *testenv.Response {
				return post(map[string]any{"query": "{ viewer { id "}, "Accept", "application/json")
			}, 200, "application/json", "GRAPHQL_PARSE_FAILED", "absent"},
			{"validation error, application/json stays 200", func() *testenv.Response {
				return post(map[string]any{"query": "{ viewer { nope } }"})
			}, 200, "application/json", "GRAPHQL_VALIDATION_FAILED", "absent"},
			{"field error executes: 200 with data", func() *testenv.Response {
				return post(map[string]any{"query": `{ assets(first: 501) { totalCount } }`}, "Accept", gqlJSON)
			}, 200, gqlJSON, "INVALID_REQUEST", "present"},
			{"body that is not JSON", func() *testenv.Response { return post("{not json", "Accept", gqlJSON) }, 400, gqlJSON, "", "absent"},
			{"GET query", func() *testenv.Response { return get("{ viewer { id } }", "Accept", gqlJSON) }, 200, gqlJSON, "", "present"},
			{"GET query, application/json", func() *testenv.Response { return get("{ viewer { id } }") }, 200, "application/json", "", "present"},
			{"GET without a query", func() *testenv.Response {
				return env.Do(http.MethodGet, "/query", tok, nil, "Accept", gqlJSON)
			}, 400, gqlJSON, "", "absent"},
		} {
			r := tc.do()
			if r.Status != tc.status || ctype(r) != tc.media {
				t.Errorf("%s: %d %s, want %d %s: %s", tc.name, r.Status, ctype(r), tc.status, tc.media, r.Body)
				continue
			}
			_, present := r.JSON["data"]
			if present != (tc.data == "present") {
				t.Errorf("%s: data entry present=%v: %s", tc.name, present, r.Body)
			}
			if tc.code != "" {
				errs, _ := r.JSON["errors"].([]any)
				if len(errs) == 0 || errs[0].(map[string]any)["extensions"].(map[string]any)["code"] != tc.code {
					t.Errorf("%s: want code %s: %s", tc.name, tc.code, r.Body)
				}
			}
		}

		t.Run("mutation over GET is 405 and runs nothing", func(t *testing.T) {
			r := get(`mutation { createSite(input: {name: "via GET"}) { id } }`)
			if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" {
				t.Fatalf("mutation via GET: %d Allow=%q %s", r.Status, r.Header.Get("Allow"), r.Body)
			}
			d := env.MustGQL(tok, `{ sites { name } }`, nil)
			if strings.Contains(fmt.Sprint(d), "via GET") {
				t.Fatal("the mutation ran")
			}
		})

		t.Run("unsupported media type is 415", func(t *testing.T) {
			for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "application/graphql"} {
				r := env.Do(http.MethodPost, "/query", tok, `{"query":"{ viewer { id } }"}`, "Content-Type", ct)
				if r.Status != http.StatusUnsupportedMediaType {
					t.Errorf("%s: %d %s", ct, r.Status, r.Body)
				}
			}
			if r := env.Do(http.MethodPut, "/query", tok, `{}`); r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") == "" {
				t.Errorf("PUT: %d %v", r.Status, r.Header)
			}
		})
	})
}
