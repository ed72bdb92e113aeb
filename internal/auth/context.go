package auth

import (
	"context"

	"github.com/oneprotect/telemetry/internal/domain"
)

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *domain.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the authenticated principal, or nil for an anonymous call.
func PrincipalFrom(ctx context.Context) *domain.Principal {
	p, _ := ctx.Value(principalKey{}).(*domain.Principal)
	return p
}

// The checks below are what every service method calls first. Directives repeat them at the
// GraphQL edge, but the services do not rely on that (the REST shim has no directives).

// Authenticated returns the caller or UNAUTHENTICATED.
func Authenticated(ctx context.Context) (*domain.Principal, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		if err := FailedAuthentication(ctx); err != nil {
			return nil, err
		}
		return nil, domain.ErrUnauthenticated
	}
	return p, nil
}

// RequireRole returns the caller if it is a USER with at least role (ADMIN includes VIEWER).
func RequireRole(ctx context.Context, role domain.Role) (*domain.Principal, error) {
	p, err := Authenticated(ctx)
	if err != nil {
		return nil, err
	}
	if !HasRole(p, role) {
		return nil, domain.ErrForbidden
	}
	return p, nil
}

// HasRole reports whether p is a USER whose role includes role.
func HasRole(p *domain.Principal, role domain.Role) bool {
	if !p.IsUser() {
		return false
	}
	return p.Role == domain.RoleAdmin || p.Role == role
}

// RequireServiceAccount returns the caller if it is a service account.
func RequireServiceAccount(ctx context.Context) (*domain.Principal, error) {
	p, err := Authenticated(ctx)
	if err != nil {
		return nil, err
	}
	if p.Kind != domain.KindServiceAccount {
		return nil, &domain.Error{Code: domain.CodeServiceAccountRequired, Message: "only an agent or collector service account may send heartbeats"}
	}
	return p, nil
}
