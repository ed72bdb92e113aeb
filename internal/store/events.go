package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
)

type eventRow struct {
	bun.BaseModel `bun:"table:events"`
	ID            string  `bun:"id,pk"`
	TenantID      string  `bun:"tenant_id"`
	Type          string  `bun:"type"`
	AssetID       *string `bun:"asset_id"`
	AgentID       *string `bun:"agent_id"`
	ActorID       *string `bun:"actor_id"`
	OccurredAt    int64   `bun:"occurred_at"`
	Payload       string  `bun:"payload"`
	HeartbeatID   *string `bun:"heartbeat_id"`
	RequestHash   *string `bun:"request_hash"`
}

func (r *eventRow) toDomain() *domain.Event {
	return &domain.Event{ID: r.ID, TenantID: r.TenantID, Type: r.Type, AssetID: r.AssetID, AgentID: r.AgentID,
		ActorID: r.ActorID, OccurredAt: FromMicros(r.OccurredAt), Payload: json.RawMessage(r.Payload)}
}

// appendEvent inserts a lifecycle event inside tx.
func appendEvent(ctx context.Context, tx bun.IDB, e *domain.Event) error {
	payload := string(e.Payload)
	if payload == "" {
		payload = "{}"
	}
	_, err := tx.NewInsert().Model(&eventRow{ID: e.ID, TenantID: e.TenantID, Type: e.Type, AssetID: e.AssetID,
		AgentID: e.AgentID, ActorID: e.ActorID, OccurredAt: Micros(e.OccurredAt), Payload: payload}).Exec(ctx)
	return err
}

// EventFilter narrows an events listing.
type EventFilter struct {
	AssetID *string
	AgentID *string
	Type    *string
}

// Events live in two places: lifecycle, discovery and inventory-change events in the events
// table, and the asset.telemetry.received events as the heartbeat log. A listing reads both
// in the same order (ids.ForLog makes the log's ids sort with the others by time) and
// merges them.

func (f EventFilter) wantsLog() bool {
	return f.Type == nil || *f.Type == domain.EventTelemetryReceived
}

func (f EventFilter) wantsEvents() bool {
	return f.Type == nil || *f.Type != domain.EventTelemetryReceived
}

// apply adds the filter to an events-table query already scoped to tenantID. Every event that
// names an agent also names the agent's asset, so an agent's events are found through the
// asset index.
func (f EventFilter) apply(q *bun.SelectQuery, tenantID string) *bun.SelectQuery {
	if f.AssetID != nil {
		q = q.Where("asset_id = ?", *f.AssetID)
	}
	if f.AgentID != nil {
		q = q.Where("asset_id = (SELECT i.asset_id FROM agent_identities AS i WHERE i.tenant_id = ? AND i.agent_id = ?)",
			tenantID, *f.AgentID).
			Where("agent_id = ?", *f.AgentID)
	}
	if f.Type != nil {
		q = q.Where("type = ?", *f.Type)
	}
	return q
}

// applyLog adds the filter to a heartbeat-log query (alias h) scoped to the tenant. A filter
// by agent or asset reads the agent's rows through the idempotency index (agent_ref first),
// which SQLite is told to use: its planner would otherwise walk the tenant's time index.
func (s *Store) applyLog(q *bun.SelectQuery, tenantID string, f EventFilter) *bun.SelectQuery {
	switch {
	case f.AgentID != nil:
		q = q.Where("h.agent_ref = (SELECT ref FROM agent_identities WHERE tenant_id = ? AND agent_id = ?)", tenantID, *f.AgentID)
		if f.AssetID != nil {
			q = q.Where("h.agent_ref IN (SELECT ref FROM agent_identities WHERE tenant_id = ? AND asset_id = ?)", tenantID, *f.AssetID)
		}
	case f.AssetID != nil:
		q = q.Where("h.agent_ref IN (SELECT ref FROM agent_identities WHERE tenant_id = ? AND asset_id = ?)", tenantID, *f.AssetID)
	default:
		return q.TableExpr("heartbeats AS h").Where("h.tenant_ref = (SELECT ref FROM tenants WHERE id = ?)", tenantID)
	}
	table := "heartbeats AS h"
	if s.Dialect == SQLite {
		table += " INDEXED BY heartbeats_key"
	}
	return q.TableExpr(table).Where("h.tenant_ref = (SELECT ref FROM tenants WHERE id = ?)", tenantID)
}

