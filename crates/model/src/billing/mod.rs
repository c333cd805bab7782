//! Billing: the ledger, storage packages and their purchases, and deposits from the chain.
//!
//! Money only moves through [`Ledger`] postings, each inside the same transaction as the thing it
//! pays for (a purchase, a deposit, a sandbox), so no balance moves without its record and no
//! record exists without its money. Purchased packages add storage space to one target until
//! they expire; nothing is deleted at expiry, new uploads are refused until there is room.

mod deposit;
mod ledger;

use std::sync::Arc;

use serde::Serialize;
use stratus_config::{Amount, BillingConfig, PackageConfig};

pub use deposit::ChainDeposits;
pub use ledger::{Entry, EntryKind, Ledger, Posted, Posting, Verification};

use crate::account::{Account, Accounts};
use crate::clock::SharedClock;
use crate::db::Db;
use crate::storage::Allowance;
use crate::wallet::{address_lower, Address};
use crate::{Error, Result};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A purchase of a storage package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purchase {
    pub id: i64,
    pub target: String,
    pub package_id: u64,
    pub quantity: u64,
    pub bytes: u64,
    pub price: Amount,
    /// Unix milliseconds.
    pub starts_at: i64,
    pub ends_at: i64,
    pub balance_after: Amount,
}

impl Purchase {
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.starts_at <= now_ms && now_ms < self.ends_at
    }
}

/// The billing service.
#[derive(Debug, Clone)]
pub struct Billing {
    db: Db,
    clock: SharedClock,
    cfg: BillingConfig,
    ledger: Ledger,
}

