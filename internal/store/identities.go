package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

type identityRow struct {
	bun.BaseModel     `bun:"table:agent_identities,alias:i"`
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
	Ref               int64   `bun:"ref"`
	AssetRef          int64   `bun:"asset_ref"`

	// From the joins of identitySelect: the last heartbeat (the asset's liveness while this
	// identity holds it, else the value frozen when it let go), the tenant's and site's refs.
	SeenAt    *int64 `bun:"seen_at,scanonly"`
	TenantRef int64  `bun:"tenant_ref,scanonly"`
	SiteRef   int64  `bun:"site_ref,scanonly"`
}

func (r *identityRow) toDomain() *domain.AgentIdentity {
	return &domain.AgentIdentity{
		AgentID: r.AgentID, TenantID: r.TenantID, SiteID: r.SiteID, CollectorID: r.CollectorID,
		AssetID: r.AssetID, MachineID: r.MachineID, Status: domain.AgentStatus(r.Status),
		Hostname: r.Hostname, AgentVersion: r.AgentVersion, PrincipalID: r.PrincipalID,
		EnrolledAt: FromMicros(r.EnrolledAt), LastSeenAt: optTime(r.SeenAt),
		RevokedAt: optTime(r.RevokedAt), RevokedReason: r.RevokedReason, ReactivatedAt: optTime(r.ReactivatedAt),
		Ref: r.Ref, AssetRef: r.AssetRef, TenantRef: r.TenantRef, SiteRef: r.SiteRef,
	}
}

// identitySelect selects identities with what their rows alone do not hold.
func identitySelect(db bun.IDB, model any) *bun.SelectQuery {
	return db.NewSelect().Model(model).ColumnExpr("i.*").
		ColumnExpr("COALESCE(l.last_seen_at, i.last_seen_at) AS seen_at, t.ref AS tenant_ref, s.ref AS site_ref").
		Join("JOIN tenants AS t ON t.id = i.tenant_id").
		Join("JOIN sites AS s ON s.id = i.site_id").
		Join("LEFT JOIN asset_liveness AS l ON l.asset_ref = i.asset_ref AND l.agent_ref = i.ref")
}

// releaseLiveness takes the fast path away from an identity that may no longer submit (in the
// same transaction that changed its status): its last heartbeat is frozen into its own row,
// and the asset's liveness row no longer names it.
func releaseLiveness(ctx context.Context, tx bun.IDB, tenantID, agentID string) error {
	if _, err := tx.NewRaw(`UPDATE agent_identities SET last_seen_at = COALESCE((SELECT l.last_seen_at FROM asset_liveness AS l
  WHERE l.asset_ref = agent_identities.asset_ref AND l.agent_ref = agent_identities.ref), last_seen_at)
WHERE tenant_id = ? AND agent_id = ?`, tenantID, agentID).Exec(ctx); err != nil {
		return err
	}
	_, err := tx.NewRaw(`UPDATE asset_liveness SET agent_ref = NULL
WHERE agent_ref = (SELECT ref FROM agent_identities WHERE tenant_id = ? AND agent_id = ?)
  AND asset_ref = (SELECT asset_ref FROM agent_identities WHERE tenant_id = ? AND agent_id = ?)`,
		tenantID, agentID, tenantID, agentID).Exec(ctx)
	return err
}

func (s *Store) agentIdentity(ctx context.Context, db bun.IDB, tenantID, agentID string) (*domain.AgentIdentity, error) {
	var row identityRow
	err := identitySelect(db, &row).Where("i.agent_id = ? AND i.tenant_id = ?", agentID, tenantID).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	return row.toDomain(), nil
}

