package projection

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/oneprotect/telemetry/internal/domain"
)

// fullReport reports every field (TestMergeDiffApply checks that it does).
func fullReport() *Report {
	str := func(s string) *string { return &s }
	ips, macs := []string{"10.0.0.5", "fe80::1"}, []string{"02:42:ac:11:00:02"}
	cpu, mem, boot := 8, float64(16<<30), int64(1_780_000_000_000_000)
	return &Report{Hostname: str("web-01"), AgentVersion: str("1.4.2"),
		OS:          &domain.OperatingSystem{Name: str("Debian GNU/Linux"), Version: str("12"), Kernel: str("6.1.0-18-amd64"), Arch: str("amd64")},
		IPAddresses: &ips, MACAddresses: &macs, CPUCount: &cpu, MemoryBytes: &mem,
		Facts: map[string]any{"role": "web", "rack": "b4"}, BootTime: &boot}
}

// Every member of Snapshot and of Report is a Field, in the same order, named as the
// snapshot's JSON names it; every column is stored once.
func TestFieldsDeclareTheInventory(t *testing.T) {
	snap, rep := reflect.TypeOf(Snapshot{}), reflect.TypeOf(Report{})
	if snap.NumField() != len(Fields) || rep.NumField() != len(Fields) {
		t.Fatalf("Snapshot has %d fields, Report %d, Fields %d: declare each inventory field in all three",
			snap.NumField(), rep.NumField(), len(Fields))
	}
	columns := map[string]bool{}
	for i, f := range Fields {
		if name, _, _ := strings.Cut(snap.Field(i).Tag.Get("json"), ","); name != f.Name {
			t.Errorf("Fields[%d] is %q, Snapshot.%s's JSON name %q", i, f.Name, snap.Field(i).Name, name)
		}
		if snap.Field(i).Name != rep.Field(i).Name {
			t.Errorf("Snapshot.%s and Report.%s are in different places", snap.Field(i).Name, rep.Field(i).Name)
		}
		if f.get == nil || f.merge == nil || f.bind == nil || f.dest == nil || len(f.Columns) == 0 {
			t.Errorf("field %s is incomplete", f.Name)
		}
		for _, c := range f.Columns {
			if columns[c] {
				t.Errorf("column %s stored twice", c)
			}
			columns[c] = true
		}
		var s Snapshot
		if n := len(f.bind(&s, nil)); n != len(f.Columns) {
			t.Errorf("field %s binds %d values for %d columns", f.Name, n, len(f.Columns))
		}
		if n := len(f.dest(&s, nil)); n != len(f.Columns) {
			t.Errorf("field %s scans %d values for %d columns", f.Name, n, len(f.Columns))
		}
	}
	if len(Columns) != len(columns) {
		t.Errorf("Columns has %d, the fields %d", len(Columns), len(columns))
	}
}

// A full report sets every field; an empty one changes none; the change events of a full
// report replay to the same snapshot.
func TestMergeDiffApply(t *testing.T) {
	full := New("", fullReport())
	for i := range Fields {
		if v := Fields[i].Value(&full); reflect.ValueOf(v).IsZero() {
			t.Errorf("the full report leaves %s unset", Fields[i].Name)
		}
	}
	if got := full.Merge(&Report{}); !reflect.DeepEqual(got, full) {
		t.Errorf("an empty report changed the snapshot: %+v", got)
	}
	empty := New("", &Report{})
	if empty.IPAddresses == nil || empty.MACAddresses == nil || empty.Facts == nil {
		t.Errorf("a new snapshot's lists and facts are nil: %+v", empty)
	}
	changes := Diff(&empty, &full)
	if len(changes) != len(Fields) {
		t.Errorf("%d changes for %d fields: %v", len(changes), len(Fields), changes)
	}
	payload, err := json.Marshal(Changed{HeartbeatID: "hb", Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := empty.ApplyChanges(payload)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(&replayed, &full); len(d) != 0 {
		t.Errorf("the replay differs: %v", d)
	}
	// Within the tolerance a boot time is the same boot, whose first instant stays.
	later := *fullReport().BootTime + BootTolerance.Microseconds()
	if got := full.Merge(&Report{BootTime: &later}); *got.BootTime != *full.BootTime {
		t.Errorf("the same boot moved the boot time to %d", *got.BootTime)
	}
}

// The hashes are stored (asset_liveness.inventory_hash): a report's hash never changes
// between versions, or every asset would take the slow path once after an upgrade.
func TestHashIsStable(t *testing.T) {
	if got := fullReport().Hash(); got != 5107819548677597049 {
		t.Errorf("full report hash %d", got)
	}
	if got := (&Report{}).Hash(); got != 2452693583222387653 {
		t.Errorf("empty report hash %d", got)
	}
	r := fullReport()
	r.BootTime = nil
	if r.Hash() != fullReport().Hash() {
		t.Error("the boot time is hashed")
	}
}
