//! The shared backend: a PostgreSQL server that any number of stratus nodes use at once.
//!
//! Reads and writes share one pool. Writers that decide about one account's money or quota lock
//! the account's row first ([`lock_account`]); the schema's unique keys, checks and triggers
//! (`migrations/postgres/`) keep the ledger a chain per account whatever the interleaving.

use sqlx::any::AnyPoolOptions;

use crate::{Backend, Conn, Database, Options, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Whether the URL names a PostgreSQL server.
pub fn accepts(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub(crate) async fn open(url: &str, opts: &Options) -> Result<Database, StoreError> {
    let pool = AnyPoolOptions::new()
        .max_connections(opts.max_connections.max(2))
        .acquire_timeout(opts.acquire_timeout)
        .connect(url)
        .await?;
    // Two nodes starting at once both try to migrate: the migrator takes an advisory lock for
    // the duration of the run, so one waits for the other and then finds nothing to do.
    MIGRATOR.run(&pool).await?;
    Ok(Database::new(Backend::Postgres, pool.clone(), pool))
}

pub(crate) async fn lock_account(conn: &mut Conn, account_id: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn lock_blob(conn: &mut Conn, backend: &str, cid: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT state FROM blobs WHERE backend = $1 AND cid = $2 FOR UPDATE")
        .bind(backend)
        .bind(cid)
        .execute(conn)
        .await?;
    Ok(())
}
