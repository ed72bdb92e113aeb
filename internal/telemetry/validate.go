package telemetry

import (
	"math"
	"strings"
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
func (hb *Heartbeat) Validate() error {
	if hb.HeartbeatID != nil {
		id := *hb.HeartbeatID
		if n := utf8.RuneCountInString(id); n < 1 || n > MaxHeartbeatID || !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 {
			return domain.Invalid("heartbeat_id", "heartbeat_id must be 1 to %d characters", MaxHeartbeatID)
		}
	}
	if err := checkString("hostname", hb.Hostname, MaxHostname); err != nil {
		return err
	}
	if err := checkString("agent_version", hb.AgentVersion, MaxShortString); err != nil {
		return err
	}
	inv := hb.Inventory
	if inv == nil {
		return nil
	}
	if os := inv.OS; os != nil {
		for name, v := range map[string]*string{"name": os.Name, "version": os.Version, "kernel": os.Kernel, "arch": os.Arch} {
			if err := checkString("inventory.os."+name, v, MaxShortString); err != nil {
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
	for name, v := range map[string]*float64{"memory_bytes": inv.MemoryBytes, "uptime_seconds": inv.UptimeSeconds} {
		if v != nil && (*v < 0 || math.IsInf(*v, 0) || math.IsNaN(*v) || *v > 1<<62) {
			return domain.Invalid("inventory."+name, "%s must be a non-negative number", name)
		}
	}
	if len(inv.Facts) > MaxFacts {
		return domain.Invalid("inventory.facts", "at most %d facts", MaxFacts)
	}
	for k, v := range inv.Facts {
		if k == "" || len(k) > MaxFactKey || !utf8.ValidString(k) {
			return domain.Invalid("inventory.facts", "fact keys must be 1 to %d bytes", MaxFactKey)
		}
		s, ok := v.(string)
		if !ok {
			return domain.Invalid("inventory.facts."+k, "fact values must be strings")
		}
		if len(s) > MaxFactValueBytes || !utf8.ValidString(s) {
			return domain.Invalid("inventory.facts."+k, "fact values must be valid UTF-8 of at most %d bytes", MaxFactValueBytes)
		}
	}
	return nil
}

func checkString(field string, v *string, max int) error {
	if v == nil {
		return nil
	}
	if !utf8.ValidString(*v) || strings.IndexByte(*v, 0) >= 0 {
		return domain.Invalid(field, "%s must be valid UTF-8 without NUL characters", field)
	}
	if utf8.RuneCountInString(*v) > max {
		return domain.Invalid(field, "%s must be at most %d characters", field, max)
	}
	return nil
}

func checkList(field string, list []string) error {
	if len(list) > MaxAddresses {
		return domain.Invalid(field, "at most %d addresses", MaxAddresses)
	}
	for _, a := range list {
		if a == "" || len(a) > MaxAddressLength || !utf8.ValidString(a) || strings.IndexByte(a, 0) >= 0 {
			return domain.Invalid(field, "each address must be 1 to %d bytes of text", MaxAddressLength)
		}
	}
	return nil
}
