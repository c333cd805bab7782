//! The compose model: a user's docker-compose file, parsed, validated and normalized.
//!
//! Owns turning YAML text (already base64-decoded by the caller) into a [`ComposeApp`]: services
//! in file order with their image, command, environment, published ports, named volumes,
//! dependencies, restart policy and healthcheck. Every field is checked against the
//! [`Policy`](crate::policy::Policy); anything refused or unknown is an error naming its path
//! (`services.web.privileged`, `unsupported compose field services.web.foo`), so the API can answer
//! 400 with a precise message.
//!
//! The model is our own rather than `docker-compose-types`: that crate rejects integer ports and
//! mixed short/long port lists that people write every day, and its untagged enums produce errors
//! that do not name the field. The YAML is loaded into a bounded tree first (see `yaml`), so alias
//! bombs stop early, and interpolated against an empty environment (`${X:-default}` gives the
//! default): the server's environment is never visible to a compose file.
//!
//! This module never talks to Docker and never names containers; `container_name` is ignored.

pub mod reference;
mod service;
mod values;
pub(crate) mod yaml;

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;

use crate::policy::{self, Policy};
pub use reference::ImageRef;
use yaml::Node;

/// Why a compose file was not accepted. Every variant is the user's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposeError {
    #[error("compose file is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("compose file is not valid YAML: {0}")]
    NotYaml(String),
    #[error("compose file expands to more than {max_nodes} YAML nodes (too many aliases)")]
    TooComplex { max_nodes: usize },
    #[error("compose file must be a mapping with a services section")]
    NotCompose,
    #[error("compose file defines no services")]
    NoServices,
    #[error("compose file defines {count} services, at most {max} are allowed")]
    TooManyServices { count: usize, max: usize },
    #[error("unsupported compose field {field}")]
    Unsupported { field: String },
    #[error("{field} is not allowed: {reason}")]
    Refused { field: String, reason: &'static str },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ComposeError {
    /// The path of the offending field (`services.web.ports[0]`), when the error has one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ComposeError::Unsupported { field }
            | ComposeError::Refused { field, .. }
            | ComposeError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `tcp`, `udp` or `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port a service publishes (`ports:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// The port inside the container.
    pub container_port: u16,
    /// The host-side port the file asks for (`8080` in `8080:80`), if it names one. Nothing is
    /// bound on the host; this only tells which port the user knows the service by.
    pub published: Option<u16>,
    pub protocol: Protocol,
}

impl PortSpec {
    /// The port of the machine as the user sees it: the published port if the file names one,
    /// else the container port. This is what the API's `computerPort` refers to.
    pub fn machine_port(&self) -> u16 {
        self.published.unwrap_or(self.container_port)
    }
}

/// A port the app publishes, with the service that publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishedPort {
    pub service: String,
    pub container_port: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
}

impl PublishedPort {
    /// See [`PortSpec::machine_port`].
    pub fn machine_port(&self) -> u16 {
        self.published.unwrap_or(self.container_port)
    }
}

/// A port a service exposes to the other services only (`expose:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: Protocol,
}

/// A mount of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A named volume of the app (declared under the top-level `volumes:`).
    Volume {
        source: String,
        target: String,
        read_only: bool,
        nocopy: bool,
    },
    /// An anonymous volume: lives and dies with its container.
    Anonymous { target: String, read_only: bool },
    /// A memory-backed file system, bounded in size (charged to the container's memory).
    Tmpfs {
        target: String,
        size_bytes: u64,
        mode: Option<u32>,
    },
}

/// When a dependency counts as ready (`depends_on.<service>.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependsCondition {
    /// `service_started`: the container runs.
    Started,
    /// `service_healthy`: the container's healthcheck passes.
    Healthy,
    /// `service_completed_successfully`: the container ran and exited with status 0.
    CompletedSuccessfully,
}

impl DependsCondition {
    /// The compose spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DependsCondition::Started => "service_started",
            DependsCondition::Healthy => "service_healthy",
            DependsCondition::CompletedSuccessfully => "service_completed_successfully",
        }
    }

    /// Parses the compose spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service_started" => Some(DependsCondition::Started),
            "service_healthy" => Some(DependsCondition::Healthy),
            "service_completed_successfully" => Some(DependsCondition::CompletedSuccessfully),
            _ => None,
        }
    }
}

