// Package projection builds the asset read model. An asset's inventory is a Snapshot; a
// heartbeat carries a Report of some of its fields; Merge applies a report to a snapshot and
// Diff names what changed. The live heartbeat path and `oneprotect projections rebuild` use
// the same functions, so both give identical assets.
//
// The inventory's fields are declared once, in Fields: each names the field in events, the
// assets columns that store it, and how it is merged, compared, written and read. Merge, Diff,
// the change events, the replay and the store's statements all walk that list. Adding a field
// is a member of Snapshot and of Report, an entry in Fields and its column (a migration); the
// wire format (internal/telemetry) and the GraphQL Asset are where a person decides how it is
// reported and shown.
package projection

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Snapshot is an asset's inventory as the read model stores it. Its JSON is the payload of
// asset.discovered, and each field's JSON name is the name an asset.inventory.changed event
// uses for it (its Field's Name).
type Snapshot struct {
	Hostname     string                  `json:"hostname"`
	AgentVersion *string                 `json:"agent_version,omitempty"`
	OS           *domain.OperatingSystem `json:"os,omitempty"`
	IPAddresses  []string                `json:"ip_addresses"`
	MACAddresses []string                `json:"mac_addresses"`
	CPUCount     *int                    `json:"cpu_count,omitempty"`
	MemoryBytes  *float64                `json:"memory_bytes,omitempty"`
	Facts        map[string]any          `json:"facts"`
	// BootTime (unix microseconds) is when the machine booted: the heartbeat's uptime turned
	// into an instant, which stays the same from beat to beat until the machine reboots.
	BootTime *int64 `json:"boot_time,omitempty"`
}

// Report is what one heartbeat said about the inventory. A nil field was absent and keeps the
// asset's value; a present list or map replaces it.
//
// Its JSON is what Hash digests: the short keys are part of the hashes stored in the
// liveness rows, so an existing field's key never changes (a new field takes a new key).
type Report struct {
	Hostname     *string                 `json:"h,omitempty"`
	AgentVersion *string                 `json:"v,omitempty"`
	OS           *domain.OperatingSystem `json:"o,omitempty"`
	IPAddresses  *[]string               `json:"i,omitempty"`
	MACAddresses *[]string               `json:"m,omitempty"`
	CPUCount     *int                    `json:"c,omitempty"`
	MemoryBytes  *float64                `json:"b,omitempty"`
	Facts        map[string]any          `json:"f,omitempty"`
	// BootTime is compared on its own, within BootTolerance, and so is not hashed.
	BootTime *int64 `json:"-"`
}

// BootTolerance is how far two heartbeats' boot times (received time minus uptime) may differ
// and still be the same boot: the difference is transit and queueing time, not a reboot.
const BootTolerance = 30 * time.Second

// Field is one inventory field.
type Field struct {
	// Name is the field's name in events: its JSON name in Snapshot.
	Name string
	// Columns are the assets table's columns that store it.
	Columns []string

	get   func(*Snapshot) any      // the value Diff compares and a change event carries
	merge func(*Snapshot, *Report) // applies the report's value, if it has one
	// normalize replaces a missing value that is stored as an empty one (lists, facts).
	normalize func(*Snapshot)
	// bind appends the values of Columns; dest appends scan destinations for them, which
	// decode (if set) moves into the snapshot once the row is scanned.
	bind   func(*Snapshot, []any) []any
	dest   func(*Snapshot, []any) []any
	decode func(*Snapshot, []any) error
}

// Value is the field's value in s, as Diff compares it.
func (f *Field) Value(s *Snapshot) any { return f.get(s) }

