package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/oneprotect/telemetry/graph/loaders"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/fleet"
)

// Prefetching. gqlgen resolves the nodes of a page concurrently, and a loader's batch closes
// after a short wait, so on a busy machine a page of 500 could be split into several batches.
// A listing therefore loads what its selection will ask for (agents, then collectors, then
// sites) with one batch call per kind before returning (Loaders.Fill*); the nodes' own Loads
// then find the loaders' cache filled. The cost of a page is a fixed number of statements,
// whatever its size or the machine's load.

// selectedNames returns every field name selected under the current field, fragments
// included (each fragment walked once).
func selectedNames(ctx context.Context) map[string]bool {
	names := map[string]bool{}
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return names
	}
	seen := map[string]bool{}
	var walk func(ast.SelectionSet)
	walk = func(set ast.SelectionSet) {
		for _, sel := range set {
			switch s := sel.(type) {
			case *ast.Field:
				names[s.Name] = true
				walk(s.SelectionSet)
			case *ast.InlineFragment:
				walk(s.SelectionSet)
			case *ast.FragmentSpread:
				if s.Definition != nil && !seen[s.Name] {
					seen[s.Name] = true
					walk(s.Definition.SelectionSet)
				}
			}
		}
	}
	walk(fc.Field.Selections)
	return names
}

// prefetch loads the agents, collectors and sites a page's selection will ask for. Errors
// are left for the nodes' own Loads to report.
func prefetch(ctx context.Context, assets []*domain.Asset, idents []*domain.AgentIdentity) {
	l := loaders.For(ctx)
	if l == nil {
		return
	}
	names := selectedNames(ctx)
	for _, a := range assets {
		l.Asset.Prime(a.ID, a)
	}
	if names["agent"] {
		keys := make([]string, 0, len(assets))
		for _, a := range assets {
			keys = append(keys, a.AgentID)
		}
		idents = append(idents, l.FillAgentIdentities(ctx, keys)...)
	} else {
		for _, id := range idents {
			l.AgentIdentity.Prime(id.AgentID, id)
		}
	}
	if names["asset"] && len(idents) > 0 {
		var keys []string
		for _, id := range idents {
			if id != nil {
				keys = append(keys, id.AssetID)
			}
		}
		l.FillAssets(ctx, keys)
	}
	var siteIDs []string
	if names["collector"] {
		var keys []string
		for _, id := range idents {
			if id != nil && id.CollectorID != nil {
				keys = append(keys, *id.CollectorID)
			}
		}
		for _, c := range l.FillCollectors(ctx, keys) {
			siteIDs = append(siteIDs, c.SiteID)
		}
	}
	if names["site"] {
		for _, a := range assets {
			siteIDs = append(siteIDs, a.SiteID)
		}
		for _, id := range idents {
			if id != nil {
				siteIDs = append(siteIDs, id.SiteID)
			}
		}
		l.FillSites(ctx, siteIDs)
	}
}

// prefetchAssets wraps a listing's answer: prefetchAssets(ctx)(r.Fleet.Assets(...)).
func prefetchAssets(ctx context.Context) func(*fleet.AssetConnection, error) (*fleet.AssetConnection, error) {
	return func(c *fleet.AssetConnection, err error) (*fleet.AssetConnection, error) {
		if err != nil {
			return nil, err
		}
		assets := make([]*domain.Asset, len(c.Edges))
		for i, e := range c.Edges {
			assets[i] = e.Node
		}
		prefetch(ctx, assets, nil)
		return c, nil
	}
}

// prefetchIdentities is prefetchAssets for identity listings.
func prefetchIdentities(ctx context.Context) func(*fleet.AgentIdentityConnection, error) (*fleet.AgentIdentityConnection, error) {
	return func(c *fleet.AgentIdentityConnection, err error) (*fleet.AgentIdentityConnection, error) {
		if err != nil {
			return nil, err
		}
		idents := make([]*domain.AgentIdentity, len(c.Edges))
		for i, e := range c.Edges {
			idents[i] = e.Node
		}
		prefetch(ctx, nil, idents)
		return c, nil
	}
}
