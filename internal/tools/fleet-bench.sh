#!/usr/bin/env bash
# Fleet benchmark (BENCHMARKS.md): a fleet where every heartbeat comes from a different machine.
# On a fresh database it enrolls AGENTS agents over HTTP, primes their first heartbeats (every
# agent once, in order: the assets are created), then drives heartbeats from agents chosen
# uniformly at random over the whole fleet with wrk, then the same load over a hot set of 1,000
# of them, then both loads again from `oneprotect loadgen` (whose p99, unlike wrk's at a million
# agents, is the server's). It prints, for each phase, req/s and p99 (and non-2xx), then the
# server's RSS and the database growth per enrolled agent and per stored heartbeat (SQLite: the
# logical size a reader sees, WAL not counted; PostgreSQL: pg_database_size).
#
#   internal/tools/fleet-bench.sh [--db sqlite|postgres] [--agents 1000000] [--duration 30s]
#                                 [--bin PATH] [--serve-flags "..."] [--profile FILE] [--state DIR]
#
# --profile writes the server's CPU profile of the fleet-at-random phase to FILE.
# --state keeps the enrolled and primed fleet (database, agents, wrk scripts) in DIR: a later run
# with the same DIR skips enrollment and the first heartbeats, so builds can be compared on one
# million-agent database without spending a quarter of an hour making it again.
#
# Needs wrk, jq, curl, and sqlite3 or psql. Everything listens on 127.0.0.1. A million agents
# takes several minutes per phase on 2 cores: keep it out of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
. internal/tools/bench-lib.sh
DBKIND=sqlite; AGENTS=1000000; DURATION=30s; BIN=""; SERVE_FLAGS=""; PROFILE=""; STATE=""
PG=${ONEPROTECT_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DBKIND=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --serve-flags) SERVE_FLAGS=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --state) STATE=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
if [ -n "$STATE" ]; then mkdir -p "$STATE"; WORK=$(cd "$STATE" && pwd); else WORK=$(mktemp -d); fi
SVC=127.0.0.1:18773; SVC_PID=""
PGNAME="oneprotect_fleet_bench_$$"
[ -n "$STATE" ] && PGNAME="oneprotect_fleet_bench_$(basename "$WORK" | tr -c 'a-zA-Z0-9_\n' _)"
REUSE=""; [ -n "$STATE" ] && [ -f "$WORK/primed" ] && REUSE=1
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "$STATE" ] && return
  [ "$DBKIND" = postgres ] && psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PGNAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "$BIN" ]; then BIN=$(mktemp -d)/oneprotect; go build -o "$BIN" .; fi

case "$DBKIND" in
  sqlite) DB=$WORK/fleet.db ;;
  postgres)
    [ -z "$REUSE" ] && { psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PGNAME" >/dev/null; psql "$PG/postgres" -qc "CREATE DATABASE $PGNAME" >/dev/null; }
    DB="$PG/$PGNAME?sslmode=disable"
    # The figures depend on these; autovacuum off (some CI images) bloats the liveness table and
    # leaves plans made on small tables in place.
    echo "PostgreSQL: $(psql "$PG/postgres" -Atc "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('autovacuum', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'synchronous_commit')")" ;;
  *) echo "--db must be sqlite or postgres" >&2; exit 2 ;;
esac
# PAGE_SIZE (an experiment, BENCHMARKS.md step 8): make the SQLite file with that page size
# before the server first opens it.
[ -z "$REUSE" ] && [ "$DBKIND" = sqlite ] && { rm -f "$DB" "$DB-wal" "$DB-shm"
  [ -n "${PAGE_SIZE:-}" ] && sqlite3 "$DB" "PRAGMA page_size=$PAGE_SIZE; PRAGMA journal_mode=WAL;" >/dev/null; }

# Bench flags: no per-agent rate limit (a load test sends far faster than an agent would).
extra=()
# (The help is read once: piped into grep -q under pipefail, serve could die of SIGPIPE and the
# flag be skipped.)
serve_help=$("$BIN" serve -h 2>&1 || true)
grep -q -- '-agent-rate-limit' <<<"$serve_help" && extra+=(--agent-rate-limit 0)
grep -q -- '-enroll-rate-limit' <<<"$serve_help" && extra+=(--enroll-rate-limit 0)
# shellcheck disable=SC2206
extra+=($SERVE_FLAGS)
PPROF=127.0.0.1:18774
[ -n "$PROFILE" ] && extra+=(--pprof-addr "$PPROF")
bench_start() {
  "$BIN" serve --db "$1" --addr "$SVC" "${extra[@]}" 2>>"$WORK/serve.log" &
  SVC_PID=$!
  for _ in $(seq 1 300); do curl -sf "http://$SVC/readyz" >/dev/null && break; sleep 0.1; done
}

