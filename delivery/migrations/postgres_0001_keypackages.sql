-- KeyPackage directory. Packages are opaque bytes; the node validated them at upload.
CREATE TABLE key_packages (
    id BIGSERIAL PRIMARY KEY,
    owner BYTEA NOT NULL,
    reference BYTEA NOT NULL,
    message BYTEA NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE INDEX key_packages_by_owner ON key_packages (owner, id);
-- Every reference ever published, so a re-published package is not claimable twice.
CREATE TABLE key_package_refs (
    owner BYTEA NOT NULL,
    reference BYTEA NOT NULL,
    PRIMARY KEY (owner, reference)
);
CREATE TABLE last_resort_key_packages (
    owner BYTEA PRIMARY KEY,
    reference BYTEA NOT NULL,
    message BYTEA NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE TABLE claim_log (
    id BIGSERIAL PRIMARY KEY,
    owner BYTEA NOT NULL,
    claimer BYTEA NOT NULL,
    at BIGINT NOT NULL,
    last_resort BOOLEAN NOT NULL
);
CREATE INDEX claim_log_by_owner ON claim_log (owner, id);
