#!/usr/bin/env bash
# Load-shedding benchmark (BENCHMARKS.md, "Shedding load"): heartbeats at the sustainable rate,
# then at three times it, from an open-loop load generator (`oneprotect loadgen --rate`: arrivals
# on a schedule, each latency measured from its scheduled time). On a fresh SQLite database it
# enrolls AGENTS agents and primes their first heartbeats, then, agents at random:
#
#   1. closed loop, 64 connections: the throughput the server reaches when the load waits for it;
#   2. open loop at each of RATES over CONNS connections: the sustainable rate is the highest
#      that held (at most 0.1% of the arrivals unsent, no 503, p99 at most 100 ms from the
#      scheduled times);
#   3. open loop at 3 x that rate (or 3 x --over-base) over CONNS connections: accepted count,
#      rate and p99, the 503s' count, p50 and p99 (all from the scheduled times), the arrivals
#      never sent and how late the generator sent; with --bounds, once per bound, the server
#      restarted with --max-heartbeats-in-flight at each (the server's latency target stays on:
#      add --serve-flags "--heartbeat-latency-target 0" to compare the fixed bounds alone).
#
# Each phase also prints the CPU seconds of the server and of the load generator (and per request
# sent), the group commits (how many, writes each, mean duration, how many over 50 and 100 ms),
# and where a request's time went: the generator's send lag behind the schedule and the service
# time from the actual send (loadgen), against the server's own handling time of the heartbeats
# it accepted (200) and refused (503), from its histogram oneprotect_http_request_duration_seconds
# (route heartbeat; p50 and p99 interpolated within the buckets, as Prometheus does). What the
# service time has beyond the handling time was spent in the kernel's queues, waiting for a core
# (either process's) and in net/http before and after the handler.
#
#   internal/tools/shed-bench.sh [--db sqlite|postgres] [--agents 50000] [--duration 15s]
#                                [--rates "4000 4500 5000"] [--over-base N] [--bounds "512 64"]
#                                [--connections 2000] [--bin PATH] [--serve-flags "..."]
#                                [--profile FILE] [--json DIR] [--server-cpus LIST --loadgen-cpus LIST]
#
# --server-cpus and --loadgen-cpus pin the server and the load generator to CPUs of their own
# (taskset lists, e.g. 0 and 1), so that the generator's work neither slows the server nor
# waits on it for a core: the nearest this one machine comes to agents on other machines.
# --rates "" skips phases 1 and 2 (then --over-base is needed). --profile writes the server's CPU
# profile of (each) phase 3 to FILE (FILE.BOUND with --bounds); --json keeps each phase's loadgen
# --json output in DIR. --db postgres creates a database of its own on $ONEPROTECT_BENCH_POSTGRES
# (default postgres://postgres@127.0.0.1:5432) and drops it at the end. Needs jq, curl and bc
# (and psql for PostgreSQL); everything listens on 127.0.0.1 and, unless pinned, the load
# generator shares the machine's cores with the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
. internal/tools/bench-lib.sh
DBKIND=sqlite; AGENTS=50000; DURATION=15s; RATES="4000 4500 5000"; BASE=""; BOUNDS=""; CONNS=2000; BIN=""; SERVE_FLAGS=""
PROFILE=""; JSONDIR=""; SERVER_CPUS=""; LOADGEN_CPUS=""
PG=${ONEPROTECT_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DBKIND=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --over-base) BASE=$2; shift 2 ;;
    --bounds) BOUNDS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --serve-flags) SERVE_FLAGS=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --json) JSONDIR=$2; shift 2 ;;
    --server-cpus) SERVER_CPUS=$2; shift 2 ;;
    --loadgen-cpus) LOADGEN_CPUS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
SVC=127.0.0.1:18775; SVC_PID=""; PPROF=127.0.0.1:18776
bench_scratch shed
# The commands that pin the server and the generator (taskset execs the program, so $! is the
# server's own pid); Go's GOMAXPROCS follows the CPUs a process may use.
srv_pin=(); lg_pin=()
for cpus in "$SERVER_CPUS" "$LOADGEN_CPUS"; do
  [ -z "$cpus" ] || taskset -c "$cpus" true || { echo "cannot pin to CPUs $cpus" >&2; exit 2; }
done
[ -n "$SERVER_CPUS" ] && srv_pin=(taskset -c "$SERVER_CPUS")
[ -n "$LOADGEN_CPUS" ] && lg_pin=(taskset -c "$LOADGEN_CPUS")
[ -n "$JSONDIR" ] && mkdir -p "$JSONDIR"
# Thousands of connections: more open files than the usual soft limit of 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

