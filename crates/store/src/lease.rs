//! Leases: work that must happen once across all nodes (the chain watcher, the compute sweeper,
//! blob garbage collection, expiry) runs on the node that holds its lease.
//!
//! A lease is a row (`leases`: name, holder, expiry in unix milliseconds) that its holder renews
//! well before it expires; any node takes it over once it has expired. It is not a session
//! advisory lock, which dies silently behind a connection pooler: a lease survives a pooler and
//! a reconnect, and its holder knows for how long it is valid. A holder that cannot renew stops
//! believing it holds the lease before the lease can expire for the others (it counts from the
//! moment it asked, on its own monotonic clock), so two nodes never both think they lead, as
//! long as the nodes' wall clocks agree to within a fraction of the TTL (run NTP).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{Database, StoreError};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Database {
    /// Takes the lease `name` for `holder` (or renews it, if `holder` has it) until `ttl` from
    /// now; whether `holder` holds it now.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let row: Option<(String,)> = sqlx::query_as(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4 \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .fetch_optional(self.w())
        .await?;
        Ok(row.is_some_and(|(h,)| h == holder))
    }

    /// Gives the lease up (a clean shutdown), so another node takes it over at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Who holds the lease now, if anyone.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT holder FROM leases WHERE name = $1 AND expires_at >= $2")
                .bind(name)
                .bind(now_ms())
                .fetch_optional(self.r())
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// The holders of unexpired leases whose name starts with `prefix` (`node:` lists the
    /// nodes alive).
    pub async fn live_holders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            // PostgreSQL has `substr(text, integer, integer)` only: the bound length (BIGINT
            // through the `Any` driver) is cast.
            "SELECT holder FROM leases WHERE substr(name, 1, CAST($1 AS INTEGER)) = $2 \
             AND expires_at >= $3",
        )
        .bind(prefix.len() as i64)
        .bind(prefix)
        .bind(now_ms())
        .fetch_all(self.r())
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}

/// A lease kept by a background task: renewed every third of its TTL while this value lives,
/// released when it is dropped.
#[derive(Debug, Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// Until when this node may act as the holder (monotonic); `None`: not held.
    until: Mutex<Option<Instant>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Leadership {
    /// Starts keeping the lease `name` for `holder`.
    pub fn spawn(db: Database, name: &str, holder: &str, ttl: Duration) -> Leadership {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            name: name.to_string(),
            until: Mutex::new(None),
            stop,
        });
        let weak = Arc::downgrade(&inner);
        let (name, holder) = (name.to_string(), holder.to_string());
        tokio::spawn(async move {
            let every = ttl / 3;
            loop {
                let asked = Instant::now();
                let held = db.try_lease(&name, &holder, ttl).await;
                let Some(inner) = weak.upgrade() else { break };
                match held {
                    Ok(true) => {
                        let was = inner.until.lock().replace(asked + ttl - every);
                        if was.is_none() {
                            tracing::info!(lease = %name, "this node now holds the lease");
                        }
                    }
                    Ok(false) => {
                        if inner.until.lock().take().is_some() {
                            tracing::warn!(lease = %name, "lease lost to another node");
                        }
                    }
                    Err(e) => {
                        // Keep acting until the margin runs out: the row is still ours.
                        tracing::warn!(lease = %name, error = %e, "cannot renew the lease");
                    }
                }
                drop(inner);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
            }
            if let Err(e) = db.release_lease(&name, &holder).await {
                tracing::debug!(lease = %name, error = %e, "lease not released");
            }
        });
        Leadership { inner }
    }

    /// Whether this node holds the lease now.
    pub fn is_held(&self) -> bool {
        matches!(*self.inner.until.lock(), Some(t) if Instant::now() < t)
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Stops renewing and releases the lease.
    pub fn release(&self) {
        *self.inner.until.lock() = None;
        let _ = self.inner.stop.send(true);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{create_database, drop_database, Database, Location, Options};

    /// Leases on `db`: taking, renewing, refusing another holder, listing live holders by
    /// prefix, and releasing.
    async fn leases_on(db: &Database) {
        let ttl = Duration::from_secs(60);
        assert!(db.try_lease("node:a", "a", ttl).await.unwrap());
        assert!(db.try_lease("node:a", "a", ttl).await.unwrap(), "renewed");
        assert!(
            !db.try_lease("node:a", "b", ttl).await.unwrap(),
            "held by a"
        );
        assert!(db.try_lease("node:b", "b", ttl).await.unwrap());
        assert!(db.try_lease("host:h1", "b", ttl).await.unwrap());
        assert_eq!(
            db.lease_holder("node:a").await.unwrap().as_deref(),
            Some("a")
        );
        let mut nodes = db.live_holders("node:").await.unwrap();
        nodes.sort();
        assert_eq!(nodes, ["a", "b"]);
        assert_eq!(db.live_holders("host:").await.unwrap(), ["b"]);
        db.release_lease("node:a", "a").await.unwrap();
        assert_eq!(db.live_holders("node:").await.unwrap(), ["b"]);
        assert_eq!(db.lease_holder("node:a").await.unwrap(), None);
        assert!(
            db.try_lease("node:a", "b", ttl).await.unwrap(),
            "free again"
        );
        // An expired lease is nobody's.
        assert!(db
            .try_lease("short", "a", Duration::from_millis(1))
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(db.lease_holder("short").await.unwrap(), None);
        assert!(db.try_lease("short", "b", ttl).await.unwrap());
    }

    #[tokio::test]
    async fn leases_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("l.db"))
            .await
            .unwrap();
        leases_on(&db).await;
    }

    #[tokio::test]
    async fn leases_postgres() {
        let Some(base) = std::env::var("STRATUS_TEST_PG")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            eprintln!("skipped: STRATUS_TEST_PG is not set");
            return;
        };
        let name = format!("stratus_lease_{}", std::process::id());
        let url = create_database(&base, &name).await.unwrap();
        let db = Database::open(Location::Url(&url), &Options::default())
            .await
            .unwrap();
        leases_on(&db).await;
        db.close().await;
        drop_database(&base, &name).await.unwrap();
    }
}
