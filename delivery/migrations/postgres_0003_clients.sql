-- Registered clients: a client is its Ed25519 signature key; its id is SHA-256 of that key.
CREATE TABLE clients (
    client_id BYTEA PRIMARY KEY,
    signature_key BYTEA NOT NULL,
    registered_at BIGINT NOT NULL
);
