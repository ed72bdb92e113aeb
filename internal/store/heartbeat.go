package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/clones"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/projection"
)

// HeartbeatWrite is an accepted-so-far heartbeat: every check that needs no write has passed
// and every value is valid, so no statement of it can fail on bad input.
type HeartbeatWrite struct {
	Identity    *domain.AgentIdentity // as the caller checked it (refs included)
	PrincipalID string
	Relayed     bool // sent by the identity's collector rather than the agent itself
	HeartbeatID string
	RequestHash [16]byte
	ReceivedAt  time.Time
	SentAt      *time.Time
	Report      *projection.Report
	ReportHash  int64 // Report.Hash()
	// OnConflict is the policy for an identity seen from two live machines (clone detection).
	OnConflict clones.Mode
}

// HeartbeatOutcome says what became of a HeartbeatWrite.
type HeartbeatOutcome struct {
	// Duplicate: this heartbeat_id was accepted before with the same content; nothing written.
	Duplicate bool
	// Conflict: this heartbeat_id was accepted before with other content; nothing written.
	Conflict bool
	// Refused: the identity cannot submit (revoked or stale since it was checked); Status says
	// what it is. Nothing was written, and nothing else is reported: a refusal outranks the
	// other outcomes.
	Refused bool
	Status  domain.AgentStatus
	// IdentityConflict: the heartbeat comes from a machine the clone policy refuses; nothing
	// of it was written.
	IdentityConflict bool
	// ReceivedAt is when the heartbeat (or, for a duplicate, the original) was received.
	ReceivedAt time.Time
	Discovered bool
	// InventoryChanged: the heartbeat changed the asset's inventory (an asset.inventory.changed
	// event was appended).
	InventoryChanged bool
}

// Two roads for a heartbeat. The fast path is the common case: the identity is the asset's
// current ACTIVE identity (asset_liveness.agent_ref) and the inventory report hashes the same
// as the last one, so the heartbeat appends one row to the log and bumps the narrow liveness
// row, and nothing else. Everything else (a first heartbeat, a changed inventory, a reboot, a
// repeat, a refusal) takes the slow path, which reads the identity and the asset and decides.
// A revocation, supersession or stale sweep clears agent_ref under the liveness row's lock,
// so an identity that may no longer submit can never take the fast path.
type heartbeatStatements struct {
	// SQLite: the fast path as two statements on the single writer.
	fastLiveness, insertLog string
	// PostgreSQL: the fast path as one statement, pipelined with the rest of its batch.
	pgFast string
	// The slow path.
	identity, insertLogOnce, selectHash, liveness, asset, insertAsset, updateAsset,
	insertLiveness, updateLiveness, freezeIdentity, activate, refreshIdentity, insertEvent string
	// Retention.
	pruneScan, pruneRange string
	lockLiveness          string
}

const (
	logColumns       = `tenant_ref, agent_ref, relayed, received_at, sent_at, heartbeat_id, request_hash`
	livenessFastCond = `asset_ref = ? AND agent_ref = ? AND inventory_hash = ? AND (? OR boot_time BETWEEN ? AND ?)`
)

// The asset's inventory columns (projection.Columns) as the statements that read and write
// them list them.
var (
	assetInvColumns = strings.Join(projection.Columns, ", ")
	assetInvSet     = strings.Join(projection.Columns, " = ?, ") + " = ?"
	assetInvValues  = strings.Repeat(", ?", len(projection.Columns))
)

