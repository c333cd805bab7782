//! Start, stop, restart, delete: a compare-and-set of the status at once, the runtime work in a
//! background task under the instance lock, then the final status. For an instance of another
//! compute host the runtime work is recorded for that host's node (see `actions.rs`).

use stratus_compute::InstanceState;

use super::reasons::public_reason;
use super::records::{Instance, Status};
use super::Compute;
use crate::{Error, Result};

/// What a lifecycle task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Start,
    Stop,
    Restart,
    Delete,
}

fn refused(i: &Instance, what: &str) -> Error {
    let why = match i.status {
        Status::Expired => "it has expired".to_string(),
        Status::Failed => format!("it failed to start ({})", i.status_reason),
        Status::Creating => "it is still being created".to_string(),
        s => format!("it is {}", s.name()),
    };
    Error::Conflict(format!("cannot {what} instance {}: {why}", i.id))
}

/// The refusal to start an instance some of whose services have no container.
fn incomplete(i: &Instance, what: &str, missing: &[String]) -> Error {
    Error::Conflict(format!(
        "cannot {what} instance {}: the containers of service(s) {} are missing (it was not \
         created completely, or they were removed); delete it and create it again",
        i.id,
        missing.join(", ")
    ))
}

impl Compute {
    /// Refuses to start an instance that the runtime finds incomplete.
    async fn check_complete(&self, i: &Instance, what: &str) -> Result<()> {
        let rt = self.runtime().await?;
        match rt.state(&i.id).await {
            Ok(InstanceState::Incomplete { missing }) => Err(incomplete(i, what, &missing)),
            _ => Ok(()),
        }
    }

    /// Starts a closed instance. Starting a running (or starting) instance changes nothing.
    /// An instance some of whose services have no container is refused (409, naming them).
    pub async fn start(&self, account_id: &str, id: &str) -> Result<Instance> {
        let i = self.instance(account_id, id).await?;
        match i.status {
            Status::Running | Status::Starting | Status::Restarting => return Ok(i),
            Status::Closed => {}
            _ => return Err(refused(&i, "start")),
        }
        if self.is_local(&i) {
            self.check_complete(&i, "start").await?;
        }
        if !self
            .transition(id, &[Status::Closed], Status::Starting, "")
            .await?
        {
            return Err(refused(&self.instance(account_id, id).await?, "start"));
        }
        self.dispatch(&i, Op::Start).await?;
        self.instance(account_id, id).await
    }

    /// Stops a running instance. Stopping a closed (or closing) instance changes nothing.
    pub async fn stop(&self, account_id: &str, id: &str) -> Result<Instance> {
        let i = self.instance(account_id, id).await?;
        match i.status {
            Status::Closed | Status::Closing => return Ok(i),
            Status::Running | Status::Starting | Status::Restarting => {}
            _ => return Err(refused(&i, "stop")),
        }
        if !self
            .transition(
                id,
                &[Status::Running, Status::Starting, Status::Restarting],
                Status::Closing,
                "",
            )
            .await?
        {
            return Err(refused(&self.instance(account_id, id).await?, "stop"));
        }
        self.dispatch(&i, Op::Stop).await?;
        self.instance(account_id, id).await
    }

    /// Restarts a running or closed instance.
    pub async fn restart(&self, account_id: &str, id: &str) -> Result<Instance> {
        let i = self.instance(account_id, id).await?;
        if !matches!(i.status, Status::Running | Status::Closed) {
            return Err(refused(&i, "restart"));
        }
        if self.is_local(&i) {
            self.check_complete(&i, "restart").await?;
        }
        if !self
            .transition(
                id,
                &[Status::Running, Status::Closed],
                Status::Restarting,
                "",
            )
            .await?
        {
            return Err(refused(&self.instance(account_id, id).await?, "restart"));
        }
        self.dispatch(&i, Op::Restart).await?;
        self.instance(account_id, id).await
    }

