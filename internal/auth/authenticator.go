package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/flatcache"
)

// TokenStore finds live tokens and tells when any token was revoked.
type TokenStore interface {
	// TokenByHash returns the principal and token of a live (unexpired, unrevoked) token
	// by its hash, and the stored hash; no such token is all nil and a nil error.
	TokenByHash(ctx context.Context, hash string, now time.Time) (*domain.Principal, *domain.APIToken, string, error)
	// CredentialEpoch moves with every revocation, in the revoking transaction.
	CredentialEpoch(ctx context.Context) (int64, error)
	// TouchAPIToken records a use of the token, unless one was recorded less than every ago.
	TouchAPIToken(ctx context.Context, id string, now time.Time, every time.Duration) error
}

// Authenticator turns bearer tokens into principals. Valid tokens are cached by hash, which
// takes a database read off every heartbeat, but a revoked token must be refused within a
// second on every replica. So a cached entry is trusted only while the credential epoch was
// read less than revocationWindow ago; the first request after that reads the epoch again
// (one tiny read per replica, not per token) and drops the whole cache when it moved. While
// that read is under way, the other requests keep trusting the last one up to
// revocationLimit. Expiry is checked on every hit.
type Authenticator struct {
	Tokens TokenStore
	Now    func() time.Time
	Log    *slog.Logger
	cache  *flatcache.Cache[*domain.Principal]

	epochMu    sync.Mutex
	epoch      int64
	epochKnown bool
	verified   atomic.Int64 // monotonic nanoseconds (since start) when the last epoch read began
	purges     atomic.Uint64
	start      time.Time
	// since is the monotonic time since start (a test's clock can stand in for it).
	since func() time.Duration
}

// Token cache bounds.
const (
	// tokenCacheBytes holds a million-agent fleet's tokens (an agent's entry takes about 350
	// bytes): at fleet scale every heartbeat comes from another agent, and a smaller cache
	// would make most of them a database read. The memory is taken as entries arrive.
	tokenCacheBytes = 512 << 20
	// tokenCacheTTL bounds how long an entry lives; revocation and expiry do not wait for it
	// (the credential epoch and ExpiresAt are checked on every hit). It is longer than any
	// sane heartbeat interval, so an agent's token stays cached from beat to beat.
	tokenCacheTTL = 15 * time.Minute
	// revocationWindow is how long an epoch read vouches for the cache. A revocation is
	// refused at most this long (plus one epoch read) after it committed.
	revocationWindow = 500 * time.Millisecond
	// revocationLimit is how long the last epoch read vouches for the cache while another
	// request is reading the epoch again. On a busy server that read can wait a while for a
	// core or a connection, and without this every request meanwhile would read its token
	// from the database: under overload those reads took 15% of the CPU, slowing the epoch
	// read further (BENCHMARKS.md, "Shedding load"). Past the limit they do read it, so a
	// revocation is still refused within a second.
	revocationLimit = 900 * time.Millisecond
	// LastUsedResolution is how coarse a token's last-used time is: it is written at most
	// this often per token (and only for user tokens; agents' tokens are not stamped).
	LastUsedResolution = time.Minute
)

// NewAuthenticator returns an Authenticator with its cache.
func NewAuthenticator(tokens TokenStore, now func() time.Time) *Authenticator {
	a := &Authenticator{Tokens: tokens, Now: now, start: time.Now(),
		cache: flatcache.New(tokenCacheBytes, tokenCacheTTL, principalCodec)}
	a.since = func() time.Duration { return time.Since(a.start) }
	return a
}

