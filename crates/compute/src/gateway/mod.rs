//! The TCP gateway: public ports forwarded to sandbox services.
//!
//! Owns one listener per mapping and the connections accepted on it. The target of each
//! connection is resolved when the connection arrives, through the mapping's [`Resolver`] (an
//! instance's address changes when it restarts, and a stopped instance has none: the connection
//! is then closed at once). Bytes are moved with `splice(2)` through a kernel pipe on Linux (no
//! copy through user space), with a large-buffer copy loop elsewhere; half-closes are forwarded
//! (a FIN from one side becomes a write shutdown on the other). Each mapping counts its bytes in
//! both directions, for billing and for the `stratus_mapping_bytes_total{mapping,direction}`
//! metric, and caps its concurrent connections so one mapping cannot exhaust file descriptors.
//!
//! The gateway never decides which port a mapping gets, and never looks at the bytes it moves.

#[cfg(target_os = "linux")]
mod nat;
#[cfg(target_os = "linux")]
mod splice;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use stratus_config::ComputeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::runtime::Runtime;

/// Gateway settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Address every mapping listens on.
    pub bind: IpAddr,
    /// Most concurrent connections per mapping; further ones are closed at once.
    pub max_connections_per_mapping: usize,
    /// Longest wait for the resolver.
    pub resolve_timeout: Duration,
    /// Longest wait to connect to the target.
    pub connect_timeout: Duration,
    /// Buffer per direction of the copy loop (used where splice is not).
    pub buffer_size: usize,
    /// Use `splice(2)` on Linux.
    pub splice: bool,
    /// Where connections are forwarded: in this process, or by the kernel.
    pub forwarding: Forwarding,
    /// With kernel forwarding: how often each mapping's target is checked again even when
    /// nothing asked for it ([`Gateway::refresh`] is the prompt way).
    pub refresh_interval: Duration,
    /// With kernel forwarding: how often the kernel's byte counters are read.
    pub counter_interval: Duration,
    /// The server id the kernel table is named after (`compute.owner`); `None`: a random id
    /// for this process.
    pub owner: Option<String>,
}

/// How a mapping's connections are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Every connection is accepted by the gateway and relayed with `splice(2)` (or copied).
    Userspace,
    /// New connections are rewritten to the target by nftables rules (DNAT) and never cross
    /// this process; only connections that find no route (a stopped instance) reach the
    /// listener. Needs root and the `nft` and `conntrack` programs, and an IPv4 bind address.
    Kernel,
    /// [`Forwarding::Kernel`] when it can be set up, else [`Forwarding::Userspace`].
    Auto,
}

impl std::str::FromStr for Forwarding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "userspace" | "user" | "splice" => Ok(Forwarding::Userspace),
            "kernel" | "nftables" => Ok(Forwarding::Kernel),
            "auto" | "" => Ok(Forwarding::Auto),
            other => Err(format!(
                "unknown gateway forwarding {other:?} (auto, kernel or userspace)"
            )),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            max_connections_per_mapping: 1024,
            resolve_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            buffer_size: 256 * 1024,
            splice: true,
            forwarding: Forwarding::Userspace,
            refresh_interval: Duration::from_secs(10),
            counter_interval: Duration::from_secs(2),
            owner: None,
        }
    }
}

impl GatewayConfig {
    /// Defaults with the configured bind address (`compute.gateway_bind`).
    pub fn from_config(config: &ComputeConfig) -> Result<Self, GatewayError> {
        let bind = config
            .gateway_bind
            .parse()
            .map_err(|_| GatewayError::InvalidBind(config.gateway_bind.clone()))?;
        let forwarding = config
            .gateway_forwarding
            .parse()
            .map_err(GatewayError::InvalidForwarding)?;
        Ok(GatewayConfig {
            bind,
            forwarding,
            owner: config.owner.clone().filter(|o| !o.is_empty()),
            ..GatewayConfig::default()
        })
    }
}

/// Gateway failures.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("mapping {0} is already open")]
    AlreadyOpen(String),
    /// The port could not be bound (in use, privileged…): the caller picks another port.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("invalid gateway bind address {0:?}")]
    InvalidBind(String),
    #[error("{0}")]
    InvalidForwarding(String),
    /// Kernel forwarding was required and cannot be set up.
    #[error("kernel forwarding: {0}")]
    Kernel(#[source] io::Error),
}

