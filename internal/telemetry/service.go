// Package telemetry is THE heartbeat service: the REST shim and the GraphQL submitHeartbeat
// mutation both call Service.Submit, so both get the same checks, in the same order
// (CONTRACT §4), the same writes and the same idempotency.
package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/clones"
	"github.com/oneprotect/telemetry/internal/credentials"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/engine"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/store"
)

// Publisher learns of every accepted heartbeat after its commit (live subscriptions).
type Publisher interface {
	AssetUpdated(tenantID, siteID, assetID string)
}

// Service is the heartbeat service.
type Service struct {
	Store             *store.Store
	Now               func() time.Time
	HeartbeatInterval time.Duration
	Publisher         Publisher // optional
	// Heartbeats counts outcomes by transport by transport and outcome (optional; labels transport, outcome).
	Heartbeats *prometheus.CounterVec
	// Credentials is the agent credentials' maximum age (nil: none).
	Credentials *credentials.Policy
	// RateLimit is the per-agent heartbeat limit (nil: none).
	RateLimit *pacing.Limiter
	// InFlight bounds the heartbeats being served at once (nil: no bound; see Admit).
	InFlight *pacing.InFlight
	// OnIdentityConflict is what happens to a credential seen from two live machines
	// (--on-identity-conflict; conflicts.go).
	OnIdentityConflict clones.Mode

	cacheOnce sync.Once
	cache     *identityCache

	storageFullAt atomic.Int64 // unix ns of the latest heartbeat refused for lack of space (metrics.go)
}

var (
	errUnknownAgent = &domain.Error{Code: domain.CodeUnknownAgent,
		Message: "no agent identity with this agent_id; enroll again"}
	errActorMismatch = &domain.Error{Code: domain.CodeActorMismatch,
		Message: "this service account belongs to another agent"}
	errCollectorMismatch = &domain.Error{Code: domain.CodeCollectorMismatch,
		Message: "this collector is not the identity's collector"}
	errRevoked = &domain.Error{Code: domain.CodeAgentRevoked,
		Message: "the agent identity is revoked; stop, or enroll again with a new enrollment token"}
	errStale = &domain.Error{Code: domain.CodeAgentStale,
		Message: "the agent identity is stale; an administrator must reactivate it"}
	errConflict = &domain.Error{Code: domain.CodeIdempotencyConflict, Field: "heartbeat_id",
		Message: "this heartbeat_id was already accepted with a different body"}
)

// Caller returns the calling service account: first the client-certificate checks
// (CLIENT_CERTIFICATE_REQUIRED, CERTIFICATE_MISMATCH), then UNAUTHENTICATED without a
// principal, SERVICE_ACCOUNT_REQUIRED for a user, CREDENTIAL_EXPIRED for an agent token past
// its maximum age. The REST shim calls it before reading the body, as the order of checks
// requires; Submit calls it again.
func (s *Service) Caller(ctx context.Context, agentID string) (*domain.Principal, error) {
	if err := auth.CheckRelayCertificate(ctx, agentID); err != nil {
		return nil, err
	}
	p, err := auth.RequireServiceAccount(ctx)
	if err != nil {
		return nil, err
	}
	return p, s.checkCredential(p)
}

// Admit is a heartbeat's admission, which the transports ask before they read its body: the
// caller's checks (Caller), then a place among the heartbeats in flight. With every place
// taken it fails at once with the engine's own refusal (503 unavailable with Retry-After,
// nothing written), so that under overload a refusal costs no body read, decode or write.
// On success the transport calls the returned done once Submit has returned. Refusals are
// counted here.
//
// The caller comes first because CONTRACT §4 orders 401 and 403 before everything else, and
// checking it costs nothing the shedding would save (the token was authenticated by the
// middleware from its cache). What needs the body (415 to 400 and the identity checks) cannot
// come first: reading and decoding it is the cost shedding avoids. A 503 is about the server,
// not the request (as when the database is down), and says to send it again later, when
// anything wrong with it is answered in the contract's order.
func (s *Service) Admit(ctx context.Context, agentID string) (done func(), err error) {
	if _, err := s.Caller(ctx, agentID); err != nil {
		s.Count(ctx, nil, err)
		return nil, err
	}
	done, ok := s.InFlight.Acquire()
	if !ok {
		s.Count(ctx, nil, engine.ErrOverloaded)
		return nil, engine.ErrOverloaded
	}
	return done, nil
}

