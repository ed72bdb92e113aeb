package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrBackupPostgres refuses a backup of PostgreSQL, which has its own tools.
var ErrBackupPostgres = errors.New("backup copies SQLite databases only; for PostgreSQL use pg_dump " +
	"(for example: pg_dump --format=custom --file=oneprotect.dump \"$ONEPROTECT_DB\") and pg_restore")

// BackupTo writes a consistent copy of the SQLite database to path, which must not exist
// yet, while the database stays in use. VACUUM INTO reads inside one read transaction on a
// reader connection, so the copy is a snapshot of committed state (everything acknowledged
// before it began) and writers are not blocked. The copy is written beside path, synced to
// disk, then renamed into place, so path never holds a partial copy.
func (s *Store) BackupTo(ctx context.Context, path string) error {
	if s.Dialect != SQLite {
		return ErrBackupPostgres
	}
	if path == "" {
		return errors.New("backup: no target file")
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("backup: %s already exists; choose a new file name", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("backup: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	os.Remove(tmpPath) // VACUUM INTO wants to create the file itself
	defer os.Remove(tmpPath)
	if _, err := s.R.ExecContext(ctx, "VACUUM INTO ?", tmpPath); err != nil {
		return fmt.Errorf("backup: %w", mapErr(err))
	}
	if err := syncFile(tmpPath); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// A hard link, unlike a rename, never replaces a file that appeared meanwhile; a file
	// system without hard links gets the rename.
	if err := os.Link(tmpPath, path); errors.Is(err, os.ErrExist) {
		return fmt.Errorf("backup: %s already exists; choose a new file name", path)
	} else if err != nil {
		if err := os.Rename(tmpPath, path); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	return syncFile(dir)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
