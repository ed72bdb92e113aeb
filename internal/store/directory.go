package store

import (
	"context"
	"errors"
	"time"

	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Tenants, principals, API tokens, sites and collectors: the tenant's directory.

type tenantRow struct {
	bun.BaseModel `bun:"table:tenants"`
	ID            string `bun:"id,pk"`
	Name          string `bun:"name"`
	Slug          string `bun:"slug"`
	CreatedAt     int64  `bun:"created_at"`
}

func (r *tenantRow) toDomain() *domain.Tenant {
	return &domain.Tenant{ID: r.ID, Name: r.Name, Slug: r.Slug, CreatedAt: FromMicros(r.CreatedAt)}
}

type principalRow struct {
	bun.BaseModel `bun:"table:principals"`
	ID            string  `bun:"id,pk"`
	TenantID      string  `bun:"tenant_id"`
	Kind          string  `bun:"kind"`
	Role          *string `bun:"role"`
	Name          string  `bun:"name"`
	ActorKind     *string `bun:"actor_kind"`
	ActorID       *string `bun:"actor_id"`
	CreatedAt     int64   `bun:"created_at"`
}

func toPrincipalRow(p *domain.Principal, now time.Time) *principalRow {
	r := &principalRow{ID: p.ID, TenantID: p.TenantID, Kind: string(p.Kind), Name: p.Name, CreatedAt: Micros(now)}
	if p.Role != "" {
		role := string(p.Role)
		r.Role = &role
	}
	if p.ActorKind != "" {
		kind, id := string(p.ActorKind), p.ActorID
		r.ActorKind, r.ActorID = &kind, &id
	}
	return r
}

func (r *principalRow) toDomain() *domain.Principal {
	p := &domain.Principal{ID: r.ID, TenantID: r.TenantID, Kind: domain.PrincipalKind(r.Kind), Name: r.Name}
	if r.Role != nil {
		p.Role = domain.Role(*r.Role)
	}
	if r.ActorKind != nil && r.ActorID != nil {
		p.ActorKind, p.ActorID = domain.ActorKind(*r.ActorKind), *r.ActorID
	}
	return p
}

type apiTokenRow struct {
	bun.BaseModel `bun:"table:api_tokens"`
	ID            string `bun:"id,pk"`
	TenantID      string `bun:"tenant_id"`
	PrincipalID   string `bun:"principal_id"`
	TokenHash     string `bun:"token_hash"`
	Prefix        string `bun:"prefix"`
	ExpiresAt     *int64 `bun:"expires_at"`
	RevokedAt     *int64 `bun:"revoked_at"`
	CreatedAt     int64  `bun:"created_at"`
}

// NewAPIToken describes a token to store with its principal.
type NewAPIToken struct {
	ID        string
	Hash      string
	Prefix    string
	ExpiresAt *time.Time
}

type siteRow struct {
	bun.BaseModel `bun:"table:sites"`
	ID            string `bun:"id,pk"`
	TenantID      string `bun:"tenant_id"`
	Name          string `bun:"name"`
	CreatedAt     int64  `bun:"created_at"`
}

func (r *siteRow) toDomain() *domain.Site {
	return &domain.Site{ID: r.ID, TenantID: r.TenantID, Name: r.Name, CreatedAt: FromMicros(r.CreatedAt)}
}

type collectorRow struct {
	bun.BaseModel `bun:"table:collectors"`
	ID            string `bun:"id,pk"`
	TenantID      string `bun:"tenant_id"`
	SiteID        string `bun:"site_id"`
	Name          string `bun:"name"`
	PrincipalID   string `bun:"principal_id"`
	CreatedAt     int64  `bun:"created_at"`
}

func (r *collectorRow) toDomain() *domain.Collector {
	return &domain.Collector{ID: r.ID, TenantID: r.TenantID, SiteID: r.SiteID, Name: r.Name,
		PrincipalID: r.PrincipalID, CreatedAt: FromMicros(r.CreatedAt)}
}

// CreateTenant inserts a tenant; a taken slug is CodeConflict.
func (s *Store) CreateTenant(ctx context.Context, t *domain.Tenant) error {
	row := &tenantRow{ID: t.ID, Name: t.Name, Slug: t.Slug, CreatedAt: Micros(t.CreatedAt)}
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(row).Value("ref", s.newRef("tenants")).Exec(ctx)
		return err
	})
}

// TenantByIDOrSlug finds a tenant by id or slug (the CLI accepts either).
func (s *Store) TenantByIDOrSlug(ctx context.Context, key string) (*domain.Tenant, error) {
	var row tenantRow
	err := s.R.NewSelect().Model(&row).Where("id = ? OR slug = ?", key, key).Limit(1).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	return row.toDomain(), nil
}

// TenantsByID loads tenants by id (a batch for the GraphQL loaders).
func (s *Store) TenantsByID(ctx context.Context, ids []string) ([]*domain.Tenant, error) {
	var rows []tenantRow
	if err := s.R.NewSelect().Model(&rows).Where("id IN (?)", bun.In(ids)).Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Tenant, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CreatePrincipal inserts a principal and its API token in one transaction.
func (s *Store) CreatePrincipal(ctx context.Context, p *domain.Principal, tok NewAPIToken, now time.Time) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		return insertPrincipal(ctx, tx, p, tok, now)
	})
}

