package migrations

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// The fleet-scale layout. A heartbeat is frequent and small; an asset's inventory is wide and
// rarely changes. So:
//
//   - tenants, sites and agent identities get an internal integer key (ref); the UUIDs stay
//     the API's ids. An asset's ref is the ref of its first identity (a re-enrolled machine
//     keeps it).
//   - heartbeats is the append-only log of accepted heartbeats (the asset.telemetry.received
//     events), ordered by seq: narrow integer columns, the idempotency key as its only random
//     index, and a per-tenant time index that grows at one end. Retention deletes it from the
//     old end in small ranges.
//   - asset_liveness is the narrow, hot per-asset row a heartbeat updates: last seen, count,
//     the hash of the last inventory report and the boot time. agent_ref names the identity
//     that may take the fast path (ACTIVE and current); a revocation, supersession or stale
//     sweep clears it under the row's lock.
//   - assets keeps the wide inventory, written only when it changes (asset.inventory.changed
//     records old and new values); its per-heartbeat columns move to asset_liveness.
//
// Existing telemetry events move from events into heartbeats (their API ids change: they are
// derived from the log position); their full inventory payloads are not kept, since the asset
// and its discovery event already hold that inventory.
func init() {
	All.MustRegister(upFleetStorage, nil)
}

func upFleetStorage(ctx context.Context, db *bun.DB) error {
	pg := db.Dialect().Name() == dialect.PG
	stmts := fleetStorageSQLite
	if pg {
		stmts = fleetStoragePostgres
	}
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, q := range strings.Split(stmts, ";\n") {
			if q = strings.TrimSpace(q); q == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", firstLine(q), err)
			}
		}
		return nil
	})
}

func firstLine(q string) string {
	if i := strings.IndexByte(q, '\n'); i > 0 {
		return q[:i]
	}
	return q
}

// Statements common to both databases once refs exist.
const fleetStorageCommon = `
UPDATE agent_identities SET asset_ref = (SELECT MIN(o.ref) FROM agent_identities AS o
  WHERE o.tenant_id = agent_identities.tenant_id AND o.asset_id = agent_identities.asset_id);
CREATE INDEX agent_identities_asset_ref_idx ON agent_identities (asset_ref);
ALTER TABLE assets ADD COLUMN ref BIGINT;
ALTER TABLE assets ADD COLUMN boot_time BIGINT;
ALTER TABLE assets ADD COLUMN agent_version TEXT;
UPDATE assets SET ref = (SELECT i.asset_ref FROM agent_identities AS i WHERE i.agent_id = assets.agent_id),
  agent_version = (SELECT i.agent_version FROM agent_identities AS i WHERE i.agent_id = assets.agent_id),
  boot_time = CASE WHEN uptime_seconds IS NULL THEN NULL ELSE last_seen_at - CAST(uptime_seconds * 1000000 AS BIGINT) END;
CREATE UNIQUE INDEX assets_ref_idx ON assets (ref);
INSERT INTO asset_liveness (asset_ref, tenant_ref, site_ref, agent_ref, last_seen_at, heartbeat_count, inventory_hash, boot_time)
SELECT a.ref, t.ref, s.ref, CASE WHEN i.status = 'ACTIVE' THEN i.ref ELSE NULL END,
  a.last_seen_at, a.heartbeat_count, 0, a.boot_time
FROM assets AS a
JOIN agent_identities AS i ON i.agent_id = a.agent_id
JOIN tenants AS t ON t.id = a.tenant_id
JOIN sites AS s ON s.id = a.site_id;
CREATE INDEX asset_liveness_seen_idx ON asset_liveness (tenant_ref, last_seen_at, site_ref);
DROP INDEX assets_seen_idx;
ALTER TABLE assets DROP COLUMN last_seen_at;
ALTER TABLE assets DROP COLUMN heartbeat_count;
ALTER TABLE assets DROP COLUMN uptime_seconds;
DELETE FROM events WHERE type = 'asset.telemetry.received';
DROP INDEX events_heartbeat_key;
CREATE UNIQUE INDEX heartbeats_key ON heartbeats (agent_ref, heartbeat_id);
`

