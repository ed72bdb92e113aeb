package pacing

import "sync/atomic"

// InFlight bounds how many requests are being served at once. Beyond the bound a request is
// refused at once, before it costs anything (its body is not even read), instead of waiting
// for a core and then for the writer: under overload the requests that are admitted keep
// their latency, and the others learn at once to come back later. A nil InFlight admits
// everything.
type InFlight struct {
	max int64
	n   atomic.Int64
}

// NewInFlight bounds requests in flight at max; max <= 0 returns nil (no bound).
func NewInFlight(max int) *InFlight {
	if max <= 0 {
		return nil
	}
	return &InFlight{max: int64(max)}
}

// Acquire takes a place, or reports false when every place is taken. Each successful
// Acquire must be followed by one Release.
func (f *InFlight) Acquire() bool {
	if f == nil {
		return true
	}
	for {
		n := f.n.Load()
		if n >= f.max {
			return false
		}
		if f.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release gives a place back.
func (f *InFlight) Release() {
	if f != nil {
		f.n.Add(-1)
	}
}

// Len is how many places are taken (a gauge for /metrics).
func (f *InFlight) Len() int {
	if f == nil {
		return 0
	}
	return int(f.n.Load())
}

// Max is the bound (0: none).
func (f *InFlight) Max() int {
	if f == nil {
		return 0
	}
	return int(f.max)
}
