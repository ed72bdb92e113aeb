package store

import (
	"context"
	"errors"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
)

// Group commit. Concurrent writes (heartbeats, enrollments) queue up; a committer takes
// whatever is queued (up to maxBatch), runs it in one transaction with one sync, and answers
// each only after the commit. If the batch fails, each write is retried alone so one failure
// cannot sink the others. SQLite has one committer (its single writer connection);
// PostgreSQL a few.
const maxBatch = 64

// writeJob is one queued write: either apply, which runs inside the batch's transaction and
// records its own outcome (an error from it means the transaction must be abandoned), or one
// pipelined statement whose row the committer scans into dest.
type writeJob struct {
	ctx       context.Context
	key       string // PostgreSQL lock order: jobs of a batch run sorted by key
	apply     func(ctx context.Context, tx bun.Tx, ptx *preparedTx) error
	pipelined *pipelinedStatement
	err       error
	done      chan struct{}
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

type committer struct {
	jobs chan *writeJob
	wg   sync.WaitGroup
	stop chan struct{}
}

func (s *Store) startCommitter(ctx context.Context) error {
	s.stmts = &stmtCache{db: s.W.DB}
	all := append(s.hb.all(s.Dialect), s.enr.all()...)
	if err := s.stmts.prepare(ctx, all...); err != nil {
		return err
	}
	workers := 1
	if s.Dialect == Postgres {
		workers = 4
	}
	c := &committer{jobs: make(chan *writeJob, 4*maxBatch), stop: make(chan struct{})}
	for range workers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			s.commitLoop(c)
		}()
	}
	s.commit = c
	return nil
}

func (s *Store) stopCommitter() {
	if s.commit == nil {
		return
	}
	close(s.commit.stop)
	s.commit.wg.Wait()
	s.commit = nil
	s.stmts.close()
}

var errStoreClosed = errors.New("store: closed")

// inGroupCommit queues job for the next group commit and waits until that commit is done.
// The job may run more than once (alone, after a failed batch), so it must not depend on
// anything but the transaction and its inputs.
func (s *Store) inGroupCommit(ctx context.Context, job *writeJob) error {
	if s.commit == nil {
		return errors.New("store: writes need Migrate first")
	}
	job.ctx, job.done = ctx, make(chan struct{})
	select {
	case s.commit.jobs <- job:
	case <-s.commit.stop:
		return errStoreClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-job.done // once queued, wait for the commit: the caller must learn whether it was written
	return job.err
}

func (s *Store) commitLoop(c *committer) {
	batch := make([]*writeJob, 0, maxBatch)
	for {
		select {
		case <-c.stop:
			// Finish what is queued, then leave.
			for {
				select {
				case job := <-c.jobs:
					s.commitBatch([]*writeJob{job})
				default:
					return
				}
			}
		case job := <-c.jobs:
			batch = append(batch[:0], job)
			// When the queue is empty, yield to the request goroutines a couple of times before
			// committing: under load they enqueue meanwhile and batches grow from ~2 to ~12
			// writes, so one BEGIN/COMMIT/sync serves many. Idle, Gosched returns at once.
			yields := 0
		fill:
			for len(batch) < maxBatch {
				select {
				case job := <-c.jobs:
					batch = append(batch, job)
				default:
					if yields < 2 {
						yields++
						runtime.Gosched()
						continue
					}
					break fill
				}
			}
			s.commitBatch(batch)
		}
	}
}

func (s *Store) commitBatch(batch []*writeJob) {
	live := batch[:0:0]
	for _, job := range batch {
		if err := job.ctx.Err(); err != nil { // the caller gave up before anything was written
			job.err = err
			close(job.done)
			continue
		}
		live = append(live, job)
	}
	if len(live) == 0 {
		return
	}
	if s.Dialect == Postgres && len(live) > 1 {
		// One lock order across committers: no deadlock between two batches.
		sort.SliceStable(live, func(i, j int) bool { return live[i].key < live[j].key })
	}
	run := s.runBatch
	if s.Dialect == Postgres && allPipelined(live) {
		run = s.runPipeline
	}
	start := time.Now()
	err := run(live)
	if s.ObserveCommit != nil {
		s.ObserveCommit(len(live), time.Since(start))
	}
	if err != nil && len(live) > 1 {
		for _, job := range live {
			job.err = run([]*writeJob{job})
		}
	} else if err != nil {
		live[0].err = err
	}
	for _, job := range live {
		if job.err != nil {
			job.err = mapErr(job.err)
		}
		close(job.done)
	}
}

// runBatch runs the jobs in one transaction and commits it.
func (s *Store) runBatch(jobs []*writeJob) error {
	// SQLite runs in-process and cannot hang on a network; a cancellable context would also
	// cost database/sql a goroutine per query. PostgreSQL gets a deadline.
	ctx := context.Background()
	if s.Dialect == Postgres {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	tx, err := s.W.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	ptx := &preparedTx{tx: tx.Tx, cache: s.stmts}
	for _, job := range jobs {
		if err := job.run(ctx, tx, ptx); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

func allPipelined(jobs []*writeJob) bool {
	for _, job := range jobs {
		if job.pipelined == nil {
			return false
		}
	}
	return true
}

// runPipeline sends the jobs' statements to PostgreSQL as one pgx batch: one round trip for the
// whole batch, run by the server as one implicit transaction that commits at the batch's end
// (or not at all, if any statement fails). The rows arrive before the commit; they count only
// once the batch has closed without error.
func (s *Store) runPipeline(jobs []*writeJob) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
