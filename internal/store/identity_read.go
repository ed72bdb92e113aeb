package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"

	"github.com/oneprotect/telemetry/internal/domain"
)

// The identity read skips bun's query builder (which writes values into the SQL text, so every
// call would be parsed anew) and uses one statement prepared on the reader pool: it is on the
// heartbeat path whenever the identity cache misses. A failed prepare is not kept: the next
// call tries again, so one cancelled request or database hiccup cannot break identity reads.

const identityRead = `SELECT i.agent_id, i.tenant_id, i.site_id, i.collector_id, i.asset_id, i.machine_id, i.status,
  i.hostname, i.agent_version, i.principal_id, i.enrolled_at, COALESCE(l.last_seen_at, i.last_seen_at), i.revoked_at,
  i.revoked_reason, i.reactivated_at, i.ref, i.asset_ref, t.ref, s.ref
FROM agent_identities AS i
JOIN tenants AS t ON t.id = i.tenant_id
JOIN sites AS s ON s.id = i.site_id
LEFT JOIN asset_liveness AS l ON l.asset_ref = i.asset_ref AND l.agent_ref = i.ref
WHERE i.agent_id = ? AND i.tenant_id = ?`

type readStatements struct {
	mu              sync.Mutex
	identity, token *sql.Stmt
}

// prepared returns *slot, preparing query on the reader pool the first time.
func (r *readStatements) prepared(ctx context.Context, s *Store, slot **sql.Stmt, query string) (*sql.Stmt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if *slot != nil {
		return *slot, nil
	}
	// Prepared without the caller's context, which may be cancelled while others still need it.
	st, err := s.R.DB.PrepareContext(context.WithoutCancel(ctx), s.Rebind(query))
	if err != nil {
		return nil, err
	}
	*slot = st
	return st, nil
}

func (r *readStatements) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range []**sql.Stmt{&r.identity, &r.token} {
		if *st != nil {
			(*st).Close()
			*st = nil
		}
	}
}

// AgentIdentity returns one identity of the tenant, or ErrNotFound (also for another tenant's).
func (s *Store) AgentIdentity(ctx context.Context, tenantID, agentID string) (*domain.AgentIdentity, error) {
	st, err := s.reads.prepared(ctx, s, &s.reads.identity, identityRead)
	if err != nil {
		return nil, mapErr(err)
	}
	var r identityRow
	err = st.QueryRowContext(ctx, agentID, tenantID).Scan(&r.AgentID, &r.TenantID, &r.SiteID, &r.CollectorID,
		&r.AssetID, &r.MachineID, &r.Status, &r.Hostname, &r.AgentVersion, &r.PrincipalID, &r.EnrolledAt, &r.SeenAt,
		&r.RevokedAt, &r.RevokedReason, &r.ReactivatedAt, &r.Ref, &r.AssetRef, &r.TenantRef, &r.SiteRef)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, mapErr(err)
	}
	return r.toDomain(), nil
}
