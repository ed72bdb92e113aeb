package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/projection"
)

// HeartbeatWrite is an accepted-so-far heartbeat: every check that needs no write has passed
// and every value is valid, so no statement of it can fail on bad input.
type HeartbeatWrite struct {
	TenantID     string
	AgentID      string
	AssetID      string
	PrincipalID  string
	HeartbeatID  string
	RequestHash  string
	ReceivedAt   time.Time
	Hostname     *string // identity refresh, where given
	AgentVersion *string
	Payload      []byte                // the asset.telemetry.received payload (JSON of Telemetry)
	Telemetry    *projection.Telemetry // the same, decoded, for the projector
}

// HeartbeatOutcome says what became of a HeartbeatWrite.
type HeartbeatOutcome struct {
	// Duplicate: this heartbeat_id was accepted before with the same content; nothing written.
	Duplicate bool
	// Conflict: this heartbeat_id was accepted before with other content; nothing written.
	Conflict bool
	// Refused: the identity left ENROLLED/ACTIVE after it was checked; Status says where to.
	Refused bool
	Status  domain.AgentStatus
	// ReceivedAt is when the heartbeat (or, for a duplicate, the original) was received.
	ReceivedAt time.Time
	Discovered bool
}

// ActivityResolution is how far an ACTIVE identity's activity_at (the indexed clock the stale
// sweeper scans) may lag its last accepted heartbeat. last_seen_at is always exact, and the
// sweeper checks it too, so the lag never makes an identity stale early.
const ActivityResolution = time.Minute

type heartbeatStatements struct {
	insertEvent, selectHash, touchIdentity, refreshIdentity, activateIdentity, deleteEvent, selectStatus, insertDiscovered string
	// oneStatement is the whole write of one heartbeat as one PostgreSQL statement ("" on SQLite).
	oneStatement string
}

// pgHeartbeat is a whole heartbeat as one PostgreSQL statement, so that the committer can send
// a batch of them in one round trip (runPipeline). It locks the identity first and writes only
// if it is ENROLLED or ACTIVE: a revocation committed meanwhile is seen by the lock, and one
// still running makes this statement wait for it. Then data-modifying WITH clauses chain the
// event (its unique key settles repeats: nothing else is written), the identity, the projection
// (the projector's own upsert as INSERT ... SELECT ... FROM ident) and the discovery event.
// The counts it returns tell the caller which case it was; repeats and refusals are answered
// by reads after the commit (pgFollowUp). PostgreSQL updates the identity in place, without
// touching its eight indexes (a HOT update), when no indexed value changes: status mostly
// stays ACTIVE, and activity_at moves once per ActivityResolution.
var pgHeartbeat = `WITH live AS (
  SELECT agent_id FROM agent_identities
  WHERE agent_id = ? AND tenant_id = ? AND status IN ('ENROLLED', 'ACTIVE')
  FOR UPDATE
), ev AS (
  INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload, heartbeat_id, request_hash)
  SELECT ?, ?, 'asset.telemetry.received', ?, ?, ?, ?, ?, ?, ? FROM live
  ON CONFLICT (agent_id, heartbeat_id) WHERE heartbeat_id IS NOT NULL DO NOTHING
  RETURNING id
), ident AS (
  UPDATE agent_identities SET status = 'ACTIVE', last_seen_at = ?,
    activity_at = CASE WHEN activity_at < ? THEN ? ELSE activity_at END,
    hostname = COALESCE(?, hostname), agent_version = COALESCE(?, agent_version)
  WHERE agent_id = ? AND tenant_id = ? AND status IN ('ENROLLED', 'ACTIVE') AND EXISTS (SELECT 1 FROM ev)
  RETURNING agent_id
), asset AS (
` + projection.TelemetryUpsertFrom("ident") + `
), disc AS (
  INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload)
  SELECT ?, ?, 'asset.discovered', ?, ?, ?, ?, ? FROM asset WHERE heartbeat_count = 1
  RETURNING id
)
SELECT (SELECT count(*) FROM live), (SELECT count(*) FROM ev), (SELECT count(*) FROM ident),
  COALESCE((SELECT heartbeat_count FROM asset), 0)`

