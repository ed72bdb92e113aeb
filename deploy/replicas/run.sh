#!/usr/bin/env bash
# Several `oneprotect serve` replicas on one PostgreSQL behind HAProxy, on this machine, and a
# failover check: under load, one replica is killed with SIGKILL; HAProxy moves its traffic to
# the others and no acknowledged heartbeat is lost.
#
#   deploy/replicas/run.sh [REPLICAS]          # default 3; needs haproxy, psql, jq, curl
#   MODE=throughput deploy/replicas/run.sh 3   # heartbeats/s through 1, 2 and 3 replicas, same run
#
# PG_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) is a server where a
# scratch database is created and dropped afterwards. Everything else lives in a temp directory,
# removed at the end (KEEP=1 keeps it, with the logs).
set -euo pipefail
cd "$(dirname "$0")/../.."

REPLICAS=${1:-3}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
LB=127.0.0.1:18080
FIRST_PORT=18081
AGENTS=${AGENTS:-200}
DURATION=${DURATION:-12s}
for tool in haproxy psql jq curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian: apt-get install haproxy postgresql-client jq curl)"; exit 2; }
done

WORK=$(mktemp -d)
BIN=$WORK/oneprotect
DBNAME=oneprotect_replicas_$$
DB=$(sed -E "s#/[^/?]*(\?|$)#/$DBNAME\1#" <<<"$PG_URL")
declare -a PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

go build -o "$BIN" .
go build -o "$WORK/subwatch" ./internal/tools/subwatch
psql -q "$PG_URL" -c "CREATE DATABASE $DBNAME" >/dev/null
"$BIN" migrate --db "$DB" >/dev/null

# The replicas: same binary, same database, one port each.
for i in $(seq 1 "$REPLICAS"); do
  port=$((FIRST_PORT + i - 1))
  # Rate limits off, as for any load test: the point here is failover, not pacing.
  "$BIN" serve --db "$DB" --addr "127.0.0.1:$port" --agent-rate-limit 0 --enroll-rate-limit 0 2>"$WORK/replica-$i.log" &
  PIDS+=($!)
  REPLICA_PID[$i]=$!
done
for i in $(seq 1 "$REPLICAS"); do
  port=$((FIRST_PORT + i - 1))
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done

# HAProxy in front: /readyz is the health check; WebSockets (subscriptions) pass through.
# haproxy_cfg BIND N: a configuration balancing over the first N replicas.
haproxy_cfg() {
  cat <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client  60s
    timeout server  60s
    timeout tunnel  1h
    retries 2
    option redispatch
frontend oneprotect
    bind $1
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
EOF
  for i in $(seq 1 "$2"); do echo "    server r$i 127.0.0.1:$((FIRST_PORT + i - 1))"; done
}
haproxy_cfg "$LB" "$REPLICAS" >"$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://$LB/readyz" >/dev/null && break; sleep 0.1; done
echo "$REPLICAS replicas behind HAProxy at http://$LB (logs in $WORK)"

