package telemetry

import (
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/projection"
)

// Heartbeat is the content of one heartbeat, whichever transport carried it. The idempotency
// hash covers its canonical JSON encoding (see Hash), so key order, whitespace and transport
// do not matter.
type Heartbeat struct {
	HeartbeatID  *string    `json:"-"`
	SentAt       *time.Time `json:"sent_at,omitempty"`
	Hostname     *string    `json:"hostname,omitempty"`
	AgentVersion *string    `json:"agent_version,omitempty"`
	Inventory    *Inventory `json:"inventory,omitempty"`
}

// Inventory is what the agent reports about its machine.
type Inventory struct {
	OS            *domain.OperatingSystem `json:"os,omitempty"`
	IPAddresses   []string                `json:"ip_addresses,omitempty"`
	MACAddresses  []string                `json:"mac_addresses,omitempty"`
	CPUCount      *int                    `json:"cpu_count,omitempty"`
	MemoryBytes   *float64                `json:"memory_bytes,omitempty"`
	UptimeSeconds *float64                `json:"uptime_seconds,omitempty"`
	Facts         map[string]any          `json:"facts,omitempty"`
}

// Report is what the heartbeat, received at received, says about the asset's inventory: the
// one place where the wire's fields become the projection's (the uptime becomes a boot time).
func (hb *Heartbeat) Report(received time.Time) *projection.Report {
	r := &projection.Report{Hostname: hb.Hostname, AgentVersion: hb.AgentVersion}
	if inv := hb.Inventory; inv != nil {
		r.OS, r.CPUCount, r.MemoryBytes, r.Facts = inv.OS, inv.CPUCount, inv.MemoryBytes, inv.Facts
		if inv.IPAddresses != nil {
			r.IPAddresses = &inv.IPAddresses
		}
		if inv.MACAddresses != nil {
			r.MACAddresses = &inv.MACAddresses
		}
		if inv.UptimeSeconds != nil {
			boot := received.UnixMicro() - int64(*inv.UptimeSeconds*1e6)
			r.BootTime = &boot
		}
	}
	return r
}

// IdentityClaims are the identity fields a REST body may name. They must match the stored
// identity (CONTRACT §4, identity_override); GraphQL has no such fields.
type IdentityClaims struct {
	TenantID    *string
	SiteID      *string
	CollectorID *string
	AssetID     *string
	AgentID     *string
}

// Result answers an accepted (or duplicate) heartbeat.
type Result struct {
	AgentID              string
	AssetID              string
	Status               domain.AgentStatus
	Accepted             bool
	Duplicate            bool
	ReceivedAt           time.Time
	NextHeartbeatSeconds int
	// CredentialExpiresAt is when the calling agent token stops working, if it will.
	CredentialExpiresAt *time.Time
}