func newHeartbeatStatements(d Dialect, rebind func(string) string) *heartbeatStatements {
	lock := ""
	if d == Postgres {
		lock = " FOR UPDATE"
	}
	h := &heartbeatStatements{
		fastLiveness: rebind(`UPDATE asset_liveness SET
  last_seen_at = CASE WHEN last_seen_at < ? THEN ? ELSE last_seen_at END,
  last_sent_at = CASE WHEN last_sent_at IS NULL OR last_sent_at < ? THEN ? ELSE last_sent_at END,
  heartbeat_count = heartbeat_count + 1
WHERE ` + livenessFastCond + `
  AND NOT EXISTS (SELECT 1 FROM heartbeats WHERE agent_ref = ? AND heartbeat_id = ?)`),
		insertLog: rebind(`INSERT INTO heartbeats (` + logColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		pgFast: rebind(`WITH ok AS (
  SELECT asset_ref FROM asset_liveness WHERE ` + livenessFastCond + ` FOR UPDATE
), log AS (
  INSERT INTO heartbeats (` + logColumns + `) SELECT ?, ?, ?, ?, ?, ?, ? FROM ok
  ON CONFLICT (agent_ref, heartbeat_id) DO NOTHING
  RETURNING seq
), lv AS (
  UPDATE asset_liveness SET last_seen_at = GREATEST(last_seen_at, ?),
    last_sent_at = GREATEST(last_sent_at, ?), heartbeat_count = heartbeat_count + 1
  WHERE asset_ref = ? AND EXISTS (SELECT 1 FROM log)
  RETURNING asset_ref
)
SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM log), (SELECT count(*) FROM lv)`),

		identity:      rebind(`SELECT status FROM agent_identities WHERE agent_id = ? AND tenant_id = ?` + lock),
		insertLogOnce: rebind(`INSERT INTO heartbeats (` + logColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_ref, heartbeat_id) DO NOTHING`),
		selectHash:    rebind(`SELECT request_hash, received_at FROM heartbeats WHERE agent_ref = ? AND heartbeat_id = ?`),
		liveness: rebind(`SELECT agent_ref, last_seen_at, last_sent_at, inventory_hash, boot_time FROM asset_liveness
  WHERE asset_ref = ?` + lock),
		asset: rebind(`SELECT ` + assetInvColumns + ` FROM assets WHERE ref = ? AND tenant_id = ?`),
		insertAsset: rebind(`INSERT INTO assets (id, ref, tenant_id, site_id, agent_id, first_seen_at, ` + assetInvColumns + `)
  VALUES (?, ?, ?, ?, ?, ?` + assetInvValues + `)`),
		updateAsset: rebind(`UPDATE assets SET ` + assetInvSet + ` WHERE ref = ? AND tenant_id = ?`),
		insertLiveness: rebind(`INSERT INTO asset_liveness (asset_ref, tenant_ref, site_ref, agent_ref, last_seen_at, last_sent_at,
  heartbeat_count, inventory_hash, boot_time) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)`),
		updateLiveness: rebind(`UPDATE asset_liveness SET agent_ref = ?, site_ref = ?, last_seen_at = ?, last_sent_at = ?,
  heartbeat_count = heartbeat_count + 1, inventory_hash = ?, boot_time = ? WHERE asset_ref = ?`),
		freezeIdentity: rebind(`UPDATE agent_identities SET last_seen_at = ? WHERE ref = ?`),
		activate: rebind(`UPDATE agent_identities SET status = 'ACTIVE', activity_at = ?
  WHERE agent_id = ? AND tenant_id = ? AND status = 'ENROLLED'`),
		refreshIdentity: rebind(`UPDATE agent_identities SET hostname = COALESCE(?, hostname), agent_version = COALESCE(?, agent_version)
  WHERE agent_id = ? AND tenant_id = ?`),
		insertEvent: rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		pruneScan:    rebind(`SELECT seq, received_at FROM heartbeats WHERE seq > ? ORDER BY seq LIMIT ?`),
		lockLiveness: rebind(`SELECT asset_ref FROM asset_liveness WHERE asset_ref = ?` + lock),
		pruneRange:   rebind(`DELETE FROM heartbeats WHERE seq > ? AND seq <= ? AND received_at < ?`),
	}
	return h
}

// all lists the statements a transaction runs, for preparing them once.
func (h *heartbeatStatements) all(d Dialect) []string {
	out := []string{h.identity, h.insertLogOnce, h.selectHash, h.liveness, h.asset, h.insertAsset, h.updateAsset,
		h.insertLiveness, h.updateLiveness, h.freezeIdentity, h.activate, h.refreshIdentity, h.insertEvent,
		h.pruneScan, h.pruneRange}
	if d == Postgres {
		return append(out, h.pgFast, h.lockLiveness)
	}
	return append(out, h.fastLiveness, h.insertLog)
}

// fastArgs are the arguments of livenessFastCond.
func (w *HeartbeatWrite) fastArgs() []any {
	noBoot, lo, hi := true, int64(0), int64(0)
	if b := w.Report.BootTime; b != nil {
		tol := projection.BootTolerance.Microseconds()
		noBoot, lo, hi = false, *b-tol, *b+tol
	}
	return []any{w.Identity.AssetRef, w.Identity.Ref, w.ReportHash, noBoot, lo, hi}
}

func (w *HeartbeatWrite) logArgs() []any {
	relayed := 0
	if w.Relayed {
		relayed = 1
	}
	return []any{w.Identity.TenantRef, w.Identity.Ref, relayed, Micros(w.ReceivedAt), optMicros(w.SentAt), w.HeartbeatID, w.RequestHash[:]}
}

// sentAt is the heartbeat's sent_at, or its receipt when it has none, for ordering reports.
func (w *HeartbeatWrite) sentAt() int64 {
	if w.SentAt != nil {
		return Micros(*w.SentAt)
	}
	return Micros(w.ReceivedAt)
}

// WriteHeartbeat queues w for the next group commit and waits for its outcome.
func (s *Store) WriteHeartbeat(ctx context.Context, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	key := assetKey(w.Identity.AssetRef)
	if s.Dialect == Postgres {
		var ok, inserted, updated int64
		args := append(w.fastArgs(), w.logArgs()...)
		args = append(args, Micros(w.ReceivedAt), w.sentAt(), w.Identity.AssetRef)
		job := &writeJob{key: key, pipelined: &pipelinedStatement{query: s.hb.pgFast, args: args,
			dest: []any{&ok, &inserted, &updated}}}
		if err := s.inGroupCommit(ctx, job); err != nil {
			return HeartbeatOutcome{}, err
		}
		switch {
		case ok == 1 && inserted == 1 && updated == 1:
			return HeartbeatOutcome{ReceivedAt: w.ReceivedAt}, nil
		case ok == 1 && inserted == 0: // a repeat; the identity may submit (it holds agent_ref)
			return s.repeated(ctx, s.W.DB, w)
		case ok == 1:
			return HeartbeatOutcome{}, fmt.Errorf("heartbeat %s: logged but liveness not updated", w.Identity.AgentID)
		}
		// Nothing was written: take the slow path.
	}
	var out HeartbeatOutcome
	err := s.inGroupCommit(ctx, &writeJob{key: key, apply: func(ctx context.Context, _ bun.Tx, tx *preparedTx) error {
		o, err := s.applyHeartbeat(ctx, tx, w)
		if err != nil {
			return fmt.Errorf("heartbeat %s: %w", w.Identity.AgentID, err)
		}
		out = o
		return nil
	}})
	return out, err
}

// assetKey orders a batch's writes by asset (PostgreSQL's lock order; SQLite's page order).
func assetKey(ref int64) string {
	var b [20]byte
	d := strconv.AppendInt(b[:0], ref, 10)
	return "a" + strings.Repeat("0", 19-len(d)) + string(d) // zero-padded: string order is number order
}

// applyHeartbeat writes one heartbeat inside tx: the fast path where it applies (SQLite; on
// PostgreSQL the caller already tried it), else the slow path. It returns an error only for a
// database failure, which aborts the transaction.
func (s *Store) applyHeartbeat(ctx context.Context, tx *preparedTx, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	st, id, at := s.hb, w.Identity, Micros(w.ReceivedAt)
	if s.Dialect != Postgres {
		res, err := tx.ExecContext(ctx, st.fastLiveness, append([]any{at, at, w.sentAt(), w.sentAt()},
			append(w.fastArgs(), id.Ref, w.HeartbeatID)...)...)
		if err != nil {
			return HeartbeatOutcome{}, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return HeartbeatOutcome{}, err
		} else if n == 1 {
			if _, err := tx.ExecContext(ctx, st.insertLog, w.logArgs()...); err != nil {
				return HeartbeatOutcome{}, err
			}
			return HeartbeatOutcome{ReceivedAt: w.ReceivedAt}, nil
		}
	}

	// One lock order on PostgreSQL: the asset's liveness row, then the identity. The fast path
	// locks the liveness row alone, and a batch may hold a fast job and a slow one of the same
	// asset, so taking the identity first here would deadlock with it.
	if s.Dialect == Postgres {
		var ref int64
		if err := tx.QueryRowContext(ctx, st.lockLiveness, id.AssetRef).Scan(&ref); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return HeartbeatOutcome{}, err
		}
	}
	// An identity that may not submit writes nothing, and the caller's view of its status may
	// come from a cache: ask the database, locking the row on PostgreSQL so that a revocation
	// waits for this heartbeat or this heartbeat sees it. Such a heartbeat is reported Refused
	// whether or not it repeats an earlier one; the service ranks the answers.
	var status string
	if err := tx.QueryRowContext(ctx, st.identity, id.AgentID, id.TenantID).Scan(&status); err != nil {
		return HeartbeatOutcome{}, err
	}
	if !domain.AgentStatus(status).CanSubmit() {
		return HeartbeatOutcome{Refused: true, Status: domain.AgentStatus(status)}, nil
	}
	clone, refuse, err := s.checkClones(ctx, tx, w) // conflicts.go
	if err != nil || refuse {
		return HeartbeatOutcome{IdentityConflict: refuse}, err
	}
	res, err := tx.ExecContext(ctx, st.insertLogOnce, w.logArgs()...)
	if err != nil {
		return HeartbeatOutcome{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return HeartbeatOutcome{}, err
	} else if n == 0 {
		return s.repeated(ctx, tx, w)
	}
	out := HeartbeatOutcome{ReceivedAt: w.ReceivedAt}
	if err := s.writeClones(ctx, tx, w, clone); err != nil {
		return out, err
	}
	if domain.AgentStatus(status) == domain.StatusEnrolled {
		if _, err := tx.ExecContext(ctx, st.activate, at, id.AgentID, id.TenantID); err != nil {
			return out, err
		}
	}
	if w.Report.Hostname != nil || w.Report.AgentVersion != nil {
		if _, err := tx.ExecContext(ctx, st.refreshIdentity, w.Report.Hostname, w.Report.AgentVersion, id.AgentID, id.TenantID); err != nil {
			return out, err
		}
	}
	return out, s.projectSlow(ctx, tx, w, &out)
}

// projectSlow applies a heartbeat to the asset and its liveness row: it creates the asset on
// its first heartbeat, records what an inventory report changed, and makes this identity the
// one that may take the fast path.
func (s *Store) projectSlow(ctx context.Context, tx *preparedTx, w *HeartbeatWrite, out *HeartbeatOutcome) error {
	st, id, at := s.hb, w.Identity, Micros(w.ReceivedAt)
	var lv struct {
		agentRef          sql.NullInt64
		lastSeen          int64
		lastSent          sql.NullInt64
		hash              int64
		boot              sql.NullInt64
		found, assetFound bool
	}
	err := tx.QueryRowContext(ctx, st.liveness, id.AssetRef).Scan(&lv.agentRef, &lv.lastSeen, &lv.lastSent, &lv.hash, &lv.boot)
	switch {
	case err == nil:
		lv.found = true
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	old, err := s.assetSnapshot(ctx, tx, id.TenantID, id.AssetRef)
	switch {
	case err == nil:
		lv.assetFound = true
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}

	payload := func(v any) string { return string(mustJSON(v)) }
	if !lv.assetFound {
		hostname := ""
		if id.Hostname != nil {
			hostname = *id.Hostname
		}
		snap := projection.New(hostname, w.Report)
		if snap.AgentVersion == nil {
			snap.AgentVersion = id.AgentVersion
		}
		if _, err := tx.ExecContext(ctx, st.insertAsset, snap.Values([]any{id.AssetID, id.AssetRef, id.TenantID, id.SiteID, id.AgentID, at})...); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, st.insertEvent, ids.At(w.ReceivedAt), id.TenantID, domain.EventAssetDiscovered, id.AssetID,
			id.AgentID, w.PrincipalID, at, payload(struct {
				HeartbeatID string `json:"heartbeat_id"`
				projection.Snapshot
			}{w.HeartbeatID, snap})); err != nil {
			return err
		}
		out.Discovered = true
	} else if !lv.found || !lv.lastSent.Valid || w.sentAt() >= lv.lastSent.Int64 {
		// Only a report at least as new as the last one applied may change the inventory: a
		// retried old heartbeat is recorded but never moves the inventory backwards.
		merged := old.Merge(w.Report)
		if changes := projection.Diff(&old, &merged); len(changes) > 0 {
			if _, err := tx.ExecContext(ctx, st.updateAsset, append(merged.Values(nil), id.AssetRef, id.TenantID)...); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, st.insertEvent, ids.At(w.ReceivedAt), id.TenantID, domain.EventInventoryChanged, id.AssetID,
				id.AgentID, w.PrincipalID, at, payload(projection.Changed{HeartbeatID: w.HeartbeatID, Changes: changes})); err != nil {
				return err
			}
			out.InventoryChanged = true
		}
	}

	boot := w.Report.BootTime
	if !lv.found {
		_, err := tx.ExecContext(ctx, st.insertLiveness, id.AssetRef, id.TenantRef, id.SiteRef, id.Ref, at, w.sentAt(), w.ReportHash, boot)
		return err
	}
	if lv.agentRef.Valid && lv.agentRef.Int64 != id.Ref {
		// Another identity of this machine held the row: its last heartbeat becomes its own.
		if _, err := tx.ExecContext(ctx, st.freezeIdentity, lv.lastSeen, lv.agentRef.Int64); err != nil {
			return err
		}
	}
	lastSeen, lastSent, hash := max(lv.lastSeen, at), w.sentAt(), w.ReportHash
	if lv.lastSent.Valid && lv.lastSent.Int64 > lastSent {
		lastSent, hash = lv.lastSent.Int64, lv.hash // an older report: the newer one stays the reference
		if lv.boot.Valid {
			boot = &lv.boot.Int64
		}
	} else if boot != nil && lv.boot.Valid && projection.SameBoot(&lv.boot.Int64, *boot) {
		boot = &lv.boot.Int64 // keep the first instant of this boot, so it never drifts
	} else if boot == nil && lv.boot.Valid {
		boot = &lv.boot.Int64
	}
	_, err = tx.ExecContext(ctx, st.updateLiveness, id.Ref, id.SiteRef, lastSeen, lastSent, hash, boot, id.AssetRef)
	return err
}

// repeated answers a heartbeat whose (agent, heartbeat_id) is already in the log: a duplicate
// or a conflict.
func (s *Store) repeated(ctx context.Context, q rowQuerier, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	var hash []byte
	var received int64
	if err := q.QueryRowContext(ctx, s.hb.selectHash, w.Identity.Ref, w.HeartbeatID).Scan(&hash, &received); err != nil {
		return HeartbeatOutcome{}, mapErr(err)
	}
	if string(hash) == string(w.RequestHash[:]) {
		return HeartbeatOutcome{Duplicate: true, ReceivedAt: FromMicros(received)}, nil
	}
	return HeartbeatOutcome{Conflict: true}, nil
}

// rowQuerier is a transaction or a pool.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// preparedQuerier is a transaction, plain or with prepared statements.
type preparedQuerier interface {
	rowQuerier
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// assetSnapshot reads an asset's inventory (sql.ErrNoRows if it has not appeared yet).
func (s *Store) assetSnapshot(ctx context.Context, q rowQuerier, tenantID string, assetRef int64) (projection.Snapshot, error) {
	var r projection.Row
	if err := q.QueryRowContext(ctx, s.hb.asset, assetRef, tenantID).Scan(r.Dest(nil)...); err != nil {
		return projection.Snapshot{}, err
	}
	snap, err := r.Snapshot()
	if err != nil {
		return snap, fmt.Errorf("asset inventory: %w", err)
	}
	return snap, nil
}

// telemetryPayload is the payload of a logged heartbeat's event: what identifies it. The
// inventory it carried is in the asset and, where it changed something, in an
// asset.inventory.changed event.
func telemetryPayload(heartbeatID string, sentAt *int64) json.RawMessage {
	p := struct {
		HeartbeatID string  `json:"heartbeat_id"`
		SentAt      *string `json:"sent_at,omitempty"`
	}{HeartbeatID: heartbeatID}
	if sentAt != nil {
		t := FromMicros(*sentAt).Format(time.RFC3339Nano)
		p.SentAt = &t
	}
	return mustJSON(p)
}
