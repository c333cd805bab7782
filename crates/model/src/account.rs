//! Accounts: who owns objects, instances and money.
//!
//! An account has a username with a password, a wallet address, or both. This module stores and
//! finds accounts; the login flows that lead to one are in [`crate::auth`]. Lookups on the request
//! path go through a short-lived cache (under a second, so changes made through other nodes are
//! seen within it); every change made here invalidates it at once.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::db::Db;
use crate::wallet::{address_lower, parse_address, Address};
use crate::{Error, Result};

/// How long a cached account is trusted. Several nodes share one database and each caches on its
/// own, so this bounds how long a change made through another node (a password change moving
/// `tokens_not_before`, "log out everywhere", a linked wallet) can go unseen here: under a second,
/// as issue 11 asks. A busy account costs one indexed read per node per half second.
pub const CACHE_TTL: Duration = Duration::from_millis(500);

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub username: Option<String>,
    pub wallet: Option<Address>,
    /// Whether the account can log in with a password.
    pub has_password: bool,
    /// Tokens issued before this unix second are refused.
    pub tokens_not_before: i64,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Account {
    /// The wallet address in EIP-55 form, or "" for password-only accounts.
    pub fn address_text(&self) -> String {
        self.wallet.map(|a| a.to_string()).unwrap_or_default()
    }

    /// The `sub` of this account's tokens when not logging in with the wallet.
    pub fn subject(&self) -> &str {
        &self.id
    }
}

/// An `accounts` row as [`COLUMNS`] selects it. `has_password` comes as 0/1: SQLite has no
/// boolean type, and sqlx's `Any` driver decodes `bool` only from a boolean column.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    username: Option<String>,
    wallet_address: Option<String>,
    has_password: i64,
    tokens_not_before: i64,
    created_at: i64,
}

/// An account row with its password hash.
#[derive(sqlx::FromRow)]
struct WithHash {
    #[sqlx(flatten)]
    account: Row,
    password_hash: Option<String>,
}

fn from_row(r: Row) -> Account {
    Account {
        id: r.id,
        username: r.username,
        wallet: r.wallet_address.as_deref().and_then(parse_address),
        has_password: r.has_password != 0,
        tokens_not_before: r.tokens_not_before,
        created_at: r.created_at,
    }
}

const COLUMNS: &str = "id, username, wallet_address, \
     CAST(CASE WHEN password_hash IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_password, \
     tokens_not_before, created_at";

/// Checks a username's shape: 3–64 characters of letters, digits and `._@+-`.
pub fn validate_username(u: &str) -> Result<()> {
    let ok = (3..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            crate::Field::Username,
            "must be 3 to 64 characters of letters, digits and . _ @ + -",
        ))
    }
}

/// The account store.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: Db,
    by_id: Arc<DashMap<String, (Instant, Arc<Account>)>>,
    id_by_wallet: Arc<DashMap<Address, (Instant, String)>>,
}