// Fields is the inventory's field set, in the order change events list them and the assets
// table's columns are written.
var Fields = []Field{
	{
		Name: "hostname", Columns: []string{"hostname"},
		get: func(s *Snapshot) any { return s.Hostname },
		merge: func(s *Snapshot, r *Report) {
			if r.Hostname != nil {
				s.Hostname = *r.Hostname
			}
		},
		bind: func(s *Snapshot, a []any) []any { return append(a, s.Hostname) },
		dest: func(s *Snapshot, a []any) []any { return append(a, &s.Hostname) },
	},
	column("agent_version", func(s *Snapshot) **string { return &s.AgentVersion }, func(r *Report) *string { return r.AgentVersion }),
	{
		Name: "os", Columns: []string{"os_name", "os_version", "os_kernel", "os_arch"},
		get: func(s *Snapshot) any { return s.OS },
		merge: func(s *Snapshot, r *Report) {
			if r.OS != nil {
				s.OS = r.OS
			}
		},
		bind: func(s *Snapshot, a []any) []any {
			var o domain.OperatingSystem
			if s.OS != nil {
				o = *s.OS
			}
			return append(a, o.Name, o.Version, o.Kernel, o.Arch)
		},
		dest: func(_ *Snapshot, a []any) []any {
			return append(a, new(*string), new(*string), new(*string), new(*string))
		},
		decode: func(s *Snapshot, d []any) error {
			o := domain.OperatingSystem{Name: *d[0].(**string), Version: *d[1].(**string), Kernel: *d[2].(**string), Arch: *d[3].(**string)}
			if o != (domain.OperatingSystem{}) { // all four NULL: no OS was reported
				s.OS = &o
			}
			return nil
		},
	},
	list("ip_addresses", func(s *Snapshot) *[]string { return &s.IPAddresses }, func(r *Report) *[]string { return r.IPAddresses }),
	list("mac_addresses", func(s *Snapshot) *[]string { return &s.MACAddresses }, func(r *Report) *[]string { return r.MACAddresses }),
	column("cpu_count", func(s *Snapshot) **int { return &s.CPUCount }, func(r *Report) *int { return r.CPUCount }),
	column("memory_bytes", func(s *Snapshot) **float64 { return &s.MemoryBytes }, func(r *Report) *float64 { return r.MemoryBytes }),
	jsonColumn("facts", func(s *Snapshot) *map[string]any { return &s.Facts }, func(s *Snapshot, r *Report) {
		if r.Facts != nil {
			s.Facts = r.Facts
		}
	}, func(m map[string]any) map[string]any {
		if m == nil {
			return map[string]any{}
		}
		return m
	}),
	bootTime(),
}

// column is a field stored in the column of its name, a nil value as NULL; a report's
// non-nil value replaces it.
func column[T any](name string, v func(*Snapshot) **T, r func(*Report) *T) Field {
	return Field{
		Name: name, Columns: []string{name},
		get: func(s *Snapshot) any { return *v(s) },
		merge: func(s *Snapshot, rep *Report) {
			if x := r(rep); x != nil {
				*v(s) = x
			}
		},
		bind: func(s *Snapshot, a []any) []any { return append(a, *v(s)) },
		dest: func(s *Snapshot, a []any) []any { return append(a, v(s)) },
	}
}

// list is a list of strings stored as JSON in the column of its name, never null; a
// report's list (empty included) replaces it.
func list(name string, v func(*Snapshot) *[]string, r func(*Report) *[]string) Field {
	return jsonColumn(name, v, func(s *Snapshot, rep *Report) {
		if l := r(rep); l != nil {
			*v(s) = nonNil(*l)
		}
	}, nonNil)
}

// jsonColumn is a field stored as the JSON text of its value in the column of its name;
// norm turns a missing value into the empty one the snapshot holds instead.
func jsonColumn[T any](name string, v func(*Snapshot) *T, merge func(*Snapshot, *Report), norm func(T) T) Field {
	return Field{
		Name: name, Columns: []string{name},
		get:       func(s *Snapshot) any { return *v(s) },
		merge:     merge,
		normalize: func(s *Snapshot) { *v(s) = norm(*v(s)) },
		bind: func(s *Snapshot, a []any) []any {
			b, err := json.Marshal(*v(s))
			if err != nil {
				panic(fmt.Sprintf("projection: encode %s: %v", name, err)) // decoded JSON always encodes
			}
			return append(a, string(b))
		},
		dest: func(_ *Snapshot, a []any) []any { return append(a, new(string)) },
		decode: func(s *Snapshot, d []any) error {
			var x T // never into the old value: decoding reuses a slice's array and a map
			if err := json.Unmarshal([]byte(*d[0].(*string)), &x); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			*v(s) = norm(x)
			return nil
		},
	}
}

// bootTime is a column, but a report's boot time replaces the stored one only when it is
// another boot: within BootTolerance it is the same boot, whose first instant is kept.
func bootTime() Field {
	f := column("boot_time", func(s *Snapshot) **int64 { return &s.BootTime }, func(r *Report) *int64 { return r.BootTime })
	f.merge = func(s *Snapshot, r *Report) {
		if r.BootTime != nil && !SameBoot(s.BootTime, *r.BootTime) {
			s.BootTime = r.BootTime
		}
	}
	return f
}

// Columns are the assets table's inventory columns, the Fields' in their order: the order of
// Snapshot.Values and Row.Dest.
var Columns = func() []string {
	var out []string
	for i := range Fields {
		out = append(out, Fields[i].Columns...)
	}
	return out
}()

// Values appends the snapshot's column values to args, in Columns order.
func (s *Snapshot) Values(args []any) []any {
	for i := range Fields {
		args = Fields[i].bind(s, args)
	}
	return args
}

