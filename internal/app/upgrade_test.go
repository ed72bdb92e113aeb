package app_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/uptrace/bun/migrate"

	"github.com/oneprotect/telemetry/internal/auth"
	"github.com/oneprotect/telemetry/internal/store"
	"github.com/oneprotect/telemetry/internal/telemetry"
	"github.com/oneprotect/telemetry/internal/testenv"
	"github.com/oneprotect/telemetry/migrations"
)

// A database made by the previous layout (text keys, telemetry events in the events table,
// last seen and counts on the asset row), with data in it, migrates in place: the assets,
// their counts and the events read as before, an old heartbeat_id is still a duplicate, and
// heartbeats go on.
func TestUpgradeFromThePreviousLayout(t *testing.T) {
	testenv.ForEachDB(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		old := fstest.MapFS{}
		entries, _ := fs.ReadDir(migrations.FS, ".")
		for _, e := range entries {
			if e.Name() < "20261201" {
				b, _ := fs.ReadFile(migrations.FS, e.Name())
				old[e.Name()] = &fstest.MapFile{Data: b}
			}
		}
		previous := migrate.NewMigrations()
		if err := previous.Discover(old); err != nil {
			t.Fatal(err)
		}
		m := migrate.NewMigrator(st.W, previous)
		if err := m.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Migrate(ctx); err != nil {
			t.Fatal(err)
		}

		// What the previous version wrote: a tenant with an admin, a site, an agent that sent two
		// heartbeats (its asset, its events) and one that only enrolled.
		adminToken, adminHash := auth.NewToken("opu_")
		agentToken, agentHash := auth.NewToken("opsa_")
		at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
		us := func(d time.Duration) int64 { return at.Add(d).UnixMicro() }
		body := fullBody("old-2")
		hb := &telemetry.Heartbeat{}
		raw, _ := json.Marshal(body)
		if err := json.Unmarshal(raw, hb); err != nil {
			t.Fatal(err)
		}
		sum, _ := hb.Hash()
		hash := hex.EncodeToString(sum[:])
		inv := `{"os":{"name":"Debian GNU/Linux","version":"12","kernel":"6.1.0-18-amd64","arch":"amd64"}}`
		for _, q := range []string{
			`INSERT INTO tenants (id, name, slug, created_at) VALUES ('01931000-0000-7000-8000-000000000001', 'Old', 'old', 1)`,
			`INSERT INTO principals (id, tenant_id, kind, role, name, created_at) VALUES ('01931000-0000-7000-8000-000000000002',
			  '01931000-0000-7000-8000-000000000001', 'USER', 'ADMIN', 'admin', 1)`,
			`INSERT INTO api_tokens (id, tenant_id, principal_id, token_hash, prefix, created_at) VALUES ('01931000-0000-7000-8000-000000000003',
			  '01931000-0000-7000-8000-000000000001', '01931000-0000-7000-8000-000000000002', '` + adminHash + `', 'opu_', 1)`,
			`INSERT INTO sites (id, tenant_id, name, created_at) VALUES ('01931000-0000-7000-8000-000000000004', '01931000-0000-7000-8000-000000000001', 'HQ', 1)`,
			`INSERT INTO principals (id, tenant_id, kind, name, actor_kind, actor_id, created_at) VALUES ('01931000-0000-7000-8000-000000000005',
			  '01931000-0000-7000-8000-000000000001', 'SERVICE_ACCOUNT', 'agent', 'agent', '01931000-0000-7000-8000-000000000006', 1)`,
			`INSERT INTO api_tokens (id, tenant_id, principal_id, token_hash, prefix, created_at) VALUES ('01931000-0000-7000-8000-000000000007',
			  '01931000-0000-7000-8000-000000000001', '01931000-0000-7000-8000-000000000005', '` + agentHash + `', 'opsa_', 1)`,
			`INSERT INTO agent_identities (agent_id, tenant_id, site_id, asset_id, status, hostname, agent_version, principal_id,
			  enrolled_at, last_seen_at, activity_at) VALUES ('01931000-0000-7000-8000-000000000006', '01931000-0000-7000-8000-000000000001',
			  '01931000-0000-7000-8000-000000000004', '01931000-0000-7000-8000-000000000008', 'ACTIVE', 'web-01', '1.4.2',
			  '01931000-0000-7000-8000-000000000005', 1, ` + itoa(us(time.Minute)) + `, ` + itoa(us(time.Minute)) + `)`,
			`INSERT INTO agent_identities (agent_id, tenant_id, site_id, asset_id, status, hostname, principal_id, enrolled_at, activity_at)
			  VALUES ('01931000-0000-7000-8000-000000000009', '01931000-0000-7000-8000-000000000001', '01931000-0000-7000-8000-000000000004',
			  '01931000-0000-7000-8000-00000000000a', 'ENROLLED', 'quiet', '01931000-0000-7000-8000-000000000005', 1, 1)`,
			`INSERT INTO assets (id, tenant_id, site_id, agent_id, hostname, os_name, os_version, os_kernel, os_arch, ip_addresses,
			  mac_addresses, cpu_count, memory_bytes, uptime_seconds, facts, first_seen_at, last_seen_at, heartbeat_count)
			  VALUES ('01931000-0000-7000-8000-000000000008', '01931000-0000-7000-8000-000000000001', '01931000-0000-7000-8000-000000000004',
			  '01931000-0000-7000-8000-000000000006', 'web-01', 'Debian GNU/Linux', '12', '6.1.0-18-amd64', 'amd64', '["10.0.0.5"]',
			  '["aa:bb:cc:dd:ee:ff"]', 4, 8589934592, 12345, '{"role":"web"}', ` + itoa(us(0)) + `, ` + itoa(us(time.Minute)) + `, 2)`,
			`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload) VALUES
			  ('01931000-0000-7000-8000-00000000000b', '01931000-0000-7000-8000-000000000001', 'asset.discovered',
			  '01931000-0000-7000-8000-000000000008', '01931000-0000-7000-8000-000000000006', '01931000-0000-7000-8000-000000000005',
			  ` + itoa(us(0)) + `, '` + inv + `')`,
			`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload, heartbeat_id, request_hash) VALUES
			  ('01931000-0000-7000-8000-00000000000c', '01931000-0000-7000-8000-000000000001', 'asset.telemetry.received',
			  '01931000-0000-7000-8000-000000000008', '01931000-0000-7000-8000-000000000006', '01931000-0000-7000-8000-000000000005',
			  ` + itoa(us(0)) + `, '` + inv + `', 'old-1', 'ffff')`,
			`INSERT INTO events (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload, heartbeat_id, request_hash) VALUES
			  ('01931000-0000-7000-8000-00000000000d', '01931000-0000-7000-8000-000000000001', 'asset.telemetry.received',
			  '01931000-0000-7000-8000-000000000008', '01931000-0000-7000-8000-000000000006', '01931000-0000-7000-8000-000000000005',
			  ` + itoa(us(time.Minute)) + `, '` + inv + `', 'old-2', '` + hash + `')`,
		} {
			if _, err := st.W.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		st.Close()

		env := testenv.New(t, dsn) // migrates to the current layout
		asset := func() map[string]any {
			d := env.MustGQL(adminToken, `{ assets(first: 5) { totalCount edges { node { id hostname heartbeatCount lastSeenAt
				online ipAddresses uptimeSeconds agent { agentId status lastSeenAt } } } } }`, nil)
			conn := d["assets"].(map[string]any)
			if conn["totalCount"] != float64(1) {
				t.Fatalf("assets after the upgrade: %v", conn)
			}
			return conn["edges"].([]any)[0].(map[string]any)["node"].(map[string]any)
		}
		a := asset()
		if a["heartbeatCount"] != float64(2) || a["hostname"] != "web-01" || a["ipAddresses"].([]any)[0] != "10.0.0.5" ||
			!strings.HasPrefix(a["lastSeenAt"].(string), "2026-11-28T12:01:00") || a["uptimeSeconds"] != float64(12345) {
			t.Fatalf("asset after the upgrade: %v", a)
		}
		if ag := a["agent"].(map[string]any); ag["status"] != "ACTIVE" || !strings.HasPrefix(ag["lastSeenAt"].(string), "2026-11-28T12:01:00") {
			t.Fatalf("identity after the upgrade: %v", ag)
		}
		d := env.MustGQL(adminToken, `{ events(first: 10) { totalCount edges { node { type agentId occurredAt } } } }`, nil)
		if n := d["events"].(map[string]any)["totalCount"]; n != float64(3) {
			t.Fatalf("events after the upgrade: %v", d)
		}
		// The old heartbeat is a duplicate with the same body, a conflict with another.
		agentID := "01931000-0000-7000-8000-000000000006"
		if r := env.Do(http.MethodPost, hbPath(agentID), agentToken, body); r.Status != 200 || r.JSON["duplicate"] != true {
			t.Fatalf("repeat of a migrated heartbeat: %d %s", r.Status, r.Body)
		}
		if r := env.Do(http.MethodPost, hbPath(agentID), agentToken, fullBody("old-1")); r.Status != http.StatusConflict {
			t.Fatalf("other body for a migrated heartbeat_id: %d %s", r.Status, r.Body)
		}
		// New heartbeats go on from the migrated counts.
		if r := env.Do(http.MethodPost, hbPath(agentID), agentToken, fullBody("new-1")); r.Status != 200 || r.JSON["duplicate"] != false {
			t.Fatalf("new heartbeat: %d %s", r.Status, r.Body)
		}
		if a := asset(); a["heartbeatCount"] != float64(3) || a["online"] != true {
			t.Fatalf("after a new heartbeat: %v", a)
		}
		if n := telemetryCount(t, env, adminToken); n != 3 {
			t.Fatalf("telemetry events: %d", n)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
