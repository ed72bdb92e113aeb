package store

import (
	"context"
	"database/sql"
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
// the job borrows the writer's own connection between two batches and runs one more PASSIVE
// checkpoint there: with the writer held, it copies the frames the last round left and ends
// with every frame copied, so the next write starts the WAL from the top (unless a reader
// still reads old frames; then the next round tries again). It never waits for readers, but
// the writer waits for it, for the copy and the database file's fsync: about 100 ms at a
// million agents. Hence a large bound, so that pause comes rarely (every 20 s or so at 6,000
// heartbeats/s). journal_size_limit truncates a WAL that grew past the bound anyway (after a
// long read, or under an older build) back to it.

// checkpointInterval is how often the WAL is copied back; walRestartFrames is the WAL size (in
// pages) beyond which the WAL is started again: 262,144 pages of 4 KiB, 1 GiB. (Variables so
// that a test can make them small.)
var (
	checkpointInterval = 250 * time.Millisecond
	walRestartFrames   = 262144
)

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
				if frames, err := s.timedCheckpoint(conn, "background"); err == nil && frames > walRestartFrames {
					_ = s.restartWAL()
				}
			}
		}
	}()
	return nil
}

// ObserveCheckpoints makes f learn each SQLite WAL checkpoint: its kind ("background", or
// "restart", which the writer waits for), its duration, and the WAL frames it left uncopied.
func (s *Store) ObserveCheckpoints(f func(kind string, took time.Duration, framesLeft int)) {
	s.observeCheckpoint.Store(&f)
}

// restartWAL checkpoints on the writer's connection, so that no write comes in between.
func (s *Store) restartWAL() error {
	ctx := context.Background()
	w, err := s.W.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = s.timedCheckpoint(w, "restart")
	return err
}

// timedCheckpoint runs one PASSIVE checkpoint on conn and tells the ObserveCheckpoints
// observer how long it took (kind: "background", or "restart" on the writer's connection,
// which the writer waits for) and how many WAL frames were still not copied back after it.
func (s *Store) timedCheckpoint(conn *sql.Conn, kind string) (frames int, err error) {
	start := time.Now()
	frames, copied, err := walCheckpoint(conn, "PASSIVE")
	if f := s.observeCheckpoint.Load(); f != nil && err == nil {
		(*f)(kind, time.Since(start), frames-copied)
	}
	return frames, err
}

// walCheckpoint runs one checkpoint in mode and answers how many frames the WAL holds and how
// many of them are copied back into the database file.
func walCheckpoint(conn *sql.Conn, mode string) (frames, copied int, err error) {
	var busy int
	err = conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &copied)
	return frames, copied, err
}
