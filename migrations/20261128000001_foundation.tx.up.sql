CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    slug       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
--bun:split
CREATE TABLE principals (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    kind       TEXT NOT NULL,
    role       TEXT,
    name       TEXT NOT NULL,
    actor_kind TEXT,
    actor_id   TEXT,
    created_at BIGINT NOT NULL
);
--bun:split
CREATE INDEX principals_tenant_idx ON principals (tenant_id, id);
--bun:split
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    principal_id TEXT NOT NULL REFERENCES principals (id),
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    created_at   BIGINT NOT NULL
);
--bun:split
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id, principal_id);
--bun:split
CREATE TABLE sites (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
--bun:split
CREATE INDEX sites_tenant_idx ON sites (tenant_id, id);
--bun:split
CREATE TABLE collectors (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    site_id      TEXT NOT NULL REFERENCES sites (id),
    name         TEXT NOT NULL,
    principal_id TEXT NOT NULL REFERENCES principals (id),
    created_at   BIGINT NOT NULL
);
--bun:split
CREATE INDEX collectors_tenant_idx ON collectors (tenant_id, site_id, id);
--bun:split
-- Secrets the replicas share, such as the key that signs pagination cursors.
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
