-- EnrollmentToken.identities: the agents one enrollment token enrolled, paged by agent_id and
-- counted from this index alone. Identity rows never change enrollment_token_id, so the index
-- costs nothing after enrollment.
CREATE INDEX agent_identities_enrollment_token_idx ON agent_identities (tenant_id, enrollment_token_id, agent_id)
    WHERE enrollment_token_id IS NOT NULL;
