-- Accounts and token revocation. Portable SQL: TEXT/BIGINT only, no engine-specific types.
CREATE TABLE accounts (
    id                TEXT PRIMARY KEY,
    username          TEXT UNIQUE,
    password_hash     TEXT,
    -- lower-case 0x-prefixed hex address of the linked wallet
    wallet_address    TEXT UNIQUE,
    -- tokens issued before this unix second are invalid (password change)
    tokens_not_before BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL
);

CREATE TABLE revoked_tokens (
    -- hex sha256 of the token text
    token_hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
