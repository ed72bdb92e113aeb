// Package migrations holds the schema migrations; one set serves SQLite and PostgreSQL. Most
// are embedded SQL files (statements separated by --bun:split) that stick to the common subset
// (TEXT ids, BIGINT unix-microsecond times, TEXT JSON). A migration whose SQL must differ per
// database (sequences, integer primary keys, binary columns) is Go code registered below, with
// the same file-name ordering.
package migrations

import (
	"embed"

	"github.com/uptrace/bun/migrate"
)

//go:embed *.sql
var FS embed.FS

// All is every migration, SQL and Go, in name order.
var All = migrate.NewMigrations()

func init() {
	if err := All.Discover(FS); err != nil {
		panic(err)
	}
}
