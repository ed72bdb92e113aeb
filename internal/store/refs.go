package store

// Internal integer keys (refs). The API's ids stay UUIDs; inside, the heartbeat log, the
// liveness rows and their indexes use these small integers, which keeps them compact.

// newRef is the SQL expression for a table's next ref: a sequence on PostgreSQL, so that
// replicas never collide, and MAX + 1 on SQLite, where the database's single write lock makes
// it safe (the unique index on ref makes MAX a single lookup).
func (s *Store) newRef(table string) string {
	if s.Dialect == Postgres {
		return "nextval('" + table + "_ref_seq')"
	}
	return "(SELECT COALESCE(MAX(ref), 0) + 1 FROM " + table + ")"
}
