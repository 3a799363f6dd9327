-- Trees are sealed for their joiners (PROTOCOL.md §5, issue 10, finding 4): the node keeps them
-- opaque, serves each only for the access value whose hash the commit gave, and forgets it once
-- no joiner needs it. Trees stored in the clear before are deleted: nobody may read them now.
DELETE FROM group_trees;
ALTER TABLE group_trees ADD COLUMN access_hash BYTEA NOT NULL;
ALTER TABLE group_trees ADD COLUMN at BIGINT NOT NULL;
-- The tree secret sealed to the recipient's KeyPackage, beside its Welcome.
ALTER TABLE mailbox ADD COLUMN tree_key BYTEA NOT NULL DEFAULT '\x';
