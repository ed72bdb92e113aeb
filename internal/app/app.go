// Package app wires the service together: store, services, transports, background jobs.
// server.go (the CLI) and the end-to-end tests build the same App.
package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/oneprotect/telemetry/graph"
	"github.com/oneprotect/telemetry/graph/loaders"
	"github.com/oneprotect/telemetry/internal/apidoc"
	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/clones"
	"github.com/oneprotect/telemetry/internal/credentials"
	"github.com/oneprotect/telemetry/internal/cursor"
	"github.com/oneprotect/telemetry/internal/enrollment"
	"github.com/oneprotect/telemetry/internal/fleet"
	"github.com/oneprotect/telemetry/internal/live"
	"github.com/oneprotect/telemetry/internal/observe"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/pki"
	"github.com/oneprotect/telemetry/internal/playground"
	"github.com/oneprotect/telemetry/internal/rest"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/strictjson"
	"github.com/oneprotect/telemetry/internal/telemetry"
	"github.com/oneprotect/telemetry/internal/tenancy"
	"github.com/oneprotect/telemetry/internal/web"
)

// Config is what `oneprotect serve` takes (CONTRACT §3).
type Config struct {
	DB                string
	HeartbeatInterval time.Duration
	OfflineAfter      time.Duration
	StaleAfter        time.Duration
	SweepInterval     time.Duration
	Playground        bool
	Introspection     bool
	MaxBody           int64
	// AgentCredentialGrace is how long a rotated agent token keeps working;
	// AgentCredentialMaxAge refuses agent tokens older than this (0: no maximum).
	AgentCredentialGrace  time.Duration
	AgentCredentialMaxAge time.Duration
	// AgentRateLimit bounds each agent's requests, EnrollRateLimit the enrollments of each
	// source address; the zero Rate turns a limit off.
	AgentRateLimit  pacing.Rate
	EnrollRateLimit pacing.Rate
	// MaxHeartbeatsInFlight bounds the heartbeats being served at once; beyond it they are
	// refused 503 before their bodies are read (0: no bound but the write queue's).
	MaxHeartbeatsInFlight int
	// HeartbeatLatencyTarget lowers that bound while heartbeats queue: to what the recent
	// throughput serves within the target (pacing.InFlight; 0: the fixed bound alone).
	HeartbeatLatencyTarget time.Duration
	Log                    *slog.Logger
	// Now is the clock; tests replace it. Nil means time.Now.
	Now func() time.Time

	// AgentCADir is the agent CA's directory (--agent-ca); empty: no agent certificates.
	AgentCADir string
	// AgentCertTTL is the lifetime of the agent and collector certificates it signs.
	AgentCertTTL time.Duration
	// RequireAgentMTLS makes the agent endpoints refuse requests without a certificate.
	RequireAgentMTLS bool
	// Websocket bounds GraphQL subscription connections (zero fields: defaults).
	Websocket graph.WebsocketLimits
	// TelemetryRetention is how long the heartbeat log (asset.telemetry.received) is kept.
	TelemetryRetention time.Duration
	// OnIdentityConflict is what happens when one agent credential is seen from two live
	// machines: flag the identity, or also refuse the newer machine (--on-identity-conflict).
	OnIdentityConflict clones.Mode
}

// Defaults returns the contract's defaults.
func Defaults() Config {
	return Config{DB: "oneprotect.db", HeartbeatInterval: 60 * time.Second, OfflineAfter: 180 * time.Second,
		StaleAfter: 168 * time.Hour, SweepInterval: time.Minute, Playground: true, Introspection: true,
		MaxBody: 1 << 20, AgentCertTTL: DefaultAgentCertTTL, Log: slog.Default(), Websocket: graph.DefaultWebsocketLimits(),
		AgentCredentialGrace: credentials.DefaultGrace, AgentRateLimit: pacing.DefaultAgentRate, EnrollRateLimit: pacing.DefaultEnrollRate,
		TelemetryRetention: telemetry.DefaultRetention, MaxHeartbeatsInFlight: telemetry.DefaultMaxInFlight,
		HeartbeatLatencyTarget: telemetry.DefaultLatencyTarget}
}

// App is the running service.
type App struct {
	Config     Config
	Store      *store.Store
	Auth       *auth.Authenticator
	Tenancy    *tenancy.Service
	Enrollment *enrollment.Service
	Telemetry  *telemetry.Service
	Fleet      *fleet.Service
	Live       *live.Broker
	Metrics    *observe.Metrics
	Retention  *telemetry.Retention
	Handler    http.Handler
	// Sessions are the open GraphQL websocket connections.
	Sessions *graph.Sessions
	// Credentials rotates agent credentials.
	Credentials *credentials.Service

	bg        sync.WaitGroup // the background jobs Run started
	stopBG    context.CancelFunc
	bgMu      sync.Mutex
	closeOnce sync.Once
	closeErr  error
	// CA is the agent CA, nil without --agent-ca; ClientCerts reads client certificates.
	CA          *pki.CA
	ClientCerts *auth.ClientCertificates
}