// DefaultMaxInFlight is the default bound on heartbeats in flight: the write engine's queue
// bound (internal/store: 512 writes, a few tens of milliseconds of the SQLite writer). More
// admitted heartbeats than that would only wait in front of the queue and then be refused by
// it, after their bodies were read and decoded.
const DefaultMaxInFlight = 512

// DefaultLatencyTarget is the default latency target of the heartbeats in flight. The
// admitted heartbeats then wait about this long at the median, and their tail (writer stalls,
// waits for a core) several times it: at three times the sustainable rate on a 2-core node the
// accepted p99 was 124-177 ms (367 ms with the fixed bound alone, 313 ms with a 50 ms target).
// 10 ms held it at 59-99 ms but refused a tenth or more of loads that 20 ms served whole, and
// sits too near a commit on a slow disk (BENCHMARKS.md, "Shedding load").
const DefaultLatencyTarget = 20 * time.Millisecond

// submit is Submit without the counter (metrics.go).
func (s *Service) submit(ctx context.Context, agentID string, hb *Heartbeat, claims *IdentityClaims) (*Result, error) {
	caller, err := s.Caller(ctx, agentID)
	if err != nil {
		return nil, err
	}
	if err := hb.Validate(); err != nil {
		return nil, err
	}
	id, cached, err := s.lookupIdentity(ctx, caller.TenantID, agentID)
	if err != nil {
		return nil, err
	}
	if err := checkActor(caller, id); err != nil {
		return nil, err
	}
	if err := statusError(id.Status); err != nil {
		return nil, err
	}
	if err := checkClaims(claims, id); err != nil {
		if cached {
			if serr := s.freshStatusError(ctx, id); serr != nil {
				return nil, serr
			}
		}
		return nil, err
	}
	if err := s.rateLimit(id); err != nil {
		return nil, err
	}

	received := s.Now().UTC().Truncate(time.Microsecond) // the stored precision
	w, err := s.write(caller, id, hb, received)
	if err != nil {
		return nil, err
	}
	out, err := s.Store.WriteHeartbeat(ctx, w)
	if err != nil {
		return nil, err
	}
	// The answer, in the order of checks: the identity's status as the write found it outranks
	// idempotency (a revoked agent's repeat is refused as revoked, not answered as a
	// duplicate), then the clone policy, then the heartbeat_id. The store only guarantees that
	// nothing of a refused heartbeat was written.
	switch {
	case out.Refused:
		s.forget(id.TenantID, id.AgentID)
		if err := statusError(out.Status); err != nil {
			return nil, err
		}
		return nil, errUnknownAgent
	case out.IdentityConflict:
		return nil, errIdentityConflict
	case out.Conflict:
		return nil, errConflict
	}
	res := &Result{AgentID: id.AgentID, AssetID: id.AssetID, Status: domain.StatusActive, Accepted: true,
		Duplicate: out.Duplicate, ReceivedAt: out.ReceivedAt}
	s.pace(res, caller, received)
	if !out.Duplicate && s.Publisher != nil {
		s.Publisher.AssetUpdated(id.TenantID, id.SiteID, id.AssetID)
	}
	return res, nil
}

// checkActor: an agent account may speak only for itself, a collector account only for the
// identities bound to it.
func checkActor(caller *domain.Principal, id *domain.AgentIdentity) error {
	switch caller.ActorKind {
	case domain.ActorAgent:
		if caller.ActorID != id.AgentID {
			return errActorMismatch
		}
	case domain.ActorCollector:
		if id.CollectorID == nil || *id.CollectorID != caller.ActorID {
			return errCollectorMismatch
		}
	default:
		return errActorMismatch
	}
	return nil
}