func newHeartbeatStatements(d Dialect, rebind func(string) string) *heartbeatStatements {
	h := &heartbeatStatements{
		insertEvent: rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at,
  payload, heartbeat_id, request_hash) VALUES (?, ?, 'asset.telemetry.received', ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, heartbeat_id) WHERE heartbeat_id IS NOT NULL DO NOTHING`),
		selectHash: rebind(`SELECT request_hash, occurred_at FROM events WHERE agent_id = ? AND heartbeat_id = ?`),
		// The identity's update is guarded by its status, so a revocation that raced the check
		// wins. SQLite rewrites every index on an assigned column, so the common case assigns
		// only unindexed ones: an ACTIVE identity keeps its status, and its indexed activity_at
		// (the sweeper's clock) moves only when it is ActivityResolution old. activateIdentity
		// is the first heartbeat after enrollment or reactivation.
		touchIdentity: rebind(`UPDATE agent_identities SET last_seen_at = ?,
  hostname = COALESCE(?, hostname), agent_version = COALESCE(?, agent_version)
WHERE agent_id = ? AND tenant_id = ? AND status = 'ACTIVE' AND activity_at >= ?`),
		refreshIdentity: rebind(`UPDATE agent_identities SET last_seen_at = ?, activity_at = ?,
  hostname = COALESCE(?, hostname), agent_version = COALESCE(?, agent_version)
WHERE agent_id = ? AND tenant_id = ? AND status = 'ACTIVE'`),
		activateIdentity: rebind(`UPDATE agent_identities SET status = 'ACTIVE', last_seen_at = ?, activity_at = ?,
  hostname = COALESCE(?, hostname), agent_version = COALESCE(?, agent_version)
WHERE agent_id = ? AND tenant_id = ? AND status = 'ENROLLED'`),
		deleteEvent:  rebind(`DELETE FROM events WHERE tenant_id = ? AND id = ?`),
		selectStatus: rebind(`SELECT status FROM agent_identities WHERE agent_id = ? AND tenant_id = ?`),
		insertDiscovered: rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at,
  payload) VALUES (?, ?, 'asset.discovered', ?, ?, ?, ?, ?)`),
	}
	if d == Postgres {
		h.oneStatement = rebind(pgHeartbeat)
	}
	return h
}

