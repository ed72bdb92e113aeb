package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Open-loop load (--rate): heartbeats leave on a schedule, at a fixed rate whatever the
// server answers, as a fleet's do (every agent beats on its own clock; none waits for
// another's answer). A closed-loop run (--concurrency alone) sends a worker's next request
// only once its previous one is answered, so a slow server slows the load down and the
// requests that would have arrived meanwhile are never measured ("coordinated omission").
//
// Here every request has a scheduled time, and its latency is measured from that time, not
// from when it could finally be sent: a server that falls behind is charged for the whole
// wait, as an agent would see it. The C connections (--concurrency) share the schedule as
// wrk2 does: connection w sends the arrivals w, w+C, w+2C, ..., one every C/rate seconds. A
// connection whose previous answer is late sends the next request as soon as it can, and that
// request's latency includes the wait; arrivals still unsent when the duration ends (and a
// short grace after it) are counted (Unsent) and say that the rate was not held (too few
// connections for the latency, or a generator short of CPU: SendLag tells how late requests
// left).

// OpenLoop is the open-loop part of a summary.
type OpenLoop struct {
	Rate float64 `json:"rate"` // the target, requests per second
	// Scheduled arrivals fell within the duration; Unsent of them were never sent because the
	// schedule fell behind.
	Scheduled         uint64  `json:"scheduled"`
	Unsent            uint64  `json:"unsent"`
	AcceptedPerSecond float64 `json:"accepted_per_second"`
	// SendLag is how late requests left, behind their scheduled times.
	SendLag Latency `json:"send_lag_ms"`
	// ServiceTime and ShedServiceTime are measured from the actual send (what a closed-loop
	// generator reports), for every answer but 503s and for the 503s.
	ServiceTime     Latency  `json:"service_time_ms"`
	ShedServiceTime *Latency `json:"shed_service_time_ms,omitempty"`
}

// lastCall is how late after the end of the run an arrival scheduled within it may still be
// sent (a timer fires a little late): later, it is counted unsent.
const lastCall = 100 * time.Millisecond

// maxRate bounds --rate.
const maxRate = 1_000_000

func (c *Config) checkRate() error {
	if c.Rate < 0 || c.Rate > maxRate {
		return fmt.Errorf("--rate must be between 0 and %d requests per second", maxRate)
	}
	if c.Rate > 0 && c.Order == OrderOnce {
		return errors.New("--rate sends for --duration: it does not combine with --order once")
	}
	if c.Rate > 0 && (c.AgentConnections || c.MTLS) {
		return errors.New("--rate sends over the --concurrency connections: it does not combine with --agent-connections or --mtls")
	}
	return nil
}

// openStats are one connection's counters in an open-loop run.
type openStats struct {
	workerStats
	service, shedService, lag histogram
	scheduled, unsent         uint64
}

func (s *openStats) merge(o *openStats) {
	s.service.merge(&o.service)
	s.shedService.merge(&o.shedService)
	s.lag.merge(&o.lag)
	s.scheduled += o.scheduled
	s.unsent += o.unsent
}

// schedule is the arrival times of one connection: arrival w + k*conns of a run at rate per
// second that started at start.
type schedule struct {
	start time.Time
	first float64 // ns after start of this connection's first arrival
	every float64 // ns between two of its arrivals
}

func newSchedule(start time.Time, rate float64, conns, w int) schedule {
	per := 1e9 / rate
	return schedule{start: start, first: float64(w) * per, every: float64(conns) * per}
}

// at is the time of this connection's k-th arrival.
func (s schedule) at(k uint64) time.Time {
	return s.start.Add(time.Duration(s.first + float64(k)*s.every))
}

// count is how many of this connection's arrivals fall in [start, start+d).
func (s schedule) count(d time.Duration) uint64 {
	if float64(d) <= s.first {
		return 0
	}
	n := uint64((float64(d) - s.first) / s.every)
	if s.at(n).Before(s.start.Add(d)) {
		n++
	}
	return n
}

