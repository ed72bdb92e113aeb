package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

type identityRow struct {
	bun.BaseModel     `bun:"table:agent_identities"`
	AgentID           string  `bun:"agent_id,pk"`
	TenantID          string  `bun:"tenant_id"`
	SiteID            string  `bun:"site_id"`
	CollectorID       *string `bun:"collector_id"`
	AssetID           string  `bun:"asset_id"`
	MachineID         *string `bun:"machine_id"`
	Status            string  `bun:"status"`
	Hostname          *string `bun:"hostname"`
	AgentVersion      *string `bun:"agent_version"`
	PrincipalID       string  `bun:"principal_id"`
	EnrollmentTokenID *string `bun:"enrollment_token_id"`
	EnrolledAt        int64   `bun:"enrolled_at"`
	LastSeenAt        *int64  `bun:"last_seen_at"`
	RevokedAt         *int64  `bun:"revoked_at"`
	RevokedReason     *string `bun:"revoked_reason"`
	ReactivatedAt     *int64  `bun:"reactivated_at"`
	ActivityAt        int64   `bun:"activity_at"`
}

func (r *identityRow) toDomain() *domain.AgentIdentity {
	return &domain.AgentIdentity{
		AgentID: r.AgentID, TenantID: r.TenantID, SiteID: r.SiteID, CollectorID: r.CollectorID,
		AssetID: r.AssetID, MachineID: r.MachineID, Status: domain.AgentStatus(r.Status),
		Hostname: r.Hostname, AgentVersion: r.AgentVersion, PrincipalID: r.PrincipalID,
		EnrolledAt: FromMicros(r.EnrolledAt), LastSeenAt: optTime(r.LastSeenAt),
		RevokedAt: optTime(r.RevokedAt), RevokedReason: r.RevokedReason, ReactivatedAt: optTime(r.ReactivatedAt),
	}
}

func (s *Store) agentIdentity(ctx context.Context, db bun.IDB, tenantID, agentID string) (*domain.AgentIdentity, error) {
	var row identityRow
	err := db.NewSelect().Model(&row).Where("agent_id = ? AND tenant_id = ?", agentID, tenantID).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	return row.toDomain(), nil
}

// AgentIdentitiesByID loads identities of one tenant by agent id.
func (s *Store) AgentIdentitiesByID(ctx context.Context, tenantID string, ids []string) ([]*domain.AgentIdentity, error) {
	var rows []identityRow
	err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND agent_id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.AgentIdentity, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// IdentityFilter narrows an identity listing.
type IdentityFilter struct {
	SiteID *string
	Status *domain.AgentStatus
}

func (f IdentityFilter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	if f.SiteID != nil {
		q = q.Where("site_id = ?", *f.SiteID)
	}
	if f.Status != nil {
		q = q.Where("status = ?", string(*f.Status))
	}
	return q
}

// AgentIdentities lists identities by agent id after afterID, up to limit+1 rows.
func (s *Store) AgentIdentities(ctx context.Context, tenantID string, f IdentityFilter, afterID string, limit int) ([]*domain.AgentIdentity, error) {
	var rows []identityRow
	q := f.apply(s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID))
	if afterID != "" {
		q = q.Where("agent_id > ?", afterID)
	}
	if err := q.Order("agent_id").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.AgentIdentity, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CountAgentIdentities counts the tenant's identities matching f.
func (s *Store) CountAgentIdentities(ctx context.Context, tenantID string, f IdentityFilter) (int, error) {
	n, err := f.apply(s.R.NewSelect().Model((*identityRow)(nil)).Where("tenant_id = ?", tenantID)).Count(ctx)
	return int(n), mapErr(err)
}

// Revoke marks an identity REVOKED and appends agent.revoked, in one transaction. Revoking a
// revoked identity changes nothing.
func (s *Store) Revoke(ctx context.Context, tenantID, agentID, reason string, ev *domain.Event) (*domain.AgentIdentity, error) {
	var out *domain.AgentIdentity
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*identityRow)(nil)).
			Set("status = ?", string(domain.StatusRevoked)).
			Set("revoked_at = ?", Micros(ev.OccurredAt)).
			Set("revoked_reason = ?", reason).
			Where("tenant_id = ? AND agent_id = ? AND status <> ?", tenantID, agentID, string(domain.StatusRevoked)).
			Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := appendEvent(ctx, tx, ev); err != nil {
				return err
			}
		}
		out, err = s.agentIdentity(ctx, tx, tenantID, agentID)
		return err
	})
	return out, err
}