impl GatewayError {
    /// Whether the port is taken by someone else.
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, GatewayError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    }
}

/// Finds where a mapping's connections go, when each connection arrives.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The target now, or `None` to close the connection at once (instance stopped, missing…).
    async fn resolve(&self) -> Option<SocketAddr>;

    /// The target now, bypassing any cache (used when installing a kernel route).
    async fn resolve_now(&self) -> Option<SocketAddr> {
        self.resolve().await
    }
}

type BoxedResolveFuture = Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send>>;

/// A [`Resolver`] made of a closure returning a future.
pub struct FnResolver(Box<dyn Fn() -> BoxedResolveFuture + Send + Sync>);

#[async_trait]
impl Resolver for FnResolver {
    async fn resolve(&self) -> Option<SocketAddr> {
        (self.0)().await
    }
}

/// Wraps `f` as a resolver: `resolver_fn(move || async move { Some(addr) })`.
pub fn resolver_fn<F, Fut>(f: F) -> Arc<dyn Resolver>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<SocketAddr>> + Send + 'static,
{
    Arc::new(FnResolver(Box::new(move || Box::pin(f()))))
}

/// Resolves through [`Runtime::endpoint`], remembering the answer for `ttl` so that a burst of
/// connections costs the container engine one query (and concurrent misses share it).
pub struct RuntimeResolver {
    runtime: Arc<dyn Runtime>,
    instance_id: String,
    port: u16,
    ttl: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Option<SocketAddr>)>>,
}

impl RuntimeResolver {
    /// A resolver for `port` (a mapping's `computerPort`) of `instance_id`, cached for one second.
    pub fn new(runtime: Arc<dyn Runtime>, instance_id: impl Into<String>, port: u16) -> Self {
        RuntimeResolver {
            runtime,
            instance_id: instance_id.into(),
            port,
            ttl: Duration::from_secs(1),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Changes how long an answer is reused (zero: ask every time).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}

impl RuntimeResolver {
    async fn lookup(&self, cached: bool) -> Option<SocketAddr> {
        let mut cache = self.cache.lock().await;
        if let Some((at, addr)) = *cache {
            if cached && at.elapsed() < self.ttl {
                return addr;
            }
        }
        let addr = match self.runtime.endpoint(&self.instance_id, self.port).await {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!(instance = %self.instance_id, port = self.port, error = %e, "gateway: cannot resolve");
                None
            }
        };
        *cache = Some((Instant::now(), addr));
        addr
    }
}

#[async_trait]
impl Resolver for RuntimeResolver {
    async fn resolve(&self) -> Option<SocketAddr> {
        self.lookup(true).await
    }

    async fn resolve_now(&self) -> Option<SocketAddr> {
        self.lookup(false).await
    }
}

/// Counters of one mapping since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MappingStats {
    /// Bytes from the public side to the service.
    pub bytes_in: u64,
    /// Bytes from the service to the public side.
    pub bytes_out: u64,
    /// Connections open now.
    pub active_connections: usize,
    /// Connections accepted since the mapping opened.
    pub accepted_connections: u64,
    /// Connections closed at once because the mapping was at its cap.
    pub rejected_connections: u64,
}

struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    active: AtomicUsize,
    accepted: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn add(&self, direction: Direction, n: usize) {
        let n = n as u64;
        match direction {
            Direction::In => {
                self.bytes_in.fetch_add(n, Ordering::Relaxed);
            }
            Direction::Out => {
                self.bytes_out.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self) -> MappingStats {
        MappingStats {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            active_connections: self.active.load(Ordering::Relaxed),
            accepted_connections: self.accepted.load(Ordering::Relaxed),
            rejected_connections: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Public side to service.
    In,
    /// Service to public side.
    Out,
}

struct Mapping {
    /// Mappings refreshed together by [`Gateway::refresh`] (an instance's).
    group: String,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
    counters: Arc<Counters>,
    /// The kernel route, with kernel forwarding.
    route: Option<Arc<Route>>,
}

/// A mapping's kernel route: where new connections to its port are rewritten to.
struct Route {
    port: u16,
    resolver: Arc<dyn Resolver>,
    resolve_timeout: Duration,
    #[cfg(target_os = "linux")]
    kernel: Arc<nat::Kernel>,
    /// The target installed now.
    current: tokio::sync::Mutex<Option<SocketAddrV4>>,
    /// Kernel byte counters (in, out) already added to `counters`.
    seen: Mutex<(u64, u64)>,
    counters: Arc<Counters>,
    /// Asks the mapping's refresh task to resolve again now.
    wake: Notify,
}

impl Route {
    /// Resolves the target and installs it (or removes the route when there is none).
    async fn refresh(&self) {
        let mut current = self.current.lock().await;
        let target = tokio::time::timeout(self.resolve_timeout, self.resolver.resolve_now())
            .await
            .ok()
            .flatten()
            .and_then(|a| match a {
                SocketAddr::V4(a) => Some(a),
                SocketAddr::V6(_) => None,
            });
        if target == *current {
            return;
        }
        #[cfg(target_os = "linux")]
        match self.kernel.route(self.port, *current, target).await {
            Ok(()) => {
                tracing::debug!(port = self.port, ?target, "gateway: kernel route");
                *current = target;
            }
            Err(e) => {
                tracing::warn!(port = self.port, ?target, error = %e, "gateway: cannot install kernel route")
            }
        }
    }

    /// Adds what the kernel counted since last time (`total` = its counters now).
    fn account(&self, total: (u64, u64)) {
        let mut seen = self.seen.lock();
        let delta_in = total.0.saturating_sub(seen.0);
        let delta_out = total.1.saturating_sub(seen.1);
        *seen = total;
        if delta_in > 0 {
            self.counters.add(Direction::In, delta_in as usize);
        }
        if delta_out > 0 {
            self.counters.add(Direction::Out, delta_out as usize);
        }
    }

    async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            self.refresh().await;
        }
    }
}

/// Whether kernel forwarding is set up.
enum KernelState {
    /// Not tried yet (or torn down by [`Gateway::close_all`]).
    Unset,
    /// Not used.
    Off,
    #[cfg(target_os = "linux")]
    On {
        kernel: Arc<nat::Kernel>,
        poller: CancellationToken,
    },
}

/// The TCP gateway. Cheap to clone; clones share the mappings.
#[derive(Clone)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    mappings: Arc<Mutex<HashMap<String, Mapping>>>,
    kernel: Arc<tokio::sync::Mutex<KernelState>>,
}

