package telemetry

import (
	"math"
	"unicode/utf8"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Input limits (CONTRACT §4 and the heartbeat issue).
const (
	MaxHostname       = 255
	MaxHeartbeatID    = 128
	MaxAddresses      = 64
	MaxAddressLength  = 64
	MaxFacts          = 64
	MaxFactKey        = 128
	MaxFactValueBytes = 1024
	MaxShortString    = 255
)

// Validate checks every limit, naming the offending field in REST's snake_case. Valid
// input cannot make a statement of the write fail, which is what lets heartbeats share a
// transaction.
//
// With several bad fields, the first in this fixed order is named (never a random one):
// heartbeat_id, hostname, agent_version, inventory.os.name, .version, .kernel, .arch,
// inventory.ip_addresses, inventory.mac_addresses, inventory.cpu_count,
// inventory.memory_bytes, inventory.uptime_seconds, inventory.facts (the fact count, then
// the bad fact whose key sorts first).
func (hb *Heartbeat) Validate() error {
	if hb.HeartbeatID != nil {
		id := *hb.HeartbeatID
		if err := domain.TextError("heartbeat_id", id); err != nil {
			return err
		}
		if n := utf8.RuneCountInString(id); n < 1 || n > MaxHeartbeatID {
			return domain.Invalid("heartbeat_id", "heartbeat_id must be 1 to %d characters", MaxHeartbeatID)
		}
	}
	if err := domain.CheckOptionalText("hostname", hb.Hostname, MaxHostname); err != nil {
		return err
	}
	if err := domain.CheckOptionalText("agent_version", hb.AgentVersion, MaxShortString); err != nil {
		return err
	}
	inv := hb.Inventory
	if inv == nil {
		return nil
	}
	if os := inv.OS; os != nil {
		// A slice, not a map: map order is random, and so would be the field named.
		for _, f := range [...]struct {
			name  string
			value *string
		}{{"name", os.Name}, {"version", os.Version}, {"kernel", os.Kernel}, {"arch", os.Arch}} {
			if err := domain.CheckOptionalText("inventory.os."+f.name, f.value, MaxShortString); err != nil {
				return err
			}
		}
	}
	if err := checkList("inventory.ip_addresses", inv.IPAddresses); err != nil {
		return err
	}
	if err := checkList("inventory.mac_addresses", inv.MACAddresses); err != nil {
		return err
	}
	if inv.CPUCount != nil && (*inv.CPUCount < 0 || *inv.CPUCount > 1<<20) {
		return domain.Invalid("inventory.cpu_count", "cpu_count must be between 0 and %d", 1<<20)
	}
	for _, f := range [...]struct {
		name  string
		value *float64
	}{{"memory_bytes", inv.MemoryBytes}, {"uptime_seconds", inv.UptimeSeconds}} {
		if v := f.value; v != nil && (*v < 0 || math.IsInf(*v, 0) || math.IsNaN(*v) || *v > 1<<62) {
			return domain.Invalid("inventory."+f.name, "%s must be a non-negative number", f.name)
		}
	}
	return checkFacts(inv.Facts)
}

// checkFacts names the bad fact whose key sorts first: map order is random, and sorting
// every heartbeat's keys would cost more than keeping the least bad key seen.
func checkFacts(facts map[string]any) error {
	if len(facts) > MaxFacts {
		return domain.Invalid("inventory.facts", "at most %d facts", MaxFacts)
	}
	var first error
	firstKey := ""
	for k, v := range facts {
		if first != nil && k >= firstKey {
			continue
		}
		if err := checkFact(k, v); err != nil {
			first, firstKey = err, k
		}
	}
	return first
}

func checkFact(k string, v any) error {
	if k == "" || len(k) > MaxFactKey {
		return domain.Invalid("inventory.facts", "fact keys must be 1 to %d bytes", MaxFactKey)
	}
	if err := domain.TextError("inventory.facts", k); err != nil {
		// The key itself is bad: name the facts, not the key (which would echo it).
		return domain.Invalid("inventory.facts", "fact keys must be valid UTF-8 without NUL characters")
	}
	s, ok := v.(string)
	if !ok {
		return domain.Invalid("inventory.facts."+k, "fact values must be strings")
	}
	if len(s) > MaxFactValueBytes {
		return domain.Invalid("inventory.facts."+k, "fact values must be at most %d bytes", MaxFactValueBytes)
	}
	return domain.TextError("inventory.facts."+k, s)
}

func checkList(field string, list []string) error {
	if len(list) > MaxAddresses {
		return domain.Invalid(field, "at most %d addresses", MaxAddresses)
	}
	for _, a := range list {
		if a == "" || len(a) > MaxAddressLength || domain.TextError(field, a) != nil {
			return domain.Invalid(field, "each address must be 1 to %d bytes of text without NUL characters", MaxAddressLength)
		}
	}
	return nil
}
