#!/usr/bin/env bash
# Heartbeat load benchmark (BENCHMARKS.md): the bare-handler ceiling and the service, driven by
# the same wrk script over the same 1,000 enrolled agents, in one run.
#
#   internal/tools/heartbeat-bench.sh [--db DSN] [--agents N] [--duration 10s] [--bin PATH]
#
# Needs wrk and jq. Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB=""; AGENTS=1000; DURATION=10s; BIN=""; CONNS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DB=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
if [ -z "$BIN" ]; then BIN=$WORK/oneprotect; go build -o "$BIN" .; fi
go build -o "$WORK/ceiling" ./internal/tools/ceiling
[ -n "$DB" ] || DB=$WORK/bench.db
SVC=127.0.0.1:18770; CEIL=127.0.0.1:18771

"$WORK/ceiling" --addr $CEIL & 
"$BIN" serve --db "$DB" --addr $SVC 2>"$WORK/serve.log" &
for _ in $(seq 1 100); do curl -sf http://$SVC/readyz >/dev/null && break; sleep 0.1; done

TENANT=$("$BIN" tenant create --db "$DB" --name "Bench $(date +%s%N)" --json | jq -r .tenant_id)
ADMIN=$("$BIN" user create --db "$DB" --tenant "$TENANT" --name bench --role admin --json | jq -r .token)
gql() { curl -s http://$SVC/query -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$1"; }
SITE=$(gql '{"query":"mutation { createSite(input: {name: \"Bench\"}) { id } }"}' | jq -r .data.createSite.id)
TOKEN=$(gql '{"query":"mutation($s: ID!, $n: Int) { createEnrollmentToken(input: {siteId: $s, maxUses: $n}) { token } }","variables":{"s":"'"$SITE"'","n":'"$AGENTS"'}}' | jq -r .data.createEnrollmentToken.token)

echo "== enrollment ($AGENTS agents)"
"$BIN" loadgen --server http://$SVC --enrollment-token "$TOKEN" --agents "$AGENTS" --duration 0 \
  --agents-file "$WORK/agents.json" --wrk-lua "$WORK/heartbeats.lua" --quiet
echo "== ceiling: wrk -t2 -c$CONNS -d$DURATION"
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/heartbeats.lua" http://$CEIL | grep -E "Requests/sec|Non-2xx|Socket|^ +(50|99)%"
echo "== service REST: wrk -t2 -c$CONNS -d$DURATION"
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/heartbeats.lua" http://$SVC | grep -E "Requests/sec|Non-2xx|Socket|^ +(50|99)%"
echo "== service GraphQL: oneprotect loadgen --graphql --concurrency $CONNS --duration $DURATION"
"$BIN" loadgen --server http://$SVC --agents "$AGENTS" --agents-file "$WORK/agents.json" --duration "$DURATION" \
  --concurrency "$CONNS" --graphql --quiet
echo "== group commits"
curl -s http://$SVC/metrics | grep -E '^oneprotect_heartbeat_commit_(size|seconds)_(sum|count)'
echo "== server RSS: $(ps -o rss= -p "$(pgrep -f "serve --db $DB --addr $SVC" | head -1)" | awk '{printf "%.0f MiB", $1/1024}')"
