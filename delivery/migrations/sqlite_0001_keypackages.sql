-- KeyPackage directory (SQLite dialect of postgres_0001). Packages are opaque bytes; the node validated them at upload.
CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    reference BLOB NOT NULL,
    message BLOB NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE INDEX key_packages_by_owner ON key_packages (owner, id);
-- Every reference ever published, so a re-published package is not claimable twice.
CREATE TABLE key_package_refs (
    owner BLOB NOT NULL,
    reference BLOB NOT NULL,
    PRIMARY KEY (owner, reference)
);
CREATE TABLE last_resort_key_packages (
    owner BLOB PRIMARY KEY,
    reference BLOB NOT NULL,
    message BLOB NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE TABLE claim_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    claimer BLOB NOT NULL,
    at INTEGER NOT NULL,
    last_resort INTEGER NOT NULL
);
CREATE INDEX claim_log_by_owner ON claim_log (owner, id);
