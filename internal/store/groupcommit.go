package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"

	"github.com/oneprotect/telemetry/internal/engine"
)

// The store is the write engine's backend: it says what a queued write runs. SQLite has one
// committer (its single writer connection); PostgreSQL a few.
const (
	maxBatch = 64
	// queueBound is how many writes may wait for a committer before new ones are refused
	// with 503: at the writer's pace that is a wait of a few tens of milliseconds.
	queueBound = 512
)

// writeJob is one queued write: either apply, which runs inside the batch's transaction and
// records its own outcome (an error from it means the transaction must be abandoned), or one
// pipelined statement whose row the committer scans into dest.
type writeJob struct {
	key       string // PostgreSQL lock order: jobs of a batch run sorted by key
	apply     func(ctx context.Context, tx bun.Tx, ptx *preparedTx) error
	pipelined *pipelinedStatement
	// group, when set, runs the job with the batch's other jobs of the same group: one call
	// with all of them (their items, in batch order) where the first of them stands. Alone it
	// is a call with one item.
	group *jobGroup
	item  any
}

// jobGroup is a kind of write that a batch runs all at once (enrollments: one statement for
// the batch's rows instead of one per job).
type jobGroup struct {
	run func(ctx context.Context, tx bun.Tx, ptx *preparedTx, items []any) error
}

// pipelinedStatement is a write that is a single statement returning a single row and needs
// nothing from any other statement, so PostgreSQL can take a whole batch of them in one
// round trip.
type pipelinedStatement struct {
	query string
	args  []any
	dest  []any
}

// run runs the job inside a batch's transaction.
func (j *writeJob) run(ctx context.Context, tx bun.Tx, ptx *preparedTx) error {
	if j.pipelined != nil {
		return ptx.QueryRowContext(ctx, j.pipelined.query, j.pipelined.args...).Scan(j.pipelined.dest...)
	}
	return j.apply(ctx, tx, ptx)
}

func (s *Store) startCommitter(ctx context.Context) error {
	s.stmts = &stmtCache{db: s.W.DB}
	all := append(s.hb.all(s.Dialect), s.enr.all(s.Dialect)...)
	if err := s.stmts.prepare(ctx, all...); err != nil {
		return err
	}
	observe := func(n int, took time.Duration) {
		if f := s.ObserveCommit; f != nil {
			f(n, took)
		}
	}
	cfg := engine.Config{Committers: 1, MaxBatch: maxBatch, QueueBound: queueBound, Observe: observe}
	if s.Dialect == Postgres {
		// One lock order across committers: no deadlock between two batches.
		cfg.Committers, cfg.SortByKey, cfg.BatchTimeout = 4, true, 30*time.Second
	}
	s.commit.Store(engine.Start(backend{s}, cfg))
	return nil
}

func (s *Store) stopCommitter() {
	if e := s.commit.Swap(nil); e != nil {
		e.Close()
		s.stmts.close()
	}
}

// Flush waits until every write queued so far has been committed (shutdown, once HTTP has
// drained); Close then stops the engine.
func (s *Store) Flush(ctx context.Context) error {
	e := s.commit.Load()
	for e != nil && e.Queued() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

var errStoreClosed = errors.New("store: closed")

// inGroupCommit queues job for the next group commit and waits until that commit is done.
func (s *Store) inGroupCommit(ctx context.Context, job *writeJob) error {
	e := s.commit.Load()
	if e == nil {
		return errStoreClosed
	}
	err := e.Do(ctx, &engine.Job{Key: job.key, Payload: job})
	if errors.Is(err, engine.ErrClosed) {
		return errStoreClosed
	}
	return mapErr(err)
}

type backend struct{ s *Store }

// Run runs a batch: on PostgreSQL as one pipelined round trip when every job is a single
// statement, else in one transaction.
func (b backend) Run(ctx context.Context, jobs []*engine.Job) error {
	// A batch that loses a deadlock wrote nothing; run alone, a job tries again a few times
	// rather than answer the caller with a lock order it cannot choose.
	for attempt := 0; ; attempt++ {
		err := b.run(ctx, jobs)
		if len(jobs) == 1 && attempt < 3 && isDeadlock(err) {
			continue
		}
		return err
	}
}

func (b backend) run(ctx context.Context, jobs []*engine.Job) error {
	writes := make([]*writeJob, len(jobs))
	pipelined := b.s.Dialect == Postgres
	for i, j := range jobs {
		w, ok := j.Payload.(*writeJob)
		if !ok {
			return fmt.Errorf("store: unknown job %T", j.Payload)
		}
		writes[i] = w
		pipelined = pipelined && w.pipelined != nil
	}
	if pipelined && len(writes) > 0 {
		return b.s.runPipeline(ctx, writes)
	}
	return b.s.runBatch(ctx, writes)
}

// runBatch runs the jobs in one transaction and commits it.
func (s *Store) runBatch(ctx context.Context, jobs []*writeJob) error {
	tx, err := s.W.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	ptx := &preparedTx{tx: tx.Tx, cache: s.stmts}
	var groups map[*jobGroup][]any
	for _, job := range jobs {
		if job.group != nil {
			if groups == nil {
				groups = make(map[*jobGroup][]any, 1)
			}
			groups[job.group] = append(groups[job.group], job.item)
		}
	}
	for _, job := range jobs {
		var err error
		if g := job.group; g != nil {
			items, first := groups[g]
			if !first {
				continue // ran with the first of its group
			}
			delete(groups, g)
			err = g.run(ctx, tx, ptx, items)
		} else {
			err = job.run(ctx, tx, ptx)
		}
		if err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// runPipeline sends the jobs' statements to PostgreSQL as one pgx batch: one round trip for the
// whole batch, run by the server as one implicit transaction that commits at the batch's end
// (or not at all, if any statement fails). The rows arrive before the commit; they count only
// once the batch has closed without error.
func (s *Store) runPipeline(ctx context.Context, jobs []*writeJob) error {
	conn, err := s.W.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		pc := driverConn.(*stdlib.Conn).Conn()
		batch := &pgx.Batch{}
		for _, job := range jobs {
			batch.Queue(job.pipelined.query, job.pipelined.args...)
		}
		results := pc.SendBatch(ctx, batch)
		for _, job := range jobs {
			if err := results.QueryRow().Scan(job.pipelined.dest...); err != nil {
				_ = results.Close()
				return err
			}
		}
		return results.Close()
	})
}