// Authenticate returns the principal of token, or ErrUnauthenticated for an unknown, expired
// or revoked one. A database failure is returned as is (the caller answers 503, not 401).
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*domain.Principal, error) {
	hash := HashToken(token)
	// Trust first, then read the cache: an entry read before a purge that the trust check
	// made would be served though its epoch moved. The check also reads the epoch before the
	// token below, so that an entry cached then is vouched for by an epoch no newer than the
	// state it was read in.
	if a.cache != nil && a.cacheTrusted(ctx) {
		if p, ok := a.cache.Get(hash); ok {
			if p.ExpiresAt == nil || a.Now().Before(*p.ExpiresAt) {
				return p, nil
			}
			a.cache.Remove(hash)
			return nil, domain.ErrUnauthenticated
		}
	}
	purges := a.purges.Load()
	now := a.Now()
	p, tok, stored, err := a.Tokens.TokenByHash(ctx, hash, now)
	if err != nil {
		return nil, err // the database failed: not the caller's fault, so not a 401
	}
	if p == nil || !HashesEqual(stored, hash) {
		return nil, domain.ErrUnauthenticated
	}
	if p.IsUser() && (tok.LastUsedAt == nil || now.Sub(*tok.LastUsedAt) >= LastUsedResolution) {
		if err := a.Tokens.TouchAPIToken(ctx, tok.ID, now, LastUsedResolution); err != nil && a.Log != nil {
			a.Log.Warn("recording a token's last use failed", "err", err) // the call itself goes on
		}
	}
	if a.cache != nil && a.epochFresh() {
		a.cache.Add(hash, p)
		if a.purges.Load() != purges {
			// The cache was emptied while the token was read: the read may predate the
			// revocation that emptied it, so it must not outlive the purge.
			a.cache.Remove(hash)
		}
	}
	return p, nil
}

// Forget drops every cached token at once (this replica revoked one).
func (a *Authenticator) Forget() {
	if a.cache != nil {
		a.purge()
	}
}

// purge empties the cache, and counts it first so that a token read under way is not
// cached after it (Authenticate).
func (a *Authenticator) purge() {
	a.purges.Add(1)
	a.cache.Purge()
}

func (a *Authenticator) epochFresh() bool { return a.verifiedWithin(revocationWindow) }

// verifiedWithin reports whether the last epoch read that vouched for the cache began less
// than d ago.
func (a *Authenticator) verifiedWithin(d time.Duration) bool {
	v := a.verified.Load()
	return v != 0 && a.since()-time.Duration(v) < d
}

// cacheTrusted reports whether cached entries may be used: the epoch was read recently, or
// it is read now and has not moved. When it moved, the cache is emptied. When another
// request is reading it, the last read vouches up to revocationLimit; past that, or when the
// read fails, the caller asks the database instead.
func (a *Authenticator) cacheTrusted(ctx context.Context) bool {
	if a.epochFresh() {
		return true
	}
	if !a.epochMu.TryLock() {
		return a.verifiedWithin(revocationLimit)
	}
	defer a.epochMu.Unlock()
	if a.epochFresh() {
		return true
	}
	began := a.since()
	epoch, err := a.Tokens.CredentialEpoch(ctx)
	if err != nil {
		return false
	}
	moved := !a.epochKnown || epoch != a.epoch
	if moved {
		// Entries cached before the first read are vouched for by nothing: drop them too.
		a.purge()
		a.epoch, a.epochKnown = epoch, true
	}
	a.verified.Store(max(int64(began), 1))
	return !moved
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

// principalCodec stores a principal in the token cache, which holds no pointers.
var principalCodec = flatcache.Codec[*domain.Principal]{
	Append: func(b []byte, p *domain.Principal) []byte {
		for _, s := range []string{p.ID, p.TenantID, string(p.Kind), string(p.Role), p.Name,
			string(p.ActorKind), p.ActorID, p.TokenID, p.TokenHash} {
			b = flatcache.AppendString(b, s)
		}
		b = flatcache.AppendOptTime(b, p.ExpiresAt)
		return flatcache.AppendTime(b, p.TokenIssuedAt)
	},
	Decode: func(r *flatcache.Reader) (*domain.Principal, bool) {
		p := &domain.Principal{ID: r.String(), TenantID: r.String(), Kind: domain.PrincipalKind(r.String()),
			Role: domain.Role(r.String()), Name: r.String(), ActorKind: domain.ActorKind(r.String()),
			ActorID: r.String(), TokenID: r.String(), TokenHash: r.String()}
		p.ExpiresAt = r.OptTime()
		p.TokenIssuedAt = r.Time()
		return p, !r.Failed()
	},
}
