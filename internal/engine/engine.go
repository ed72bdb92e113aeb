// Package engine is the write engine's batching machinery: group commit with a bounded queue.
//
// Concurrent writes (heartbeats, enrollments, retention's deletes) queue up; a committer takes
// whatever is queued (up to MaxBatch), hands it to the Backend to run in one transaction with
// one sync, and answers each write only after that commit. If a batch fails, each of its writes
// is run again alone, so one failing write cannot sink the others. When the queue is at its
// bound the engine sheds load: Do fails at once with ErrOverloaded (the transports answer 503
// with Retry-After) instead of letting latency grow without bound.
//
// The engine knows nothing of SQL: the store is its Backend and decides what a job runs.
package engine

import (
	"context"
	"errors"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
)

// Job is one queued write. Payload is the backend's description of it; Key orders the jobs of
// a batch (a lock order on PostgreSQL, page order on SQLite). A job may run more than once
// (alone, after a failed batch), so it must depend on nothing but its transaction and inputs.
type Job struct {
	Key     string
	Payload any

	ctx  context.Context
	err  error
	done chan struct{}
}

// Backend runs batches.
type Backend interface {
	// Run runs the jobs in one transaction and commits it. An error means nothing of the batch
	// was committed.
	Run(ctx context.Context, jobs []*Job) error
}

// Config tunes an engine.
type Config struct {
	// Committers run batches concurrently (1 for SQLite's single writer).
	Committers int
	// MaxBatch is the most jobs in one transaction.
	MaxBatch int
	// QueueBound is the most jobs waiting for a committer; beyond it Do sheds load.
	QueueBound int
	// SortByKey runs each batch in Key order.
	SortByKey bool
	// BatchTimeout bounds one batch's run (0: none; SQLite cannot hang on a network).
	BatchTimeout time.Duration
	// Observe, when set, learns the size and duration of every batch.
	Observe func(writes int, took time.Duration)
}

// ErrOverloaded: the queue is at its bound. Nothing was written; try again shortly.
var ErrOverloaded = &domain.Error{Code: domain.CodeUnavailable, RetryAfter: time.Second,
	Message: "the server is at capacity, try again shortly"}

// ErrClosed: the engine was stopped.
var ErrClosed = errors.New("engine: closed")

// Engine is a running group-commit engine.
type Engine struct {
	cfg     Config
	backend Backend
	jobs    chan *Job
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// Start starts the committers.
func Start(b Backend, cfg Config) *Engine {
	cfg.Committers, cfg.MaxBatch, cfg.QueueBound = max(cfg.Committers, 1), max(cfg.MaxBatch, 1), max(cfg.QueueBound, 1)
	e := &Engine{cfg: cfg, backend: b, jobs: make(chan *Job, cfg.QueueBound), stop: make(chan struct{})}
	for range cfg.Committers {
		e.wg.Go(e.loop)
	}
	return e
}

// Do queues job for the next commit and waits until that commit is done. Once queued, it
// waits for the outcome even if ctx ends, because the caller must learn whether it was written.
func (e *Engine) Do(ctx context.Context, job *Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	job.ctx, job.done, job.err = ctx, make(chan struct{}), nil
	select {
	case <-e.stop:
		return ErrClosed
	default:
	}
	select {
	case e.jobs <- job:
	case <-e.stop:
		return ErrClosed
	default:
		return ErrOverloaded
	}
	<-job.done
	return job.err
}

// Queued is how many jobs wait for a committer.
func (e *Engine) Queued() int { return len(e.jobs) }

// Close commits what is queued, then stops the committers and waits for them. It is safe to
// call more than once.
func (e *Engine) Close() {
	e.stopped.Do(func() { close(e.stop) })
	e.wg.Wait()
}

func (e *Engine) loop() {
	batch := make([]*Job, 0, e.cfg.MaxBatch)
	for {
		select {
		case <-e.stop:
			for { // finish what is queued, then leave
				select {
				case job := <-e.jobs:
					e.commit([]*Job{job})
				default:
					return
				}
			}
		case job := <-e.jobs:
			batch = append(batch[:0], job)
			// When the queue is empty, yield to the request goroutines a couple of times before
			// committing: under load they enqueue meanwhile and batches grow, so one commit and
			// sync serves many writes. Idle, Gosched returns at once.
			yields := 0
		fill:
			for len(batch) < e.cfg.MaxBatch {
				select {
				case job := <-e.jobs:
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
			e.commit(batch)
		}
	}
}

func (e *Engine) commit(batch []*Job) {
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
	if e.cfg.SortByKey && len(live) > 1 {
		sort.SliceStable(live, func(i, j int) bool { return live[i].Key < live[j].Key })
	}
	start := time.Now()
	err := e.run(live)
	if e.cfg.Observe != nil {
		e.cfg.Observe(len(live), time.Since(start))
	}
	if err != nil && len(live) > 1 {
		for _, job := range live {
			job.err = nil
			if err := e.run([]*Job{job}); err != nil {
				job.err = err
			}
		}
	} else if err != nil {
		live[0].err = err
	}
	for _, job := range live {
		close(job.done)
	}
}

func (e *Engine) run(jobs []*Job) error {
	ctx := context.Background()
	if e.cfg.BatchTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.BatchTimeout)
		defer cancel()
	}
	return e.backend.Run(ctx, jobs)
}