extra=(--agent-rate-limit 0 --enroll-rate-limit 0)
# shellcheck disable=SC2206
extra+=($SERVE_FLAGS)
[ -n "$PROFILE" ] && extra+=(--pprof-addr "$PPROF")
# bench_start DB [FLAGS...]: the service on DB with the bench's flags and FLAGS.
bench_start() {
  local db=$1; shift
  "${srv_pin[@]}" "$BIN" serve --db "$db" --addr "$SVC" "${extra[@]}" "$@" 2>>"$WORK/serve.log" &
  SVC_PID=$!
  for _ in $(seq 1 300); do curl -sf "http://$SVC/readyz" >/dev/null && break; sleep 0.1; done
}

# commits NAME: the group commits since the last call: how many, their mean size and duration,
# and how many took over 50 and 100 ms (the writer stalled, e.g. on a slow fsync).
COMMITS_BEFORE=""
commits() {
  local now
  now=$(curl -s "http://$SVC/metrics" | awk '
    /^oneprotect_group_commit_seconds_count/ {c=$2} /^oneprotect_group_commit_seconds_sum/ {s=$2}
    /^oneprotect_group_commit_size_sum/ {w=$2}
    /^oneprotect_group_commit_seconds_bucket\{le="0.05"\}/ {b50=$2} /^oneprotect_group_commit_seconds_bucket\{le="0.1"\}/ {b100=$2}
    END {print c, s, w, c - b50, c - b100}')
  if [ -n "$COMMITS_BEFORE" ]; then
    echo "$COMMITS_BEFORE $now" | awk -v name="$1" '{c=$6-$1; if (c > 0) printf "%s: %d commits, %.1f writes each, mean %.2f ms; over 50 ms: %d, over 100 ms: %d\n", name, c, ($8-$3)/c, ($7-$2)/c*1000, $9-$4, $10-$5}'
  fi
  COMMITS_BEFORE=$now
}
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# handling FILE: the server's histogram of the heartbeat route's handling time, by status, to FILE.
handling() { curl -s "http://$SVC/metrics" | grep -E '^oneprotect_http_request_duration_seconds_(bucket|count)\{.*route="heartbeat"' > "$1" || true; }

# handled NAME BEFORE AFTER: per status, how many heartbeats the server handled between the two
# snapshots, and the p50 and p99 of its own handling time (linear within a bucket).
handled() {
  awk -v name="$1" '
    function lab(s, k,  m) { if (match(s, k "=\"[^\"]*\"")) { m = substr(s, RSTART + length(k) + 2, RLENGTH - length(k) - 3); return m } return "" }
    function q(c, p,  target, i, prev, prevle, le, n) {
      target = p * tot[c]; prev = 0; prevle = 0
      for (i = 1; i <= nb[c]; i++) {
        le = les[c, i]; n = cum[c, le]
        if (n >= target) {
          if (le == "+Inf") return prevle * 1000
          return (prevle + (le - prevle) * (n - prev > 0 ? (target - prev) / (n - prev) : 0)) * 1000
        }
        prev = n; prevle = le
      }
      return prevle * 1000
    }
    { f = FILENAME == ARGV[1] ? 1 : 2 }
    /_bucket/ { c = lab($1, "code"); le = lab($1, "le"); v[f, c, le] = $2
      if (f == 2 && !((c, le) in seen)) { seen[c, le] = 1; nb[c]++; les[c, nb[c]] = le; codes[c] = 1 } }
    /_count/ { c = lab($1, "code"); cnt[f, c] = $2 }
    END {
      out = ""
      for (c in codes) {
        tot[c] = cnt[2, c] - cnt[1, c]; if (tot[c] <= 0) continue
        for (i = 1; i <= nb[c]; i++) { le = les[c, i]; cum[c, le] = v[2, c, le] - v[1, c, le] }
        out = out sprintf("; %s: %d, p50 %.2f ms, p99 %.2f ms", c, tot[c], q(c, 0.5), q(c, 0.99))
      }
      print name ": server handling time" (out == "" ? ": none" : substr(out, 2))
    }' "$2" "$3"
}

# phase NAME LOADGEN_FLAGS...: one loadgen run over the fleet at random; its JSON in $WORK/NAME.json.
phase() {
  local name=$1 before lg srv; shift
  handling "$WORK/$name.before"
  before=$(cpu_secs "$SVC_PID")
  lg=$( { TIMEFORMAT=%U+%S; time "${lg_pin[@]}" "$BIN" loadgen --server "http://$SVC" --agents "$AGENTS" --agents-file "$WORK/agents.json" \
    --order random --duration "$DURATION" --quiet --json "$@" > "$WORK/$name.json"; } 2>&1 )
  srv=$(echo "$(cpu_secs "$SVC_PID") - $before" | bc); lg=$(echo "$lg" | bc)
  echo "$name: CPU seconds: server $srv, load generator $lg" \
    "($(jq -r --argjson s "$srv" --argjson g "$lg" '"per request sent: server \($s / .requests * 1e6 | round) us, load generator \($g / .requests * 1e6 | round) us; both together \(($s + $g) / .duration_seconds * 100 | round) % of one core"' "$WORK/$name.json"))"
  commits "$name"
  handling "$WORK/$name.after"
  handled "$name" "$WORK/$name.before" "$WORK/$name.after"
  [ -n "$JSONDIR" ] && cp "$WORK/$name.json" "$JSONDIR/"
  jq -r --arg name "$name" '
    def ms: . * 10 | round / 10;
    "\($name): sent \(.requests) (\(.requests_per_second | round)/s); accepted \(.accepted) (\(.accepted / .duration_seconds | round)/s), p50 \(.latency_ms.p50 | ms) ms, p99 \(.latency_ms.p99 | ms) ms"
    + (if .shed_latency_ms then "; 503 \(.status_counts["503"]), p50 \(.shed_latency_ms.p50 | ms) ms, p99 \(.shed_latency_ms.p99 | ms) ms" else "; no 503" end)
    + (if .open_loop then "; unsent \(.open_loop.unsent), send lag p50 \(.open_loop.send_lag_ms.p50 | ms) ms, p99 \(.open_loop.send_lag_ms.p99 | ms) ms; service time from the send: p50 \(.open_loop.service_time_ms.p50 | ms) ms, p99 \(.open_loop.service_time_ms.p99 | ms) ms"
       + (if .open_loop.shed_service_time_ms then ", of the 503s p50 \(.open_loop.shed_service_time_ms.p50 | ms) ms, p99 \(.open_loop.shed_service_time_ms.p99 | ms) ms" else "" end) else "" end)
    + "; status \(.status_counts | to_entries | map("\(.key)=\(.value)") | join(" "))"' "$WORK/$name.json"
}

# overload NAME: phase NAME at $OVER/s, with the server's CPU profile when asked.
overload() {
  local prof=""
  if [ -n "$PROFILE" ]; then
    local secs=${DURATION%s} out=$PROFILE
    [ -n "$BOUNDS" ] && out=$PROFILE.$2
    (sleep 2; curl -s "http://$PPROF/debug/pprof/profile?seconds=$((secs - 4))" > "$out") &
    prof=$!
  fi
  phase "$1" --rate "$OVER" --concurrency "$CONNS"
  if [ -n "$prof" ]; then wait "$prof"; fi
}

case "$DBKIND" in
  sqlite) DB=$WORK/shed.db ;;
  postgres) psql "$PG/postgres" -qc "CREATE DATABASE $PGNAME" >/dev/null; DB="$PG/$PGNAME?sslmode=disable" ;;
  *) echo "--db must be sqlite or postgres" >&2; exit 2 ;;
