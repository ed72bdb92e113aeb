package store

import (
	"context"
	"time"
)

// The WAL checkpoint, off the writer's path. SQLite's automatic checkpoint runs inside the
// commit that crosses its threshold, on the single writer, so every heartbeat of that batch
// waits for pages to be copied into the database file: at fleet scale, where each heartbeat
// dirties its own pages, that was 12% of the server's CPU, all of it on the writer. So the
// writer connection turns the automatic checkpoint off, and a background job checkpoints
// from a reader connection in PASSIVE mode, which never blocks the writer (it copies what it
// can and leaves the rest for the next round), on the other core.

// checkpointInterval is how often the WAL is copied back. At 10,000 heartbeats/s a quarter
// second is a few thousand pages, a WAL of a few tens of MiB at most.
const checkpointInterval = 250 * time.Millisecond

func (s *Store) startCheckpointer(ctx context.Context) error {
	if _, err := s.W.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
		return err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.stopCheckpoint = func() { close(stop); <-done }
	go func() {
		defer close(done)
		t := time.NewTicker(checkpointInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// A failure (the database busy with another process's checkpoint) is retried on
				// the next tick; nothing depends on one round.
				// (On the plain pool: a background job, not a statement of any request.)
				_, _ = s.R.DB.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
			}
		}
	}()
	return nil
}
