package flatcache

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

type item struct {
	Name    string
	Note    *string
	At      time.Time
	Until   *time.Time
	Counter int64
}

var itemCodec = Codec[*item]{
	Append: func(b []byte, v *item) []byte {
		b = AppendString(b, v.Name)
		b = AppendOptString(b, v.Note)
		b = AppendTime(b, v.At)
		b = AppendOptTime(b, v.Until)
		return AppendInt(b, v.Counter)
	},
	Decode: func(r *Reader) (*item, bool) {
		v := &item{Name: r.String(), Note: r.OptString(), At: r.Time(), Until: r.OptTime(), Counter: r.Int()}
		return v, !r.Failed()
	},
}

func TestAddGetRemovePurge(t *testing.T) {
	c := New(32<<20, time.Minute, itemCodec)
	note, until := "a note", time.Date(2027, 2, 3, 4, 5, 6, 7, time.UTC)
	want := &item{Name: "one", Note: &note, At: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Until: &until, Counter: -42}
	c.Add("k1", want)
	c.Add("k2", &item{Name: "two"})
	got, ok := c.Get("k1")
	if !ok || got.Name != "one" || *got.Note != note || !got.At.Equal(want.At) || !got.Until.Equal(until) || got.Counter != -42 {
		t.Fatalf("Get(k1) = %+v, %v; want %+v", got, ok, want)
	}
	if got == want {
		t.Fatal("a hit must decode a value of its own, not hand out the one stored")
	}
	two, ok := c.Get("k2")
	if !ok || two.Note != nil || !two.At.IsZero() || two.Until != nil || two.Counter != 0 {
		t.Fatalf("Get(k2) = %+v, %v: nil and zero fields must stay nil and zero", two, ok)
	}
	if _, ok := c.Get("k3"); ok {
		t.Fatal("a key never added was found")
	}
	c.Remove("k1")
	if _, ok := c.Get("k1"); ok {
		t.Fatal("a removed key was found")
	}
	c.Purge()
	if _, ok := c.Get("k2"); ok || c.Len() != 0 {
		t.Fatalf("after Purge: found k2 %v, %d entries", ok, c.Len())
	}
}

func TestEntriesOlderThanTheTTLAreAbsent(t *testing.T) {
	now := time.Hour
	c := New(32<<20, time.Minute, itemCodec)
	c.since = func() time.Duration { return now }
	c.Add("k", &item{Name: "x"})
	now += time.Minute
	if _, ok := c.Get("k"); !ok {
		t.Fatal("an entry exactly the TTL old was dropped")
	}
	now += time.Nanosecond
	if _, ok := c.Get("k"); ok {
		t.Fatal("an entry older than the TTL was found")
	}
}

func TestUnreadableEntryIsAMiss(t *testing.T) {
	c := New(32<<20, time.Minute, itemCodec)
	short := Codec[*item]{Append: func(b []byte, v *item) []byte { return AppendString(b, v.Name) }, Decode: itemCodec.Decode}
	bad := New(32<<20, time.Minute, short)
	bad.Add("k", &item{Name: "only a name"})
	c.c = bad.c // the bytes of another codec: the reader runs out
	if v, ok := c.Get("k"); ok {
		t.Fatalf("a truncated entry decoded as %+v", v)
	}
}

func TestFullCacheDropsItsOldestEntries(t *testing.T) {
	c := New(32<<20, time.Hour, itemCodec) // the smallest fastcache: 512 buckets of 64 KiB
	name := string(make([]byte, 1000))
	const n = 100_000 // about 100 MB of entries
	for i := range n {
		c.Add(fmt.Sprint(i), &item{Name: name, Counter: int64(i)})
	}
	if c.Len() >= n/2 {
		t.Fatalf("%d entries of 1 KB held in 32 MB", c.Len())
	}
	if v, ok := c.Get(fmt.Sprint(n - 1)); !ok || v.Counter != n-1 {
		t.Fatalf("the newest entry is gone: %+v, %v", v, ok)
	}
	if _, ok := c.Get("0"); ok {
		t.Fatal("the oldest entry survived a cache three times over full")
	}
}

// TestEntriesAreNotOnTheGoHeap is why the package exists: the entries must not be memory the
// collector marks. 200,000 entries of about 300 bytes (60 MB) may grow the heap only by
// fastcache's index (a pointer-free map of two integers an entry).
func TestEntriesAreNotOnTheGoHeap(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	c := New(128<<20, time.Hour, itemCodec)
	before := heap()
	name := string(make([]byte, 280))
	const n = 200_000
	for i := range n {
		c.Add(fmt.Sprintf("agent-%08d", i), &item{Name: name, Counter: int64(i)})
	}
	grown := int64(heap()) - int64(before)
	if c.Len() < n*9/10 {
		t.Fatalf("only %d of %d entries held", c.Len(), n)
	}
	if limit := int64(n * 64); grown > limit {
		t.Fatalf("the Go heap grew by %d bytes for %d entries (over %d): entries are on the heap", grown, n, limit)
	}
	runtime.KeepAlive(c)
}

func TestConcurrentUse(t *testing.T) {
	c := New(32<<20, time.Minute, itemCodec)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				key := fmt.Sprint(i % 100)
				switch (i + w) % 4 {
				case 0:
					c.Add(key, &item{Name: key, Counter: int64(i)})
				case 1:
					c.Remove(key)
				default:
					if v, ok := c.Get(key); ok && v.Name != key {
						t.Errorf("key %s held %q", key, v.Name)
					}
				}
			}
		}()
	}
	wg.Wait()
}
