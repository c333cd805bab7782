-- Compute sandboxes: instances and their public TCP port mappings.
CREATE TABLE instances (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    name              TEXT NOT NULL,
    spec_id           BIGINT NOT NULL,
    image_id          BIGINT NOT NULL,
    cores             INTEGER NOT NULL,
    memory_gib        INTEGER NOT NULL,
    duration_months   INTEGER NOT NULL,
    -- the decoded docker-compose YAML
    compose           TEXT NOT NULL,
    public_key        TEXT,
    -- SHA-512 crypt of the SSH password (what a VM runtime writes to /etc/shadow)
    password_hash     TEXT,
    -- 0 Creating, 1 Running, 2 Starting, 3 Closing, 4 Closed, 5 Restarting, 6 Deleting,
    -- 7 Deleted, 8 Expired, 9 Recreating, 10 Failed
    status            INTEGER NOT NULL,
    status_reason     TEXT NOT NULL DEFAULT '',
    -- what was charged, and the ledger reference of the charge
    charged           TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    -- a transitional status must be left before this time
    deadline          BIGINT
);
CREATE INDEX instances_by_owner ON instances (account_id, created_at);
CREATE INDEX instances_by_status ON instances (status, expires_at);

CREATE TABLE mappings (
    id            TEXT PRIMARY KEY,
    instance_id   TEXT NOT NULL REFERENCES instances (id),
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    name          TEXT NOT NULL,
    protocol      TEXT NOT NULL,
    computer_port INTEGER NOT NULL,
    server_ip     TEXT NOT NULL,
    server_port   INTEGER NOT NULL,
    created_at    BIGINT NOT NULL
);
-- a public port belongs to at most one mapping: allocation cannot race
CREATE UNIQUE INDEX mappings_by_port ON mappings (server_ip, server_port);
CREATE INDEX mappings_by_instance ON mappings (instance_id);
CREATE INDEX mappings_by_owner ON mappings (account_id, created_at);