// Open connects to the database, applies migrations and builds the services and handler.
func Open(ctx context.Context, cfg Config) (*App, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	st, err := store.Open(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	if _, err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, err
	}
	warnings, err := st.SettingWarnings(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	for _, w := range warnings {
		cfg.Log.Warn(w)
	}
	key, err := st.Secret(ctx, "cursor-key", randomHex)
	if err != nil {
		st.Close()
		return nil, err
	}
	a := &App{Config: cfg, Store: st, Metrics: observe.NewMetrics()}
	if err := a.openCA(); err != nil {
		st.Close()
		return nil, err
	}
	st.ObserveCommit = func(n int, took time.Duration) {
		a.Metrics.CommitSize.Observe(float64(n))
		a.Metrics.CommitSeconds.Observe(took.Seconds())
	}
	st.ObserveCheckpoints(func(kind string, took time.Duration, framesLeft int) {
		a.Metrics.CheckpointSeconds.WithLabelValues(kind).Observe(took.Seconds())
		a.Metrics.WALBacklog.Set(float64(framesLeft))
	})
	a.Auth = auth.NewAuthenticator(st, cfg.Now)
	a.Auth.Log = cfg.Log
	a.Tenancy = &tenancy.Service{Store: st, Now: cfg.Now, TokensChanged: a.Auth.Forget,
		Defaults: tenancy.Thresholds{OfflineAfter: cfg.OfflineAfter, StaleAfter: cfg.StaleAfter}}
	st.OfflineAfter = cfg.OfflineAfter
	a.Enrollment = &enrollment.Service{Store: st, Tenancy: a.Tenancy, Now: cfg.Now, HeartbeatInterval: cfg.HeartbeatInterval}
	a.Enrollment.CA, a.Enrollment.CertTTL = a.CA, cfg.AgentCertTTL
	a.Enrollment.RateLimit = pacing.NewLimiter(cfg.EnrollRateLimit, cfg.Now)
	agentLimit := pacing.NewLimiter(cfg.AgentRateLimit, cfg.Now)
	credPolicy := &credentials.Policy{MaxAge: cfg.AgentCredentialMaxAge, Now: cfg.Now}
	a.Credentials = &credentials.Service{Store: st, Auth: a.Auth, Policy: credPolicy, Now: cfg.Now,
		Grace: cfg.AgentCredentialGrace, Limiter: agentLimit}
	pgDSN := ""
	if st.Dialect == store.Postgres {
		pgDSN = cfg.DB
	}
	a.Live = live.NewBroker(pgDSN, cfg.Log)
	a.Telemetry = &telemetry.Service{Store: st, Now: cfg.Now, HeartbeatInterval: cfg.HeartbeatInterval, Publisher: a.Live,
		Heartbeats: a.Metrics.Heartbeats, Credentials: credPolicy, RateLimit: agentLimit, OnIdentityConflict: cfg.OnIdentityConflict,
		InFlight: pacing.NewInFlight(cfg.MaxHeartbeatsInFlight, cfg.HeartbeatLatencyTarget)}
	a.Metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "oneprotect_heartbeats_in_flight",
		Help: "Heartbeats being served (admitted, not yet answered); --max-heartbeats-in-flight bounds them."},
		func() float64 { return float64(a.Telemetry.InFlight.Len()) }))
	a.Metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "oneprotect_heartbeats_in_flight_limit",
		Help: "The bound on heartbeats in flight in force: --max-heartbeats-in-flight, or lower while heartbeats queue beyond --heartbeat-latency-target."},
		func() float64 { return float64(a.Telemetry.InFlight.Limit()) }))
	retention := cfg.TelemetryRetention
	if retention <= 0 {
		retention = telemetry.DefaultRetention
	}
	a.Retention = &telemetry.Retention{Service: a.Telemetry, Retention: retention, Interval: telemetry.DefaultPruneInterval,
		Batch: telemetry.DefaultPruneBatch, Pause: telemetry.DefaultPruneBatchWait}
	a.Fleet = &fleet.Service{Store: st, Cursors: &cursor.Codec{Key: []byte(key)}, Now: cfg.Now, OfflineAfter: cfg.OfflineAfter}
	a.Sessions = graph.NewSessions(a.Auth)
	a.Handler = a.routes()
	return a, nil
}

