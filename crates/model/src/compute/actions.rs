//! Actions for another host: a node that is asked to act on an instance of another compute host
//! (start, stop, restart, delete, a mapping created or deleted) records the action in
//! `instance_actions`; the owning host's node polls for its host's pending actions and performs
//! them in the order they were recorded, marking each done (with the error, if it failed).
//! Each action is taken by compare-and-set before it is performed, and a waiter that gives up
//! withdraws its action the same way, so a refused request never takes effect later; an action
//! whose performer died mid-way is marked failed when that node starts again, not repeated.
//!
//! Lifecycle actions are answered at once by the node that recorded them (the status moved by
//! compare-and-set in the shared store, as on the direct path); mapping changes wait for the
//! owning node, which alone can open and close its host's public ports.

use std::time::Duration;

use super::mappings::MappingRequest;
use super::ops::Op;
use super::records::Instance;
use super::Compute;
use crate::{Error, Result};

/// How long a mapping change waits for the owning host's node.
const REMOTE_WAIT: Duration = Duration::from_secs(30);

/// How many pending actions one round takes.
const BATCH: i64 = 50;

/// `error` of an action its host's node has taken and is performing (`done_at`: when taken).
const RUNNING: &str = "running";

/// `error` of an action its waiter withdrew before the host took it (never performed).
const WITHDRAWN: &str = "unavailable\tthe instance's host did not answer in time\twithdrawn";

fn encode_error(e: &Error) -> String {
    match e {
        Error::NotFound(m) => format!("not_found\t{m}"),
        Error::Conflict(m) => format!("conflict\t{m}"),
        Error::Unavailable { what, cause } => format!("unavailable\t{what}\t{cause}"),
        e => format!("internal\t{e}"),
    }
}

fn decode_error(s: &str) -> Error {
    let mut parts = s.splitn(3, '\t');
    let kind = parts.next().unwrap_or_default();
    let first = parts.next().unwrap_or_default().to_string();
    match kind {
        "not_found" => Error::NotFound(first),
        "conflict" => Error::Conflict(first),
        "unavailable" => Error::unavailable(first, parts.next().unwrap_or_default()),
        _ => Error::Internal(format!("on the instance's host: {first}")),
    }
}

