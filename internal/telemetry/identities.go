package telemetry

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// identityCache keeps the identities that may submit, so a heartbeat costs no read before its
// write. The binding (tenant, site, collector, asset) never changes; the status can, on any
// replica, so the cache is never the last word on it: the write itself updates the identity
// only while it is ENROLLED or ACTIVE, and a refusal there evicts the entry. A revoked identity
// is therefore refused on its very next heartbeat, whichever replica served the revocation.
type identityCache struct {
	lru *expirable.LRU[string, *domain.AgentIdentity]
}

const (
	// Sized for a million-agent fleet, whose heartbeats each come from another agent, and kept
	// longer than a heartbeat interval: a miss costs a database read before the write.
	identityCacheSize = 1_200_000
	identityCacheTTL  = 15 * time.Minute
)

func newIdentityCache() *identityCache {
	return &identityCache{lru: expirable.NewLRU[string, *domain.AgentIdentity](identityCacheSize, nil, identityCacheTTL)}
}

// The key carries the tenant: a caller of another tenant can never hit this tenant's entry.
func cacheKey(tenantID, agentID string) string { return tenantID + "/" + agentID }

// lookupIdentity returns the caller-tenant's identity and whether it came from the cache.
func (s *Service) lookupIdentity(ctx context.Context, tenantID, agentID string) (*domain.AgentIdentity, bool, error) {
	if !ids.Valid(agentID) {
		return nil, false, errUnknownAgent
	}
	s.cacheOnce.Do(func() { s.cache = newIdentityCache() })
	key := cacheKey(tenantID, agentID)
	if id, ok := s.cache.lru.Get(key); ok {
		return id, true, nil
	}
	id, err := s.Store.AgentIdentity(ctx, tenantID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, errUnknownAgent // another tenant's identity counts as none
	}
	if err != nil {
		return nil, false, err
	}
	if id.Status.CanSubmit() {
		s.cache.lru.Add(key, id)
	}
	return id, false, nil
}

// forget drops an identity whose status the database contradicted.
func (s *Service) forget(tenantID, agentID string) {
	if s.cache != nil {
		s.cache.lru.Remove(cacheKey(tenantID, agentID))
	}
}

// freshStatusError re-reads a cached identity before a rejection that ranks below its status
// (CONTRACT §4's order): a revoked or stale identity must hear that, not a lesser error.
func (s *Service) freshStatusError(ctx context.Context, id *domain.AgentIdentity) error {
	s.forget(id.TenantID, id.AgentID)
	fresh, err := s.Store.AgentIdentity(ctx, id.TenantID, id.AgentID)
	if err != nil {
		return err
	}
	return statusError(fresh.Status)
}
