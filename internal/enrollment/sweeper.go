package enrollment

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/store"
)

// SweepBatch is the default bound of one sweeper transaction, so the write lock is never
// held for long; Service.SweepBatch overrides it.
const SweepBatch = 500

// SweepActor is the actor recorded on agent.stale events.
const SweepActor = "system:stale-sweeper"

// Sweep marks every identity with no activity for staleAfter (or its site's own stale
// window) as STALE, in batches, and returns how many it marked.
func (s *Service) Sweep(ctx context.Context, staleAfter time.Duration) (int, error) {
	now := s.Now()
	// Sites with a stale window of their own (updateSite) are swept by it; each event names
	// the window that applied.
	windows, err := s.Store.SiteStaleWindows(ctx)
	if err != nil {
		return 0, err
	}
	payloads := map[time.Duration]json.RawMessage{}
	payload := func(window time.Duration) json.RawMessage {
		if p, ok := payloads[window]; ok {
			return p
		}
		p, _ := json.Marshal(map[string]any{"stale_after_seconds": int64(window / time.Second),
			"actor_id": SweepActor, "actor_kind": "SYSTEM"})
		payloads[window] = p
		return p
	}
	actor := SweepActor
	batch := s.SweepBatch
	if batch <= 0 {
		batch = SweepBatch
	}
	total := 0
	for {
		n, err := s.Store.SweepStale(ctx, now, staleAfter, batch, func(m store.StaleIdentity) *domain.Event {
			window, ok := windows[[2]string{m.TenantID, m.SiteID}]
			if !ok {
				window = staleAfter
			}
			return &domain.Event{ID: ids.At(now), TenantID: m.TenantID, Type: domain.EventAgentStale,
				AssetID: &m.AssetID, AgentID: &m.AgentID, ActorID: &actor, OccurredAt: now, Payload: payload(window)}
		})
		total += n
		if err != nil || n < batch {
			return total, err
		}
	}
}

// RunSweeper sweeps every interval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, interval, staleAfter time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.Sweep(ctx, staleAfter)
			if err != nil && ctx.Err() == nil {
				log.Error("stale sweep failed", "err", err)
			} else if n > 0 {
				log.Info("identities marked stale", "count", n)
			}
		}
	}
}