type logEventRow struct {
	Seq         int64   `bun:"seq"`
	ReceivedAt  int64   `bun:"received_at"`
	SentAt      *int64  `bun:"sent_at"`
	HeartbeatID string  `bun:"heartbeat_id"`
	Relayed     int     `bun:"relayed"`
	AgentID     string  `bun:"agent_id"`
	AssetID     string  `bun:"asset_id"`
	Principal   string  `bun:"principal_id"`
	Collector   *string `bun:"collector_principal"`
}

func (r *logEventRow) toDomain(tenantID string) *domain.Event {
	actor := r.Principal
	if r.Relayed != 0 && r.Collector != nil {
		actor = *r.Collector
	}
	return &domain.Event{ID: ids.ForLog(r.ReceivedAt, r.Seq), TenantID: tenantID, Type: domain.EventTelemetryReceived,
		AssetID: &r.AssetID, AgentID: &r.AgentID, ActorID: &actor, OccurredAt: FromMicros(r.ReceivedAt),
		Payload: telemetryPayload(r.HeartbeatID, r.SentAt)}
}

// Events lists the tenant's events newest first, after the keyset position afterID (empty for
// the first page); it returns up to limit+1 rows so the caller can tell whether more exist.
func (s *Store) Events(ctx context.Context, tenantID string, f EventFilter, afterID string, limit int) ([]*domain.Event, error) {
	var out []*domain.Event
	if f.wantsEvents() {
		var rows []eventRow
		q := f.apply(s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID), tenantID)
		if afterID != "" {
			q = q.Where("id < ?", afterID)
		}
		if err := q.Order("id DESC").Limit(int64(limit) + 1).Scan(ctx); err != nil {
			return nil, mapErr(err)
		}
		for i := range rows {
			out = append(out, rows[i].toDomain())
		}
	}
	if f.wantsLog() {
		var rows []logEventRow
		q := s.applyLog(s.R.NewSelect(), tenantID, f).
			ColumnExpr("h.seq, h.received_at, h.sent_at, h.heartbeat_id, h.relayed, i.agent_id, i.asset_id, i.principal_id").
			ColumnExpr("(SELECT c.principal_id FROM collectors AS c WHERE c.id = i.collector_id) AS collector_principal").
			Join("JOIN agent_identities AS i ON i.ref = h.agent_ref")
		if afterID != "" {
			at, seq, ok := ids.LogBound(afterID)
			if !ok {
				return nil, fmt.Errorf("events: malformed position %q", afterID)
			}
			q = q.Where("(h.received_at < ? OR (h.received_at = ? AND h.seq < ?))", at, at, seq)
		}
		if err := q.OrderExpr("h.received_at DESC, h.seq DESC").Limit(int64(limit)+1).Scan(ctx, &rows); err != nil {
			return nil, mapErr(err)
		}
		for i := range rows {
			out = append(out, rows[i].toDomain(tenantID))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	if len(out) > limit+1 {
		out = out[:limit+1]
	}
	return out, nil
}

// CountEvents counts the tenant's events matching f, from indexes: the events table's and the
// heartbeat log's (the tenant's time index, or an agent's idempotency keys).
func (s *Store) CountEvents(ctx context.Context, tenantID string, f EventFilter) (int, error) {
	total := 0
	if f.wantsEvents() {
		n, err := f.apply(s.R.NewSelect().Model((*eventRow)(nil)).Where("tenant_id = ?", tenantID), tenantID).Count(ctx)
		if err != nil {
			return 0, mapErr(err)
		}
		total += int(n)
	}
	if f.wantsLog() {
		n, err := s.applyLog(s.R.NewSelect(), tenantID, f).Count(ctx)
		if err != nil {
			return 0, mapErr(err)
		}
		total += int(n)
	}
	return total, nil
}
