package store

import (
	"context"
	"database/sql"
	"errors"
	"hash/fnv"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/projection"
)

type enrollmentTokenRow struct {
	bun.BaseModel `bun:"table:enrollment_tokens"`
	ID            string  `bun:"id,pk"`
	TenantID      string  `bun:"tenant_id"`
	SiteID        string  `bun:"site_id"`
	CollectorID   *string `bun:"collector_id"`
	TokenHash     string  `bun:"token_hash"`
	Prefix        string  `bun:"prefix"`
	MaxUses       int     `bun:"max_uses"`
	Uses          int     `bun:"uses"`
	ExpiresAt     int64   `bun:"expires_at"`
	RevokedAt     *int64  `bun:"revoked_at"`
	CreatedBy     string  `bun:"created_by"`
	CreatedAt     int64   `bun:"created_at"`
}

func (r *enrollmentTokenRow) toDomain() *domain.EnrollmentToken {
	return &domain.EnrollmentToken{ID: r.ID, TenantID: r.TenantID, SiteID: r.SiteID, CollectorID: r.CollectorID,
		Prefix: r.Prefix, MaxUses: r.MaxUses, Uses: r.Uses, ExpiresAt: FromMicros(r.ExpiresAt),
		RevokedAt: optTime(r.RevokedAt), CreatedBy: r.CreatedBy, CreatedAt: FromMicros(r.CreatedAt)}
}

// CreateEnrollmentToken stores a token by its hash.
func (s *Store) CreateEnrollmentToken(ctx context.Context, t *domain.EnrollmentToken, hash string) error {
	row := &enrollmentTokenRow{ID: t.ID, TenantID: t.TenantID, SiteID: t.SiteID, CollectorID: t.CollectorID,
		TokenHash: hash, Prefix: t.Prefix, MaxUses: t.MaxUses, ExpiresAt: Micros(t.ExpiresAt),
		CreatedBy: t.CreatedBy, CreatedAt: Micros(t.CreatedAt)}
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(row).Exec(ctx)
		return err
	})
}

// EnrollmentTokens lists the tenant's tokens newest first after afterID, up to limit+1.
func (s *Store) EnrollmentTokens(ctx context.Context, tenantID, afterID string, limit int) ([]*domain.EnrollmentToken, error) {
	var rows []enrollmentTokenRow
	q := s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID)
	if afterID != "" {
		q = q.Where("id < ?", afterID)
	}
	if err := q.Order("id DESC").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.EnrollmentToken, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CountEnrollmentTokens counts the tenant's enrollment tokens.
func (s *Store) CountEnrollmentTokens(ctx context.Context, tenantID string) (int, error) {
	n, err := s.R.NewSelect().Model((*enrollmentTokenRow)(nil)).Where("tenant_id = ?", tenantID).Count(ctx)
	return int(n), mapErr(err)
}

// RevokeEnrollmentToken revokes one of the tenant's tokens (again is a no-op) and returns it.
func (s *Store) RevokeEnrollmentToken(ctx context.Context, tenantID, id string, now time.Time) (*domain.EnrollmentToken, error) {
	var row enrollmentTokenRow
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewUpdate().Model((*enrollmentTokenRow)(nil)).Set("revoked_at = ?", Micros(now)).
			Where("tenant_id = ? AND id = ? AND revoked_at IS NULL", tenantID, id).Exec(ctx)
		if err != nil {
			return err
		}
		return tx.NewSelect().Model(&row).Where("tenant_id = ? AND id = ?", tenantID, id).Scan(ctx)
	})
	if err != nil {
		return nil, err
	}
	return row.toDomain(), nil
}

