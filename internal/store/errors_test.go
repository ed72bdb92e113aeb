package store

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oneprotect/telemetry/internal/domain"
)

// A database out of space is unavailable (503 with Retry-After), not internal. SQLite's
// SQLITE_FULL is also tested for real, through the server (internal/app, full-disk test);
// PostgreSQL's disk_full cannot be provoked without a file system of its own, so its
// mapping is tested here with the error pgx returns.
func TestMapErrStorageFull(t *testing.T) {
	for _, err := range []error{
		&pgconn.PgError{Code: "53100", Message: "could not extend file: No space left on device"},
		fmt.Errorf("commit: %w", &pgconn.PgError{Code: "53100"}),
		errors.New("database or disk is full (13)"),
		fmt.Errorf("write: %w", syscall.ENOSPC),
	} {
		if got := mapErr(err); got != ErrStorageFull {
			t.Errorf("mapErr(%v) = %v, want ErrStorageFull", err, got)
		}
	}
	for _, code := range []string{"53200", "53300", "08006", "57P01"} {
		if got := domain.ErrorCode(mapErr(&pgconn.PgError{Code: code})); got != domain.CodeUnavailable {
			t.Errorf("PostgreSQL %s: %s, want unavailable", code, got)
		}
	}
	if got := domain.ErrorCode(mapErr(&pgconn.PgError{Code: "22P05"})); got != domain.CodeInternal {
		t.Errorf("an unrelated PostgreSQL error became %s", got)
	}
}
