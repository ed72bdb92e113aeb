package pacing

import (
	"sync"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"10/1m": {10, time.Minute}, "100/30s": {100, 30 * time.Second}, "5/m": {5, time.Minute},
		"0": {}, "0/1m": {}, " 3 / 1h ": {3, time.Hour},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "10", "x/1m", "-1/1m", "10/0s", "10/-1m", "10/abc", "10/48h"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	if s := (Rate{10, time.Minute}).String(); s != "10/1m" {
		t.Errorf("String = %q", s)
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestLimiter(t *testing.T) {
	c := &clock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(Rate{N: 3, Per: time.Minute}, c.Now)
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait <= 0 || wait > 20*time.Second {
		t.Fatalf("4th event: ok=%v wait=%v; want refused with a wait of at most 20s", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares the bucket")
	}
	// A refusal takes nothing: after the announced wait exactly one event fits.
	c.Advance(wait)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refused after the announced wait")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("two events after one refill")
	}
	if RetryAfterSeconds(wait) != 20 || RetryAfterSeconds(time.Millisecond) != 1 {
		t.Fatalf("RetryAfterSeconds(%v) = %d", wait, RetryAfterSeconds(wait))
	}
	var off *Limiter = NewLimiter(Rate{}, c.Now)
	if ok, _ := off.Allow("a"); !ok || off != nil {
		t.Fatal("an off rate limits")
	}
}

func TestLimiterForgetsRefilledBuckets(t *testing.T) {
	c := &clock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(Rate{N: 10, Per: time.Minute}, c.Now)
	for i := range 100_000 {
		l.Allow(string(rune(i)) + "-key")
	}
	c.Advance(2 * time.Minute) // every bucket is full again
	for i := range 100_000 {
		l.Allow(string(rune(i)) + "-other")
	}
	if n := l.Len(); n > 150_000 {
		t.Fatalf("%d buckets held for 100,000 live keys: refilled buckets are kept", n)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5:1234": "10.0.0.5", "[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:80": "2001:db8:1:2::/64", "[::ffff:10.0.0.5]:9": "10.0.0.5", "weird": "weird",
	} {
		if got := SourceKey(in); got != want {
			t.Errorf("SourceKey(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestNextHeartbeat(t *testing.T) {
	const interval = 60 * time.Second
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2000 {
		id := string(rune('a'+i%26)) + time.Duration(i).String()
		now := base.Add(time.Duration(i) * 7919 * time.Millisecond)
		for _, u := range []float64{-1, 0, 0.999} {
			n := nextHeartbeat(id, now, interval, u)
			if n < 24 || n > 96 {
				t.Fatalf("answer %ds outside [0.4, 1.6] intervals", n)
			}
		}
		// Without jitter the answer points at the agent's slot.
		n := nextHeartbeat(id, now, interval, 0)
		at := now.Add(time.Duration(n) * time.Second)
		off := (time.Duration(at.UnixNano()%int64(interval)) - Slot(id, interval) + interval + interval/2) % interval
		if off -= interval / 2; off < -time.Second || off > time.Second {
			t.Fatalf("answer lands %v from the agent's slot", off)
		}
	}
	// A steady agent that arrives at its slot is told about one interval.
	id := "steady-agent"
	now := base.Add(Slot(id, interval)).Add(10 * interval)
	if n := nextHeartbeat(id, now, interval, 0); n != 60 {
		t.Fatalf("steady agent told %ds; want 60", n)
	}
	if n := NextHeartbeat(id, now, time.Millisecond); n != 1 {
		t.Fatalf("sub-second interval: %d", n)
	}
}

// Agents that start in the same second are spread over the interval by their first answer.
func TestNextHeartbeatSpreadsABurst(t *testing.T) {
	const interval = 60 * time.Second
	const agents = 6000
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var buckets [10]int
	for i := range agents {
		now := base.Add(time.Duration(i) * time.Second / agents)
		n := NextHeartbeat("agent-"+time.Duration(i).String(), now, interval)
		at := now.Add(time.Duration(n) * time.Second)
		buckets[int(at.Sub(base)%interval)/int(interval/10)]++
	}
	for i, n := range buckets {
		if n < agents/10*7/10 || n > agents/10*13/10 {
			t.Fatalf("bucket %d holds %d of %d agents: not spread (%v)", i, n, agents, buckets)
		}
	}
}
