package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/clones"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
)

// Clone detection's storage: an identity's remembered machine fingerprints
// (identity_fingerprints) and its open conflict (identity_conflicts). Only the heartbeat's
// slow path touches them: two machines sharing a credential alternate boot times and MAC
// sets, so each of their heartbeats misses the fast path. What counts as a conflict, and
// whether to refuse, is the clones package's to say.

const (
	fpColumns   = `id, machine_id, boot_time, mac_addresses, first_seen_at, last_seen_at, first_sent_at, last_sent_at, state`
	sqlFPSelect = `SELECT ` + fpColumns + `, (SELECT COUNT(*) FROM identity_conflicts WHERE agent_ref = ?)
  FROM identity_fingerprints WHERE agent_ref = ?`
	sqlFPLiveness = `SELECT boot_time, last_seen_at, last_sent_at FROM asset_liveness WHERE asset_ref = ? AND agent_ref = ?`
	sqlFPInsert   = `INSERT INTO identity_fingerprints (` + fpColumns + `, agent_ref, fp_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlFPUpdate   = `UPDATE identity_fingerprints SET mac_addresses = ?, fp_hash = ?, last_seen_at = ?, last_sent_at = ?, state = ?
  WHERE id = ?`
	sqlFPDelete        = `DELETE FROM identity_fingerprints WHERE id = ?`
	sqlConflictInsert  = `INSERT INTO identity_conflicts (agent_ref, tenant_id, detected_at) VALUES (?, ?, ?)`
	conflictOpenFilter = `EXISTS (SELECT 1 FROM identity_conflicts AS c WHERE c.agent_ref = i.ref) AND i.status <> 'REVOKED'`
)

// cloneCheck is what the slow path learned about a heartbeat's machine before writing it.
type cloneCheck struct {
	d       clones.Decision
	flagged bool
}

// checkClones runs before anything of the heartbeat is written: it reads the identity's
// fingerprints and asks the policy. refuse means answer identity_conflict; what must still be
// written then (a flag raised by this very heartbeat) has been.
func (s *Store) checkClones(ctx context.Context, tx *preparedTx, w *HeartbeatWrite) (c *cloneCheck, refuse bool, err error) {
	boot := w.Report.BootTime
	if boot == nil {
		return nil, false, nil // no uptime, no fingerprint: nothing to compare
	}
	id := w.Identity
	rows, err := tx.QueryContext(ctx, s.Rebind(sqlFPSelect), id.Ref, id.Ref)
	if err != nil {
		return nil, false, err
	}
	var history []clones.Fingerprint
	var open int64
	for rows.Next() {
		var f clones.Fingerprint
		var macs, state string
		if err := rows.Scan(&f.ID, &f.MachineID, &f.BootTime, &macs, &f.FirstSeen, &f.LastSeen, &f.FirstSent, &f.LastSent,
			&state, &open); err != nil {
			rows.Close()
			return nil, false, err
		}
		if err := json.Unmarshal([]byte(macs), &f.MACs); err != nil {
			rows.Close()
			return nil, false, err
		}
		f.State = clones.State(state)
		history = append(history, f)
	}
	if err := rows.Close(); err != nil {
		return nil, false, err
	}
	var lv *clones.Liveness
	if len(history) > 0 {
		var b, seen, sent sql.NullInt64
		err := tx.QueryRowContext(ctx, s.Rebind(sqlFPLiveness), id.AssetRef, id.Ref).Scan(&b, &seen, &sent)
		switch {
		case err == nil && b.Valid && sent.Valid:
			lv = &clones.Liveness{BootTime: b.Int64, LastSeen: seen.Int64, LastSent: sent.Int64}
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return nil, false, err
		}
	}
	var macs []string
	if m := w.Report.MACAddresses; m != nil {
		macs = *m
	}
	sight := clones.Sighting{MachineID: id.MachineID, BootTime: *boot, MACs: clones.SortedMACs(macs),
		Received: Micros(w.ReceivedAt), Sent: w.sentAt()}
	c = &cloneCheck{d: clones.Decide(w.OnConflict, history, open > 0, sight, lv, ids.New), flagged: open > 0}
	if !c.d.Refuse {
		return c, false, nil
	}
	if c.d.Detected {
		// Raised by a refused heartbeat: the flag is kept, and the asset's liveness let go so
		// that the refused machine's next heartbeat cannot take the fast path either.
		if err := s.writeClones(ctx, tx, w, c); err != nil {
			return nil, false, err
		}
		if _, err := tx.ExecContext(ctx, s.Rebind(`UPDATE asset_liveness SET agent_ref = NULL WHERE asset_ref = ? AND agent_ref = ?`),
			id.AssetRef, id.Ref); err != nil {
			return nil, false, err
		}
	}
	return c, true, nil
}

// writeClones writes what checkClones decided, once the heartbeat is accepted.
func (s *Store) writeClones(ctx context.Context, tx *preparedTx, w *HeartbeatWrite, c *cloneCheck) error {
	if c == nil {
		return nil
	}
	id := w.Identity
	for i := range c.d.History {
		f := &c.d.History[i]
		var err error
		switch {
		case f.New():
			_, err = tx.ExecContext(ctx, s.Rebind(sqlFPInsert), f.ID, f.MachineID, f.BootTime, string(mustJSON(f.MACs)),
				f.FirstSeen, f.LastSeen, f.FirstSent, f.LastSent, string(f.State), id.Ref, clones.Key(f.MachineID, f.MACs))
		case f.Evicted():
			_, err = tx.ExecContext(ctx, s.Rebind(sqlFPDelete), f.ID)
		case f.Changed():
			_, err = tx.ExecContext(ctx, s.Rebind(sqlFPUpdate), string(mustJSON(f.MACs)), clones.Key(f.MachineID, f.MACs),
				f.LastSeen, f.LastSent, string(f.State), f.ID)
		}
		if err != nil {
			return err
		}
	}
	if !c.d.Detected || c.flagged {
		return nil
	}
	at := Micros(w.ReceivedAt)
	if _, err := tx.ExecContext(ctx, s.Rebind(sqlConflictInsert), id.Ref, id.TenantID, at); err != nil {
		return err
	}
	fps := make([]Fingerprint, len(c.d.Conflicting))
	for i, f := range c.d.Conflicting {
		fps[i] = fingerprintOf(f)
	}
	payload := mustJSON(struct {
		MachineID    *string       `json:"machine_id,omitempty"`
		Fingerprints []Fingerprint `json:"fingerprints"`
	}{id.MachineID, fps})
	_, err := tx.ExecContext(ctx, s.hb.insertEvent, ids.At(w.ReceivedAt), id.TenantID, domain.EventAgentConflict, id.AssetID,
		id.AgentID, w.PrincipalID, at, string(payload))
	return err
}

// Fingerprint is a machine an identity was seen from, as the API shows it.
type Fingerprint struct {
	ID           string   `json:"id"`
	MachineID    *string  `json:"machine_id,omitempty"`
	BootTime     string   `json:"boot_time"`
	MACAddresses []string `json:"mac_addresses"`
	FirstSeenAt  string   `json:"first_seen_at"`
	LastSeenAt   string   `json:"last_seen_at"`
}

func fingerprintOf(f clones.Fingerprint) Fingerprint {
	macs := f.MACs
	if macs == nil {
		macs = []string{}
	}
	return Fingerprint{ID: f.ID, MachineID: f.MachineID, BootTime: formatMicros(f.BootTime), MACAddresses: macs,
		FirstSeenAt: formatMicros(f.FirstSeen), LastSeenAt: formatMicros(f.LastSeen)}
}

func formatMicros(us int64) string { return FromMicros(us).Format("2006-01-02T15:04:05.999999Z07:00") }

// Conflict is an identity's open conflict.
type Conflict struct {
	AgentID      string
	DetectedAt   int64
	Fingerprints []clones.Fingerprint // oldest first
}

type fingerprintRow struct {
	bun.BaseModel `bun:"table:identity_fingerprints,alias:f"`
	ID            string  `bun:"id,pk"`
	AgentRef      int64   `bun:"agent_ref"`
	MachineID     *string `bun:"machine_id"`
	BootTime      int64   `bun:"boot_time"`
	MACAddresses  string  `bun:"mac_addresses"`
	FirstSeenAt   int64   `bun:"first_seen_at"`
	LastSeenAt    int64   `bun:"last_seen_at"`
	State         string  `bun:"state"`
}

type conflictRow struct {
	bun.BaseModel `bun:"table:identity_conflicts,alias:c"`
	AgentRef      int64  `bun:"agent_ref,pk"`
	TenantID      string `bun:"tenant_id"`
	DetectedAt    int64  `bun:"detected_at"`
}

// ConflictsByAgentID loads the open conflicts of the tenant's identities among agentIDs (a
// page's worth: two statements however many).
func (s *Store) ConflictsByAgentID(ctx context.Context, tenantID string, agentIDs []string) ([]*Conflict, error) {
	var open []struct {
		AgentID    string `bun:"agent_id"`
		AgentRef   int64  `bun:"agent_ref"`
		DetectedAt int64  `bun:"detected_at"`
	}
	if err := s.R.NewSelect().TableExpr("identity_conflicts AS c").Join("JOIN agent_identities AS i ON i.ref = c.agent_ref").
		ColumnExpr("i.agent_id, c.agent_ref, c.detected_at").Where("i.tenant_id = ? AND i.agent_id IN (?)", tenantID, bun.In(agentIDs)).
		Scan(ctx, &open); err != nil || len(open) == 0 {
		return nil, mapErr(err)
	}
	byRef := make(map[int64]*Conflict, len(open))
	refs := make([]int64, 0, len(open))
	out := make([]*Conflict, 0, len(open))
	for _, o := range open {
		c := &Conflict{AgentID: o.AgentID, DetectedAt: o.DetectedAt}
		byRef[o.AgentRef], refs, out = c, append(refs, o.AgentRef), append(out, c)
	}
	var rows []fingerprintRow
	if err := s.R.NewSelect().Model(&rows).Where("f.agent_ref IN (?) AND f.state = ?", bun.In(refs), string(clones.StateConflict)).
		Order("f.first_seen_at", "f.id").Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	for _, r := range rows {
		f, err := r.fingerprint()
		if err != nil {
			return nil, err
		}
		byRef[r.AgentRef].Fingerprints = append(byRef[r.AgentRef].Fingerprints, f)
	}
	return out, nil
}

func (r *fingerprintRow) fingerprint() (clones.Fingerprint, error) {
	f := clones.Fingerprint{ID: r.ID, MachineID: r.MachineID, BootTime: r.BootTime, FirstSeen: r.FirstSeenAt,
		LastSeen: r.LastSeenAt, State: clones.State(r.State)}
	return f, json.Unmarshal([]byte(r.MACAddresses), &f.MACs)
}

func (s *Store) identityConflict(ctx context.Context, db bun.IDB, agentRef int64) (*Conflict, error) {
	var c conflictRow
	err := db.NewSelect().Model(&c).Where("c.agent_ref = ?", agentRef).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr(err)
	}
	var rows []fingerprintRow
	if err := db.NewSelect().Model(&rows).Where("f.agent_ref = ? AND f.state = ?", agentRef, string(clones.StateConflict)).
		Order("f.first_seen_at", "f.id").Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := &Conflict{DetectedAt: c.DetectedAt}
	for _, r := range rows {
		f, err := r.fingerprint()
		if err != nil {
			return nil, err
		}
		out.Fingerprints = append(out.Fingerprints, f)
	}
	return out, nil
}

// applyConflictFilter narrows an identity listing to the identities with (or without) an
// open conflict; a revoked identity has none to review.
func applyConflictFilter(q *bun.SelectQuery, conflict *bool) *bun.SelectQuery {
	switch {
	case conflict == nil:
		return q
	case *conflict:
		return q.Where(conflictOpenFilter)
	}
	return q.Where("NOT (" + conflictOpenFilter + ")")
}

// CountConflicts counts the tenant's identities (optionally of one site) with an open conflict.
func (s *Store) CountConflicts(ctx context.Context, tenantID string, siteID *string) (int, error) {
	q := s.R.NewSelect().Model((*identityRow)(nil)).Where("i.tenant_id = ?", tenantID)
	if siteID != nil {
		q = q.Where("i.site_id = ?", *siteID)
	}
	yes := true
	n, err := applyConflictFilter(q, &yes).Count(ctx)
	return int(n), mapErr(err)
}

// ErrNoConflict: the identity has no open conflict; ErrNotConflicting: keep is not one of its
// machines.
var (
	ErrNoConflict     = errors.New("store: no open conflict")
	ErrNotConflicting = errors.New("store: not a fingerprint of the conflict")
)

// ResolveConflict clears an identity's open conflict, keeping the machine of fingerprint
// keep: the conflict's other fingerprints are refused from now on. It appends ev (its payload
// is filled in) in the same transaction.
func (s *Store) ResolveConflict(ctx context.Context, tenantID, agentID, keep string, ev *domain.Event) (*domain.AgentIdentity, error) {
	var out *domain.AgentIdentity
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		id, err := s.agentIdentity(ctx, tx, tenantID, agentID)
		if err != nil {
			return err
		}
		ref := id.Ref
		c, err := s.identityConflict(ctx, tx, ref)
		if err != nil {
			return err
		}
		if c == nil {
			return ErrNoConflict
		}
		var kept *clones.Fingerprint
		var refused []Fingerprint
		for i := range c.Fingerprints {
			if c.Fingerprints[i].ID == keep {
				kept = &c.Fingerprints[i]
			} else {
				refused = append(refused, fingerprintOf(c.Fingerprints[i]))
			}
		}
		if kept == nil {
			return ErrNotConflicting
		}
		if _, err := tx.NewUpdate().Model((*fingerprintRow)(nil)).Set("state = ?", string(clones.StateRefused)).
			Where("agent_ref = ? AND state = ? AND id <> ?", ref, string(clones.StateConflict), keep).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*fingerprintRow)(nil)).Set("state = ?", string(clones.StateNormal)).
			Where("id = ?", keep).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*conflictRow)(nil)).Where("agent_ref = ?", ref).Exec(ctx); err != nil {
			return err
		}
		// Whichever machine beat last may hold the fast path: let go, so the next heartbeat of
		// each goes through the check.
		if err := releaseLiveness(ctx, tx, tenantID, agentID); err != nil {
			return err
		}
		ev.Payload = mustJSON(struct {
			Kept    Fingerprint   `json:"kept"`
			Refused []Fingerprint `json:"refused"`
		}{fingerprintOf(*kept), refused})
		ev.AssetID = &id.AssetID
		if err := appendEvent(ctx, tx, ev); err != nil {
			return err
		}
		out, err = s.agentIdentity(ctx, tx, tenantID, agentID)
		return err
	})
	return out, err
}