// Reactivate moves a STALE identity back to ENROLLED and appends agent.reactivated. It
// returns the identity as it is afterwards; the caller tells the outcome from its status.
func (s *Store) Reactivate(ctx context.Context, tenantID, agentID string, ev *domain.Event) (*domain.AgentIdentity, error) {
	var out *domain.AgentIdentity
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		now := Micros(ev.OccurredAt)
		res, err := tx.NewUpdate().Model((*identityRow)(nil)).
			Set("status = ?", string(domain.StatusEnrolled)).
			Set("reactivated_at = ?", now).
			Set("activity_at = ?", now).
			Where("tenant_id = ? AND agent_id = ? AND status = ?", tenantID, agentID, string(domain.StatusStale)).
			Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := appendEvent(ctx, tx, ev); err != nil {
				return err
			}
		}
		out, err = s.agentIdentity(ctx, tx, tenantID, agentID)
		return err
	})
	return out, err
}

// StaleSweepLockKey is the PostgreSQL advisory lock that keeps replicas from sweeping at the
// same time (exported so a test can hold it as another replica would).
const StaleSweepLockKey = 0x6f6e657377656570 // "onesweep"

// StaleIdentity is one identity the sweeper marked STALE.
type StaleIdentity struct {
	AgentID  string `bun:"agent_id"`
	TenantID string `bun:"tenant_id"`
	AssetID  string `bun:"asset_id"`
}

// SweepStale marks up to limit ENROLLED or ACTIVE identities whose activity is older than
// cutoff as STALE, and appends agent.stale for each through newEvent, in one short
// transaction. It returns how many it marked; the caller loops until fewer than limit.
// On PostgreSQL a transaction-scoped advisory lock lets one replica sweep at a time; another
// replica gets 0 and waits for its next tick.
func (s *Store) SweepStale(ctx context.Context, cutoff time.Time, limit int, newEvent func(StaleIdentity) *domain.Event) (int, error) {
	var marked []StaleIdentity
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if s.Dialect == Postgres {
			var locked bool
			if err := tx.NewRaw("SELECT pg_try_advisory_xact_lock(?)", StaleSweepLockKey).Scan(ctx, &locked); err != nil {
				return err
			}
			if !locked {
				return nil
			}
		}
		// On PostgreSQL the sweeper skips rows another transaction holds (a heartbeat in flight
		// is about to make them ACTIVE anyway) instead of waiting for them: it never waits on a
		// row lock, so it can never deadlock with a group commit that locks identities in
		// another order. SQLite has one writer and no row locks.
		skipLocked := ""
		if s.Dialect == Postgres {
			skipLocked = "FOR UPDATE SKIP LOCKED"
		}
		live := bun.In([]string{string(domain.StatusEnrolled), string(domain.StatusActive)})
		// activity_at, which the index holds, lags heartbeats by up to ActivityResolution;
		// the identity's activity is the later of it and last_seen_at, which is exact.
		quiet := "status IN (?) AND activity_at < ? AND (last_seen_at IS NULL OR last_seen_at < ?)"
		err := tx.NewRaw(`UPDATE agent_identities SET status = ?
			WHERE `+quiet+` AND agent_id IN (
				SELECT agent_id FROM agent_identities WHERE `+quiet+` LIMIT ? ?)
			RETURNING agent_id, tenant_id, asset_id`,
			string(domain.StatusStale), live, Micros(cutoff), Micros(cutoff), live, Micros(cutoff), Micros(cutoff),
			limit, bun.Safe(skipLocked)).Scan(ctx, &marked)
		if err != nil {
			return err
		}
		for _, m := range marked {
			if err := appendEvent(ctx, tx, newEvent(m)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(marked), nil
}