// applyHeartbeat writes one heartbeat inside tx on SQLite (PostgreSQL runs pgHeartbeat): the
// event first (its unique key settles duplicates without writing anything else), then the
// identity, guarded by its status so a revocation that raced the check still wins, then the
// projection. It returns an error only for a database failure, which aborts the transaction.
func (s *Store) applyHeartbeat(ctx context.Context, tx *preparedTx, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	st := s.hb
	at := Micros(w.ReceivedAt)
	// Allocated before the telemetry event's id so that, in id order, discovery comes first.
	discoveredID := ids.New()
	eventID := ids.New()
	res, err := tx.ExecContext(ctx, st.insertEvent, eventID, w.TenantID, w.AssetID, w.AgentID, w.PrincipalID, at,
		string(w.Payload), w.HeartbeatID, w.RequestHash)
	if err != nil {
		return HeartbeatOutcome{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return HeartbeatOutcome{}, err
	} else if n == 0 {
		return s.repeated(ctx, tx, w)
	}

	updates := [...]struct {
		stmt string
		args []any
	}{
		{st.touchIdentity, []any{at, w.Hostname, w.AgentVersion, w.AgentID, w.TenantID, at - ActivityResolution.Microseconds()}},
		{st.refreshIdentity, []any{at, at, w.Hostname, w.AgentVersion, w.AgentID, w.TenantID}},
		{st.activateIdentity, []any{at, at, w.Hostname, w.AgentVersion, w.AgentID, w.TenantID}},
	}
	updated := false
	for _, u := range updates {
		res, err = tx.ExecContext(ctx, u.stmt, u.args...)
		if err != nil {
			return HeartbeatOutcome{}, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return HeartbeatOutcome{}, err
		}
		if updated = n == 1; updated {
			break
		}
	}
	if !updated {
		return s.refused(ctx, tx, w, eventID)
	}

	discovered, err := s.proj.ApplyTelemetry(ctx, tx, w.TenantID, w.AssetID, w.AgentID, at, w.Telemetry)
	if err != nil {
		return HeartbeatOutcome{}, err
	}
	out := HeartbeatOutcome{ReceivedAt: w.ReceivedAt, Discovered: discovered}
	if out.Discovered {
		if _, err := tx.ExecContext(ctx, st.insertDiscovered, discoveredID, w.TenantID, w.AssetID, w.AgentID,
			w.PrincipalID, at, string(w.Payload)); err != nil {
			return HeartbeatOutcome{}, err
		}
	}
	return out, nil
}

// pgWrite is one heartbeat as pgHeartbeat's arguments and the row it returns.
type pgWrite struct {
	args                           []any
	live, inserted, updated, count int64
}

func (s *Store) newPGWrite(w *HeartbeatWrite) (*pgWrite, error) {
	at := Micros(w.ReceivedAt)
	discoveredID, eventID := ids.New(), ids.New() // in id order, discovery comes first
	asset, err := projection.TelemetryArgs(w.TenantID, w.AssetID, w.AgentID, at, w.Telemetry)
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, 26+len(asset))
	args = append(args, w.AgentID, w.TenantID,
		eventID, w.TenantID, w.AssetID, w.AgentID, w.PrincipalID, at, string(w.Payload), w.HeartbeatID, w.RequestHash,
		at, at-ActivityResolution.Microseconds(), at, w.Hostname, w.AgentVersion, w.AgentID, w.TenantID)
	args = append(args, asset...)
	args = append(args, discoveredID, w.TenantID, w.AssetID, w.AgentID, w.PrincipalID, at, string(w.Payload))
	return &pgWrite{args: args}, nil
}

func (p *pgWrite) dest() []any { return []any{&p.live, &p.inserted, &p.updated, &p.count} }

// pgFollowUp turns pgHeartbeat's counts into an outcome, after the commit: a repeat or a
// refusal wrote nothing, and what it needs to know (the stored hash, the identity's status)
// is read afresh. retry says the identity can submit after all (it was reactivated between
// the statement and this read), so the heartbeat should be written again.
func (s *Store) pgFollowUp(ctx context.Context, w *HeartbeatWrite, p *pgWrite) (out HeartbeatOutcome, retry bool, err error) {
	switch {
	case p.live == 0:
		var status string
		if err := s.W.DB.QueryRowContext(ctx, s.hb.selectStatus, w.AgentID, w.TenantID).Scan(&status); err != nil {
			return out, false, err
		}
		if domain.AgentStatus(status).CanSubmit() {
			return out, true, nil
		}
		return HeartbeatOutcome{Refused: true, Status: domain.AgentStatus(status)}, false, nil
	case p.inserted == 0:
		out, err = s.repeated(ctx, s.W.DB, w)
		return out, false, err
	case p.updated == 0: // cannot happen while the identity is locked; never answer it as accepted
		return out, false, fmt.Errorf("heartbeat %s: event stored but identity not updated", w.AgentID)
	}
	return HeartbeatOutcome{ReceivedAt: w.ReceivedAt, Discovered: p.count == 1}, false, nil
}

