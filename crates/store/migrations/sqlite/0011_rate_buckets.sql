-- Per-account request budgets shared by every node (a token bucket per key, kept as GCRA's
-- "theoretical arrival time"): kind names the budget ('login' per account and address,
-- 'tokens' per account), tat is unix milliseconds. A row whose tat has passed is a full bucket
-- and is deleted by the periodic sweep.
CREATE TABLE rate_buckets (
    kind TEXT NOT NULL CHECK (kind IN ('login', 'tokens')),
    key  TEXT NOT NULL,
    tat  BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX rate_buckets_tat ON rate_buckets (tat);
