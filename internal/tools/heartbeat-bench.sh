#!/usr/bin/env bash
# Heartbeat load benchmark (BENCHMARKS.md): the bare-handler ceiling and the service, driven by
# the same wrk script over the same enrolled agents, in one run. Every service phase starts on a
# fresh database, so no phase inherits the rows of another.
#
#   internal/tools/heartbeat-bench.sh [--postgres BASE_URL] [--agents 1000] [--duration 10s] [--bin PATH]
#
# BASE_URL is a PostgreSQL server URL (databases are created on it and dropped afterwards);
# without it the service runs on SQLite files. Needs wrk, jq (and psql for PostgreSQL).
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
. internal/tools/bench-lib.sh
PG=""; AGENTS=1000; DURATION=10s; BIN=""; CONNS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --postgres) PG=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
WORK=$(mktemp -d)
DBS=()
SVC=127.0.0.1:18770; CEIL=127.0.0.1:18771; SVC_PID=""
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  for db in "${DBS[@]}"; do psql "$PG" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "$BIN" ]; then BIN=$WORK/oneprotect; go build -o "$BIN" .; fi
go build -o "$WORK/ceiling" ./internal/tools/ceiling
"$WORK/ceiling" --addr $CEIL &

# fresh_service PHASE: stops the service, starts it on an empty database, enrolls the agents.
fresh_service() {
  if [ -n "$SVC_PID" ]; then bench_stop; fi
  if [ -n "$PG" ]; then
    local name="oneprotect_bench_$1_$$"
    psql "$PG" -qc "CREATE DATABASE $name" >/dev/null
    DBS+=("$name")
    DB=$(echo "$PG" | sed -E "s#(postgres(ql)?://[^/]*)/[^?]*#\1/$name#")
  else
    DB=$WORK/$1.db
  fi
  bench_start "$DB"
  bench_enroll "$DB" "Bench $1" "$AGENTS" "$CONNS"
}

commits() {
  curl -s http://$SVC/metrics | grep -E '^oneprotect_group_commit_(size|seconds)_(sum|count)' | tr '\n' ' '; echo
  echo "server RSS: $(ps -o rss= -p "$SVC_PID" | awk '{printf "%.0f MiB", $1/1024}')"
}

echo "== phase 1: REST over wrk (-t2 -c$CONNS -d$DURATION), ceiling then service"
fresh_service rest
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/heartbeats.lua" http://$CEIL | grep -E "Requests/sec|Non-2xx|Socket|^ +(50|99)%" | sed 's/^/ceiling: /'
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/heartbeats.lua" http://$SVC | grep -E "Requests/sec|Non-2xx|Socket|^ +(50|99)%" | sed 's/^/service: /'
commits
echo "== phase 2: REST over the project's load generator (--concurrency $CONNS)"
fresh_service loadgen_rest
"$BIN" loadgen --server http://$SVC --agents "$AGENTS" --agents-file "$WORK/agents.json" --duration "$DURATION" --concurrency "$CONNS" --quiet | grep -E "throughput|latency|status"
echo "== phase 3: GraphQL submitHeartbeat over the load generator (--concurrency $CONNS)"
fresh_service loadgen_graphql
"$BIN" loadgen --server http://$SVC --agents "$AGENTS" --agents-file "$WORK/agents.json" --duration "$DURATION" --concurrency "$CONNS" --graphql --quiet | grep -E "throughput|latency|status"
commits
