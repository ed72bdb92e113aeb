package store

import (
	"context"
	"fmt"
)

// SettingWarnings names PostgreSQL server settings under which this service degrades at fleet
// scale; it is empty on SQLite and on a server configured as PostgreSQL ships.
//
// Autovacuum matters twice here: every liveness update leaves a dead row version that only
// vacuum reclaims, and the planner's statistics come from its ANALYZE. Without them a
// statement prepared while a table was small keeps the plan made for it as the table grows:
// batched enrollment into a 160,000-agent fleet fell from 1,300/s to 86/s until an ANALYZE
// (BENCHMARKS.md).
func (s *Store) SettingWarnings(ctx context.Context) ([]string, error) {
	if s.Dialect != Postgres {
		return nil, nil
	}
	var autovacuum, trackCounts string
	if err := s.R.QueryRowContext(ctx, `SELECT current_setting('autovacuum'), current_setting('track_counts')`).
		Scan(&autovacuum, &trackCounts); err != nil {
		return nil, fmt.Errorf("read PostgreSQL settings: %w", err)
	}
	return settingWarnings(autovacuum, trackCounts), nil
}

func settingWarnings(autovacuum, trackCounts string) []string {
	if autovacuum == "on" && trackCounts == "on" {
		return nil
	}
	return []string{"PostgreSQL autovacuum is off (autovacuum=" + autovacuum + ", track_counts=" + trackCounts +
		"): tables bloat and query plans go stale as the fleet grows; turn it on"}
}
