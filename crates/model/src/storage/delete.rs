//! Deleting objects and reclaiming blobs nobody references.
//!
//! The object record goes first, and in the same transaction the blob is marked `deleting` if no
//! record references it any more; only then are the bytes removed and the index dropped. A crash
//! at any point leaves either a referenced live blob (untouched) or a `deleting`/`pending` blob
//! that no record references, which [`Storage::recover`] (its own node's) or
//! [`Storage::collect_garbage`] (a gone node's) finishes removing.
//!
//! Every blob state change is a compare-and-set on the row (`UPDATE … WHERE state = <expected>`
//! with the rows affected checked), and a `pending` or `deleting` row names the node doing the
//! work. The transitions:
//!
//! - absent -> `pending` (upload claims: `INSERT … ON CONFLICT DO NOTHING`), or `pending`/
//!   `deleting`/`quarantined` -> `pending` when the row's node is this one, none, or gone;
//! - `pending` (ours) -> `live`: in the transaction that inserts the object, after the bytes are
//!   durable;
//! - `live` -> `live` (a record of identical content): in the transaction that inserts the
//!   object; no rows affected means a delete marked the blob, and the upload starts over;
//! - `live` -> `deleting` (ours): in the transaction that deletes the last record, only if no
//!   record references the blob;
//! - `deleting` (ours) -> gone: after the bytes are removed.
//!
//! Publishing and marking take the blob's row lock first (`Database::lock_blob`; PostgreSQL
//! `FOR UPDATE`, SQLite's single writer), so each sees what the other committed. Upload through
//! node A racing a delete through node B of the same content:
//!
//! 1. B marks first (`live` -> `deleting`), then A publishes: A's `live` -> `live` affects no row,
//!    A rolls back and looks again: the row is B's and `deleting`, so A waits until B has removed
//!    bytes and row, then claims the absent row and writes the bytes again.
//! 2. A publishes first (object inserted, blob `live`), then B marks: B's `NOT EXISTS` sees A's
//!    object, no row is affected, and B leaves the blob (which gained an object) alone.
//! 3. A claimed the blob (`pending`, bytes being written) when B deletes the last other record:
//!    B's `live` -> `deleting` affects no row (the row is `pending`), so B removes nothing; A
//!    publishes `pending` -> `live`.
//! 4. B is between marking and removing when A looks: A never takes over a live node's
//!    `deleting` row (B may be deleting the bytes A would rely on); it waits (up to
//!    [`super::BUSY_WAIT`]) until the row is gone. A `deleting` row of this node can be taken
//!    over because the in-process blob lock keeps this node's removal and commit apart, and
//!    the removal re-checks the row (`deleting` and ours) under that lock before touching bytes.
//!
//! If a node dies mid-way, its `pending`/`deleting` rows stay until its lease expires; then the
//! `storage-gc` holder takes them over (compare-and-set on state and node) and finishes them.

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
            self.db.lock_blob(&mut tx, &backend, cid).await?;
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
            // Compare-and-set: live and unreferenced -> deleting (ours).
            let marked = sqlx::query(
                "UPDATE blobs SET state = 'deleting', node = $3 WHERE backend = $1 AND cid = $2 \
                 AND state = 'live' \
                 AND NOT EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND cid = $2)",
            )
            .bind(&backend)
            .bind(cid)
            .bind(&self.node)
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

    /// Marks a blob `deleting` and removes it, unless something references it or another
    /// node's work is in flight on it.
    pub(super) async fn collect_if_unreferenced(&self, backend: &str, cid: &str) -> Result<()> {
        let marked = {
            let _guard = self.lock_blob(backend, cid).await;
            let mut tx = self.db.w().begin().await?;
            self.db.lock_blob(&mut tx, backend, cid).await?;
            let n = sqlx::query(
                "UPDATE blobs SET state = 'deleting', node = $3 WHERE backend = $1 AND cid = $2 \
                 AND (state = 'live' OR (state IN ('pending', 'deleting') AND node = $3)) \
                 AND NOT EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND cid = $2)",
            )
            .bind(backend)
            .bind(cid)
            .bind(&self.node)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            n
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

    /// Removes the bytes and index of a blob this node marked `deleting`.
    async fn remove_blob(&self, backend: &str, cid: &str) -> Result<()> {
        let _guard = self.lock_blob(backend, cid).await;
        match self.blob_state(backend, cid).await? {
            Some((state, Some(node))) if state == "deleting" && node == self.node => {}
            // Re-uploaded in the meantime, or not ours: keep it.
            _ => return Ok(()),
        }
        // Never remove bytes that a record references, whatever the state says.
        let referenced = sqlx::query(
            "UPDATE blobs SET state = 'live', node = NULL WHERE backend = $1 AND cid = $2 \
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
        // Compare-and-set: deleting (ours) -> gone.
        let mut tx = self.db.w().begin().await?;
        let gone = sqlx::query(
            "DELETE FROM blobs WHERE backend = $1 AND cid = $2 AND state = 'deleting' AND node = $3",
        )
        .bind(backend)
        .bind(cid)
        .bind(&self.node)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if gone == 0 {
            tracing::warn!(%cid, "a blob being removed was taken over; its row is kept");
            return Ok(());
        }
        sqlx::query("DELETE FROM blocks WHERE backend = $1 AND root = $2")
            .bind(backend)
            .bind(cid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("stratus_storage_blobs_reclaimed_total").increment(1);
        Ok(())
    }

    /// Retries removing the blobs this node marked `deleting` whose removal failed (a store that
    /// was unavailable): until removed, uploads of the same content on other nodes wait for them.
    /// Returns how many were tried.
    pub async fn retry_own_deletes(&self) -> Result<u64> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT backend, cid FROM blobs WHERE state = 'deleting' AND node = $1 LIMIT 1000",
        )
        .bind(&self.node)
        .fetch_all(self.db.r())
        .await?;
        let mut n = 0;
        for (backend, cid) in rows {
            // Re-checked under the blob's lock; a removal in progress makes this one a no-op.
            self.remove_blob(&backend, &cid).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Finishes commits and deletes that were interrupted: this node's own (`gone` empty: its
    /// startup, when nothing of its own is in flight), or those of nodes not in `live` (the
    /// garbage collector). Rows from before nodes existed count as anyone's. Each row is taken
    /// over by compare-and-set on its state and node; an unreferenced one is removed, a
    /// referenced one (which the transitions never produce) is made `live` again. Returns how
    /// many rows were finished.
    pub(super) async fn finish_pending_deletes(&self, live: &[String]) -> Result<u64> {
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT backend, cid, state, node FROM blobs WHERE state IN ('pending', 'deleting')",
        )
        .fetch_all(self.db.w())
        .await?;
        let mut n = 0;
        for (backend, cid, state, node) in rows {
            let mine = match node.as_deref() {
                None => true,
                Some(o) if live.is_empty() => o == self.node,
                Some(o) => !live.iter().any(|l| l == o),
            };
            if !mine {
                continue;
            }
            {
                let _guard = self.lock_blob(&backend, &cid).await;
                let taken = sqlx::query(
                    "UPDATE blobs SET node = $1 WHERE backend = $2 AND cid = $3 AND state = $4 \
                     AND COALESCE(node, '') = $5",
                )
                .bind(&self.node)
                .bind(&backend)
                .bind(&cid)
                .bind(&state)
                .bind(node.clone().unwrap_or_default())
                .execute(self.db.w())
                .await?
                .rows_affected();
                if taken == 0 {
                    continue;
                }
                let repaired = sqlx::query(
                    "UPDATE blobs SET state = 'live', node = NULL WHERE backend = $1 AND cid = $2 \
                     AND node = $3 AND EXISTS (SELECT 1 FROM objects o WHERE o.backend = $1 AND o.cid = $2)",
                )
                .bind(&backend)
                .bind(&cid)
                .bind(&self.node)
                .execute(self.db.w())
                .await?
                .rows_affected();
                if repaired > 0 {
                    tracing::warn!(%cid, "a referenced blob was left half-deleted; kept");
                    n += 1;
                    continue;
                }
                sqlx::query(
                    "UPDATE blobs SET state = 'deleting' WHERE backend = $1 AND cid = $2 AND node = $3",
                )
                .bind(&backend)
                .bind(&cid)
                .bind(&self.node)
                .execute(self.db.w())
                .await?;
            }
            tracing::info!(%cid, owner = ?node, "finishing an interrupted commit or delete");
            self.remove_blob(&backend, &cid).await?;
            n += 1;
        }
        Ok(n)
    }
}
