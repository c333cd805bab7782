-- An account may store the same bytes under several names: one record per (cid, name), as the
-- file list shows them. Rebuilt because SQLite cannot drop a table constraint.
CREATE TABLE objects_named (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    target     TEXT NOT NULL,
    cid        TEXT NOT NULL,
    backend    TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, target, cid, name)
);
INSERT INTO objects_named (id, account_id, target, cid, backend, name, size, created_at)
    SELECT id, account_id, target, cid, backend, name, size, created_at FROM objects;
DROP TABLE objects;
ALTER TABLE objects_named RENAME TO objects;
CREATE INDEX objects_by_blob ON objects (backend, cid);
CREATE INDEX objects_by_owner ON objects (account_id, target, id);
CREATE INDEX objects_by_name ON objects (backend, cid, target, name);
