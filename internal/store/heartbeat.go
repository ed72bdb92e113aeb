package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/ids"
	"github.com/oneprotect/telemetry/internal/projection"
)

// HeartbeatWrite is an accepted-so-far heartbeat: every check that needs no write has passed
// and every value is valid, so no statement of it can fail on bad input.
type HeartbeatWrite struct {
	TenantID     string
	AgentID      string
	AssetID      string
	PrincipalID  string
	HeartbeatID  string
	RequestHash  string
	ReceivedAt   time.Time
	Hostname     *string // identity refresh, where given
	AgentVersion *string
	Payload      []byte                // the asset.telemetry.received payload (JSON of Telemetry)
	Telemetry    *projection.Telemetry // the same, decoded, for the projector
}

// HeartbeatOutcome says what became of a HeartbeatWrite.
type HeartbeatOutcome struct {
	// Duplicate: this heartbeat_id was accepted before with the same content; nothing written.
	Duplicate bool
	// Conflict: this heartbeat_id was accepted before with other content; nothing written.
	Conflict bool
	// Refused: the identity left ENROLLED/ACTIVE after it was checked; Status says where to.
	Refused bool
	Status  domain.AgentStatus
	// ReceivedAt is when the heartbeat (or, for a duplicate, the original) was received.
	ReceivedAt time.Time
	Discovered bool
}

type heartbeatStatements struct {
	insertEvent, selectHash, updateIdentity, deleteEvent, selectStatus, insertDiscovered string
}

