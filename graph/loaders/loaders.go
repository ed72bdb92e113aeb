// Package loaders batches the lookups behind nested GraphQL fields (an asset's site and
// agent, an identity's collector, ...) with vikstrous/dataloadgen mapped loaders: a page of
// any size costs one statement per kind of object, and a mapped loader cannot misalign keys.
// Loaders are made per request and bound to the caller's tenant, so a batch can never
// return another tenant's rows.
package loaders

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/vikstrous/dataloadgen"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/store"
)

// Loaders holds one loader per kind of object.
type Loaders struct {
	Site          *dataloadgen.Loader[string, *domain.Site]
	Collector     *dataloadgen.Loader[string, *domain.Collector]
	AgentIdentity *dataloadgen.Loader[string, *domain.AgentIdentity]
	Asset         *dataloadgen.Loader[string, *domain.Asset]
	Principal     *dataloadgen.Loader[string, *domain.Principal]
}

type key struct{}

// New makes loaders for one tenant and one request. onlineSince gives the instant that
// decides online.
func New(s *store.Store, tenantID string, onlineSince func() int64) *Loaders {
	return newLoaders(s, tenantID, onlineSince)
}

// NewUncached makes loaders that batch but do not cache, for a long-lived subscription
// connection whose updates must not be answered from what an earlier update loaded.
func NewUncached(s *store.Store, tenantID string, onlineSince func() int64) *Loaders {
	return newLoaders(s, tenantID, onlineSince, dataloadgen.WithoutCache())
}

func newLoaders(s *store.Store, tenantID string, onlineSince func() int64, extra ...dataloadgen.Option) *Loaders {
	opts := append([]dataloadgen.Option{dataloadgen.WithWait(time.Millisecond), dataloadgen.WithBatchCapacity(1000)}, extra...)
	return &Loaders{
		Site: dataloadgen.NewMappedLoader(mapped(func(ctx context.Context, ids []string) ([]*domain.Site, error) {
			return s.SitesByID(ctx, tenantID, ids)
		}, func(v *domain.Site) string { return v.ID }), opts...),
		Collector: dataloadgen.NewMappedLoader(mapped(func(ctx context.Context, ids []string) ([]*domain.Collector, error) {
			return s.CollectorsByID(ctx, tenantID, ids)
		}, func(v *domain.Collector) string { return v.ID }), opts...),
		AgentIdentity: dataloadgen.NewMappedLoader(mapped(func(ctx context.Context, ids []string) ([]*domain.AgentIdentity, error) {
			return s.AgentIdentitiesByID(ctx, tenantID, ids)
		}, func(v *domain.AgentIdentity) string { return v.AgentID }), opts...),
		Asset: dataloadgen.NewMappedLoader(mapped(func(ctx context.Context, ids []string) ([]*domain.Asset, error) {
			return s.AssetsByID(ctx, tenantID, ids, onlineSince())
		}, func(v *domain.Asset) string { return v.ID }), opts...),
		Principal: dataloadgen.NewMappedLoader(mapped(func(ctx context.Context, ids []string) ([]*domain.Principal, error) {
			return s.PrincipalsByID(ctx, tenantID, ids)
		}, func(v *domain.Principal) string { return v.ID }), opts...),
	}
}

func mapped[V any](list func(context.Context, []string) ([]V, error), id func(V) string) func(context.Context, []string) (map[string]V, error) {
	return func(ctx context.Context, keys []string) (map[string]V, error) {
		rows, err := list(ctx, keys)
		if err != nil {
			return nil, err
		}
		m := make(map[string]V, len(rows))
		for _, r := range rows {
			m[id(r)] = r
		}
		return m, nil
	}
}

// Middleware puts loaders for the authenticated caller's tenant into the request context.
func Middleware(s *store.Store, onlineSince func() int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := auth.PrincipalFrom(r.Context()); p != nil {
			r = r.WithContext(With(r.Context(), New(s, p.TenantID, onlineSince)))
		}
		next.ServeHTTP(w, r)
	})
}

// With returns ctx carrying l.
func With(ctx context.Context, l *Loaders) context.Context { return context.WithValue(ctx, key{}, l) }

// For returns the request's loaders; nil without an authenticated caller.
func For(ctx context.Context) *Loaders {
	l, _ := ctx.Value(key{}).(*Loaders)
	return l
}

// Load loads one object, nil when it does not exist in the tenant (or there is no caller).
func Load[V any](ctx context.Context, pick func(*Loaders) *dataloadgen.Loader[string, *V], id string) (*V, error) {
	l := For(ctx)
	if l == nil {
		return nil, domain.ErrUnauthenticated
	}
	v, err := pick(l).Load(ctx, id)
	if errors.Is(err, dataloadgen.ErrNotFound) {
		return nil, nil
	}
	return v, err
}
