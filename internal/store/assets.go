package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/projection"
)

type assetRow struct {
	bun.BaseModel  `bun:"table:assets"`
	ID             string   `bun:"id,pk"`
	TenantID       string   `bun:"tenant_id"`
	SiteID         string   `bun:"site_id"`
	AgentID        string   `bun:"agent_id"`
	Hostname       string   `bun:"hostname"`
	OSName         *string  `bun:"os_name"`
	OSVersion      *string  `bun:"os_version"`
	OSKernel       *string  `bun:"os_kernel"`
	OSArch         *string  `bun:"os_arch"`
	IPAddresses    string   `bun:"ip_addresses"`
	MACAddresses   string   `bun:"mac_addresses"`
	CPUCount       *int     `bun:"cpu_count"`
	MemoryBytes    *float64 `bun:"memory_bytes"`
	UptimeSeconds  *float64 `bun:"uptime_seconds"`
	Facts          string   `bun:"facts"`
	FirstSeenAt    int64    `bun:"first_seen_at"`
	LastSeenAt     int64    `bun:"last_seen_at"`
	HeartbeatCount int64    `bun:"heartbeat_count"`
}

func (r *assetRow) toDomain(onlineSince int64) *domain.Asset {
	a := &domain.Asset{ID: r.ID, TenantID: r.TenantID, SiteID: r.SiteID, AgentID: r.AgentID, Hostname: r.Hostname,
		CPUCount: r.CPUCount, MemoryBytes: r.MemoryBytes, UptimeSeconds: r.UptimeSeconds,
		FirstSeenAt: FromMicros(r.FirstSeenAt), LastSeenAt: FromMicros(r.LastSeenAt),
		HeartbeatCount: int(r.HeartbeatCount), Online: r.LastSeenAt > onlineSince}
	if r.OSName != nil || r.OSVersion != nil || r.OSKernel != nil || r.OSArch != nil {
		a.OS = &domain.OperatingSystem{Name: r.OSName, Version: r.OSVersion, Kernel: r.OSKernel, Arch: r.OSArch}
	}
	// These columns are only ever written by the projector from encoded values.
	_ = json.Unmarshal([]byte(r.IPAddresses), &a.IPAddresses)
	_ = json.Unmarshal([]byte(r.MACAddresses), &a.MACAddresses)
	_ = json.Unmarshal([]byte(r.Facts), &a.Facts)
	if a.IPAddresses == nil {
		a.IPAddresses = []string{}
	}
	if a.MACAddresses == nil {
		a.MACAddresses = []string{}
	}
	if a.Facts == nil {
		a.Facts = map[string]any{}
	}
	return a
}

// AssetFilter narrows an asset listing. OnlineSince is the unix-microsecond instant after
// which a heartbeat counts as online (now - --offline-after).
type AssetFilter struct {
	SiteID           *string
	Online           *bool
	HostnameContains *string
	OnlineSince      int64
}

func (f AssetFilter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	if f.SiteID != nil {
		q = q.Where("site_id = ?", *f.SiteID)
	}
	if f.Online != nil {
		if *f.Online {
			q = q.Where("last_seen_at > ?", f.OnlineSince)
		} else {
			q = q.Where("last_seen_at <= ?", f.OnlineSince)
		}
	}
	if f.HostnameContains != nil {
		// LIKE with the pattern characters escaped, so the input is matched literally.
		q = q.Where("LOWER(hostname) LIKE ? ESCAPE '\\'", "%"+escapeLike(strings.ToLower(*f.HostnameContains))+"%")
	}
	return q
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// Assets lists the tenant's assets by id after afterID, up to limit+1 rows.
func (s *Store) Assets(ctx context.Context, tenantID string, f AssetFilter, afterID string, limit int) ([]*domain.Asset, error) {
	var rows []assetRow
	q := f.apply(s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID))
	if afterID != "" {
		q = q.Where("id > ?", afterID)
	}
	if err := q.Order("id").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Asset, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain(f.OnlineSince)
	}
	return out, nil
}

// CountAssets counts the tenant's assets matching f.
func (s *Store) CountAssets(ctx context.Context, tenantID string, f AssetFilter) (int, error) {
	n, err := f.apply(s.R.NewSelect().Model((*assetRow)(nil)).Where("tenant_id = ?", tenantID)).Count(ctx)
	return int(n), mapErr(err)
}

// AssetsByID loads assets of one tenant by id.
func (s *Store) AssetsByID(ctx context.Context, tenantID string, ids []string, onlineSince int64) ([]*domain.Asset, error) {
	var rows []assetRow
	err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Asset, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain(onlineSince)
	}
	return out, nil
}

// Count is one group of an aggregate.
type Count struct {
	Key   *string `bun:"key"`
	Count int     `bun:"n"`
}

