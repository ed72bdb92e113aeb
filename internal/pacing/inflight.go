package pacing

import (
	"sync"
	"sync/atomic"
	"time"
)

// InFlight bounds how many requests are being served at once. Beyond the bound a request is
// refused at once, before it costs anything (its body is not even read), instead of waiting
// for a core and then for the writer: under overload the requests that are admitted keep
// their latency, and the others learn at once to come back later. A nil InFlight admits
// everything.
//
// The bound is two bounds. Max is a fixed most. Wait, when set, is a latency target: a count
// alone cannot keep latency, because the admitted requests wait about count / throughput
// (Little's law) and the throughput moves with the database, the machine and the fleet. So
// once a queue has stood for two windows in a row (every request finished in each took over
// Wait/2, or none finished while some were in flight: the writer is stalled), at most
// throughput x Wait are admitted, never fewer than a floor. One window is not enough: a
// pause shorter than a window (a collection's mark phase, a WAL checkpoint) is over before
// refusing would help, and a server at half its capacity should refuse nothing. The lower
// bound holds until a window in which no queue stood and it either refused nothing or had
// nothing in flight for half the target: while it holds, requests finish near the target, so
// the quickest of them say nothing about the overload, and letting the bound go on that alone
// refilled all of Max within a window; but a server that empties between bursts is not
// overloaded, and holding the bound on its refusals alone kept it at the floor. A burst that
// the server serves within the target forms no standing queue (its requests finish fast), so
// it is not refused; the idea is CoDel's.
// The target must be above a heartbeat's own latency on an idle server (a millisecond or two
// here): with a database whose every commit takes longer, the bound would stay at what the
// throughput serves within the target, and the throughput fall to the floor's.
type InFlight struct {
	max  int64
	wait time.Duration
	n    atomic.Int64

	limit atomic.Int64 // the bound in force: max, or lower while a queue stands

	// The current window's completions, the shortest time in flight among them, and its
	// refusals.
	done     atomic.Int64
	shortest atomic.Int64 // nanoseconds; window's start value: math.MaxInt64
	refused  atomic.Int64
	idle     atomic.Bool  // nothing was in flight for Wait/2 or more during the window
	emptyAt  atomic.Int64 // nanoseconds since base when the last request in flight finished

	mu          sync.Mutex
	windowStart atomic.Int64 // nanoseconds since base
	throughput  float64      // completions per second, smoothed over windows
	standing    int          // consecutive windows in which a queue stood
	base        time.Time
	now         func() time.Time
}

// Window is how often the bound is recomputed; Floor is the fewest requests admitted while a
// queue stands (a group commit's worth, so a stalled writer still has a batch when it wakes).
const (
	Window = 100 * time.Millisecond
	Floor  = 64
)

// NewInFlight bounds requests in flight at max and, when wait > 0, to what the recent
// throughput serves within wait; max <= 0 returns nil (no bound).
func NewInFlight(max int, wait time.Duration) *InFlight {
	if max <= 0 {
		return nil
	}
	f := &InFlight{max: int64(max), wait: wait, now: time.Now}
	f.base = f.now()
	f.limit.Store(int64(max))
	f.shortest.Store(maxNanos)
	return f
}

const maxNanos = int64(^uint64(0) >> 1)

// Acquire takes a place, or reports false when every place is taken. Each successful Acquire
// must be followed by one call of the release it returns.
func (f *InFlight) Acquire() (release func(), ok bool) {
	if f == nil {
		return func() {}, true
	}
	var now time.Duration // read only for a latency target: without one, no clock per request
	if f.wait > 0 {
		if now = f.since(); now-time.Duration(f.windowStart.Load()) >= Window {
			f.roll(now)
		}
	}
	limit := f.limit.Load()
	for {
		n := f.n.Load()
		if n >= limit {
			if f.wait > 0 {
				f.refused.Add(1)
			}
			return nil, false
		}
		if f.n.CompareAndSwap(n, n+1) {
			if n == 0 && f.wait > 0 && now-time.Duration(f.emptyAt.Load()) >= f.wait/2 {
				f.idle.Store(true) // the server had nothing to do for a while: no overload
			}
			break
		}
	}
	return func() { f.release(now) }, true
}

func (f *InFlight) release(admitted time.Duration) {
	n := f.n.Add(-1)
	if f.wait <= 0 {
		return
	}
	now := f.since()
	if n == 0 {
		f.emptyAt.Store(int64(now))
	}
	took := int64(now - admitted)
	f.done.Add(1)
	for {
		s := f.shortest.Load()
		if took >= s || f.shortest.CompareAndSwap(s, took) {
			return
		}
	}
}

func (f *InFlight) since() time.Duration { return f.now().Sub(f.base) }

// roll closes the window that began at windowStart and sets the bound for the next one.
func (f *InFlight) roll(now time.Duration) {
	if !f.mu.TryLock() {
		return // another request is rolling it
	}
	defer f.mu.Unlock()
	start := time.Duration(f.windowStart.Load())
	elapsed := now - start
	if elapsed < Window {
		return
	}
	done, shortest, refused, idle := f.done.Swap(0), f.shortest.Swap(maxNanos), f.refused.Swap(0), f.idle.Swap(false)
	if f.n.Load() == 0 && now-time.Duration(f.emptyAt.Load()) >= f.wait/2 {
		idle = true // empty since well before this roll
	}
	rate := float64(done) / elapsed.Seconds()
	if f.throughput == 0 || elapsed > 10*Window {
		f.throughput = rate
	} else {
		f.throughput = 0.7*f.throughput + 0.3*rate
	}
	// A queue stands when even the quickest request took over half the target. (A release
	// between the swaps above counts in this window's done but not in its shortest: a window
	// with no shortest is not a standing queue.) A lowered bound holds while a queue stands,
	// or while it refuses and the server was never idle for half the target (the type's
	// comment says why): bursts that it serves and then idles between are not an overload,
	// whatever it refused of them, while a group commit that empties it for a moment is.
	if (done > 0 && shortest != maxNanos && shortest > int64(f.wait/2)) || (done == 0 && f.n.Load() > 0) {
		f.standing++
	} else {
		f.standing = 0
	}
	engaged := f.limit.Load() < f.max
	limit := f.max
	if f.standing >= 2 || (engaged && (f.standing > 0 || (refused > 0 && !idle))) {
		// The last window's own rate as well as the smoothed one: a server that just became
		// busy has a smoothed rate from its idle windows, far below what it can serve.
		limit = min(f.max, max(Floor, int64(max(f.throughput, rate)*f.wait.Seconds())))
	}
	f.limit.Store(limit)
	f.windowStart.Store(int64(now))
}

// Len is how many places are taken (a gauge for /metrics).
func (f *InFlight) Len() int {
	if f == nil {
		return 0
	}
	return int(f.n.Load())
}

// Max is the fixed bound (0: none).
func (f *InFlight) Max() int {
	if f == nil {
		return 0
	}
	return int(f.max)
}

// Limit is the bound in force now: Max, or lower while a queue stands (a gauge for /metrics).
func (f *InFlight) Limit() int {
	if f == nil {
		return 0
	}
	return int(f.limit.Load())
}
