package app_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The fleet-scale storage: inventory history, out-of-order heartbeats, bounded retention.
// Every heartbeat case goes through REST and GraphQL.

// sendBoth sends body as a REST heartbeat or, converted to GraphQL's input, as submitHeartbeat.
func sendBoth(t *testing.T, env *testenv.Env, graphql bool, ag *testenv.Agent, body map[string]any) hbAnswer {
	t.Helper()
	if !graphql {
		return sendREST(env, &hbCase{}, ag.Token, ag.ID, body)
	}
	return sendGQL(env, ag.Token, nil, ag.ID, toGraphQLInput(body))
}

// toGraphQLInput turns a REST heartbeat body into HeartbeatInput (camelCase keys).
func toGraphQLInput(body map[string]any) map[string]any {
	names := map[string]string{"heartbeat_id": "heartbeatId", "sent_at": "sentAt", "agent_version": "agentVersion",
		"ip_addresses": "ipAddresses", "mac_addresses": "macAddresses", "cpu_count": "cpuCount",
		"memory_bytes": "memoryBytes", "uptime_seconds": "uptimeSeconds"}
	out := map[string]any{}
	for k, v := range body {
		if n, ok := names[k]; ok {
			k = n
		}
		if k == "inventory" {
			v = toGraphQLInput(v.(map[string]any))
		}
		out[k] = v
	}
	return out
}

// inventoryChanges lists an asset's asset.inventory.changed payloads, oldest first.
func inventoryChanges(t *testing.T, env *testenv.Env, token, assetID string) []map[string]any {
	t.Helper()
	d := env.MustGQL(token, `query($a: ID!) { events(first: 100, filter: {assetId: $a, type: "asset.inventory.changed"}) {
		edges { node { payload } } } }`, map[string]any{"a": assetID})
	var out []map[string]any
	edges := d["events"].(map[string]any)["edges"].([]any)
	for i := len(edges) - 1; i >= 0; i-- {
		out = append(out, edges[i].(map[string]any)["node"].(map[string]any)["payload"].(map[string]any))
	}
	return out
}

func TestInventoryHistory(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		for _, graphql := range []bool{false, true} {
			t.Run(map[bool]string{false: "rest", true: "graphql"}[graphql], func(t *testing.T) {
				env := testenv.New(t, dsn)
				f := env.NewFleet("History")
				ag := f.Agent
				beat := func(id string, body map[string]any) {
					t.Helper()
					body["heartbeat_id"] = id
					if a := sendBoth(t, env, graphql, ag, body); !a.accepted {
						t.Fatalf("heartbeat %s: %d %s", id, a.status, a.raw)
					}
				}
				beat("h1", fullBody(""))
				// The same inventory, ten seconds later, ten seconds more uptime: no change.
				env.Clock.Advance(10 * time.Second)
				beat("h2", withInventory("", "uptime_seconds", 12355))
				if c := inventoryChanges(t, env, f.Tenant.ViewerToken, ag.AssetID); len(c) != 0 {
					t.Fatalf("unchanged inventory recorded changes: %v", c)
				}
				// A new IP address and OS version: one event naming both, with old and new values.
				env.Clock.Advance(10 * time.Second)
				body := withInventory("", "ip_addresses", []any{"10.0.0.6"})
				body["inventory"].(map[string]any)["uptime_seconds"] = 12365
				body["inventory"].(map[string]any)["os"] = map[string]any{"name": "Debian GNU/Linux", "version": "13",
					"kernel": "6.1.0-18-amd64", "arch": "amd64"}
				beat("h3", body)
				changes := inventoryChanges(t, env, f.Tenant.ViewerToken, ag.AssetID)
				if len(changes) != 1 {
					t.Fatalf("want one change event, got %v", changes)
				}
				ch := changes[0]["changes"].(map[string]any)
				if len(ch) != 2 || ch["ip_addresses"] == nil || ch["os"] == nil {
					t.Fatalf("changes: %v", ch)
				}
				ip := ch["ip_addresses"].(map[string]any)
				if ip["old"].([]any)[0] != "10.0.0.5" || ip["new"].([]any)[0] != "10.0.0.6" {
					t.Fatalf("ip change: %v", ip)
				}
				if v := ch["os"].(map[string]any)["new"].(map[string]any)["version"]; v != "13" {
					t.Fatalf("os change: %v", ch["os"])
				}
				// A reboot: the uptime starts again. The boot time is the change.
				env.Clock.Advance(time.Hour)
				body["inventory"].(map[string]any)["uptime_seconds"] = 30
				beat("h4", body)
				changes = inventoryChanges(t, env, f.Tenant.ViewerToken, ag.AssetID)
				if len(changes) != 2 {
					t.Fatalf("want a reboot change, got %v", changes)
				}
				if ch := changes[1]["changes"].(map[string]any); len(ch) != 1 || ch["boot_time"] == nil {
					t.Fatalf("reboot change: %v", ch)
				}
				// A retried old heartbeat (an older sent_at) with the old inventory is recorded,
				// but moves neither the inventory nor last seen backwards.
				seenBefore := gqlAsset(t, env, f.Tenant.ViewerToken, ag.AssetID, ag.ID)["asset"].(map[string]any)["lastSeenAt"]
				old := fullBody("")
				old["sent_at"] = "2026-11-28T11:00:00Z"
				beat("h0-retried", old)
				asset := gqlAsset(t, env, f.Tenant.ViewerToken, ag.AssetID, ag.ID)["asset"].(map[string]any)
				if ips := asset["ipAddresses"].([]any); len(ips) != 1 || ips[0] != "10.0.0.6" {
					t.Fatalf("an old heartbeat moved the inventory back: %v", ips)
				}
				if asset["lastSeenAt"] != seenBefore && asset["lastSeenAt"].(string) < seenBefore.(string) {
					t.Fatalf("last seen went back: %v -> %v", seenBefore, asset["lastSeenAt"])
				}
				if asset["heartbeatCount"] != float64(5) {
					t.Fatalf("heartbeatCount %v, want 5", asset["heartbeatCount"])
				}
				if c := inventoryChanges(t, env, f.Tenant.ViewerToken, ag.AssetID); len(c) != 2 {
					t.Fatalf("an old heartbeat recorded a change: %v", c)
				}
			})
		}
	})
}