// AgentIdentitiesByID loads identities of one tenant by agent id.
func (s *Store) AgentIdentitiesByID(ctx context.Context, tenantID string, ids []string) ([]*domain.AgentIdentity, error) {
	var rows []identityRow
	err := identitySelect(s.R, &rows).Where("i.tenant_id = ? AND i.agent_id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
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
	// EnrollmentTokenID lists the identities one enrollment token enrolled.
	EnrollmentTokenID *string
	// Conflict lists the identities with (true) or without (false) an open clone conflict.
	Conflict *bool
}

func (f IdentityFilter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	if f.SiteID != nil {
		q = q.Where("i.site_id = ?", *f.SiteID)
	}
	if f.Status != nil {
		q = q.Where("i.status = ?", string(*f.Status))
	}
	if f.EnrollmentTokenID != nil {
		q = q.Where("i.enrollment_token_id = ?", *f.EnrollmentTokenID)
	}
	return applyConflictFilter(q, f.Conflict)
}

// AgentIdentities lists identities by agent id after afterID, up to limit+1 rows.
func (s *Store) AgentIdentities(ctx context.Context, tenantID string, f IdentityFilter, afterID string, limit int) ([]*domain.AgentIdentity, error) {
	var rows []identityRow
	q := f.apply(identitySelect(s.R, &rows).Where("i.tenant_id = ?", tenantID))
	if afterID != "" {
		q = q.Where("i.agent_id > ?", afterID)
	}
	if err := q.Order("i.agent_id").Limit(int64(limit) + 1).Scan(ctx); err != nil {
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
	n, err := f.apply(s.R.NewSelect().Model((*identityRow)(nil)).Where("i.tenant_id = ?", tenantID)).Count(ctx)
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
			if err := releaseLiveness(ctx, tx, tenantID, agentID); err != nil {
				return err
			}
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
	SiteID   string `bun:"site_id"`
	AssetID  string `bun:"asset_id"`
}

// SweepStale marks up to limit ENROLLED or ACTIVE identities with no activity for staleAfter
// before now (or their site's own stale window, site_settings) as STALE, and appends agent.stale for each through newEvent, in one short
// transaction. It returns how many it marked; the caller loops until fewer than limit.
// On PostgreSQL a transaction-scoped advisory lock lets one replica sweep at a time; another
// replica gets 0 and waits for its next tick.
func (s *Store) SweepStale(ctx context.Context, now time.Time, staleAfter time.Duration, limit int, newEvent func(StaleIdentity) *domain.Event) (int, error) {
	var marked []StaleIdentity
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		// cutoff is the row's own (per-site) cutoff; guard, the latest of all, keeps the
		// index range on activity_at.
		cutoff, guard, err := s.staleCutoff(ctx, tx, now, staleAfter)
		if err != nil {
			return err
		}
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
			skipLocked = "FOR UPDATE OF i SKIP LOCKED"
		}
		live := bun.In([]string{string(domain.StatusEnrolled), string(domain.StatusActive)})
		// Heartbeats do not touch the identity row, so its indexed activity_at (enrollment,
		// reactivation) lags: first move it up to the last heartbeat for the candidates that
		// heartbeat since, which takes each identity out of the sweep's range for another
		// stale window.
		for {
			res, err := tx.NewRaw(`UPDATE agent_identities SET activity_at = (SELECT l.last_seen_at FROM asset_liveness AS l
  WHERE l.asset_ref = agent_identities.asset_ref AND l.agent_ref = agent_identities.ref)
WHERE agent_id IN (SELECT i.agent_id FROM agent_identities AS i
  JOIN asset_liveness AS l ON l.asset_ref = i.asset_ref AND l.agent_ref = i.ref
  WHERE i.status IN (?) AND i.activity_at < ? AND i.activity_at < ? AND l.last_seen_at >= ? LIMIT ?)`,
				live, guard, cutoff, cutoff, limit).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n < int64(limit) {
				break
			}
		}
		err = tx.NewRaw(`UPDATE agent_identities SET status = ?
			WHERE agent_id IN (
				SELECT i.agent_id FROM agent_identities AS i
				LEFT JOIN asset_liveness AS l ON l.asset_ref = i.asset_ref AND l.agent_ref = i.ref
				WHERE i.status IN (?) AND i.activity_at < ? AND i.activity_at < ? AND (l.last_seen_at IS NULL OR l.last_seen_at < ?)
				  AND (i.last_seen_at IS NULL OR i.last_seen_at < ?)
				LIMIT ? ?)
			RETURNING agent_id, tenant_id, site_id, asset_id`,
			string(domain.StatusStale), live, guard, cutoff, cutoff, cutoff,
			limit, bun.Safe(skipLocked)).Scan(ctx, &marked)
		if err != nil {
			return err
		}
		for _, m := range marked {
			if err := releaseLiveness(ctx, tx, m.TenantID, m.AgentID); err != nil {
				return err
			}
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
