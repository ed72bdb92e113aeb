package graph

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vikstrous/dataloadgen"

	"github.com/oneprotect/telemetry/graph/loaders"
	"github.com/oneprotect/telemetry/graph/model"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/fleet"
	"github.com/oneprotect/telemetry/internal/live"
	"github.com/oneprotect/telemetry/internal/store"
)

// Small helpers the resolvers share, kept out of the generated-and-edited resolver file.

func siteLoader(l *loaders.Loaders) *dataloadgen.Loader[string, *domain.Site] { return l.Site }
func collectorLoader(l *loaders.Loaders) *dataloadgen.Loader[string, *domain.Collector] {
	return l.Collector
}
func assetLoader(l *loaders.Loaders) *dataloadgen.Loader[string, *domain.Asset] { return l.Asset }
func identityLoader(l *loaders.Loaders) *dataloadgen.Loader[string, *domain.AgentIdentity] {
	return l.AgentIdentity
}
func principalLoader(l *loaders.Loaders) *dataloadgen.Loader[string, *domain.Principal] {
	return l.Principal
}

func decodeJSONObject(raw json.RawMessage) (map[string]any, error) {
	m := map[string]any{}
	if len(raw) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func fleetSummary(s *fleet.Summary) *model.FleetSummary {
	out := &model.FleetSummary{TotalAssets: s.TotalAssets, Online: s.Online, Offline: s.TotalAssets - s.Online, Conflicts: s.Conflicts}
	for _, st := range []domain.AgentStatus{domain.StatusEnrolled, domain.StatusActive, domain.StatusStale, domain.StatusRevoked} {
		out.IdentitiesByStatus = append(out.IdentitiesByStatus, &model.StatusCount{Status: st, Count: s.ByStatus[st]})
	}
	for _, c := range s.ByOSName {
		out.ByOsName = append(out.ByOsName, &model.NamedCount{Name: c.Key, Count: c.Count})
	}
	for _, c := range s.ByAgentVersion {
		out.ByAgentVersion = append(out.ByAgentVersion, &model.NamedCount{Name: c.Key, Count: c.Count})
	}
	if out.ByOsName == nil {
		out.ByOsName = []*model.NamedCount{}
	}
	if out.ByAgentVersion == nil {
		out.ByAgentVersion = []*model.NamedCount{}
	}
	return out
}

// assetUpdates streams the caller's assets as accepted heartbeats change them. The broker
// reads each update once per tenant, with loaders shared by all the subscribers it reaches;
// this subscription resolves the update's nested fields with those loaders. A subscription
// takes a slot on its connection and one of its principal's, or is refused RATE_LIMITED.
func (r *Resolver) assetUpdates(ctx context.Context, siteID *string) (<-chan *domain.Asset, error) {
	p, err := auth.RequireRole(ctx, domain.RoleViewer)
	if err != nil {
		return nil, err
	}
	conn, holder := wsConnFrom(ctx), loaders.HolderFrom(ctx)
	if conn == nil || holder == nil {
		return nil, errSubscriptionTransport()
	}
	release, ok := conn.acquire(p.ID)
	if !ok {
		// Reported as an `error` message (not `next`), which ends the operation.
		transport.AddSubscriptionError(ctx, &gqlerror.Error{
			Message: fmt.Sprintf("too many subscriptions (at most %d per connection and %d per principal)",
				r.gate.limits.MaxSubscriptionsPerConnection, r.gate.limits.MaxSubscriptionsPerPrincipal),
			Extensions: map[string]any{"code": "RATE_LIMITED"},
		})
		out := make(chan *domain.Asset)
		close(out)
		return out, nil
	}
	updates := r.Live.Subscribe(ctx, p.TenantID, siteID)
	out := make(chan *domain.Asset)
	go func() {
		defer close(out)
		defer release()
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-updates:
				if l, ok := d.Shared.(*loaders.Loaders); ok {
					holder.Set(l)
				}
				select {
				case out <- d.Asset:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// liveLoader reads a batch of updated assets for the broker: one statement per tenant and
// batch, the assets primed into loaders that the batch's subscribers share.
func liveLoader(s *store.Store, onlineSince func() int64) live.Loader {
	return func(ctx context.Context, tenantID string, assetIDs []string) ([]*domain.Asset, any, error) {
		assets, err := s.AssetsByID(ctx, tenantID, assetIDs, onlineSince())
		if err != nil {
			return nil, nil, err
		}
		l := loaders.NewShared(s, tenantID, onlineSince)
		for _, a := range assets {
			l.Asset.Prime(a.ID, a)
		}
		return assets, l, nil
	}
}

func errSubscriptionTransport() *gqlerror.Error {
	return &gqlerror.Error{Message: "subscriptions are served over WebSocket (graphql-transport-ws) only",
		Extensions: map[string]any{"code": "INVALID_REQUEST"}}
}

// subscriptionOps prepares subscription operations: one refused at once when it did not
// come over a websocket (over POST it would wait for an update that may never come), and
// a loader holder for each one that did.
type subscriptionOps struct{}

func (subscriptionOps) ExtensionName() string                   { return "SubscriptionOps" }
func (subscriptionOps) Validate(graphql.ExecutableSchema) error { return nil }

func (subscriptionOps) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation != nil && oc.Operation.Operation == ast.Subscription && wsConnFrom(ctx) == nil && ctx.Value(getKey{}) == nil {
		return errSubscriptionTransport()
	}
	return nil
}

func (subscriptionOps) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if oc := graphql.GetOperationContext(ctx); oc.Operation != nil && oc.Operation.Operation == ast.Subscription {
		ctx, _ = loaders.WithHolder(ctx)
	}
	return next(ctx)
}
