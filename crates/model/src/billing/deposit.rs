//! Deposits from the chain: the watcher's store.
//!
//! Every confirmed transfer to the deposit address is recorded once, by reference. If the sender
//! is linked to an account, the deposit is credited in the same transaction (ledger reference
//! `deposit:<reference>`); otherwise it waits, recorded, until the wallet is linked
//! ([`super::Billing::link_wallet`] credits it then). The cursor moves in the same transaction
//! as the deposits it covers, so a restart resumes exactly where the last commit ended and a
//! transfer seen twice changes nothing. The cursor only moves forward (compare-and-set), and
//! with several nodes only the holder of the `chain-watcher` lease writes.

use crate::db::Conn;
use stratus_chain::{async_trait, Anomaly, Deposit, DepositStore, StoreError};
use stratus_config::Amount;

use super::ledger::{EntryKind, Ledger, Posted, Posting};
use crate::clock::SharedClock;
use crate::db::Db;
use crate::wallet::address_lower;
use crate::Result;

/// Credits every uncredited deposit from `wallet_lower` to `account_id`.
pub(super) async fn credit_pending(
    ledger: &Ledger,
    conn: &mut Conn,
    account_id: &str,
    wallet_lower: &str,
) -> Result<Amount> {
    let pending: Vec<(String, String)> = sqlx::query_as(
        "SELECT reference, amount FROM chain_deposits WHERE from_address = $1 AND ledger_id IS NULL ORDER BY block_number, reference",
    )
    .bind(wallet_lower)
    .fetch_all(&mut *conn)
    .await?;
    let mut total = Amount::ZERO;
    for (reference, amount) in pending {
        let amount: Amount = amount.parse().map_err(crate::Error::internal)?;
        let id = credit_one(ledger, conn, account_id, &reference, amount).await?;
        sqlx::query(
            "UPDATE chain_deposits SET account_id = $1, ledger_id = $2 WHERE reference = $3",
        )
        .bind(account_id)
        .bind(id)
        .bind(&reference)
        .execute(&mut *conn)
        .await?;
        total = total.checked_add(amount).unwrap_or(Amount(u128::MAX));
    }
    Ok(total)
}

async fn credit_one(
    ledger: &Ledger,
    conn: &mut Conn,
    account_id: &str,
    reference: &str,
    amount: Amount,
) -> Result<i64> {
    let posted = ledger
        .post_in(
            conn,
            Posting {
                account_id,
                kind: EntryKind::Credit,
                amount,
                reason: "deposit",
                reference: &format!("deposit:{reference}"),
                memo: "transfer to the deposit address",
            },
        )
        .await?;
    if let Posted::New(e) = &posted {
        tracing::info!(account = %account_id, %reference, amount = %e.amount, "deposit credited");
    }
    Ok(posted.entry().id)
}

/// The watcher's store over the metadata database.
#[derive(Debug, Clone)]
pub struct ChainDeposits {
    db: Db,
    clock: SharedClock,
    ledger: Ledger,
    /// When set, every write requires this node to hold the lease (`chain-watcher`): a watcher
    /// that lost it stops before its next write.
    leadership: Option<stratus_store::Leadership>,
}

impl ChainDeposits {
    pub fn new(db: Db, clock: SharedClock) -> Self {
        ChainDeposits {
            ledger: Ledger::new(db.clone(), clock.clone()),
            db,
            clock,
            leadership: None,
        }
    }

    /// The same store, writing only while `lease` is held by this node.
    pub fn under_lease(&self, lease: stratus_store::Leadership) -> Self {
        ChainDeposits {
            leadership: Some(lease),
            ..self.clone()
        }
    }

