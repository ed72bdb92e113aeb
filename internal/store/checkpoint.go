package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strconv"
	"time"
)

// The WAL checkpoint, off the writer's path. SQLite's automatic checkpoint runs inside the
// commit that crosses its threshold, on the single writer, so every heartbeat of that batch
// waits for pages to be copied into the database file: at fleet scale, where each heartbeat
// dirties its own pages, that was 12% of the server's CPU, all of it on the writer. So the
// writer connection turns the automatic checkpoint off, and a background job checkpoints
// from a connection of its own in PASSIVE mode, which never blocks the writer (it copies what
// it can and leaves the rest for the next round), on the other core.
//
// PASSIVE alone lets the WAL file grow without bound under a steady load: SQLite starts the
// WAL again from its beginning only when a write finds every frame copied back, and with a
// writer that never pauses the copy never catches up with the end. A fleet enrolling at
// 2,000 agents/s grew it by 3 GiB a minute. So when the WAL holds more than walRestartFrames,
// the job borrows the writer's own connection between two batches (the writer waits for it:
// it cannot race the writer for the lock and lose every time) and runs one RESTART checkpoint
// there, which copies the few frames the last PASSIVE round left and waits for readers to
// leave the WAL; the next write then starts the WAL from the top. Its busy timeout is short,
// so a long read makes it give up until the next round rather than keep the writer waiting.
// journal_size_limit truncates a WAL that grew past the limit anyway (after a long read, or
// under an older build) back to that size.

// checkpointInterval is how often the WAL is copied back; walRestartFrames is the WAL size (in
// pages) beyond which the WAL is started again: 16,384 pages of 4 KiB, 64 MiB. (Variables so
// that a test can make them small.)
var (
	checkpointInterval = 250 * time.Millisecond
	walRestartFrames   = 16384
)

// checkpointBusyTimeout is how long a RESTART checkpoint waits for readers before it gives
// up until the next round.
const checkpointBusyTimeout = 100 // ms

func (s *Store) startCheckpointer(ctx context.Context) error {
	// The writer is the connection that starts the WAL again, so it is the one that truncates.
	for _, pragma := range []string{"PRAGMA wal_autocheckpoint = 0",
		"PRAGMA journal_size_limit = " + strconv.Itoa(walRestartFrames*4096)} {
		if _, err := s.W.ExecContext(ctx, pragma); err != nil {
			return err
		}
	}
	conn, err := s.R.DB.Conn(ctx)
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.Itoa(checkpointBusyTimeout)); err != nil {
		conn.Close()
		return err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.stopCheckpoint = func() { close(stop); <-done }
	go func() {
		defer close(done)
		defer conn.Close()
		t := time.NewTicker(checkpointInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// A failure (busy, or the database busy with another process's checkpoint) is
				// retried on the next tick; nothing depends on one round. (A background job, not
				// a statement of any request.)
				if frames, err := walCheckpoint(conn, "PASSIVE"); err == nil && frames > walRestartFrames {
					_ = s.restartWAL()
				}
			}
		}
	}()
	return nil
}

// restartWAL runs a RESTART checkpoint on the writer's connection, with a short busy timeout.
func (s *Store) restartWAL() error {
	ctx := context.Background()
	w, err := s.W.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.Itoa(checkpointBusyTimeout)); err != nil {
		return err
	}
	_, err = walCheckpoint(w, "RESTART")
	if _, err := w.ExecContext(ctx, "PRAGMA busy_timeout = "+strconv.Itoa(sqliteBusyTimeout)); err != nil {
		// A writer connection left with the short timeout would fail where it should wait:
		// take it out of the pool.
		_ = w.Raw(func(any) error { return driver.ErrBadConn })
		return err
	}
	return err
}

// walCheckpoint runs one checkpoint in mode and answers how many frames the WAL holds.
func walCheckpoint(conn *sql.Conn, mode string) (frames int, err error) {
	var busy, checkpointed int
	err = conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &checkpointed)
	return frames, err
}
