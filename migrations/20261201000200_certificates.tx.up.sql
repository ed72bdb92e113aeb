-- Every certificate the agent CA signed, with whom it names. The serial is random (128 bits),
-- so replicas sharing the CA never collide. Revocation is not stored here: a certificate is
-- revoked exactly when its identity is REVOKED (the CRL is derived from that), and every
-- request checks the identity's status anyway.
CREATE TABLE issued_certificates (
    serial       TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    not_before   BIGINT NOT NULL,
    not_after    BIGINT NOT NULL,
    issued_at    BIGINT NOT NULL,
    -- enrollment, renewal or collector
    reason       TEXT NOT NULL
);
--bun:split
CREATE INDEX issued_certificates_subject_idx ON issued_certificates (tenant_id, subject_kind, subject_id, issued_at);
--bun:split
-- The CRL lists the unexpired certificates of revoked agents.
CREATE INDEX issued_certificates_expiry_idx ON issued_certificates (not_after);
