-- Content-addressed storage. A blob is one stored DAG (a file's bytes) named by its root CID in
-- one backend; blocks index every block of it; objects are the owners' records.
CREATE TABLE blobs (
    backend    TEXT NOT NULL,
    cid        TEXT NOT NULL,
    size       BIGINT NOT NULL,
    profile    TEXT NOT NULL,
    -- pending: being committed; live; deleting: unreferenced, being removed; quarantined: failed fsck
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (backend, cid)
);

CREATE TABLE blocks (
    backend    TEXT NOT NULL,
    root       TEXT NOT NULL,
    cid        TEXT NOT NULL,
    -- 0: raw leaf, 1: dag-pb (CIDv0) leaf, 2: dag-pb inner node
    kind       SMALLINT NOT NULL,
    -- the file bytes this block covers
    file_offset BIGINT NOT NULL,
    file_len    BIGINT NOT NULL,
    -- encoded node, for inner nodes only (leaves are read from the blob)
    data       BLOB,
    PRIMARY KEY (backend, root, cid)
);
CREATE INDEX blocks_by_cid ON blocks (cid);

CREATE TABLE objects (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    target     TEXT NOT NULL,
    cid        TEXT NOT NULL,
    backend    TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, target, cid)
);
CREATE INDEX objects_by_blob ON objects (backend, cid);
CREATE INDEX objects_by_owner ON objects (account_id, target, id);
