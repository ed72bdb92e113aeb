#!/usr/bin/env bash
# Fleet-size benchmark (BENCHMARKS.md, issue 6): does a big fleet cost heartbeats anything?
# Enrolls 1,000 agents on a SQLite database and copies it; the copy gets IDENTITIES enrolled
# identities in all (the rest added with bulk SQL, status ENROLLED, as if enrolled and not yet
# reporting). Then the same wrk load (the 1,000 real agents, a new heartbeat_id every request)
# runs against each database in turn, ROUNDS times, each on a freshly started server, and the
# script prints throughput, p99 and the server's RSS at the end of each run.
#
#   internal/tools/fleet-size-bench.sh [--identities 1000000] [--duration 10s] [--rounds 2] [--bin PATH]
#
# Needs wrk, jq and the sqlite3 command-line shell. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
. internal/tools/bench-lib.sh
IDENTITIES=1000000; DURATION=10s; ROUNDS=2; BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --identities) IDENTITIES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
WORK=$(mktemp -d)
SVC=127.0.0.1:18772; SVC_PID=""
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "$BIN" ]; then BIN=$WORK/oneprotect; go build -o "$BIN" .; fi

small=$WORK/small.db; big=$WORK/big.db
bench_start "$small"
bench_enroll "$small" "Fleet size" 1000 64
bench_stop # checkpoints the WAL into the file

cp "$small" "$big"
sqlite3 "$big" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $IDENTITIES - 1000)
INSERT INTO agent_identities (agent_id, tenant_id, site_id, asset_id, status, hostname, principal_id, enrolled_at, activity_at)
SELECT printf('00000000-0000-7000-8000-%012d', i), a.tenant_id, a.site_id, printf('00000000-0000-7000-9000-%012d', i),
       'ENROLLED', 'bulk-' || i, a.principal_id, a.enrolled_at, a.enrolled_at
FROM n, (SELECT tenant_id, site_id, principal_id, enrolled_at FROM agent_identities LIMIT 1) AS a;
SQL
echo "identities: small $(sqlite3 "$small" 'SELECT count(*) FROM agent_identities'), big $(sqlite3 "$big" 'SELECT count(*) FROM agent_identities')"

for round in $(seq 1 "$ROUNDS"); do
  for db in small big; do
    bench_start "$WORK/$db.db"
    out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$WORK/heartbeats.lua" http://$SVC)
    rss=$(ps -o rss= -p "$SVC_PID" | awk '{printf "%.0f MiB", $1/1024}')
    bench_stop
    echo "round $round $db: $(echo "$out" | awk '/Requests\/sec/ {print $2 " req/s"}'), p99 $(echo "$out" | awk '$1 == "99%" {print $2}'), non-2xx $(echo "$out" | awk '/Non-2xx/ {print $4}' | grep . || echo 0), RSS $rss"
  done
done
