//! Deleting objects and reclaiming blobs nobody references.
//!
//! The object record goes first, and in the same transaction the blob is marked `deleting` if no
//! record references it any more; only then are the bytes removed and the index dropped. A crash
//! at any point leaves either a referenced live blob (untouched) or a `deleting`/`pending` blob
//! that no record references, which [`Storage::recover`] finishes removing.

use super::Storage;
use crate::{Error, Result};

impl Storage {
    /// Removes the caller's records of `cid` (only the one called `name`, when given); reclaims
    /// the bytes when nobody references them any more.
    pub async fn delete(
        &self,
        account_id: &str,
        target: &str,
        cid: &str,
        name: Option<&str>,
    ) -> Result<()> {
        let t = self
            .target(target)
            .ok_or_else(|| Error::NotFound(format!("storage target {target}")))?;
        let backend = t.store.id().to_string();
        let unreferenced = {
            let _guard = self.lock_blob(&backend, cid).await;
            let mut tx = self.db.w().begin().await?;
            let r = sqlx::query(
                "DELETE FROM objects WHERE account_id = $1 AND target = $2 AND cid = $3 \
                 AND ($4 IS NULL OR name = $4)",
            )
            .bind(account_id)
            .bind(target)
            .bind(cid)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Err(Error::NotFound(format!("object {cid}")));
            }
            let marked = sqlx::query(
                "UPDATE blobs SET state = 'deleting' WHERE backend = $1 AND cid = $2 \
                 AND NOT EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND cid = $2)",
            )
            .bind(&backend)
            .bind(cid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            marked > 0
        };
        if unreferenced {
            self.remove_blob(&backend, cid).await?;
        }
        Ok(())
    }

    /// Marks a blob `deleting` and removes it, unless something references it.
    pub(super) async fn collect_if_unreferenced(&self, backend: &str, cid: &str) -> Result<()> {
        let marked = {
            let _guard = self.lock_blob(backend, cid).await;
            sqlx::query(
                "UPDATE blobs SET state = 'deleting' WHERE backend = $1 AND cid = $2 \
                 AND NOT EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND cid = $2)",
            )
            .bind(backend)
            .bind(cid)
            .execute(self.db.w())
            .await?
            .rows_affected()
        };
        if marked > 0 {
            self.remove_blob(backend, cid).await?;
        }
        Ok(())
    }

    /// Removes a blob an upload wrote but could not publish. When the database cannot record
    /// that (a full disk refuses the write), the bytes go anyway if no record references them:
    /// the space is needed now, and the `pending` row left behind is removed at the next start.
    pub(super) async fn discard_unpublished(&self, backend: &str, cid: &str) {
        let Err(gc) = self.collect_if_unreferenced(backend, cid).await else {
            return;
        };
        tracing::warn!(error = %gc, %cid, "cannot mark an unpublished blob; removing its bytes");
        let _guard = self.lock_blob(backend, cid).await;
        let referenced: Result<Option<(i64,)>> =
            sqlx::query_as("SELECT 1 FROM objects WHERE backend = $1 AND cid = $2 LIMIT 1")
                .bind(backend)
                .bind(cid)
                .fetch_optional(self.db.r())
                .await
                .map_err(Error::from);
        let store = self
            .targets()
            .find(|t| t.store.id() == backend)
            .map(|t| t.store.clone());
        match (referenced, store) {
            (Ok(None), Some(store)) => {
                if let Err(e) = store.delete(cid).await {
                    tracing::error!(error = %e, %cid, "cannot remove an unpublished blob");
                }
            }
            (Ok(Some(_)), _) | (_, None) => {}
            (Err(e), _) => tracing::error!(error = %e, %cid, "cannot remove an unpublished blob"),
        }
    }

    /// Removes the bytes and index of a blob marked `deleting`.
    async fn remove_blob(&self, backend: &str, cid: &str) -> Result<()> {
        let _guard = self.lock_blob(backend, cid).await;
        let state: Option<(String,)> =
            sqlx::query_as("SELECT state FROM blobs WHERE backend = $1 AND cid = $2")
                .bind(backend)
                .bind(cid)
                .fetch_optional(self.db.w())
                .await?;
        if state.map(|s| s.0).as_deref() != Some("deleting") {
            // Re-uploaded in the meantime: keep it.
            return Ok(());
        }
        // Never remove bytes that a record references, whatever the state says.
        let referenced = sqlx::query(
            "UPDATE blobs SET state = 'live' WHERE backend = $1 AND cid = $2 \
             AND EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND cid = $2)",
        )
        .bind(backend)
        .bind(cid)
        .execute(self.db.w())
        .await?
        .rows_affected();
        if referenced > 0 {
            tracing::warn!(%cid, "a referenced blob was marked for deletion; kept");
            return Ok(());
        }
        let store = self
            .targets()
            .find(|t| t.store.id() == backend)
            .map(|t| t.store.clone());
        if let Some(store) = store {
            store
                .delete(cid)
                .await
                .map_err(|e| Error::unavailable(super::STORE_UNAVAILABLE, e))?;
        }
        let mut tx = self.db.w().begin().await?;
        sqlx::query("DELETE FROM blocks WHERE backend = $1 AND root = $2")
            .bind(backend)
            .bind(cid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM blobs WHERE backend = $1 AND cid = $2 AND state = 'deleting'")
            .bind(backend)
            .bind(cid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("stratus_storage_blobs_reclaimed_total").increment(1);
        Ok(())
    }

    /// Finishes deletes and commits a crash interrupted: unreferenced `pending` and `deleting`
    /// blobs are removed. A referenced one cannot arise (records are published with the `live`
    /// state in one transaction, and marked only when unreferenced); should one exist anyway, it
    /// is made `live` again rather than removed.
    pub(super) async fn finish_pending_deletes(&self) -> Result<()> {
        let repaired = sqlx::query(
            "UPDATE blobs SET state = 'live' WHERE state IN ('pending', 'deleting') \
             AND EXISTS (SELECT 1 FROM objects o WHERE o.backend = blobs.backend AND o.cid = blobs.cid)",
        )
        .execute(self.db.w())
        .await?
        .rows_affected();
        if repaired > 0 {
            tracing::warn!(
                blobs = repaired,
                "referenced blobs were left half-deleted; kept"
            );
        }
        sqlx::query(
            "UPDATE blobs SET state = 'deleting' WHERE state IN ('pending', 'deleting') \
             AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.backend = blobs.backend AND o.cid = blobs.cid)",
        )
        .execute(self.db.w())
        .await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT backend, cid FROM blobs WHERE state = 'deleting'")
                .fetch_all(self.db.w())
                .await?;
        for (backend, cid) in rows {
            tracing::info!(%cid, "finishing an interrupted delete");
            self.remove_blob(&backend, &cid).await?;
        }
        Ok(())
    }
}
