// Package enrollment runs the agent identity lifecycle (CONTRACT §1): enrollment tokens,
// enrollment, revocation, reactivation and the stale sweeper.
package enrollment

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/pki"
	"github.com/oneprotect/telemetry/internal/projection"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/tenancy"
)

// Limits and defaults of enrollment tokens.
const (
	DefaultTTL     = 24 * time.Hour
	MaxTTL         = 365 * 24 * time.Hour
	DefaultMaxUses = 1
	MaxMaxUses     = 1_000_000
	maxFieldLength = 255
)

// Service is the identity lifecycle service.
type Service struct {
	Store   *store.Store
	Tenancy *tenancy.Service
	Now     func() time.Time
	// HeartbeatInterval is advertised to enrolled agents.
	HeartbeatInterval time.Duration
	// SweepBatch bounds how many identities one sweeper transaction marks (0: SweepBatch).
	SweepBatch int
	// CA signs agent and collector certificates (nil: a csr is refused); CertTTL is their
	// lifetime.
	CA      *pki.CA
	CertTTL time.Duration

	crlMu    sync.Mutex
	crl      []byte
	crlUntil time.Time

	// RateLimit bounds enrollments per source address (nil: none); see Admit.
	RateLimit *pacing.Limiter
}

// NewToken is a freshly minted enrollment token; Secret is shown once.
type NewToken struct {
	Secret string
	Token  *domain.EnrollmentToken
}

// CreateToken mints an enrollment token for a site (and optionally a collector on it) of the
// caller's tenant (ADMIN).
func (s *Service) CreateToken(ctx context.Context, siteID string, collectorID *string, ttlSeconds, maxUses *int) (*NewToken, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	ttl := DefaultTTL
	if ttlSeconds != nil {
		// Compared in seconds, so a huge value cannot overflow a Duration.
		if *ttlSeconds < 1 || int64(*ttlSeconds) > int64(MaxTTL/time.Second) {
			return nil, domain.Invalid("ttlSeconds", "ttlSeconds must be between 1 and %d", int(MaxTTL.Seconds()))
		}
		ttl = time.Duration(*ttlSeconds) * time.Second
	}
	uses := DefaultMaxUses
	if maxUses != nil {
		if *maxUses < 1 || *maxUses > MaxMaxUses {
			return nil, domain.Invalid("maxUses", "maxUses must be between 1 and %d", MaxMaxUses)
		}
		uses = *maxUses
	}
	if _, err := s.Tenancy.Site(ctx, p.TenantID, siteID); err != nil {
		return nil, err
	}
	if collectorID != nil {
		c, err := s.collector(ctx, p.TenantID, *collectorID)
		if err != nil {
			return nil, err
		}
		if c.SiteID != siteID {
			return nil, domain.Invalid("collectorId", "the collector belongs to another site")
		}
	}
	now := s.Now()
	secret, hash := auth.NewToken(auth.PrefixEnrollment)
	t := &domain.EnrollmentToken{ID: ids.New(), TenantID: p.TenantID, SiteID: siteID, CollectorID: collectorID,
		Prefix: auth.DisplayPrefix(secret), MaxUses: uses, ExpiresAt: now.Add(ttl), CreatedBy: p.ID, CreatedAt: now}
	if err := s.Store.CreateEnrollmentToken(ctx, t, hash); err != nil {
		return nil, err
	}
	return &NewToken{Secret: secret, Token: t}, nil
}

func (s *Service) collector(ctx context.Context, tenantID, id string) (*domain.Collector, error) {
	notFound := &domain.Error{Code: domain.CodeNotFound, Field: "collectorId", Message: "collector not found"}
	if !ids.Valid(id) {
		return nil, notFound
	}
	c, err := s.Store.Collector(ctx, tenantID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound
	}
	return c, err
}

// RevokeToken revokes one of the caller's enrollment tokens (ADMIN).
func (s *Service) RevokeToken(ctx context.Context, id string) (*domain.EnrollmentToken, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !ids.Valid(id) {
		return nil, domain.NotFound("enrollment token")
	}
	t, err := s.Store.RevokeEnrollmentToken(ctx, p.TenantID, id, s.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, domain.NotFound("enrollment token")
	}
	return t, err
}

// EnrollRequest is the body of POST /api/v1/agents/enroll.
type EnrollRequest struct {
	EnrollmentToken string  `json:"enrollment_token"`
	Hostname        *string `json:"hostname"`
	AgentVersion    *string `json:"agent_version"`
	MachineID       *string `json:"machine_id"`
	// CSR, when given, is signed for the new identity (the server sets subject and SANs).
	CSR *string `json:"csr"`
}

