//! The ledger: every movement of money, append-only.
//!
//! An entry is a credit or a debit with a reason and an external reference; a reference is
//! applied at most once (a second attempt returns the first entry). Entries form one chain per
//! account: each carries the account's sequence number (`seq`, one more than the entry before)
//! and the running balance after it, so the balance is the latest entry's `balance_after` and can
//! always be re-derived by summing the entries ([`Ledger::verify`]). The database keeps the chain:
//! `(account, seq)` is unique and a trigger checks that each entry follows the last one, so two
//! writers on any number of nodes that read the same latest entry cannot both append after it,
//! and a debit never takes a balance below zero. A posting first locks the account's row
//! (PostgreSQL; SQLite's single writer serializes), so concurrent postings queue instead of
//! failing; if one ever lost a race anyway, the key would fail its whole transaction (nothing
//! bought, nothing charged).

use crate::db::Conn;
use serde::Serialize;
use stratus_config::Amount;

use crate::clock::SharedClock;
use crate::db::Db;
use crate::{Error, Result};

/// Credit or debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Credit,
    Debit,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::Debit => "debit",
        }
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub account_id: String,
    pub kind: EntryKind,
    pub amount: Amount,
    pub reason: String,
    pub reference: String,
    pub memo: String,
    pub balance_after: Amount,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A `ledger` row as [`COLUMNS`] selects it; amounts are decimal text (they exceed 64 bits).
#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    account_id: String,
    kind: String,
    amount: String,
    reason: String,
    reference: String,
    memo: String,
    balance_after: String,
    created_at: i64,
}

fn parse_amount(s: &str) -> Result<Amount> {
    s.parse()
        .map_err(|_| Error::internal(format!("corrupt amount in ledger: {s:?}")))
}

fn from_row(r: Row) -> Result<Entry> {
    Ok(Entry {
        id: r.id,
        account_id: r.account_id,
        kind: if r.kind == "credit" {
            EntryKind::Credit
        } else {
            EntryKind::Debit
        },
        amount: parse_amount(&r.amount)?,
        reason: r.reason,
        reference: r.reference,
        memo: r.memo,
        balance_after: parse_amount(&r.balance_after)?,
        created_at: r.created_at,
    })
}

const COLUMNS: &str =
    "id, account_id, kind, amount, reason, reference, memo, balance_after, created_at";

/// A posting request.
#[derive(Debug, Clone)]
pub struct Posting<'a> {
    pub account_id: &'a str,
    pub kind: EntryKind,
    pub amount: Amount,
    pub reason: &'a str,
    pub reference: &'a str,
    pub memo: &'a str,
}

/// The result of a posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// A new entry.
    New(Entry),
    /// The reference had been applied already: nothing changed; this is the earlier entry.
    Duplicate(Entry),
}

impl Posted {
    pub fn entry(&self) -> &Entry {
        match self {
            Posted::New(e) | Posted::Duplicate(e) => e,
        }
    }
}

/// Summary of a ledger check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub accounts: u64,
    pub entries: u64,
    pub total_credits: Amount,
    pub total_debits: Amount,
    /// Accounts whose running balance does not equal the sum of their entries.
    pub mismatches: Vec<String>,
}

/// The ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: Db,
    clock: SharedClock,
}

impl Ledger {
    pub fn new(db: Db, clock: SharedClock) -> Self {
        Ledger { db, clock }
    }

