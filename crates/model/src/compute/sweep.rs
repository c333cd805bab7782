//! Keeping records and runtime in step: after a restart of stratus (re-attach), at expiry, and
//! whenever a transitional status outlives its deadline (a lost task, a crashed process).

use std::time::Duration;

use stratus_compute::InstanceState;

use super::records::{self, Instance, Status};
use super::Compute;
use crate::Result;

impl Compute {
    /// After a start of stratus: every instance the records know is matched with the runtime,
    /// its mappings listen again, transitional statuses are resolved; runtime instances the
    /// records do not know (or that were deleted) are removed.
    pub async fn reconcile(&self) -> Result<()> {
        let rt = self.runtime().await?;
        let rows: Vec<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE status <> 7",
            records::INSTANCE_COLUMNS
        ))
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
        match rt.instances().await {
            Ok(ids) => {
                for id in ids {
                    if !known
                        .iter()
                        .any(|i| i.id == id && i.status != Status::Failed)
                    {
                        tracing::warn!(instance = %id, "removing runtime objects no record owns");
                        let _ = rt.remove(&id).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list runtime instances"),
        }
        Ok(())
    }

    async fn reattach(
        &self,
        i: &Instance,
        rt: &std::sync::Arc<dyn stratus_compute::Runtime>,
    ) -> Result<()> {
        let state = rt.recover(&i.id).await.unwrap_or(InstanceState::Missing);
        let status = match (i.status, &state) {
            (Status::Deleting, _) => {
                return self.finish_delete(&i.id, rt).await;
            }
            (Status::Creating, InstanceState::Missing) => {
                self.fail_and_refund(&i.id, "stratus stopped before the instance was created")
                    .await;
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
            (_, InstanceState::Stopped | InstanceState::Failed { .. }) => Status::Closed,
        };
        if status != i.status {
            let reason = match &state {
                InstanceState::Failed { reason } => reason.clone(),
                _ => String::new(),
            };
            self.mark(i, status, &reason).await?;
        }
        // Mappings listen again (an expired or failed instance has none left).
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
            "SELECT id FROM instances WHERE expires_at <= $1 AND status IN (0, 1, 2, 3, 4, 5, 9)",
        )
        .bind(now)
        .fetch_all(self.inner.db.r())
        .await?;
        for (id,) in due {
            self.expire(&id).await?;
        }
        let stuck: Vec<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE deadline IS NOT NULL AND deadline <= $1 AND status IN (0, 2, 3, 5, 6, 9)",
            records::INSTANCE_COLUMNS
        ))
        .bind(now)
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
                    let _ = rt.remove(&i.id).await;
                    self.fail_and_refund(&i.id, "the instance took too long to start")
                        .await;
                }
                _ => self.reattach(&i, &rt).await?,
            }
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
        if !self
            .transition(
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
