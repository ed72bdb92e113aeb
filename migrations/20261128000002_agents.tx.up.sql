CREATE TABLE enrollment_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    site_id      TEXT NOT NULL REFERENCES sites (id),
    collector_id TEXT REFERENCES collectors (id),
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    max_uses     INTEGER NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
--bun:split
CREATE INDEX enrollment_tokens_tenant_idx ON enrollment_tokens (tenant_id, id);
--bun:split
-- activity_at is the latest of enrollment, reactivation and the last accepted heartbeat:
-- the sweeper's clock (CONTRACT §1), kept in one indexed column.
CREATE TABLE agent_identities (
    agent_id            TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    site_id             TEXT NOT NULL REFERENCES sites (id),
    collector_id        TEXT REFERENCES collectors (id),
    asset_id            TEXT NOT NULL,
    machine_id          TEXT,
    status              TEXT NOT NULL,
    hostname            TEXT,
    agent_version       TEXT,
    principal_id        TEXT NOT NULL REFERENCES principals (id),
    enrollment_token_id TEXT,
    enrolled_at         BIGINT NOT NULL,
    last_seen_at        BIGINT,
    revoked_at          BIGINT,
    revoked_reason      TEXT,
    reactivated_at      BIGINT,
    activity_at         BIGINT NOT NULL
);
--bun:split
CREATE INDEX agent_identities_tenant_idx ON agent_identities (tenant_id, agent_id);
--bun:split
CREATE INDEX agent_identities_site_idx ON agent_identities (tenant_id, site_id, agent_id);
--bun:split
CREATE INDEX agent_identities_status_idx ON agent_identities (tenant_id, status, agent_id);
--bun:split
CREATE INDEX agent_identities_machine_idx ON agent_identities (tenant_id, machine_id, enrolled_at);
--bun:split
-- At most one live identity per machine in a tenant: concurrent re-enrollments of one machine
-- collide here, and the loser retries and supersedes the winner.
CREATE UNIQUE INDEX agent_identities_live_machine ON agent_identities (tenant_id, machine_id)
    WHERE machine_id IS NOT NULL AND status <> 'REVOKED';
--bun:split
CREATE INDEX agent_identities_asset_idx ON agent_identities (tenant_id, asset_id);
--bun:split
CREATE INDEX agent_identities_sweep_idx ON agent_identities (status, activity_at);
--bun:split
CREATE TABLE assets (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    site_id         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    hostname        TEXT NOT NULL,
    os_name         TEXT,
    os_version      TEXT,
    os_kernel       TEXT,
    os_arch         TEXT,
    ip_addresses    TEXT NOT NULL,
    mac_addresses   TEXT NOT NULL,
    cpu_count       INTEGER,
    memory_bytes    DOUBLE PRECISION,
    uptime_seconds  DOUBLE PRECISION,
    facts           TEXT NOT NULL,
    first_seen_at   BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    heartbeat_count BIGINT NOT NULL
);
--bun:split
CREATE INDEX assets_tenant_idx ON assets (tenant_id, id);
--bun:split
CREATE INDEX assets_site_idx ON assets (tenant_id, site_id, id);
--bun:split
CREATE INDEX assets_seen_idx ON assets (tenant_id, last_seen_at);
--bun:split
CREATE INDEX assets_site_seen_idx ON assets (tenant_id, site_id, last_seen_at);
--bun:split
CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    type         TEXT NOT NULL,
    asset_id     TEXT,
    agent_id     TEXT,
    actor_id     TEXT,
    occurred_at  BIGINT NOT NULL,
    payload      TEXT NOT NULL,
    heartbeat_id TEXT,
    request_hash TEXT
);
--bun:split
-- The idempotency key of heartbeats (CONTRACT §4).
CREATE UNIQUE INDEX events_heartbeat_key ON events (agent_id, heartbeat_id) WHERE heartbeat_id IS NOT NULL;
--bun:split
CREATE INDEX events_tenant_idx ON events (tenant_id, id);
--bun:split
CREATE INDEX events_asset_idx ON events (tenant_id, asset_id, id);
--bun:split
CREATE INDEX events_agent_idx ON events (tenant_id, agent_id, id);
--bun:split
CREATE INDEX events_type_idx ON events (tenant_id, type, id);