/// A service this one waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: DependsCondition,
}

/// A restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    /// Applied as `unless-stopped`, so that an instance stratus stopped stays stopped when the
    /// engine restarts.
    Always,
    OnFailure {
        max_retries: Option<u32>,
    },
    UnlessStopped,
}

/// A healthcheck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `disable: true` or `test: ["NONE"]`: the image's healthcheck is turned off.
    Disabled,
    Check {
        /// Docker form: `["CMD", …]` or `["CMD-SHELL", "…"]`; `None` keeps the image's test.
        test: Option<Vec<String>>,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        retries: Option<u32>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
    },
}

/// A ulimit (`ulimits:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Which network a service joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceNetwork {
    /// The instance's private network (every compose network collapses into it).
    #[default]
    Private,
    /// `network_mode: none`.
    None,
}

/// Where an image comes from (`pull_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PullPolicy {
    /// Pull only when the image is not present (`missing`, `if_not_present`, the default).
    #[default]
    Missing,
    Always,
    Never,
}

/// Where a service's image comes from, as the [`Policy`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageSource {
    /// From its registry (one on `compute.allowed_registries`): it runs only when the engine
    /// pulled it from there, never a local image that merely carries the same name.
    #[default]
    Registry,
    /// A local image the operator listed (`compute.local_images`): never pulled.
    Local,
}

/// One service, normalized.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub name: String,
    /// The image as the compose file names it (for messages).
    pub image: String,
    /// The image, normalized: what the runtime asks the engine for.
    pub image_ref: ImageRef,
    pub image_source: ImageSource,
    pub pull_policy: PullPolicy,
    /// `None` keeps the image's entrypoint; `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `None` keeps the image's command.
    pub command: Option<Vec<String>>,
    /// In file order; `None` is a variable named without a value (left unset, as compose does
    /// when the variable is not in its environment).
    pub environment: Vec<(String, Option<String>)>,
    pub ports: Vec<PortSpec>,
    pub expose: Vec<ExposedPort>,
    pub mounts: Vec<Mount>,
    pub depends_on: Vec<Dependency>,
    pub restart: Option<RestartPolicy>,
    pub healthcheck: Option<Healthcheck>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Extra names this service answers to on the private network (besides its own name).
    pub aliases: Vec<String>,
    pub network: ServiceNetwork,
    /// `host:ip` entries for `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub tty: bool,
    pub stdin_open: bool,
    pub init: bool,
    pub read_only: bool,
    pub cap_drop: Vec<String>,
    pub shm_size: Option<u64>,
    pub ulimits: Vec<Ulimit>,
}

/// A named volume of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A parsed, validated compose file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeApp {
    /// Services in file order.
    pub services: Vec<Service>,
    /// Named volumes in file order.
    pub volumes: Vec<Volume>,
}

impl ComposeApp {
    /// Parses and validates compose YAML under `policy`.
    pub fn parse(text: &str, policy: &Policy) -> Result<ComposeApp, ComposeError> {
        if text.len() > policy.max_bytes {
            return Err(ComposeError::TooLarge {
                size: text.len(),
                max: policy.max_bytes,
            });
        }
        let mut root = yaml::load(
            text,
            yaml::Budget {
                nodes: policy.max_nodes,
                scalar_bytes: policy.max_scalar_bytes,
            },
        )?;
        let map = match &mut root {
            Node::Map(m) => m,
            Node::Null => return Err(ComposeError::NoServices),
            _ => return Err(ComposeError::NotCompose),
        };
        // Extensions are never interpolated or inspected.
        map.retain(|k, _| !k.starts_with("x-"));
        yaml::interpolate_tree(&mut root, "")?;
        let Node::Map(map) = root else {
            unreachable!("checked above")
        };
        parse_top_level(map, policy)
    }

    /// The service names, in file order.
    pub fn service_names(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.name.as_str()).collect()
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every port the app publishes (`ports:`), in file order. Mappings target these.
    pub fn published_ports(&self) -> Vec<PublishedPort> {
        self.services
            .iter()
            .flat_map(|s| {
                s.ports.iter().map(move |p| PublishedPort {
                    service: s.name.clone(),
                    container_port: p.container_port,
                    published: p.published,
                    protocol: p.protocol,
                })
            })
            .collect()
    }

