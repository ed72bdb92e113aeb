// Package tenancy manages the tenant's directory: tenants, users, sites and collectors.
package tenancy

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// Service is the directory service.
type Service struct {
	Store *store.Store
	Now   func() time.Time
	// TokensChanged, when set, learns that a token was revoked (the token cache forgets).
	TokensChanged func()
	// Defaults are the windows of sites without their own.
	Defaults Thresholds
}

// MaxNameLength bounds every display name.
const MaxNameLength = 200

var slugPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// CreateTenant creates a tenant. It is an operator action (the CLI), outside any tenant.
func (s *Service) CreateTenant(ctx context.Context, name, slug string) (*domain.Tenant, error) {
	name = strings.TrimSpace(name)
	if err := checkName("name", name); err != nil {
		return nil, err
	}
	if slug == "" {
		slug = Slugify(name)
	}
	if !slugPattern.MatchString(slug) {
		return nil, domain.Invalid("slug", "a slug is 1-63 lower-case letters, digits and inner hyphens")
	}
	t := &domain.Tenant{ID: ids.New(), Name: name, Slug: slug, CreatedAt: s.Now()}
	if err := s.Store.CreateTenant(ctx, t); err != nil {
		if domain.ErrorCode(err) == domain.CodeConflict {
			return nil, &domain.Error{Code: domain.CodeConflict, Field: "slug", Message: "a tenant with this slug already exists"}
		}
		return nil, err
	}
	return t, nil
}

// Slugify derives a slug from a name.
func Slugify(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case b.Len() > 0 && !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.TrimRight(b.String(), "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

// CreateUser creates a USER principal with an API token (shown once). Operator action (CLI).
func (s *Service) CreateUser(ctx context.Context, tenantKey, name string, role domain.Role) (*domain.Principal, string, error) {
	name = strings.TrimSpace(name)
	if err := checkName("name", name); err != nil {
		return nil, "", err
	}
	if role != domain.RoleAdmin && role != domain.RoleViewer {
		return nil, "", domain.Invalid("role", "role must be admin or viewer")
	}
	tenant, err := s.Store.TenantByIDOrSlug(ctx, tenantKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", &domain.Error{Code: domain.CodeNotFound, Field: "tenant", Message: "no tenant with this id or slug"}
	} else if err != nil {
		return nil, "", err
	}
	p := &domain.Principal{ID: ids.New(), TenantID: tenant.ID, Kind: domain.KindUser, Role: role, Name: name}
	secret, hash := auth.NewToken(auth.PrefixUser)
	err = s.Store.CreatePrincipal(ctx, p, store.NewAPIToken{ID: ids.New(), Hash: hash, Prefix: auth.DisplayPrefix(secret)}, s.Now())
	if err != nil {
		return nil, "", err
	}
	return p, secret, nil
}

// Tenant returns the caller's tenant.
func (s *Service) Tenant(ctx context.Context, id string) (*domain.Tenant, error) {
	p, err := auth.Authenticated(ctx)
	if err != nil {
		return nil, err
	}
	if id != p.TenantID {
		return nil, nil
	}
	ts, err := s.Store.TenantsByID(ctx, []string{id})
	if err != nil || len(ts) == 0 {
		return nil, err
	}
	return ts[0], nil
}

// CreateSite creates a site in the caller's tenant (ADMIN).
func (s *Service) CreateSite(ctx context.Context, name string) (*domain.Site, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if err := checkName("name", name); err != nil {
		return nil, err
	}
	site := &domain.Site{ID: ids.New(), TenantID: p.TenantID, Name: name, CreatedAt: s.Now()}
	if err := s.Store.CreateSite(ctx, site); err != nil {
		if domain.ErrorCode(err) == domain.CodeConflict {
			return nil, &domain.Error{Code: domain.CodeConflict, Field: "name", Message: "a site with this name already exists"}
		}
		return nil, err
	}
	return site, nil
}

// Sites lists the caller's sites (any user).
func (s *Service) Sites(ctx context.Context) ([]*domain.Site, error) {
	p, err := auth.RequireRole(ctx, domain.RoleViewer)
	if err != nil {
		return nil, err
	}
	return s.Store.Sites(ctx, p.TenantID)
}

// CreateCollector creates a collector on a site of the caller's tenant with its service
// account; the token is returned once (ADMIN).
func (s *Service) CreateCollector(ctx context.Context, siteID, name string) (*domain.Collector, string, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, "", err
	}
	name = strings.TrimSpace(name)
	if err := checkName("name", name); err != nil {
		return nil, "", err
	}
	if _, err := s.site(ctx, p.TenantID, siteID); err != nil {
		return nil, "", err
	}
	now := s.Now()
	c := &domain.Collector{ID: ids.New(), TenantID: p.TenantID, SiteID: siteID, Name: name, PrincipalID: ids.New(), CreatedAt: now}
	sa := &domain.Principal{ID: c.PrincipalID, TenantID: p.TenantID, Kind: domain.KindServiceAccount,
		Name: "collector " + name, ActorKind: domain.ActorCollector, ActorID: c.ID}
	secret, hash := auth.NewToken(auth.PrefixServiceAccount)
	if err := s.Store.CreateCollector(ctx, c, sa, store.NewAPIToken{ID: ids.New(), Hash: hash, Prefix: auth.DisplayPrefix(secret)}); err != nil {
		return nil, "", err
	}
	return c, secret, nil
}

// Collectors lists the caller's collectors, optionally of one site (any user).
func (s *Service) Collectors(ctx context.Context, siteID *string) ([]*domain.Collector, error) {
	p, err := auth.RequireRole(ctx, domain.RoleViewer)
	if err != nil {
		return nil, err
	}
	return s.Store.Collectors(ctx, p.TenantID, siteID)
}

// site returns a site of the tenant; a missing one, or another tenant's, is NOT_FOUND.
func (s *Service) site(ctx context.Context, tenantID, id string) (*domain.Site, error) {
	if !ids.Valid(id) {
		return nil, &domain.Error{Code: domain.CodeNotFound, Field: "siteId", Message: "site not found"}
	}
	site, err := s.Store.Site(ctx, tenantID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &domain.Error{Code: domain.CodeNotFound, Field: "siteId", Message: "site not found"}
	}
	return site, err
}

// Site is the tenant-checked site lookup other services use.
func (s *Service) Site(ctx context.Context, tenantID, id string) (*domain.Site, error) {
	return s.site(ctx, tenantID, id)
}

func checkName(field, name string) error {
	if name == "" {
		return domain.Invalid(field, "%s must not be empty", field)
	}
	return domain.CheckText(field, name, MaxNameLength)
}