// Enrollment is what Enroll needs beyond the token: the new identity (AgentID, AssetID,
// MachineID, Hostname, AgentVersion; the binding comes from the token), its service-account
// principal (ID, Name) and that principal's token.
type Enrollment struct {
	TokenHash string
	Now       time.Time
	Identity  *domain.AgentIdentity
	Principal *domain.Principal
	Token     NewAPIToken
	// Certificate, when set, signs the identity's certificate once its tenant is known; the
	// record of it is written in the enrollment's transaction. It may run more than once.
	Certificate func(id *domain.AgentIdentity) (*domain.Certificate, error)
}

// ErrInvalidEnrollmentToken: unknown, expired, used-up or revoked, deliberately alike.
var ErrInvalidEnrollmentToken = &domain.Error{Code: domain.CodeInvalidEnrollmentToken,
	Message: "the enrollment token is unknown, expired, used up or revoked"}

// Enroll consumes one use of the token and creates the identity, atomically: the guarded
// UPDATE ... RETURNING takes the use only while uses < max_uses, so N concurrent enrollments
// on a token of K uses create exactly min(N, K) identities. An identity already live for the
// same machine in the tenant is revoked as "superseded" and its asset id carried over.
func (s *Store) Enroll(ctx context.Context, e *Enrollment) error {
	err := s.enrollInGroupCommit(ctx, e)
	if domain.ErrorCode(err) == domain.CodeConflict && e.Identity.MachineID != nil {
		// Backstop only: the machine lock below already serializes re-enrollments of one
		// machine, but if another enrollment still won the unique index, supersede it.
		err = s.enrollInGroupCommit(ctx, e)
	}
	return err
}

// enrollInGroupCommit runs one enrollment in the next group commit, like heartbeats, so that
// an enrollment storm shares transactions and syncs. An invalid token writes nothing (its
// guarded UPDATE matched no row), so it is an answer for this caller, not a failed batch.
func (s *Store) enrollInGroupCommit(ctx context.Context, e *Enrollment) error {
	var answer error
	err := s.inGroupCommit(ctx, &writeJob{key: "enroll", apply: func(ctx context.Context, tx bun.Tx, ptx *preparedTx) error {
		err := s.enroll(ctx, tx, ptx, e)
		if errors.Is(err, ErrInvalidEnrollmentToken) {
			answer = err
			return nil
		}
		answer = nil
		return err
	}})
	if err != nil {
		return err
	}
	return answer
}

// machineLockClass namespaces the per-machine advisory locks (the two-int4 key space, apart
// from the sweeper's single bigint key).
const machineLockClass = 0x6f6e6d63 // "onmc"

// lockMachine serializes enrollments of one machine of a tenant until the transaction ends,
// so each one sees the identity the previous one created and supersedes it. SQLite needs
// nothing: its single writer connection already runs write transactions one at a time.
func (s *Store) lockMachine(ctx context.Context, tx bun.Tx, tenantID, machineID string) error {
	if s.Dialect != Postgres {
		return nil
	}
	h := fnv.New32a()
	h.Write([]byte(tenantID))
	h.Write([]byte{0})
	h.Write([]byte(machineID))
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?, ?)", machineLockClass, int32(h.Sum32()))
	return err
}