func driveOpenLoop(ctx context.Context, cfg Config, agents []Agent, sum *Summary) {
	targets := buildTargets(cfg, agents)
	run := randomHex(6)
	var requests, errCount atomic.Uint64
	var cursor atomic.Uint64
	stats := make([]*openStats, cfg.Concurrency)
	rawAddr := rawAddress(cfg.Server)
	// The clock starts once every connection is open: a fleet's agents keep theirs alive from
	// beat to beat, and opening them all within the first C/rate seconds would charge a
	// connection storm that no fleet sends to the first arrivals.
	var warm, started sync.WaitGroup
	warm.Add(cfg.Concurrency)
	started.Add(1)
	var start, deadline time.Time
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		st := &openStats{workerStats: workerStats{status: map[int]uint64{}, gqlCodes: map[string]uint64{}}}
		stats[w] = st
		wg.Go(func() {
			idPrefix := run + "-" + strconv.Itoa(w) + "-"
			var body, req []byte
			var respBuf bytes.Buffer
			raw := &rawConn{addr: rawAddr}
			defer raw.close()
			warmUp(ctx, cfg, raw, &respBuf)
			warm.Done()
			started.Wait()
			sched := newSchedule(start, cfg.Rate, cfg.Concurrency, w)
			st.scheduled = sched.count(cfg.Duration)
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for k := uint64(0); k < st.scheduled; k++ {
				at := sched.at(k)
				if wait := time.Until(at); wait > 0 {
					timer.Reset(wait)
					select {
					case <-timer.C:
					case <-ctx.Done():
					}
				}
				if ctx.Err() != nil || time.Now().After(deadline.Add(lastCall)) {
					st.unsent += st.scheduled - k // the schedule fell behind (or the run was stopped)
					return
				}
				var t *target
				if cfg.Order == OrderRandom {
					t = &targets[rng.IntN(len(targets))]
				} else {
					t = &targets[(cursor.Add(1)-1)%uint64(len(targets))]
				}
				body = t.appendBody(body[:0], idPrefix, k+1)
				sent := time.Now()
				var status int
				var err error
				if rawAddr != "" {
					req = append(req[:0], t.head...)
					req = strconv.AppendInt(req, int64(len(body)), 10)
					req = append(req, "\r\n\r\n"...)
					req = append(req, body...)
					status, err = raw.do(req, &respBuf)
				} else {
					// net/http takes ownership of the body until the answer: a fresh copy.
					status, err = postHTTP(ctx, cfg, t, bytes.Clone(body), &respBuf)
				}
				done := time.Now()
				if err != nil {
					status = 0
				}
				st.lag.record(sent.Sub(at))
				st.latency(status, done.Sub(at))
				if status == http.StatusServiceUnavailable {
					st.shedService.record(done.Sub(sent))
				} else {
					st.service.record(done.Sub(sent))
				}
				requests.Add(1)
				if !st.record(cfg, status, respBuf.Bytes()) {
					errCount.Add(1)
				}
			}
		})
	}
	warm.Wait()
	start = time.Now().Add(10 * time.Millisecond) // every worker is waiting for it by then
	deadline = start.Add(cfg.Duration)
	stopProgress := progress(cfg, start, &requests, &errCount)
	started.Done()
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	workers := make([]*workerStats, len(stats))
	var ol openStats
	for i, st := range stats {
		workers[i] = &st.workerStats
		ol.merge(st)
	}
	sum.collect(workers, requests.Load(), errCount.Load(), elapsed)
	sum.OpenLoop = &OpenLoop{Rate: cfg.Rate, Scheduled: ol.scheduled, Unsent: ol.unsent,
		SendLag: latencyOf(&ol.lag), ServiceTime: latencyOf(&ol.service)}
	if sum.DurationSeconds > 0 {
		sum.OpenLoop.AcceptedPerSecond = float64(sum.Accepted) / sum.DurationSeconds
	}
	if ol.shedService.total > 0 {
		l := latencyOf(&ol.shedService)
		sum.OpenLoop.ShedServiceTime = &l
	}
}

// appendBody appends the heartbeat body of t with the heartbeat id idPrefix+seq to b.
func (t *target) appendBody(b []byte, idPrefix string, seq uint64) []byte {
	b = append(b, t.prefix...)
	b = append(b, idPrefix...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, t.suffix...)
	b = strconv.AppendInt(b, t.uptime(), 10)
	return append(b, t.tail...)
}

// warmUp opens a worker's connection before the clock starts, with a request that writes
// nothing (GET /healthz); a failure is left for the first heartbeat to meet and count.
func warmUp(ctx context.Context, cfg Config, raw *rawConn, buf *bytes.Buffer) {
	if raw.addr != "" {
		_, _ = raw.do([]byte("GET /healthz HTTP/1.1\r\nHost: "+raw.addr+"\r\nUser-Agent: oneprotect-loadgen\r\n\r\n"), buf)
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Server, "/")+"/healthz", nil)
	if err != nil {
		return
	}
	if resp, err := cfg.HTTP.Do(req); err == nil {
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
	}
}

// postHTTP posts one heartbeat through net/http (https://) and reads the answer into buf.
func postHTTP(ctx context.Context, cfg Config, t *target, body []byte, buf *bytes.Buffer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = http.Header{"Content-Type": jsonContentType, "Authorization": t.auth}
	resp, err := cfg.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// formatOpenLoop adds the open-loop lines of the summary.
func (s *Summary) formatOpenLoop(b *strings.Builder) {
	o := s.OpenLoop
	if o == nil {
		return
	}
	fmt.Fprintf(b, "open loop:    target %.0f req/s; %d scheduled, %d unsent; %.0f accepted/s\n",
		o.Rate, o.Scheduled, o.Unsent, o.AcceptedPerSecond)
	fmt.Fprintf(b, "send lag:     p50 %.2fms  p99 %.2fms  max %.2fms (behind the schedule)\n", o.SendLag.P50, o.SendLag.P99, o.SendLag.Max)
	fmt.Fprintf(b, "service time: p50 %.2fms  p99 %.2fms (from the send; latency above is from the scheduled time)\n",
		o.ServiceTime.P50, o.ServiceTime.P99)
	if l := o.ShedServiceTime; l != nil {
		fmt.Fprintf(b, "503 service:  p50 %.2fms  p99 %.2fms\n", l.P50, l.P99)
	}
	if o.Unsent > 0 {
		fmt.Fprintf(b, "warning:      the rate was not held: %d arrivals were never sent (more --concurrency, or a generator short of CPU)\n", o.Unsent)
	}
}