impl Accounts {
    pub fn new(db: Db) -> Self {
        Accounts {
            db,
            by_id: Arc::new(DashMap::new()),
            id_by_wallet: Arc::new(DashMap::new()),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Drops cached copies of `a` (after another service changed its row).
    pub fn forget(&self, a: &Account) {
        self.invalidate(a);
    }

    fn invalidate(&self, a: &Account) {
        self.by_id.remove(&a.id);
        if let Some(w) = a.wallet {
            self.id_by_wallet.remove(&w);
        }
    }

    /// Creates a password account.
    pub async fn create_with_password(
        &self,
        username: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<Account> {
        validate_username(username)?;
        let id = uuid::Uuid::new_v4().to_string();
        let r = sqlx::query(
            "INSERT INTO accounts (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(&id)
        .bind(username)
        .bind(password_hash)
        .bind(now_ms)
        .execute(self.db.w())
        .await?;
        if r.rows_affected() == 0 {
            return Err(Error::Conflict(format!("username {username} is taken")));
        }
        Ok(Account {
            id,
            username: Some(username.to_string()),
            wallet: None,
            has_password: true,
            tokens_not_before: 0,
            created_at: now_ms,
        })
    }

    /// Finds the account of `wallet`, creating a wallet-only account on first sight.
    pub async fn get_or_create_for_wallet(&self, wallet: Address, now_ms: i64) -> Result<Account> {
        if let Some(a) = self.by_wallet(wallet).await? {
            return Ok(a);
        }
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO accounts (id, wallet_address, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (wallet_address) DO NOTHING",
        )
        .bind(&id)
        .bind(address_lower(&wallet))
        .bind(now_ms)
        .execute(self.db.w())
        .await?;
        self.by_wallet_uncached(wallet, true)
            .await?
            .ok_or_else(|| Error::internal("wallet account vanished after insert"))
    }

    /// The account with this id.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Account>>> {
        if let Some(e) = self.by_id.get(id) {
            if e.0.elapsed() < CACHE_TTL {
                return Ok(Some(e.1.clone()));
            }
        }
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM accounts WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.db.r())
                .await?;
        Ok(row.map(|r| {
            let a = Arc::new(from_row(r));
            self.by_id.insert(a.id.clone(), (Instant::now(), a.clone()));
            a
        }))
    }

    /// The account linked to `wallet`.
    pub async fn by_wallet(&self, wallet: Address) -> Result<Option<Account>> {
        if let Some(e) = self.id_by_wallet.get(&wallet) {
            if e.0.elapsed() < CACHE_TTL {
                let id = e.1.clone();
                drop(e);
                if let Some(a) = self.get(&id).await? {
                    if a.wallet == Some(wallet) {
                        return Ok(Some((*a).clone()));
                    }
                }
            }
        }
        self.by_wallet_uncached(wallet, false).await
    }

    async fn by_wallet_uncached(
        &self,
        wallet: Address,
        from_writer: bool,
    ) -> Result<Option<Account>> {
        let pool = if from_writer {
            self.db.w()
        } else {
            self.db.r()
        };
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM accounts WHERE wallet_address = $1"
        ))
        .bind(address_lower(&wallet))
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| {
            let a = from_row(r);
            self.id_by_wallet
                .insert(wallet, (Instant::now(), a.id.clone()));
            a
        }))
    }

    /// The account and password hash of `username`.
    pub async fn by_username(&self, username: &str) -> Result<Option<(Account, Option<String>)>> {
        let row: Option<WithHash> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, password_hash FROM accounts WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(self.db.r())
        .await?;
        Ok(row.map(|r| (from_row(r.account), r.password_hash)))
    }

    /// The password hash of an account.
    pub async fn password_hash(&self, id: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT password_hash FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.r())
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// Finds an account by id, username or wallet address (operator tools).
    pub async fn find_any(&self, key: &str) -> Result<Option<Account>> {
        if let Some(w) = parse_address(key) {
            return self.by_wallet(w).await;
        }
        if let Some(a) = self.get(key).await? {
            return Ok(Some((*a).clone()));
        }
        Ok(self.by_username(key).await?.map(|(a, _)| a))
    }

    /// Sets a new password hash and refuses every token issued before `not_before`.
    pub async fn set_password(&self, account: &Account, hash: &str, not_before: i64) -> Result<()> {
        sqlx::query("UPDATE accounts SET password_hash = $1, tokens_not_before = $2 WHERE id = $3")
            .bind(hash)
            .bind(not_before)
            .bind(&account.id)
            .execute(self.db.w())
            .await?;
        self.invalidate(account);
        Ok(())
    }

    /// Revokes every token of the account issued up to `not_before` (exclusive of later ones).
    pub async fn revoke_all(&self, account: &Account, not_before: i64) -> Result<()> {
        sqlx::query(
            "UPDATE accounts SET tokens_not_before = $1 WHERE id = $2 AND tokens_not_before < $1",
        )
        .bind(not_before)
        .bind(&account.id)
        .execute(self.db.w())
        .await?;
        self.invalidate(account);
        Ok(())
    }

    /// Number of accounts (metrics).
    pub async fn count(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
            .fetch_one(self.db.r())
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::TestDb;

    async fn rows_decode_on(db: Db) {
        let accounts = Accounts::new(db);
        let a = accounts
            .create_with_password("alice", "hash", 1)
            .await
            .unwrap();
        let got = accounts.get(&a.id).await.unwrap().unwrap();
        assert!(got.has_password);
        assert_eq!(*got, a);
        let w = accounts
            .get_or_create_for_wallet(Address::new([0xcc; 20]), 2)
            .await
            .unwrap();
        assert!(!w.has_password);
        let (found, hash) = accounts.by_username("alice").await.unwrap().unwrap();
        assert_eq!((found.id, hash.as_deref()), (a.id, Some("hash")));
    }

    #[tokio::test]
    async fn rows_decode_on_sqlite() {
        let t = TestDb::sqlite().await;
        rows_decode_on(t.db.clone()).await;
    }

    #[tokio::test]
    async fn rows_decode_on_postgres() {
        let Some(t) = TestDb::postgres().await else {
            return;
        };
        rows_decode_on(t.db.clone()).await;
        t.drop().await;
    }
}
