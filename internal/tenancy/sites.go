package tenancy

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// Bounds of a site's own windows.
const (
	MaxOfflineAfter = 365 * 24 * time.Hour
	MaxStaleAfter   = 10 * 365 * 24 * time.Hour
)

// Thresholds are the server's defaults (--offline-after, --stale-after), which a site
// without windows of its own follows.
type Thresholds struct {
	OfflineAfter time.Duration
	StaleAfter   time.Duration
}

// OfflineAfter is the site's effective offline window.
func (s *Service) OfflineAfter(site *domain.Site) time.Duration {
	if site.OfflineAfter != nil {
		return *site.OfflineAfter
	}
	return s.Defaults.OfflineAfter
}

// StaleAfter is the site's effective stale window.
func (s *Service) StaleAfter(site *domain.Site) time.Duration {
	if site.StaleAfter != nil {
		return *site.StaleAfter
	}
	return s.Defaults.StaleAfter
}

// SiteUpdate is the input of updateSite: each field nil to leave it, a window 0 to go back to
// the server's default.
type SiteUpdate struct {
	Name                *string
	OfflineAfterSeconds *int
	StaleAfterSeconds   *int
}

var errSiteNotFound = &domain.Error{Code: domain.CodeNotFound, Field: "id", Message: "site not found"}

// UpdateSite renames a site of the caller's tenant and sets its own offline and stale windows
// (ADMIN). Another tenant's site is NOT_FOUND. The windows must leave the site's stale window
// longer than its offline window (the effective values, defaults included).
func (s *Service) UpdateSite(ctx context.Context, id string, in SiteUpdate) (*domain.Site, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !ids.Valid(id) {
		return nil, errSiteNotFound
	}
	u := &store.SiteUpdate{TenantID: p.TenantID, SiteID: id, Now: s.Now()}
	if in.Name != nil {
		name := strings.TrimSpace(*in.Name)
		if err := checkName("name", name); err != nil {
			return nil, err
		}
		u.Name = &name
	}
	window := func(field string, v *int, limit time.Duration) (*time.Duration, error) {
		if v == nil {
			return nil, nil
		}
		// Compared in seconds, so a huge value cannot overflow a Duration.
		if *v < 0 || int64(*v) > int64(limit/time.Second) {
			return nil, domain.Invalid(field, "%s must be between 1 and %d seconds, or 0 for the server's default", field, int64(limit/time.Second))
		}
		d := time.Duration(*v) * time.Second
		return &d, nil
	}
	if u.OfflineAfter, err = window("offlineAfterSeconds", in.OfflineAfterSeconds, MaxOfflineAfter); err != nil {
		return nil, err
	}
	if u.StaleAfter, err = window("staleAfterSeconds", in.StaleAfterSeconds, MaxStaleAfter); err != nil {
		return nil, err
	}
	current, err := s.Store.Site(ctx, p.TenantID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errSiteNotFound
	} else if err != nil {
		return nil, err
	}
	if u.OfflineAfter != nil || u.StaleAfter != nil {
		after := *current
		if u.OfflineAfter != nil {
			after.OfflineAfter = nonZero(*u.OfflineAfter)
		}
		if u.StaleAfter != nil {
			after.StaleAfter = nonZero(*u.StaleAfter)
		}
		if s.StaleAfter(&after) <= s.OfflineAfter(&after) {
			field := "staleAfterSeconds"
			if u.StaleAfter == nil {
				field = "offlineAfterSeconds"
			}
			return nil, domain.Invalid(field, "the site's stale window (%s) must be longer than its offline window (%s)",
				s.StaleAfter(&after), s.OfflineAfter(&after))
		}
	}
	site, err := s.Store.UpdateSite(ctx, u)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errSiteNotFound
	case domain.ErrorCode(err) == domain.CodeConflict:
		return nil, &domain.Error{Code: domain.CodeConflict, Field: "name", Message: "a site with this name already exists"}
	}
	return site, err
}

func nonZero(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}