func statusError(st domain.AgentStatus) error {
	switch st {
	case domain.StatusRevoked:
		return errRevoked
	case domain.StatusStale:
		return errStale
	}
	return nil
}

// checkClaims refuses a body that names an identity field with another value than the
// stored one; echoing the stored value is fine.
func checkClaims(c *IdentityClaims, id *domain.AgentIdentity) error {
	if c == nil {
		return nil
	}
	collector := ""
	if id.CollectorID != nil {
		collector = *id.CollectorID
	}
	for _, f := range []struct {
		name   string
		claim  *string
		stored string
	}{
		{"tenant_id", c.TenantID, id.TenantID},
		{"site_id", c.SiteID, id.SiteID},
		{"collector_id", c.CollectorID, collector},
		{"asset_id", c.AssetID, id.AssetID},
		{"agent_id", c.AgentID, id.AgentID},
	} {
		if f.claim != nil && *f.claim != f.stored {
			return &domain.Error{Code: domain.CodeIdentityOverride, Field: f.name,
				Message: f.name + " differs from the agent's enrolled identity; identity comes only from enrollment"}
		}
	}
	return nil
}

// write turns a checked heartbeat into the store's write: the idempotency key and hash, and
// the inventory report (uptime turned into a boot time) with its hash.
func (s *Service) write(caller *domain.Principal, id *domain.AgentIdentity, hb *Heartbeat, received time.Time) (*store.HeartbeatWrite, error) {
	hash, err := hb.Hash()
	if err != nil {
		return nil, err
	}
	hbID := ids.New() // without an id from the agent, nothing can repeat it
	if hb.HeartbeatID != nil {
		hbID = *hb.HeartbeatID
	}
	r := hb.Report(received)
	w := &store.HeartbeatWrite{Identity: id, PrincipalID: caller.ID, Relayed: caller.ActorKind == domain.ActorCollector,
		HeartbeatID: hbID, ReceivedAt: received, SentAt: hb.SentAt, Report: r, ReportHash: r.Hash(), OnConflict: s.OnIdentityConflict}
	copy(w.RequestHash[:], hash[:])
	return w, nil
}

// Hash is the idempotency hash: SHA-256 of the canonical JSON of the content. Lists and
// facts are hashed through pointers so that an empty list (which clears the asset's list) and
// an absent one (which keeps it) count as different content.
func (hb *Heartbeat) Hash() ([sha256.Size]byte, error) {
	type inventory struct {
		OS            *domain.OperatingSystem `json:"os,omitempty"`
		IPAddresses   *[]string               `json:"ip_addresses,omitempty"`
		MACAddresses  *[]string               `json:"mac_addresses,omitempty"`
		CPUCount      *int                    `json:"cpu_count,omitempty"`
		MemoryBytes   *float64                `json:"memory_bytes,omitempty"`
		UptimeSeconds *float64                `json:"uptime_seconds,omitempty"`
		Facts         *map[string]any         `json:"facts,omitempty"`
	}
	c := struct {
		SentAt       *time.Time `json:"sent_at,omitempty"`
		Hostname     *string    `json:"hostname,omitempty"`
		AgentVersion *string    `json:"agent_version,omitempty"`
		Inventory    *inventory `json:"inventory,omitempty"`
	}{Hostname: hb.Hostname, AgentVersion: hb.AgentVersion}
	if hb.SentAt != nil {
		utc := hb.SentAt.UTC()
		c.SentAt = &utc
	}
	if inv := hb.Inventory; inv != nil {
		c.Inventory = &inventory{OS: inv.OS, CPUCount: inv.CPUCount, MemoryBytes: inv.MemoryBytes, UptimeSeconds: inv.UptimeSeconds}
		if inv.IPAddresses != nil {
			c.Inventory.IPAddresses = &inv.IPAddresses
		}
		if inv.MACAddresses != nil {
			c.Inventory.MACAddresses = &inv.MACAddresses
		}
		if inv.Facts != nil {
			c.Inventory.Facts = &inv.Facts
		}
	}
	b, err := json.Marshal(&c)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}
