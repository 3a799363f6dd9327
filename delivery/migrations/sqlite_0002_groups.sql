-- SQLite dialect of postgres_0002_groups.sql.
-- Group logs, tokens, trees and mailboxes. The node never learns who is in a group: posting
-- rights are hashes of per-epoch tokens (PROTOCOL.md §5).
CREATE TABLE groups (
    group_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    -- the sequence number the next log entry gets
    next_seq INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE group_tokens (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    token_hash BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
-- Every commit and message, stored once whatever the group's size.
CREATE TABLE group_log (
    group_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    message BLOB NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq)
);
-- The ratchet tree each commit left, for joiners.
CREATE TABLE group_trees (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    ratchet_tree BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
-- Welcomes, released by the commit that accepted them, deleted once acknowledged.
CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    welcome BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX mailbox_by_owner ON mailbox (owner, id);
