-- Invite tokens issued by the operator; a registration uses one up. Only hashes are kept.
CREATE TABLE invites (
    token_hash BLOB PRIMARY KEY,
    created_at INTEGER NOT NULL,
    used_at INTEGER
);