impl Gateway {
    /// A gateway with no mapping open. Raises the soft file-descriptor limit to the hard one
    /// (each forwarded connection holds two sockets and, with splice, two pipes).
    pub fn new(config: GatewayConfig) -> Self {
        raise_fd_limit();
        Gateway {
            config: Arc::new(config),
            mappings: Arc::new(Mutex::new(HashMap::new())),
            kernel: Arc::new(tokio::sync::Mutex::new(KernelState::Unset)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The kernel forwarder, set up on first use; `None` when connections are forwarded here.
    #[cfg(target_os = "linux")]
    async fn kernel(&self) -> Result<Option<Arc<nat::Kernel>>, GatewayError> {
        let mut state = self.kernel.lock().await;
        match &*state {
            KernelState::Off => return Ok(None),
            KernelState::On { kernel, .. } => return Ok(Some(kernel.clone())),
            KernelState::Unset => {}
        }
        let wanted = self.config.forwarding;
        let bind = match self.config.bind {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        };
        let setup = match (wanted, bind) {
            (Forwarding::Userspace, _) => None,
            (_, None) => Some(Err(io::Error::other(
                "kernel forwarding needs an IPv4 bind address",
            ))),
            (_, Some(ip)) => match self.claim() {
                Ok(claim) => Some(
                    nat::Kernel::setup(ip, self.config.max_connections_per_mapping, claim).await,
                ),
                Err(e) => Some(Err(e)),
            },
        };
        match setup {
            None => {
                *state = KernelState::Off;
                Ok(None)
            }
            Some(Ok(kernel)) => {
                let kernel = Arc::new(kernel);
                let poller = CancellationToken::new();
                tokio::spawn(self.clone().poll_counters(poller.clone()));
                tracing::info!(
                    table = kernel.table(),
                    "gateway: kernel forwarding (nftables)"
                );
                *state = KernelState::On {
                    kernel: kernel.clone(),
                    poller,
                };
                Ok(Some(kernel))
            }
            Some(Err(e)) if wanted == Forwarding::Auto => {
                tracing::warn!(error = %e, "gateway: kernel forwarding unavailable; forwarding in user space");
                *state = KernelState::Off;
                Ok(None)
            }
            Some(Err(e)) => Err(GatewayError::Kernel(e)),
        }
    }

    /// This server's claim of its id (see [`crate::liveness`]).
    #[cfg(target_os = "linux")]
    fn claim(&self) -> io::Result<Arc<crate::liveness::Claim>> {
        match &self.config.owner {
            Some(owner) => crate::liveness::claim(owner),
            None => crate::liveness::claim_anonymous(),
        }
    }

    /// Deletes the kernel tables of dead servers and this server's stale ones (a crashed run
    /// left them), and the `DOCKER-USER` rule when no gateway table is left: call it when the
    /// server starts, whatever the forwarding mode. Without `nft` there is nothing to do.
    pub async fn collect_stale(&self) {
        #[cfg(target_os = "linux")]
        match self.claim() {
            Ok(claim) => nat::collect_stale_tables(&claim).await,
            Err(e) => tracing::warn!(error = %e, "gateway: cannot collect stale kernel tables"),
        }
    }

    /// Whether new connections are forwarded by the kernel (sets it up if not tried yet).
    pub async fn kernel_forwarding(&self) -> Result<bool, GatewayError> {
        #[cfg(target_os = "linux")]
        return Ok(self.kernel().await?.is_some());
        #[cfg(not(target_os = "linux"))]
        return Ok(false);
    }

    /// The name of the nftables table (`ip` family) holding the kernel routes, once set up.
    pub async fn kernel_table(&self) -> Option<String> {
        match &*self.kernel.lock().await {
            #[cfg(target_os = "linux")]
            KernelState::On { kernel, .. } => Some(kernel.table().to_string()),
            _ => None,
        }
    }

    #[cfg(target_os = "linux")]
    async fn poll_counters(self, stop: CancellationToken) {
        let mut rounds = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.counter_interval) => {}
            }
            self.sync_counters().await;
            // Another server that saw no gateway table left may have removed the shared
            // DOCKER-USER rule just as this one set up: put it back.
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(15) {
                nat::exempt_from_docker_forward().await;
            }
        }
    }

