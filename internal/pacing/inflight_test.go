package pacing

import (
	"sync"
	"testing"
)

func TestInFlight(t *testing.T) {
	f := NewInFlight(3)
	for i := range 3 {
		if !f.Acquire() {
			t.Fatalf("place %d of 3 refused", i+1)
		}
	}
	if f.Acquire() || f.Len() != 3 {
		t.Fatalf("a 4th place was given, or a refusal kept one: %d taken", f.Len())
	}
	f.Release()
	if !f.Acquire() {
		t.Fatal("a released place was not given again")
	}

	// Under contention the bound holds and every place comes back.
	f = NewInFlight(8)
	var mu sync.Mutex
	var wg sync.WaitGroup
	most := 0
	for range 64 {
		wg.Go(func() {
			for range 200 {
				if f.Acquire() {
					mu.Lock()
					most = max(most, f.Len())
					mu.Unlock()
					f.Release()
				}
			}
		})
	}
	wg.Wait()
	if most > 8 || f.Len() != 0 {
		t.Fatalf("at most %d in flight (bound 8), %d left taken", most, f.Len())
	}

	var none *InFlight = NewInFlight(0)
	if none != nil || !none.Acquire() || none.Len() != 0 || none.Max() != 0 {
		t.Fatal("no bound must admit everything")
	}
	none.Release()
}
