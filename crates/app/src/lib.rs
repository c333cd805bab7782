//! The assembled stratus services.
//!
//! [`App`] owns one instance of every core service, built from a [`Config`]: database, clock,
//! authentication, and (as they land) storage, billing and compute. The API dialects hold an
//! `Arc<App>` as their state. Nothing here speaks HTTP.

use std::sync::Arc;
use std::time::Duration;

use stratus_config::{
    create_private_dir, load_or_create_jwt_key, load_or_create_operator_token,
    load_or_create_server_id, Config,
};
use stratus_model::auth::Auth;
use stratus_model::billing::{self, Billing, ChainDeposits};
use stratus_model::clock::{SharedClock, SystemClock};
use stratus_model::compute::Compute;
use stratus_model::db::{Db, Location, Options};
use stratus_model::storage::Storage;
use stratus_model::token::{TokenKey, Tokens};
use stratus_model::{Error, Result};
use tokio::sync::watch;

/// The lease under which the chain watcher runs (one node at a time).
pub const WATCHER_LEASE: &str = "chain-watcher";
/// Leases live this long without renewal: another node takes over within `LEASE_TTL` plus one
/// renewal period of its own.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Opens the metadata database the configuration names (`database.url`, else the embedded
/// SQLite file in the data directory).
pub async fn open_database(config: &Config) -> Result<Db> {
    let path = config.database_path();
    let at = match config.database.url.as_deref() {
        Some(url) => Location::Url(url),
        None => Location::Sqlite(&path),
    };
    let opts = Options {
        max_connections: config.database.max_connections,
        ..Options::default()
    };
    Db::open(at, &opts).await.map_err(|e| match e {
        stratus_store::StoreError::Configuration(m) => Error::Internal(m.to_string()),
        e => Error::from(e),
    })
}

/// Every service of a running stratus.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub db: Db,
    pub clock: SharedClock,
    pub auth: Auth,
    pub storage: Storage,
    pub billing: Billing,
    pub deposits: ChainDeposits,
    pub compute: Compute,
    /// This node's id (the server id kept in the data dir): the holder of its leases.
    pub node_id: String,
    /// What `/metrics` asks for on the public listener.
    pub operator_token: String,
    /// This node's `node:<id>` lease, held from [`App::recover`] on (servers only: operator
    /// tools never claim to be a node): while it lives, other nodes leave this node's in-flight
    /// work alone.
    node_lease: std::sync::OnceLock<stratus_store::Leadership>,
    /// This node's `host:<compute host>` lease, held from [`App::recover`] on while a compute
    /// runtime is configured: other nodes refuse mapping changes for a host nobody serves.
    host_lease: std::sync::OnceLock<stratus_store::Leadership>,
}

/// How long a node's lease and the storage collector's lease last without renewal.
const NODE_LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the `storage-gc` holder reclaims the work of gone nodes.
const STORAGE_GC_EVERY: Duration = Duration::from_secs(5);