impl Compute {
    /// Records `action` for the node of the instance's host; its id.
    pub(super) async fn record_action(
        &self,
        i: &Instance,
        action: &str,
        payload: &str,
    ) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO instance_actions (instance_id, host, action, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&i.id)
        .bind(&i.host)
        .bind(action)
        .bind(payload)
        .bind(self.inner.clock.now_ms())
        .fetch_one(self.inner.db.w())
        .await?;
        tracing::info!(instance = %i.id, host = %i.host, action, "action recorded for the instance's host");
        Ok(id)
    }

    /// Records `action` and waits until the instance's host has performed it.
    pub(super) async fn perform_remote(
        &self,
        i: &Instance,
        action: &str,
        payload: &str,
    ) -> Result<()> {
        // A host that no live node serves would never answer: say so now, and queue nothing.
        let lease = format!("{}{}", super::HOST_LEASE_PREFIX, i.host);
        if self.inner.db.lease_holder(&lease).await?.is_none() {
            return Err(Error::unavailable(
                "the instance's host is offline",
                format!("no live node holds {lease}"),
            ));
        }
        let id = self.record_action(i, action, payload).await?;
        let mut deadline = tokio::time::Instant::now() + REMOTE_WAIT;
        let mut running_late = false;
        loop {
            let row: Option<(Option<i64>, Option<String>)> =
                sqlx::query_as("SELECT done_at, error FROM instance_actions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.inner.db.r())
                    .await?;
            match row {
                Some((Some(_), None)) => return Ok(()),
                Some((Some(_), Some(e))) if e != RUNNING => return Err(decode_error(&e)),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                if running_late {
                    return Err(Error::unavailable(
                        "the instance's host did not answer in time",
                        format!("action {id} ({action}) for host {} still running", i.host),
                    ));
                }
                // Withdrawn unless the host has taken it: a refused request never takes effect
                // later. Taken: it is being performed; wait for it once more.
                if self.settle_pending(id, WITHDRAWN).await? {
                    return Err(Error::unavailable(
                        "the instance's host did not answer in time",
                        format!("action {id} ({action}) for host {} withdrawn", i.host),
                    ));
                }
                running_late = true;
                deadline = tokio::time::Instant::now() + REMOTE_WAIT;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Moves a pending action out of the queue with `error` ([`RUNNING`]: taken by its host's
    /// node; [`WITHDRAWN`]: given up by its waiter), if it is still pending (compare-and-set:
    /// exactly one of the two wins).
    async fn settle_pending(&self, id: i64, error: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE instance_actions SET done_at = $1, error = $2 \
             WHERE id = $3 AND done_at IS NULL",
        )
        .bind(self.inner.clock.now_ms())
        .bind(error)
        .bind(id)
        .execute(self.inner.db.w())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Marks this host's actions that a previous process took but never finished (it died while
    /// performing them) as failed: they are not performed twice.
    pub async fn finish_interrupted_actions(&self) -> Result<u64> {
        let n =
            sqlx::query("UPDATE instance_actions SET error = $1 WHERE host = $2 AND error = $3")
                .bind("internal\tinterrupted by a restart of the host's node")
                .bind(&self.inner.host)
                .bind(RUNNING)
                .execute(self.inner.db.w())
                .await?
                .rows_affected();
        if n > 0 {
            tracing::warn!(actions = n, "recorded actions interrupted by a restart");
        }
        Ok(n)
    }

    /// Performs this host's pending actions, oldest first; how many were performed.
    pub async fn perform_pending_actions(&self) -> Result<usize> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, instance_id, action, payload FROM instance_actions \
             WHERE host = $1 AND done_at IS NULL ORDER BY id LIMIT $2",
        )
        .bind(&self.inner.host)
        .bind(BATCH)
        .fetch_all(self.inner.db.w())
        .await?;
        let n = rows.len();
        for (id, instance_id, action, payload) in rows {
            // Taken (compare-and-set) before it is performed: its waiter may have withdrawn it.
            if !self.settle_pending(id, RUNNING).await? {
                continue;
            }
            let r = self.perform_action(&instance_id, &action, &payload).await;
            if let Err(e) = &r {
                tracing::warn!(action_id = id, instance = %instance_id, %action, error = %e, "recorded action failed");
            }
            sqlx::query("UPDATE instance_actions SET done_at = $1, error = $2 WHERE id = $3")
                .bind(self.inner.clock.now_ms())
                .bind(r.err().map(|e| encode_error(&e)))
                .bind(id)
                .execute(self.inner.db.w())
                .await?;
        }
        Ok(n)
    }

    async fn perform_action(&self, instance_id: &str, action: &str, payload: &str) -> Result<()> {
        let op = match action {
            "start" => Op::Start,
            "stop" => Op::Stop,
            "restart" => Op::Restart,
            "delete" => Op::Delete,
            "create_mapping" | "delete_mapping" => {
                let v: serde_json::Value =
                    serde_json::from_str(payload).map_err(Error::internal)?;
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                let account_id = s("account_id");
                // Both mapping actions are idempotent: the mapping may have been created or
                // deleted through its own host's node since the action was recorded.
                let id = s("id");
                let exists = match self.mapping(&account_id, &id).await {
                    Ok(_) => true,
                    Err(Error::NotFound(_)) => false,
                    Err(e) => return Err(e),
                };
                if action == "delete_mapping" {
                    // Checked to exist when recorded: gone now means deleted already.
                    if !exists {
                        return Ok(());
                    }
                    return self.delete_mapping_local(&account_id, &id).await;
                }
                if exists {
                    return Ok(());
                }
                let req = MappingRequest {
                    name: s("name"),
                    protocol: s("protocol"),
                    computer_port: v["computer_port"].as_i64().unwrap_or_default(),
                };
                // Checked again here: the instance may have changed since it was recorded.
                self.create_mapping_local(&account_id, instance_id, req, Some(id))
                    .await?;
                return Ok(());
            }
            other => return Err(Error::Internal(format!("unknown action {other:?}"))),
        };
        self.run_op(instance_id, op).await
    }

    /// Performs this host's recorded actions every `every` until `shutdown`.
    pub async fn run_actions(
        &self,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if let Err(e) = self.finish_interrupted_actions().await {
            tracing::warn!(error = %e, "cannot mark interrupted actions");
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !self.runtime_available().await {
                        continue;
                    }
                    if let Err(e) = self.perform_pending_actions().await {
                        tracing::warn!(error = %e, "cannot perform recorded actions");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
