# Shared by the benchmark scripts in this folder (sourced, not run). The caller sets BIN (the
# oneprotect binary), WORK (a scratch folder) and SVC (host:port for the service).

# bench_scratch NAME: a scratch folder WORK and a PostgreSQL database name PGNAME for this run,
# both removed at exit (with every background job), and BIN built into WORK when it is unset.
# The caller sets DBKIND and PG (the server URL without a database) before it.
bench_scratch() {
  WORK=$(mktemp -d)
  PGNAME="oneprotect_$1_bench_$$"
  trap bench_cleanup EXIT
  if [ -z "$BIN" ]; then BIN=$WORK/oneprotect; go build -o "$BIN" .; fi
}
bench_cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$DBKIND" = postgres ] && psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PGNAME WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

# bench_start DB: starts the service on DB and waits until it is ready; sets SVC_PID.
bench_start() {
  # Load tests drive each agent far faster than its interval: no rate limits.
  "$BIN" serve --db "$1" --addr "$SVC" --agent-rate-limit 0 --enroll-rate-limit 0 2>>"$WORK/serve.log" &
  SVC_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://$SVC/readyz" >/dev/null && break; sleep 0.1; done
}

# bench_stop: stops the service started by bench_start.
bench_stop() { kill "$SVC_PID"; wait "$SVC_PID" 2>/dev/null || true; }

# bench_enroll DB NAME AGENTS CONCURRENCY: on the running service, creates a tenant NAME with an
# admin, a site and an enrollment token, then enrolls AGENTS agents with the load generator,
# which writes them to $WORK/agents.json and a wrk script over them to $WORK/heartbeats.lua.
bench_enroll() {
  local db=$1 name=$2 agents=$3 conns=$4 tenant admin site token
  tenant=$("$BIN" tenant create --db "$db" --name "$name" --json | jq -r .tenant_id)
  admin=$("$BIN" user create --db "$db" --tenant "$tenant" --name bench --role admin --json | jq -r .token)
  gql() { curl -s "http://$SVC/query" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$1"; }
  site=$(gql '{"query":"mutation { createSite(input: {name: \"Bench\"}) { id } }"}' | jq -r .data.createSite.id)
  token=$(gql '{"query":"mutation($s: ID!, $n: Int) { createEnrollmentToken(input: {siteId: $s, maxUses: $n}) { token } }","variables":{"s":"'"$site"'","n":'"$agents"'}}' | jq -r .data.createEnrollmentToken.token)
  rm -f "$WORK/agents.json"
  "$BIN" loadgen --server "http://$SVC" --enrollment-token "$token" --agents "$agents" --duration 0 --concurrency "$conns" \
    --agents-file "$WORK/agents.json" --wrk-lua "$WORK/heartbeats.lua" --quiet | grep -E '^enrollment'
}