func (s *Store) enroll(ctx context.Context, tx bun.Tx, ptx *preparedTx, e *Enrollment) error {
	st := s.enr
	now := Micros(e.Now)
	var tok enrollmentTokenRow
	err := ptx.QueryRowContext(ctx, st.useToken, e.TokenHash, now).
		Scan(&tok.ID, &tok.TenantID, &tok.SiteID, &tok.CollectorID, &tok.CreatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrInvalidEnrollmentToken
	}
	if err != nil {
		return err
	}
	id := e.Identity
	id.TenantID, id.SiteID, id.CollectorID = tok.TenantID, tok.SiteID, tok.CollectorID
	id.Status, id.EnrolledAt, id.PrincipalID = domain.StatusEnrolled, e.Now, e.Principal.ID
	// The acting principal of an enrollment is the agent's new service account; the admin who
	// minted the token authorized it.
	actor := actorPayload{ActorID: e.Principal.ID, ActorKind: string(domain.KindServiceAccount), AuthorizedBy: tok.CreatedBy}

	var superseded []string
	reenrolled := false
	if id.MachineID != nil {
		if err := s.lockMachine(ctx, tx, id.TenantID, *id.MachineID); err != nil {
			return err
		}
		previous, err := s.machineIdentities(ctx, ptx, id.TenantID, *id.MachineID)
		if err != nil {
			return err
		}
		if len(previous) > 0 {
			id.AssetID, id.AssetRef = previous[0].AssetID, previous[0].AssetRef
			reenrolled = true
		}
		for _, old := range previous {
			res, err := tx.NewUpdate().Model((*identityRow)(nil)).
				Set("status = ?", string(domain.StatusRevoked)).Set("revoked_at = ?", now).Set("revoked_reason = ?", "superseded").
				Where("tenant_id = ? AND agent_id = ? AND status <> ?", old.TenantID, old.AgentID, string(domain.StatusRevoked)).Exec(ctx)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue // already revoked: nothing changes, no event
			}
			if err := releaseLiveness(ctx, tx, old.TenantID, old.AgentID); err != nil {
				return err
			}
			if err := appendEvent(ctx, tx, &domain.Event{ID: ids.At(e.Now), TenantID: old.TenantID, Type: domain.EventAgentRevoked,
				AssetID: &old.AssetID, AgentID: &old.AgentID, ActorID: &e.Principal.ID, OccurredAt: e.Now,
				Payload: mustJSON(struct {
					Reason       string `json:"reason"`
					SupersededBy string `json:"superseded_by"`
					actorPayload
				}{"superseded", id.AgentID, actor})}); err != nil {
				return err
			}
			superseded = append(superseded, old.AgentID)
		}
	}

	sa := e.Principal
	sa.TenantID, sa.Kind, sa.ActorKind, sa.ActorID = id.TenantID, domain.KindServiceAccount, domain.ActorAgent, id.AgentID
	if _, err := ptx.ExecContext(ctx, st.insertPrincipal, sa.ID, sa.TenantID, string(sa.Kind), sa.Name,
		string(sa.ActorKind), sa.ActorID, now); err != nil {
		return err
	}
	if _, err := ptx.ExecContext(ctx, st.insertToken, e.Token.ID, sa.TenantID, sa.ID, e.Token.Hash, e.Token.Prefix,
		optMicros(e.Token.ExpiresAt), now); err != nil {
		return err
	}
	if err := ptx.QueryRowContext(ctx, st.nextIdentityRef).Scan(&id.Ref); err != nil {
		return err
	}
	if !reenrolled {
		id.AssetRef = id.Ref // a new asset's ref is its first identity's
	}
	if _, err := ptx.ExecContext(ctx, st.insertIdentity, id.AgentID, id.TenantID, id.SiteID, id.CollectorID, id.AssetID,
		id.MachineID, string(id.Status), id.Hostname, id.AgentVersion, sa.ID, tok.ID, now, now, id.Ref, id.AssetRef); err != nil {
		return err
	}
	enrolled := projection.Enrolled{SiteID: id.SiteID, CollectorID: id.CollectorID, MachineID: id.MachineID,
		Hostname: id.Hostname, AgentVersion: id.AgentVersion, EnrollmentTokenID: tok.ID, Superseded: superseded}
	if _, err := ptx.ExecContext(ctx, st.insertEvent, ids.At(e.Now), id.TenantID, domain.EventAgentEnrolled, id.AssetID,
		id.AgentID, sa.ID, now, string(mustJSON(struct {
			projection.Enrolled
			actorPayload
		}{enrolled, actor}))); err != nil {
		return err
	}
	if e.Certificate != nil {
		c, err := e.Certificate(id)
		if err != nil {
			return err
		}
		if err := insertCertificate(ctx, tx, c); err != nil {
			return err
		}
	}
	if !reenrolled {
		return nil // a new asset id: the asset appears with the first heartbeat
	}
	// The machine's asset (if it has appeared) follows the new identity, even when the previous
	// identity had already been revoked by an admin.
	if _, err := ptx.ExecContext(ctx, st.moveAsset, id.SiteID, id.AgentID, id.TenantID, id.AssetID); err != nil {
		return err
	}
	_, err = ptx.ExecContext(ctx, st.moveLiveness, id.TenantID, id.SiteID, id.AssetRef)
	return err
}

