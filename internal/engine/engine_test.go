package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBackend commits batches of jobs whose payload is the value to record; a payload of
// errBad makes the whole batch fail (as a statement that fails aborts a transaction), and
// failCommits makes the next commits fail after the jobs ran.
type fakeBackend struct {
	mu          sync.Mutex
	committed   []int
	batches     [][]int
	failCommits int
	gate        chan struct{} // when set, Run waits for it
	entered     chan struct{} // with gate: Run says it is waiting
}

func gated() *fakeBackend {
	return &fakeBackend{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
}

// hold sends a first job and returns once the committer is stuck at the gate with it, so the
// next jobs queue behind it.
func hold(t *testing.T, e *Engine, b *fakeBackend, payload any) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- e.Do(context.Background(), &Job{Payload: payload}) }()
	<-b.entered
	return done
}

func waitQueued(e *Engine, n int) {
	for e.Queued() < n {
		time.Sleep(time.Millisecond)
	}
}

var errBad = errors.New("bad job")

func (b *fakeBackend) Run(ctx context.Context, jobs []*Job) error {
	if b.gate != nil {
		select {
		case b.entered <- struct{}{}:
		default:
		}
		<-b.gate
	}
	var vals []int
	for _, j := range jobs {
		if j.Payload == nil {
			return errBad
		}
		vals = append(vals, j.Payload.(int))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failCommits > 0 {
		b.failCommits--
		return errors.New("commit failed")
	}
	b.committed = append(b.committed, vals...)
	b.batches = append(b.batches, vals)
	return nil
}

func TestAFailingJobDoesNotSinkItsBatch(t *testing.T) {
	b := gated()
	e := Start(b, Config{MaxBatch: 16, QueueBound: 64})
	defer e.Close()
	first := hold(t, e, b, 100)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 8 {
		wg.Go(func() {
			var payload any = i
			if i == 3 {
				payload = nil
			}
			errs[i] = e.Do(context.Background(), &Job{Payload: payload})
		})
	}
	waitQueued(e, 8)
	close(b.gate)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if (i == 3) != errors.Is(err, errBad) {
			t.Errorf("job %d: %v", i, err)
		}
	}
	if len(b.committed) != 8 {
		t.Fatalf("committed %v, want the first and the 7 good jobs", b.committed)
	}
}

func TestAFailedCommitIsReportedAndRetriedAlone(t *testing.T) {
	b := &fakeBackend{failCommits: 1}
	e := Start(b, Config{MaxBatch: 16, QueueBound: 64})
	defer e.Close()
	// A single job's failed commit is its answer: the caller learns nothing was written.
	if err := e.Do(context.Background(), &Job{Payload: 1}); err == nil {
		t.Fatal("a failed commit was answered as written")
	}
	if err := e.Do(context.Background(), &Job{Payload: 2}); err != nil {
		t.Fatal(err)
	}
	if len(b.committed) != 1 || b.committed[0] != 2 {
		t.Fatalf("committed %v", b.committed)
	}
}

func TestConcurrentWritesShareACommit(t *testing.T) {
	b := gated()
	e := Start(b, Config{MaxBatch: 64, QueueBound: 256})
	defer e.Close()
	first := hold(t, e, b, -1)
	var wg sync.WaitGroup
	for i := range 49 {
		wg.Go(func() {
			if err := e.Do(context.Background(), &Job{Payload: i}); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(e, 49)
	close(b.gate)
	wg.Wait()
	<-first
	if len(b.committed) != 50 || len(b.batches) != 2 {
		t.Fatalf("%d writes in %d batches, want 50 in 2 (the first alone, then the 49 queued behind it)", len(b.committed), len(b.batches))
	}
}

func TestAFullQueueShedsLoadAtOnce(t *testing.T) {
	b := gated()
	e := Start(b, Config{MaxBatch: 4, QueueBound: 8})
	first := hold(t, e, b, -1)
	var wg sync.WaitGroup
	var accepted atomic.Int32
	for i := range 8 {
		wg.Go(func() {
			if e.Do(context.Background(), &Job{Payload: i}) == nil {
				accepted.Add(1)
			}
		})
	}
	waitQueued(e, 8)
	start := time.Now()
	err := e.Do(context.Background(), &Job{Payload: 99})
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("over the bound: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("shedding waited %v", took)
	}
	close(b.gate)
	wg.Wait()
	<-first
	e.Close()
	if accepted.Load() != 8 {
		t.Fatalf("%d of the 8 queued writes committed", accepted.Load())
	}
}

func TestAWriteWhoseCallerLeftIsNotRun(t *testing.T) {
	b := gated()
	e := Start(b, Config{MaxBatch: 4, QueueBound: 8})
	defer e.Close()
	hold(t, e, b, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Do(ctx, &Job{Payload: 2}) }()
	waitQueued(e, 1)
	cancel()
	close(b.gate)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v", err)
	}
	for _, v := range b.committed {
		if v == 2 {
			t.Fatal("a write whose caller left before its batch was committed")
		}
	}
}

func TestCloseCommitsWhatIsQueued(t *testing.T) {
	b := gated()
	e := Start(b, Config{MaxBatch: 2, QueueBound: 16})
	first := hold(t, e, b, -1)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if err := e.Do(context.Background(), &Job{Payload: i}); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(e, 5)
	go func() { time.Sleep(10 * time.Millisecond); close(b.gate) }()
	e.Close()
	wg.Wait()
	<-first
	if len(b.committed) != 6 {
		t.Fatalf("committed %v after Close", b.committed)
	}
	if err := e.Do(context.Background(), &Job{Payload: 7}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
