// Package testenv runs tests against real databases: every test gets a fresh SQLite file
// and, when ONEPROTECT_TEST_POSTGRES holds a PostgreSQL URL, a fresh PostgreSQL database of
// its own. It also builds the whole service behind an httptest server, with a controllable
// clock and small REST and GraphQL clients, so tests go through the public interface.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// PostgresEnv names the variable holding the base PostgreSQL URL for tests.
const PostgresEnv = "ONEPROTECT_TEST_POSTGRES"

// Database is one database engine a test runs on.
type Database struct {
	Name string                    // "sqlite" or "postgres"
	New  func(t testing.TB) string // a fresh, empty database; returns its DSN
}

// Databases lists the engines to test on. PostgreSQL is skipped, with a note, when the
// variable is unset; when CI=true and it is set but unreachable, the test fails instead.
func Databases(t testing.TB) []Database {
	dbs := []Database{{Name: "sqlite", New: NewSQLite}}
	if base := os.Getenv(PostgresEnv); base != "" {
		if err := checkPostgres(base); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is set but PostgreSQL is unreachable: %v", PostgresEnv, err)
			}
			t.Logf("PostgreSQL unreachable, testing SQLite only: %v", err)
		} else {
			dbs = append(dbs, Database{Name: "postgres", New: NewPostgres})
		}
	}
	return dbs
}

// ForEachDB runs fn as a subtest on every database, each with a fresh database.
func ForEachDB(t *testing.T, fn func(t *testing.T, dsn string)) {
	for _, db := range Databases(t) {
		t.Run(db.Name, func(t *testing.T) { fn(t, db.New(t)) })
	}
}

// NewSQLite returns the path of a new SQLite file in the test's temp dir.
func NewSQLite(t testing.TB) string {
	return filepath.Join(t.TempDir(), "test.db")
}

var (
	pgCheckOnce sync.Once
	pgCheckErr  error
)

func checkPostgres(base string) error {
	pgCheckOnce.Do(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			pgCheckErr = err
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pgCheckErr = db.PingContext(ctx)
	})
	return pgCheckErr
}

// NewPostgres creates a database of its own for the test and drops it afterwards.
func NewPostgres(t testing.TB) string {
	base := os.Getenv(PostgresEnv)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "oneprotect_test_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Clock is a controllable clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock starts at a fixed instant.
func NewClock() *Clock { return &Clock{now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)} }

// Now returns the current instant.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Unique returns a short random suffix for names.
func Unique() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsPostgres reports whether dsn is a PostgreSQL URL.
func IsPostgres(dsn string) bool { return strings.HasPrefix(dsn, "postgres") }
