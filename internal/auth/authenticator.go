package auth

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/oneprotect/telemetry/internal/domain"
)

// TokenStore finds the principal of a live (unexpired, unrevoked) token by its hash; no
// such token is a nil principal and a nil error.
type TokenStore interface {
	PrincipalByTokenHash(ctx context.Context, hash string, now time.Time) (*domain.Principal, string, error)
}

// Authenticator turns bearer tokens into principals. Valid tokens are cached by hash for a
// short while (principals never change; tokens have no revocation call yet, and an expiry is
// re-checked on every hit), which takes a database read off every heartbeat.
type Authenticator struct {
	Tokens TokenStore
	Now    func() time.Time
	cache  *expirable.LRU[string, *domain.Principal]
}

// Token cache bounds: entries and how long one is trusted before the database is asked again.
const (
	tokenCacheSize = 200_000
	tokenCacheTTL  = 30 * time.Second
)

// NewAuthenticator returns an Authenticator with its cache.
func NewAuthenticator(tokens TokenStore, now func() time.Time) *Authenticator {
	return &Authenticator{Tokens: tokens, Now: now, cache: expirable.NewLRU[string, *domain.Principal](tokenCacheSize, nil, tokenCacheTTL)}
}

// Authenticate returns the principal of token, or ErrUnauthenticated for an unknown, expired
// or revoked one. A database failure is returned as is (the caller answers 503, not 401).
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*domain.Principal, error) {
	hash := HashToken(token)
	if a.cache != nil {
		if p, ok := a.cache.Get(hash); ok {
			if p.ExpiresAt == nil || a.Now().Before(*p.ExpiresAt) {
				return p, nil
			}
			a.cache.Remove(hash)
			return nil, domain.ErrUnauthenticated
		}
	}
	p, stored, err := a.Tokens.PrincipalByTokenHash(ctx, hash, a.Now())
	if err != nil {
		return nil, err // the database failed: not the caller's fault, so not a 401
	}
	if p == nil || !HashesEqual(stored, hash) {
		return nil, domain.ErrUnauthenticated
	}
	if a.cache != nil {
		a.cache.Add(hash, p)
	}
	return p, nil
}

type authErrKey struct{}

// Middleware puts the principal of a valid `Authorization: Bearer` header into the request
// context. It never rejects: an anonymous call reaches the handler, and the services refuse
// what needs a principal (GraphQL introspection stays open). A header that was present but
// invalid is remembered so that a database outage answers 503 rather than 401.
// Tokens in the URL are never read.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		if header == "" {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := ParseBearer(header)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		p, err := a.Authenticate(r.Context(), token)
		ctx := r.Context()
		if err == nil {
			ctx = WithPrincipal(ctx, p)
		} else if !errors.Is(err, domain.ErrUnauthenticated) {
			ctx = context.WithValue(ctx, authErrKey{}, err)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// FailedAuthentication returns the error that kept a presented token from being checked
// (the database failed), if any.
func FailedAuthentication(ctx context.Context) error {
	err, _ := ctx.Value(authErrKey{}).(error)
	return err
}