    /// Deletes an instance: closes its mappings (freeing the ports), removes its containers,
    /// network and volumes. Deleting a deleted instance changes nothing.
    pub async fn delete(&self, account_id: &str, id: &str) -> Result<Instance> {
        let i = self.instance(account_id, id).await?;
        if matches!(i.status, Status::Deleted | Status::Deleting) {
            return Ok(i);
        }
        let from = [
            Status::Creating,
            Status::Running,
            Status::Starting,
            Status::Closing,
            Status::Closed,
            Status::Restarting,
            Status::Expired,
            Status::Recreating,
            Status::Failed,
        ];
        {
            // Under the state lock: no mapping change can slip in between the new status and
            // the closing of the listeners.
            let lock = self.state_lock(id);
            let _state = lock.lock().await;
            if !self
                .transition_held(id, &from, Status::Deleting, "")
                .await?
            {
                drop(_state);
                return self.instance(account_id, id).await;
            }
            stratus_compute::crashpoint::reached("compute.delete.after_mark");
            // The public ports stop answering at once (on another host: when its node acts).
            if self.is_local(&i) {
                let maps = self.mappings_of(id).await?;
                self.close_listeners(&maps).await;
            }
        }
        self.dispatch(&i, Op::Delete).await?;
        self.instance(account_id, id).await
    }

    /// Runs the runtime work of `op` here, or records it for the instance's host.
    async fn dispatch(&self, i: &Instance, op: Op) -> Result<()> {
        if self.is_local(i) {
            self.spawn_op(&i.id, op);
            return Ok(());
        }
        let action = match op {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Delete => "delete",
        };
        self.record_action(i, action, "").await?;
        Ok(())
    }

    fn spawn_op(&self, id: &str, op: Op) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.run_op(&id, op).await {
                tracing::error!(instance = %id, ?op, error = %e, "instance operation failed");
            }
        });
    }

    pub(super) async fn run_op(&self, id: &str, op: Op) -> Result<()> {
        let lock = self.lock_of(id);
        let _g = lock.lock().await;
        let rt = self.runtime().await?;
        match op {
            Op::Start => {
                let r = rt.start(id).await;
                self.settle(id, Status::Starting, r.map_err(|e| public_reason(id, &e)))
                    .await
            }
            Op::Restart => {
                let r = rt.restart(id).await;
                self.settle(id, Status::Restarting, r.map_err(|e| public_reason(id, &e)))
                    .await
            }
            Op::Stop => {
                let reason = match rt.stop(id).await {
                    Ok(()) => String::new(),
                    Err(e) => format!("stop: {}", public_reason(id, &e)),
                };
                self.transition(id, &[Status::Closing], Status::Closed, &reason)
                    .await?;
                Ok(())
            }
            Op::Delete => self.finish_delete(id, &rt).await,
        }
    }

    /// After a start or restart: Running, or Closed with the reason.
    async fn settle(
        &self,
        id: &str,
        from: Status,
        r: std::result::Result<(), String>,
    ) -> Result<()> {
        match r {
            Ok(()) => {
                self.transition(id, &[from], Status::Running, "").await?;
            }
            Err(reason) => {
                tracing::warn!(instance = %id, %reason, "instance did not start");
                self.transition(id, &[from], Status::Closed, &reason)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes everything of a `Deleting` instance and marks it `Deleted`. Call it with the
    /// instance's task lock held.
    pub(super) async fn finish_delete(
        &self,
        id: &str,
        rt: &std::sync::Arc<dyn stratus_compute::Runtime>,
    ) -> Result<()> {
        {
            let lock = self.state_lock(id);
            let _state = lock.lock().await;
            let maps = self.mappings_of(id).await?;
            self.close_listeners(&maps).await;
        }
        if let Err(e) = rt.remove(id).await {
            // Leave it `Deleting`: the sweeper tries again soon.
            tracing::warn!(instance = %id, error = %e, "remove failed; will retry");
            self.inner.retry_delete.insert(
                id.to_string(),
                tokio::time::Instant::now() + std::time::Duration::from_secs(5),
            );
            return Ok(());
        }
        {
            let lock = self.state_lock(id);
            let _state = lock.lock().await;
            let mut tx = self.inner.db.w().begin().await?;
            let maps = self.delete_mapping_rows(&mut tx, id).await?;
            tx.commit().await?;
            self.close_listeners(&maps).await;
            self.transition_held(id, &[Status::Deleting], Status::Deleted, "")
                .await?;
            self.inner.live.remove(id);
        }
        self.forget_locks(id);
        Ok(())
    }
}