    /// Adds the bytes the kernel forwarded to each mapping's counters (done every
    /// `counter_interval` and when a mapping closes; call it for up-to-date [`stats`](Self::stats)).
    pub async fn sync_counters(&self) {
        #[cfg(target_os = "linux")]
        {
            let kernel = match &*self.kernel.lock().await {
                KernelState::On { kernel, .. } => kernel.clone(),
                _ => return,
            };
            let routes: Vec<Arc<Route>> = self
                .mappings
                .lock()
                .values()
                .filter_map(|m| m.route.clone())
                .collect();
            if routes.is_empty() {
                return;
            }
            match kernel.counters().await {
                Ok(totals) => {
                    for r in routes {
                        if let Some(t) = totals.get(&r.port) {
                            r.account(*t);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "gateway: cannot read kernel counters"),
            }
        }
    }

    /// Listens on `port` of the bind address (0 picks a free port) and forwards every connection
    /// to what `resolver` answers. Returns the address listened on. A bind failure is an error
    /// and leaves nothing open: the caller picks another port.
    pub async fn open(
        &self,
        mapping_id: &str,
        port: u16,
        resolver: Arc<dyn Resolver>,
    ) -> Result<SocketAddr, GatewayError> {
        self.open_in(mapping_id, mapping_id, port, resolver).await
    }

    /// [`open`](Self::open), with the mapping in `group`: [`refresh`](Self::refresh) of the
    /// group re-resolves it (an instance's mappings, when the instance's state changes).
    pub async fn open_in(
        &self,
        group: &str,
        mapping_id: &str,
        port: u16,
        resolver: Arc<dyn Resolver>,
    ) -> Result<SocketAddr, GatewayError> {
        if self.is_open(mapping_id) {
            return Err(GatewayError::AlreadyOpen(mapping_id.to_string()));
        }
        #[cfg(target_os = "linux")]
        let kernel = self.kernel().await?;
        let addr = SocketAddr::new(self.config.bind, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let counters = Arc::new(Counters::new());
        #[cfg(target_os = "linux")]
        let route = match kernel {
            Some(kernel) => match kernel.add_port(local_addr.port()).await {
                Ok(()) => Some(Arc::new(Route {
                    port: local_addr.port(),
                    resolver: resolver.clone(),
                    resolve_timeout: self.config.resolve_timeout,
                    kernel,
                    current: tokio::sync::Mutex::new(None),
                    seen: Mutex::new((0, 0)),
                    counters: counters.clone(),
                    wake: Notify::new(),
                })),
                Err(e) => {
                    tracing::warn!(mapping = mapping_id, error = %e, "gateway: no kernel route; forwarding in user space");
                    None
                }
            },
            None => None,
        };
        #[cfg(not(target_os = "linux"))]
        let route: Option<Arc<Route>> = None;
        let inserted = {
            let mut mappings = self.mappings.lock();
            let free = !mappings.contains_key(mapping_id);
            if free {
                mappings.insert(
                    mapping_id.to_string(),
                    Mapping {
                        group: group.to_string(),
                        local_addr,
                        cancel: cancel.clone(),
                        tasks: tasks.clone(),
                        counters: counters.clone(),
                        route: route.clone(),
                    },
                );
            }
            free
        };
        if !inserted {
            #[cfg(target_os = "linux")]
            if let Some(r) = &route {
                r.kernel.remove_port(r.port, None).await;
            }
            return Err(GatewayError::AlreadyOpen(mapping_id.to_string()));
        }
        if let Some(route) = &route {
            route.refresh().await;
            tasks.spawn(
                route
                    .clone()
                    .run(self.config.refresh_interval, cancel.clone()),
            );
        }
        let accept = AcceptLoop {
            mapping_id: mapping_id.to_string(),
            listener,
            resolver,
            config: self.config.clone(),
            counters,
            limit: Arc::new(Semaphore::new(self.config.max_connections_per_mapping)),
            cancel,
            tasks: tasks.clone(),
            route: route.clone(),
        };
        tasks.spawn(accept.run());
        tracing::info!(mapping = mapping_id, %local_addr, kernel = route.is_some(), "gateway: mapping open");
        Ok(local_addr)
    }

    /// Resolves the targets of the group's mappings again, now, and installs them: call it
    /// when an instance starts, stops or restarts, before its old address can go to someone
    /// else. Without kernel forwarding there is nothing to do (each connection resolves).
    pub async fn refresh(&self, group: &str) {
        let routes: Vec<Arc<Route>> = self
            .mappings
            .lock()
            .values()
            .filter(|m| m.group == group)
            .filter_map(|m| m.route.clone())
            .collect();
        for r in routes {
            r.refresh().await;
        }
    }

    /// Stops listening and closes every live connection of the mapping; returns once the port
    /// is released and every connection is gone. Returns whether the mapping was open.
    pub async fn close(&self, mapping_id: &str) -> bool {
        let mapping = self.mappings.lock().remove(mapping_id);
        let Some(mapping) = mapping else {
            return false;
        };
        mapping.cancel.cancel();
        mapping.tasks.close();
        mapping.tasks.wait().await;
        #[cfg(target_os = "linux")]
        if let Some(route) = &mapping.route {
            // The last bytes the kernel counted for it, then its rules go.
            match route.kernel.counters().await {
                Ok(totals) => route.account(totals.get(&route.port).copied().unwrap_or_default()),
                Err(e) => tracing::warn!(error = %e, "gateway: cannot read kernel counters"),
            }
            let current = *route.current.lock().await;
            route.kernel.remove_port(route.port, current).await;
        }
        tracing::info!(mapping = mapping_id, "gateway: mapping closed");
        true
    }

    /// Removes the kernel route elements of public ports that no open mapping has (a close
    /// whose nft call failed would otherwise leave a port routed to an old address). Call it
    /// while no mapping is being opened (the caller's port lock). Returns the ports removed.
    pub async fn tidy(&self) -> Vec<u16> {
        #[cfg(target_os = "linux")]
        {
            let kernel = match &*self.kernel.lock().await {
                KernelState::On { kernel, .. } => kernel.clone(),
                _ => return Vec::new(),
            };
            let open: std::collections::HashSet<u16> = self
                .mappings
                .lock()
                .values()
                .filter_map(|m| m.route.as_ref().map(|r| r.port))
                .collect();
            let known = match kernel.ports().await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway: cannot read kernel routes");
                    return Vec::new();
                }
            };
            let mut removed = Vec::new();
            for port in known {
                if open.contains(&port) {
                    continue;
                }
                tracing::warn!(port, "gateway: removing a kernel route no mapping owns");
                kernel.remove_stale_port(port).await;
                removed.push(port);
            }
            removed.sort_unstable();
            removed
        }
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }

    /// Closes every mapping, and removes the kernel rules (a later [`open`](Self::open) sets
    /// them up again).
    pub async fn close_all(&self) {
        for id in self.mappings() {
            self.close(&id).await;
        }
        let mut state = self.kernel.lock().await;
        #[cfg(target_os = "linux")]
        if let KernelState::On { kernel, poller } = &*state {
            poller.cancel();
            kernel.teardown().await;
        }
        *state = KernelState::Unset;
    }

    /// Whether the mapping is open.
    pub fn is_open(&self, mapping_id: &str) -> bool {
        self.mappings.lock().contains_key(mapping_id)
    }

    /// Ids of the open mappings.
    pub fn mappings(&self) -> Vec<String> {
        self.mappings.lock().keys().cloned().collect()
    }

    /// The address a mapping listens on.
    pub fn local_addr(&self, mapping_id: &str) -> Option<SocketAddr> {
        self.mappings.lock().get(mapping_id).map(|m| m.local_addr)
    }

    /// The counters of an open mapping. With kernel forwarding, the bytes are IP bytes
    /// (headers included) as of the last [`sync_counters`](Self::sync_counters), and the
    /// connection counts cover only connections that reached the listener.
    pub fn stats(&self, mapping_id: &str) -> Option<MappingStats> {
        self.mappings
            .lock()
            .get(mapping_id)
            .map(|m| m.counters.snapshot())
    }

    /// Appends the per-mapping series in Prometheus text format to `out`:
    /// `stratus_mapping_bytes_total{mapping,direction}` and `stratus_mapping_connections{mapping}`
    /// of the mappings open now. A mapping's series go with the mapping (a mapping id is only
    /// ever shown to its owner and the operator).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let mut rows: Vec<(String, MappingStats)> = self
            .mappings
            .lock()
            .iter()
            .map(|(id, m)| (id.clone(), m.counters.snapshot()))
            .collect();
        if rows.is_empty() {
            return;
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let label = |id: &str| {
            id.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str(
            "# HELP stratus_mapping_bytes_total Bytes forwarded through a port mapping.\n",
        );
        out.push_str("# TYPE stratus_mapping_bytes_total counter\n");
        for (id, st) in &rows {
            let id = label(id);
            let _ = writeln!(
                out,
                "stratus_mapping_bytes_total{{mapping=\"{id}\",direction=\"in\"}} {}",
                st.bytes_in
            );
            let _ = writeln!(
                out,
                "stratus_mapping_bytes_total{{mapping=\"{id}\",direction=\"out\"}} {}",
                st.bytes_out
            );
        }
        out.push_str(
            "# HELP stratus_mapping_connections Connections open through a port mapping.\n",
        );
        out.push_str("# TYPE stratus_mapping_connections gauge\n");
        for (id, st) in &rows {
            let _ = writeln!(
                out,
                "stratus_mapping_connections{{mapping=\"{}\"}} {}",
                label(id),
                st.active_connections
            );
        }
    }

    /// Whether the mapping's new connections are forwarded by the kernel to a target now.
    pub async fn kernel_routed(&self, mapping_id: &str) -> Option<SocketAddr> {
        let route = self
            .mappings
            .lock()
            .get(mapping_id)
            .and_then(|m| m.route.clone())?;
        let current = *route.current.lock().await;
        current.map(SocketAddr::V4)
    }
}

struct AcceptLoop {
    mapping_id: String,
    listener: TcpListener,
    resolver: Arc<dyn Resolver>,
    config: Arc<GatewayConfig>,
    counters: Arc<Counters>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    route: Option<Arc<Route>>,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => break,
                r = self.listener.accept() => r,
            };
            let (client, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a transient error: back off instead of spinning.
                    tracing::warn!(mapping = %self.mapping_id, error = %e, "gateway: accept failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(mapping = %self.mapping_id, %peer, "gateway: connection cap reached");
                continue;
            };
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            let conn = Connection {
                client,
                resolver: self.resolver.clone(),
                config: self.config.clone(),
                counters: self.counters.clone(),
                route: self.route.clone(),
            };
            let cancel = self.cancel.clone();
            self.tasks.spawn(async move {
                let _permit = permit;
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = conn.run() => {}
                }
            });
        }
    }
}

