package telemetry

import (
	"context"
	"errors"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/store"
)

// Transports, as the heartbeat counter labels them.
const (
	TransportREST    = "rest"
	TransportGraphQL = "graphql"
)

type transportKey struct{}

// WithTransport tells the service which transport carried the request (for the counter).
func WithTransport(ctx context.Context, transport string) context.Context {
	return context.WithValue(ctx, transportKey{}, transport)
}

func transportOf(ctx context.Context) string {
	if t, ok := ctx.Value(transportKey{}).(string); ok {
		return t
	}
	return "other"
}

// Submit checks and records one heartbeat for agentID, and counts its outcome. claims are the
// identity fields the body named (REST only; nil for GraphQL).
func (s *Service) Submit(ctx context.Context, agentID string, hb *Heartbeat, claims *IdentityClaims) (*Result, error) {
	res, err := s.submit(ctx, agentID, hb, claims)
	s.Count(ctx, res, err)
	return res, err
}

// Count records one heartbeat outcome. Submit calls it; a transport calls it for a heartbeat
// it refused before the service saw it (a bad token, a malformed body).
func (s *Service) Count(ctx context.Context, res *Result, err error) {
	switch {
	case errors.Is(err, store.ErrStorageFull):
		s.storageFullAt.Store(time.Now().UnixNano())
	case err == nil && !res.Duplicate:
		s.storageFullAt.Store(0) // a write went through: there is space again
	}
	if s.Heartbeats == nil {
		return
	}
	outcome := "accepted"
	switch {
	case err != nil && ctx.Err() != nil:
		outcome = "canceled" // the client went away; not an internal error
	case err != nil:
		outcome = string(domain.ErrorCode(err))
	case res.Duplicate:
		outcome = "duplicate"
	}
	s.Heartbeats.WithLabelValues(transportOf(ctx), outcome).Inc()
}

// storageFullHold is how long a heartbeat refused for lack of space keeps StorageFull true
// when nothing else is written: long enough to cover the agents' retries (Retry-After), short
// enough that a replica taken out of a load balancer is tried again once space was freed.
const storageFullHold = 10 * time.Second

// StorageFull reports whether heartbeat writes are failing for lack of space: the latest
// write outcome was "no space" and it is recent. /readyz answers 503 meanwhile.
func (s *Service) StorageFull() bool {
	t := s.storageFullAt.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < storageFullHold
}
