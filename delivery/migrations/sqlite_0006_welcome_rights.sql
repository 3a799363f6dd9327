-- A Welcome may go only to a client whose KeyPackage the committer claimed: each claim allows
-- one Welcome from its claimer to the package's owner (issue 10, finding 1).
ALTER TABLE claim_log ADD COLUMN welcomed BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX claim_log_by_pair ON claim_log (owner, claimer, id);
