package fleet

import (
	"context"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/store"
)

// IdentityConflict returns the open clone conflict of an identity the caller has read (so of
// the caller's tenant), or nil.
func (s *Service) IdentityConflict(ctx context.Context, id *domain.AgentIdentity) (*store.Conflict, error) {
	p, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	if id.TenantID != p.TenantID {
		return nil, nil
	}
	return s.Store.IdentityConflict(ctx, id.Ref)
}
