package store

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/uptrace/bun/migrate"

	"github.com/oneprotect/telemetry/migrations"
)

// migrationLockKey is the PostgreSQL advisory lock that serializes migrations across replicas.
const migrationLockKey = 0x6f6e6570726f74 // "oneprot"

// Migrate applies every pending embedded migration. Replicas that start together take turns:
// on PostgreSQL through a session advisory lock (released if the holder dies), on SQLite
// through an flock on a file beside the database. The later one finds nothing left to do.
func (s *Store) Migrate(ctx context.Context) (applied []string, err error) {
	unlock, err := s.lockMigrations(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock migrations: %w", err)
	}
	defer unlock()

	m := migrate.NewMigrator(s.W, migrations.All)
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("init migrations: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	for _, mig := range group.Migrations {
		applied = append(applied, mig.String())
	}
	// The hot-path statements can only be prepared once their tables exist.
	if s.commit.Load() == nil {
		if err := s.startCommitter(ctx); err != nil {
			return applied, fmt.Errorf("prepare statements: %w", err)
		}
	}
	return applied, nil
}

func (s *Store) lockMigrations(ctx context.Context) (func(), error) {
	if s.Dialect == Postgres {
		conn, err := s.W.Conn(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", migrationLockKey); err != nil {
			conn.Close()
			return nil, mapErr(err)
		}
		return func() {
			_, _ = conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock(?)", migrationLockKey)
			conn.Close()
		}, nil
	}
	f, err := os.OpenFile(s.path+".migrate-lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
