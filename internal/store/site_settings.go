package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/schema"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Per-site thresholds (site_settings): a site's own offline and stale windows, the server's
// defaults where a site has none.

type siteSettingsRow struct {
	bun.BaseModel `bun:"table:site_settings,alias:ss"`
	TenantID      string `bun:"tenant_id,pk"`
	SiteID        string `bun:"site_id,pk"`
	OfflineAfter  *int64 `bun:"offline_after_seconds"`
	StaleAfter    *int64 `bun:"stale_after_seconds"`
	UpdatedAt     int64  `bun:"updated_at"`
	SiteRef       int64  `bun:"site_ref,scanonly"`
}

func seconds(v *int64) *time.Duration {
	if v == nil {
		return nil
	}
	d := time.Duration(*v) * time.Second
	return &d
}

// attachSiteSettings fills in the windows of sites of one tenant, in one query.
func (s *Store) attachSiteSettings(ctx context.Context, tenantID string, sites []*domain.Site) error {
	if len(sites) == 0 {
		return nil
	}
	ids := make([]string, len(sites))
	for i, site := range sites {
		ids[i] = site.ID
	}
	var rows []siteSettingsRow
	if err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND site_id IN (?)", tenantID, bun.In(ids)).Scan(ctx); err != nil {
		return mapErr(err)
	}
	by := make(map[string]*siteSettingsRow, len(rows))
	for i := range rows {
		by[rows[i].SiteID] = &rows[i]
	}
	for _, site := range sites {
		if r := by[site.ID]; r != nil {
			site.OfflineAfter, site.StaleAfter = seconds(r.OfflineAfter), seconds(r.StaleAfter)
		}
	}
	return nil
}

// SiteUpdate changes a site: a new name, and windows to set (a positive duration), reset to
// the server's default (0) or leave as they are (nil).
type SiteUpdate struct {
	TenantID, SiteID string
	Name             *string
	OfflineAfter     *time.Duration
	StaleAfter       *time.Duration
	Now              time.Time
}

// UpdateSite applies u in one transaction and returns the site as it is afterwards.
// ErrNotFound: no such site in the tenant; a name taken in the tenant is CodeConflict.
func (s *Store) UpdateSite(ctx context.Context, u *SiteUpdate) (*domain.Site, error) {
	var out *domain.Site
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var row siteRow
		if err := tx.NewSelect().Model(&row).Where("tenant_id = ? AND id = ?", u.TenantID, u.SiteID).Scan(ctx); err != nil {
			return err
		}
		if u.Name != nil && *u.Name != row.Name {
			if _, err := tx.NewUpdate().Model((*siteRow)(nil)).Set("name = ?", *u.Name).
				Where("tenant_id = ? AND id = ?", u.TenantID, u.SiteID).Exec(ctx); err != nil {
				return err
			}
			row.Name = *u.Name
		}
		if u.OfflineAfter != nil || u.StaleAfter != nil {
			cur := siteSettingsRow{TenantID: u.TenantID, SiteID: u.SiteID}
			err := tx.NewSelect().Model(&cur).Where("tenant_id = ? AND site_id = ?", u.TenantID, u.SiteID).Scan(ctx)
			if err != nil && mapErr(err) != ErrNotFound {
				return err
			}
			set := func(dst **int64, d *time.Duration) {
				switch {
				case d == nil:
				case *d <= 0:
					*dst = nil
				default:
					v := int64(*d / time.Second)
					*dst = &v
				}
			}
			set(&cur.OfflineAfter, u.OfflineAfter)
			set(&cur.StaleAfter, u.StaleAfter)
			cur.UpdatedAt = Micros(u.Now)
			if _, err := tx.NewInsert().Model(&cur).On("CONFLICT (tenant_id, site_id) DO UPDATE").
				Set("offline_after_seconds = EXCLUDED.offline_after_seconds").
				Set("stale_after_seconds = EXCLUDED.stale_after_seconds").
				Set("updated_at = EXCLUDED.updated_at").Exec(ctx); err != nil {
				return err
			}
		}
		out = row.toDomain()
		return nil
	})
	if err != nil {
		return nil, mapErr(err)
	}
	return out, s.attachSiteSettings(ctx, u.TenantID, []*domain.Site{out})
}

// OnlineCutoffs is the instant after which a heartbeat makes an asset online: Default for
// sites without an offline window of their own, Sites (by site id) for those with one, and
// Refs the same by site ref, for the liveness index.
type OnlineCutoffs struct {
	Default int64
	Sites   map[string]int64
	Refs    map[int64]int64
}

