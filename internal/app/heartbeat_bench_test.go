package app_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/projection"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/telemetry"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// The heartbeat benchmarks spread their writes over benchAgents enrolled agents, as the load
// test does (BENCHMARKS.md), with benchInFlight heartbeats in flight, so that group commit
// and the scattered rows of many agents cost what they cost in a real fleet.
//
//	go test -run '^$' -bench 'SubmitHeartbeat|StoreWriteHeartbeat' -benchtime 20000x ./internal/app/
const (
	benchAgents   = 1000
	benchInFlight = 64
)

type benchAgent struct {
	agent     *testenv.Agent
	principal *domain.Principal
	identity  *domain.AgentIdentity
}

func benchFleet(b *testing.B, env *testenv.Env) []benchAgent {
	b.Helper()
	t := env.Tenant("Bench")
	tok := env.EnrollmentToken(t, env.Site(t, "HQ"), nil, benchAgents)
	agents := make([]benchAgent, benchAgents)
	for i := range agents {
		ag := env.Enroll(tok, "bench-"+strconv.Itoa(i), "")
		p, err := env.App.Auth.Authenticate(context.Background(), ag.Token)
		if err != nil {
			b.Fatal(err)
		}
		id, err := env.App.Store.AgentIdentity(context.Background(), ag.TenantID, ag.ID)
		if err != nil {
			b.Fatal(err)
		}
		agents[i] = benchAgent{agent: ag, principal: p, identity: id}
	}
	return agents
}

// benchParallel runs fn with benchInFlight calls at a time, each with the next agent in turn
// and a sequence number that is new for every call.
func benchParallel(b *testing.B, agents []benchAgent, fn func(a benchAgent, seq int64) error) {
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, benchInFlight/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			if err := fn(agents[n%int64(len(agents))], n); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchInventory() *telemetry.Inventory {
	cpus, mem, uptime := 8, float64(16<<30), 86400.0
	name, version, kernel, arch := "Debian GNU/Linux", "12", "6.1.0-18-amd64", "amd64"
	return &telemetry.Inventory{
		OS:          &domain.OperatingSystem{Name: &name, Version: &version, Kernel: &kernel, Arch: &arch},
		IPAddresses: []string{"10.0.0.5", "fe80::1"}, MACAddresses: []string{"52:54:00:12:34:56"},
		CPUCount: &cpus, MemoryBytes: &mem, UptimeSeconds: &uptime, Facts: map[string]any{"role": "web"}}
}

// BenchmarkSubmitHeartbeat measures the heartbeat service (checks, caches, group commit,
// projection) without HTTP.
func BenchmarkSubmitHeartbeat(b *testing.B) {
	for _, db := range testenv.Databases(b) {
		b.Run(db.Name, func(b *testing.B) {
			env := testenv.New(b, db.New(b))
			agents := benchFleet(b, env)
			host := "bench-host"
			benchParallel(b, agents, func(a benchAgent, seq int64) error {
				id := "hb-" + strconv.FormatInt(seq, 10)
				hb := &telemetry.Heartbeat{HeartbeatID: &id, Hostname: &host, Inventory: benchInventory()}
				_, err := env.App.Telemetry.Submit(auth.WithPrincipal(context.Background(), a.principal), a.agent.ID, hb, nil)
				return err
			})
		})
	}
}

// BenchmarkStoreWriteHeartbeat measures the store's part alone: group commit, the statements
// and the commit's sync, for heartbeats already checked and encoded.
func BenchmarkStoreWriteHeartbeat(b *testing.B) {
	for _, db := range testenv.Databases(b) {
		b.Run(db.Name, func(b *testing.B) {
			env := testenv.New(b, db.New(b))
			agents := benchFleet(b, env)
			inv := benchInventory()
			received := env.Clock.Now()
			benchParallel(b, agents, func(a benchAgent, seq int64) error {
				id := "hb-" + strconv.FormatInt(seq, 10)
				host := "bench-host"
				r := &projection.Report{Hostname: &host, OS: inv.OS, IPAddresses: &inv.IPAddresses, MACAddresses: &inv.MACAddresses,
					CPUCount: inv.CPUCount, MemoryBytes: inv.MemoryBytes, Facts: inv.Facts}
				w := &store.HeartbeatWrite{Identity: a.identity, PrincipalID: a.principal.ID, HeartbeatID: id,
					ReceivedAt: received, Report: r, ReportHash: r.Hash()}
				copy(w.RequestHash[:], id)
				out, err := env.App.Store.WriteHeartbeat(context.Background(), w)
				if err == nil && (out.Duplicate || out.Conflict || out.Refused) {
					b.Fatalf("heartbeat %s not accepted: %+v", id, out)
				}
				return err
			})
		})
	}
}
