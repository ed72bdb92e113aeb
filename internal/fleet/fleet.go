// Package fleet answers the dashboard's reads: assets, agent identities, events, enrollment
// tokens and the fleet summary, always within the caller's tenant, paged by signed keyset
// cursors.
package fleet

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/cursor"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// MaxFirst is the largest page (CONTRACT §5).
const MaxFirst = 500

// Service is the read side.
type Service struct {
	Store        *store.Store
	Cursors      *cursor.Codec
	Now          func() time.Time
	OfflineAfter time.Duration
}

// Filter limits. A filter value is text the database compares: without a bound a huge
// hostnameContains made SQLite's LIKE fail ("pattern too complex"), and a NUL made
// PostgreSQL fail; both were internal errors instead of INVALID_REQUEST.
const (
	MaxHostnameContains = 255 // the longest hostname
	maxIDFilter         = 64
	maxTypeFilter       = 128
)

type filterText struct {
	field string
	value *string
	max   int
}

// checkFilter checks filter values in the order given, naming the first bad one.
func checkFilter(fs ...filterText) error {
	for _, f := range fs {
		if err := domain.CheckOptionalText(f.field, f.value, f.max); err != nil {
			return err
		}
	}
	return nil
}

// OnlineSince is the instant after which a heartbeat makes an asset online.
func (s *Service) OnlineSince() int64 { return store.Micros(s.Now().Add(-s.OfflineAfter)) }

func limit(first *int) (int, error) {
	if first == nil {
		return 50, nil
	}
	if *first < 0 || *first > MaxFirst {
		return 0, domain.Invalid("first", "first must be between 0 and %d", MaxFirst)
	}
	return *first, nil
}

// fingerprint names a listing and its filter for the cursor's signature, so that a cursor is
// only valid for the listing and filter that made it. Values are quoted, so no two
// different filters (a missing value included) share a fingerprint.
func fingerprint(listing string, values ...*string) string {
	var b strings.Builder
	b.WriteString(listing)
	for _, v := range values {
		b.WriteByte(' ')
		if v == nil {
			b.WriteByte('-')
			continue
		}
		b.WriteString(strconv.Quote(*v))
	}
	return b.String()
}

// viewer returns the calling user (any role).
func viewer(ctx context.Context) (*domain.Principal, error) {
	return auth.RequireRole(ctx, domain.RoleViewer)
}

// Asset returns one asset of the caller's tenant, or nil.
func (s *Service) Asset(ctx context.Context, id string) (*domain.Asset, error) {
	p, err := viewer(ctx)
	if err != nil || !ids.Valid(id) {
		return nil, err
	}
	as, err := s.Store.AssetsByID(ctx, p.TenantID, []string{id}, s.OnlineSince())
	if err != nil || len(as) == 0 {
		return nil, err
	}
	return as[0], nil
}

// Assets pages through the caller's assets by id.
func (s *Service) Assets(ctx context.Context, first *int, after *string, f store.AssetFilter) (*AssetConnection, error) {
	p, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	n, err := limit(first)
	if err != nil {
		return nil, err
	}
	var online *string
	if f.Online != nil {
		s := strconv.FormatBool(*f.Online)
		online = &s
	}
	if err := checkFilter(filterText{"siteId", f.SiteID, maxIDFilter}, filterText{"hostnameContains", f.HostnameContains, MaxHostnameContains}); err != nil {
		return nil, err
	}
	query := fingerprint("assets", f.SiteID, online, f.HostnameContains)
	key, err := s.Cursors.Decode(p.TenantID, query, after)
	if err != nil {
		return nil, err
	}
	f.OnlineSince = s.OnlineSince()
	rows, err := s.Store.Assets(ctx, p.TenantID, f, key, n)
	if err != nil {
		return nil, err
	}
	edges, info := page(rows, n, key, func(a *domain.Asset) string { return a.ID },
		func(k string) string { return s.Cursors.Encode(p.TenantID, query, k) },
		func(c string, a *domain.Asset) AssetEdge { return AssetEdge{Cursor: c, Node: a} })
	return &AssetConnection{Edges: edges, connection: connection{PageInfo: info, count: func(ctx context.Context) (int, error) {
		return s.Store.CountAssets(ctx, p.TenantID, f)
	}}}, nil
}

