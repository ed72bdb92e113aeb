// Command oneprotect is the OneProtect Telemetry service and its operator tools.
//
//	oneprotect serve [flags]                 run the HTTP service (migrates first)
//	oneprotect migrate                       apply database migrations
//	oneprotect tenant create --name N [--slug S] [--json]
//	oneprotect user create --tenant T --name N --role admin|viewer [--json]
//	oneprotect projections rebuild           replay the event log into the asset read model
//	oneprotect version                       print the version, commit and Go version
//
// Every flag can also come from ONEPROTECT_<FLAG_IN_UPPER_SNAKE>; a flag on the command
// line wins over the environment.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oneprotect/telemetry/internal/app"
	"github.com/oneprotect/telemetry/internal/domain"
	"github.com/oneprotect/telemetry/internal/pacing"
	"github.com/oneprotect/telemetry/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: oneprotect <command> [flags]

commands:
  serve                  run the service (see: oneprotect serve -h)
  migrate                apply the database migrations
  tenant create          create a tenant
  user create            create a user and print its API token
  token revoke           revoke an API token by id
  backup                 write a consistent copy of a SQLite database (--to FILE)
  projections rebuild    rebuild the asset read model from the event log
  agent                  run an agent on this machine
  ca init                create (or import) the agent CA for mTLS
  loadgen                drive simulated agents against a server
  version                print the version, commit and Go version

every command takes --db (env ONEPROTECT_DB): a postgres:// URL or a SQLite file path;
'oneprotect <command> -h' lists a command's flags
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	helpOut = stdout
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd := strings.Join(args[:min(2, len(args))], " "); {
	case args[0] == "serve":
		err = serve(ctx, args[1:], stderr)
	case args[0] == "migrate":
		err = migrate(ctx, args[1:], stdout)
	case cmd == "tenant create":
		err = tenantCreate(ctx, args[2:], stdout)
	case cmd == "user create":
		err = userCreate(ctx, args[2:], stdout)
	case cmd == "projections rebuild":
		err = projectionsRebuild(ctx, args[2:], stdout)
	case cmd == "token revoke":
		err = tokenRevoke(ctx, args[2:], stdout)
	case args[0] == "backup":
		err = backupCommand(ctx, args[1:], stdout)
	case args[0] == "agent":
		err = agentCommand(ctx, args[1:], stdout, stderr)
	case args[0] == "ca":
		err = caCommand(ctx, args[1:], stdout)
	case args[0] == "loadgen":
		err = loadgenCommand(ctx, args[1:], stdout, stderr)
	case args[0] == "version":
		err = versionCommand(args[1:], stdout)
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = unknownCommand(args)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "oneprotect: %s\n", ue.msg)
		return 2
	}
	if err != nil {
		var de *domain.Error
		if errors.As(err, &de) {
			fmt.Fprintf(stderr, "oneprotect: %s\n", de.Message)
		} else {
			fmt.Fprintf(stderr, "oneprotect: %v\n", err)
		}
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		return 1
	}
	return 0
}

// exitError asks for a specific exit code.
type exitError int

func (e exitError) Error() string { return "exit " + strconv.Itoa(int(e)) }

// newFlags makes a flag set whose flags also read ONEPROTECT_<NAME> from the environment.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return fs
}

// parse applies environment defaults, then the command line.
func parse(fs *flag.FlagSet, args []string) error {
	prepareFlags(fs)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("invalid %s=%q: %v", env, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(helpOut, fs)
			return err
		}
		return flagError(fs, err)
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected arguments: %s\nrun 'oneprotect %s -h' for its flags", strings.Join(fs.Args(), " "), fs.Name())}
	}
	return nil
}

func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", "oneprotect.db", "database: a postgres:// URL or a SQLite file path")
}

// byteSize is a flag value like 1MiB, 512KiB or 1048576.
type byteSize int64

