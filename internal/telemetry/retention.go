package telemetry

import (
	"context"
	"log/slog"
	"time"
)

// Retention keeps the heartbeat log (the asset.telemetry.received events) for Retention: it
// prunes continuously, in small batches with a pause between them, so that pruning a backlog
// never holds the writer for long and heartbeats keep flowing. A repeat of a heartbeat_id is
// recognized while its first copy is kept, that is within the retention.
type Retention struct {
	Service   *Service
	Retention time.Duration
	// Interval between passes; Batch rows per delete; Pause between the deletes of a pass.
	Interval time.Duration
	Batch    int
	Pause    time.Duration
}

// Defaults for the retention job.
const (
	DefaultRetention      = 48 * time.Hour
	DefaultPruneInterval  = time.Second
	DefaultPruneBatch     = 2000
	DefaultPruneBatchWait = 20 * time.Millisecond
)

// Prune deletes every heartbeat older than the retention, batch by batch, and says how many.
func (r *Retention) Prune(ctx context.Context) (int, error) {
	cutoff := r.Service.Now().Add(-r.Retention)
	total := 0
	for {
		n, err := r.Service.Store.PruneHeartbeats(ctx, cutoff, r.Batch)
		total += n
		if err != nil || n < r.Batch {
			return total, err
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(r.Pause):
		}
	}
}

// Run prunes every Interval until ctx ends.
func (r *Retention) Run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
				log.Error("telemetry retention: prune failed", "err", err)
			} else if n > 0 {
				log.Debug("telemetry retention: pruned heartbeats", "count", n)
			}
		}
	}
}