// logRows counts the heartbeat log through the public API.
func telemetryCount(t *testing.T, env *testenv.Env, token string) int {
	t.Helper()
	d := env.MustGQL(token, `{ events(filter: {type: "asset.telemetry.received"}) { totalCount } }`, nil)
	return int(d["events"].(map[string]any)["totalCount"].(float64))
}

func TestTelemetryRetention(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		const retention = 24 * time.Hour
		env := testenv.New(t, dsn, func(c *app.Config) { c.TelemetryRetention = retention })
		f := env.NewFleet("Retention")
		tok := env.EnrollmentToken(f.Tenant, f.SiteID, nil, 10)
		agents := []*testenv.Agent{f.Agent}
		for i := range 3 {
			agents = append(agents, env.Enroll(tok, "ret-"+strconv.Itoa(i), ""))
		}
		prune := func() int {
			t.Helper()
			n, err := env.App.Retention.Prune(context.Background())
			if err != nil {
				t.Fatalf("prune: %v", err)
			}
			return n
		}
		seq, booted := 0, env.Clock.Now().Add(-time.Hour)
		beat := func(ag *testenv.Agent, graphql bool) {
			t.Helper()
			seq++
			body := fullBody("r" + strconv.Itoa(seq))
			delete(body, "sent_at")
			body["inventory"].(map[string]any)["uptime_seconds"] = int(env.Clock.Now().Sub(booted) / time.Second)
			if a := sendBoth(t, env, graphql, ag, body); !a.accepted || a.duplicate {
				t.Fatalf("heartbeat: %d %s", a.status, a.raw)
			}
		}
		// A repeat within the retention is still a duplicate, on both transports.
		beat(agents[0], false)
		env.Clock.Advance(retention - time.Minute)
		prune()
		for _, graphql := range []bool{false, true} {
			body := fullBody("r1")
			delete(body, "sent_at")
			body["inventory"].(map[string]any)["uptime_seconds"] = 3600
			if a := sendBoth(t, env, graphql, agents[0], body); !a.duplicate {
				t.Fatalf("graphql=%v: a repeat within the retention: %d %s", graphql, a.status, a.raw)
			}
		}
		// 30 simulated days at a steady rate: every agent every 15 minutes.
		perDay := len(agents) * 24 * 4
		var sizes []int
		for day := 0; day < 30; day++ {
			for step := 0; step < 24*4; step++ {
				env.Clock.Advance(15 * time.Minute)
				for i, ag := range agents {
					beat(ag, (step+i)%2 == 1)
				}
				if step%8 == 0 {
					prune()
				}
			}
			prune()
			n := telemetryCount(t, env, f.Tenant.ViewerToken)
			if day > 0 && (n < perDay-len(agents) || n > perDay+len(agents)) {
				t.Fatalf("day %d: %d heartbeats kept, want about %d (one day)", day, n, perDay)
			}
			sizes = append(sizes, dbBytes(t, env))
		}
		// Once the retention is reached, the database stops growing.
		if sizes[29] > sizes[3]+sizes[3]/10 {
			t.Fatalf("database grew from %d bytes (day 4) to %d (day 30): %v", sizes[3], sizes[29], sizes)
		}
		// Lifecycle events and the asset's count are kept: every accepted heartbeat is counted.
		d := gqlAsset(t, env, f.Tenant.ViewerToken, agents[0].AssetID, agents[0].ID)
		if c := d["asset"].(map[string]any)["heartbeatCount"]; c != float64(1+30*24*4) {
			t.Fatalf("heartbeatCount %v", c)
		}
		if d := env.MustGQL(f.Tenant.ViewerToken, `{ events(filter: {type: "agent.enrolled"}) { totalCount } }`, nil); d["events"].(map[string]any)["totalCount"] != float64(len(agents)) {
			t.Fatalf("lifecycle events pruned: %v", d)
		}
	})
}