func (b *byteSize) String() string { return humanBytes(int64(*b)) }
func (b *byteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return errors.New("want a positive size such as 1MiB")
	}
	*b = byteSize(n * mult)
	return nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	tuneGC()
	def := app.Defaults()
	fs := newFlags("serve")
	db := dbFlag(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen `host:port`")
	interval := fs.Duration("heartbeat-interval", def.HeartbeatInterval, "heartbeat interval advertised to agents")
	offline := fs.Duration("offline-after", def.OfflineAfter, "an asset is online while its last heartbeat is younger")
	stale := fs.Duration("stale-after", def.StaleAfter, "identities silent this long become STALE")
	sweep := fs.Duration("sweep-interval", def.SweepInterval, "how often the stale sweeper runs")
	retention := fs.Duration("telemetry-retention", def.TelemetryRetention, "how long heartbeats (asset.telemetry.received events, and so their heartbeat_id repeats) are kept; lifecycle events and inventory history are kept for good")
	pg := fs.Bool("playground", def.Playground, "serve the GraphQL playground at /playground")
	intro := fs.Bool("introspection", def.Introspection, "allow GraphQL introspection (and field suggestions)")
	maxBody := byteSize(def.MaxBody)
	fs.Var(&maxBody, "max-body", "largest request body, e.g. 1MiB")
	demo := fs.Bool("demo", false, "demo mode: a demo tenant, an admin token and simulated agents")
	pprofAddr := fs.String("pprof-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off when empty")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may take to finish")
	tlsf := addTLSFlags(fs)
	ws := def.Websocket
	fs.IntVar(&ws.MaxConnections, "ws-max-connections", ws.MaxConnections, "most open GraphQL websocket connections")
	fs.IntVar(&ws.MaxConnectionsPerAddr, "ws-max-connections-per-addr", ws.MaxConnectionsPerAddr, "most open websocket connections from one client IP address")
	fs.DurationVar(&ws.InitTimeout, "ws-init-timeout", ws.InitTimeout, "a websocket must send connection_init within this")
	fs.DurationVar(&ws.IdleTimeout, "ws-idle-timeout", ws.IdleTimeout, "close a websocket with no subscription that sends nothing this long")
	fs.DurationVar(&ws.PingInterval, "ws-ping-interval", ws.PingInterval, "websocket ping interval; no pong within two intervals disconnects")
	fs.IntVar(&ws.MaxSubscriptionsPerConnection, "max-subscriptions-per-connection", ws.MaxSubscriptionsPerConnection, "most active subscriptions on one websocket")
	fs.IntVar(&ws.MaxSubscriptionsPerPrincipal, "max-subscriptions-per-principal", ws.MaxSubscriptionsPerPrincipal, "most active subscriptions of one user or service account over all its websockets")
	credGrace := fs.Duration("agent-credential-grace", def.AgentCredentialGrace, "how long an agent's previous token keeps working after it rotates")
	credMaxAge := fs.Duration("agent-credential-max-age", def.AgentCredentialMaxAge, "refuse agent tokens older than this with 401 credential_expired (0: no maximum)")
	agentRate, enrollRate := def.AgentRateLimit, def.EnrollRateLimit
	fs.Var(pacing.RateFlag{Rate: &agentRate}, "agent-rate-limit", "requests per agent, N/DURATION (429 rate_limited beyond it; 0: off)")
	fs.Var(pacing.RateFlag{Rate: &enrollRate}, "enroll-rate-limit", "enrollments per source address, N/DURATION (429 rate_limited beyond it; 0: off)")
	inFlight := fs.Int("max-heartbeats-in-flight", def.MaxHeartbeatsInFlight, "most heartbeats served at once; beyond it a heartbeat is answered 503 unavailable with Retry-After before its body is read (0: no bound but the write queue's)")
	latencyTarget := fs.Duration("heartbeat-latency-target", def.HeartbeatLatencyTarget, "once heartbeats have queued for two 100 ms windows (the quickest of each took over half this), admit only what the recent throughput serves within it until the queue and the overload are gone (503 unavailable with Retry-After beyond; 0: --max-heartbeats-in-flight alone)")
	onConflict := def.OnIdentityConflict
	fs.Var(&onConflict, "on-identity-conflict", "one agent credential seen from two live machines: flag (flag the identity for review) or refuse (also answer the newer machine 409 identity_conflict)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *demo && *offline == def.OfflineAfter {
		// The demo's agents beat every 5-10s: a short window shows quiet ones going offline.
		*offline = 30 * time.Second
	}
	if *demo && agentRate == def.AgentRateLimit {
		// ...and faster than a real agent's 60s: give them room.
		agentRate = pacing.Rate{N: 60, Per: time.Minute}
	}
	durations := map[string]time.Duration{"heartbeat-interval": *interval, "offline-after": *offline,
		"stale-after": *stale, "sweep-interval": *sweep, "shutdown-timeout": *shutdownTimeout, "telemetry-retention": *retention}
	for _, name := range sortedKeys(durations) {
		if durations[name] <= 0 {
			return fmt.Errorf("--%s must be positive", name)
		}
	}
	if err := ws.Validate(); err != nil {
		return err
	}
	if *inFlight < 0 || *latencyTarget < 0 {
		return errors.New("--max-heartbeats-in-flight and --heartbeat-latency-target must not be negative")
	}
	if *credGrace < 0 || *credMaxAge < 0 {
		return errors.New("--agent-credential-grace and --agent-credential-max-age must not be negative")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := app.Config{DB: *db, HeartbeatInterval: *interval, OfflineAfter: *offline, StaleAfter: *stale,
		SweepInterval: *sweep, Playground: *pg, Introspection: *intro, MaxBody: int64(maxBody), Log: log, Websocket: ws,
		AgentCredentialGrace: *credGrace, AgentCredentialMaxAge: *credMaxAge, AgentRateLimit: agentRate, EnrollRateLimit: enrollRate,
		TelemetryRetention: *retention, OnIdentityConflict: onConflict, MaxHeartbeatsInFlight: *inFlight,
		HeartbeatLatencyTarget: *latencyTarget}
	if err := checkDB(*db, false); err != nil {
		return err
	}
	if err := tlsf.apply(&cfg, *demo); err != nil {
		return err
	}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return dbError(*db, err)
	}
	defer a.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Background jobs outlive the signal: Close stops them after HTTP has drained, so
	// other replicas keep hearing of the heartbeats accepted while draining.
	a.Run(context.Background())
	srv.RegisterOnShutdown(a.CloseWebsockets)
	var pprofSrv *http.Server
	if *pprofAddr != "" {
		pln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
		log.Info("pprof listening", "addr", pln.Addr().String(), "url", "http://"+pln.Addr().String()+"/debug/pprof/")
		pprofSrv = servePprof(pln, log)
	}
	serveFn, scheme, err := tlsf.listen(srv, ln, a, log, stderr)
	if err != nil {
		return err
	}
	base := scheme + "://" + ln.Addr().String()
	log.Info("serving", "addr", ln.Addr().String(), "db", redactDSN(*db), "playground", *pg)
	demoCtx, stopDemo := context.WithCancel(context.Background())
	defer stopDemo()
	var fleet interface{ Wait() }
	if *demo {
		if fleet, err = startDemo(demoCtx, a, base, stderr); err != nil {
			return err
		}
	}

	errc := make(chan error, 1)
	go func() { errc <- serveFn() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// SIGTERM or SIGINT, in order: the demo's simulated agents (clients of this very
	// server) stop; the listener closes and in-flight requests finish, while websockets
	// are closed with 1001; then (a.Close) the write engine is flushed, the background
	// jobs stop and the database closes. Every step is bounded.
	log.Info("shutting down: draining in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	stopDemo()
	if fleet != nil {
		fleet.Wait()
	}
	drainErr := srv.Shutdown(shutdownCtx)
	if drainErr != nil {
		drainErr = fmt.Errorf("requests still running after --shutdown-timeout %v: %w", *shutdownTimeout, drainErr)
		_ = srv.Close()
	}
	if pprofSrv != nil {
		_ = pprofSrv.Shutdown(shutdownCtx)
	}
	if err := errors.Join(drainErr, a.Close()); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// tuneGC runs the collector a quarter as often as Go's default unless GOGC says otherwise. How
// often it runs follows the allocation rate, and each mark phase takes a quarter of the CPU
// plus the assists of allocating goroutines, during which requests wait longer for a core (up
// to 80 ms on a 2-core node in a trace), so fewer collections are fewer such windows. When the
// token and identity caches were on the heap (1.7 GiB live at a million agents) this was also
// the collector's share of the CPU: 22% at Go's default, 14% at 200, and 7,900 heartbeats/s at
// 400 against 6,200 at 200. The caches now live outside the heap (internal/flatcache), so the
// live heap is small (about 50 MB at 50,000 agents: connection buffers and goroutine stacks)
// and five times it is little memory.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

// servePprof exposes the Go profiler on its own listener, never on the service's address.
func servePprof(ln net.Listener, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof listener", "err", err)
		}
	}()
	return srv
}

func redactDSN(dsn string) string {
	if !store.IsPostgres(dsn) {
		return dsn
	}
	if i := strings.Index(dsn, "@"); i > 0 {
		if j := strings.Index(dsn, "://"); j > 0 && j < i {
			return dsn[:j+3] + "***" + dsn[i:]
		}
	}
	return dsn
}

func openStore(ctx context.Context, db string) (*store.Store, error) {
	if err := checkDB(db, true); err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, db)
	if err != nil {
		return nil, dbError(db, err)
	}
	if _, err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func migrate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("migrate")
	db := dbFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := checkDB(*db, false); err != nil {
		return err
	}
	st, err := store.Open(ctx, *db)
	if err != nil {
		return dbError(*db, err)
	}
	defer st.Close()
	applied, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if applied == nil {
			applied = []string{}
		}
		return printJSON(stdout, map[string]any{"applied": applied})
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "database is up to date")
	}
	for _, m := range applied {
		fmt.Fprintln(stdout, "applied", m)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

func withApp(ctx context.Context, db string, fn func(a *app.App) error) error {
	cfg := app.Defaults()
	cfg.DB = db
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	// An admin command never creates a database: a mistyped --db would give an empty one.
	if err := checkDB(db, true); err != nil {
		return err
	}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return dbError(db, err)
	}
	defer a.Close()
	return fn(a)
}

