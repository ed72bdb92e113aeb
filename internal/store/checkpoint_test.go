package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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
	var mu sync.Mutex
	seen := map[string]int{}
	s.ObserveCheckpoints(func(kind string, took time.Duration, framesLeft int) {
		mu.Lock()
		defer mu.Unlock()
		if took < 0 || framesLeft < 0 {
			t.Errorf("checkpoint %s: took %v, %d frames left", kind, took, framesLeft)
		}
		seen[kind]++
	})
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
	// Both kinds of checkpoint were seen by the observer (/metrics' source).
	mu.Lock()
	defer mu.Unlock()
	if seen["background"] == 0 || seen["restart"] == 0 {
		t.Errorf("checkpoints observed: %v; want background and restart ones", seen)
	}
}
