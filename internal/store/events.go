package store

import (
	"context"
	"encoding/json"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
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

// apply adds the filter to a query already scoped to tenantID. Every event that names an agent
// also names the agent's asset, so an agent's events are found through the asset index (an
// asset has few agents in its life), which also holds agent_id so that counting them reads only
// the index: events need no index of their own by agent, one random index write fewer per
// heartbeat.
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

// Events lists the tenant's events newest first, after the keyset position afterID (empty for
// the first page); it returns up to limit+1 rows so the caller can tell whether more exist.
func (s *Store) Events(ctx context.Context, tenantID string, f EventFilter, afterID string, limit int) ([]*domain.Event, error) {
	var rows []eventRow
	q := f.apply(s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID), tenantID)
	if afterID != "" {
		q = q.Where("id < ?", afterID)
	}
	if err := q.Order("id DESC").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Event, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CountEvents counts the tenant's events matching f, from the (tenant_id, ...) indexes.
func (s *Store) CountEvents(ctx context.Context, tenantID string, f EventFilter) (int, error) {
	n, err := f.apply(s.R.NewSelect().Model((*eventRow)(nil)).Where("tenant_id = ?", tenantID), tenantID).Count(ctx)
	return int(n), mapErr(err)
}