// dbBytes is the database's size (SQLite: the pages in use; PostgreSQL: after the VACUUM that
// autovacuum would have run).
func dbBytes(t *testing.T, env *testenv.Env) int {
	t.Helper()
	ctx := context.Background()
	var n int
	if testenv.IsPostgres(env.DSN) {
		if _, err := env.App.Store.W.ExecContext(ctx, "VACUUM heartbeats"); err != nil {
			t.Fatal(err)
		}
		if err := env.App.Store.R.QueryRowContext(ctx, "SELECT pg_database_size(current_database())").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	err := env.App.Store.R.QueryRowContext(ctx,
		"SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n * 4096
}

// The events listing merges lifecycle events and the heartbeat log in time order, and pages
// through both without gaps or repeats.
func TestEventsMergeTheLogInTimeOrder(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		f := env.NewFleet("Merge")
		for i := range 7 {
			env.Clock.Advance(time.Second)
			if a := sendBoth(t, env, i%2 == 0, f.Agent, fullBody("m"+strconv.Itoa(i))); !a.accepted {
				t.Fatalf("heartbeat: %s", a.raw)
			}
		}
		env.Clock.Advance(time.Second)
		env.MustGQL(f.Tenant.AdminToken, `mutation($a: ID!) { revokeAgentIdentity(agentId: $a) { status } }`, map[string]any{"a": f.Agent.ID})
		var all []string
		after := any(nil)
		for {
			d := env.MustGQL(f.Tenant.ViewerToken, `query($after: String) { events(first: 2, after: $after) {
				totalCount pageInfo { hasNextPage endCursor } edges { node { id type occurredAt } } } }`, map[string]any{"after": after})
			conn := d["events"].(map[string]any)
			for _, e := range conn["edges"].([]any) {
				n := e.(map[string]any)["node"].(map[string]any)
				all = append(all, n["type"].(string)+"@"+n["occurredAt"].(string))
			}
			if !conn["pageInfo"].(map[string]any)["hasNextPage"].(bool) {
				if int(conn["totalCount"].(float64)) != len(all) {
					t.Fatalf("totalCount %v, listed %d", conn["totalCount"], len(all))
				}
				break
			}
			after = conn["pageInfo"].(map[string]any)["endCursor"]
		}
		want := []string{"agent.revoked", "asset.telemetry.received", "asset.telemetry.received", "asset.telemetry.received",
			"asset.telemetry.received", "asset.telemetry.received", "asset.telemetry.received", "asset.telemetry.received",
			"asset.discovered", "agent.enrolled"}
		if len(all) != len(want) {
			t.Fatalf("events %v", all)
		}
		for i := range want {
			if typ := all[i][:len(want[i])]; typ != want[i] {
				t.Fatalf("event %d is %s, want %s: %v", i, all[i], want[i], all)
			}
			if i > 0 && all[i][len(want[i])+1:] > all[i-1][len(want[i-1])+1:] {
				t.Fatalf("events out of time order: %v", all)
			}
		}
	})
}
