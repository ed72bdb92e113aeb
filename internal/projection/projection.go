// Package projection builds the asset read model. An asset's inventory is a Snapshot; a
// heartbeat carries a Report of some of its fields; Merge applies a report to a snapshot and
// Diff names what changed. The live heartbeat path and `oneprotect projections rebuild` use
// the same functions, so both give identical assets. The inventory's fields are declared once,
// in Fields: the diff, the change events and the replay all walk that list.
package projection

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Snapshot is an asset's inventory as the read model stores it. Its JSON is the payload of
// asset.discovered, and each field's JSON name is the name an asset.inventory.changed event
// uses for it.
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
type Report struct {
	Hostname     *string
	AgentVersion *string
	OS           *domain.OperatingSystem
	IPAddresses  *[]string
	MACAddresses *[]string
	CPUCount     *int
	MemoryBytes  *float64
	Facts        map[string]any
	BootTime     *int64
}

// BootTolerance is how far two heartbeats' boot times (received time minus uptime) may differ
// and still be the same boot: the difference is transit and queueing time, not a reboot.
const BootTolerance = 30 * time.Second

// Field is one inventory field: its name in change events and how to read it.
type Field struct {
	Name string
	get  func(*Snapshot) any
}

// Fields is the inventory's field set, in the order change events list them.
var Fields = []Field{
	{"hostname", func(s *Snapshot) any { return s.Hostname }},
	{"agent_version", func(s *Snapshot) any { return s.AgentVersion }},
	{"os", func(s *Snapshot) any { return s.OS }},
	{"ip_addresses", func(s *Snapshot) any { return s.IPAddresses }},
	{"mac_addresses", func(s *Snapshot) any { return s.MACAddresses }},
	{"cpu_count", func(s *Snapshot) any { return s.CPUCount }},
	{"memory_bytes", func(s *Snapshot) any { return s.MemoryBytes }},
	{"facts", func(s *Snapshot) any { return s.Facts }},
	{"boot_time", func(s *Snapshot) any { return s.BootTime }},
}

// New is the snapshot of an asset discovered by r, with hostname as the name when r has none.
func New(hostname string, r *Report) Snapshot {
	s := Snapshot{Hostname: hostname, IPAddresses: []string{}, MACAddresses: []string{}, Facts: map[string]any{}}
	return s.Merge(r)
}

// Merge returns s with r applied.
func (s Snapshot) Merge(r *Report) Snapshot {
	if r.Hostname != nil {
		s.Hostname = *r.Hostname
	}
	if r.AgentVersion != nil {
		s.AgentVersion = r.AgentVersion
	}
	if r.OS != nil {
		s.OS = r.OS
	}
	if r.IPAddresses != nil {
		s.IPAddresses = nonNil(*r.IPAddresses)
	}
	if r.MACAddresses != nil {
		s.MACAddresses = nonNil(*r.MACAddresses)
	}
	if r.CPUCount != nil {
		s.CPUCount = r.CPUCount
	}
	if r.MemoryBytes != nil {
		s.MemoryBytes = r.MemoryBytes
	}
	if r.Facts != nil {
		s.Facts = r.Facts
	}
	if r.BootTime != nil && !SameBoot(s.BootTime, *r.BootTime) {
		s.BootTime = r.BootTime
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
	for _, f := range Fields {
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
	out.IPAddresses, out.MACAddresses = nonNil(out.IPAddresses), nonNil(out.MACAddresses)
	if out.Facts == nil {
		out.Facts = map[string]any{}
	}
	return out, nil
}

// Hash is a 63-bit digest of a report's content without its boot time: two heartbeats with the
// same hash report the same inventory, so the second changes nothing and needs no inventory
// write (the boot time is compared on its own, within BootTolerance).
func (r *Report) Hash() int64 {
	c := *r
	c.BootTime = nil
	b, _ := json.Marshal(struct {
		Hostname     *string                 `json:"h,omitempty"`
		AgentVersion *string                 `json:"v,omitempty"`
		OS           *domain.OperatingSystem `json:"o,omitempty"`
		IPAddresses  *[]string               `json:"i,omitempty"`
		MACAddresses *[]string               `json:"m,omitempty"`
		CPUCount     *int                    `json:"c,omitempty"`
		MemoryBytes  *float64                `json:"b,omitempty"`
		Facts        map[string]any          `json:"f,omitempty"`
	}{c.Hostname, c.AgentVersion, c.OS, c.IPAddresses, c.MACAddresses, c.CPUCount, c.MemoryBytes, c.Facts})
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