// FleetSummary is the aggregate counts behind dashboard tiles.
type FleetSummary struct {
	ByStatus       []Count
	TotalAssets    int
	Online         int
	ByOSName       []Count
	ByAgentVersion []Count
}

// FleetSummary counts with GROUP BY over the tenant's indexes, never loading rows.
func (s *Store) FleetSummary(ctx context.Context, tenantID string, siteID *string, onlineSince int64) (*FleetSummary, error) {
	var out FleetSummary
	site := func(q *bun.SelectQuery) *bun.SelectQuery {
		q = q.Where("tenant_id = ?", tenantID)
		if siteID != nil {
			q = q.Where("site_id = ?", *siteID)
		}
		return q
	}
	group := func(model any, col string, dst *[]Count) error {
		return site(s.R.NewSelect().Model(model)).ColumnExpr("? AS key, COUNT(*) AS n", bun.Ident(col)).
			GroupExpr("?", bun.Ident(col)).OrderExpr("n DESC, key").Scan(ctx, dst)
	}
	if err := group((*identityRow)(nil), "status", &out.ByStatus); err != nil {
		return nil, mapErr(err)
	}
	if err := group((*assetRow)(nil), "os_name", &out.ByOSName); err != nil {
		return nil, mapErr(err)
	}
	if err := group((*identityRow)(nil), "agent_version", &out.ByAgentVersion); err != nil {
		return nil, mapErr(err)
	}
	var totals struct {
		Total  int `bun:"total"`
		Online int `bun:"online"`
	}
	err := site(s.R.NewSelect().Model((*assetRow)(nil))).
		ColumnExpr("COUNT(*) AS total, COALESCE(SUM(CASE WHEN last_seen_at > ? THEN 1 ELSE 0 END), 0) AS online", onlineSince).
		Scan(ctx, &totals)
	if err != nil {
		return nil, mapErr(err)
	}
	out.TotalAssets, out.Online = totals.Total, totals.Online
	return &out, nil
}

// RebuildProjections empties the asset read model and replays the whole event log into it,
// in id order, in one transaction: readers see the old model until the new one is complete.
func (s *Store) RebuildProjections(ctx context.Context) (events int, err error) {
	err = s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if s.Dialect == Postgres {
			// Heartbeats committing meanwhile wait for the new model instead of being lost from
			// it or counted twice; readers keep reading the old one. (SQLite has one writer.)
			if _, err := tx.ExecContext(ctx, "LOCK TABLE assets IN EXCLUSIVE MODE"); err != nil {
				return err
			}
		}
		if _, err := tx.NewDelete().Model((*assetRow)(nil)).Where("1 = 1").Exec(ctx); err != nil {
			return err
		}
		// Page through the log by keyset so memory stays flat whatever its size.
		after := ""
		for {
			var rows []eventRow
			q := tx.NewSelect().Model(&rows).Where("type IN (?)", bun.In([]string{
				domain.EventAssetDiscovered, domain.EventTelemetryReceived, domain.EventAgentEnrolled}))
			if after != "" {
				q = q.Where("id > ?", after)
			}
			if err := q.Order("id").Limit(1000).Scan(ctx); err != nil {
				return err
			}
			for i := range rows {
				if err := s.replay(ctx, tx, &rows[i]); err != nil {
					return fmt.Errorf("replay event %s: %w", rows[i].ID, err)
				}
				events++
			}
			if len(rows) < 1000 {
				return nil
			}
			after = rows[len(rows)-1].ID
		}
	})
	return events, err
}

func (s *Store) replay(ctx context.Context, tx bun.Tx, r *eventRow) error {
	if r.AssetID == nil || r.AgentID == nil {
		return nil
	}
	ptx := &preparedTx{tx: tx.Tx, cache: s.stmts}
	switch r.Type {
	case domain.EventAgentEnrolled:
		var e projection.Enrolled
		if err := json.Unmarshal([]byte(r.Payload), &e); err != nil {
			return err
		}
		return s.proj.ApplyEnrolled(ctx, ptx, r.TenantID, *r.AssetID, *r.AgentID, &e)
	case domain.EventAssetDiscovered:
		var t projection.Telemetry
		if err := json.Unmarshal([]byte(r.Payload), &t); err != nil {
			return err
		}
		return s.proj.ApplyDiscovered(ctx, ptx, r.TenantID, *r.AssetID, *r.AgentID, r.OccurredAt, &t)
	case domain.EventTelemetryReceived:
		var t projection.Telemetry
		if err := json.Unmarshal([]byte(r.Payload), &t); err != nil {
			return err
		}
		_, err := s.proj.ApplyTelemetry(ctx, ptx, r.TenantID, *r.AssetID, *r.AgentID, r.OccurredAt, &t)
		return err
	}
	return nil
}