// AgentIdentity returns one identity of the caller's tenant, or nil.
func (s *Service) AgentIdentity(ctx context.Context, agentID string) (*domain.AgentIdentity, error) {
	p, err := viewer(ctx)
	if err != nil || !ids.Valid(agentID) {
		return nil, err
	}
	id, err := s.Store.AgentIdentity(ctx, p.TenantID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return id, err
}

// AgentIdentities pages through the caller's identities by agent id.
func (s *Service) AgentIdentities(ctx context.Context, first *int, after *string, f store.IdentityFilter) (*AgentIdentityConnection, error) {
	p, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	n, err := limit(first)
	if err != nil {
		return nil, err
	}
	var status *string
	if f.Status != nil {
		s := string(*f.Status)
		status = &s
	}
	if err := checkFilter(filterText{"siteId", f.SiteID, maxIDFilter}); err != nil {
		return nil, err
	}
	query := fingerprint("identities", f.SiteID, status)
	if f.EnrollmentTokenID != nil {
		query = fingerprint("token-identities", f.EnrollmentTokenID, f.SiteID, status)
	}
	if f.Conflict != nil {
		query += map[bool]string{true: " conflict", false: " no-conflict"}[*f.Conflict]
	}
	key, err := s.Cursors.Decode(p.TenantID, query, after)
	if err != nil {
		return nil, err
	}
	rows, err := s.Store.AgentIdentities(ctx, p.TenantID, f, key, n)
	if err != nil {
		return nil, err
	}
	edges, info := page(rows, n, key, func(a *domain.AgentIdentity) string { return a.AgentID },
		func(k string) string { return s.Cursors.Encode(p.TenantID, query, k) },
		func(c string, a *domain.AgentIdentity) AgentIdentityEdge {
			return AgentIdentityEdge{Cursor: c, Node: a}
		})
	return &AgentIdentityConnection{Edges: edges, connection: connection{PageInfo: info, count: func(ctx context.Context) (int, error) {
		return s.Store.CountAgentIdentities(ctx, p.TenantID, f)
	}}}, nil
}

// Events pages through the caller's events, newest first.
func (s *Service) Events(ctx context.Context, first *int, after *string, f store.EventFilter) (*EventConnection, error) {
	p, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	n, err := limit(first)
	if err != nil {
		return nil, err
	}
	if err := checkFilter(filterText{"assetId", f.AssetID, maxIDFilter}, filterText{"agentId", f.AgentID, maxIDFilter},
		filterText{"type", f.Type, maxTypeFilter}); err != nil {
		return nil, err
	}
	query := fingerprint("events", f.AssetID, f.AgentID, f.Type)
	key, err := s.Cursors.Decode(p.TenantID, query, after)
	if err != nil {
		return nil, err
	}
	rows, err := s.Store.Events(ctx, p.TenantID, f, key, n)
	if err != nil {
		return nil, err
	}
	edges, info := page(rows, n, key, func(e *domain.Event) string { return e.ID },
		func(k string) string { return s.Cursors.Encode(p.TenantID, query, k) },
		func(c string, e *domain.Event) EventEdge { return EventEdge{Cursor: c, Node: e} })
	return &EventConnection{Edges: edges, connection: connection{PageInfo: info, count: func(ctx context.Context) (int, error) {
		return s.Store.CountEvents(ctx, p.TenantID, f)
	}}}, nil
}

// EnrollmentTokens pages through the caller's enrollment tokens, newest first (ADMIN).
func (s *Service) EnrollmentTokens(ctx context.Context, first *int, after *string) (*EnrollmentTokenConnection, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	n, err := limit(first)
	if err != nil {
		return nil, err
	}
	const query = "enrollment-tokens"
	key, err := s.Cursors.Decode(p.TenantID, query, after)
	if err != nil {
		return nil, err
	}
	rows, err := s.Store.EnrollmentTokens(ctx, p.TenantID, key, n)
	if err != nil {
		return nil, err
	}
	edges, info := page(rows, n, key, func(t *domain.EnrollmentToken) string { return t.ID },
		func(k string) string { return s.Cursors.Encode(p.TenantID, query, k) },
		func(c string, t *domain.EnrollmentToken) EnrollmentTokenEdge {
			return EnrollmentTokenEdge{Cursor: c, Node: t}
		})
	return &EnrollmentTokenConnection{Edges: edges, connection: connection{PageInfo: info, count: func(ctx context.Context) (int, error) {
		return s.Store.CountEnrollmentTokens(ctx, p.TenantID)
	}}}, nil
}

// Summary is the fleet summary with every identity status present (zero where none).
type Summary struct {
	ByStatus       map[domain.AgentStatus]int
	TotalAssets    int
	Online         int
	ByOSName       []store.Count
	ByAgentVersion []store.Count
	// Conflicts counts the identities with an open clone conflict.
	Conflicts int
}

// FleetSummary counts the caller's fleet, optionally of one site.
func (s *Service) FleetSummary(ctx context.Context, siteID *string) (*Summary, error) {
	p, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	sum, err := s.Store.FleetSummary(ctx, p.TenantID, siteID, s.OnlineSince())
	if err != nil {
		return nil, err
	}
	out := &Summary{ByStatus: map[domain.AgentStatus]int{}, TotalAssets: sum.TotalAssets, Online: sum.Online,
		ByOSName: sum.ByOSName, ByAgentVersion: sum.ByAgentVersion}
	for _, c := range sum.ByStatus {
		if c.Key != nil {
			out.ByStatus[domain.AgentStatus(*c.Key)] = c.Count
		}
	}
	if out.Conflicts, err = s.Store.CountConflicts(ctx, p.TenantID, siteID); err != nil {
		return nil, err
	}
	return out, nil
}
