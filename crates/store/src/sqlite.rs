//! The embedded backend: one SQLite file in the data directory.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly one connection and
//! never meet `SQLITE_BUSY`; reads use their own read-only pool and see committed data (WAL).
//! Every commit is durable (`synchronous = FULL`). An embedded store serves one node: for more,
//! use PostgreSQL.

use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

use crate::{Backend, Database, Options, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Statements run on every new connection.
const PRAGMAS: &str = "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                       PRAGMA busy_timeout = 10000;";

pub(crate) async fn open(path: &Path, opts: &Options) -> Result<Database, StoreError> {
    let url = format!("sqlite://{}", path.display());
    let write = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(opts.acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL;").await?;
                conn.execute(PRAGMAS).await?;
                Ok(())
            })
        })
        .connect(&format!("{url}?mode=rwc"))
        .await?;
    MIGRATOR.run(&write).await?;
    let read = AnyPoolOptions::new()
        .max_connections(opts.max_connections.clamp(1, 64))
        .acquire_timeout(opts.acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(PRAGMAS).await?;
                Ok(())
            })
        })
        .connect(&format!("{url}?mode=ro"))
        .await?;
    Ok(Database::new(Backend::Sqlite, write, read))
}