// On SQLite an INTEGER PRIMARY KEY is the row id itself: the log and the liveness rows carry
// no separate key. New refs are MAX(ref) + 1 under the database's single write lock.
const fleetStorageSQLite = `
ALTER TABLE tenants ADD COLUMN ref INTEGER;
UPDATE tenants SET ref = rowid;
CREATE UNIQUE INDEX tenants_ref_idx ON tenants (ref);
ALTER TABLE sites ADD COLUMN ref INTEGER;
UPDATE sites SET ref = rowid;
CREATE UNIQUE INDEX sites_ref_idx ON sites (ref);
ALTER TABLE agent_identities ADD COLUMN ref INTEGER;
ALTER TABLE agent_identities ADD COLUMN asset_ref INTEGER;
UPDATE agent_identities SET ref = rowid;
CREATE UNIQUE INDEX agent_identities_ref_idx ON agent_identities (ref);
CREATE TABLE asset_liveness (
    asset_ref       INTEGER PRIMARY KEY,
    tenant_ref      INTEGER NOT NULL,
    site_ref        INTEGER NOT NULL,
    agent_ref       INTEGER,
    last_seen_at    INTEGER NOT NULL,
    last_sent_at    INTEGER,
    heartbeat_count INTEGER NOT NULL,
    inventory_hash  INTEGER NOT NULL,
    boot_time       INTEGER
);
CREATE TABLE heartbeats (
    seq          INTEGER PRIMARY KEY,
    tenant_ref   INTEGER NOT NULL,
    agent_ref    INTEGER NOT NULL,
    relayed      INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    sent_at      INTEGER,
    heartbeat_id TEXT NOT NULL,
    request_hash BLOB NOT NULL
);
INSERT INTO heartbeats (tenant_ref, agent_ref, relayed, received_at, heartbeat_id, request_hash)
SELECT t.ref, i.ref, CASE WHEN e.actor_id = i.principal_id THEN 0 ELSE 1 END, e.occurred_at,
  COALESCE(e.heartbeat_id, e.id), unhex(substr(COALESCE(e.request_hash, ''), 1, 32))
FROM events AS e
JOIN agent_identities AS i ON i.agent_id = e.agent_id
JOIN tenants AS t ON t.id = e.tenant_id
WHERE e.type = 'asset.telemetry.received'
ORDER BY e.occurred_at, e.id;
CREATE INDEX heartbeats_tenant_idx ON heartbeats (tenant_ref, received_at);
` + fleetStorageCommon

// On PostgreSQL refs come from sequences, so concurrent enrollments on several replicas never
// collide, and the log's seq is an identity column.
const fleetStoragePostgres = `
ALTER TABLE tenants ADD COLUMN ref BIGINT;
CREATE SEQUENCE tenants_ref_seq;
UPDATE tenants SET ref = nextval('tenants_ref_seq');
CREATE UNIQUE INDEX tenants_ref_idx ON tenants (ref);
ALTER TABLE sites ADD COLUMN ref BIGINT;
CREATE SEQUENCE sites_ref_seq;
UPDATE sites SET ref = nextval('sites_ref_seq');
CREATE UNIQUE INDEX sites_ref_idx ON sites (ref);
ALTER TABLE agent_identities ADD COLUMN ref BIGINT;
ALTER TABLE agent_identities ADD COLUMN asset_ref BIGINT;
CREATE SEQUENCE agent_identities_ref_seq;
UPDATE agent_identities SET ref = nextval('agent_identities_ref_seq');
CREATE UNIQUE INDEX agent_identities_ref_idx ON agent_identities (ref);
CREATE TABLE asset_liveness (
    asset_ref       BIGINT PRIMARY KEY,
    tenant_ref      BIGINT NOT NULL,
    site_ref        BIGINT NOT NULL,
    agent_ref       BIGINT,
    last_seen_at    BIGINT NOT NULL,
    last_sent_at    BIGINT,
    heartbeat_count BIGINT NOT NULL,
    inventory_hash  BIGINT NOT NULL,
    boot_time       BIGINT
);
CREATE TABLE heartbeats (
    seq          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_ref   BIGINT NOT NULL,
    agent_ref    BIGINT NOT NULL,
    relayed      SMALLINT NOT NULL,
    received_at  BIGINT NOT NULL,
    sent_at      BIGINT,
    heartbeat_id TEXT NOT NULL,
    request_hash BYTEA NOT NULL
);
INSERT INTO heartbeats (tenant_ref, agent_ref, relayed, received_at, heartbeat_id, request_hash)
SELECT t.ref, i.ref, CASE WHEN e.actor_id = i.principal_id THEN 0 ELSE 1 END, e.occurred_at,
  COALESCE(e.heartbeat_id, e.id), decode(substr(COALESCE(e.request_hash, ''), 1, 32), 'hex')
FROM events AS e
JOIN agent_identities AS i ON i.agent_id = e.agent_id
JOIN tenants AS t ON t.id = e.tenant_id
WHERE e.type = 'asset.telemetry.received'
ORDER BY e.occurred_at, e.id;
CREATE INDEX heartbeats_tenant_idx ON heartbeats (tenant_ref, received_at, seq);
` + fleetStorageCommon
