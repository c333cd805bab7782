//! The metadata database: SQLite through sqlx, with migrations.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly one connection and
//! never meet `SQLITE_BUSY`; reads use their own pool and see committed data (WAL). The SQL uses
//! `$n` placeholders and portable types so that a PostgreSQL pool can take the same queries; where
//! PostgreSQL would need a row lock (`SELECT … FOR UPDATE`), the single writer already serializes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::Result;

/// Handle to the database.
#[derive(Debug, Clone)]
pub struct Db {
    write: SqlitePool,
    read: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Db> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(crate::Error::internal)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Db { write, read })
    }

    /// The pool for statements that change data (one connection: writes are serialized).
    pub fn w(&self) -> &SqlitePool {
        &self.write
    }

    /// The pool for reads.
    pub fn r(&self) -> &SqlitePool {
        &self.read
    }

    /// Closes both pools (graceful shutdown).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}
