//! Compute sandboxes: instances that run a user's docker-compose app, with public TCP ports.
//!
//! This is the orchestration over `stratus_compute` (the runtime layer): it owns the records,
//! charges the balance, allocates public ports race-free, drives the runtime in the background
//! and keeps records and runtime in step — after a restart, when an instance expires, and when a
//! transition takes too long. API calls only check and move statuses (compare-and-set in the
//! database) and return at once; the slow work happens in per-instance tasks that are
//! serialized by an instance lock, so a delete can never interleave with a boot.
//!
//! Two per-instance locks (in this process): the *task lock* serializes the runtime work of an
//! instance (boot, start, stop, delete; held for as long as the engine takes), and the *state
//! lock* is held, briefly, by every status transition and every mapping change, which check
//! the status under it: a mapping of a deleting or deleted instance is never opened again.
//! The task lock, when both are held, is taken first.
//!
//! Crashes: a server killed at any point leaves records the next start finishes (see
//! `sweep.rs`): an instance still `Creating` is finished when everything runs, else failed,
//! refunded (exactly once: the refund's ledger reference is `refund:<id>`) and removed; a
//! `Deleting` one is removed; runtime objects, resource groups, firewall elements and
//! listeners that no live record owns are removed.

mod actions;
mod mappings;
mod ops;
mod reasons;
mod records;
mod sandbox;
mod sweep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use stratus_compute::{
    Gateway, GatewayConfig, Policy, Resolver, Runtime, RuntimeError, RuntimeResolver,
};
use stratus_config::ComputeConfig;
use tokio::sync::{Mutex, Notify, RwLock};

pub use mappings::MappingRequest;
pub use records::{Instance, Mapping, Status};
pub use sandbox::SandboxRequest;

use self::reasons::runtime_unavailable;
use crate::billing::Billing;
use crate::clock::SharedClock;
use crate::db::Db;
use crate::{Error, Result};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// A "month" of `duration`: the catalog prices specs per 30 days.
pub const MONTH_MS: i64 = 30 * DAY_MS;

/// The lease a node serving a compute host holds, `host:<host>` (held while its runtime is
/// configured): mapping changes for a host nobody serves are refused at once.
pub const HOST_LEASE_PREFIX: &str = "host:";

/// The compute service.
#[derive(Clone)]
pub struct Compute {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// The compute host this node runs instances on (`compute.host`, else `compute.owner`).
    host: String,
    clock: SharedClock,
    cfg: ComputeConfig,
    billing: Billing,
    policy: Policy,
    runtime: RwLock<Option<Arc<dyn Runtime>>>,
    /// Why the runtime could not be connected last time (the sandbox firewall, the engine…).
    /// parking_lot: a panic elsewhere never poisons it.
    runtime_error: parking_lot::Mutex<Option<RuntimeError>>,
    gateway: Gateway,
    /// Serializes port allocation (the unique index is the final guard).
    ports: Mutex<()>,
    /// One lock per instance serializes its runtime operations (the task lock).
    locks: DashMap<String, Arc<Mutex<()>>>,
    /// One lock per instance for its status transitions and mapping changes (the state lock).
    states: DashMap<String, Arc<Mutex<()>>>,
    /// When the removal of a `Deleting` instance that failed may be tried again.
    retry_delete: DashMap<String, tokio::time::Instant>,
    /// Sweeps since the last search for orphans.
    sweeps: std::sync::atomic::AtomicU32,
    /// The status of every instance that has mappings, for the gateway's resolvers.
    live: DashMap<String, Status>,
    /// Woken whenever a status changes (waiters re-read).
    changed: Notify,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute").finish_non_exhaustive()
    }
}

/// Resolves a mapping's connections: nowhere unless the instance runs, else the container.
struct InstanceResolver {
    compute: std::sync::Weak<Inner>,
    instance_id: String,
    runtime: RuntimeResolver,
}

#[async_trait::async_trait]
impl Resolver for InstanceResolver {
    async fn resolve(&self) -> Option<SocketAddr> {
        let inner = self.compute.upgrade()?;
        if inner.live.get(&self.instance_id).map(|s| *s) != Some(Status::Running) {
            return None;
        }
        self.runtime.resolve().await
    }

