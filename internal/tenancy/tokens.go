package tenancy

import (
	"context"
	"errors"
	"time"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// The lifecycle of user API tokens (ADMIN): list, mint, revoke.

// Token listing and lifetime bounds.
const (
	DefaultTokenList = 100
	MaxTokenList     = 500
	MaxTokenTTL      = 5 * 365 * 24 * time.Hour
)

// APITokens lists the user tokens of the caller's tenant, newest first, optionally of one
// user; never the secret.
func (s *Service) APITokens(ctx context.Context, principalID *string, first *int) ([]*domain.APIToken, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	limit := DefaultTokenList
	if first != nil {
		if *first < 0 || *first > MaxTokenList {
			return nil, domain.Invalid("first", "first must be between 0 and %d", MaxTokenList)
		}
		limit = *first
	}
	if principalID != nil && !ids.Valid(*principalID) {
		return []*domain.APIToken{}, nil // no such principal in any tenant
	}
	return s.Store.UserAPITokens(ctx, p.TenantID, principalID, limit)
}

// CreateAPIToken mints a token for a user of the caller's tenant; the secret is returned
// once. ttlSeconds nil means the token does not expire. A principal that is not a user of
// this tenant is NOT_FOUND.
func (s *Service) CreateAPIToken(ctx context.Context, principalID string, ttlSeconds *int) (*domain.APIToken, string, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, "", err
	}
	var expires *time.Time
	if ttlSeconds != nil {
		ttl := time.Duration(*ttlSeconds) * time.Second
		if *ttlSeconds < 1 || ttl > MaxTokenTTL {
			return nil, "", domain.Invalid("ttlSeconds", "ttlSeconds must be between 1 and %d", int64(MaxTokenTTL/time.Second))
		}
		at := s.Now().Add(ttl)
		expires = &at
	}
	notFound := &domain.Error{Code: domain.CodeNotFound, Field: "principalId", Message: "user not found"}
	if !ids.Valid(principalID) {
		return nil, "", notFound
	}
	users, err := s.Store.PrincipalsByID(ctx, p.TenantID, []string{principalID})
	if err != nil {
		return nil, "", err
	}
	if len(users) == 0 || !users[0].IsUser() {
		return nil, "", notFound
	}
	secret, hash := auth.NewToken(auth.PrefixUser)
	tok, err := s.Store.CreateAPIToken(ctx, p.TenantID, principalID,
		store.NewAPIToken{ID: ids.New(), Hash: hash, Prefix: auth.DisplayPrefix(secret), ExpiresAt: expires}, s.Now())
	if err != nil {
		return nil, "", err
	}
	return tok, secret, nil
}

// RevokeAPIToken revokes a user token of the caller's tenant. Another tenant's token, or a
// service account's, is NOT_FOUND; revoking a revoked token returns it unchanged.
func (s *Service) RevokeAPIToken(ctx context.Context, id string) (*domain.APIToken, error) {
	p, err := auth.RequireRole(ctx, domain.RoleAdmin)
	if err != nil {
		return nil, err
	}
	return s.revoke(ctx, &p.TenantID, id)
}

// RevokeAnyAPIToken revokes any token by id, of any kind and tenant: an operator action
// (`oneprotect token revoke`), outside any tenant.
func (s *Service) RevokeAnyAPIToken(ctx context.Context, id string) (*domain.APIToken, error) {
	return s.revoke(ctx, nil, id)
}

func (s *Service) revoke(ctx context.Context, tenantID *string, id string) (*domain.APIToken, error) {
	notFound := &domain.Error{Code: domain.CodeNotFound, Field: "id", Message: "token not found"}
	if !ids.Valid(id) {
		return nil, notFound
	}
	tok, err := s.Store.RevokeAPIToken(ctx, tenantID, id, s.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if s.TokensChanged != nil {
		s.TokensChanged() // this replica refuses it at once; the others within a second
	}
	return tok, nil
}