impl Billing {
    pub fn new(db: Db, clock: SharedClock, cfg: BillingConfig) -> Self {
        Billing {
            ledger: Ledger::new(db.clone(), clock.clone()),
            db,
            clock,
            cfg,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn config(&self) -> &BillingConfig {
        &self.cfg
    }

    /// The packages for sale.
    pub fn packages(&self) -> &[PackageConfig] {
        &self.cfg.packages
    }

    /// Buys `quantity` of package `package_id` for `target`: the space is added now and lasts the
    /// package's days; the price times the quantity is debited in the same transaction.
    pub async fn buy(
        &self,
        account_id: &str,
        target: &str,
        package_id: u64,
        quantity: i64,
    ) -> Result<Purchase> {
        let pkg = self
            .cfg
            .packages
            .iter()
            .find(|p| p.id == package_id)
            .ok_or_else(|| {
                Error::invalid(crate::Field::Package, format!("no package {package_id}"))
            })?;
        if quantity <= 0 {
            return Err(Error::invalid(crate::Field::Quantity, "must be at least 1"));
        }
        if quantity as u64 > self.cfg.max_purchase_amount {
            return Err(Error::invalid(
                crate::Field::Quantity,
                format!("at most {} at once", self.cfg.max_purchase_amount),
            ));
        }
        let q = quantity as u64;
        let price = pkg
            .price
            .checked_mul(q as u128)
            .ok_or_else(|| Error::invalid(crate::Field::Quantity, "the price overflows"))?;
        let bytes = pkg
            .bytes
            .checked_mul(q)
            .filter(|b| *b <= i64::MAX as u64)
            .ok_or_else(|| Error::invalid(crate::Field::Quantity, "too much space at once"))?;
        let now = self.clock.now_ms();
        let ends = now.saturating_add((pkg.days as i64).saturating_mul(DAY_MS));
        let reference = format!("purchase:{}", uuid::Uuid::new_v4());
        let mut tx = self.db.w().begin().await?;
        let posted = self
            .ledger
            .post_in(
                &mut tx,
                Posting {
                    account_id,
                    kind: EntryKind::Debit,
                    amount: price,
                    reason: "purchase",
                    reference: &reference,
                    memo: &format!("{q} × package {} ({}) for {target}", pkg.id, pkg.name),
                },
            )
            .await?;
        let entry = posted.entry().clone();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO purchases (account_id, target, package_id, quantity, bytes, price, starts_at, ends_at, ledger_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(account_id)
        .bind(target)
        .bind(pkg.id as i64)
        .bind(q as i64)
        .bind(bytes as i64)
        .bind(price.to_string())
        .bind(now)
        .bind(ends)
        .bind(entry.id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("stratus_purchases_total", "target" => target.to_string()).increment(1);
        Ok(Purchase {
            id,
            target: target.to_string(),
            package_id: pkg.id,
            quantity: q,
            bytes,
            price,
            starts_at: now,
            ends_at: ends,
            balance_after: entry.balance_after,
        })
    }

    /// The account's purchases for `target` (all targets when `None`), newest first.
    pub async fn purchases(&self, account_id: &str, target: Option<&str>) -> Result<Vec<Purchase>> {
        self.purchases_page(account_id, target, 1, u32::MAX).await
    }

    /// One page (from 1, `size` per page) of [`Billing::purchases`].
    pub async fn purchases_page(
        &self,
        account_id: &str,
        target: Option<&str>,
        page: u32,
        size: u32,
    ) -> Result<Vec<Purchase>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            target: String,
            package_id: i64,
            quantity: i64,
            bytes: i64,
            price: String,
            starts_at: i64,
            ends_at: i64,
            balance_after: String,
        }
        let size = i64::from(size.max(1));
        let offset = (i64::from(page.max(1)) - 1).saturating_mul(size);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT p.id, p.target, p.package_id, p.quantity, p.bytes, p.price, p.starts_at, p.ends_at, l.balance_after \
             FROM purchases p JOIN ledger l ON l.id = p.ledger_id \
             WHERE p.account_id = $1 AND ($2 IS NULL OR p.target = $2) ORDER BY p.id DESC \
             LIMIT $3 OFFSET $4",
        )
        .bind(account_id)
        .bind(target)
        .bind(size)
        .bind(offset)
        .fetch_all(self.db.r())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Purchase {
                    id: r.id,
                    target: r.target,
                    package_id: r.package_id as u64,
                    quantity: r.quantity as u64,
                    bytes: r.bytes as u64,
                    price: r.price.parse().map_err(Error::internal)?,
                    starts_at: r.starts_at,
                    ends_at: r.ends_at,
                    balance_after: r.balance_after.parse().map_err(Error::internal)?,
                })
            })
            .collect()
    }

    /// Bytes of the account's unexpired purchases for `target`.
    pub async fn purchased_bytes(
        &self,
        account_id: &str,
        target: &str,
        now_ms: i64,
    ) -> Result<u64> {
        let (sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM purchases \
             WHERE account_id = $1 AND target = $2 AND starts_at <= $3 AND ends_at > $3",
        )
        .bind(account_id)
        .bind(target)
        .bind(now_ms)
        .fetch_one(self.db.r())
        .await?;
        Ok(sum as u64)
    }

    /// Links `wallet` to a password account and, in the same transaction, credits every deposit
    /// that wallet made before it was linked. Returns the credited amount.
    pub async fn link_wallet(
        &self,
        accounts: &Accounts,
        account: &Account,
        wallet: Address,
    ) -> Result<Amount> {
        let mut tx = self.db.w().begin().await?;
        if let Some((other,)) =
            sqlx::query_as::<_, (String,)>("SELECT id FROM accounts WHERE wallet_address = $1")
                .bind(address_lower(&wallet))
                .fetch_optional(&mut *tx)
                .await?
        {
            if other != account.id {
                return Err(Error::Conflict(format!(
                    "wallet {} is already linked to another account",
                    wallet
                )));
            }
        } else {
            let r = sqlx::query(
                "UPDATE accounts SET wallet_address = $1 WHERE id = $2 AND wallet_address IS NULL",
            )
            .bind(address_lower(&wallet))
            .bind(&account.id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Err(Error::Conflict("this account already has a wallet".into()));
            }
        }
        let credited =
            deposit::credit_pending(&self.ledger, &mut tx, &account.id, &address_lower(&wallet))
                .await?;
        tx.commit().await?;
        accounts.forget(account);
        Ok(credited)
    }
}

#[async_trait::async_trait]
impl Allowance for Billing {
    async fn extra_bytes(&self, account_id: &str, target: &str, now_ms: i64) -> Result<u64> {
        self.purchased_bytes(account_id, target, now_ms).await
    }
}

/// The billing service as a shared allowance for storage.
pub fn allowance(b: &Billing) -> Arc<dyn Allowance> {
    Arc::new(b.clone())
}