func tenantCreate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("tenant create")
	db := dbFlag(fs)
	name := fs.String("name", "", "tenant name (required)")
	slug := fs.String("slug", "", "URL-safe short name (default: derived from the name)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	return withApp(ctx, *db, func(a *app.App) error {
		t, err := a.Tenancy.CreateTenant(ctx, *name, *slug)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, map[string]string{"tenant_id": t.ID, "slug": t.Slug})
		}
		fmt.Fprintf(stdout, "tenant %s created (slug %s)\n", t.ID, t.Slug)
		return nil
	})
}

func userCreate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("user create")
	db := dbFlag(fs)
	tenant := fs.String("tenant", "", "tenant id or slug (required)")
	name := fs.String("name", "", "user name (required)")
	role := fs.String("role", "", "admin or viewer (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	return withApp(ctx, *db, func(a *app.App) error {
		p, token, err := a.Tenancy.CreateUser(ctx, *tenant, *name, domain.Role(strings.ToUpper(*role)))
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, map[string]string{"principal_id": p.ID, "token": token})
		}
		fmt.Fprintf(stdout, "user %s created; its token (shown once):\n%s\n", p.ID, token)
		return nil
	})
}

func projectionsRebuild(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("projections rebuild")
	db := dbFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := st.RebuildProjections(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, map[string]int{"events_replayed": n})
	}
	fmt.Fprintf(stdout, "asset read model rebuilt from %d events\n", n)
	return nil
}