struct Connection {
    client: TcpStream,
    resolver: Arc<dyn Resolver>,
    config: Arc<GatewayConfig>,
    counters: Arc<Counters>,
    /// The mapping's kernel route: a connection that reaches the listener while there is a
    /// target means the route is missing or stale.
    route: Option<Arc<Route>>,
}

struct ActiveGuard(Arc<Counters>);

impl ActiveGuard {
    fn new(counters: Arc<Counters>) -> Self {
        counters.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(counters)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection {
    async fn run(self) {
        let _active = ActiveGuard::new(self.counters.clone());
        let target = tokio::time::timeout(self.config.resolve_timeout, self.resolver.resolve())
            .await
            .ok()
            .flatten();
        let Some(target) = target else {
            return; // dropping the client closes it at once
        };
        if let Some(route) = &self.route {
            route.wake.notify_one();
        }
        let upstream =
            match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(target))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%target, error = %e, "gateway: cannot connect to target");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%target, "gateway: connect timed out");
                    return;
                }
            };
        let _ = self.client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        if let Err(e) = relay(self.client, upstream, &self.config, &self.counters).await {
            tracing::debug!(%target, error = %e, "gateway: connection ended with an error");
        }
    }
}

/// Moves bytes both ways until both directions have ended; an error in either ends both.
async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    config: &GatewayConfig,
    counters: &Counters,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if config.splice {
        if let Ok(pipes) = splice::Pipes::new() {
            return splice::relay(&client, &upstream, pipes, counters).await;
        }
    }
    copy_relay(client, upstream, config.buffer_size, counters).await
}

