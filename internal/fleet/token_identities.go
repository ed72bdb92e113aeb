package fleet

import (
	"context"
	"errors"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// EnrollmentTokenIdentities pages through the identities an enrollment token of the caller's
// tenant enrolled, by agent id (ADMIN, like the token itself). Superseded and revoked
// identities are listed too: after a leak, this is who used the token.
func (s *Service) EnrollmentTokenIdentities(ctx context.Context, t *domain.EnrollmentToken, first *int, after *string) (*AgentIdentityConnection, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if t.TenantID != p.TenantID {
		return nil, domain.ErrForbidden // unreachable: tokens are only ever read within the caller's tenant
	}
	id := t.ID
	return s.AgentIdentities(ctx, first, after, store.IdentityFilter{EnrollmentTokenID: &id})
}

// EnrollmentToken returns one enrollment token of the caller's tenant, or nil (ADMIN).
func (s *Service) EnrollmentToken(ctx context.Context, id string) (*domain.EnrollmentToken, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil || !ids.Valid(id) {
		return nil, err
	}
	t, err := s.Store.EnrollmentToken(ctx, p.TenantID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil // another tenant's token is none
	}
	return t, err
}
