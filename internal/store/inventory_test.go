package store_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/projection"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/testenv"
)

// inventoryReport reports every inventory field, each value depending on n.
func inventoryReport(n int) *projection.Report {
	str := func(s string) *string { return &s }
	d := string(rune('0' + n))
	ips, macs := []string{"10.0.0." + d, "fe80::" + d}, []string{"02:42:ac:11:00:0" + d}
	cpu, mem, boot := 2*n, float64(n)*(1<<30), int64(1_780_000_000_000_000)+int64(n)*int64(time.Hour/time.Microsecond)
	return &projection.Report{Hostname: str("host-" + d), AgentVersion: str("1.4." + d),
		OS:          &domain.OperatingSystem{Name: str("Linux " + d), Version: str("12." + d), Kernel: str("6.1." + d), Arch: str("arch" + d)},
		IPAddresses: &ips, MACAddresses: &macs, CPUCount: &cpu, MemoryBytes: &mem,
		Facts: map[string]any{"role": "web-" + d, "rack": "b" + d}, BootTime: &boot}
}

// Every inventory field (projection.Fields) is stored and read back: by the heartbeat that
// discovers the asset, by one that changes every field, and by a rebuild from the events.
func TestInventoryRoundTrip(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		env := testenv.New(t, dsn)
		s := env.App.Store
		ctx := context.Background()
		f := env.NewFleet("Inventory")
		id, err := s.AgentIdentity(ctx, f.Tenant.ID, f.Agent.ID)
		if err != nil {
			t.Fatal(err)
		}
		first, second := projection.New("", inventoryReport(1)), projection.New("", inventoryReport(2))
		for i := range projection.Fields {
			if v := projection.Fields[i].Value(&first); reflect.ValueOf(v).IsZero() {
				t.Fatalf("the test's report leaves %s unset: give it a value", projection.Fields[i].Name)
			}
		}
		if d := projection.Diff(&first, &second); len(d) != len(projection.Fields) {
			t.Fatalf("the test's reports differ in %d of %d fields: %v", len(d), len(projection.Fields), d)
		}
		stored := func(want projection.Snapshot, when string) {
			t.Helper()
			got, err := store.AssetSnapshot(ctx, s, id.TenantID, id.AssetRef)
			if err != nil {
				t.Fatal(err)
			}
			if d := projection.Diff(&want, &got); len(d) != 0 || !reflect.DeepEqual(got, want) {
				t.Errorf("%s: stored %+v, want %+v (differences %v)", when, got, want, d)
			}
		}
		at := env.Clock.Now().UTC().Truncate(time.Microsecond)
		for i, r := range []*projection.Report{inventoryReport(1), inventoryReport(2)} {
			w := &store.HeartbeatWrite{Identity: id, PrincipalID: id.PrincipalID, HeartbeatID: "hb-" + string(rune('1'+i)),
				ReceivedAt: at.Add(time.Duration(i) * time.Second), Report: r, ReportHash: r.Hash()}
			out, err := s.WriteHeartbeat(ctx, w)
			if err != nil {
				t.Fatal(err)
			}
			if out.Discovered != (i == 0) || out.InventoryChanged != (i == 1) {
				t.Fatalf("heartbeat %d: %+v", i+1, out)
			}
		}
		stored(second, "after the change")

		// The listing reads the same columns.
		assets, err := s.AssetsByID(ctx, id.TenantID, []string{id.AssetID}, 0)
		if err != nil || len(assets) != 1 {
			t.Fatalf("AssetsByID: %v %v", assets, err)
		}
		a := assets[0]
		got := projection.Snapshot{Hostname: a.Hostname, AgentVersion: second.AgentVersion, OS: a.OS, IPAddresses: a.IPAddresses,
			MACAddresses: a.MACAddresses, CPUCount: a.CPUCount, MemoryBytes: a.MemoryBytes, Facts: a.Facts, BootTime: second.BootTime}
		if !reflect.DeepEqual(got, second) || a.UptimeSeconds == nil {
			t.Errorf("listed %+v, want %+v", a, second)
		}

		if _, err := s.RebuildProjections(ctx); err != nil {
			t.Fatal(err)
		}
		stored(second, "after a rebuild")
	})
}
