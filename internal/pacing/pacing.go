// Package pacing keeps a fleet's traffic even: per-key rate limits (an agent's heartbeats,
// the enrollments of one source address) and the paced heartbeat interval that spreads a
// fleet which started all at once across the whole interval.
//
// The limits live in each replica's memory: with N replicas behind a load balancer an agent
// may get up to N times its limit through, which still stops a runaway agent. No state is
// shared, so a limit costs no database work.
package pacing

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The default limits: an agent at the default 60 s interval sends one heartbeat a minute
// (at most ~2.5 when paced tightly), so 10 a minute leaves room for retries and rotations;
// enrollment allows a burst of 120 machines behind one address (a site behind NAT) and two
// a second after that.
var (
	DefaultAgentRate  = Rate{N: 10, Per: time.Minute}
	DefaultEnrollRate = Rate{N: 120, Per: time.Minute}
)

// Rate is N events per Per, with bursts of up to N. The zero Rate is no limit.
type Rate struct {
	N   int
	Per time.Duration
}

// Off reports whether the rate limits nothing.
func (r Rate) Off() bool { return r.N <= 0 || r.Per <= 0 }

func (r Rate) String() string {
	if r.Off() {
		return "0"
	}
	return strconv.Itoa(r.N) + "/" + shortDuration(r.Per)
}

// shortDuration prints 1m rather than 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ParseRate reads "N/DURATION" (10/1m, 100/30s; "N/m" and "N/s" too) or "0" (off).
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "off" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, errors.New("want N/DURATION such as 10/1m, or 0 for no limit")
	}
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || count < 0 || count > 1_000_000 {
		return Rate{}, errors.New("want N/DURATION with N a whole number from 0 to 1000000")
	}
	per = strings.TrimSpace(per)
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per // "10/m" means 10/1m
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 || d > 24*time.Hour {
		return Rate{}, fmt.Errorf("want N/DURATION with a duration such as 1m or 30s (at most 24h), got %q", per)
	}
	if count == 0 {
		return Rate{}, nil
	}
	return Rate{N: count, Per: d}, nil
}

// RateFlag is a flag.Value for a Rate.
type RateFlag struct{ Rate *Rate }

func (f RateFlag) String() string {
	if f.Rate == nil {
		return "0"
	}
	return f.Rate.String()
}

func (f RateFlag) Set(s string) error {
	r, err := ParseRate(s)
	if err != nil {
		return err
	}
	*f.Rate = r
	return nil
}

// Limiter holds one token bucket (golang.org/x/time/rate) per key. Keys are hashed to 64
// bits, sharded, and forgotten once their bucket is full again (a full bucket is the same
// as a new one), so memory follows the keys active within one Per, not every key ever seen.
// A nil *Limiter allows everything.
type Limiter struct {
	rate   Rate
	limit  rate.Limit
	now    func() time.Time
	seed   maphash.Seed
	shards [limiterShards]limiterShard
}

const (
	limiterShards   = 64
	minSweepEntries = 1024
)

type limiterShard struct {
	mu      sync.Mutex
	buckets map[uint64]*rate.Limiter
	sweepAt int
}

// NewLimiter returns a limiter for r on the clock now, or nil when r is off.
func NewLimiter(r Rate, now func() time.Time) *Limiter {
	if r.Off() {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	l := &Limiter{rate: r, limit: rate.Every(r.Per / time.Duration(r.N)), now: now, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = map[uint64]*rate.Limiter{}
		l.shards[i].sweepAt = minSweepEntries
	}
	return l
}

// Rate returns the configured rate (the zero Rate for a nil limiter).
func (l *Limiter) Rate() Rate {
	if l == nil {
		return Rate{}
	}
	return l.rate
}

// Allow takes one event for key. When the bucket is empty it takes nothing and returns
// false with how long until an event would be allowed.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	h := maphash.String(l.seed, key)
	sh := &l.shards[h%limiterShards]
	now := l.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.buckets[h]
	if b == nil {
		if len(sh.buckets) >= sh.sweepAt {
			sh.sweep(now, l.rate.N)
		}
		b = rate.NewLimiter(l.limit, l.rate.N)
		sh.buckets[h] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets the buckets that have refilled; the next one is due when the shard has
// doubled, so sweeping costs O(1) per new key.
func (sh *limiterShard) sweep(now time.Time, burst int) {
	for k, b := range sh.buckets {
		if b.TokensAt(now) >= float64(burst) {
			delete(sh.buckets, k)
		}
	}
	sh.sweepAt = max(minSweepEntries, 2*len(sh.buckets))
}

// Len counts the buckets held (tests and metrics).
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

// RetryAfterSeconds rounds a wait up to whole seconds, at least 1 (the Retry-After unit).
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// SourceKey is the rate-limit key of a remote address (host:port or host): the IP for
// IPv4, the /64 network for IPv6, where one machine usually holds a whole /64.
func SourceKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
