-- A claim of a last-resort KeyPackage lets its claimer have one Welcome waiting in the owner's
-- mailbox at a time (issue 18, finding 3): the claimer is kept beside the Welcome it released.
ALTER TABLE mailbox ADD COLUMN last_resort_from BLOB;
CREATE INDEX mailbox_by_last_resort ON mailbox (owner, last_resort_from)
    WHERE last_resort_from IS NOT NULL;
