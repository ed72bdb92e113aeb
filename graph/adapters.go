package graph

import (
	"context"
	"encoding/json"

	"github.com/vikstrous/dataloadgen"

	"github.com/oneprotect/telemetry/graph/loaders"
	"github.com/oneprotect/telemetry/graph/model"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/fleet"
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
	out := &model.FleetSummary{TotalAssets: s.TotalAssets, Online: s.Online, Offline: s.TotalAssets - s.Online}
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

// assetUpdates streams the caller's assets as accepted heartbeats change them. Each update
// is re-read through the fleet service, so it is tenant-scoped like any query.
func (r *Resolver) assetUpdates(ctx context.Context, siteID *string) (<-chan *domain.Asset, error) {
	p, err := auth.RequireRole(ctx, domain.RoleViewer)
	if err != nil {
		return nil, err
	}
	updates := r.Live.Subscribe(ctx, p.TenantID, siteID)
	out := make(chan *domain.Asset, 16)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case u := <-updates:
				a, err := r.Fleet.Asset(ctx, u.AssetID)
				if err != nil || a == nil {
					continue
				}
				select {
				case out <- a:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
