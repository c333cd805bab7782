//! The Docker runtime: each instance is a private bridge network, labelled volumes and one
//! container per compose service.
//!
//! Owns talking to the engine (bollard, API version negotiated, `DOCKER_HOST` honoured). An
//! instance `<id>` is the network `stratus-<id>`, the volumes `stratus-<id>-<volume>` and the
//! containers `stratus-<id>-<service>`, all labelled `io.stratus.instance=<id>` (containers also
//! `io.stratus.service=<name>`); services reach each other by name through network aliases.
//! Nothing is bound on the host: the gateway connects to container addresses on the private
//! network.
//!
//! Resource bounds. The spec's CPUs and memory bound the *whole instance*. When the engine uses
//! the cgroupfs driver, runs on this host and we can write its cgroup hierarchies (checked once
//! at connect time by creating and limiting a probe group), each instance gets a parent cgroup
//! `/stratus/<id>` holding the limits (v1: `cpu.cfs_quota_us`, `memory.limit_in_bytes`,
//! `pids.max`; v2: `cpu.max`, `memory.max`, `pids.max`) and every container is created under it
//! (`CgroupParent`), each also capped at the whole instance's limits as a backstop. Otherwise
//! (systemd driver, remote engine, no permission) the limits are split evenly across the services
//! (`Memory`, `NanoCpus` per container). Every container always gets `PidsLimit`,
//! `no-new-privileges`, every capability dropped but the few a web app needs, a private cgroup
//! namespace, no privileged mode, bounded json-file logs and a restart policy that never brings
//! back an instance stratus stopped.
//!
//! Isolation. Unless configured off, the runtime installs the host [`Firewall`] when it
//! connects (connecting fails when it cannot: no sandbox runs unguarded) and puts each
//! instance's bridge under it before any of its containers starts; the bridge leaves the policy
//! with the instance, and the table goes with [`Runtime::close`].
//!
//! Images. A local image (`compute.local_images`) runs as it is on the engine. A registry image
//! runs only if the engine pulled it from that registry: the local image of that name must list
//! a digest of that very repository (`RepoDigests`), else it is pulled; the container is created
//! from the image id found that way, never from a name another image could take meanwhile. A
//! failed pull never falls back to a local look-alike, and its reason stays generic (the
//! engine's text, which can tell whether a port of some address is open, is only logged).
//!
//! It must never touch a container, network or volume that lacks the `io.stratus.instance`
//! label: everything is found by label, and removal goes by the ids found that way.

mod cgroup;
pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, HealthStatusEnum,
    NetworkCreateRequest, SystemInfoCgroupDriverEnum, SystemInfoCgroupVersionEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use parking_lot::Mutex;
use stratus_config::{ComputeConfig, EgressConfig};

use crate::compose::{
    dependency_order, resolve_port, DependsCondition, ImageRef, ImageSource, PullPolicy, Service,
};
use crate::firewall::{EgressPolicy, Firewall};
use crate::runtime::{validate_instance_id, InstanceSpec, InstanceState, Runtime, RuntimeError};
use cgroup::{CgroupTree, GroupLimits};
use spec::{
    container_body, container_name, network_name, parse_depends_label, parse_limits_label,
    parse_ports_label, volume_name, Bounding, Fixed, LABEL_DEPENDS, LABEL_INDEX, LABEL_INSTANCE,
    LABEL_LIMITS, LABEL_OWNER, LABEL_PORTS, LABEL_SERVICE, LABEL_SERVICES, LABEL_VOLUME,
};

/// How instance-wide CPU and memory bounds are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoundsMode {
    /// A parent cgroup per instance when possible, else split evenly across services.
    #[default]
    Auto,
    /// A parent cgroup per instance; connecting fails if that is not possible here.
    ParentCgroup,
    /// Split evenly across services.
    Split,
}

/// Settings of the Docker runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://…`); `None` honours `DOCKER_HOST`
    /// and falls back to the local socket.
    pub host: Option<String>,
    pub bounds: BoundsMode,
    /// Top-level cgroup under which instance groups are made (`/stratus/<id>`).
    pub cgroup_prefix: String,
    /// Longest wait for an image pull.
    pub pull_timeout: Duration,
    /// Longest wait, in `start`, for dependencies to become healthy or complete.
    pub start_timeout: Duration,
    /// Timeout of one engine request.
    pub request_timeout: Duration,
    /// `max-size` of each container's json-file log.
    pub log_max_size: String,
    /// `max-file` of each container's json-file log.
    pub log_max_files: u32,
    /// Who owns the instances this runtime makes: every object is labelled
    /// `io.stratus.owner=<owner>` and [`Runtime::instances`] lists only that owner's, so several
    /// stratus servers can share one engine without touching each other's instances.
    pub owner: Option<String>,
    /// The egress policy of the host [`Firewall`]; `None` runs sandboxes without the firewall
    /// (only where the operator isolates them otherwise).
    pub firewall: Option<EgressConfig>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            bounds: BoundsMode::Auto,
            cgroup_prefix: "stratus".into(),
            pull_timeout: Duration::from_secs(300),
            start_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(120),
            log_max_size: "10m".into(),
            log_max_files: 3,
            owner: None,
            firewall: Some(EgressConfig::default()),
        }
    }
}

