// Package observe gives every request an id, logs internal errors with it, and keeps the
// Prometheus metrics served at /metrics.
package observe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type requestIDKey struct{}

// RequestID returns the request's id ("" outside a request).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Request ids are a random per-process prefix and a counter: unique across replicas and
// restarts without a random read per request.
var (
	idPrefix  = func() string { var b [4]byte; _, _ = rand.Read(b[:]); return hex.EncodeToString(b[:]) }()
	idCounter atomic.Uint64
)

func newID() string {
	return idPrefix + strconv.FormatUint(idCounter.Add(1), 36)
}

// WithRequestID gives every request an id, echoed as X-Request-Id, before any route is
// chosen: health checks, metrics, static pages and 404/405 answers carry one too.
func WithRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newID()
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// Metrics are the service's Prometheus collectors, on a registry of their own.
type Metrics struct {
	Registry   *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	Heartbeats *prometheus.CounterVec
	// CommitSize and CommitSeconds describe the group commits (heartbeats and enrollments).
	CommitSize    prometheus.Histogram
	CommitSeconds prometheus.Histogram
	// CheckpointSeconds and WALBacklog describe SQLite's WAL checkpoints (store.ObserveCheckpoints).
	CheckpointSeconds *prometheus.HistogramVec
	WALBacklog        prometheus.Gauge
}

// NewMetrics registers the collectors.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oneprotect_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "oneprotect_http_request_duration_seconds",
		Help:    "HTTP request latency by route and status code, from the handler's start to its end (the server's own handling time: not the wait in the kernel's queues or for a core before it).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "code"})
	// Counted by the heartbeat service, so both transports are seen (see telemetry.Service).
	m.Heartbeats = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oneprotect_heartbeats_total",
		Help: "Heartbeats by transport (rest, graphql) and outcome (accepted, duplicate, canceled, or the error code).",
	}, []string{"transport", "outcome"})
	m.CommitSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "oneprotect_group_commit_size", Help: "Writes (heartbeats, enrollments) per group commit.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
	})
	m.CommitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "oneprotect_group_commit_seconds", Help: "Duration of a group commit.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
	})
	m.CheckpointSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "oneprotect_sqlite_checkpoint_seconds",
		Help:    "Duration of SQLite WAL checkpoints: background (off the writer's path) and restart (on the writer's connection: the writer waits for it).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"kind"})
	m.WALBacklog = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "oneprotect_sqlite_wal_backlog_frames",
		Help: "WAL frames (pages) not yet copied back into the SQLite database file after the last checkpoint.",
	})
	m.Registry.MustRegister(m.requests, m.duration, m.Heartbeats, m.CommitSize, m.CommitSeconds, m.CheckpointSeconds, m.WALBacklog,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (flush, hijack for websockets) reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Middleware assigns a request id (echoed as X-Request-Id), recovers panics as a bare 500
// (the details go to the log, never to the client), and records metrics under route.
func (m *Metrics) Middleware(route string, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := RequestID(r.Context()) // set by WithRequestID in front of the router
		if id == "" {
			id = newID()
			w.Header().Set("X-Request-Id", id)
			r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("panic", "request_id", id, "route", route, "panic", p)
				if sw.code == 0 {
					http.Error(sw, `{"error":{"code":"internal","message":"internal error (request `+id+`)"}}`, http.StatusInternalServerError)
				}
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			c := strconv.Itoa(code)
			m.requests.WithLabelValues(route, c).Inc()
			m.duration.WithLabelValues(route, c).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}
