-- Which package each claim took, so that its owner can tell which private keys went out and
-- delete those no Welcome used (issue 10, finding 6).
ALTER TABLE claim_log ADD COLUMN reference BYTEA NOT NULL DEFAULT '\x';
