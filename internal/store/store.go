// Package store is the only package that speaks SQL. It opens SQLite or PostgreSQL through
// bun, runs the embedded migrations, and offers tenant-scoped queries: every query that
// reads or writes tenant data takes the tenant id and filters by it.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/oneprotect/telemetry/internal/engine"
)

// Dialect names the database engine.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Store is the database. Reads go to R; every write transaction goes to W. On SQLite, W has
// exactly one connection, so writes are serialized inside the process and never meet
// SQLITE_BUSY from each other, while WAL lets R's readers run beside them. On PostgreSQL,
// R and W are the same pool.
type Store struct {
	Dialect Dialect
	R       *bun.DB
	W       *bun.DB
	path    string // SQLite file path, for the migration file lock
	hb      *heartbeatStatements
	enr     *enrollStatements
	stmts   *stmtCache
	commit  atomic.Pointer[engine.Engine]
	reads   readStatements

	pruneFrom atomic.Int64 // the log position retention has pruned up to

	stopCheckpoint func() // SQLite: stops the background WAL checkpoint

	// OfflineAfter is the server's --offline-after: a site's own window is applied as the
	// difference from it (site_settings).
	OfflineAfter time.Duration

	// ObserveCommit, when set, learns the size and duration of every group commit.
	ObserveCommit func(writes int, took time.Duration)
	// observeCheckpoint: see ObserveCheckpoints (atomic: the checkpointer runs from Open on).
	observeCheckpoint atomic.Pointer[func(kind string, took time.Duration, framesLeft int)]
}

// IsPostgres reports whether dsn selects PostgreSQL (CONTRACT §3).
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open connects to dsn: a postgres:// URL or a SQLite file path.
func Open(ctx context.Context, dsn string) (*Store, error) {
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn)
	}
	return openSQLite(ctx, dsn)
}

func openPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := stdlibConfig(dsn)
	if err != nil {
		return nil, err
	}
	sqldb := stdlib.OpenDB(*cfg)
	sqldb.SetMaxOpenConns(32)
	sqldb.SetMaxIdleConns(32)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	db := bun.NewDB(sqldb, pgdialect.New())
	s := newStore(Postgres, db, db, "")
	if err := s.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func openSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("empty SQLite path")
	}
	open := func(conns, cacheKiB int) (*bun.DB, error) {
		sqldb, err := sql.Open(sqliteshim.ShimName, sqliteDSN(path, cacheKiB))
		if err != nil {
			return nil, err
		}
		sqldb.SetMaxOpenConns(conns)
		sqldb.SetMaxIdleConns(conns)
		sqldb.SetConnMaxLifetime(0)
		sqldb.SetConnMaxIdleTime(0)
		return bun.NewDB(sqldb, sqlitedialect.New()), nil
	}
	// The writer's page cache holds the insertion points of the event indexes (one per agent
	// and index) for a few thousand agents, so heartbeats do not wait on page reads. It is not
	// bigger because SQLite walks the cache's hash table at the end of every write transaction
	// (pcache1TruncateUnsafe): at 64 MiB that walk was 5% of the writer's time (BENCHMARKS.md).
	w, err := open(1, 16<<10)
	if err != nil {
		return nil, err
	}
	r, err := open(8, 8<<10)
	if err != nil {
		w.Close()
		return nil, err
	}
	s := newStore(SQLite, r, w, path)
	// The first connection switches the file to WAL; do it on the writer before readers open.
	if err := w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	if err := s.startCheckpointer(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	return s, nil
}

// sqliteDSN enables WAL, a busy timeout (for other processes such as the CLI), foreign keys,
// full fsync and a page cache of cacheKiB on every connection, in the syntax of whichever
// driver sqliteshim selected. BEGIN IMMEDIATE takes the write lock when a transaction
// starts, not halfway through it.
// sqliteBusyTimeout (ms) is how long a connection waits for a lock another one holds.
const sqliteBusyTimeout = 10000

func sqliteDSN(path string, cacheKiB int) string {
	u := "file:" + (&url.URL{Path: path}).EscapedPath()
	cache := strconv.Itoa(-cacheKiB)          // negative: KiB rather than pages
	if sqliteshim.DriverName() == "sqlite3" { // mattn/go-sqlite3 (-tags cgosqlite)
		return u + "?_journal_mode=WAL&_busy_timeout=" + strconv.Itoa(sqliteBusyTimeout) + "&_foreign_keys=1&_synchronous=FULL&_txlock=immediate" +
			"&_cache_size=" + cache
	}
	// busy_timeout first: switching a new file to WAL takes a lock that another process opening
	// it at the same moment (a second replica, the CLI) must wait for, not fail on.
	return u + "?_pragma=busy_timeout(" + strconv.Itoa(sqliteBusyTimeout) + ")&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(FULL)&_pragma=temp_store(MEMORY)&_txlock=immediate&_pragma=cache_size(" + cache + ")"
}

func newStore(d Dialect, r, w *bun.DB, path string) *Store {
	s := &Store{Dialect: d, R: r, W: w, path: path}
	s.hb = newHeartbeatStatements(d, s.Rebind)
	s.enr = newEnrollStatements(d, s.Rebind)
	s.enr.group = &jobGroup{run: s.enrollBatch}
	return s
}

// Rebind turns the ? placeholders of a raw database/sql statement into the driver's style.
// Hot paths use database/sql with placeholders (not bun's query builder, which writes values
// into the SQL text) so that statements are parsed once and reused.
func (s *Store) Rebind(query string) string {
	if s.Dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Close closes the pools.
func (s *Store) Close() error {
	s.stopCommitter()
	if s.stopCheckpoint != nil {
		s.stopCheckpoint()
		s.stopCheckpoint = nil
	}
	s.reads.close()
	err := s.W.Close()
	if s.R != s.W {
		err = errors.Join(err, s.R.Close())
	}
	return err
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.R.NewRaw("SELECT 1").Scan(ctx, &one); err != nil {
		return mapErr(err)
	}
	return nil
}

// InTx runs fn in a write transaction, committed when fn returns nil.
// On PostgreSQL a transaction that loses a deadlock is rolled back and run again (a few times):
// it wrote nothing, and the caller should not see a lock order it cannot choose.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.W.RunInTx(ctx, nil, fn)
		if attempt < 3 && isDeadlock(err) {
			continue
		}
		return mapErr(err)
	}
}

// Micros converts a time to the stored unit (unix microseconds); FromMicros converts back.
func Micros(t time.Time) int64      { return t.UnixMicro() }
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func optMicros(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	v := Micros(*t)
	return &v
}

func optTime(us *int64) *time.Time {
	if us == nil {
		return nil
	}
	t := FromMicros(*us)
	return &t
}

func stdlibConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("invalid PostgreSQL URL") // the parse error may echo the password
	}
	return cfg, nil
}

// mustJSON encodes values that always encode (plain structs and maps of plain values).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