// Enrolled answers a successful enrollment.
type Enrolled struct {
	Identity                 *domain.AgentIdentity
	Token                    string
	HeartbeatIntervalSeconds int
	// Certificate is set when the request carried a CSR.
	Certificate *Issued
}

// Enroll exchanges an enrollment token for an agent identity and its service-account token.
// It needs no principal: the enrollment token is the credential.
func (s *Service) Enroll(ctx context.Context, req *EnrollRequest) (*Enrolled, error) {
	if req.EnrollmentToken == "" {
		return nil, domain.Invalid("enrollment_token", "enrollment_token is required")
	}
	// A slice, not a map: with several bad fields the same one is always named first.
	for _, f := range []struct {
		name  string
		value *string
	}{{"hostname", req.Hostname}, {"agent_version", req.AgentVersion}, {"machine_id", req.MachineID}} {
		if err := domain.CheckOptionalText(f.name, f.value, maxFieldLength); err != nil {
			return nil, err
		}
	}
	if req.MachineID != nil && *req.MachineID == "" {
		req.MachineID = nil
	}
	csr, err := s.parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	now := s.Now()
	agentID, newAsset := ids.New(), ids.New()
	id := &domain.AgentIdentity{AgentID: agentID, AssetID: newAsset, MachineID: req.MachineID,
		Hostname: req.Hostname, AgentVersion: req.AgentVersion, Status: domain.StatusEnrolled, EnrolledAt: now}
	name := "agent " + agentID
	if req.Hostname != nil && *req.Hostname != "" {
		name = "agent " + *req.Hostname
	}
	// The identity's service account: its actor is the agent.
	sa := &domain.Principal{ID: ids.New(), Name: name, Kind: domain.KindServiceAccount, ActorKind: domain.ActorAgent, ActorID: agentID}
	id.PrincipalID = sa.ID
	secret, hash := auth.NewToken(auth.PrefixServiceAccount)
	var cert *Issued
	e := &store.Enrollment{
		TokenHash: auth.HashToken(req.EnrollmentToken),
		Now:       now,
		Identity:  id,
		Principal: sa,
		Token:     store.NewAPIToken{ID: ids.New(), Hash: hash, Prefix: auth.DisplayPrefix(secret)},
		Plan: func(g *store.EnrollmentGrant, previous []*domain.AgentIdentity) (*store.EnrollmentPlan, error) {
			p := planEnrollment(id, sa, g, previous, now, newAsset)
			if csr == nil {
				return p, nil
			}
			// Signed inside the enrollment, once the token has named the tenant; the
			// certificate and its record exist only if the identity does.
			out, rec, err := s.issue(csr, pki.Subject{TenantID: id.TenantID, Kind: pki.KindAgent, ID: id.AgentID}, domain.CertIssuedAtEnrollment)
			cert, p.Certificate = out, rec
			return p, err
		},
	}
	if err := s.Store.Enroll(ctx, e); err != nil {
		return nil, err
	}
	return &Enrolled{Identity: id, Token: secret, HeartbeatIntervalSeconds: int(s.HeartbeatInterval / time.Second),
		Certificate: cert}, nil
}

// Revoke makes an identity REVOKED (ADMIN). Its token keeps authenticating so the agent
// learns why its heartbeats fail (CONTRACT §2).
func (s *Service) Revoke(ctx context.Context, agentID string, reason *string) (*domain.AgentIdentity, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	why := "revoked by an administrator"
	if reason != nil && *reason != "" {
		if err := domain.CheckText("reason", *reason, 1000); err != nil {
			return nil, err
		}
		why = *reason
	}
	current, err := s.identity(ctx, p.TenantID, agentID)
	if err != nil {
		return nil, err
	}
	return s.Store.Revoke(ctx, p.TenantID, agentID, why, s.event(p, current, domain.EventAgentRevoked, map[string]any{"reason": why}))
}

// Reactivate moves a STALE identity back to ENROLLED (ADMIN). A REVOKED identity is final:
// AGENT_REVOKED. An ENROLLED or ACTIVE one is returned unchanged.
func (s *Service) Reactivate(ctx context.Context, agentID string) (*domain.AgentIdentity, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	current, err := s.identity(ctx, p.TenantID, agentID)
	if err != nil {
		return nil, err
	}
	if current.Status == domain.StatusRevoked {
		return nil, errRevoked
	}
	if current.Status != domain.StatusStale {
		return current, nil
	}
	after, err := s.Store.Reactivate(ctx, p.TenantID, agentID, s.event(p, current, domain.EventAgentReactivated, map[string]any{}))
	if err != nil {
		return nil, err
	}
	if after.Status == domain.StatusRevoked { // revoked between the read and the write
		return nil, errRevoked
	}
	return after, nil
}

