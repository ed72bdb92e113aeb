package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"
)

// Retention of the heartbeat log. The log is ordered by seq, which follows receipt, so the
// heartbeats past the retention are at its old end: each prune reads the first rows after the
// last pruned position and deletes the prefix that is old enough as one range. Lifecycle
// events, discovery and inventory changes live in the events table and are never pruned.

// PruneHeartbeats deletes up to limit heartbeats received before cutoff and says how many it
// deleted; the caller repeats while it gets limit. On SQLite it runs as one job of the group
// commit, so it shares the single writer with heartbeats instead of waiting for it.
func (s *Store) PruneHeartbeats(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	var deleted int
	prune := func(ctx context.Context, q preparedQuerier) error {
		from := s.pruneFrom.Load()
		rows, err := q.QueryContext(ctx, s.hb.pruneScan, from, limit)
		if err != nil {
			return err
		}
		last := int64(-1)
		for rows.Next() {
			var seq, received int64
			if err := rows.Scan(&seq, &received); err != nil {
				rows.Close()
				return err
			}
			if received >= Micros(cutoff) {
				break
			}
			last = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if last < 0 {
			// Nothing left to prune: the next pass starts from the real beginning again, so a
			// row that committed behind the position (PostgreSQL commits out of seq order)
			// is found too.
			s.pruneFrom.Store(0)
			return nil
		}
		res, err := q.ExecContext(ctx, s.hb.pruneRange, from, last, Micros(cutoff))
		if err != nil {
			return err
		}
		d, err := res.RowsAffected()
		deleted = int(d)
		s.pruneFrom.Store(last)
		return err
	}
	if s.Dialect == Postgres {
		err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error { return prune(ctx, tx.Tx) })
		return deleted, err
	}
	err := s.inGroupCommit(ctx, &writeJob{key: "prune", apply: func(ctx context.Context, _ bun.Tx, tx *preparedTx) error {
		return prune(ctx, tx)
	}})
	return deleted, err
}
