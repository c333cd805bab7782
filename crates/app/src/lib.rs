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
    /// What `/metrics` asks for on the public listener.
    pub operator_token: String,
    /// This node's `node:<id>` lease, held from [`App::recover`] on (servers only: operator
    /// tools never claim to be a node): while it lives, other nodes leave this node's in-flight
    /// work alone.
    node_lease: std::sync::OnceLock<stratus_store::Leadership>,
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
        let mut compute_cfg = config.compute.clone();
        if compute_cfg.owner.is_none() {
            compute_cfg.owner =
                Some(load_or_create_server_id(&config.data_dir).map_err(Error::internal)?);
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
            operator_token,
            node_lease: std::sync::OnceLock::new(),
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
                    let auth = self.auth.clone();
                    let _ = tokio::task::spawn_blocking(move || auth.sweep_nonces()).await;
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
        let _ = storage_gc.await;
        if let Some(w) = watcher {
            match w.await {
                Ok(Err(e)) => tracing::error!(error = %e, "chain watcher stopped"),
                Err(e) => tracing::error!(error = %e, "chain watcher panicked"),
                Ok(Ok(())) => {}
            }
        }
    }

    fn start_watcher(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<Result<(), stratus_chain::WatchError>>> {
        let cfg = match stratus_chain::WatcherConfig::from_chain_config(&self.config.chain) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "chain watcher not started: bad configuration");
                return None;
            }
        };
        match stratus_chain::Watcher::new(cfg, Arc::new(self.deposits.clone())) {
            Ok(w) => {
                tracing::info!("chain watcher started");
                Some(w.spawn(shutdown))
            }
            Err(e) => {
                tracing::error!(error = %e, "chain watcher not started");
                None
            }
        }
    }

    /// Closes the database.
    pub async fn close(&self) {
        // Listeners go and the kernel's forwarding rules with them, and the sandbox firewall.
        self.compute.close().await;
        self.db.close().await;
    }
}
