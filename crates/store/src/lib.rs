//! The metadata store: one [`Database`] over embedded SQLite (the default) or PostgreSQL (many
//! nodes, one database), chosen by the URL.
//!
//! Each backend is a module of its own ([`sqlite`], [`postgres`]) that owns how it connects, its
//! migrations (`migrations/<backend>/`) and the few statements whose text differs between the
//! two (row locks). The queries of the core are portable SQL — `$n` placeholders, `RETURNING`,
//! `ON CONFLICT`, integer and text columns — written once and run through sqlx's `Any` driver, so
//! a statement is never written twice. What money and ownership depend on is kept by the schema
//! itself (unique keys, checks, triggers), so it holds whichever node writes.
//!
//! This crate knows no HTTP, no wire names and nothing of the domain beyond table names.

pub mod copy;
pub mod lease;
pub mod postgres;
pub mod sqlite;

use std::path::Path;

pub use lease::Leadership;
pub use sqlx::any::AnyRow as Row;
pub use sqlx::AnyConnection as Conn;
pub use sqlx::Error as StoreError;

/// A transaction on either backend.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A pool on either backend.
pub type Pool = sqlx::AnyPool;

/// Which engine a [`Database`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file in the data directory; one writer at a time; one node.
    Sqlite,
    /// A PostgreSQL server shared by any number of nodes.
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone)]
pub enum Location<'a> {
    /// An embedded SQLite file (created if missing).
    Sqlite(&'a Path),
    /// A database URL: `postgres://…` / `postgresql://…`, or `sqlite://<path>`.
    Url(&'a str),
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections of a PostgreSQL pool (SQLite: readers; it always has one writer).
    pub max_connections: u32,
    /// How long a statement waits for a free connection.
    pub acquire_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Handle to the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    backend: Backend,
    write: Pool,
    read: Pool,
}

impl Database {
    /// Connects (creating an embedded file if needed) and applies pending migrations.
    pub async fn open(at: Location<'_>, opts: &Options) -> Result<Database, StoreError> {
        sqlx::any::install_default_drivers();
        match at {
            Location::Sqlite(path) => sqlite::open(path, opts).await,
            Location::Url(url) if postgres::accepts(url) => postgres::open(url, opts).await,
            Location::Url(url) => match url.strip_prefix("sqlite://") {
                Some(path) => sqlite::open(Path::new(path), opts).await,
                None => Err(StoreError::Configuration(
                    format!(
                        "database.url must start with postgres://, postgresql:// or sqlite:// \
                         (got {:?})",
                        redact(url)
                    )
                    .into(),
                )),
            },
        }
    }

    /// An embedded SQLite file with the default options (tests, tools).
    pub async fn open_sqlite(path: &Path) -> Result<Database, StoreError> {
        Self::open(Location::Sqlite(path), &Options::default()).await
    }

    pub(crate) fn new(backend: Backend, write: Pool, read: Pool) -> Database {
        Database {
            backend,
            write,
            read,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for statements that change data (SQLite: one connection, writes are serialized).
    pub fn w(&self) -> &Pool {
        &self.write
    }

    /// The pool for reads (committed data).
    pub fn r(&self) -> &Pool {
        &self.read
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        self.write.begin().await
    }

    /// Locks the account's row until the transaction ends, so that everything one account's
    /// money and quota depend on is decided by one transaction at a time on every node
    /// (PostgreSQL: `SELECT … FOR UPDATE`). SQLite's single writer already serializes writes.
    pub async fn lock_account(&self, conn: &mut Conn, account_id: &str) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => postgres::lock_account(conn, account_id).await,
        }
    }

    /// Locks a blob's row until the transaction ends (PostgreSQL: `SELECT … FOR UPDATE`; a
    /// missing row locks nothing), so that publishing an object of the blob and marking the blob
    /// for deletion are decided one after the other on every node, each seeing what the other
    /// committed. SQLite's single writer already serializes writes.
    pub async fn lock_blob(
        &self,
        conn: &mut Conn,
        backend: &str,
        cid: &str,
    ) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => postgres::lock_blob(conn, backend, cid).await,
        }
    }

    /// Closes the pools (graceful shutdown).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Whether the error is a unique-key violation (a racing writer got there first).
pub fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(d) if d.is_unique_violation())
}

/// Whether the database could not write for lack of space (SQLite `SQLITE_FULL`, PostgreSQL
/// `disk_full` 53100), or an i/o error said so.
pub fn is_storage_full(e: &StoreError) -> bool {
    match e {
        StoreError::Database(d) => matches!(d.code().as_deref(), Some("13") | Some("53100")),
        StoreError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ),
        _ => false,
    }
}

/// Whether a transaction lost a race that retrying it can win (PostgreSQL serialization
/// failure 40001 or deadlock 40P01; a unique violation on a sequence key).
pub fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(d) => {
            d.is_unique_violation() || matches!(d.code().as_deref(), Some("40001") | Some("40P01"))
        }
        _ => false,
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `url` naming `database` instead of the database it names (keeps the query string): test
/// harnesses create a database per test through a base URL.
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map(|i| &rest[authority_end + i..])
        .unwrap_or("");
    format!(
        "{}{}/{database}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    )
}

/// Creates the database `name` on the PostgreSQL server `base` names and returns its URL; drops
/// it with [`drop_database`]. For test harnesses, which make a database per test; `name` must be
/// a plain identifier (lowercase letters, digits, `_`).
pub async fn create_database(base: &str, name: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    check_identifier(name)?;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(base).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(with_database(base, name))
}

/// Drops the database `name` made by [`create_database`], ending the sessions still on it.
pub async fn drop_database(base: &str, name: &str) -> Result<(), StoreError> {
    use sqlx::Connection;
    check_identifier(name)?;
    let mut c = sqlx::AnyConnection::connect(base).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(())
}

fn check_identifier(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Configuration(
            format!("not a plain database name: {name:?}").into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_names_another_database() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:55432/postgres", "t1"),
            "postgres://u:p@127.0.0.1:55432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:1/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