var errRevoked = &domain.Error{Code: domain.CodeAgentRevoked, Message: "the identity is revoked; revocation is final, the agent must enroll again"}

func (s *Service) identity(ctx context.Context, tenantID, agentID string) (*domain.AgentIdentity, error) {
	if !ids.Valid(agentID) {
		return nil, domain.NotFound("agent identity")
	}
	id, err := s.Store.AgentIdentity(ctx, tenantID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, domain.NotFound("agent identity")
	}
	return id, err
}

// event builds a lifecycle event acted by p. The actor is also written into the payload,
// because the GraphQL Event type (fixed by the contract) has no actor field.
func (s *Service) event(p *domain.Principal, id *domain.AgentIdentity, typ string, payload map[string]any) *domain.Event {
	payload["actor_id"], payload["actor_kind"] = p.ID, string(p.Kind)
	b, _ := json.Marshal(payload)
	now := s.Now()
	return &domain.Event{ID: ids.At(now), TenantID: id.TenantID, Type: typ, AssetID: &id.AssetID, AgentID: &id.AgentID,
		ActorID: &p.ID, OccurredAt: now, Payload: b}
}

// Reasons recorded on revoked identities.
const reasonSuperseded = "superseded"

// planEnrollment decides an enrollment once its token has granted it (g) and the machine's
// earlier identities in that tenant are known (newest first): the identity and its service
// account join the token's tenant and site (and collector); a machine seen before keeps its
// asset, and each of its identities still live is revoked as superseded by the new one; the
// audit trail records each supersession (agent.revoked) and the enrollment (agent.enrolled),
// acted by the new service account and authorized by the admin who minted the token. It
// depends only on its arguments, so it gives the same plan when a batch runs it again.
func planEnrollment(id *domain.AgentIdentity, sa *domain.Principal, g *store.EnrollmentGrant,
	previous []*domain.AgentIdentity, now time.Time, newAsset string) *store.EnrollmentPlan {
	id.TenantID, id.SiteID, id.CollectorID, id.AssetID = g.TenantID, g.SiteID, g.CollectorID, newAsset
	sa.TenantID = g.TenantID
	actor := actorPayload{ActorID: sa.ID, ActorKind: string(domain.KindServiceAccount), AuthorizedBy: g.CreatedBy}
	p := &store.EnrollmentPlan{Reason: reasonSuperseded}
	if len(previous) > 0 {
		p.AssetOf = previous[0]
		id.AssetID = previous[0].AssetID
	}
	var superseded []string
	for _, old := range previous {
		if old.Status == domain.StatusRevoked {
			continue // already revoked: nothing changes, no event
		}
		p.Supersede = append(p.Supersede, old)
		superseded = append(superseded, old.AgentID)
		p.Events = append(p.Events, &domain.Event{ID: ids.At(now), TenantID: old.TenantID, Type: domain.EventAgentRevoked,
			AssetID: &old.AssetID, AgentID: &old.AgentID, ActorID: &sa.ID, OccurredAt: now,
			Payload: mustJSON(struct {
				Reason       string `json:"reason"`
				SupersededBy string `json:"superseded_by"`
				actorPayload
			}{reasonSuperseded, id.AgentID, actor})})
	}
	enrolled := projection.Enrolled{SiteID: id.SiteID, CollectorID: id.CollectorID, MachineID: id.MachineID,
		Hostname: id.Hostname, AgentVersion: id.AgentVersion, EnrollmentTokenID: g.TokenID, Superseded: superseded}
	p.Events = append(p.Events, &domain.Event{ID: ids.At(now), TenantID: id.TenantID, Type: domain.EventAgentEnrolled,
		AssetID: &id.AssetID, AgentID: &id.AgentID, ActorID: &sa.ID, OccurredAt: now,
		Payload: mustJSON(struct {
			projection.Enrolled
			actorPayload
		}{enrolled, actor})})
	return p
}

// actorPayload records the acting principal in a lifecycle event's payload, where the events
// query shows it (the contract's Event type has no actor field).
type actorPayload struct {
	ActorID      string `json:"actor_id"`
	ActorKind    string `json:"actor_kind"`
	AuthorizedBy string `json:"authorized_by,omitempty"`
}

// mustJSON encodes values that always encode (plain structs of plain values).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
