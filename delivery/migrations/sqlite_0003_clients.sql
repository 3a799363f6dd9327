-- Registered clients: a client is its Ed25519 signature key; its id is SHA-256 of that key.
CREATE TABLE clients (
    client_id BLOB PRIMARY KEY,
    signature_key BLOB NOT NULL,
    registered_at INTEGER NOT NULL
);