    /// The published TCP port a mapping's `computerPort` designates: first a port whose
    /// published (host-side) port is `port`, as on a machine running `docker compose up`, else
    /// the first whose container port is `port`.
    pub fn resolve_port(&self, port: u16) -> Option<PublishedPort> {
        resolve_port(self.published_ports(), port)
    }

    /// Indices of the services in an order where every service comes after its dependencies
    /// (file order among independent ones).
    pub fn start_order(&self) -> Vec<usize> {
        let graph: Vec<(String, Vec<String>)> = self
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.depends_on.iter().map(|d| d.service.clone()).collect(),
                )
            })
            .collect();
        dependency_order(&graph).expect("cycles are refused when parsing")
    }
}

/// See [`ComposeApp::resolve_port`]; shared with runtimes that read ports back from labels.
pub(crate) fn resolve_port(ports: Vec<PublishedPort>, port: u16) -> Option<PublishedPort> {
    let tcp = || ports.iter().filter(|p| p.protocol == Protocol::Tcp);
    tcp()
        .find(|p| p.published == Some(port))
        .or_else(|| tcp().find(|p| p.container_port == port))
        .cloned()
}

/// Orders `(name, dependencies)` so that dependencies come first; file order breaks ties.
/// Fails with the name of a service on a cycle. Unknown dependency names are ignored.
pub(crate) fn dependency_order(graph: &[(String, Vec<String>)]) -> Result<Vec<usize>, String> {
    let index: BTreeMap<&str, usize> = graph
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = graph
        .iter()
        .map(|(_, d)| {
            d.iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    let mut done = vec![false; graph.len()];
    let mut order = Vec::with_capacity(graph.len());
    while order.len() < graph.len() {
        let next = (0..graph.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => {
                let stuck = (0..graph.len()).find(|&i| !done[i]).expect("some left");
                return Err(graph[stuck].0.clone());
            }
        }
    }
    Ok(order)
}

/// Checks a name used for services, volumes and networks: it becomes part of Docker names.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn parse_top_level(
    map: IndexMap<String, Node>,
    policy: &Policy,
) -> Result<ComposeApp, ComposeError> {
    let mut services_node = None;
    let mut volumes = Vec::new();
    let mut networks = vec!["default".to_string()];
    for (key, value) in map {
        match key.as_str() {
            "version" | "name" => {}
            "services" => services_node = Some(value),
            "volumes" => {
                volumes = parse_volumes(value)?;
                if volumes.len() > policy.max_volumes {
                    return Err(ComposeError::Invalid {
                        field: "volumes".into(),
                        message: format!(
                            "the app declares {} volumes, at most {} are allowed",
                            volumes.len(),
                            policy.max_volumes
                        ),
                    });
                }
            }
            "networks" => networks.extend(parse_networks(value)?),
            k => {
                if let Some(reason) = policy::refused_top_level_key(k, &value) {
                    return Err(ComposeError::Refused { field: key, reason });
                }
                if !matches!(k, "secrets" | "configs" | "include") {
                    return Err(ComposeError::Unsupported { field: key });
                }
            }
        }
    }
    let services = match services_node {
        None | Some(Node::Null) => return Err(ComposeError::NoServices),
        Some(Node::Map(m)) => m,
        Some(other) => {
            return Err(ComposeError::Invalid {
                field: "services".into(),
                message: format!("expected a mapping of services, found {}", other.kind()),
            })
        }
    };
    if services.is_empty() {
        return Err(ComposeError::NoServices);
    }
    if services.len() > policy.max_services {
        return Err(ComposeError::TooManyServices {
            count: services.len(),
            max: policy.max_services,
        });
    }
    let names: Vec<String> = services.keys().cloned().collect();
    let ctx = service::Context {
        policy,
        services: &names,
        volumes: &volumes,
        networks: &networks,
    };
    let mut parsed = Vec::with_capacity(services.len());
    let mut links = Vec::new();
    // Every anonymous volume mount is a volume of its own on the engine.
    let mut volume_count = volumes.len();
    for (name, node) in services {
        let (svc, l) = service::parse(&name, node, &ctx)?;
        volume_count += svc
            .mounts
            .iter()
            .filter(|m| matches!(m, Mount::Anonymous { .. }))
            .count();
        if volume_count > policy.max_volumes {
            return Err(ComposeError::Invalid {
                field: format!("services.{name}.volumes"),
                message: format!(
                    "the app declares {volume_count} volumes (named and anonymous), at most {} are allowed",
                    policy.max_volumes
                ),
            });
        }
        parsed.push(svc);
        links.extend(l);
    }
    for (target, alias) in links {
        if let Some(s) = parsed.iter_mut().find(|s| s.name == target) {
            if !s.aliases.contains(&alias) {
                s.aliases.push(alias);
            }
        }
    }
    let app = ComposeApp {
        services: parsed,
        volumes,
    };
    let graph: Vec<(String, Vec<String>)> = app
        .services
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.depends_on.iter().map(|d| d.service.clone()).collect(),
            )
        })
        .collect();
    if let Err(name) = dependency_order(&graph) {
        return Err(ComposeError::Invalid {
            field: format!("services.{name}.depends_on"),
            message: "dependency cycle".into(),
        });
    }
    let published = app.published_ports().len();
    if published > policy.max_published_ports {
        return Err(ComposeError::Invalid {
            field: "services".into(),
            message: format!(
                "the app publishes {published} ports, at most {} are allowed",
                policy.max_published_ports
            ),
        });
    }
    Ok(app)
}