// For returns the cutoff of one site.
func (c OnlineCutoffs) For(siteID string) int64 {
	if v, ok := c.Sites[siteID]; ok {
		return v
	}
	return c.Default
}

// earliest is the oldest cutoff of any site: every online asset was seen after it.
func (c OnlineCutoffs) earliest() int64 {
	out := c.Default
	for _, v := range c.Sites {
		out = min(out, v)
	}
	return out
}

// onlineCutoffs turns the default cutoff (now - OfflineAfter) into the tenant's per-site
// cutoffs, with one indexed read of its site settings.
func (s *Store) onlineCutoffs(ctx context.Context, tenantID string, onlineSince int64) (OnlineCutoffs, error) {
	out := OnlineCutoffs{Default: onlineSince}
	if s.OfflineAfter <= 0 {
		return out, nil
	}
	var rows []siteSettingsRow
	err := s.R.NewSelect().Model(&rows).ColumnExpr("ss.site_id, ss.offline_after_seconds, s.ref AS site_ref").
		Join("JOIN sites AS s ON s.tenant_id = ss.tenant_id AND s.id = ss.site_id").
		Where("ss.tenant_id = ? AND ss.offline_after_seconds IS NOT NULL", tenantID).Scan(ctx)
	if err != nil {
		return out, mapErr(err)
	}
	if len(rows) == 0 {
		return out, nil
	}
	now := onlineSince + int64(s.OfflineAfter/time.Microsecond)
	out.Sites, out.Refs = make(map[string]int64, len(rows)), make(map[int64]int64, len(rows))
	for _, r := range rows {
		cut := now - *r.OfflineAfter*1_000_000
		out.Sites[r.SiteID], out.Refs[r.SiteRef] = cut, cut
	}
	return out, nil
}

// onlineExpr is the SQL cutoff of the row's site: a CASE over the sites with a window of
// their own (few), or the default as a plain parameter.
func (c OnlineCutoffs) onlineExpr(siteCol string) schema.QueryWithArgs {
	if len(c.Sites) == 0 {
		return bun.SafeQuery("?", c.Default)
	}
	q, args := "CASE "+siteCol, []any{}
	for id, cut := range c.Sites {
		q += " WHEN ? THEN ?"
		args = append(args, id, cut)
	}
	return bun.SafeQuery(q+" ELSE ? END", append(args, c.Default)...)
}

func (c OnlineCutoffs) refExpr(refCol string) schema.QueryWithArgs {
	if len(c.Refs) == 0 {
		return bun.SafeQuery("?", c.Default)
	}
	q, args := "CASE "+refCol, []any{}
	for ref, cut := range c.Refs {
		q += " WHEN ? THEN ?"
		args = append(args, ref, cut)
	}
	return bun.SafeQuery(q+" ELSE ? END", append(args, c.Default)...)
}

// staleCutoff is the sweeper's cutoff: the default, or, once any site has a stale window of
// its own, an expression reading the row's site window (a primary-key lookup per candidate),
// with guard the latest of all cutoffs, which bounds the sweep's index range.
func (s *Store) staleCutoff(ctx context.Context, tx bun.IDB, now time.Time, staleAfter time.Duration) (cut schema.QueryWithArgs, guard int64, err error) {
	def := Micros(now.Add(-staleAfter))
	var shortest *int64
	if err := tx.NewRaw("SELECT MIN(stale_after_seconds) FROM site_settings WHERE stale_after_seconds IS NOT NULL").Scan(ctx, &shortest); err != nil {
		return cut, 0, err
	}
	if shortest == nil {
		return bun.SafeQuery("?", def), def, nil
	}
	guard = max(def, Micros(now)-*shortest*1_000_000)
	return bun.SafeQuery(`COALESCE((SELECT ? - ss.stale_after_seconds * 1000000 FROM site_settings AS ss
		WHERE ss.tenant_id = i.tenant_id AND ss.site_id = i.site_id AND ss.stale_after_seconds IS NOT NULL), ?)`,
		Micros(now), def), guard, nil
}

// SiteStaleWindows returns every site's own stale window, by tenant id and site id (the
// sweeper names the window it applied in each agent.stale event).
func (s *Store) SiteStaleWindows(ctx context.Context) (map[[2]string]time.Duration, error) {
	var rows []siteSettingsRow
	if err := s.R.NewSelect().Model(&rows).Where("stale_after_seconds IS NOT NULL").Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make(map[[2]string]time.Duration, len(rows))
	for _, r := range rows {
		out[[2]string{r.TenantID, r.SiteID}] = time.Duration(*r.StaleAfter) * time.Second
	}
	return out, nil
}