// enrollStatements are the statements of an enrollment, prepared once like the heartbeat's
// (an enrollment storm goes through the same single writer).
type enrollStatements struct {
	useToken, machineIdentities, insertPrincipal, insertToken, insertIdentity, insertEvent string
	nextIdentityRef, moveAsset, moveLiveness                                               string
}

func newEnrollStatements(rebind func(string) string, newRef func(table string) string) *enrollStatements {
	return &enrollStatements{
		// The use is taken only while uses < max_uses: N concurrent enrollments on a token of K
		// uses take exactly min(N, K).
		useToken: rebind(`UPDATE enrollment_tokens SET uses = uses + 1
  WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ? AND uses < max_uses
  RETURNING id, tenant_id, site_id, collector_id, created_by`),
		machineIdentities: rebind(`SELECT agent_id, tenant_id, asset_id, asset_ref, status FROM agent_identities
  WHERE tenant_id = ? AND machine_id = ? ORDER BY enrolled_at DESC`),
		insertPrincipal: rebind(`INSERT INTO principals (id, tenant_id, kind, role, name, actor_kind, actor_id, created_at)
  VALUES (?, ?, ?, NULL, ?, ?, ?, ?)`),
		insertToken: rebind(`INSERT INTO api_tokens (id, tenant_id, principal_id, token_hash, prefix, expires_at, created_at)
  VALUES (?, ?, ?, ?, ?, ?, ?)`),
		insertIdentity: rebind(`INSERT INTO agent_identities (agent_id, tenant_id, site_id, collector_id, asset_id, machine_id,
  status, hostname, agent_version, principal_id, enrollment_token_id, enrolled_at, activity_at, ref, asset_ref)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		nextIdentityRef: "SELECT " + newRef("agent_identities"),
		// A re-enrolled machine's asset (if it has appeared) follows the new identity and site.
		moveAsset:    rebind(`UPDATE assets SET site_id = ?, agent_id = ? WHERE tenant_id = ? AND id = ?`),
		moveLiveness: rebind(`UPDATE asset_liveness SET site_ref = (SELECT ref FROM sites WHERE tenant_id = ? AND id = ?) WHERE asset_ref = ?`),
		insertEvent: rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
	}
}

func (e *enrollStatements) all() []string {
	return []string{e.useToken, e.machineIdentities, e.insertPrincipal, e.insertToken, e.insertIdentity, e.insertEvent,
		e.nextIdentityRef, e.moveAsset, e.moveLiveness}
}

// machineIdentities lists a machine's identities in a tenant, newest first.
func (s *Store) machineIdentities(ctx context.Context, ptx *preparedTx, tenantID, machineID string) ([]*domain.AgentIdentity, error) {
	rows, err := ptx.QueryContext(ctx, s.enr.machineIdentities, tenantID, machineID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*domain.AgentIdentity
	for rows.Next() {
		var id domain.AgentIdentity
		var status string
		if err := rows.Scan(&id.AgentID, &id.TenantID, &id.AssetID, &id.AssetRef, &status); err != nil {
			return nil, err
		}
		id.Status = domain.AgentStatus(status)
		out = append(out, &id)
	}
	return out, rows.Err()
}

// actorPayload records the acting principal in a lifecycle event's payload, where the events
// query shows it (the contract's Event type has no actor field).
type actorPayload struct {
	ActorID      string `json:"actor_id"`
	ActorKind    string `json:"actor_kind"`
	AuthorizedBy string `json:"authorized_by,omitempty"`
}
