package main

import (
	"context"
	"fmt"
	"io"

	"github.com/oneprotect/telemetry/internal/store"
)

// backupCommand is `oneprotect backup --to FILE`: a consistent copy of a SQLite database,
// safe while the server runs. PostgreSQL is refused with a pointer to pg_dump.
func backupCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("backup")
	db := dbFlag(fs)
	to := fs.String("to", "", "the file to write the copy to; it must not exist yet (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return &usageError{"backup: --to is required"}
	}
	if store.IsPostgres(*db) {
		return store.ErrBackupPostgres
	}
	if err := checkDB(*db, true); err != nil {
		return err
	}
	st, err := store.Open(ctx, *db)
	if err != nil {
		return dbError(*db, err)
	}
	defer st.Close()
	if err := st.BackupTo(ctx, *to); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, map[string]string{"backup": *to})
	}
	fmt.Fprintf(stdout, "backup of %s written to %s\n", *db, *to)
	return nil
}
