-- Authentication state shared by every node (issue 11, "no per-process truth").

-- The consumption side of login nonces. Nonces are self-verifying (issue time and an HMAC under
-- a key derived from the shared token key), so issuing one writes nothing; the first login
-- attempt records which address it is bound to, and a successful login marks it used.
CREATE TABLE login_nonces (
    -- the nonce's 64 lower-case hex digits
    nonce      TEXT PRIMARY KEY,
    -- lower-case 0x-prefixed address of the first login attempt
    address    TEXT NOT NULL,
    -- unix milliseconds after which the nonce is worthless anyway
    expires_at BIGINT NOT NULL,
    used       BIGINT NOT NULL DEFAULT 0 CHECK (used IN (0, 1))
);
CREATE INDEX login_nonces_expiry ON login_nonces (expires_at);

-- When a revocation was recorded (unix milliseconds): the change feed every node polls.
ALTER TABLE revoked_tokens ADD COLUMN revoked_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX revoked_tokens_by_time ON revoked_tokens (revoked_at);

-- Failed password checks per account and client address, shared so that a lock earned through
-- one node holds on every node. kind: 'login' or 'change' (the old-password check).
CREATE TABLE login_failures (
    kind         TEXT NOT NULL CHECK (kind IN ('login', 'change')),
    account      TEXT NOT NULL,
    address      TEXT NOT NULL,
    failures     BIGINT NOT NULL CHECK (failures >= 0),
    -- unix milliseconds: first failure of the current run, last failure, end of the lock
    window_start BIGINT NOT NULL,
    last_failure BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, account, address)
);
CREATE INDEX login_failures_quiet ON login_failures (last_failure);
