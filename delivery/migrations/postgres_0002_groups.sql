-- Group logs, tokens, trees and mailboxes. The node never learns who is in a group: posting
-- rights are hashes of per-epoch tokens (PROTOCOL.md §5).
CREATE TABLE groups (
    group_id BYTEA PRIMARY KEY,
    epoch BIGINT NOT NULL,
    -- the sequence number the next log entry gets
    next_seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE group_tokens (
    group_id BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    token_hash BYTEA NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
-- Every commit and message, stored once whatever the group's size.
CREATE TABLE group_log (
    group_id BYTEA NOT NULL,
    seq BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    kind SMALLINT NOT NULL,
    message BYTEA NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq)
);
-- The ratchet tree each commit left, for joiners.
CREATE TABLE group_trees (
    group_id BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    ratchet_tree BYTEA NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
-- Welcomes, released by the commit that accepted them, deleted once acknowledged.
CREATE TABLE mailbox (
    id BIGSERIAL PRIMARY KEY,
    owner BYTEA NOT NULL,
    group_id BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    welcome BYTEA NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX mailbox_by_owner ON mailbox (owner, id);
