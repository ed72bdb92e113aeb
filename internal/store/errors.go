package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oneprotect/telemetry/internal/domain"
)

// ErrNotFound is returned by single-row lookups that found nothing in the tenant.
var ErrNotFound = errors.New("store: not found")

// ErrStorageFull is the unavailable error of a database whose disk (or size limit) is full:
// a fault of the server, which the client retries after Retry-After, not an internal error.
// Nothing of the refused write was kept (the transaction rolled back).
var ErrStorageFull = &domain.Error{Code: domain.CodeUnavailable,
	Message: "the database has no space left, try again later"}

// mapErr turns driver errors that callers must tell apart into domain errors: an unreachable
// database becomes CodeUnavailable; a unique violation becomes CodeConflict. Everything else
// stays as it is and is reported as internal (never shown to clients).
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var de *domain.Error
	if errors.As(err, &de) || errors.Is(err, ErrNotFound) || errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if isStorageFull(err) {
		return ErrStorageFull
	}
	if isUnavailable(err) {
		return &domain.Error{Code: domain.CodeUnavailable, Message: domain.ErrUnavailable.Message}
	}
	if isUniqueViolation(err) {
		return &domain.Error{Code: domain.CodeConflict, Message: "already exists"}
	}
	return err
}

// isDeadlock: PostgreSQL chose this transaction as a deadlock's victim (40P01) or could not
// serialize it (40001); it was rolled back and may simply run again.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// isStorageFull: SQLITE_FULL (the disk, or max_page_count), ENOSPC, and PostgreSQL's
// disk_full (53100); out of memory (53200) and too many connections (53300), the rest of
// its insufficient-resources class, are unavailable too (isUnavailable).
func isStorageFull(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "53100"
	}
	return errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "database or disk is full")
}

func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08: connection exceptions; 57P0x: admin shutdown, crash shutdown, cannot connect now;
		// 53: insufficient resources (disk full is told apart above).
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P0") ||
			strings.HasPrefix(pgErr.Code, "53")
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sql.ErrConnDone) ||
		strings.Contains(err.Error(), "sql: database is closed") // database/sql exports no value for it
}