impl DockerConfig {
    /// Defaults with the configured engine address and transition timeout.
    pub fn from_config(config: &ComputeConfig) -> Self {
        DockerConfig {
            host: config.docker_host.clone().filter(|h| !h.is_empty()),
            start_timeout: Duration::from_secs(config.transition_timeout_secs.max(10)),
            owner: config.owner.clone().filter(|o| !o.is_empty()),
            firewall: config.firewall.then(|| config.egress.clone()),
            ..DockerConfig::default()
        }
    }
}

/// How this runtime bounds instances, as decided at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounds {
    /// One parent cgroup per instance (cgroup version 1 or 2).
    ParentCgroup { version: u8 },
    /// The instance's limits split evenly across its services.
    Split { reason: String },
}

/// The Docker runtime.
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    cgroups: Option<CgroupTree>,
    bounds: Bounds,
    /// CPUs of the engine's host (`docker info`).
    host_cpus: f64,
    /// Instances this process stopped: their exit statuses are not failures.
    stopped: Mutex<HashSet<String>>,
    /// The host firewall, unless configured off.
    firewall: Option<Firewall>,
}

/// The interface of the route to exactly `subnet` in a `/proc/net/route` table (a bridge's
/// own subnet route).
fn subnet_device(table: &str, subnet: ipnet::Ipv4Net) -> Option<String> {
    let (dest, mask) = (u32::from(subnet.network()), u32::from(subnet.netmask()));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        // Addresses are in host byte order of a little-endian machine: bytes reversed.
        let parse = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
        (parse(f[1])? == dest && parse(f[7])? == mask).then(|| f[0].to_string())
    })
}

fn is_status(e: &BollardError, code: u16) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Maps an engine error that the user cannot fix.
fn engine(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError { .. } | BollardError::JsonDataError { .. } => {
            RuntimeError::Engine(engine_message(&e))
        }
        BollardError::RequestTimeoutError => RuntimeError::Unavailable("request timed out".into()),
        other => RuntimeError::Unavailable(other.to_string()),
    }
}

/// One container of an instance, as listed.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    service: String,
    index: usize,
    running: bool,
    labels: HashMap<String, String>,
    ip: Option<IpAddr>,
}