func insertPrincipal(ctx context.Context, tx bun.IDB, p *domain.Principal, tok NewAPIToken, now time.Time) error {
	if _, err := tx.NewInsert().Model(toPrincipalRow(p, now)).Exec(ctx); err != nil {
		return err
	}
	_, err := tx.NewInsert().Model(&apiTokenRow{
		ID: tok.ID, TenantID: p.TenantID, PrincipalID: p.ID, TokenHash: tok.Hash, Prefix: tok.Prefix,
		ExpiresAt: optMicros(tok.ExpiresAt), CreatedAt: Micros(now),
	}).Exec(ctx)
	return err
}

// PrincipalByTokenHash returns the principal owning an unexpired, unrevoked token with this
// hash, and the stored hash for a constant-time comparison by the caller.
func (s *Store) PrincipalByTokenHash(ctx context.Context, hash string, now time.Time) (*domain.Principal, string, error) {
	var row struct {
		principalRow
		TokenHash string `bun:"token_hash"`
		ExpiresAt *int64 `bun:"expires_at"`
	}
	err := s.R.NewRaw(`SELECT p.*, t.token_hash, t.expires_at FROM api_tokens t
		JOIN principals p ON p.id = t.principal_id AND p.tenant_id = t.tenant_id
		WHERE t.token_hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?)`,
		hash, Micros(now)).Scan(ctx, &row)
	if errors.Is(mapErr(err), ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", mapErr(err)
	}
	p := row.principalRow.toDomain()
	p.ExpiresAt = optTime(row.ExpiresAt)
	return p, row.TokenHash, nil
}

// PrincipalsByID loads principals of one tenant by id.
func (s *Store) PrincipalsByID(ctx context.Context, tenantID string, ids []string) ([]*domain.Principal, error) {
	var rows []principalRow
	err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Principal, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CreateSite inserts a site; a duplicate name in the tenant is CodeConflict.
func (s *Store) CreateSite(ctx context.Context, site *domain.Site) error {
	row := &siteRow{ID: site.ID, TenantID: site.TenantID, Name: site.Name, CreatedAt: Micros(site.CreatedAt)}
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(row).Value("ref", s.newRef("sites")).Exec(ctx)
		return err
	})
}

// Sites lists the tenant's sites by name.
func (s *Store) Sites(ctx context.Context, tenantID string) ([]*domain.Site, error) {
	var rows []siteRow
	if err := s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID).Order("name", "id").Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Site, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, s.attachSiteSettings(ctx, tenantID, out)
}

// SitesByID loads sites of one tenant by id.
func (s *Store) SitesByID(ctx context.Context, tenantID string, ids []string) ([]*domain.Site, error) {
	var rows []siteRow
	err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Site, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, s.attachSiteSettings(ctx, tenantID, out)
}

// Site returns one site of the tenant, or ErrNotFound.
func (s *Store) Site(ctx context.Context, tenantID, id string) (*domain.Site, error) {
	sites, err := s.SitesByID(ctx, tenantID, []string{id})
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, ErrNotFound
	}
	return sites[0], nil
}

// CreateCollector inserts a collector with its service-account principal and token.
func (s *Store) CreateCollector(ctx context.Context, c *domain.Collector, sa *domain.Principal, tok NewAPIToken) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := insertPrincipal(ctx, tx, sa, tok, c.CreatedAt); err != nil {
			return err
		}
		_, err := tx.NewInsert().Model(&collectorRow{ID: c.ID, TenantID: c.TenantID, SiteID: c.SiteID,
			Name: c.Name, PrincipalID: c.PrincipalID, CreatedAt: Micros(c.CreatedAt)}).Exec(ctx)
		return err
	})
}

// Collectors lists the tenant's collectors, optionally of one site.
func (s *Store) Collectors(ctx context.Context, tenantID string, siteID *string) ([]*domain.Collector, error) {
	var rows []collectorRow
	q := s.R.NewSelect().Model(&rows).Where("tenant_id = ?", tenantID)
	if siteID != nil {
		q = q.Where("site_id = ?", *siteID)
	}
	if err := q.Order("name", "id").Scan(ctx); err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Collector, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// CollectorsByID loads collectors of one tenant by id.
func (s *Store) CollectorsByID(ctx context.Context, tenantID string, ids []string) ([]*domain.Collector, error) {
	var rows []collectorRow
	err := s.R.NewSelect().Model(&rows).Where("tenant_id = ? AND id IN (?)", tenantID, bun.In(ids)).Scan(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]*domain.Collector, len(rows))
	for i := range rows {
		out[i] = rows[i].toDomain()
	}
	return out, nil
}

// Collector returns one collector of the tenant, or ErrNotFound.
func (s *Store) Collector(ctx context.Context, tenantID, id string) (*domain.Collector, error) {
	cs, err := s.CollectorsByID(ctx, tenantID, []string{id})
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, ErrNotFound
	}
	return cs[0], nil
}

type secretRow struct {
	bun.BaseModel `bun:"table:server_secrets"`
	Name          string `bun:"name,pk"`
	Value         string `bun:"value"`
}

// Secret returns the shared secret called name, storing generate()'s value if there is none
// yet; replicas racing here all end up with the first stored value.
func (s *Store) Secret(ctx context.Context, name string, generate func() string) (string, error) {
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&secretRow{Name: name, Value: generate()}).On("CONFLICT (name) DO NOTHING").Exec(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	var row secretRow
	if err := s.R.NewSelect().Model(&row).Where("name = ?", name).Scan(ctx); err != nil {
		return "", mapErr(err)
	}
	return row.Value, nil
}
