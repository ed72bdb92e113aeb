package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun/driver/sqliteshim"
)

// Under a writer that never pauses, the WAL stays bounded: the background checkpoint starts it
// again once it passes walRestartFrames, instead of letting it grow with every write (which
// PASSIVE checkpoints alone do). Without the RESTART round this WAL ends near 16 MiB.
func TestWALStaysBoundedUnderSteadyWrites(t *testing.T) {
	defer func(n int, d time.Duration) { walRestartFrames, checkpointInterval = n, d }(walRestartFrames, checkpointInterval)
	walRestartFrames, checkpointInterval = 64, 20*time.Millisecond
	path := filepath.Join(t.TempDir(), "wal.db")
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.W.ExecContext(ctx, "CREATE TABLE wal_probe (id INTEGER PRIMARY KEY, pad BLOB)"); err != nil {
		t.Fatal(err)
	}
	pad := []byte(strings.Repeat("x", 4000)) // a page of its own per row
	largest := int64(0)
	const writes = 2000 // about 2 pages of WAL each: 16 MiB if nothing restarts it
	for i := 0; i < writes; i++ {
		if _, err := s.W.ExecContext(ctx, "INSERT INTO wal_probe (pad) VALUES (?)", pad); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > largest {
			largest = fi.Size()
		}
	}
	t.Logf("largest WAL: %d bytes", largest)
	// The bound: the restart size plus what a few checkpoint intervals of writes add, generously.
	if limit := int64(4 << 20); largest > limit {
		t.Fatalf("the WAL grew to %d bytes under steady writes; want at most %d", largest, limit)
	}
	var n int
	if err := s.R.QueryRowContext(ctx, "SELECT count(*) FROM wal_probe").Scan(&n); err != nil || n != writes {
		t.Fatalf("rows = %d (%v), want %d", n, err, writes)
	}
}

// A new file gets sqlitePageSize; a file made earlier keeps its own page size and still opens,
// migrates and takes writes (the page size of a database is fixed once it has pages).
func TestPageSizeOfNewAndExistingFiles(t *testing.T) {
	ctx := context.Background()
	pageSize := func(s *Store) int {
		var n int
		if err := s.W.QueryRowContext(ctx, "PRAGMA page_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fresh, err := Open(ctx, filepath.Join(t.TempDir(), "new.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got := pageSize(fresh); got != sqlitePageSize {
		t.Fatalf("new file: page size %d, want %d", got, sqlitePageSize)
	}

	// A file made as an earlier build made it: SQLite's default 4 KiB pages, in WAL, with a table.
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := sql.Open(sqliteshim.ShimName, "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"PRAGMA page_size = 4096", "PRAGMA journal_mode = WAL", "CREATE TABLE earlier (id INTEGER PRIMARY KEY)"} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	reopened, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if got := pageSize(reopened); got != 4096 {
		t.Fatalf("existing file: page size %d, want it kept at 4096", got)
	}
	if _, err := reopened.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := reopened.W.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal mode %q, %v", mode, err)
	}
}