async fn copy_relay(
    mut client: TcpStream,
    mut upstream: TcpStream,
    buffer_size: usize,
    counters: &Counters,
) -> io::Result<()> {
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    tokio::try_join!(
        copy_one_way(&mut cr, &mut uw, buffer_size, counters, Direction::In),
        copy_one_way(&mut ur, &mut cw, buffer_size, counters, Direction::Out),
    )?;
    Ok(())
}

async fn copy_one_way<R, W>(
    r: &mut R,
    w: &mut W,
    buffer_size: usize,
    counters: &Counters,
    direction: Direction,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer_size.max(4096)];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Forward the half-close.
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        counters.add(direction, n);
    }
}

fn raise_fd_limit() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            lim.current = lim.maximum;
            let _ = setrlimit(Resource::Nofile, lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_server_config() {
        let mut c = ComputeConfig {
            gateway_bind: "127.0.0.1".into(),
            ..ComputeConfig::default()
        };
        assert_eq!(
            GatewayConfig::from_config(&c).unwrap().bind,
            IpAddr::from([127, 0, 0, 1])
        );
        c.gateway_bind = "nope".into();
        assert!(GatewayConfig::from_config(&c).is_err());
    }

    #[tokio::test]
    async fn bind_conflicts_are_reported() {
        let gw = Gateway::new(GatewayConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            ..GatewayConfig::default()
        });
        let none = resolver_fn(|| async { None });
        let addr = gw.open("a", 0, none.clone()).await.unwrap();
        assert!(matches!(
            gw.open("a", 0, none.clone()).await,
            Err(GatewayError::AlreadyOpen(_))
        ));
        let e = gw.open("b", addr.port(), none.clone()).await.unwrap_err();
        assert!(e.is_addr_in_use(), "{e}");
        assert!(!gw.is_open("b"));
        assert!(gw.close("a").await);
        assert!(!gw.close("a").await);
        // The port is free again right away.
        gw.open("b", addr.port(), none).await.unwrap();
        gw.close_all().await;
        assert!(gw.mappings().is_empty());
    }
}
