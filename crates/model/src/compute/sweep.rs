//! Keeping records and runtime in step: after a restart of stratus (re-attach), at expiry, and
//! whenever a transitional status outlives its deadline (a lost task, a crashed process).
//!
//! After a crash (reconcile, at start): an instance still `Creating` is finished when every
//! service runs, else failed, refunded and removed; a `Deleting` one is removed; then the
//! orphan sweep removes runtime objects (by owner label), resource groups and listeners that
//! no live record owns. The sweep also runs every minute and whenever a removal failed.
//!
//! Everything here is per compute host: a node reconciles, expires, resolves and sweeps only
//! the instances of its own host (`compute.host`), so nodes sharing a database never act on
//! each other's instances; nothing in it needs a cluster-wide lease.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stratus_compute::{InstanceState, Runtime};

use super::records::{self, Instance, Status};
use super::Compute;
use crate::Result;

/// Sweeps (every 2 s) between two searches for orphans.
const ORPHAN_SWEEP_EVERY: u32 = 30;

impl Compute {
    /// After a start of stratus: kernel tables of dead servers (and this server's stale ones)
    /// go, every instance the records know is matched with the runtime, its mappings listen
    /// again, transitional statuses are resolved; runtime objects no live record owns are
    /// removed.
    pub async fn reconcile(&self) -> Result<()> {
        self.inner.gateway.collect_stale().await;
        let rt = self.runtime().await?;
        // Records from before compute hosts existed belong to the node that reconciles first
        // (a deployment that grows from one node: its instances run there).
        for table in ["instances", "mappings"] {
            sqlx::query(&format!("UPDATE {table} SET host = $1 WHERE host = ''"))
                .bind(&self.inner.host)
                .execute(self.inner.db.w())
                .await?;
        }
        // Only this host's instances: another host's node keeps its own in step.
        let rows: Vec<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE status NOT IN (7, 10) AND host = $1",
            records::INSTANCE_COLUMNS
        ))
        .bind(&self.inner.host)
        .fetch_all(self.inner.db.w())
        .await?;
        let known: Vec<Instance> = rows
            .into_iter()
            .map(records::instance_from_row)
            .collect::<Result<_>>()?;
        for i in &known {
            if let Err(e) = self.reattach(i, &rt).await {
                tracing::error!(instance = %i.id, error = %e, "cannot re-attach instance");
            }
        }
        self.collect_orphans(&rt).await;
        Ok(())
    }

    /// Removes what no live record owns: runtime instances of this owner that have no record
    /// or whose record is `Deleted` or `Failed`, the resource groups of such records, and
    /// gateway listeners whose mapping is gone. Instances a task works on are left to it.
    pub(super) async fn collect_orphans(&self, rt: &Arc<dyn Runtime>) {
        // Listed before the records are read: whatever a boot creates has its record already.
        let labelled: BTreeSet<String> = match rt.instances().await {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list runtime instances");
                return;
            }
        };
        let groups: BTreeSet<String> = rt
            .resource_groups()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        for id in labelled.union(&groups) {
            let status: Option<(i64, String)> =
                match sqlx::query_as("SELECT status, host FROM instances WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.inner.db.r())
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "orphan sweep: cannot read the records");
                        return;
                    }
                };
            // Another host's record: its node decides (hosts sharing an engine never touch
            // each other's objects).
            if status.as_ref().is_some_and(|(_, h)| *h != self.inner.host) {
                continue;
            }
            let orphan = match status.as_ref().and_then(|(s, _)| Status::from_i64(*s)) {
                // Resource groups carry no owner: only this server's records can claim them.
                None => labelled.contains(id),
                Some(s) => matches!(s, Status::Deleted | Status::Failed),
            };
            if !orphan {
                continue;
            }
            let lock = self.lock_of(id);
            let Ok(_task) = lock.try_lock() else {
                continue;
            };
            tracing::warn!(instance = %id, "removing runtime objects no live record owns");
            if let Err(e) = rt.remove(id).await {
                tracing::warn!(instance = %id, error = %e, "cannot remove orphaned runtime objects yet");
            }
            drop(_task);
            if status.is_none() {
                self.inner.locks.remove(id);
            }
        }
        self.close_orphan_listeners().await;
        rt.tidy().await;
    }

    /// Closes gateway listeners whose mapping record is gone (the port goes back to the pool),
    /// and removes kernel routes that no open mapping has.
    async fn close_orphan_listeners(&self) {
        // Under the port lock every listener being opened has its record committed.
        let _ports = self.inner.ports.lock().await;
        for mapping_id in self.inner.gateway.mappings() {
            let row: std::result::Result<Option<(String,)>, _> =
                sqlx::query_as("SELECT id FROM mappings WHERE id = $1")
                    .bind(&mapping_id)
                    .fetch_optional(self.inner.db.w())
                    .await;
            if let Ok(None) = row {
                tracing::warn!(mapping = %mapping_id, "closing a listener no mapping owns");
                self.inner.gateway.close(&mapping_id).await;
            }
        }
        // Kernel routes of ports no open mapping has (still under the port lock).
        self.inner.gateway.tidy().await;
    }

    async fn reattach(&self, i: &Instance, rt: &Arc<dyn Runtime>) -> Result<()> {
        let state = rt.recover(&i.id).await.unwrap_or(InstanceState::Missing);
        let status = match (i.status, &state) {
            (Status::Deleting, _) => {
                let lock = self.lock_of(&i.id);
                let Ok(_task) = lock.try_lock() else {
                    return Ok(());
                };
                return self.finish_delete(&i.id, rt).await;
            }
            // Everything was created and runs: only the record was not written.
            (Status::Creating, InstanceState::Running) => {
                self.mark(i, Status::Running, "").await?;
                Status::Running
            }
            (Status::Creating, _) => {
                let lock = self.lock_of(&i.id);
                let Ok(_task) = lock.try_lock() else {
                    return Ok(());
                };
                self.fail_and_refund(&i.id, "stratus stopped before the instance was created")
                    .await;
                self.remove_failed(rt, &i.id).await;
                return Ok(());
            }
            (Status::Expired | Status::Failed, _) => i.status,
            (_, InstanceState::Running | InstanceState::Partial { .. }) => Status::Running,
            (_, InstanceState::Missing) => {
                self.mark(
                    i,
                    Status::Closed,
                    "the instance's containers are gone; delete it",
                )
                .await?;
                Status::Closed
            }
            (_, InstanceState::Incomplete { missing }) => {
                let reason = format!(
                    "the containers of service(s) {} are missing; delete it",
                    missing.join(", ")
                );
                if i.status != Status::Closed || i.status_reason != reason {
                    self.mark(i, Status::Closed, &reason).await?;
                }
                Status::Closed
            }
            (_, InstanceState::Stopped | InstanceState::Failed { .. }) => Status::Closed,
        };
        if status != i.status && !matches!(state, InstanceState::Incomplete { .. }) {
            let reason = match &state {
                InstanceState::Failed { reason } => reason.clone(),
                _ => String::new(),
            };
            self.mark(i, status, &reason).await?;
        }
        // Mappings listen again (an expired or failed instance has none left), unless the
        // instance is being deleted meanwhile: checked under its state lock.
        let lock = self.state_lock(&i.id);
        let _state = lock.lock().await;
        let now = self.instance_any(&i.id).await?;
        if now.is_none_or(|n| n.status == Status::Deleting || n.status.is_final()) {
            return Ok(());
        }
        let maps = self.mappings_of(&i.id).await?;
        if !maps.is_empty() {
            self.inner.live.insert(i.id.clone(), status);
            let _ports = self.inner.ports.lock().await;
            for m in maps {
                if self.inner.gateway.is_open(&m.id) {
                    continue;
                }
                if let Err(e) = self
                    .inner
                    .gateway
                    .open_in(
                        &i.id,
                        &m.id,
                        m.server_port,
                        self.resolver(rt.clone(), &i.id, m.computer_port),
                    )
                    .await
                {
                    tracing::error!(mapping = %m.id, port = m.server_port, error = %e, "cannot listen again");
                }
            }
        }
        Ok(())
    }

    /// Sets a status whatever it was (reconciliation only).
    async fn mark(&self, i: &Instance, to: Status, reason: &str) -> Result<()> {
        self.transition(&i.id, &[i.status], to, reason).await?;
        Ok(())
    }

    /// One round of housekeeping: expire what is due, resolve what is stuck.
    pub async fn sweep(&self) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM instances WHERE expires_at <= $1 AND status IN (0, 1, 2, 3, 4, 5, 9) \
             AND host = $2",
        )
        .bind(now)
        .bind(&self.inner.host)
        .fetch_all(self.inner.db.r())
        .await?;
        for (id,) in due {
            self.expire(&id).await?;
        }
        self.retry_deletes().await?;
        if self
            .inner
            .sweeps
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(ORPHAN_SWEEP_EVERY)
        {
            if let Ok(rt) = self.runtime().await {
                self.collect_orphans(&rt).await;
            }
        }
        let stuck: Vec<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE deadline IS NOT NULL AND deadline <= $1 \
             AND status IN (0, 2, 3, 5, 6, 9) AND host = $2",
            records::INSTANCE_COLUMNS
        ))
        .bind(now)
        .bind(&self.inner.host)
        .fetch_all(self.inner.db.r())
        .await?;
        let grace = (self.inner.cfg.transition_timeout_secs as i64) * 1000;
        for row in stuck {
            let i = records::instance_from_row(row)?;
            let lock = self.lock_of(&i.id);
            let guard = lock.try_lock();
            if guard.is_err() {
                // A task still works on it. Give it one more timeout, then act anyway: every
                // status change is a compare-and-set, so the late task cannot undo this.
                let (deadline,): (Option<i64>,) =
                    sqlx::query_as("SELECT deadline FROM instances WHERE id = $1")
                        .bind(&i.id)
                        .fetch_one(self.inner.db.r())
                        .await?;
                if deadline.is_some_and(|d| now < d + grace) {
                    continue;
                }
                tracing::error!(instance = %i.id, status = i.status.name(), "a task hangs; resolving without it");
            } else {
                tracing::warn!(instance = %i.id, status = i.status.name(), "transition took too long; reconciling");
            }
            let rt = self.runtime().await?;
            match i.status {
                Status::Creating => {
                    self.fail_and_refund(&i.id, "the instance took too long to start")
                        .await;
                    self.remove_failed(&rt, &i.id).await;
                }
                // With the task lock held (or a task hanging): finish it here.
                Status::Deleting => self.finish_delete(&i.id, &rt).await?,
                _ => self.reattach(&i, &rt).await?,
            }
        }
        Ok(())
    }

    /// Finishes the deletes whose removal failed (an engine still releasing a container, a
    /// crash mid-delete), a few seconds after the last attempt, without waiting for the
    /// transition deadline. Instances a task works on are left to it.
    async fn retry_deletes(&self) -> Result<()> {
        let deleting: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM instances WHERE status = 6 AND host = $1")
                .bind(&self.inner.host)
                .fetch_all(self.inner.db.r())
                .await?;
        if deleting.is_empty() {
            return Ok(());
        }
        let Ok(rt) = self.runtime().await else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        for (id,) in deleting {
            if self.inner.retry_delete.get(&id).is_some_and(|at| *at > now) {
                continue;
            }
            let lock = self.lock_of(&id);
            let Ok(_task) = lock.try_lock() else {
                continue;
            };
            self.finish_delete(&id, &rt).await?;
        }
        Ok(())
    }

    /// Stops an instance whose time is over, closes its mappings, marks it `Expired`.
    async fn expire(&self, id: &str) -> Result<()> {
        let lock = self.lock_of(id);
        let _g = lock.lock().await;
        let from = [
            Status::Creating,
            Status::Running,
            Status::Starting,
            Status::Closing,
            Status::Closed,
            Status::Restarting,
            Status::Recreating,
        ];
        {
            let state = self.state_lock(id);
            let _state = state.lock().await;
            if !self
                .transition_held(
                    id,
                    &from,
                    Status::Expired,
                    "the instance's duration is over",
                )
                .await?
            {
                return Ok(());
            }
            let mut tx = self.inner.db.w().begin().await?;
            let maps = self.delete_mapping_rows(&mut tx, id).await?;
            tx.commit().await?;
            self.close_listeners(&maps).await;
            self.inner.live.remove(id);
        }
        if let Ok(rt) = self.runtime().await {
            if let Err(e) = rt.stop(id).await {
                tracing::warn!(instance = %id, error = %e, "cannot stop an expired instance");
            }
        }
        metrics::counter!("stratus_instances_expired_total").increment(1);
        Ok(())
    }

    /// Runs [`Compute::sweep`] every `every` until `shutdown`.
    pub async fn run_sweeper(
        &self,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !self.runtime_available().await {
                        match self.connect_runtime().await {
                            Ok(true) => {
                                if let Err(e) = self.reconcile().await {
                                    tracing::error!(error = %e, "compute reconcile failed");
                                }
                            }
                            // Compute is switched off.
                            Ok(false) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "compute runtime still unavailable");
                                continue;
                            }
                        }
                    }
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "compute sweep failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