impl DockerRuntime {
    /// Connects to the engine, negotiates the API version and decides how to bound instances.
    pub async fn connect(config: DockerConfig) -> Result<DockerRuntime, RuntimeError> {
        let docker = match &config.host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| RuntimeError::Unavailable(e.to_string()))?
        .with_timeout(config.request_timeout);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        let info = docker.info().await.map_err(engine)?;
        let local = match &config.host {
            Some(h) => h.starts_with("unix://"),
            None => std::env::var("DOCKER_HOST")
                .map(|h| h.starts_with("unix://"))
                .unwrap_or(true),
        };
        let host_cpus = info
            .ncpu
            .filter(|&n| n > 0)
            .map(|n| n as f64)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as f64)
                    .unwrap_or(1.0)
            });
        let driver = info.cgroup_driver;
        let version = match info.cgroup_version {
            Some(SystemInfoCgroupVersionEnum::_2) => 2,
            _ => 1,
        };
        let (cgroups, bounds) = if config.bounds == BoundsMode::Split {
            (
                None,
                Bounds::Split {
                    reason: "configured".into(),
                },
            )
        } else {
            let attempt = async {
                if !local {
                    return Err("the engine is not on this host".to_string());
                }
                if driver != Some(SystemInfoCgroupDriverEnum::CGROUPFS) {
                    return Err(format!(
                        "the engine's cgroup driver is {}",
                        driver
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "unknown".into())
                    ));
                }
                let tree = CgroupTree::detect(version).map_err(|e| e.to_string())?;
                tree.probe(&config.cgroup_prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(tree)
            };
            match attempt.await {
                Ok(tree) => {
                    let version = tree.version();
                    (Some(tree), Bounds::ParentCgroup { version })
                }
                Err(reason) if config.bounds == BoundsMode::Auto => {
                    tracing::warn!(%reason, "docker runtime: no per-instance cgroup, splitting limits across services");
                    (None, Bounds::Split { reason })
                }
                Err(reason) => {
                    return Err(RuntimeError::Unavailable(format!(
                        "per-instance cgroups are not available: {reason}"
                    )))
                }
            }
        };
        let firewall = match &config.firewall {
            Some(egress) => {
                let installed = match EgressPolicy::from_config(egress) {
                    Ok(policy) => Firewall::install(&policy, config.owner.as_deref()).await,
                    Err(e) => Err(e),
                };
                match installed {
                    Ok(fw) => {
                        tracing::info!(table = fw.table(), "sandbox firewall installed (nftables)");
                        Some(fw)
                    }
                    Err(e) => {
                        // Said loudly once; the retries that follow say it quietly.
                        static SAID: std::sync::atomic::AtomicBool =
                            std::sync::atomic::AtomicBool::new(false);
                        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::error!(error = %e, "sandboxes are refused: the host firewall cannot be installed (it needs root and nft; compute.firewall = false runs sandboxes without it)");
                        } else {
                            tracing::debug!(error = %e, "sandboxes are refused: the host firewall cannot be installed");
                        }
                        return Err(RuntimeError::Firewall(e.to_string()));
                    }
                }
            }
            None => {
                tracing::warn!("sandboxes run WITHOUT the host firewall (compute.firewall = false): they can reach the host, other instances and private networks");
                None
            }
        };
        tracing::info!(api = ?docker.client_version(), ?bounds, "docker runtime connected");
        Ok(DockerRuntime {
            docker,
            config,
            cgroups,
            bounds,
            host_cpus,
            stopped: Mutex::new(HashSet::new()),
            firewall,
        })
    }

    /// The host firewall, when it is on.
    pub fn firewall(&self) -> Option<&Firewall> {
        self.firewall.as_ref()
    }

    /// The bridge interface of the instance's network, if the network exists.
    pub async fn bridge_of(&self, instance_id: &str) -> Result<Option<String>, RuntimeError> {
        let net = match self
            .docker
            .inspect_network(&network_name(instance_id), None)
            .await
        {
            Ok(n) => n,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(engine(e)),
        };
        let named = net
            .options
            .as_ref()
            .and_then(|o| o.get("com.docker.network.bridge.name"))
            .filter(|n| !n.is_empty())
            .cloned()
            .or_else(|| {
                net.id
                    .as_ref()
                    .filter(|id| id.len() >= 12)
                    .map(|id| format!("br-{}", &id[..12]))
            });
        if named
            .as_deref()
            .is_some_and(crate::firewall::interface_exists)
        {
            return Ok(named);
        }
        // An engine that names its bridges otherwise: the interface the kernel routes the
        // network's subnet to.
        let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let subnets = net
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.subnet)
            .filter_map(|s| s.parse::<ipnet::Ipv4Net>().ok());
        for subnet in subnets {
            if let Some(dev) = subnet_device(&table, subnet) {
                return Ok(Some(dev));
            }
        }
        Ok(named)
    }

    /// Puts the instance's bridge under the firewall (before any of its containers runs).
    async fn guard(&self, instance_id: &str) -> Result<(), RuntimeError> {
        let Some(fw) = &self.firewall else {
            return Ok(());
        };
        let Some(bridge) = self.bridge_of(instance_id).await? else {
            return Err(RuntimeError::Engine(format!(
                "the network of instance {instance_id} is missing"
            )));
        };
        // Fail closed: a name that is no interface here would guard nothing.
        if !crate::firewall::interface_exists(&bridge) {
            return Err(RuntimeError::Unavailable(format!(
                "sandbox firewall: the bridge of instance {instance_id} ({bridge}) is not an \
                 interface of this host"
            )));
        }
        fw.admit(&bridge).await.map_err(|e| {
            RuntimeError::Unavailable(format!("sandbox firewall: cannot guard {bridge}: {e}"))
        })
    }

    /// Connects with [`DockerConfig::from_config`].
    pub async fn from_config(config: &ComputeConfig) -> Result<DockerRuntime, RuntimeError> {
        Self::connect(DockerConfig::from_config(config)).await
    }

    /// How instances are bounded here.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The bollard client (for inspection in tests and tools).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The directory of the instance's parent cgroup that holds its memory limit, when
    /// instances are bounded by a parent cgroup.
    pub fn instance_cgroup_dir(&self, instance_id: &str) -> Option<std::path::PathBuf> {
        self.cgroups
            .as_ref()
            .map(|t| t.memory_dir(&self.config.cgroup_prefix, instance_id))
    }

    fn cgroup_parent(&self, instance_id: &str) -> String {
        format!("/{}/{}", self.config.cgroup_prefix, instance_id)
    }

    fn label_filter(instance_id: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={instance_id}")],
        )])
    }

    async fn list(&self, instance_id: &str) -> Result<Vec<Member>, RuntimeError> {
        let summaries: Vec<ContainerSummary> = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(Self::label_filter(instance_id)),
                ..Default::default()
            }))
            .await
            .map_err(engine)?;
        let network = network_name(instance_id);
        let mut members: Vec<Member> = summaries
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                if labels.get(LABEL_INSTANCE).map(String::as_str) != Some(instance_id) {
                    return None;
                }
                let service = labels.get(LABEL_SERVICE)?.clone();
                let index = labels
                    .get(LABEL_INDEX)
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(usize::MAX);
                let running = c.state.map(|s| s.to_string()) == Some("running".into());
                let ip = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|mut n| n.remove(&network))
                    .and_then(|e| e.ip_address)
                    .and_then(|ip| ip.parse().ok());
                Some(Member {
                    id: c.id?,
                    service,
                    index,
                    running,
                    labels,
                    ip,
                })
            })
            .collect();
        members.sort_by(|a, b| (a.index, &a.service).cmp(&(b.index, &b.service)));
        Ok(members)
    }

    /// Members in dependency order (dependencies first).
    fn start_order(members: &[Member]) -> Vec<usize> {
        let graph: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|m| {
                let deps = m
                    .labels
                    .get(LABEL_DEPENDS)
                    .map(|d| parse_depends_label(d).into_iter().map(|(s, _)| s).collect())
                    .unwrap_or_default();
                (m.service.clone(), deps)
            })
            .collect();
        dependency_order(&graph).unwrap_or_else(|_| (0..members.len()).collect())
    }

    /// The id of the image `svc` runs: a listed local image as it is, a registry image only as
    /// the engine pulled it from its registry (pulling it when the engine holds no such copy).
    async fn resolve_image(&self, svc: &Service) -> Result<String, RuntimeError> {
        let image = &svc.image_ref;
        let unavailable = |reason: &str| RuntimeError::ImageUnavailable {
            image: svc.image.clone(),
            reason: reason.to_string(),
        };
        if svc.image_source == ImageSource::Local {
            return match self.docker.inspect_image(&image.canonical()).await {
                Ok(i) => i.id.ok_or_else(|| unavailable("has no id")),
                Err(e) if is_status(&e, 404) => Err(unavailable("is not available on this host")),
                Err(e) => Err(engine(e)),
            };
        }
        let pulled = self.pulled_copy(image).await?;
        let must_pull = match svc.pull_policy {
            PullPolicy::Always => true,
            PullPolicy::Missing => pulled.is_none(),
            PullPolicy::Never => {
                return pulled.ok_or_else(|| {
                    unavailable("is not available on this host (pull_policy: never)")
                })
            }
        };
        if !must_pull {
            return Ok(pulled.expect("checked above"));
        }
        match self.pull(image).await {
            Ok(id) => Ok(id),
            Err(message) => {
                tracing::warn!(image = %image, engine = %message, "image pull failed");
                match pulled {
                    // A copy this registry gave the engine before is still that registry's.
                    Some(id) => {
                        tracing::warn!(image = %image, "using the copy pulled before");
                        Ok(id)
                    }
                    None => Err(unavailable("could not be pulled from its registry")),
                }
            }
        }
    }

    /// The id of the engine's copy of `image` if the engine pulled it from its registry: the
    /// image must list a digest of that very repository, and that digest must name the same
    /// image. A look-alike (committed, loaded or re-tagged under the name) has no such digest.
    async fn pulled_copy(&self, image: &ImageRef) -> Result<Option<String>, RuntimeError> {
        let inspect = match self.docker.inspect_image(&image.canonical()).await {
            Ok(i) => i,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(engine(e)),
        };
        let Some(id) = inspect.id else {
            return Ok(None);
        };
        let name = image.name();
        for repo_digest in inspect.repo_digests.unwrap_or_default() {
            let Ok(r) = ImageRef::parse(&repo_digest) else {
                continue;
            };
            let Some(digest) = &r.digest else { continue };
            if r.name() != name || image.digest.as_ref().is_some_and(|d| d != digest) {
                continue;
            }
            match self.docker.inspect_image(&format!("{name}@{digest}")).await {
                Ok(by_digest) if by_digest.id.as_deref() == Some(id.as_str()) => {
                    return Ok(Some(id))
                }
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(engine(e)),
            }
        }
        Ok(None)
    }

    /// Pulls `image` from its registry; the id of what was pulled (found by the digest the
    /// pull reports), or the engine's message.
    async fn pull(&self, image: &ImageRef) -> Result<String, String> {
        let name = image.name();
        let tag = image
            .digest
            .clone()
            .or_else(|| image.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let pull = async {
            let mut reported = None;
            let mut stream = self.docker.create_image(
                Some(CreateImageOptions {
                    from_image: Some(name.clone()),
                    tag: Some(tag),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| engine_message(&e))?;
                if let Some(d) = info
                    .status
                    .as_deref()
                    .and_then(|s| s.strip_prefix("Digest: "))
                {
                    reported = Some(d.trim().to_string());
                }
            }
            Ok::<_, String>(reported)
        };
        let reported = match tokio::time::timeout(self.config.pull_timeout, pull).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(format!(
                    "pull did not finish within {} s",
                    self.config.pull_timeout.as_secs()
                ))
            }
        };
        let digest = reported
            .or_else(|| image.digest.clone())
            .ok_or_else(|| "the pull reported no digest".to_string())?;
        match self.docker.inspect_image(&format!("{name}@{digest}")).await {
            Ok(i) => i.id.ok_or_else(|| "the pulled image has no id".to_string()),
            Err(e) => Err(engine_message(&e)),
        }
    }

    fn group_limits(cpus: f64, memory_bytes: u64, pids: i64, services: usize) -> GroupLimits {
        GroupLimits {
            cpus,
            memory_bytes,
            pids: pids.saturating_mul(services.max(1) as i64),
        }
    }

    async fn create_inner(
        &self,
        spec: &InstanceSpec,
        images: &[String],
    ) -> Result<(), RuntimeError> {
        let id = &spec.instance_id;
        let mut labels = HashMap::from([(LABEL_INSTANCE.to_string(), id.clone())]);
        if let Some(owner) = &self.config.owner {
            labels.insert(LABEL_OWNER.to_string(), owner.clone());
        }
        self.docker
            .create_network(NetworkCreateRequest {
                name: network_name(id),
                driver: Some("bridge".into()),
                internal: Some(false),
                attachable: Some(false),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                if is_status(&e, 409) {
                    RuntimeError::AlreadyExists(id.clone())
                } else {
                    engine(e)
                }
            })?;
        self.guard(id).await?;
        crate::crashpoint::reached("compute.create.after_network");
        let bounding = match &self.cgroups {
            Some(tree) => {
                let limits = Self::group_limits(
                    spec.cpus,
                    spec.memory_bytes,
                    spec.pids_limit,
                    spec.app.services.len(),
                );
                tree.apply(&self.config.cgroup_prefix, id, &limits)
                    .map_err(|e| RuntimeError::Engine(format!("instance cgroup: {e}")))?;
                Bounding::Parent {
                    cgroup_parent: self.cgroup_parent(id),
                }
            }
            None => Bounding::Split,
        };
        for v in &spec.app.volumes {
            let mut vlabels: HashMap<String, String> = v
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            vlabels.extend(labels.clone());
            vlabels.insert(LABEL_VOLUME.into(), v.name.clone());
            self.docker
                .create_volume(VolumeCreateRequest {
                    name: Some(volume_name(id, &v.name)),
                    driver: Some("local".into()),
                    labels: Some(vlabels),
                    ..Default::default()
                })
                .await
                .map_err(engine)?;
        }
        let fixed = Fixed {
            host_cpus: self.host_cpus,
            log_max_size: self.config.log_max_size.clone(),
            log_max_files: self.config.log_max_files,
            owner: self.config.owner.clone(),
        };
        for (index, svc) in spec.app.services.iter().enumerate() {
            let body = container_body(spec, index, &images[index], &bounding, &fixed);
            self.docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(container_name(id, &svc.name)),
                        ..Default::default()
                    }),
                    body,
                )
                .await
                .map_err(|e| match &e {
                    _ if is_status(&e, 409) => RuntimeError::AlreadyExists(id.clone()),
                    BollardError::DockerResponseServerError { status_code, .. }
                        if *status_code == 400 || *status_code == 404 =>
                    {
                        RuntimeError::Service {
                            service: svc.name.clone(),
                            reason: engine_message(&e),
                        }
                    }
                    _ => engine(e),
                })?;
            crate::crashpoint::reached("compute.create.after_service");
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(engine(e)),
        }
    }

    /// Waits until `dep` satisfies `condition`, up to `deadline`.
    async fn wait_for(
        &self,
        dependent: &str,
        dep: &Member,
        condition: DependsCondition,
        deadline: Instant,
    ) -> Result<(), RuntimeError> {
        let fail = |reason: String| RuntimeError::Service {
            service: dependent.to_string(),
            reason,
        };
        if condition == DependsCondition::Started {
            return Ok(());
        }
        loop {
            let Some(c) = self.inspect(&dep.id).await? else {
                return Err(fail(format!("dependency {} is missing", dep.service)));
            };
            let state = c.state.unwrap_or_default();
            let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
            let exit = state.exit_code.unwrap_or(0);
            match condition {
                DependsCondition::Healthy => {
                    let health = state.health.and_then(|h| h.status);
                    match health {
                        Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                        Some(HealthStatusEnum::UNHEALTHY) => {
                            return Err(fail(format!("dependency {} is unhealthy", dep.service)))
                        }
                        None | Some(HealthStatusEnum::NONE) | Some(HealthStatusEnum::EMPTY) => {
                            return Err(fail(format!(
                                "dependency {} has no healthcheck (condition service_healthy)",
                                dep.service
                            )))
                        }
                        Some(HealthStatusEnum::STARTING) => {}
                    }
                    if matches!(
                        status,
                        ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD
                    ) {
                        return Err(fail(format!(
                            "dependency {} exited with code {exit}",
                            dep.service
                        )));
                    }
                }
                DependsCondition::CompletedSuccessfully => match status {
                    ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => {
                        if exit == 0 && status == ContainerStateStatusEnum::EXITED {
                            return Ok(());
                        }
                        return Err(fail(format!(
                            "dependency {} exited with code {exit}",
                            dep.service
                        )));
                    }
                    _ => {}
                },
                DependsCondition::Started => return Ok(()),
            }
            if Instant::now() >= deadline {
                let what = match condition {
                    DependsCondition::Healthy => "become healthy",
                    _ => "complete",
                };
                return Err(fail(format!(
                    "dependency {} did not {what} within {} s",
                    dep.service,
                    self.config.start_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn reapply_bounds(&self, instance_id: &str, members: &[Member]) -> Result<(), RuntimeError> {
        let Some(tree) = &self.cgroups else {
            return Ok(());
        };
        let Some((cpus, memory, pids, services)) = members.iter().find_map(|m| {
            m.labels
                .get(LABEL_LIMITS)
                .and_then(|l| parse_limits_label(l))
        }) else {
            return Ok(());
        };
        tree.apply(
            &self.config.cgroup_prefix,
            instance_id,
            &Self::group_limits(cpus, memory, pids, services),
        )
        .map_err(|e| RuntimeError::Engine(format!("instance cgroup: {e}")))
    }

    fn check_placement(&self, instance_id: &str, members: &[Member]) {
        let Some(tree) = &self.cgroups else { return };
        for m in members {
            if !tree.holds(&self.config.cgroup_prefix, instance_id, &m.id) {
                tracing::warn!(
                    instance = instance_id,
                    service = %m.service,
                    "container is not under the instance cgroup; only its own caps apply"
                );
            }
        }
    }

    async fn stop_members(&self, members: &[Member]) -> Result<(), RuntimeError> {
        // Dependents first: stop by decreasing depth, each depth at once.
        let order = Self::start_order(members);
        let mut depth = vec![0usize; members.len()];
        let by_name: HashMap<&str, usize> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.service.as_str(), i))
            .collect();
        for &i in &order {
            let deps = members[i]
                .labels
                .get(LABEL_DEPENDS)
                .map(|d| parse_depends_label(d))
                .unwrap_or_default();
            depth[i] = deps
                .iter()
                .filter_map(|(s, _)| by_name.get(s.as_str()))
                .map(|&d| depth[d] + 1)
                .max()
                .unwrap_or(0);
        }
        let max_depth = depth.iter().copied().max().unwrap_or(0);
        for level in (0..=max_depth).rev() {
            let stops = members
                .iter()
                .enumerate()
                .filter(|(i, _)| depth[*i] == level)
                .map(|(_, m)| async move {
                    match self
                        .docker
                        .stop_container(&m.id, None::<StopContainerOptions>)
                        .await
                    {
                        Ok(()) => Ok(()),
                        Err(e) if is_status(&e, 304) || is_status(&e, 404) => Ok(()),
                        Err(e) => Err(engine(e)),
                    }
                });
            for r in futures_util::future::join_all(stops).await {
                r?;
            }
        }
        Ok(())
    }

    async fn observe(
        &self,
        instance_id: &str,
        members: &[Member],
    ) -> Result<InstanceState, RuntimeError> {
        if members.is_empty() {
            return Ok(InstanceState::Missing);
        }
        let missing = Self::missing_services(members);
        if !missing.is_empty() {
            return Ok(InstanceState::Incomplete { missing });
        }
        // One-shot services: something waits for them to complete.
        let one_shots: HashSet<String> = members
            .iter()
            .flat_map(|m| {
                m.labels
                    .get(LABEL_DEPENDS)
                    .map(|d| parse_depends_label(d))
                    .unwrap_or_default()
            })
            .filter(|(_, c)| *c == DependsCondition::CompletedSuccessfully)
            .map(|(s, _)| s)
            .collect();
        let stopped_by_us = self.stopped.lock().contains(instance_id);
        let mut running = Vec::new();
        let mut stopped = Vec::new();
        for m in members {
            let Some(c) = self.inspect(&m.id).await? else {
                return Ok(InstanceState::Failed {
                    reason: format!("the container of service {} is missing", m.service),
                });
            };
            let state = c.state.unwrap_or_default();
            let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
            let exit = state.exit_code.unwrap_or(0);
            let name = &m.service;
            if state.oom_killed == Some(true) {
                return Ok(InstanceState::Failed {
                    reason: format!("service {name} was killed: out of memory"),
                });
            }
            match status {
                ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED => {
                    if state.health.and_then(|h| h.status) == Some(HealthStatusEnum::UNHEALTHY) {
                        return Ok(InstanceState::Failed {
                            reason: format!("service {name} is unhealthy"),
                        });
                    }
                    running.push(name.clone());
                }
                ContainerStateStatusEnum::RESTARTING => {
                    return Ok(InstanceState::Failed {
                        reason: format!("service {name} keeps restarting (last exit code {exit})"),
                    })
                }
                ContainerStateStatusEnum::DEAD => {
                    return Ok(InstanceState::Failed {
                        reason: format!(
                            "service {name} is dead: {}",
                            state.error.unwrap_or_default()
                        ),
                    })
                }
                ContainerStateStatusEnum::EXITED => {
                    let signalled = matches!(exit, 130 | 131 | 137 | 143);
                    if exit != 0 && !signalled && !stopped_by_us {
                        let detail = state.error.filter(|e| !e.is_empty());
                        return Ok(InstanceState::Failed {
                            reason: match detail {
                                Some(d) => format!("service {name} exited with code {exit}: {d}"),
                                None => format!("service {name} exited with code {exit}"),
                            },
                        });
                    }
                    if !(exit == 0 && one_shots.contains(name)) {
                        stopped.push(name.clone());
                    }
                }
                _ => stopped.push(name.clone()),
            }
        }
        Ok(if running.is_empty() {
            InstanceState::Stopped
        } else if stopped.is_empty() {
            InstanceState::Running
        } else {
            InstanceState::Partial { running, stopped }
        })
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let id = &spec.instance_id;
        validate_instance_id(id)?;
        if spec.app.services.is_empty() {
            return Err(RuntimeError::InvalidSpec("the app has no services".into()));
        }
        if !(spec.cpus.is_finite() && spec.cpus >= 0.01) {
            return Err(RuntimeError::InvalidSpec(format!(
                "invalid CPU count {}",
                spec.cpus
            )));
        }
        let min_memory = 16u64 << 20;
        if spec.memory_bytes / (spec.app.services.len() as u64) < min_memory {
            return Err(RuntimeError::InvalidSpec(format!(
                "{} bytes of memory is too little for {} services",
                spec.memory_bytes,
                spec.app.services.len()
            )));
        }
        if spec.pids_limit < 1 {
            return Err(RuntimeError::InvalidSpec(
                "the pids limit must be positive".into(),
            ));
        }
        if !self.list(id).await?.is_empty() || self.network_exists(id).await? {
            return Err(RuntimeError::AlreadyExists(id.clone()));
        }
        let mut resolved: HashMap<(&ImageRef, ImageSource, PullPolicy), String> = HashMap::new();
        let mut images = Vec::with_capacity(spec.app.services.len());
        for svc in &spec.app.services {
            let key = (&svc.image_ref, svc.image_source, svc.pull_policy);
            let image_id = match resolved.get(&key) {
                Some(i) => i.clone(),
                None => {
                    let i = self.resolve_image(svc).await?;
                    resolved.insert(key, i.clone());
                    i
                }
            };
            images.push(image_id);
        }
        self.stopped.lock().remove(id);
        if let Err(e) = self.create_inner(spec, &images).await {
            // Removal goes by label: only what this call created is removed.
            if let Err(cleanup) = self.remove(id).await {
                tracing::warn!(instance = %id, error = %cleanup, "cleanup after a failed create");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn start(&self, instance_id: &str) -> Result<(), RuntimeError> {
        validate_instance_id(instance_id)?;
        let members = self.list(instance_id).await?;
        if members.is_empty() {
            return Err(RuntimeError::NotFound(instance_id.into()));
        }
        let missing = Self::missing_services(&members);
        if !missing.is_empty() {
            return Err(RuntimeError::Incomplete(missing));
        }
        self.guard(instance_id).await?;
        self.reapply_bounds(instance_id, &members)?;
        self.stopped.lock().remove(instance_id);
        let deadline = Instant::now() + self.config.start_timeout;
        let by_name: HashMap<&str, &Member> =
            members.iter().map(|m| (m.service.as_str(), m)).collect();
        for i in Self::start_order(&members) {
            let m = &members[i];
            let deps = m
                .labels
                .get(LABEL_DEPENDS)
                .map(|d| parse_depends_label(d))
                .unwrap_or_default();
            for (dep, condition) in deps {
                if let Some(d) = by_name.get(dep.as_str()) {
                    self.wait_for(&m.service, d, condition, deadline).await?;
                }
            }
            if m.running {
                continue;
            }
            match self.docker.start_container(&m.id, None).await {
                Ok(()) => {}
                Err(e) if is_status(&e, 304) => {}
                Err(e @ BollardError::DockerResponseServerError { .. }) => {
                    return Err(RuntimeError::Service {
                        service: m.service.clone(),
                        reason: engine_message(&e),
                    })
                }
                Err(e) => return Err(engine(e)),
            }
        }
        self.check_placement(instance_id, &members);
        Ok(())
    }

    async fn stop(&self, instance_id: &str) -> Result<(), RuntimeError> {
        validate_instance_id(instance_id)?;
        let members = self.list(instance_id).await?;
        if members.is_empty() {
            return Err(RuntimeError::NotFound(instance_id.into()));
        }
        self.stopped.lock().insert(instance_id.to_string());
        self.stop_members(&members).await
    }

    async fn restart(&self, instance_id: &str) -> Result<(), RuntimeError> {
        self.stop(instance_id).await?;
        self.start(instance_id).await
    }

    async fn remove(&self, instance_id: &str) -> Result<(), RuntimeError> {
        validate_instance_id(instance_id)?;
        let members = self.list(instance_id).await?;
        let removals = members.iter().map(|m| async move {
            let mut attempt = 0;
            loop {
                match self
                    .docker
                    .remove_container(
                        &m.id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..Default::default()
                        }),
                    )
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) if is_status(&e, 404) => return Ok(()),
                    // A removal already in progress (one a killed server started, say).
                    Err(e) if is_status(&e, 409) && attempt < 50 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(engine(e)),
                }
            }
        });
        for r in futures_util::future::join_all(removals).await {
            r?;
        }
        crate::crashpoint::reached("compute.remove.after_containers");
        if let Some(fw) = &self.firewall {
            if let Some(bridge) = self.bridge_of(instance_id).await? {
                fw.release(&bridge).await;
            }
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(Self::label_filter(instance_id)),
            }))
            .await
            .map_err(engine)?;
        for n in networks {
            let ours = n
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE))
                .map(String::as_str)
                == Some(instance_id);
            if let (true, Some(id)) = (ours, n.id) {
                match self.docker.remove_network(&id).await {
                    Ok(()) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(engine(e)),
                }
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(Self::label_filter(instance_id)),
            }))
            .await
            .map_err(engine)?;
        for v in volumes.volumes.unwrap_or_default() {
            if v.labels.get(LABEL_INSTANCE).map(String::as_str) != Some(instance_id) {
                continue;
            }
            let mut attempt = 0;
            loop {
                match self
                    .docker
                    .remove_volume(&v.name, Some(RemoveVolumeOptions { force: false }))
                    .await
                {
                    Ok(()) => break,
                    Err(e) if is_status(&e, 404) => break,
                    // The engine may still be releasing a just-removed container.
                    Err(e) if is_status(&e, 409) && attempt < 20 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(engine(e)),
                }
            }
        }
        if let Some(tree) = &self.cgroups {
            tree.remove(&self.config.cgroup_prefix, instance_id)
                .await
                .map_err(|e| RuntimeError::Engine(format!("instance cgroup: {e}")))?;
        }
        self.stopped.lock().remove(instance_id);
        Ok(())
    }

    async fn state(&self, instance_id: &str) -> Result<InstanceState, RuntimeError> {
        validate_instance_id(instance_id)?;
        let members = self.list(instance_id).await?;
        self.observe(instance_id, &members).await
    }

    async fn endpoint(
        &self,
        instance_id: &str,
        port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        validate_instance_id(instance_id)?;
        let members = self.list(instance_id).await?;
        let ports = members
            .iter()
            .flat_map(|m| {
                m.labels
                    .get(LABEL_PORTS)
                    .map(|p| parse_ports_label(&m.service, p))
                    .unwrap_or_default()
            })
            .collect();
        let Some(target) = resolve_port(ports, port) else {
            return Ok(None);
        };
        Ok(members
            .iter()
            .find(|m| m.service == target.service && m.running)
            .and_then(|m| m.ip)
            .map(|ip| SocketAddr::new(ip, target.container_port)))
    }

    async fn instances(&self) -> Result<Vec<String>, RuntimeError> {
        let mut wanted = vec![LABEL_INSTANCE.to_string()];
        if let Some(owner) = &self.config.owner {
            wanted.push(format!("{LABEL_OWNER}={owner}"));
        }
        let filter = HashMap::from([("label".to_string(), wanted)]);
        let mut ids = BTreeMap::new();
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filter.clone()),
                ..Default::default()
            }))
            .await
            .map_err(engine)?;
        for c in containers {
            if let Some(id) = c.labels.and_then(|mut l| l.remove(LABEL_INSTANCE)) {
                ids.insert(id, ());
            }
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filter.clone()),
            }))
            .await
            .map_err(engine)?;
        for n in networks {
            if let Some(id) = n.labels.and_then(|mut l| l.remove(LABEL_INSTANCE)) {
                ids.insert(id, ());
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filter),
            }))
            .await
            .map_err(engine)?;
        for mut v in volumes.volumes.unwrap_or_default() {
            if let Some(id) = v.labels.remove(LABEL_INSTANCE) {
                ids.insert(id, ());
            }
        }
        Ok(ids
            .into_keys()
            .filter(|id| validate_instance_id(id).is_ok())
            .collect())
    }

    async fn recover(&self, instance_id: &str) -> Result<InstanceState, RuntimeError> {
        validate_instance_id(instance_id)?;
        let members = self.list(instance_id).await?;
        if !members.is_empty() {
            if self.network_exists(instance_id).await? {
                if let Err(e) = self.guard(instance_id).await {
                    // Fail closed: what the firewall cannot guard does not keep running.
                    tracing::error!(instance = instance_id, error = %e, "stopping an instance the firewall cannot guard");
                    self.stopped.lock().insert(instance_id.to_string());
                    self.stop_members(&members).await?;
                    return Ok(InstanceState::Failed {
                        reason: format!("stopped: {e}"),
                    });
                }
            }
            self.reapply_bounds(instance_id, &members)?;
        }
        self.observe(instance_id, &members).await
    }

    async fn resource_groups(&self) -> Result<Vec<String>, RuntimeError> {
        let Some(tree) = &self.cgroups else {
            return Ok(Vec::new());
        };
        Ok(tree
            .groups(&self.config.cgroup_prefix)
            .into_iter()
            .filter(|id| validate_instance_id(id).is_ok())
            .collect())
    }

    async fn close(&self) {
        if let Some(fw) = &self.firewall {
            fw.close().await;
        }
    }

    async fn tidy(&self) {
        if let Some(fw) = &self.firewall {
            fw.prune().await;
        }
    }
}

impl DockerRuntime {
    /// Services the instance was created with (the label every container carries) that have
    /// no container now, in file order.
    fn missing_services(members: &[Member]) -> Vec<String> {
        let Some(first) = members.first() else {
            return Vec::new();
        };
        first
            .labels
            .get(LABEL_SERVICES)
            .map(|s| {
                s.split(',')
                    .filter(|name| !name.is_empty() && !members.iter().any(|m| m.service == *name))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn network_exists(&self, instance_id: &str) -> Result<bool, RuntimeError> {
        match self
            .docker
            .inspect_network(&network_name(instance_id), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_is_found_by_its_subnet_route() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
sbx-7\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
        assert_eq!(
            subnet_device(table, net("172.18.0.0/16")).as_deref(),
            Some("sbx-7")
        );
        assert_eq!(
            subnet_device(table, net("172.17.0.0/16")).as_deref(),
            Some("docker0")
        );
        assert_eq!(subnet_device(table, net("172.18.0.0/24")), None);
        assert_eq!(subnet_device(table, net("10.0.0.0/8")), None);
    }
}
