package telemetry

import (
	"context"
	"errors"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// Clone detection: the store's slow path asks the clones package what each heartbeat's
// machine fingerprint means, under the policy in Service.OnIdentityConflict; this file holds
// the answer agents get and the admin's way out of a conflict.

var errIdentityConflict = &domain.Error{Code: domain.CodeIdentityConflict,
	Message: "this agent's credential is in use on another machine, which the server keeps; enroll this machine as a new agent"}

// ResolveConflict clears an identity's open conflict (ADMIN), keeping the machine of the
// fingerprint keep: the conflict's other machines get identity_conflict from now on.
func (s *Service) ResolveConflict(ctx context.Context, agentID, keep string) (*domain.AgentIdentity, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !ids.Valid(agentID) {
		return nil, domain.NotFound("agent identity")
	}
	if !ids.Valid(keep) {
		return nil, domain.Invalid("keep", "keep must be the id of one of the conflict's fingerprints")
	}
	agent, actor := agentID, p.ID
	ev := &domain.Event{ID: ids.At(s.Now()), TenantID: p.TenantID, Type: domain.EventConflictResolved, AgentID: &agent,
		ActorID: &actor, OccurredAt: s.Now().UTC()}
	id, err := s.Store.ResolveConflict(ctx, p.TenantID, agentID, keep, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, domain.NotFound("agent identity")
	case errors.Is(err, store.ErrNoConflict):
		return nil, &domain.Error{Code: domain.CodeConflict, Message: "this agent identity has no open conflict"}
	case errors.Is(err, store.ErrNotConflicting):
		return nil, domain.Invalid("keep", "keep is not one of the conflict's fingerprints")
	}
	return id, err
}