db_bytes() {
  if [ "$DBKIND" = sqlite ]; then
    sqlite3 -cmd ".timeout 10000" "$DB" 'SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count());' |
      awk -v ps="$(sqlite3 -cmd ".timeout 10000" "$DB" 'PRAGMA page_size')" '{print $1 * ps}'
  else
    psql "$PG/$PGNAME" -Atc "SELECT pg_database_size(current_database())"
  fi
}
log_rows() {
  if [ "$DBKIND" = sqlite ]; then sqlite3 -cmd ".timeout 10000" "$DB" 'SELECT count(*) FROM heartbeats'
  else psql "$PG/$PGNAME" -Atc 'SELECT count(*) FROM heartbeats'; fi
}
wrk_line() { # label, wrk output
  echo "$1: $(echo "$2" | awk '/Requests\/sec/ {print $2 " req/s"}'), p99 $(echo "$2" | awk '$1 == "99%" {print $2}'), non-2xx $(echo "$2" | awk '/Non-2xx/ {print $4}' | grep . || echo 0)"
}

bench_start "$DB"
if [ -n "$REUSE" ]; then
  AGENTS=$(wc -l < "$WORK/heartbeats.lua.agents")
  echo "reusing the fleet of $AGENTS agents in $WORK"
  # A restarted server has cold caches; a fleet at its interval keeps them warm. Warm them the way
  # the fleet does: every agent once.
  "$BIN" loadgen --server "http://$SVC" --agents "$AGENTS" --agents-file "$WORK/agents.json" --order once \
    --concurrency 64 --quiet --json > "$WORK/warm.json"
  jq -r '"warming, every agent once (restarted server): \(.requests_per_second | floor) req/s, p99 \(.latency_ms.p99) ms, errors \(.errors)"' "$WORK/warm.json"
else
  empty=$(db_bytes)
  bench_enroll "$DB" "Fleet" "$AGENTS" 64
  enrolled=$(db_bytes)
  # First heartbeats: every agent once, in order.
  "$BIN" loadgen --server "http://$SVC" --agents "$AGENTS" --agents-file "$WORK/agents.json" --order once \
    --concurrency 64 --quiet --json > "$WORK/prime.json"
  jq -r '"first heartbeats: \(.requests_per_second | floor) req/s, p99 \(.latency_ms.p99) ms, errors \(.errors)"' "$WORK/prime.json"
  echo "database per enrolled agent: $(( (enrolled - empty) / AGENTS )) bytes after enrollment, $(( ($(db_bytes) - empty) / AGENTS )) bytes with the first heartbeat"
  [ -n "$STATE" ] && touch "$WORK/primed"
fi
primed=$(db_bytes); rows_primed=$(log_rows)

# The fleet at random.
if [ -n "$PROFILE" ]; then
  secs=${DURATION%s}
  (sleep 2; curl -s "http://$PPROF/debug/pprof/profile?seconds=$((secs - 4))" > "$PROFILE") &
fi
out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$WORK/heartbeats.lua" "http://$SVC" -- random)
wrk_line "fleet of $AGENTS at random" "$out"
rss=$(ps -o rss= -p "$SVC_PID" | awk '{printf "%.0f MiB", $1/1024}')

# A hot set of 1,000 of the same agents.
head -n 1000 "$WORK/heartbeats.lua.agents" > "$WORK/hot.agents"
sed "s#$WORK/heartbeats.lua.agents#$WORK/hot.agents#" "$WORK/heartbeats.lua" > "$WORK/hot.lua"
out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$WORK/hot.lua" "http://$SVC" -- random)
wrk_line "hot set of 1000 at random" "$out"

# The same two loads from the project's own load generator (Go; 64 connections, closed loop, as
# wrk). wrk's Lua holds the whole fleet in its tables, and at a million agents its own pauses
# show in its p99 (BENCHMARKS.md, "wrk's tail at a million agents"); the server's tail is this one.
lg_phase() { # label, agents
  "$BIN" loadgen --server "http://$SVC" --agents "$2" --agents-file "$WORK/agents.json" --order random \
    --duration "$DURATION" --concurrency 64 --quiet --json |
    jq -r --arg l "$1" '"\($l): \(.requests_per_second | floor) req/s, p99 \(.latency_ms.p99) ms, max \(.latency_ms.max) ms, errors \(.errors)"'
}
lg_phase "loadgen: fleet of $AGENTS at random" "$AGENTS"
lg_phase "loadgen: hot set of 1000 at random" 1000

after=$(db_bytes); rows_after=$(log_rows)
echo "server RSS after the fleet run: $rss"
if [ "$rows_after" -gt "$rows_primed" ]; then
  echo "database growth per stored heartbeat: $(( (after - primed) / (rows_after - rows_primed) )) bytes ($((rows_after - rows_primed)) heartbeats)"
fi
bench_stop
