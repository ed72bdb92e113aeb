package auth

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
)

// epochStore is a TokenStore of one token whose epoch read can be held up.
type epochStore struct {
	hash        string
	epoch       atomic.Int64
	tokenReads  atomic.Int64
	hold        chan struct{} // while open, CredentialEpoch waits for it to close
	epochWaiter sync.WaitGroup
	revoked     atomic.Bool
	// While tokenHold is open, the next token read decides its answer, then waits for it.
	tokenHold   chan struct{}
	tokenWaiter sync.WaitGroup
}

func (s *epochStore) TokenByHash(_ context.Context, hash string, _ time.Time) (*domain.Principal, *domain.APIToken, string, error) {
	s.tokenReads.Add(1)
	if hash != s.hash || s.revoked.Load() {
		return nil, nil, "", nil
	}
	if hold := s.tokenHold; hold != nil {
		s.tokenHold = nil
		s.tokenWaiter.Done()
		<-hold
	}
	return &domain.Principal{ID: "p", TenantID: "t", Kind: domain.KindServiceAccount}, &domain.APIToken{ID: "tok"}, s.hash, nil
}

func (s *epochStore) CredentialEpoch(context.Context) (int64, error) {
	if s.hold != nil {
		s.epochWaiter.Done()
		<-s.hold
	}
	return s.epoch.Load(), nil
}

func (s *epochStore) TouchAPIToken(context.Context, string, time.Time, time.Duration) error {
	return nil
}

// While one request re-reads the credential epoch, the others keep trusting the cache for a
// while (no herd of token reads), until revocationLimit says the last read is too old; a
// moved epoch still empties the cache.
func TestEpochReadUnderWayKeepsTheCacheUntilTheLimit(t *testing.T) {
	const token = "op_agent_test-token"
	store := &epochStore{hash: HashToken(token)}
	a := NewAuthenticator(store, time.Now)
	var clock atomic.Int64
	a.since = func() time.Duration { return time.Duration(clock.Load()) }
	ctx := context.Background()
	authenticate := func() {
		t.Helper()
		if _, err := a.Authenticate(ctx, token); err != nil {
			t.Fatalf("authenticate: %v", err)
		}
	}

	clock.Store(int64(time.Second))
	authenticate() // reads the epoch, then the token, and caches it
	authenticate()
	if n := store.tokenReads.Load(); n != 1 {
		t.Fatalf("%d token reads for a cached token, want 1", n)
	}

	// The window has passed: one request reads the epoch, and that read is held up.
	clock.Add(int64(revocationWindow + time.Millisecond))
	store.hold = make(chan struct{})
	store.epochWaiter.Add(1)
	done := make(chan error, 1)
	go func() { _, err := a.Authenticate(ctx, token); done <- err }()
	store.epochWaiter.Wait()
	for range 10 {
		authenticate()
	}
	if n := store.tokenReads.Load(); n != 1 {
		t.Fatalf("%d token reads while the epoch was being read within the limit, want 1", n)
	}
	// Past the limit the cache vouches for nothing: every request reads its token.
	clock.Store(int64(time.Second + revocationLimit))
	authenticate()
	if n := store.tokenReads.Load(); n != 2 {
		t.Fatalf("%d token reads past the limit, want 2", n)
	}
	store.epoch.Add(1) // a revocation commits before the held read returns
	close(store.hold)
	if err := <-done; err != nil {
		t.Fatalf("the request that read the epoch: %v", err)
	}
	// The held request saw the epoch move: it emptied the cache and read its token again.
	if n := store.tokenReads.Load(); n != 3 {
		t.Fatalf("%d token reads after the epoch moved, want 3 (the cached entry was used)", n)
	}
	store.hold = nil
	clock.Add(int64(revocationLimit))
	store.epoch.Add(1)
	authenticate()
	if n := store.tokenReads.Load(); n != 4 {
		t.Fatalf("%d token reads after the epoch moved again, want 4", n)
	}
}

// A token read that began before a revocation and ends after the purge it caused must not be
// cached: the token would stay trusted until the next revocation.
func TestTokenReadUnderWayIsNotCachedAfterAPurge(t *testing.T) {
	const token = "op_agent_revoked-token"
	hold := make(chan struct{})
	store := &epochStore{hash: HashToken(token), tokenHold: hold}
	store.tokenWaiter.Add(1)
	a := NewAuthenticator(store, time.Now)
	var clock atomic.Int64
	clock.Store(int64(time.Second))
	a.since = func() time.Duration { return time.Duration(clock.Load()) }
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { _, err := a.Authenticate(ctx, token); first <- err }()
	store.tokenWaiter.Wait() // the read found the token valid, and waits
	store.revoked.Store(true)
	store.epoch.Add(1)
	clock.Add(int64(revocationWindow + time.Millisecond))
	if _, err := a.Authenticate(ctx, "op_agent_another-token"); err == nil {
		t.Fatal("an unknown token was accepted")
	} // this request read the moved epoch and emptied the cache
	close(hold)
	if err := <-first; err != nil {
		t.Fatalf("the read under way: %v (it began before the revocation)", err)
	}
	if _, err := a.Authenticate(ctx, token); err == nil {
		t.Fatal("a revoked token was accepted from the cache: a read under way cached it after the purge")
	}
}
