package app_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/projection"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// BenchmarkStoreWriteHeartbeatFleet is the store's write path at fleet scale: a fleet of
// ONEPROTECT_BENCH_AGENTS agents (default 1,000,000) with their assets, seeded with bulk SQL,
// and every heartbeat from an agent chosen uniformly at random, 64 in flight. Each agent's
// liveness row already holds the report's hash (a fleet in its steady state), so this measures
// the fast path: one log row and one liveness update per heartbeat.
//
//	go test -run '^$' -bench StoreWriteHeartbeatFleet -benchtime 200000x -timeout 1h ./internal/app/
func BenchmarkStoreWriteHeartbeatFleet(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("ONEPROTECT_BENCH_AGENTS")); err == nil && v > 0 {
		n = v
	}
	for _, db := range testenv.Databases(b) {
		b.Run(db.Name, func(b *testing.B) {
			env := testenv.New(b, db.New(b))
			f := env.NewFleet("Bench")
			seedFleet(b, env, f, n)
			host := "bench-host"
			inv := benchInventory()
			report := &projection.Report{Hostname: &host, OS: inv.OS, IPAddresses: &inv.IPAddresses,
				MACAddresses: &inv.MACAddresses, CPUCount: inv.CPUCount, MemoryBytes: inv.MemoryBytes, Facts: inv.Facts}
			hash := report.Hash()
			ctx := context.Background()
			if _, err := env.App.Store.W.ExecContext(ctx, "UPDATE asset_liveness SET inventory_hash = ?", hash); err != nil {
				b.Fatal(err)
			}
			var rows []struct {
				AgentID  string `bun:"agent_id"`
				Ref      int64  `bun:"ref"`
				AssetRef int64  `bun:"asset_ref"`
			}
			if err := env.App.Store.R.NewRaw("SELECT agent_id, ref, asset_ref FROM agent_identities WHERE tenant_id = ?",
				f.Tenant.ID).Scan(ctx, &rows); err != nil {
				b.Fatal(err)
			}
			template, err := env.App.Store.AgentIdentity(ctx, f.Tenant.ID, f.Agent.ID)
			if err != nil {
				b.Fatal(err)
			}
			identities := make([]*domain.AgentIdentity, len(rows))
			for i, r := range rows {
				id := *template
				id.AgentID, id.Ref, id.AssetRef, id.Status = r.AgentID, r.Ref, r.AssetRef, domain.StatusActive
				identities[i] = &id
			}
			received := env.Clock.Now()
			var seq, slow atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(benchInFlight / 2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				for pb.Next() {
					id := identities[rng.IntN(len(identities))]
					hbID := "hb-" + strconv.FormatInt(seq.Add(1), 10)
					w := &store.HeartbeatWrite{Identity: id, PrincipalID: template.PrincipalID, HeartbeatID: hbID,
						ReceivedAt: received, Report: report, ReportHash: hash}
					copy(w.RequestHash[:], hbID)
					out, err := env.App.Store.WriteHeartbeat(ctx, w)
					if err != nil {
						b.Error(err)
						return
					}
					if out.Duplicate || out.Conflict || out.Refused {
						b.Errorf("heartbeat %s not accepted: %+v", hbID, out)
						return
					}
					if out.InventoryChanged || out.Discovered {
						slow.Add(1)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(len(identities)), "agents")
			b.ReportMetric(float64(slow.Load()), "inventory-writes")
		})
	}
}
