package domain

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Role of a USER principal.
type Role string

const (
	RoleAdmin  Role = "ADMIN"
	RoleViewer Role = "VIEWER"
)

// PrincipalKind says who calls: a person or dashboard, or a machine credential.
type PrincipalKind string

const (
	KindUser           PrincipalKind = "USER"
	KindServiceAccount PrincipalKind = "SERVICE_ACCOUNT"
)

// ActorKind says what a service account acts for.
type ActorKind string

const (
	ActorAgent     ActorKind = "agent"
	ActorCollector ActorKind = "collector"
)

// AgentStatus is the identity lifecycle state (CONTRACT §1).
type AgentStatus string

const (
	StatusEnrolled AgentStatus = "ENROLLED"
	StatusActive   AgentStatus = "ACTIVE"
	StatusStale    AgentStatus = "STALE"
	StatusRevoked  AgentStatus = "REVOKED"
)

// CanSubmit reports whether an identity in this status may send heartbeats.
func (s AgentStatus) CanSubmit() bool { return s == StatusEnrolled || s == StatusActive }

type Tenant struct {
	ID        string
	Name      string
	Slug      string
	CreatedAt time.Time
}

// Principal is an authenticated caller. Role is set for users; ActorKind and ActorID for
// service accounts (the agent_id or collector_id they act for).
type Principal struct {
	ID        string
	TenantID  string
	Kind      PrincipalKind
	Role      Role
	Name      string
	ActorKind ActorKind
	ActorID   string
	// ExpiresAt is the expiry of the token that authenticated this principal, if it has one.
	ExpiresAt *time.Time
	// TokenID, TokenHash and TokenIssuedAt describe the token that authenticated this
	// principal: an agent credential's age and its rotation are counted from them.
	TokenID       string
	TokenHash     string
	TokenIssuedAt time.Time
}

// IsAdmin reports whether p is a USER with the ADMIN role.
func (p *Principal) IsAdmin() bool { return p != nil && p.Kind == KindUser && p.Role == RoleAdmin }

// IsUser reports whether p is a person or dashboard (any role).
func (p *Principal) IsUser() bool { return p != nil && p.Kind == KindUser }

type Site struct {
	ID        string
	TenantID  string
	Name      string
	CreatedAt time.Time
	// OfflineAfter and StaleAfter are the site's own windows; nil means the server's default.
	OfflineAfter *time.Duration
	StaleAfter   *time.Duration
}

type Collector struct {
	ID          string
	TenantID    string
	SiteID      string
	Name        string
	PrincipalID string
	CreatedAt   time.Time
}

// EnrollmentToken is an admin-minted secret that an agent exchanges for an identity.
type EnrollmentToken struct {
	ID          string
	TenantID    string
	SiteID      string
	CollectorID *string
	Prefix      string
	MaxUses     int
	Uses        int
	ExpiresAt   time.Time
	RevokedAt   *time.Time
	CreatedBy   string
	CreatedAt   time.Time
}

// AgentIdentity binds an agent_id to tenant, site, collector and asset.
type AgentIdentity struct {
	AgentID       string
	TenantID      string
	SiteID        string
	CollectorID   *string
	AssetID       string
	MachineID     *string
	Status        AgentStatus
	Hostname      *string
	AgentVersion  *string
	PrincipalID   string
	EnrolledAt    time.Time
	LastSeenAt    *time.Time
	RevokedAt     *time.Time
	RevokedReason *string
	ReactivatedAt *time.Time

	// Internal integer keys, never shown by the API: the identity's own, its asset's, its
	// tenant's and its site's.
	Ref, AssetRef, TenantRef, SiteRef int64
}

type OperatingSystem struct {
	Name    *string `json:"name,omitempty"`
	Version *string `json:"version,omitempty"`
	Kernel  *string `json:"kernel,omitempty"`
	Arch    *string `json:"arch,omitempty"`
}

// Asset is the read model, written only by the projector.
type Asset struct {
	ID             string
	TenantID       string
	SiteID         string
	AgentID        string
	Hostname       string
	OS             *OperatingSystem
	IPAddresses    []string
	MACAddresses   []string
	CPUCount       *int
	MemoryBytes    *float64
	UptimeSeconds  *float64
	Facts          map[string]any
	FirstSeenAt    time.Time
	LastSeenAt     time.Time
	HeartbeatCount int
	// Online is derived at read time from LastSeenAt and --offline-after.
	Online bool
}

// Event types.
const (
	EventAssetDiscovered   = "asset.discovered"
	EventTelemetryReceived = "asset.telemetry.received"
	EventInventoryChanged  = "asset.inventory.changed"
	EventAgentEnrolled     = "agent.enrolled"
	EventAgentRevoked      = "agent.revoked"
	EventAgentStale        = "agent.stale"
	EventAgentReactivated  = "agent.reactivated"
	EventCredentialRotated = "agent.credential.rotated"
	// EventAgentConflict: one credential is in use on two live machines (clone detection);
	// EventConflictResolved: an admin kept one of them.
	EventAgentConflict    = "agent.conflict"
	EventConflictResolved = "agent.conflict.resolved"
)

// Event is an append-only record.
type Event struct {
	ID         string
	TenantID   string
	Type       string
	AssetID    *string
	AgentID    *string
	ActorID    *string
	OccurredAt time.Time
	Payload    json.RawMessage
}

// MarshalGQL and UnmarshalGQL let gqlgen bind the GraphQL enums to these types directly.

func (r Role) MarshalGQL(w io.Writer) { io.WriteString(w, strconv.Quote(string(r))) }
func (r *Role) UnmarshalGQL(v any) error {
	s, ok := v.(string)
	if !ok || (s != string(RoleAdmin) && s != string(RoleViewer)) {
		return fmt.Errorf("%v is not a valid Role", v)
	}
	*r = Role(s)
	return nil
}

func (k PrincipalKind) MarshalGQL(w io.Writer) { io.WriteString(w, strconv.Quote(string(k))) }
func (k *PrincipalKind) UnmarshalGQL(v any) error {
	s, ok := v.(string)
	if !ok || (s != string(KindUser) && s != string(KindServiceAccount)) {
		return fmt.Errorf("%v is not a valid PrincipalKind", v)
	}
	*k = PrincipalKind(s)
	return nil
}

func (s AgentStatus) MarshalGQL(w io.Writer) { io.WriteString(w, strconv.Quote(string(s))) }
func (s *AgentStatus) UnmarshalGQL(v any) error {
	str, ok := v.(string)
	switch AgentStatus(str) {
	case StatusEnrolled, StatusActive, StatusStale, StatusRevoked:
		if ok {
			*s = AgentStatus(str)
			return nil
		}
	}
	return fmt.Errorf("%v is not a valid AgentStatus", v)
}
