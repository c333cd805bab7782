-- Billing: an append-only ledger, storage package purchases, and chain deposits.
-- Amounts are decimal strings in the asset's smallest unit (they overflow 64 bits).
CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    -- credit | debit
    kind          TEXT NOT NULL,
    amount        TEXT NOT NULL,
    -- deposit | purchase | sandbox | refund | admin
    reason        TEXT NOT NULL,
    -- the external event this entry applies; each is applied at most once
    reference     TEXT NOT NULL UNIQUE,
    memo          TEXT NOT NULL DEFAULT '',
    -- running balance of the account after this entry
    balance_after TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX ledger_by_account ON ledger (account_id, id);

CREATE TABLE purchases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    target      TEXT NOT NULL,
    package_id  BIGINT NOT NULL,
    -- how many of the package
    quantity    BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    price       TEXT NOT NULL,
    starts_at   BIGINT NOT NULL,
    ends_at     BIGINT NOT NULL,
    ledger_id   BIGINT NOT NULL REFERENCES ledger (id),
    created_at  BIGINT NOT NULL
);
CREATE INDEX purchases_by_owner ON purchases (account_id, target, ends_at);

CREATE TABLE chain_deposits (
    -- 0x<txhash> (native) or 0x<txhash>:<logIndex> (ERC-20)
    reference    TEXT PRIMARY KEY,
    from_address TEXT NOT NULL,
    amount       TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    -- set once credited
    account_id   TEXT REFERENCES accounts (id),
    ledger_id    BIGINT REFERENCES ledger (id),
    created_at   BIGINT NOT NULL
);
CREATE INDEX chain_deposits_by_sender ON chain_deposits (from_address, ledger_id);

CREATE TABLE chain_anomalies (
    reference    TEXT PRIMARY KEY,
    from_address TEXT,
    block_number BIGINT NOT NULL,
    detail       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE chain_cursor (
    id    SMALLINT PRIMARY KEY,
    block BIGINT NOT NULL
);