func randomHex() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run starts the background jobs (stale sweeper, cross-replica live updates). They run
// until ctx ends or Close stops them; Close waits for them either way.
func (a *App) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	a.bgMu.Lock()
	prev := a.stopBG
	a.stopBG = func() {
		if prev != nil {
			prev()
		}
		cancel()
	}
	a.bgMu.Unlock()
	a.bg.Go(func() { a.Live.Run(ctx) })
	a.bg.Go(func() {
		a.Enrollment.RunSweeper(ctx, a.Config.SweepInterval, a.Config.StaleAfter, a.Config.Log)
	})
	a.bg.Go(func() { a.Retention.Run(ctx, a.Config.Log) })
}

// closeBound bounds each waiting step of Close, so a stuck connection or job cannot keep
// the process from exiting.
const closeBound = 15 * time.Second

// CloseWebsockets closes every GraphQL websocket connection with 1001 (going away) and
// turns new ones away. http.Server.Shutdown does not know hijacked connections, so serve
// registers this with RegisterOnShutdown.
func (a *App) CloseWebsockets() { a.Sessions.CloseAll() }

// Close shuts the service down after the HTTP server has drained, in this order: close the
// websocket connections (1001) and wait for their handlers; flush the write engine; stop
// the background jobs and wait for them; close the database. It is safe to call twice.
//
// Every request that was answered waited for its own commit, so once HTTP has drained the
// write engine holds nothing acknowledged; Store.Close still finishes its last batch.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		log := a.Config.Log
		a.CloseWebsockets()
		ctx, cancel := context.WithTimeout(context.Background(), closeBound)
		defer cancel()
		if err := a.Sessions.Wait(ctx); err != nil {
			log.Warn("shutdown: websocket connections still open", "err", err)
		}
		if f, ok := any(a.Store).(interface{ Flush(context.Context) error }); ok {
			if err := f.Flush(ctx); err != nil {
				a.closeErr = err
			}
		}
		a.bgMu.Lock()
		if a.stopBG != nil {
			a.stopBG()
		}
		a.bgMu.Unlock()
		done := make(chan struct{})
		go func() { a.bg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			log.Warn("shutdown: background jobs did not stop in time")
		}
		a.closeErr = errors.Join(a.closeErr, a.Store.Close())
	})
	return a.closeErr
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	wrap := func(route string, h http.Handler) http.Handler {
		return a.Metrics.Middleware(route, a.Config.Log, a.ClientCerts.Middleware(a.Auth.Middleware(h)))
	}
	onlineSince := a.Fleet.OnlineSince

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		if err := a.Store.Ping(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("database unavailable\n"))
			return
		}
		if a.Telemetry.StorageFull() {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("database has no space left for writes\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /openapi.json", apidoc.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))

	(&rest.Handler{Enrollment: a.Enrollment, Telemetry: a.Telemetry, Credentials: a.Credentials, MaxBody: a.Config.MaxBody,
		Log: a.Config.Log, Metrics: a.Metrics}).Register(mux, wrap)

	gql := graph.NewServer(&graph.Resolver{Tenancy: a.Tenancy, Enrollment: a.Enrollment, Telemetry: a.Telemetry,
		Fleet: a.Fleet, Live: a.Live}, graph.Options{Introspection: a.Config.Introspection, MaxBody: a.Config.MaxBody,
		Authenticator: a.Auth, OnlineSince: onlineSince, Log: a.Config.Log, Sessions: a.Sessions, Websocket: a.Config.Websocket})
	mux.Handle("/query", wrap("graphql", limitBody(a.Config.MaxBody, strictjson.GraphQL(graphqlTransport(
		loaders.Middleware(a.Store, onlineSince, graph.HTTP(gql)))))))

	if a.Config.Playground {
		pg := playground.Handler("OneProtect Telemetry", "/playground", "/query")
		mux.Handle("/playground", pg)
		mux.Handle("/playground/", pg)
	}
	// The fleet view: a static page that talks to /query with the user's token.
	fleetView := web.Handler()
	mux.Handle("GET /{$}", fleetView)
	mux.Handle("GET "+web.AssetsPrefix, fleetView)
	return observe.WithRequestID(rest.Root(mux))
}

// graphqlTransport labels heartbeats submitted through /query for the heartbeat counter.
func graphqlTransport(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(telemetry.WithTransport(r.Context(), telemetry.TransportGraphQL)))
	})
}

// limitBody caps request bodies at max bytes (--max-body applies to /query as to REST).
func limitBody(max int64, next http.Handler) http.Handler {
	tooLarge := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = w.Write([]byte(`{"errors":[{"message":"the body exceeds --max-body","extensions":{"code":"PAYLOAD_TOO_LARGE"}}]}`))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			tooLarge(w)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		if r.ContentLength < 0 { // chunked: only reading tells the size (gqlgen would answer 200)
			data, err := io.ReadAll(r.Body)
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				tooLarge(w)
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
		}
		next.ServeHTTP(w, r)
	})
}