esac
bench_start "$DB"
echo "server: $("$BIN" version 2>/dev/null | head -1), $DBKIND, flags: ${extra[*]}; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$SERVER_CPUS$LOADGEN_CPUS" ] && echo "pinned: server on CPUs ${SERVER_CPUS:-any}, load generator on ${LOADGEN_CPUS:-any} (the enrollment's generator is not pinned)"
bench_enroll "$DB" "Shed" "$AGENTS" 64
"${lg_pin[@]}" "$BIN" loadgen --server "http://$SVC" --agents "$AGENTS" --agents-file "$WORK/agents.json" --order once \
  --concurrency 64 --quiet --json > "$WORK/prime.json"
jq -r '"first heartbeats: \(.requests) in \(.duration_seconds | floor)s, errors \(.errors)"' "$WORK/prime.json"
# Earlier writes (the enrollment, another benchmark's files) flushed now, not during a phase.
sync
commits start

held=0
if [ -n "$RATES" ]; then
  phase closed-64 --concurrency 64
  for rate in $RATES; do
    phase "open-$rate" --rate "$rate" --concurrency "$CONNS"
    if jq -e '.open_loop.unsent <= .open_loop.scheduled / 1000 and (.status_counts["503"] // 0) == 0 and .errors == 0
      and .latency_ms.p99 <= 100' "$WORK/open-$rate.json" >/dev/null; then held=$rate; fi
  done
  echo "sustainable: $held/s (the highest rate that held)"
fi
OVER=$((3 * ${BASE:-$held}))
if [ "$OVER" -eq 0 ]; then echo "no rate held: give --over-base" >&2; exit 1; fi
if [ -z "$BOUNDS" ]; then
  overload "open-$OVER"
else
  for bound in $BOUNDS; do
    bench_stop
    bench_start "$DB" --max-heartbeats-in-flight "$bound"
    COMMITS_BEFORE=""; commits start
    overload "open-$OVER-bound-$bound" "$bound"
  done
fi
curl -s "http://$SVC/metrics" | grep -E '^oneprotect_heartbeats_total' | sed 's/^/server: /'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
bench_stop
