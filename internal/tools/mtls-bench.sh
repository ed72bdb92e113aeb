#!/usr/bin/env bash
# mTLS benchmark (BENCHMARKS.md): heartbeats with client certificates next to heartbeats without,
# in one run on one fresh database. AGENTS agents are enrolled once, each with an ECDSA P-256 key
# of its own and the certificate the agent CA signs for it (`loadgen --mtls`). Then the same
# agents send REST heartbeats from the load generator, every agent on a keep-alive connection of
# its own (opened, each with one heartbeat, before the timed phase: the handshakes are amortized
# by keep-alive), with the same concurrency and duration, in alternating phases:
#
#   tls    TLS, bearer token only (the server has the agent CA but does not require certificates)
#   mtls   TLS with --require-agent-mtls, every connection presenting its agent's certificate
#   http   plain HTTP, bearer token (with --plain)
#
# After enrollment every agent sends its first heartbeat (its asset is created). Then come
# ROUNDS rounds of tls, mtls (and http), each phase on a freshly started server on the same
# database and agent CA. For each phase it prints the connect phase (connections/s, each a
# handshake and one heartbeat), the timed heartbeats' req/s and p99, and the server's CPU per
# heartbeat (the connect phase included); then the median of each mode.
#
#   internal/tools/mtls-bench.sh [--db sqlite|postgres] [--agents 1000] [--duration 20s]
#                                [--concurrency 64] [--rounds 2] [--plain] [--bin PATH] [--profile DIR]
#
# --profile writes the server's CPU profile of each mode's timed heartbeats in the first round to
# DIR/MODE.prof (compare them with `go tool pprof -diff_base DIR/tls.prof DIR/mtls.prof`).
#
# Needs jq, curl (and psql for PostgreSQL). Everything listens on 127.0.0.1; the server's
# self-signed certificate is pinned by its fingerprint (curl, for the setup only, uses -k).
set -euo pipefail
cd "$(dirname "$0")/../.."
. internal/tools/bench-lib.sh
DBKIND=sqlite; AGENTS=1000; DURATION=20s; CONNS=64; ROUNDS=2; PLAIN=""; BIN=""; PROFILE=""
PG=${ONEPROTECT_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DBKIND=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --plain) PLAIN=1; shift ;;
    --bin) BIN=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
SVC=127.0.0.1:18777; PPROF=127.0.0.1:18778; SVC_PID=""; FPR=""
bench_scratch mtls
[ -n "$PROFILE" ] && mkdir -p "$PROFILE"

case "$DBKIND" in
  sqlite) DB=$WORK/mtls.db ;;
  postgres) psql "$PG/postgres" -qc "CREATE DATABASE $PGNAME" >/dev/null; DB="$PG/$PGNAME?sslmode=disable" ;;
  *) echo "--db must be sqlite or postgres" >&2; exit 2 ;;
esac
"$BIN" ca init --dir "$WORK/ca" --json >/dev/null