/// A top-level section (`volumes:`, `networks:`): absent or empty is an empty mapping.
fn section_map(node: Node, section: &str) -> Result<IndexMap<String, Node>, ComposeError> {
    match node {
        Node::Null => Ok(IndexMap::new()),
        Node::Map(m) => Ok(m),
        other => Err(ComposeError::Invalid {
            field: section.into(),
            message: format!("expected a mapping of {section}, found {}", other.kind()),
        }),
    }
}

fn parse_volumes(node: Node) -> Result<Vec<Volume>, ComposeError> {
    let map = section_map(node, "volumes")?;
    let mut out = Vec::with_capacity(map.len());
    for (name, def) in map {
        let field = format!("volumes.{name}");
        if !valid_name(&name) {
            return Err(ComposeError::Invalid {
                field,
                message: "a volume name is letters, digits, '_', '.' and '-' (at most 63)".into(),
            });
        }
        let mut labels = BTreeMap::new();
        match def {
            Node::Null => {}
            Node::Map(m) => {
                for (k, v) in m {
                    let f = format!("{field}.{k}");
                    if let Some(reason) = policy::refused_volume_key(&k, &v) {
                        return Err(ComposeError::Refused { field: f, reason });
                    }
                    match k.as_str() {
                        "driver" | "driver_opts" | "external" | "name" => {}
                        "labels" => labels = service::parse_labels(v, &f)?,
                        k if k.starts_with("x-") => {}
                        _ => return Err(ComposeError::Unsupported { field: f }),
                    }
                }
            }
            other => {
                return Err(ComposeError::Invalid {
                    field,
                    message: format!("expected a mapping, found {}", other.kind()),
                })
            }
        }
        out.push(Volume { name, labels });
    }
    Ok(out)
}

fn parse_networks(node: Node) -> Result<Vec<String>, ComposeError> {
    let map = section_map(node, "networks")?;
    let mut out = Vec::with_capacity(map.len());
    for (name, def) in map {
        let field = format!("networks.{name}");
        match def {
            Node::Null => {}
            Node::Map(m) => {
                for (k, v) in m {
                    let f = format!("{field}.{k}");
                    if let Some(reason) = policy::refused_network_key(&k, &v) {
                        return Err(ComposeError::Refused { field: f, reason });
                    }
                    match k.as_str() {
                        "driver" | "driver_opts" | "external" | "ipam" | "name" | "labels"
                        | "internal" | "attachable" | "enable_ipv6" => {}
                        k if k.starts_with("x-") => {}
                        _ => return Err(ComposeError::Unsupported { field: f }),
                    }
                }
            }
            other => {
                return Err(ComposeError::Invalid {
                    field,
                    message: format!("expected a mapping, found {}", other.kind()),
                })
            }
        }
        out.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
