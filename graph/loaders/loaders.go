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
	"sync/atomic"
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
	// Conflict is an identity's open clone conflict, by agent id.
	Conflict *dataloadgen.Loader[string, *store.Conflict]

	// The batch functions behind the loaders, for Fill.
	fetchSites      func(context.Context, []string) (map[string]*domain.Site, error)
	fetchCollectors func(context.Context, []string) (map[string]*domain.Collector, error)
	fetchIdentities func(context.Context, []string) (map[string]*domain.AgentIdentity, error)
	fetchAssets     func(context.Context, []string) (map[string]*domain.Asset, error)
}

// FillSites, FillCollectors, FillAgentIdentities and FillAssets load keys with one call of the
// loader's batch function and prime the loader with what was found, returning it. A page's
// prefetch uses them rather than LoadAll, which hands its keys to the loader one at a time:
// on a busy machine the loader's batch window could close halfway through a page's keys and
// split one statement into two. Errors are left for the nodes' own Loads to report.
func (l *Loaders) FillSites(ctx context.Context, keys []string) []*domain.Site {
	return fill(ctx, l.Site, l.fetchSites, keys)
}

func (l *Loaders) FillCollectors(ctx context.Context, keys []string) []*domain.Collector {
	return fill(ctx, l.Collector, l.fetchCollectors, keys)
}

func (l *Loaders) FillAgentIdentities(ctx context.Context, keys []string) []*domain.AgentIdentity {
	return fill(ctx, l.AgentIdentity, l.fetchIdentities, keys)
}

func (l *Loaders) FillAssets(ctx context.Context, keys []string) []*domain.Asset {
	return fill(ctx, l.Asset, l.fetchAssets, keys)
}

func fill[V any](ctx context.Context, l *dataloadgen.Loader[string, V], fetch func(context.Context, []string) (map[string]V, error), keys []string) []V {
	if len(keys) == 0 {
		return nil
	}
	seen := make(map[string]bool, len(keys))
	unique := make([]string, 0, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			unique = append(unique, k)
		}
	}
	found, err := fetch(ctx, unique)
	if err != nil {
		return nil
	}
	out := make([]V, 0, len(found))
	for _, k := range unique {
		if v, ok := found[k]; ok {
			l.Prime(k, v)
			out = append(out, v)
		}
	}
	return out
}

type key struct{}

// New makes loaders for one tenant and one request. onlineSince gives the instant that
// decides online.
func New(s *store.Store, tenantID string, onlineSince func() int64) *Loaders {
	return newLoaders(s, tenantID, onlineSince, nil)
}

// NewUncached makes loaders that batch but do not cache, for a long-lived subscription
// connection whose updates must not be answered from what an earlier update loaded.
func NewUncached(s *store.Store, tenantID string, onlineSince func() int64) *Loaders {
	return newLoaders(s, tenantID, onlineSince, nil, dataloadgen.WithoutCache())
}

// NewShared makes caching loaders for one batch of live updates, shared by every subscriber
// the batch reaches, so that N subscribers of one update cost one read of each object they
// select. A batch fetch runs with the context of whichever subscriber asked first; it is
// detached from that subscriber's cancellation, since the others wait on the same result.
func NewShared(s *store.Store, tenantID string, onlineSince func() int64) *Loaders {
	return newLoaders(s, tenantID, onlineSince, detached)
}

// detached is the shared loaders' fetch context: the caller's values, not its cancellation.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

func newLoaders(s *store.Store, tenantID string, onlineSince func() int64, fetchCtx func(context.Context) (context.Context, context.CancelFunc), extra ...dataloadgen.Option) *Loaders {
	opts := append([]dataloadgen.Option{dataloadgen.WithWait(time.Millisecond), dataloadgen.WithBatchCapacity(1000)}, extra...)
	l := &Loaders{
		fetchSites: mapped(fetchCtx, func(ctx context.Context, ids []string) ([]*domain.Site, error) {
			return s.SitesByID(ctx, tenantID, ids)
		}, func(v *domain.Site) string { return v.ID }),
		fetchCollectors: mapped(fetchCtx, func(ctx context.Context, ids []string) ([]*domain.Collector, error) {
			return s.CollectorsByID(ctx, tenantID, ids)
		}, func(v *domain.Collector) string { return v.ID }),
		fetchIdentities: mapped(fetchCtx, func(ctx context.Context, ids []string) ([]*domain.AgentIdentity, error) {
			return s.AgentIdentitiesByID(ctx, tenantID, ids)
		}, func(v *domain.AgentIdentity) string { return v.AgentID }),
		fetchAssets: mapped(fetchCtx, func(ctx context.Context, ids []string) ([]*domain.Asset, error) {
			return s.AssetsByID(ctx, tenantID, ids, onlineSince())
		}, func(v *domain.Asset) string { return v.ID }),
	}
	l.Site = dataloadgen.NewMappedLoader(l.fetchSites, opts...)
	l.Collector = dataloadgen.NewMappedLoader(l.fetchCollectors, opts...)
	l.AgentIdentity = dataloadgen.NewMappedLoader(l.fetchIdentities, opts...)
	l.Asset = dataloadgen.NewMappedLoader(l.fetchAssets, opts...)
	l.Principal = dataloadgen.NewMappedLoader(mapped(fetchCtx, func(ctx context.Context, ids []string) ([]*domain.Principal, error) {
		return s.PrincipalsByID(ctx, tenantID, ids)
	}, func(v *domain.Principal) string { return v.ID }), opts...)
	l.Conflict = dataloadgen.NewMappedLoader(mapped(fetchCtx, func(ctx context.Context, ids []string) ([]*store.Conflict, error) {
		return s.ConflictsByAgentID(ctx, tenantID, ids)
	}, func(v *store.Conflict) string { return v.AgentID }), opts...)
	return l
}

func mapped[V any](fetchCtx func(context.Context) (context.Context, context.CancelFunc), list func(context.Context, []string) ([]V, error), id func(V) string) func(context.Context, []string) (map[string]V, error) {
	return func(ctx context.Context, keys []string) (map[string]V, error) {
		if fetchCtx != nil {
			var cancel context.CancelFunc
			ctx, cancel = fetchCtx(ctx)
			defer cancel()
		}
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

// Holder carries the loaders a subscription resolves its current update with: the shared
// loaders of the batch the update was read in. It is set per subscription operation, so a
// query sent over the same websocket never sees a batch's cache.
type Holder struct{ l atomic.Pointer[Loaders] }

type holderKey struct{}

// WithHolder returns ctx carrying a new, empty holder.
func WithHolder(ctx context.Context) (context.Context, *Holder) {
	h := &Holder{}
	return context.WithValue(ctx, holderKey{}, h), h
}

// HolderFrom returns ctx's holder, or nil.
func HolderFrom(ctx context.Context) *Holder {
	h, _ := ctx.Value(holderKey{}).(*Holder)
	return h
}

// Set makes l the loaders of what is resolved next.
func (h *Holder) Set(l *Loaders) { h.l.Store(l) }

// For returns the request's loaders (a subscription's current batch loaders when it has
// some); nil without an authenticated caller.
func For(ctx context.Context) *Loaders {
	if h := HolderFrom(ctx); h != nil {
		if l := h.l.Load(); l != nil {
			return l
		}
	}
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