    async fn resolve_now(&self) -> Option<SocketAddr> {
        let inner = self.compute.upgrade()?;
        if inner.live.get(&self.instance_id).map(|s| *s) != Some(Status::Running) {
            return None;
        }
        self.runtime.resolve_now().await
    }
}

impl Compute {
    /// Builds the service; the runtime is connected by [`Compute::connect_runtime`].
    pub fn new(
        db: Db,
        clock: SharedClock,
        cfg: ComputeConfig,
        billing: Billing,
    ) -> Result<Compute> {
        let gateway = Gateway::new(
            GatewayConfig::from_config(&cfg)
                .map_err(|e| Error::Internal(format!("gateway: {e}")))?,
        );
        Ok(Compute {
            inner: Arc::new(Inner {
                host: cfg
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .or_else(|| cfg.owner.clone())
                    .unwrap_or_default(),
                policy: Policy::from_config(&cfg),
                db,
                clock,
                cfg,
                billing,
                runtime: RwLock::new(None),
                runtime_error: parking_lot::Mutex::new(None),
                gateway,
                ports: Mutex::new(()),
                locks: DashMap::new(),
                states: DashMap::new(),
                retry_delete: DashMap::new(),
                sweeps: std::sync::atomic::AtomicU32::new(0),
                live: DashMap::new(),
                changed: Notify::new(),
            }),
        })
    }

    pub fn config(&self) -> &ComputeConfig {
        &self.inner.cfg
    }

