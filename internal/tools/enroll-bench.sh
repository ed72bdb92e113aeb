#!/usr/bin/env bash
# Enrollment benchmark (BENCHMARKS.md): on a fresh database, enrolls AGENTS agents over HTTP with
# the load generator (64 at a time, one enrollment token of AGENTS uses, every agent its own
# machine id: a fleet rollout) and prints the rate, the group commits (how many, their mean size
# and duration), then the database's size per agent.
#
#   internal/tools/enroll-bench.sh [--db sqlite|postgres] [--agents 100000] [--bin PATH]
#                                  [--profile FILE] [--profile-seconds 20]
#
# --profile writes the server's CPU profile of PROFILE_SECONDS of the enrollment (starting two
# seconds in) to FILE.
#
# Needs jq, curl, and sqlite3 or psql. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
. internal/tools/bench-lib.sh
DBKIND=sqlite; AGENTS=100000; BIN=""; PROFILE=""; PROFILE_SECONDS=20
PG=${ONEPROTECT_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DBKIND=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --profile-seconds) PROFILE_SECONDS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
SVC=127.0.0.1:18791; SVC_PID=""; PPROF=127.0.0.1:18792
bench_scratch enroll
case "$DBKIND" in
  sqlite) DB=$WORK/enroll.db ;;
  postgres) psql "$PG/postgres" -qc "CREATE DATABASE $PGNAME" >/dev/null; DB="$PG/$PGNAME?sslmode=disable" ;;
  *) echo "--db must be sqlite or postgres" >&2; exit 2 ;;
esac
db_bytes() {
  if [ "$DBKIND" = sqlite ]; then
    sqlite3 "$DB" 'SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count());' |
      awk -v ps="$(sqlite3 "$DB" 'PRAGMA page_size')" '{print $1 * ps}'
  else
    psql "$PG/$PGNAME" -Atc "SELECT pg_database_size(current_database())"
  fi
}

"$BIN" serve --db "$DB" --addr "$SVC" --agent-rate-limit 0 --enroll-rate-limit 0 --pprof-addr "$PPROF" 2>>"$WORK/serve.log" &
SVC_PID=$!
for _ in $(seq 1 300); do curl -sf "http://$SVC/readyz" >/dev/null && break; sleep 0.1; done
empty=$(db_bytes)
PROFILER=""
if [ -n "$PROFILE" ]; then
  (sleep 2; curl -s "http://$PPROF/debug/pprof/profile?seconds=$PROFILE_SECONDS" > "$PROFILE") &
  PROFILER=$!
fi
bench_enroll "$DB" "Enroll" "$AGENTS" 64
[ -n "$PROFILER" ] && wait "$PROFILER"
curl -s "http://$SVC/metrics" | awk '
  /^oneprotect_group_commit_size_sum/ {n = $2} /^oneprotect_group_commit_size_count/ {c = $2}
  /^oneprotect_group_commit_seconds_sum/ {s = $2}
  END {if (c > 0) printf "group commits: %d, %.1f writes each, %.2f ms each\n", c, n / c, 1000 * s / c}'
echo "database per enrolled agent: $(( ($(db_bytes) - empty) / AGENTS )) bytes"
echo "server RSS: $(ps -o rss= -p "$SVC_PID" | awk '{printf "%.0f MiB", $1/1024}')"
bench_stop
