package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"github.com/oneprotect/telemetry/graph/generated"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
)

// Directives are the first gate on every root field. The services check again (the REST
// shim never passes here), so a field that forgot its directive still fails closed.
func Directives() generated.DirectiveRoot {
	return generated.DirectiveRoot{
		Authenticated: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
			if _, err := auth.Authenticated(ctx); err != nil {
				return nil, err
			}
			return next(ctx)
		},
		HasRole: func(ctx context.Context, _ any, next graphql.Resolver, role domain.Role) (any, error) {
			if _, err := auth.RequireRole(ctx, role); err != nil {
				return nil, err
			}
			return next(ctx)
		},
		// SERVICE_ACCOUNT_REQUIRED for a user, as the heartbeat's order of checks says, after
		// the client-certificate checks that come first in it.
		ServiceAccount: func(ctx context.Context, _ any, next graphql.Resolver) (any, error) {
			if fc := graphql.GetFieldContext(ctx); fc != nil {
				if agentID, ok := fc.Args["agentId"].(string); ok {
					if err := auth.CheckRelayCertificate(ctx, agentID); err != nil {
						return nil, err
					}
				}
			}
			if _, err := auth.RequireServiceAccount(ctx); err != nil {
				return nil, err
			}
			return next(ctx)
		},
	}
}
