package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// seedFleet inserts n active agents with their assets into f's site with bulk SQL: setup for
// reads at scale, far faster than n enrollments and heartbeats. The rows look like what the
// heartbeat path writes (online at the env's clock). It returns the asset ids.
func seedFleet(tb testing.TB, env *testenv.Env, f *testenv.Fleet, n int) []string {
	tb.Helper()
	ctx := context.Background()
	db := env.App.Store.W
	var principalID string
	if err := db.NewRaw("SELECT principal_id FROM agent_identities WHERE agent_id = ?", f.Agent.ID).Scan(ctx, &principalID); err != nil {
		tb.Fatal(err)
	}
	now := store.Micros(env.Clock.Now())
	var refs struct {
		Next   int64 `bun:"next"`
		Tenant int64 `bun:"tenant"`
		Site   int64 `bun:"site"`
	}
	if err := db.NewRaw(`SELECT (SELECT COALESCE(MAX(ref), 0) + 1 FROM agent_identities) AS next,
		(SELECT ref FROM tenants WHERE id = ?) AS tenant, (SELECT ref FROM sites WHERE id = ?) AS site`,
		f.Tenant.ID, f.SiteID).Scan(ctx, &refs); err != nil {
		tb.Fatal(err)
	}
	assetIDs := make([]string, 0, n)
	const batch = 500
	for start := 0; start < n; start += batch {
		var idents, assets, liveness []string
		for i := start; i < min(start+batch, n); i++ {
			agentID, assetID, ref := ids.New(), ids.New(), refs.Next+int64(i)
			host := fmt.Sprintf("seed-%06d", i)
			idents = append(idents, fmt.Sprintf("('%s','%s','%s','%s','%s','ACTIVE','%s','1.0.0',%d,%d,%d,%d)",
				agentID, f.Tenant.ID, f.SiteID, assetID, principalID, host, now, now, ref, ref))
			assets = append(assets, fmt.Sprintf("('%s',%d,'%s','%s','%s','%s','Linux','[]','[]','{}',%d)",
				assetID, ref, f.Tenant.ID, f.SiteID, agentID, host, now))
			liveness = append(liveness, fmt.Sprintf("(%d,%d,%d,%d,%d,1,1)", ref, refs.Tenant, refs.Site, ref, now))
			assetIDs = append(assetIDs, assetID)
		}
		for _, q := range []string{
			`INSERT INTO agent_identities (agent_id, tenant_id, site_id, asset_id, principal_id,
			status, hostname, agent_version, enrolled_at, activity_at, ref, asset_ref) VALUES ` + strings.Join(idents, ","),
			`INSERT INTO assets (id, ref, tenant_id, site_id, agent_id, hostname, os_name,
			ip_addresses, mac_addresses, facts, first_seen_at) VALUES ` + strings.Join(assets, ","),
			`INSERT INTO asset_liveness (asset_ref, tenant_ref, site_ref, agent_ref, last_seen_at, heartbeat_count,
			inventory_hash) VALUES ` + strings.Join(liveness, ","),
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if env.App.Store.Dialect == store.Postgres {
		_, _ = db.ExecContext(ctx, "SELECT setval('agent_identities_ref_seq', (SELECT MAX(ref) FROM agent_identities))")
	}
	if env.App.Store.Dialect == store.Postgres {
		// What autovacuum would have done by now: statistics, and a visibility map so that
		// counts are index-only scans.
		_, _ = db.ExecContext(ctx, "VACUUM ANALYZE assets")
		_, _ = db.ExecContext(ctx, "VACUUM ANALYZE agent_identities")
		_, _ = db.ExecContext(ctx, "VACUUM ANALYZE asset_liveness")
	} else {
		_, _ = db.ExecContext(ctx, "ANALYZE")
	}
	return assetIDs
}

// BenchmarkDashboardAssets measures assets(first: 100) { agent site } as a dashboard asks it,
// through HTTP, with fleets of 1,000 and 100,000 assets, without and with totalCount; it
// reports SQL statements per operation, which must not grow with the fleet.
//
//	ONEPROTECT_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkDashboardAssets -benchtime 200x ./internal/app/
func BenchmarkDashboardAssets(b *testing.B) {
	const page = `query($after: String) { assets(first: 100, after: $after) { pageInfo { hasNextPage endCursor }
		edges { node { id hostname online agent { agentId status } site { id name } } } } }`
	const counted = `query($after: String) { assets(first: 100, after: $after) { totalCount pageInfo { hasNextPage endCursor }
		edges { node { id hostname online agent { agentId status } site { id name } } } } }`
	for _, db := range testenv.Databases(b) {
		for _, size := range []int{1_000, 100_000} {
			env, counter := countingEnv(b, db.New(b))
			f := env.NewFleet("Bench")
			seedFleet(b, env, f, size)
			for _, q := range []struct{ name, query string }{{"page", page}, {"page+totalCount", counted}} {
				b.Run(fmt.Sprintf("%s/fleet=%d/%s", db.Name, size, q.name), func(b *testing.B) {
					env.MustGQL(f.Tenant.ViewerToken, q.query, nil) // warm the token cache and the query cache
					// Page through the fleet so deep pages are measured too, wrapping at the end.
					after := ""
					counter.n.Store(0)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						vars := map[string]any{}
						if after != "" {
							vars["after"] = after
						}
						c := env.MustGQL(f.Tenant.ViewerToken, q.query, vars)["assets"].(map[string]any)
						if len(c["edges"].([]any)) == 0 {
							b.Fatal("empty page")
						}
						info := c["pageInfo"].(map[string]any)
						after = ""
						if info["hasNextPage"] == true {
							after = info["endCursor"].(string)
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(counter.n.Load())/float64(b.N), "stmts/op")
				})
			}
		}
	}
}