// Row reads a snapshot from its columns: Dest gives the scan destinations of one row, in
// Columns order, and Snapshot decodes them once the row is scanned.
type Row struct {
	s    Snapshot
	dest []any
}

// Dest appends the scan destinations of Columns to dest, for a new row.
func (r *Row) Dest(dest []any) []any {
	r.s = Snapshot{}
	n := len(dest)
	for i := range Fields {
		dest = Fields[i].dest(&r.s, dest)
	}
	r.dest = dest[n:]
	return dest
}

// Snapshot is the scanned row's snapshot. Its JSON columns are only ever written from encoded
// values, so an error here means a damaged row.
func (r *Row) Snapshot() (Snapshot, error) {
	d := r.dest
	for i := range Fields {
		f := &Fields[i]
		n := len(f.Columns)
		if f.decode != nil {
			if err := f.decode(&r.s, d[:n]); err != nil {
				return r.s, err
			}
		}
		d = d[n:]
	}
	return r.s, nil
}

// New is the snapshot of an asset discovered by r, with hostname as the name when r has none.
func New(hostname string, r *Report) Snapshot {
	s := Snapshot{Hostname: hostname}
	s.normalize()
	return s.Merge(r)
}

// normalize gives the fields stored as empty rather than missing their empty value.
func (s *Snapshot) normalize() {
	for i := range Fields {
		if f := &Fields[i]; f.normalize != nil {
			f.normalize(s)
		}
	}
}

// Merge returns s with r applied.
func (s Snapshot) Merge(r *Report) Snapshot {
	for i := range Fields {
		Fields[i].merge(&s, r)
	}
	return s
}

// SameBoot reports whether boot is the boot time stored in prev, within BootTolerance.
func SameBoot(prev *int64, boot int64) bool {
	if prev == nil {
		return false
	}
	d := *prev - boot
	return d <= BootTolerance.Microseconds() && d >= -BootTolerance.Microseconds()
}

// Change is one changed field, with its JSON-encodable old and new values.
type Change struct {
	Old any `json:"old"`
	New any `json:"new"`
}

// Diff names each field whose value differs between old and new.
func Diff(old, new *Snapshot) map[string]Change {
	var out map[string]Change
	for i := range Fields {
		f := &Fields[i]
		a, b := f.get(old), f.get(new)
		if equal(a, b) {
			continue
		}
		if out == nil {
			out = make(map[string]Change)
		}
		out[f.Name] = Change{Old: a, New: b}
	}
	return out
}

// equal compares two field values as their JSON encodings, which is how they are stored:
// a nil pointer and an absent value are the same, and so are 4 and 4.0 in facts.
func equal(a, b any) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Changed is the payload of asset.inventory.changed.
type Changed struct {
	HeartbeatID string            `json:"heartbeat_id,omitempty"`
	Changes     map[string]Change `json:"changes"`
}

// ApplyChanges replays an asset.inventory.changed payload onto s (rebuild).
func (s Snapshot) ApplyChanges(payload []byte) (Snapshot, error) {
	var c struct {
		Changes map[string]struct {
			New json.RawMessage `json:"new"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return s, err
	}
	cur, err := json.Marshal(s)
	if err != nil {
		return s, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(cur, &m); err != nil {
		return s, err
	}
	for name, ch := range c.Changes {
		m[name] = ch.New
	}
	merged, err := json.Marshal(m)
	if err != nil {
		return s, err
	}
	var out Snapshot
	if err := json.Unmarshal(merged, &out); err != nil {
		return s, err
	}
	out.normalize()
	return out, nil
}

// Hash is a 63-bit digest of a report's content without its boot time (the JSON of Report):
// two heartbeats with the same hash report the same inventory, so the second changes nothing
// and needs no inventory write (the boot time is compared on its own, within BootTolerance).
func (r *Report) Hash() int64 {
	b, _ := json.Marshal(r)
	sum := sha256.Sum256(b)
	// Never 0, which marks "no report hashed yet" (an upgraded database's rows).
	return int64(binary.BigEndian.Uint64(sum[:8])>>1) | 1
}

// Enrolled is the part of agent.enrolled's payload the projection uses: a re-enrolled machine
// keeps its asset, which follows the new identity's site.
type Enrolled struct {
	SiteID            string   `json:"site_id"`
	CollectorID       *string  `json:"collector_id"`
	MachineID         *string  `json:"machine_id,omitempty"`
	Hostname          *string  `json:"hostname,omitempty"`
	AgentVersion      *string  `json:"agent_version,omitempty"`
	EnrollmentTokenID string   `json:"enrollment_token_id"`
	Superseded        []string `json:"superseded,omitempty"`
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