# start MODE: (re)starts the service on the database in MODE (tls, mtls or http) and waits until
# it is ready; sets SVC_PID, URL and FPR (the self-signed certificate's fingerprint).
start() {
  [ -n "$SVC_PID" ] && { kill "$SVC_PID"; wait "$SVC_PID" 2>/dev/null || true; }
  local flags=(--db "$DB" --addr "$SVC" --agent-rate-limit 0 --enroll-rate-limit 0) log=$WORK/serve-$1.log
  [ -n "$PROFILE" ] && flags+=(--pprof-addr "$PPROF")
  case "$1" in
    tls) flags+=(--tls-self-signed --agent-ca "$WORK/ca"); URL=https://$SVC ;;
    mtls) flags+=(--tls-self-signed --agent-ca "$WORK/ca" --require-agent-mtls); URL=https://$SVC ;;
    http) URL=http://$SVC ;;
  esac
  "$BIN" serve "${flags[@]}" 2>"$log" &
  SVC_PID=$!
  for _ in $(seq 1 300); do curl -skf "$URL/readyz" >/dev/null && break; sleep 0.1; done
  FPR=$(sed -n 's/.*SHA-256 fingerprint //p' "$log" | tail -n 1)
}
trust() { [ -n "$FPR" ] && echo --server-fingerprint "$FPR"; true; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Enrollment: a tenant, an admin, a site and a token, then the agents with their CSRs.
start tls
tenant=$("$BIN" tenant create --db "$DB" --name "mTLS bench" --json | jq -r .tenant_id)
admin=$("$BIN" user create --db "$DB" --tenant "$tenant" --name bench --role admin --json | jq -r .token)
gql() { curl -sk "$URL/query" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$1"; }
site=$(gql '{"query":"mutation { createSite(input: {name: \"Bench\"}) { id } }"}' | jq -r .data.createSite.id)
token=$(gql '{"query":"mutation($s: ID!, $n: Int) { createEnrollmentToken(input: {siteId: $s, maxUses: $n}) { token } }","variables":{"s":"'"$site"'","n":'"$AGENTS"'}}' | jq -r .data.createEnrollmentToken.token)
# shellcheck disable=SC2046
"$BIN" loadgen --server "$URL" $(trust) --mtls --enrollment-token "$token" --agents "$AGENTS" --duration 0 \
  --concurrency "$CONNS" --agents-file "$WORK/agents.json" --quiet | grep -E '^enrollment' | sed 's/^enrollment: */enrollment with CSRs: /'
# Every agent's first heartbeat (its asset is created), so that no phase pays for that slow path.
# shellcheck disable=SC2046
"$BIN" loadgen --server "$URL" $(trust) --agents "$AGENTS" --agents-file "$WORK/agents.json" --order once \
  --concurrency "$CONNS" --quiet --json | jq -r '"first heartbeats: \(.requests_per_second | floor) req/s, errors \(.errors)"'

echo "== $AGENTS agents, one keep-alive connection each; $CONNS workers, $DURATION per phase; $DBKIND; load average $(cut -d' ' -f1-3 /proc/loadavg)"
modes="tls mtls"; [ -n "$PLAIN" ] && modes="$modes http"
: > "$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $modes; do
    start "$mode"
    extra=(--agent-connections); [ "$mode" = mtls ] && extra=(--mtls)
    : > "$WORK/progress"; prof=""
    if [ -n "$PROFILE" ] && [ "$round" = 1 ]; then
      # From the timed heartbeats' first progress line (the connect phase is over) to near their end.
      (while [ ! -s "$WORK/progress" ]; do sleep 0.2; done
       curl -s "http://$PPROF/debug/pprof/profile?seconds=$((${DURATION%s} - 3))" > "$PROFILE/$mode.prof") &
      prof=$!
    fi
    before=$(cpu_ticks "$SVC_PID")
    # shellcheck disable=SC2046
    "$BIN" loadgen --server "$URL" $(trust) "${extra[@]}" --agents "$AGENTS" --agents-file "$WORK/agents.json" \
      --duration "$DURATION" --concurrency "$CONNS" --json > "$WORK/run.json" 2> "$WORK/progress"
    after=$(cpu_ticks "$SVC_PID")
    [ -n "$prof" ] && wait "$prof"
    jq -r --arg mode "$mode" --arg round "$round" --argjson ticks "$((after - before))" --argjson hz "$(getconf CLK_TCK)" '
      (.requests + .connect.connections) as $n |
      "\($mode)\t\($round)\t\(.connect.per_second | floor)\t\(.connect.latency_ms.p99)\t\(.requests_per_second | floor)\t\(.latency_ms.p50)\t\(.latency_ms.p99)\t\(.errors)\t\($ticks / $hz * 1e6 / $n | floor)"' \
      "$WORK/run.json" >> "$WORK/results"
    tail -n 1 "$WORK/results" | awk -F'\t' '{printf "%-4s round %s: connect %s/s (p99 %s ms); heartbeats %s req/s, p50 %s ms, p99 %s ms, errors %s; server CPU %s us/heartbeat\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
  done
done
[ -n "$SVC_PID" ] && { kill "$SVC_PID"; wait "$SVC_PID" 2>/dev/null || true; SVC_PID=""; }

echo "== medians over $ROUNDS rounds (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
for mode in $modes; do
  med() { awk -F'\t' -v m="$mode" -v c="$1" '$1 == m {print $c}' "$WORK/results" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
  printf "%-4s connect %s/s; heartbeats %s req/s, p99 %s ms; server CPU %s us/heartbeat\n" "$mode" "$(med 3)" "$(med 5)" "$(med 7)" "$(med 9)"
done