func newHeartbeatStatements(rebind func(string) string) *heartbeatStatements {
	return &heartbeatStatements{
		insertEvent: rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at,
  payload, heartbeat_id, request_hash) VALUES (?, ?, 'asset.telemetry.received', ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, heartbeat_id) WHERE heartbeat_id IS NOT NULL DO NOTHING`),
		selectHash: rebind(`SELECT request_hash, occurred_at FROM events WHERE agent_id = ? AND heartbeat_id = ?`),
		updateIdentity: rebind(`UPDATE agent_identities SET status = 'ACTIVE', last_seen_at = ?, activity_at = ?,
  hostname = COALESCE(?, hostname), agent_version = COALESCE(?, agent_version)
WHERE agent_id = ? AND tenant_id = ? AND status IN ('ENROLLED', 'ACTIVE')`),
		deleteEvent:  rebind(`DELETE FROM events WHERE id = ?`),
		selectStatus: rebind(`SELECT status FROM agent_identities WHERE agent_id = ? AND tenant_id = ?`),
		insertDiscovered: rebind(`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at,
  payload) VALUES (?, ?, 'asset.discovered', ?, ?, ?, ?, ?)`),
	}
}

// applyHeartbeat writes one heartbeat inside tx: the event first (its unique key settles
// duplicates without writing anything else), then the identity, guarded by its status so a
// revocation that raced the check still wins, then the projection. It returns an error only
// for a database failure, which aborts the whole transaction.
func (s *Store) applyHeartbeat(ctx context.Context, tx *preparedTx, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	st := s.hb
	at := Micros(w.ReceivedAt)
	// Allocated before the telemetry event's id so that, in id order, discovery comes first.
	discoveredID := ids.New()
	eventID := ids.New()
	res, err := tx.ExecContext(ctx, st.insertEvent, eventID, w.TenantID, w.AssetID, w.AgentID, w.PrincipalID, at,
		string(w.Payload), w.HeartbeatID, w.RequestHash)
	if err != nil {
		return HeartbeatOutcome{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return HeartbeatOutcome{}, err
	} else if n == 0 {
		var hash string
		var occurred int64
		if err := tx.QueryRowContext(ctx, st.selectHash, w.AgentID, w.HeartbeatID).Scan(&hash, &occurred); err != nil {
			return HeartbeatOutcome{}, err
		}
		// The identity's status outranks idempotency (CONTRACT §4's order), and the caller's
		// view of it may come from a cache: ask the database.
		var status string
		if err := tx.QueryRowContext(ctx, st.selectStatus, w.AgentID, w.TenantID).Scan(&status); err != nil {
			return HeartbeatOutcome{}, err
		}
		if !domain.AgentStatus(status).CanSubmit() {
			return HeartbeatOutcome{Refused: true, Status: domain.AgentStatus(status)}, nil
		}
		if hash == w.RequestHash {
			return HeartbeatOutcome{Duplicate: true, ReceivedAt: FromMicros(occurred)}, nil
		}
		return HeartbeatOutcome{Conflict: true}, nil
	}

	res, err = tx.ExecContext(ctx, st.updateIdentity, at, at, w.Hostname, w.AgentVersion, w.AgentID, w.TenantID)
	if err != nil {
		return HeartbeatOutcome{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return HeartbeatOutcome{}, err
	} else if n == 0 {
		// Revoked or gone stale since the check: take the event back and say why.
		if _, err := tx.ExecContext(ctx, st.deleteEvent, eventID); err != nil {
			return HeartbeatOutcome{}, err
		}
		var status string
		if err := tx.QueryRowContext(ctx, st.selectStatus, w.AgentID, w.TenantID).Scan(&status); err != nil {
			return HeartbeatOutcome{}, err
		}
		return HeartbeatOutcome{Refused: true, Status: domain.AgentStatus(status)}, nil
	}

	count, err := s.proj.ApplyTelemetry(ctx, tx, w.TenantID, w.AssetID, w.AgentID, at, w.Telemetry)
	if err != nil {
		return HeartbeatOutcome{}, err
	}
	out := HeartbeatOutcome{ReceivedAt: w.ReceivedAt, Discovered: count == 1}
	if out.Discovered {
		if _, err := tx.ExecContext(ctx, st.insertDiscovered, discoveredID, w.TenantID, w.AssetID, w.AgentID,
			w.PrincipalID, at, string(w.Payload)); err != nil {
			return HeartbeatOutcome{}, err
		}
	}
	return out, nil
}

// Group commit. Concurrent heartbeats queue up; a committer takes whatever is queued (up to
// maxBatch), writes it in one transaction with one sync, and answers each only after the
// commit. If the batch fails, each heartbeat is retried alone so one failure cannot sink the
// others. SQLite has one committer (its single writer connection); PostgreSQL a few.
const maxBatch = 64

type heartbeatJob struct {
	ctx  context.Context
	w    *HeartbeatWrite
	out  HeartbeatOutcome
	err  error
	done chan struct{}
}

type committer struct {
	jobs chan *heartbeatJob
	wg   sync.WaitGroup
	stop chan struct{}
}

func (h *heartbeatStatements) all() []string {
	return []string{h.insertEvent, h.selectHash, h.updateIdentity, h.deleteEvent, h.selectStatus, h.insertDiscovered}
}

func (s *Store) startCommitter(ctx context.Context) error {
	s.stmts = &stmtCache{db: s.W.DB}
	if err := s.stmts.prepare(ctx, append(s.hb.all(), s.proj.Statements()...)...); err != nil {
		return err
	}
	workers := 1
	if s.Dialect == Postgres {
		workers = 4
	}
	c := &committer{jobs: make(chan *heartbeatJob, 4*maxBatch), stop: make(chan struct{})}
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

// WriteHeartbeat queues w for the next group commit and waits for its outcome.
func (s *Store) WriteHeartbeat(ctx context.Context, w *HeartbeatWrite) (HeartbeatOutcome, error) {
	if s.commit == nil {
		return HeartbeatOutcome{}, errors.New("store: heartbeat writes need Migrate first")
	}
	job := &heartbeatJob{ctx: ctx, w: w, done: make(chan struct{})}
	select {
	case s.commit.jobs <- job:
	case <-s.commit.stop:
		return HeartbeatOutcome{}, errStoreClosed
	case <-ctx.Done():
		return HeartbeatOutcome{}, ctx.Err()
	}
	<-job.done // once queued, wait for the commit: the caller must learn whether it was written
	return job.out, job.err
}

func (s *Store) commitLoop(c *committer) {
	batch := make([]*heartbeatJob, 0, maxBatch)
	for {
		select {
		case <-c.stop:
			// Finish what is queued, then leave.
			for {
				select {
				case job := <-c.jobs:
					s.commitBatch([]*heartbeatJob{job})
				default:
					return
				}
			}
		case job := <-c.jobs:
			batch = append(batch[:0], job)
			// When the queue is empty, yield to the request goroutines a couple of times before
			// committing: under load they enqueue meanwhile and batches grow from ~2 to ~12
			// heartbeats, so one BEGIN/COMMIT/sync serves many. Idle, Gosched returns at once.
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

func (s *Store) commitBatch(batch []*heartbeatJob) {
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
		sort.SliceStable(live, func(i, j int) bool { return live[i].w.AgentID < live[j].w.AgentID })
	}
	start := time.Now()
	err := s.runBatch(live)
	if s.ObserveCommit != nil {
		s.ObserveCommit(len(live), time.Since(start))
	}
	if err != nil && len(live) > 1 {
		for _, job := range live {
			job.err = s.runBatch([]*heartbeatJob{job})
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

// runBatch writes the jobs in one transaction and fills in their outcomes.
func (s *Store) runBatch(jobs []*heartbeatJob) error {
	// SQLite runs in-process and cannot hang on a network; a cancellable context would also
	// cost database/sql a goroutine per query. PostgreSQL gets a deadline.
	ctx := context.Background()
	if s.Dialect == Postgres {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	tx, err := s.W.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	ptx := &preparedTx{tx: tx, cache: s.stmts}
	for _, job := range jobs {
		out, err := s.applyHeartbeat(ctx, ptx, job.w)
		if err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("heartbeat %s: %w", job.w.AgentID, err)
		}
		job.out = out
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return nil
}