    /// The account's balance.
    pub async fn balance(&self, account_id: &str) -> Result<Amount> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT balance_after FROM ledger WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(account_id)
        .fetch_optional(self.db.r())
        .await?;
        row.map(|r| parse_amount(&r.0))
            .transpose()
            .map(|a| a.unwrap_or(Amount::ZERO))
    }

    /// Posts one entry in its own transaction.
    pub async fn post(&self, p: Posting<'_>) -> Result<Posted> {
        let mut tx = self.db.begin().await?;
        let posted = self.post_in(&mut tx, p).await?;
        tx.commit().await?;
        Ok(posted)
    }

    /// The entry already posted under `p`'s reference, as a duplicate of `p`; a conflict if it
    /// was applied differently; `None` if there is none.
    async fn earlier(&self, conn: &mut Conn, p: &Posting<'_>) -> Result<Option<Posted>> {
        let earlier: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM ledger WHERE reference = $1"
        ))
        .bind(p.reference)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(r) = earlier else { return Ok(None) };
        let e = from_row(r)?;
        if e.account_id != p.account_id || e.kind != p.kind || e.amount != p.amount {
            return Err(Error::Conflict(format!(
                "reference {} was already applied differently",
                p.reference
            )));
        }
        Ok(Some(Posted::Duplicate(e)))
    }

    /// Posts one entry inside the caller's transaction (so it commits or rolls back with the
    /// purchase, deposit or sandbox it pays for).
    pub async fn post_in(&self, conn: &mut Conn, p: Posting<'_>) -> Result<Posted> {
        if p.amount == Amount::ZERO {
            return Err(Error::invalid(
                crate::Field::Amount,
                "must be greater than zero",
            ));
        }
        if p.reference.is_empty() {
            return Err(Error::invalid(crate::Field::Reference, "must not be empty"));
        }
        // Every posting of this account waits here for the one before it to commit.
        self.db.lock_account(conn, p.account_id).await?;
        let last: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, balance_after FROM ledger WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(p.account_id)
        .fetch_optional(&mut *conn)
        .await?;
        let (seq, current) = match last {
            Some((seq, s)) => (seq + 1, parse_amount(&s)?),
            None => (1, Amount::ZERO),
        };
        let after = match p.kind {
            EntryKind::Credit => current
                .checked_add(p.amount)
                .ok_or_else(|| Error::invalid(crate::Field::Amount, "the balance would overflow")),
            EntryKind::Debit => current
                .checked_sub(p.amount)
                .ok_or(Error::InsufficientBalance {
                    needed: p.amount,
                    available: current,
                }),
        };
        let after = match after {
            Ok(a) => a,
            // A retry of a posting that was applied already is a duplicate, whatever the
            // balance is now.
            Err(e) => return self.earlier(conn, &p).await?.ok_or(e),
        };
        let now = self.clock.now_ms();
        // The reference is checked by its unique key, in the same statement: a reference
        // applied already inserts nothing (the common case, a fresh reference, costs no lookup).
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO ledger (account_id, kind, amount, reason, reference, memo, balance_after, \
             created_at, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (reference) DO NOTHING RETURNING id",
        )
        .bind(p.account_id)
        .bind(p.kind.as_str())
        .bind(p.amount.to_string())
        .bind(p.reason)
        .bind(p.reference)
        .bind(p.memo)
        .bind(after.to_string())
        .bind(now)
        .bind(seq)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((id,)) = inserted else {
            return self
                .earlier(conn, &p)
                .await?
                .ok_or_else(|| Error::internal("a ledger reference conflicted and is not there"));
        };
        metrics::counter!("stratus_ledger_entries_total", "kind" => p.kind.as_str(), "reason" => p.reason.to_string())
            .increment(1);
        Ok(Posted::New(Entry {
            id,
            account_id: p.account_id.to_string(),
            kind: p.kind,
            amount: p.amount,
            reason: p.reason.to_string(),
            reference: p.reference.to_string(),
            memo: p.memo.to_string(),
            balance_after: after,
            created_at: now,
        }))
    }

    /// The account's entries, newest first, a page at a time (pages start at 1).
    pub async fn history(
        &self,
        account_id: &str,
        page: u32,
        size: u32,
    ) -> Result<(Vec<Entry>, u64)> {
        let size = size.clamp(1, 1000) as i64;
        let offset = (page.max(1) as i64 - 1) * size;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM ledger WHERE account_id = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3"
        ))
        .bind(account_id)
        .bind(size)
        .bind(offset)
        .fetch_all(self.db.r())
        .await?;
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ledger WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(self.db.r())
            .await?;
        Ok((
            rows.into_iter().map(from_row).collect::<Result<_>>()?,
            total as u64,
        ))
    }

    /// Re-derives every balance from the entries and compares it with the running balances.
    pub async fn verify(&self) -> Result<Verification> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT account_id, kind, amount, balance_after FROM ledger ORDER BY account_id, seq",
        )
        .fetch_all(self.db.r())
        .await?;
        let mut v = Verification::default();
        let mut current: Option<(String, i128)> = None;
        let mut bad = false;
        for (account, kind, amount, after) in rows {
            v.entries += 1;
            let amount = parse_amount(&amount)?;
            let after = parse_amount(&after)?;
            if current.as_ref().map(|c| &c.0) != Some(&account) {
                if let Some((a, _)) = current.take() {
                    if bad {
                        v.mismatches.push(a);
                    }
                }
                v.accounts += 1;
                current = Some((account.clone(), 0));
                bad = false;
            }
            let c = current.as_mut().expect("set above");
            let delta = amount.0 as i128;
            if kind == "credit" {
                c.1 += delta;
                v.total_credits = v
                    .total_credits
                    .checked_add(amount)
                    .unwrap_or(Amount(u128::MAX));
            } else {
                c.1 -= delta;
                v.total_debits = v
                    .total_debits
                    .checked_add(amount)
                    .unwrap_or(Amount(u128::MAX));
            }
            if c.1 < 0 || c.1 as u128 != after.0 {
                bad = true;
            }
        }
        if let Some((a, _)) = current {
            if bad {
                v.mismatches.push(a);
            }
        }
        Ok(v)
    }
}
