// Package flatcache is a cache of a fixed size in bytes whose entries the garbage collector
// never scans.
//
// The token and identity caches hold an entry for every agent of a fleet, a million of them.
// Kept as Go pointers (an LRU of *domain.Principal), every collection marked them all: at
// 50,000 agents the mark phases were the server's longest pauses under load, and at a million
// they took seconds (BENCHMARKS.md, "Shedding load"). Here each entry is encoded into
// fastcache's chunks, which live outside the Go heap, so the collector's work follows the
// requests in flight rather than the size of the fleet. A hit decodes a fresh value, so no two
// callers ever share one.
//
// When the cache is full its oldest entries make room (fastcache's ring buffers), and an entry
// older than the TTL counts as absent.
package flatcache

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/VictoriaMetrics/fastcache"
)

// Codec turns a value into bytes and back. Decode reports false for bytes it cannot read,
// which the cache treats as a miss.
type Codec[V any] struct {
	Append func(b []byte, v V) []byte
	Decode func(r *Reader) (V, bool)
}

// Cache maps string keys to values of type V. It is safe for concurrent use.
type Cache[V any] struct {
	c     *fastcache.Cache
	ttl   time.Duration
	since func() time.Duration // monotonic: a step of the wall clock does not stretch the TTL
	codec Codec[V]
	bufs  sync.Pool
}

// New returns a cache of about maxBytes (keys, values and 12 bytes of each entry's own),
// whose entries live at most ttl.
func New[V any](maxBytes int, ttl time.Duration, codec Codec[V]) *Cache[V] {
	base := time.Now()
	return &Cache[V]{c: fastcache.New(maxBytes), ttl: ttl, since: func() time.Duration { return time.Since(base) },
		codec: codec, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

// Get returns the value of key, if it is held and younger than the TTL.
func (c *Cache[V]) Get(key string) (V, bool) {
	var zero V
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	b, ok := c.c.HasGet((*bp)[:0], []byte(key))
	*bp = b[:0]
	if !ok || len(b) < 8 {
		return zero, false
	}
	stored := int64(binary.LittleEndian.Uint64(b))
	if int64(c.since())-stored > int64(c.ttl) {
		c.c.Del([]byte(key))
		return zero, false
	}
	r := Reader{s: string(b[8:])} // one allocation, which the decoded strings share
	v, ok := c.codec.Decode(&r)
	if !ok || r.err {
		return zero, false
	}
	return v, true
}

// Add stores v under key, replacing what was there.
func (c *Cache[V]) Add(key string, v V) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	b := binary.LittleEndian.AppendUint64((*bp)[:0], uint64(c.since()))
	b = c.codec.Append(b, v)
	c.c.Set([]byte(key), b)
	*bp = b[:0]
}

// Remove drops key.
func (c *Cache[V]) Remove(key string) { c.c.Del([]byte(key)) }

// Purge drops every entry.
func (c *Cache[V]) Purge() { c.c.Reset() }

// Len counts the entries held (the ones past the TTL included until they are read).
func (c *Cache[V]) Len() int {
	var s fastcache.Stats
	c.c.UpdateStats(&s)
	return int(s.EntriesCount)
}

// The encoding: strings and byte lengths as uvarints, integers as varints, a time as its Unix
// nanoseconds in UTC, and an optional value as a presence byte before it.

// AppendString appends s.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendOptString appends s, which may be nil.
func AppendOptString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, 0)
	}
	return AppendString(append(b, 1), *s)
}

// AppendInt appends n.
func AppendInt(b []byte, n int64) []byte { return binary.AppendVarint(b, n) }

// AppendTime appends t; the zero time stays zero.
func AppendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return AppendInt(append(b, 1), t.UnixNano())
}

// AppendOptTime appends t, which may be nil.
func AppendOptTime(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, 2)
	}
	return AppendTime(b, *t)
}

// Reader reads what the Append functions wrote. A read past the end or of a malformed
// length marks the reader failed, and the cache then counts the entry as absent.
type Reader struct {
	s   string
	err bool
}

// NewReader reads b (for tests of a codec).
func NewReader(b []byte) *Reader { return &Reader{s: string(b)} }

// Failed reports whether a read failed.
func (r *Reader) Failed() bool { return r.err }

func (r *Reader) byte() byte {
	if len(r.s) == 0 {
		r.err = true
		return 0
	}
	c := r.s[0]
	r.s = r.s[1:]
	return c
}

func (r *Reader) uvarint() uint64 {
	var n uint64
	for shift := 0; shift < 64; shift += 7 {
		c := r.byte()
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return n
		}
	}
	r.err = true
	return 0
}

// String reads a string.
func (r *Reader) String() string {
	n := r.uvarint()
	if n > uint64(len(r.s)) {
		r.err = true
		return ""
	}
	s := r.s[:n]
	r.s = r.s[n:]
	return s
}

// OptString reads a string that may be nil.
func (r *Reader) OptString() *string {
	if r.byte() == 0 {
		return nil
	}
	s := r.String()
	return &s
}

// Int reads an integer.
func (r *Reader) Int() int64 {
	u := r.uvarint()
	n := int64(u >> 1)
	if u&1 != 0 {
		n = ^n
	}
	return n
}

// Time reads a time.
func (r *Reader) Time() time.Time {
	t, _ := r.optTime()
	return t
}

// OptTime reads a time that may be nil.
func (r *Reader) OptTime() *time.Time {
	t, ok := r.optTime()
	if !ok {
		return nil
	}
	return &t
}

func (r *Reader) optTime() (time.Time, bool) {
	switch r.byte() {
	case 0:
		return time.Time{}, true
	case 1:
		return time.Unix(0, r.Int()).UTC(), true
	case 2:
		return time.Time{}, false
	}
	r.err = true
	return time.Time{}, false
}
