-- Clone detection. identity_fingerprints remembers the few machines (machine_id, boot time,
-- MAC set) each agent identity has been seen from, so that two live machines sharing one
-- credential show up as two fingerprints that alternate. Only the heartbeat's slow path reads
-- and writes it, and a healthy identity keeps a handful of rows (one per recent boot).
-- state: '' (nothing to say), 'conflict' (one of the machines of an open conflict) or
-- 'refused' (an admin kept another machine; this one is refused for good).
CREATE TABLE identity_fingerprints (
    id            TEXT PRIMARY KEY,
    agent_ref     BIGINT NOT NULL,
    fp_hash       TEXT NOT NULL,
    machine_id    TEXT,
    boot_time     BIGINT NOT NULL,
    mac_addresses TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    first_sent_at BIGINT NOT NULL,
    last_sent_at  BIGINT NOT NULL,
    state         TEXT NOT NULL DEFAULT ''
);

--bun:split

CREATE INDEX identity_fingerprints_agent_idx ON identity_fingerprints (agent_ref);

--bun:split

-- An open conflict: the identity is flagged until an admin resolves it (the row is then
-- deleted; the resolution is an event).
CREATE TABLE identity_conflicts (
    agent_ref   BIGINT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    detected_at BIGINT NOT NULL
);

--bun:split

CREATE INDEX identity_conflicts_tenant_idx ON identity_conflicts (tenant_id);
