-- Fewer index writes per heartbeat (BENCHMARKS.md, issue 6). Each index below cost every
-- heartbeat a B-tree insert at its own place; the queries they served are kept:
--
-- * events: the primary key becomes (tenant_id, id), which is the order every events listing
--   reads in, so events_tenant_idx goes. Every event that names an agent also names its asset,
--   so an agent's events are found through events_asset_idx, which now also holds agent_id (an
--   agent's events are counted from the index alone), and events_agent_idx goes.
-- * assets: one index on (tenant_id, last_seen_at, site_id) counts online assets, in a tenant or
--   in one of its sites, from the index alone; it replaces two.
CREATE TABLE events_v3 (
    id           TEXT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    type         TEXT NOT NULL,
    asset_id     TEXT,
    agent_id     TEXT,
    actor_id     TEXT,
    occurred_at  BIGINT NOT NULL,
    payload      TEXT NOT NULL,
    heartbeat_id TEXT,
    request_hash TEXT,
    PRIMARY KEY (tenant_id, id)
);
--bun:split
INSERT INTO events_v3 (id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload, heartbeat_id, request_hash)
SELECT id, tenant_id, type, asset_id, agent_id, actor_id, occurred_at, payload, heartbeat_id, request_hash FROM events;
--bun:split
DROP TABLE events;
--bun:split
ALTER TABLE events_v3 RENAME TO events;
--bun:split
-- The idempotency key of heartbeats (CONTRACT §4).
CREATE UNIQUE INDEX events_heartbeat_key ON events (agent_id, heartbeat_id) WHERE heartbeat_id IS NOT NULL;
--bun:split
CREATE INDEX events_asset_idx ON events (tenant_id, asset_id, id, agent_id);
--bun:split
CREATE INDEX events_type_idx ON events (tenant_id, type, id);
--bun:split
DROP INDEX assets_seen_idx;
--bun:split
DROP INDEX assets_site_seen_idx;
--bun:split
CREATE INDEX assets_seen_idx ON assets (tenant_id, last_seen_at, site_id);
