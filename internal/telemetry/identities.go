package telemetry

import (
	"context"
	"errors"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/flatcache"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// identityCache keeps the identities that may submit, so a heartbeat costs no read before its
// write. The binding (tenant, site, collector, asset) never changes; the status can, on any
// replica, so the cache is never the last word on it: the write itself updates the identity
// only while it is ENROLLED or ACTIVE, and a refusal there evicts the entry. A revoked identity
// is therefore refused on its very next heartbeat, whichever replica served the revocation.
// The entries are held where the collector never scans them (internal/flatcache).
type identityCache struct {
	lru *flatcache.Cache[*domain.AgentIdentity]
}

const (
	// Sized for a million-agent fleet (an entry takes about 380 bytes), whose heartbeats each
	// come from another agent, and kept longer than a heartbeat interval: a miss costs a
	// database read before the write. The memory is taken as entries arrive.
	identityCacheBytes = 640 << 20
	identityCacheTTL   = 15 * time.Minute
)

func newIdentityCache() *identityCache {
	return &identityCache{lru: flatcache.New(identityCacheBytes, identityCacheTTL, identityCodec)}
}

// identityCodec stores an identity in the cache.
var identityCodec = flatcache.Codec[*domain.AgentIdentity]{
	Append: func(b []byte, id *domain.AgentIdentity) []byte {
		for _, s := range []string{id.AgentID, id.TenantID, id.SiteID, id.AssetID, string(id.Status), id.PrincipalID} {
			b = flatcache.AppendString(b, s)
		}
		for _, s := range []*string{id.CollectorID, id.MachineID, id.Hostname, id.AgentVersion, id.RevokedReason} {
			b = flatcache.AppendOptString(b, s)
		}
		b = flatcache.AppendTime(b, id.EnrolledAt)
		for _, t := range []*time.Time{id.LastSeenAt, id.RevokedAt, id.ReactivatedAt} {
			b = flatcache.AppendOptTime(b, t)
		}
		for _, n := range []int64{id.Ref, id.AssetRef, id.TenantRef, id.SiteRef} {
			b = flatcache.AppendInt(b, n)
		}
		return b
	},
	Decode: func(r *flatcache.Reader) (*domain.AgentIdentity, bool) {
		id := &domain.AgentIdentity{AgentID: r.String(), TenantID: r.String(), SiteID: r.String(),
			AssetID: r.String(), Status: domain.AgentStatus(r.String()), PrincipalID: r.String()}
		id.CollectorID, id.MachineID, id.Hostname = r.OptString(), r.OptString(), r.OptString()
		id.AgentVersion, id.RevokedReason = r.OptString(), r.OptString()
		id.EnrolledAt = r.Time()
		id.LastSeenAt, id.RevokedAt, id.ReactivatedAt = r.OptTime(), r.OptTime(), r.OptTime()
		id.Ref, id.AssetRef, id.TenantRef, id.SiteRef = r.Int(), r.Int(), r.Int(), r.Int()
		return id, !r.Failed()
	},
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
