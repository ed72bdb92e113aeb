// Package credentials runs the lifecycle of agent credentials: their maximum age and their
// rotation by the agent itself, with a grace period for the token it replaces.
package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/store"
)

// DefaultGrace is how long a rotated-away token keeps working, so an agent whose answer was
// lost, or that has not saved the new token yet, is not locked out.
const DefaultGrace = 10 * time.Minute

// Policy is the maximum age of agent credentials; the zero Policy sets none.
type Policy struct {
	// MaxAge refuses agent tokens issued longer ago than this (0: no maximum).
	MaxAge time.Duration
	Now    func() time.Time
}

var errExpired = &domain.Error{Code: domain.CodeCredentialExpired,
	Message: "this agent credential is older than the server's maximum credential age; rotate it (POST /api/v1/agents/{agent_id}/credentials/rotate) and use the new token"}

// isAgentToken reports whether p is an agent's own service account (collectors and users
// have no maximum age).
func isAgentToken(p *domain.Principal) bool {
	return p != nil && p.Kind == domain.KindServiceAccount && p.ActorKind == domain.ActorAgent
}

// Check refuses an agent token past the maximum age (401 credential_expired).
func (p *Policy) Check(caller *domain.Principal) error {
	if p == nil || p.MaxAge <= 0 || !isAgentToken(caller) || caller.TokenIssuedAt.IsZero() {
		return nil
	}
	if !p.Now().Before(caller.TokenIssuedAt.Add(p.MaxAge)) {
		return errExpired
	}
	return nil
}

// ExpiresAt is when the caller's agent token stops working: the earlier of its own expiry
// (a superseded token's grace period) and its maximum age. Nil when it has neither, or when
// the caller is not an agent token.
func (p *Policy) ExpiresAt(caller *domain.Principal) *time.Time {
	if !isAgentToken(caller) {
		return nil
	}
	var out *time.Time
	if caller.ExpiresAt != nil {
		t := caller.ExpiresAt.UTC()
		out = &t
	}
	if p != nil && p.MaxAge > 0 && !caller.TokenIssuedAt.IsZero() {
		if t := caller.TokenIssuedAt.Add(p.MaxAge).UTC(); out == nil || t.Before(*out) {
			out = &t
		}
	}
	return out
}

// Service rotates agent credentials.
type Service struct {
	Store  *store.Store
	Auth   *auth.Authenticator
	Policy *Policy
	Now    func() time.Time
	// Grace is how long the tokens a rotation supersedes keep working (0: none).
	Grace time.Duration
	// Limiter, when set, is the agents' rate limit; a rotation counts as one request.
	Limiter *pacing.Limiter
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

// Rotated answers a rotation: the new token (shown once) and when it expires (nil without a
// maximum age), and when the token that called stops working.
type Rotated struct {
	AgentID                string
	Token                  string
	ExpiresAt              *time.Time
	PreviousTokenExpiresAt time.Time
}

var (
	errUnknownAgent = &domain.Error{Code: domain.CodeUnknownAgent,
		Message: "no agent identity with this agent_id; enroll again"}
	errActorMismatch = &domain.Error{Code: domain.CodeActorMismatch,
		Message: "only the agent's own credential can rotate it"}
	errRevoked = &domain.Error{Code: domain.CodeAgentRevoked,
		Message: "the agent identity is revoked; stop, or enroll again with a new enrollment token"}
	errStale = &domain.Error{Code: domain.CodeAgentStale,
		Message: "the agent identity is stale; an administrator must reactivate it"}
)

// Rotate issues a new token for the calling agent and starts the grace period of the one it
// called with. Checks, in order: the client certificate (when one is required or presented),
// a service account (401/403), an identity of this agent in
// the caller's tenant (401 unknown_agent), the agent's own credential (403 actor_mismatch; a
// collector cannot rotate an agent's token), a live identity (403 agent_revoked or
// agent_stale), the agent rate limit (429). A token past the maximum age may still rotate
// while its identity is live: that is how an agent that was off for a while gets back in.
func (s *Service) Rotate(ctx context.Context, agentID string) (*Rotated, error) {
	// The client-certificate stage comes first (--require-agent-mtls: this agent's own).
	if err := auth.CheckAgentCertificate(ctx, agentID); err != nil {
		return nil, err
	}
	caller, err := auth.RequireServiceAccount(ctx)
	if err != nil {
		return nil, err
	}
	if !ids.Valid(agentID) {
		return nil, errUnknownAgent
	}
	id, err := s.Store.AgentIdentity(ctx, caller.TenantID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnknownAgent // another tenant's agent counts as none
	} else if err != nil {
		return nil, err
	}
	if caller.ActorKind != domain.ActorAgent || caller.ActorID != agentID || id.PrincipalID != caller.ID {
		return nil, errActorMismatch
	}
	if err := statusError(id.Status); err != nil {
		return nil, err
	}
	if ok, wait := s.Limiter.Allow(caller.TenantID + "/" + agentID); !ok {
		return nil, &domain.Error{Code: domain.CodeRateLimited, RetryAfter: wait,
			Message: "this agent sends requests faster than the server allows; retry after the Retry-After delay"}
	}
	now := s.Now().UTC().Truncate(time.Microsecond)
	secret, hash := auth.NewToken(auth.PrefixServiceAccount)
	prefix := auth.DisplayPrefix(secret)
	tokenID := ids.New()
	until := now.Add(s.Grace)
	payload, _ := json.Marshal(map[string]any{
		"actor_id": caller.ID, "actor_kind": string(caller.Kind),
		"token_id": tokenID, "token_prefix": prefix,
		"previous_token_id": caller.TokenID, "previous_token_expires_at": until.Format(time.RFC3339Nano),
		"grace_seconds": int64(s.Grace / time.Second),
	})
	id, err = s.Store.RotateAgentCredential(ctx, &store.CredentialRotation{
		TenantID: caller.TenantID, AgentID: agentID, PrincipalID: caller.ID,
		Token: store.NewAPIToken{ID: tokenID, Hash: hash, Prefix: prefix}, Now: now, OldTokensExpireAt: until,
		// A replica re-reads a cached token within TokenCacheTTL anyway: only a shorter grace
		// needs every replica to drop its cache now.
		BumpEpoch: s.Grace < auth.TokenCacheTTL,
		Event: &domain.Event{ID: ids.New(), TenantID: caller.TenantID, Type: domain.EventCredentialRotated,
			AssetID: &id.AssetID, AgentID: &agentID, ActorID: &caller.ID, OccurredAt: now, Payload: payload},
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnknownAgent
	}
	if err != nil {
		return nil, err
	}
	if err := statusError(id.Status); err != nil { // revoked or gone stale meanwhile: nothing written
		return nil, err
	}
	if id.PrincipalID != caller.ID {
		return nil, errActorMismatch
	}
	// This replica must not keep trusting the old token from its cache past the grace period.
	s.Auth.ForgetToken(caller.TokenHash)
	out := &Rotated{AgentID: agentID, Token: secret, PreviousTokenExpiresAt: until}
	out.ExpiresAt = s.Policy.ExpiresAt(&domain.Principal{Kind: domain.KindServiceAccount, ActorKind: domain.ActorAgent, TokenIssuedAt: now})
	return out, nil
}
