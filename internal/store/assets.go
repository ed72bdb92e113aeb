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

// assetRow is the assets table. Its inventory columns (projection.Columns) are read and
// written through projection.Snapshot, not through the row.
type assetRow struct {
	bun.BaseModel `bun:"table:assets,alias:a"`
	ID            string `bun:"id,pk"`
	Ref           int64  `bun:"ref"`
	TenantID      string `bun:"tenant_id"`
	SiteID        string `bun:"site_id"`
	AgentID       string `bun:"agent_id"`
	FirstSeenAt   int64  `bun:"first_seen_at"`
}

// assetColumns is what an asset listing reads, in scanAssets' order: the asset's own columns,
// its inventory and its liveness.
var assetColumns = "a.id, a.tenant_id, a.site_id, a.agent_id, a.first_seen_at, a." +
	strings.Join(projection.Columns, ", a.") + ", l.last_seen_at, l.heartbeat_count"

// assetSelect selects assets with their liveness, for scanAssets.
func assetSelect(db bun.IDB) *bun.SelectQuery {
	return db.NewSelect().Model((*assetRow)(nil)).ColumnExpr(assetColumns).
		Join("LEFT JOIN asset_liveness AS l ON l.asset_ref = a.ref")
}

// scanAssets runs an assetSelect query and reads its rows.
func scanAssets(ctx context.Context, q *bun.SelectQuery, cut OnlineCutoffs) ([]*domain.Asset, error) {
	rows, err := q.Rows(ctx)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*domain.Asset{}
	var r assetRow
	var lastSeen, count *int64
	var inv projection.Row
	dest := []any{&r.ID, &r.TenantID, &r.SiteID, &r.AgentID, &r.FirstSeenAt}
	n := len(dest)
	for rows.Next() {
		dest = append(inv.Dest(dest[:n]), &lastSeen, &count)
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		snap, err := inv.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("asset %s: %w", r.ID, err)
		}
		out = append(out, toDomain(&r, &snap, lastSeen, count, cut))
	}
	return out, rows.Err()
}

// toDomain is the API's asset: which inventory fields it shows, and how, is the GraphQL
// schema's choice (the boot time as an uptime, the agent version on the identity).
func toDomain(r *assetRow, snap *projection.Snapshot, lastSeen, count *int64, cut OnlineCutoffs) *domain.Asset {
	a := &domain.Asset{ID: r.ID, TenantID: r.TenantID, SiteID: r.SiteID, AgentID: r.AgentID, Hostname: snap.Hostname,
		OS: snap.OS, IPAddresses: snap.IPAddresses, MACAddresses: snap.MACAddresses, CPUCount: snap.CPUCount,
		MemoryBytes: snap.MemoryBytes, Facts: snap.Facts, FirstSeenAt: FromMicros(r.FirstSeenAt)}
	a.LastSeenAt = a.FirstSeenAt
	if lastSeen != nil {
		a.LastSeenAt, a.Online = FromMicros(*lastSeen), *lastSeen > cut.For(r.SiteID)
	}
	if count != nil {
		a.HeartbeatCount = int(*count)
	}
	if b := snap.BootTime; b != nil && lastSeen != nil && *lastSeen >= *b {
		up := float64(*lastSeen-*b) / 1e6
		a.UptimeSeconds = &up
	}
	return a
}

// AssetFilter narrows an asset listing. OnlineSince is the unix-microsecond instant after
// which a heartbeat counts as online (now - --offline-after); a site with an offline window
// of its own (site_settings) has its own instant, which the store works out (cutoffs).
type AssetFilter struct {
	SiteID           *string
	Online           *bool
	HostnameContains *string
	OnlineSince      int64
	cutoffs          OnlineCutoffs
}