    /// The compute host of this node.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Whether an instance runs on this node's host (else its node performs the actions).
    fn is_local(&self, i: &Instance) -> bool {
        i.host == self.inner.host
    }

    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }

    /// Installs a runtime (tests can install their own).
    pub async fn set_runtime(&self, rt: Arc<dyn Runtime>) {
        *self.inner.runtime.write().await = Some(rt);
    }

    /// Connects the configured runtime (`docker`); `Ok(false)` when compute is disabled.
    pub async fn connect_runtime(&self) -> Result<bool> {
        match self.inner.cfg.runtime.as_str() {
            "none" | "" => Ok(false),
            "docker" => {
                let rt = match stratus_compute::DockerRuntime::from_config(&self.inner.cfg).await {
                    Ok(rt) => rt,
                    Err(e) => {
                        let err = runtime_unavailable(&e);
                        *self.inner.runtime_error.lock() = Some(e);
                        return Err(err);
                    }
                };
                tracing::info!(bounds = ?rt.bounds(), "docker runtime connected");
                *self.inner.runtime_error.lock() = None;
                self.set_runtime(Arc::new(rt)).await;
                Ok(true)
            }
            other => Err(Error::Internal(format!(
                "unknown compute runtime {other:?}"
            ))),
        }
    }

    async fn runtime(&self) -> Result<Arc<dyn Runtime>> {
        self.inner.runtime.read().await.clone().ok_or_else(|| {
            match &*self.inner.runtime_error.lock() {
                Some(e) => runtime_unavailable(e),
                None => Error::unavailable(
                    "the compute runtime is not available",
                    "no runtime is connected",
                ),
            }
        })
    }

    /// Graceful stop: the gateway's listeners and kernel rules go, and so does what the
    /// runtime installed on the host (its firewall table). Instances keep running.
    pub async fn close(&self) {
        self.inner.gateway.close_all().await;
        let rt = self.inner.runtime.read().await.clone();
        if let Some(rt) = rt {
            rt.close().await;
        }
    }

    pub async fn runtime_available(&self) -> bool {
        self.inner.runtime.read().await.is_some()
    }

    fn lock_of(&self, id: &str) -> Arc<Mutex<()>> {
        self.inner
            .locks
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// The state lock of an instance: held by every status transition and mapping change.
    fn state_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.inner
            .states
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// Forgets the locks of an instance that is gone.
    fn forget_locks(&self, id: &str) {
        self.inner.locks.remove(id);
        self.inner.states.remove(id);
        self.inner.retry_delete.remove(id);
    }

    fn resolver(&self, rt: Arc<dyn Runtime>, instance_id: &str, port: u16) -> Arc<dyn Resolver> {
        Arc::new(InstanceResolver {
            compute: Arc::downgrade(&self.inner),
            instance_id: instance_id.to_string(),
            runtime: RuntimeResolver::new(rt, instance_id, port)
                .with_ttl(Duration::from_millis(500)),
        })
    }

    /// One of the account's instances (deleted ones included), or NotFound — never another
    /// account's.
    pub async fn instance(&self, account_id: &str, id: &str) -> Result<Instance> {
        let row: Option<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE id = $1 AND account_id = $2",
            records::INSTANCE_COLUMNS
        ))
        .bind(id)
        .bind(account_id)
        .fetch_optional(self.inner.db.r())
        .await?;
        row.map(records::instance_from_row)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("instance {id}")))
    }

    async fn instance_any(&self, id: &str) -> Result<Option<Instance>> {
        let row: Option<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE id = $1",
            records::INSTANCE_COLUMNS
        ))
        .bind(id)
        .fetch_optional(self.inner.db.w())
        .await?;
        row.map(records::instance_from_row).transpose()
    }

    /// The account's instances, newest first, a page at a time (pages start at 1, at most 1,000
    /// per page); deleted ones only when asked for by status.
    pub async fn instances(
        &self,
        account_id: &str,
        status: Option<Status>,
        page: u32,
        size: u32,
    ) -> Result<Vec<Instance>> {
        let size = size.clamp(1, 1000) as i64;
        let offset = (page.max(1) as i64 - 1).saturating_mul(size);
        let rows: Vec<records::InstanceRow> = sqlx::query_as(&format!(
            "SELECT {} FROM instances WHERE account_id = $1 \
             AND (($2 IS NULL AND status <> 7) OR status = $2) \
             ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
            records::INSTANCE_COLUMNS
        ))
        .bind(account_id)
        .bind(status.map(|s| s.code()))
        .bind(size)
        .bind(offset)
        .fetch_all(self.inner.db.r())
        .await?;
        rows.into_iter().map(records::instance_from_row).collect()
    }

    /// The `image:tag` of a catalog image.
    pub fn image_name(&self, image_id: i64) -> String {
        self.inner
            .cfg
            .images
            .iter()
            .find(|i| i.id == image_id)
            .map(|i| format!("{}:{}", i.image, i.tag))
            .unwrap_or_default()
    }

    /// Moves an instance from one of `from` to `to` (compare-and-set) under its state lock;
    /// false when its status was not one of `from`.
    async fn transition(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        reason: &str,
    ) -> Result<bool> {
        let lock = self.state_lock(id);
        let _state = lock.lock().await;
        self.transition_held(id, from, to, reason).await
    }

    /// [`Compute::transition`] for a caller that holds the instance's state lock.
    async fn transition_held(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        reason: &str,
    ) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        let deadline = to
            .is_transitional()
            .then(|| now + (self.inner.cfg.transition_timeout_secs as i64) * 1000);
        let list = from
            .iter()
            .map(|s| s.code().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let r = sqlx::query(&format!(
            "UPDATE instances SET status = $1, status_reason = $2, updated_at = $3, deadline = $4 \
             WHERE id = $5 AND status IN ({list})"
        ))
        .bind(to.code())
        .bind(reason)
        .bind(now)
        .bind(deadline)
        .bind(id)
        .execute(self.inner.db.w())
        .await?;
        let moved = r.rows_affected() > 0;
        if moved {
            if self.inner.live.contains_key(id) || to == Status::Running {
                self.inner.live.insert(id.to_string(), to);
            }
            tracing::info!(instance = %id, status = to.name(), %reason, "instance status");
            // Kernel routes follow the status now: gone before a stopping instance's address
            // can be reused, back once it runs; waiters hear of the status once they do.
            self.inner.gateway.refresh(id).await;
            self.inner.changed.notify_waiters();
        }
        Ok(moved)
    }

    /// Waits until the instance reaches `status`, a final status, or `timeout`.
    pub async fn wait(
        &self,
        account_id: &str,
        id: &str,
        status: Status,
        timeout: Duration,
    ) -> Result<Instance> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            let i = self.instance(account_id, id).await?;
            if i.status == status || i.status.is_final() {
                return Ok(i);
            }
            // Changes made by another node are not notified here: read again now and then. This
            // node's own changes are notified once the gateway follows them (a status read
            // earlier could run ahead of the routes).
            let next = if self.is_local(&i) {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(250))
            };
            if tokio::time::timeout_at(next, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.instance(account_id, id).await;
            }
        }
    }
}