# A tenant, an admin, a site and an enrollment token, through the balancer.
tenant=$("$BIN" tenant create --db "$DB" --name "Replica Co" --json | jq -r .tenant_id)
admin=$("$BIN" user create --db "$DB" --tenant "$tenant" --name ops --role admin --json | jq -r .token)
gql() { curl -sf "http://$LB/query" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$1"; }
site=$(gql '{"query":"mutation { createSite(input: {name: \"HQ\"}) { id } }"}' | jq -r .data.createSite.id)
token=$(gql '{"query":"mutation($s: ID!, $n: Int) { createEnrollmentToken(input: {siteId: $s, maxUses: $n}) { token } }","variables":{"s":"'"$site"'","n":'"$AGENTS"'}}' |
  jq -r .data.createEnrollmentToken.token)

if [ "${MODE:-failover}" = throughput ]; then
  # The same agents, the same database and the same load, through balancers over 1..N replicas.
  # The load generator runs on the same machine and takes CPU from the replicas: the figures
  # compare the configurations, they are not the service's ceiling.
  "$BIN" loadgen --server "http://$LB" --enrollment-token "$token" --agents "$AGENTS" --duration 0 \
    --agents-file "$WORK/agents.json" --quiet >/dev/null
  echo "| replicas | heartbeats/s | p50 ms | p99 ms | answers by status |"
  echo "| --- | --- | --- | --- | --- |"
  for n in $(seq 1 "$REPLICAS"); do
    bind=127.0.0.1:$((18090 + n))
    haproxy_cfg "$bind" "$n" >"$WORK/haproxy-$n.cfg"
    haproxy -f "$WORK/haproxy-$n.cfg" -db >"$WORK/haproxy-$n.log" 2>&1 &
    hp=$!
    for _ in $(seq 1 100); do curl -sf "http://$bind/readyz" >/dev/null && break; sleep 0.1; done
    "$BIN" loadgen --server "http://$bind" --agents "$AGENTS" --agents-file "$WORK/agents.json" --duration "$DURATION" \
      --concurrency "${CONCURRENCY:-64}" --quiet --json >"$WORK/throughput-$n.json"
    kill "$hp"; wait "$hp" 2>/dev/null || true
    jq -r --arg n "$n" '"| \($n) | \(.requests_per_second | floor) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.status_counts | tostring) |"' "$WORK/throughput-$n.json"
  done
  exit 0
fi

# Subscribers: one on replica 2 directly, one through the balancer (a WebSocket through HAProxy).
secs=${DURATION%s}
listen=$((secs + 8))s
"$WORK/subwatch" -url "ws://127.0.0.1:$((FIRST_PORT + 1))/query" -token "$admin" -for "$listen" >"$WORK/sub-replica2.json" &
SUB2=$!
"$WORK/subwatch" -url "ws://$LB/query" -token "$admin" -for "$listen" >"$WORK/sub-lb.json" &
SUBLB=$!

# Load through the balancer; a third of the way in, replica 1 is killed with SIGKILL.
"$BIN" loadgen --server "http://$LB" --enrollment-token "$token" --agents "$AGENTS" --duration "$DURATION" \
  --concurrency 16 --quiet --json >"$WORK/load.json" 2>"$WORK/load.log" &
LOAD=$!
sleep $((secs / 3 + 2)) # enrollment first, then part of the heartbeats
kill -9 "${REPLICA_PID[1]}"
killed_at=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
echo "killed replica 1 (SIGKILL) under load"
wait "$LOAD"
wait "$SUB2" || true
wait "$SUBLB" || true

acked=$(jq .accepted "$WORK/load.json")
errors=$(jq .errors "$WORK/load.json")
stored=$(gql '{"query":"{ assets(first: 500) { edges { node { heartbeatCount } } } }"}' | jq '[.data.assets.edges[].node.heartbeatCount] | add // 0')
echo "acknowledged $acked, refused or cut $errors, stored $stored; by status: $(jq -c .status_counts "$WORK/load.json")"
# Every acknowledged heartbeat is stored. A heartbeat whose answer was cut by the kill may be
# stored too (the replica committed it, then died before answering), hence the upper bound.
if [ "$stored" -lt "$acked" ] || [ "$stored" -gt $((acked + errors)) ]; then
  echo "FAIL: stored heartbeats outside [acknowledged, acknowledged + errors]"
  exit 1
fi
echo "subscriber on replica 2: $(cat "$WORK/sub-replica2.json"); through the balancer: $(cat "$WORK/sub-lb.json")"
last2=$(jq -r '.last_update_at // ""' "$WORK/sub-replica2.json")
if [[ -z "$last2" || "$last2" < "$killed_at" ]]; then
  echo "FAIL: the subscriber on a surviving replica received nothing after the kill"
  exit 1
fi
if [ "$(jq .updates "$WORK/sub-lb.json")" -eq 0 ]; then
  echo "FAIL: the subscription through the balancer received nothing"
  exit 1
fi
survivors=0
for i in $(seq 2 "$REPLICAS"); do
  curl -sf "http://127.0.0.1:$((FIRST_PORT + i - 1))/readyz" >/dev/null && survivors=$((survivors + 1))
done
echo "OK: no acknowledged heartbeat lost; $survivors surviving replicas ready; the balancer still answers: $(curl -sf "http://$LB/readyz")"