func (f AssetFilter) apply(q *bun.SelectQuery) *bun.SelectQuery {
	if f.SiteID != nil {
		q = q.Where("a.site_id = ?", *f.SiteID)
	}
	if f.Online != nil {
		cut := f.cutoffs.onlineExpr("a.site_id")
		if *f.Online {
			q = q.Where("l.last_seen_at > ?", cut)
		} else {
			q = q.Where("(l.last_seen_at IS NULL OR l.last_seen_at <= ?)", cut)
		}
	}
	if f.HostnameContains != nil {
		// LIKE with the pattern characters escaped, so the input is matched literally.
		q = q.Where("LOWER(a.hostname) LIKE ? ESCAPE '\\'", "%"+escapeLike(strings.ToLower(*f.HostnameContains))+"%")
	}
	return q
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// Assets lists the tenant's assets by id after afterID, up to limit+1 rows.
func (s *Store) Assets(ctx context.Context, tenantID string, f AssetFilter, afterID string, limit int) ([]*domain.Asset, error) {
	var err error
	if f.cutoffs, err = s.onlineCutoffs(ctx, tenantID, f.OnlineSince); err != nil {
		return nil, err
	}
	q := f.apply(assetSelect(s.R).Where("a.tenant_id = ?", tenantID))
	if afterID != "" {
		q = q.Where("a.id > ?", afterID)
	}
	out, err := scanAssets(ctx, q.Order("a.id").Limit(int64(limit)+1), f.cutoffs)
	return out, mapErr(err)
}

// CountAssets counts the tenant's assets matching f from indexes: the assets' own for all of
// them, the liveness index for the online ones (and so the offline ones, as the difference).
// Only a hostname filter has to read rows.
func (s *Store) CountAssets(ctx context.Context, tenantID string, f AssetFilter) (int, error) {
	var err error
	if f.Online != nil {
		if f.cutoffs, err = s.onlineCutoffs(ctx, tenantID, f.OnlineSince); err != nil {
			return 0, err
		}
	}
	if f.HostnameContains != nil {
		n, err := f.apply(s.R.NewSelect().Model((*assetRow)(nil)).Join("LEFT JOIN asset_liveness AS l ON l.asset_ref = a.ref").
			Where("a.tenant_id = ?", tenantID)).Count(ctx)
		return int(n), mapErr(err)
	}
	q := s.R.NewSelect().Model((*assetRow)(nil)).Where("a.tenant_id = ?", tenantID)
	if f.SiteID != nil {
		q = q.Where("a.site_id = ?", *f.SiteID)
	}
	n, err := q.Count(ctx)
	total := int(n)
	if err != nil || f.Online == nil {
		return total, mapErr(err)
	}
	online, err := s.countOnline(ctx, tenantID, f.SiteID, f.cutoffs)
	if err != nil {
		return 0, err
	}
	if *f.Online {
		return online, nil
	}
	return total - online, nil
}

// countOnline counts the assets seen after their site's cutoff from the liveness index
// alone: one range from the earliest cutoff, each row held to its site's (few sites have one
// of their own).
func (s *Store) countOnline(ctx context.Context, tenantID string, siteID *string, cut OnlineCutoffs) (int, error) {
	q := s.R.NewSelect().TableExpr("asset_liveness AS l").
		Where("l.tenant_ref = (SELECT ref FROM tenants WHERE id = ?)", tenantID)
	switch {
	case siteID != nil:
		q = q.Where("l.last_seen_at > ?", cut.For(*siteID))
	case len(cut.Refs) == 0:
		q = q.Where("l.last_seen_at > ?", cut.Default)
	default:
		q = q.Where("l.last_seen_at > ?", cut.earliest()).Where("l.last_seen_at > ?", cut.refExpr("l.site_ref"))
	}
	if siteID != nil {
		q = q.Where("l.site_ref = (SELECT ref FROM sites WHERE tenant_id = ? AND id = ?)", tenantID, *siteID)
	}
	n, err := q.Count(ctx)
	return int(n), mapErr(err)
}

// AssetsByID loads assets of one tenant by id.
func (s *Store) AssetsByID(ctx context.Context, tenantID string, ids []string, onlineSince int64) ([]*domain.Asset, error) {
	cut, err := s.onlineCutoffs(ctx, tenantID, onlineSince)
	if err != nil {
		return nil, err
	}
	out, err := scanAssets(ctx, assetSelect(s.R).Where("a.tenant_id = ? AND a.id IN (?)", tenantID, bun.In(ids)), cut)
	return out, mapErr(err)
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
	total, err := site(s.R.NewSelect().Model((*assetRow)(nil))).Count(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out.TotalAssets = int(total)
	cut, err := s.onlineCutoffs(ctx, tenantID, onlineSince)
	if err != nil {
		return nil, err
	}
	if out.Online, err = s.countOnline(ctx, tenantID, siteID, cut); err != nil {
		return nil, err
	}
	return &out, nil
}

// RebuildProjections empties the asset inventory and replays the lifecycle events into it, in
// id order, in one transaction: readers see the old model until the new one is complete. The
// inventory is rebuilt from asset.discovered (the first inventory), asset.inventory.changed
// (every later change, with its new value) and agent.enrolled (a re-enrolled machine's asset
// follows its new identity). Liveness (last seen, heartbeat count) is not derived from events
// that retention prunes, so it is kept as it is.
func (s *Store) RebuildProjections(ctx context.Context) (events int, err error) {
	err = s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if s.Dialect == Postgres {
			// Heartbeats committing meanwhile wait for the new model instead of being lost from
			// it; readers keep reading the old one. (SQLite has one writer.)
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
				domain.EventAssetDiscovered, domain.EventInventoryChanged, domain.EventAgentEnrolled}))
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
	var ident identityRow
	if err := tx.NewSelect().Model(&ident).Column("ref", "asset_ref", "site_id").
		Where("tenant_id = ? AND agent_id = ?", r.TenantID, *r.AgentID).Scan(ctx); err != nil {
		return err
	}
	switch r.Type {
	case domain.EventAgentEnrolled:
		var e projection.Enrolled
		if err := json.Unmarshal([]byte(r.Payload), &e); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*assetRow)(nil)).Set("site_id = ?", e.SiteID).Set("agent_id = ?", *r.AgentID).
			Where("tenant_id = ? AND id = ?", r.TenantID, *r.AssetID).Exec(ctx)
		return err
	case domain.EventAssetDiscovered:
		snap := projection.New("", &projection.Report{})
		if err := json.Unmarshal([]byte(r.Payload), &snap); err != nil {
			return err
		}
		_, err := tx.Tx.ExecContext(ctx, s.hb.insertAsset, snap.Values([]any{*r.AssetID, ident.AssetRef, r.TenantID, ident.SiteID,
			*r.AgentID, r.OccurredAt})...)
		return err
	case domain.EventInventoryChanged:
		old, err := s.assetSnapshot(ctx, tx.Tx, r.TenantID, ident.AssetRef)
		if err != nil {
			return err
		}
		snap, err := old.ApplyChanges([]byte(r.Payload))
		if err != nil {
			return err
		}
		_, err = tx.Tx.ExecContext(ctx, s.hb.updateAsset, append(snap.Values(nil), ident.AssetRef, r.TenantID)...)
		return err
	}
	return nil
}
