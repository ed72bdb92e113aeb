// Package migrations embeds the SQL migrations; one set serves SQLite and PostgreSQL, so the
// SQL sticks to the common subset (TEXT ids, BIGINT unix-microsecond times, TEXT JSON).
// Statements are separated by --bun:split.
package migrations

import "embed"

//go:embed *.sql
var FS embed.FS