    /// Refuses a write when the lease this store requires is not held (any more).
    fn check_lease(&self) -> Result<()> {
        match &self.leadership {
            Some(l) if !l.is_held() => Err(crate::Error::Conflict(format!(
                "this node does not hold the lease {:?}: not writing",
                l.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Moves the cursor back so that blocks from `block` on are scanned again (operators).
    pub async fn rescan_from(&self, block: u64) -> Result<()> {
        let cursor = block.checked_sub(1).map(|b| b as i64);
        match cursor {
            Some(c) => {
                sqlx::query(
                    "INSERT INTO chain_cursor (id, block) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET block = excluded.block",
                )
                .bind(c)
                .execute(self.db.w())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM chain_cursor WHERE id = 1")
                    .execute(self.db.w())
                    .await?;
            }
        }
        Ok(())
    }

    /// The stored cursor.
    pub async fn cursor_block(&self) -> Result<Option<u64>> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT block FROM chain_cursor WHERE id = 1")
            .fetch_optional(self.db.r())
            .await?;
        Ok(row.map(|r| r.0 as u64))
    }

    async fn commit_impl(&self, block: u64, deposits: &[Deposit]) -> Result<()> {
        self.check_lease()?;
        let now = self.clock.now_ms();
        let mut tx = self.db.w().begin().await?;
        // The cursor only moves forward (compare-and-set, first: on PostgreSQL its row lock
        // serializes two watchers, and the second one finds the cursor moved and stops here).
        let moved = sqlx::query(
            "INSERT INTO chain_cursor (id, block) VALUES (1, $1) ON CONFLICT (id) DO UPDATE \
             SET block = excluded.block WHERE chain_cursor.block < excluded.block",
        )
        .bind(block as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Err(crate::Error::Conflict(format!(
                "the chain cursor is already at or past block {block} (another watcher?)"
            )));
        }
        for d in deposits {
            let from = address_lower(&d.from);
            let inserted = sqlx::query(
                "INSERT INTO chain_deposits (reference, from_address, amount, block_number, block_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (reference) DO NOTHING",
            )
            .bind(&d.reference)
            .bind(&from)
            .bind(d.amount.to_string())
            .bind(d.block_number as i64)
            .bind(format!("0x{}", hex::encode(d.block_hash)))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                continue; // seen before: applied at most once
            }
            metrics::counter!("stratus_deposits_recorded_total").increment(1);
            let owner: Option<(String,)> =
                sqlx::query_as("SELECT id FROM accounts WHERE wallet_address = $1")
                    .bind(&from)
                    .fetch_optional(&mut *tx)
                    .await?;
            match owner {
                Some((account_id,)) => {
                    if d.amount == 0 {
                        continue;
                    }
                    let id = credit_one(
                        &self.ledger,
                        &mut tx,
                        &account_id,
                        &d.reference,
                        Amount(d.amount),
                    )
                    .await?;
                    sqlx::query(
                        "UPDATE chain_deposits SET account_id = $1, ledger_id = $2 WHERE reference = $3",
                    )
                    .bind(&account_id)
                    .bind(id)
                    .bind(&d.reference)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    tracing::info!(reference = %d.reference, %from, "deposit from an unlinked wallet recorded")
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl DepositStore for ChainDeposits {
    async fn cursor(&self) -> std::result::Result<Option<u64>, StoreError> {
        self.cursor_block().await.map_err(StoreError::new)
    }

    async fn commit(
        &self,
        block: u64,
        deposits: &[Deposit],
    ) -> std::result::Result<(), StoreError> {
        self.commit_impl(block, deposits)
            .await
            .map_err(StoreError::new)
    }

    async fn record_anomalies(&self, anomalies: &[Anomaly]) -> std::result::Result<(), StoreError> {
        self.check_lease().map_err(StoreError::new)?;
        let now = self.clock.now_ms();
        for a in anomalies {
            tracing::warn!(reference = %a.reference, kind = ?a.kind, "chain anomaly");
            sqlx::query(
                "INSERT INTO chain_anomalies (reference, from_address, block_number, detail, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reference) DO NOTHING",
            )
            .bind(&a.reference)
            .bind(a.from.as_ref().map(address_lower))
            .bind(a.block_number as i64)
            .bind(format!("{:?}", a.kind))
            .bind(now)
            .execute(self.db.w())
            .await
            .map_err(StoreError::new)?;
        }
        Ok(())
    }
}
