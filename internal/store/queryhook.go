package store

import "github.com/uptrace/bun"

// AddQueryHook installs a bun query hook on both pools (reads and writes made through bun),
// for example a statement counter in tests and benchmarks. The heartbeat path's prepared
// database/sql statements bypass bun and are not seen.
func (s *Store) AddQueryHook(h bun.QueryHook) {
	s.R.AddQueryHook(h)
	if s.W != s.R {
		s.W.AddQueryHook(h)
	}
}