impl App {
    /// Opens the data directory and builds the services with the system clock.
    pub async fn open(config: Config) -> Result<Arc<App>> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Same as [`App::open`] with an injected clock (tests).
    pub async fn open_with_clock(config: Config, clock: SharedClock) -> Result<Arc<App>> {
        // Accounts, blobs and secrets: nobody else on the host reads them.
        create_private_dir(&config.data_dir).map_err(|e| {
            Error::Internal(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let db = open_database(&config).await?;
        let key = load_or_create_jwt_key(
            config.jwt_key.as_deref(),
            config.jwt_key_file.as_deref(),
            &config.data_dir,
        )
        .map_err(Error::internal)?;
        let operator_token = load_or_create_operator_token(
            config.operator.token.as_deref(),
            config.operator.token_file.as_deref(),
            &config.data_dir,
        )
        .map_err(Error::internal)?;
        let tokens = Tokens::new(
            TokenKey::new(&key),
            config.auth.domain.clone(),
            db.clone(),
            clock.now_secs(),
        )
        .await?;
        let accounts = stratus_model::account::Accounts::new(db.clone());
        let auth = Auth::new(
            config.auth.clone(),
            &config.limits,
            accounts,
            tokens,
            clock.clone(),
        )?;
        let billing = Billing::new(db.clone(), clock.clone(), config.billing.clone());
        let storage = Storage::new(
            db.clone(),
            clock.clone(),
            config.storage.clone(),
            &config.data_dir,
            billing::allowance(&billing),
        )?;
        let deposits = ChainDeposits::new(db.clone(), clock.clone());
        let node_id = load_or_create_server_id(&config.data_dir).map_err(Error::internal)?;
        let mut compute_cfg = config.compute.clone();
        if compute_cfg.owner.is_none() {
            compute_cfg.owner = Some(node_id.clone());
        }
        if compute_cfg.host.as_deref().is_none_or(str::is_empty) {
            compute_cfg.host = Some(node_id.clone());
        }
        let compute = Compute::new(db.clone(), clock.clone(), compute_cfg, billing.clone())?;
        Ok(Arc::new(App {
            config,
            db,
            clock,
            auth,
            storage,
            billing,
            deposits,
            compute,
            node_id,
            operator_token,
            node_lease: std::sync::OnceLock::new(),
            host_lease: std::sync::OnceLock::new(),
        }))
    }

    /// Finishes what a crash interrupted (uploads, deletes). The server calls this once before it
    /// listens; operator tools that may run beside a live server never do.
    pub async fn recover(&self) -> Result<()> {
        // Alive before any work of this node can be in flight (a restart within the TTL finds
        // the lease still its own).
        let node = self.storage.node().to_string();
        let lease = format!("{}{node}", stratus_model::storage::NODE_LEASE_PREFIX);
        if !self.db.try_lease(&lease, &node, NODE_LEASE_TTL).await? {
            tracing::warn!(%lease, "another process holds this node's lease (same server id?)");
        }
        self.node_lease.get_or_init(|| {
            stratus_store::Leadership::spawn(self.db.clone(), &lease, &node, NODE_LEASE_TTL)
        });
        self.storage.recover().await?;
        // Compute: kernel tables of dead servers go whatever else happens; then connect the
        // runtime and re-attach every instance, so mappings listen again before the server
        // answers. An unreachable runtime is retried by the sweeper.
        if self.compute.config().runtime != "none" {
            let host = format!(
                "{}{}",
                stratus_model::compute::HOST_LEASE_PREFIX,
                self.compute.host()
            );
            self.host_lease.get_or_init(|| {
                stratus_store::Leadership::spawn(self.db.clone(), &host, &node, NODE_LEASE_TTL)
            });
            self.compute.gateway().collect_stale().await;
        }
        match self.compute.connect_runtime().await {
            Ok(true) => self.compute.reconcile().await?,
            Ok(false) => tracing::info!("compute is disabled (compute.runtime = \"none\")"),
            Err(e) => {
                tracing::warn!(error = %e, "compute runtime unavailable; retrying in the background")
            }
        }
        Ok(())
    }

    /// Runs periodic housekeeping (and the chain watcher, when configured) until `shutdown`
    /// flips to true.
    pub async fn run_background(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let watcher = self.start_watcher(shutdown.clone());
        let sweeper = {
            let compute = self.compute.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { compute.run_sweeper(Duration::from_secs(2), stop).await })
        };
        // Actions other nodes recorded for this node's compute host.
        let actions = {
            let compute = self.compute.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { compute.run_actions(Duration::from_millis(250), stop).await })
        };
        let feed = {
            let auth = self.auth.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { revocation_feed(auth, stop).await })
        };
        let storage_gc = {
            let storage = self.storage.clone();
            let lease = stratus_store::Leadership::spawn(
                self.db.clone(),
                "storage-gc",
                self.storage.node(),
                NODE_LEASE_TTL,
            );
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STORAGE_GC_EVERY);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            // Every node retries its own removals that failed.
                            if let Err(e) = storage.retry_own_deletes().await {
                                tracing::warn!(error = %e, "retrying this node's blob removals failed");
                            }
                            if !lease.is_held() {
                                continue;
                            }
                            match storage.collect_garbage().await {
                                Ok(0) => {}
                                Ok(n) => tracing::info!(reclaimed = n, "storage garbage collected"),
                                Err(e) => tracing::warn!(error = %e, "storage garbage collection failed"),
                            }
                        }
                        _ = stop.changed() => break,
                    }
                }
                lease.release();
            })
        };
        let nonce_every = Duration::from_secs(self.config.auth.nonce_ttl.clamp(1, 10));
        let mut nonce_tick = tokio::time::interval(nonce_every);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = nonce_tick.tick() => {
                    if let Err(e) = self.auth.sweep_nonces().await {
                        tracing::warn!(error = %e, "nonce housekeeping failed");
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.auth.sweep().await {
                        tracing::warn!(error = %e, "auth housekeeping failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        let _ = sweeper.await;
        let _ = actions.await;
        let _ = feed.await;
        let _ = storage_gc.await;
        if let Some(w) = watcher {
            match w.await {
                Ok(Err(e)) => tracing::error!(error = %e, "chain watcher stopped"),
                Err(e) => tracing::error!(error = %e, "chain watcher panicked"),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Starts the chain watcher (when configured) under the lease `chain-watcher`: it runs on
    /// the one node that holds the lease, stops when the lease is lost (its store refuses every
    /// write from then on), and another node takes over once the lease has expired.
    fn start_watcher(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<Result<(), stratus_chain::WatchError>>> {
        let cfg = match stratus_chain::WatcherConfig::from_chain_config(&self.config.chain) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "chain watcher not started: bad configuration");
                return None;
            }
        };
        let lease = stratus_store::Leadership::spawn(
            self.db.clone(),
            WATCHER_LEASE,
            &self.node_id,
            LEASE_TTL,
        );
        let store = Arc::new(self.deposits.under_lease(lease.clone()));
        Some(tokio::spawn(async move {
            let result = async {
                loop {
                    // Wait for the lease.
                    while !lease.is_held() {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                            _ = shutdown.changed() => return Ok(()),
                        }
                        if *shutdown.borrow() {
                            return Ok(());
                        }
                    }
                    let w = stratus_chain::Watcher::new(cfg.clone(), store.clone())?;
                    tracing::info!(lease = WATCHER_LEASE, "chain watcher started on this node");
                    // Stops the watcher on shutdown or as soon as the lease is lost.
                    let (stop_tx, stop_rx) = watch::channel(false);
                    let monitor = {
                        let lease = lease.clone();
                        let mut shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            loop {
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                    _ = shutdown.changed() => {}
                                }
                                if *shutdown.borrow() || !lease.is_held() {
                                    let _ = stop_tx.send(true);
                                    return;
                                }
                            }
                        })
                    };
                    let r = w.run(stop_rx).await;
                    monitor.abort();
                    r?;
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    tracing::warn!(
                        lease = WATCHER_LEASE,
                        "chain watcher stopped: the lease was lost"
                    );
                }
            }
            .await;
            lease.release();
            result
        }))
    }

    /// Closes the database.
    pub async fn close(&self) {
        // Listeners go and the kernel's forwarding rules with them, and the sandbox firewall.
        self.compute.close().await;
        self.db.close().await;
    }
}

/// How often every node reads the revocations recorded by the others.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);

/// The change feed of revocations: every [`REVOCATION_POLL`], takes in what any node revoked
/// (logouts, revoked families), so a token revoked through one node is refused by this one within
/// a second. Runs until `shutdown` flips to true.
async fn revocation_feed(auth: Auth, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = auth.poll_revocations().await {
                    tracing::warn!(error = %e, "revocation feed: poll failed");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}