// rowQuerier is a transaction or a pool.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// repeated answers a heartbeat whose (agent_id, heartbeat_id) was already stored: a duplicate
// or a conflict, unless the identity may no longer submit.
func (s *Store) repeated(ctx context.Context, tx rowQuerier, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	var hash string
	var occurred int64
	if err := tx.QueryRowContext(ctx, s.hb.selectHash, w.AgentID, w.HeartbeatID).Scan(&hash, &occurred); err != nil {
		return HeartbeatOutcome{}, err
	}
	// The identity's status outranks idempotency (CONTRACT §4's order), and the caller's
	// view of it may come from a cache: ask the database.
	var status string
	if err := tx.QueryRowContext(ctx, s.hb.selectStatus, w.AgentID, w.TenantID).Scan(&status); err != nil {
		return HeartbeatOutcome{}, err
	}
	if !domain.AgentStatus(status).CanSubmit() {
		return HeartbeatOutcome{Refused: true, Status: domain.AgentStatus(status)}, nil
	}
	if hash == w.RequestHash {
		return HeartbeatOutcome{Duplicate: true, ReceivedAt: FromMicros(occurred)}, nil
	}
	return HeartbeatOutcome{Conflict: true}, nil
}

// refused takes back the event of a heartbeat whose identity was revoked or went stale since
// it was checked, and says why.
func (s *Store) refused(ctx context.Context, tx *preparedTx, w *HeartbeatWrite, eventID string) (HeartbeatOutcome, error) {
	if _, err := tx.ExecContext(ctx, s.hb.deleteEvent, w.TenantID, eventID); err != nil {
		return HeartbeatOutcome{}, err
	}
	var status string
	if err := tx.QueryRowContext(ctx, s.hb.selectStatus, w.AgentID, w.TenantID).Scan(&status); err != nil {
		return HeartbeatOutcome{}, err
	}
	return HeartbeatOutcome{Refused: true, Status: domain.AgentStatus(status)}, nil
}

// all lists the statements a transaction runs, for preparing them once. On PostgreSQL that is
// pgHeartbeat alone (in a batch that also holds enrollments; a pipelined batch and the reads
// after it go through pgx's own statement cache); the others are SQLite's.
func (h *heartbeatStatements) all() []string {
	if h.oneStatement != "" {
		return []string{h.oneStatement}
	}
	return []string{h.insertEvent, h.selectHash, h.touchIdentity, h.refreshIdentity, h.activateIdentity, h.deleteEvent, h.selectStatus, h.insertDiscovered}
}

// WriteHeartbeat queues w for the next group commit and waits for its outcome.
func (s *Store) WriteHeartbeat(ctx context.Context, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	if s.Dialect == Postgres {
		return s.writeHeartbeatPG(ctx, w)
	}
	var out HeartbeatOutcome
	err := s.inGroupCommit(ctx, &writeJob{key: w.AgentID, apply: func(ctx context.Context, tx bun.Tx, ptx *preparedTx) error {
		o, err := s.applyHeartbeat(ctx, ptx, w)
		if err != nil {
			return fmt.Errorf("heartbeat %s: %w", w.AgentID, err)
		}
		out = o
		return nil
	}})
	return out, err
}

// writeHeartbeatPG queues w as one pgHeartbeat statement and interprets its counts.
func (s *Store) writeHeartbeatPG(ctx context.Context, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	for attempt := 0; ; attempt++ {
		p, err := s.newPGWrite(w)
		if err != nil {
			return HeartbeatOutcome{}, err
		}
		job := &writeJob{key: w.AgentID, pipelined: &pipelinedStatement{query: s.hb.oneStatement, args: p.args, dest: p.dest()}}
		if err := s.inGroupCommit(ctx, job); err != nil {
			return HeartbeatOutcome{}, err
		}
		out, retry, err := s.pgFollowUp(ctx, w, p)
		if err != nil {
			return HeartbeatOutcome{}, mapErr(err)
		}
		if !retry {
			return out, nil
		}
		if attempt == 2 {
			return HeartbeatOutcome{}, fmt.Errorf("heartbeat %s: identity status keeps changing", w.AgentID)
		}
	}
}
