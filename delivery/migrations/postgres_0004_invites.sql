-- Invite tokens issued by the operator; a registration uses one up. Only hashes are kept.
CREATE TABLE invites (
    token_hash BYTEA PRIMARY KEY,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
