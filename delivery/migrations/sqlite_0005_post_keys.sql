-- Idempotent posts (PROTOCOL.md §7): a message's post key is SHA-256(poster's client id, post
-- id); a repeat of the key in a group is answered with the first position, never stored twice.
ALTER TABLE group_log ADD COLUMN post_key BLOB;
CREATE UNIQUE INDEX group_log_post_keys ON group_log (group_id, post_key) WHERE post_key IS NOT NULL;
