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
	bun.BaseModel `bun:"table:assets,alias:a"`
	ID            string   `bun:"id,pk"`
	Ref           int64    `bun:"ref"`
	TenantID      string   `bun:"tenant_id"`
	SiteID        string   `bun:"site_id"`
	AgentID       string   `bun:"agent_id"`
	Hostname      string   `bun:"hostname"`
	AgentVersion  *string  `bun:"agent_version"`
	OSName        *string  `bun:"os_name"`
	OSVersion     *string  `bun:"os_version"`
	OSKernel      *string  `bun:"os_kernel"`
	OSArch        *string  `bun:"os_arch"`
	IPAddresses   string   `bun:"ip_addresses"`
	MACAddresses  string   `bun:"mac_addresses"`
	CPUCount      *int     `bun:"cpu_count"`
	MemoryBytes   *float64 `bun:"memory_bytes"`
	Facts         string   `bun:"facts"`
	BootTime      *int64   `bun:"boot_time"`
	FirstSeenAt   int64    `bun:"first_seen_at"`

	// From asset_liveness (assetSelect).
	LastSeenAt     *int64 `bun:"last_seen_at,scanonly"`
	HeartbeatCount *int64 `bun:"heartbeat_count,scanonly"`
}

// assetSelect selects assets with their liveness.
func assetSelect(db bun.IDB, model any) *bun.SelectQuery {
	return db.NewSelect().Model(model).ColumnExpr("a.*").ColumnExpr("l.last_seen_at, l.heartbeat_count").
		Join("LEFT JOIN asset_liveness AS l ON l.asset_ref = a.ref")
}

// snapshot decodes the stored inventory. Its JSON columns are only ever written from encoded
// values, so an error here means a damaged row, and it is reported rather than hidden.
func (r *assetRow) snapshot() (projection.Snapshot, error) {
	snap := projection.Snapshot{Hostname: r.Hostname, AgentVersion: r.AgentVersion, CPUCount: r.CPUCount,
		MemoryBytes: r.MemoryBytes, BootTime: r.BootTime}
	if r.OSName != nil || r.OSVersion != nil || r.OSKernel != nil || r.OSArch != nil {
		snap.OS = &domain.OperatingSystem{Name: r.OSName, Version: r.OSVersion, Kernel: r.OSKernel, Arch: r.OSArch}
	}
	for _, c := range []struct {
		col string
		dst any
	}{{r.IPAddresses, &snap.IPAddresses}, {r.MACAddresses, &snap.MACAddresses}, {r.Facts, &snap.Facts}} {
		if err := json.Unmarshal([]byte(c.col), c.dst); err != nil {
			return snap, fmt.Errorf("asset %s: %w", r.ID, err)
		}
	}
	if snap.IPAddresses == nil {
		snap.IPAddresses = []string{}
	}
	if snap.MACAddresses == nil {
		snap.MACAddresses = []string{}
	}
	if snap.Facts == nil {
		snap.Facts = map[string]any{}
	}
	return snap, nil
}

func (r *assetRow) toDomain(cut OnlineCutoffs) (*domain.Asset, error) {
	snap, err := r.snapshot()
	if err != nil {
		return nil, err
	}
	a := &domain.Asset{ID: r.ID, TenantID: r.TenantID, SiteID: r.SiteID, AgentID: r.AgentID, Hostname: snap.Hostname,
		OS: snap.OS, IPAddresses: snap.IPAddresses, MACAddresses: snap.MACAddresses, CPUCount: snap.CPUCount,
		MemoryBytes: snap.MemoryBytes, Facts: snap.Facts, FirstSeenAt: FromMicros(r.FirstSeenAt)}
	a.LastSeenAt = a.FirstSeenAt
	if r.LastSeenAt != nil {
		a.LastSeenAt, a.Online = FromMicros(*r.LastSeenAt), *r.LastSeenAt > cut.For(r.SiteID)
	}
	if r.HeartbeatCount != nil {
		a.HeartbeatCount = int(*r.HeartbeatCount)
	}
	if r.BootTime != nil && r.LastSeenAt != nil && *r.LastSeenAt >= *r.BootTime {
		up := float64(*r.LastSeenAt-*r.BootTime) / 1e6
		a.UptimeSeconds = &up
	}
	return a, nil
}

func assetsToDomain(rows []assetRow, cut OnlineCutoffs) ([]*domain.Asset, error) {
	out := make([]*domain.Asset, len(rows))
	for i := range rows {
		a, err := rows[i].toDomain(cut)
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
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
	var rows []assetRow
	q := f.apply(assetSelect(s.R, &rows).Where("a.tenant_id = ?", tenantID))
	if afterID != "" {
		q = q.Where("a.id > ?", afterID)
	}
	if err := q.Order("a.id").Limit(int64(limit) + 1).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out, err := assetsToDomain(rows, f.cutoffs)
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
	var rows []assetRow
	err = assetSelect(s.R, &rows).Where("a.tenant_id = ? AND a.id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out, err := assetsToDomain(rows, cut)
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
		_, err := tx.Tx.ExecContext(ctx, s.hb.insertAsset, append([]any{*r.AssetID, ident.AssetRef, r.TenantID, ident.SiteID,
			*r.AgentID, r.OccurredAt}, snapshotArgs(&snap)...)...)
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
		_, err = tx.Tx.ExecContext(ctx, s.hb.updateAsset, append(snapshotArgs(&snap), ident.AssetRef, r.TenantID)...)
		return err
	}
	return nil
}
