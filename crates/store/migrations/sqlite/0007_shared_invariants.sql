-- Invariants kept by the database, so that they hold whichever process writes.
--
-- The ledger is one chain per account: every entry carries the account's sequence number, one
-- more than the entry before it, and (account, seq) is unique, so two writers that read the same
-- latest entry cannot both append after it; the loser retries from the new latest entry and a
-- debit can never take the balance below zero. Amounts exceed 64 bits (wei), which SQLite cannot
-- hold exactly, so they stay decimal digits, checked here: positive integers for amounts,
-- non-negative ones for balances. Entries are never changed or deleted.
ALTER TABLE ledger ADD COLUMN seq BIGINT;
UPDATE ledger SET seq = (SELECT COUNT(*) FROM ledger l
                         WHERE l.account_id = ledger.account_id AND l.id <= ledger.id);
CREATE UNIQUE INDEX ledger_by_seq ON ledger (account_id, seq);

CREATE TRIGGER ledger_append BEFORE INSERT ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger: amount must be a positive integer')
     WHERE NEW.amount NOT GLOB '[1-9]*' OR NEW.amount GLOB '*[^0-9]*'
        OR length(NEW.amount) > 39;
    SELECT RAISE(ABORT, 'ledger: balance must be a non-negative integer')
     WHERE NEW.balance_after = '' OR NEW.balance_after GLOB '*[^0-9]*'
        OR (NEW.balance_after GLOB '0?*') OR length(NEW.balance_after) > 39;
    SELECT RAISE(ABORT, 'ledger: kind must be credit or debit')
     WHERE NEW.kind NOT IN ('credit', 'debit');
    SELECT RAISE(ABORT, 'ledger: seq must follow the account''s last entry')
     WHERE NEW.seq IS NULL
        OR NEW.seq <> COALESCE((SELECT MAX(seq) FROM ledger WHERE account_id = NEW.account_id), 0) + 1;
END;
CREATE TRIGGER ledger_unchanged BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are never changed');
END;
CREATE TRIGGER ledger_kept BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are never deleted');
END;

-- A purchase and a credited deposit each own their ledger entry.
CREATE UNIQUE INDEX purchases_by_ledger ON purchases (ledger_id);
CREATE UNIQUE INDEX chain_deposits_by_ledger ON chain_deposits (ledger_id);

-- Work that must happen once across nodes runs under a lease: a row its holder renews.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    -- unix milliseconds
    expires_at BIGINT NOT NULL
);
