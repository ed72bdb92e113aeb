-- User API tokens get a lifecycle: listed (with when each was last used), minted and revoked
-- by admins. last_used_at is coarse: it moves at most once a minute per token.
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
--bun:split
-- Listing a tenant's user tokens reads its USER principals without scanning its agents'.
CREATE INDEX principals_kind_idx ON principals (tenant_id, kind, id);
--bun:split
-- One row whose epoch moves with every revocation, in the revoking transaction. Each replica
-- reads it at most twice a second and drops its token cache when it moved, so a revoked
-- token is refused everywhere within a second without a database read per request.
CREATE TABLE credential_epoch (
    id    INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL
);
--bun:split
INSERT INTO credential_epoch (id, epoch) VALUES (1, 0);
