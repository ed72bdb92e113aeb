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
// heartbeat path whenever the identity cache misses.

const identityColumns = `agent_id, tenant_id, site_id, collector_id, asset_id, machine_id, status, hostname,
  agent_version, principal_id, enrolled_at, last_seen_at, revoked_at, revoked_reason, reactivated_at`

type readStatements struct {
	once     sync.Once
	err      error
	identity *sql.Stmt
}

func (s *Store) readStmts(ctx context.Context) (*readStatements, error) {
	s.reads.once.Do(func() {
		s.reads.identity, s.reads.err = s.R.DB.PrepareContext(ctx,
			s.Rebind(`SELECT `+identityColumns+` FROM agent_identities WHERE agent_id = ? AND tenant_id = ?`))
	})
	return &s.reads, s.reads.err
}

// AgentIdentity returns one identity of the tenant, or ErrNotFound (also for another tenant's).
func (s *Store) AgentIdentity(ctx context.Context, tenantID, agentID string) (*domain.AgentIdentity, error) {
	st, err := s.readStmts(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	var r identityRow
	err = st.identity.QueryRowContext(ctx, agentID, tenantID).Scan(&r.AgentID, &r.TenantID, &r.SiteID, &r.CollectorID,
		&r.AssetID, &r.MachineID, &r.Status, &r.Hostname, &r.AgentVersion, &r.PrincipalID, &r.EnrolledAt, &r.LastSeenAt,
		&r.RevokedAt, &r.RevokedReason, &r.ReactivatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, mapErr(err)
	}
	return r.toDomain(), nil
}
