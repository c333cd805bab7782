//! The runtime contract: what any sandbox backend (Docker today, VMs with SSH later) offers.
//!
//! Owns [`Runtime`], the description of an instance to run ([`InstanceSpec`]), the observed
//! state ([`InstanceState`]) and [`RuntimeError`], whose messages are plain English a user may
//! read. A runtime keeps no database: everything it needs to find an instance again after a
//! restart of stratus lives in the backend itself (labels), so [`Runtime::instances`] and
//! [`Runtime::recover`] re-attach. It must never touch an object it did not create.

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;

use crate::compose::ComposeApp;

/// Everything needed to create one instance.
#[derive(Clone)]
pub struct InstanceSpec {
    /// Our id of the instance; letters, digits, `_`, `.`, `-`, at most 64 (a UUID fits).
    pub instance_id: String,
    /// The user's app.
    pub app: ComposeApp,
    /// CPUs for the whole instance (`2.0` = two cores).
    pub cpus: f64,
    /// Memory for the whole instance, in bytes.
    pub memory_bytes: u64,
    /// Most processes (threads included) per container.
    pub pids_limit: i64,
    /// SSH public key of the user (used by VM runtimes; the Docker runtime has no SSH).
    pub public_key: Option<String>,
    /// Login password of the user (used by VM runtimes; the Docker runtime has no SSH).
    pub password: Option<String>,
}

impl fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("instance_id", &self.instance_id)
            .field("services", &self.app.service_names())
            .field("cpus", &self.cpus)
            .field("memory_bytes", &self.memory_bytes)
            .field("pids_limit", &self.pids_limit)
            .field("public_key", &self.public_key.as_ref().map(|_| "…"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What an instance looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Nothing of the instance exists.
    Missing,
    /// Created, nothing runs (never started, or stopped).
    Stopped,
    /// Every service runs (one-shot services that exited with status 0 count as done).
    Running,
    /// Some services have no container (a crash while the instance was created, or a container
    /// removed behind the runtime's back): it cannot start as it is; names in file order.
    Incomplete { missing: Vec<String> },
    /// Some services run, others do not; names in file order.
    Partial {
        running: Vec<String>,
        stopped: Vec<String>,
    },
    /// A service crashed, was killed for lack of memory, is unhealthy, loops restarting, or its
    /// container is gone. A service that exited with a status other than 0 or a termination
    /// signal (130, 131, 137, 143) counts as crashed, unless this runtime stopped the instance:
    /// apps should exit cleanly on SIGTERM.
    Failed { reason: String },
}

/// Why a runtime operation failed. `is_user_error` tells the API whether the user can fix it
/// (400/409) or it is the platform's fault (500/503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid instance id {0:?}: letters, digits, '_', '.' and '-' only, at most 64")]
    InvalidInstanceId(String),
    #[error("instance {0} already exists")]
    AlreadyExists(String),
    #[error("instance {0} does not exist")]
    NotFound(String),
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),
    /// The image is neither present nor pullable; `reason` says why.
    #[error("image {image} {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// A service could not be created or started, or did not become ready.
    #[error("service {service}: {reason}")]
    Service { service: String, reason: String },
    /// Services of the instance have no container: it cannot run as created.
    #[error("the containers of service(s) {} are missing", .0.join(", "))]
    Incomplete(Vec<String>),
    /// The container engine refused or failed in a way the user cannot fix.
    #[error("container engine error: {0}")]
    Engine(String),
    /// The container engine cannot be reached.
    #[error("container engine is unavailable: {0}")]
    Unavailable(String),
    /// The host firewall that confines sandboxes cannot be installed: sandboxes are refused.
    #[error("container engine is unavailable: the sandbox firewall cannot be installed: {0}")]
    Firewall(String),
}

impl RuntimeError {
    /// Whether the user's input (spec, compose file, image) is the cause.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RuntimeError::InvalidInstanceId(_)
                | RuntimeError::AlreadyExists(_)
                | RuntimeError::NotFound(_)
                | RuntimeError::InvalidSpec(_)
                | RuntimeError::ImageUnavailable { .. }
                | RuntimeError::Service { .. }
                | RuntimeError::Incomplete(_)
        )
    }
}

/// A sandbox backend. All methods are safe to call concurrently for different instances; for
/// one instance the caller serializes lifecycle calls (create → start → stop → remove).
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Creates everything the instance needs (network, volumes, containers) without starting
    /// it. Pulls missing images when a registry is reachable. On failure nothing is left behind.
    /// Fails with [`RuntimeError::AlreadyExists`] if anything of the instance exists.
    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Starts the services in dependency order, waiting (bounded) for `service_healthy` and
    /// `service_completed_successfully` conditions. Running services are left alone.
    async fn start(&self, instance_id: &str) -> Result<(), RuntimeError>;

    /// Stops every service (dependents first), honouring each stop grace period.
    async fn stop(&self, instance_id: &str) -> Result<(), RuntimeError>;

    /// Stops then starts the instance; volumes and container file systems are kept.
    async fn restart(&self, instance_id: &str) -> Result<(), RuntimeError>;

    /// Removes containers, network, volumes and resource groups of the instance. Idempotent:
    /// removing a missing instance succeeds.
    async fn remove(&self, instance_id: &str) -> Result<(), RuntimeError>;

    /// Observes the instance.
    async fn state(&self, instance_id: &str) -> Result<InstanceState, RuntimeError>;

    /// Where to connect for a mapping's `computerPort` right now: the private address of the
    /// service that publishes `port` (see [`ComposeApp::resolve_port`]), or `None` if no service
    /// publishes it or that service is not running.
    async fn endpoint(
        &self,
        instance_id: &str,
        port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError>;

    /// Ids of every instance this runtime finds (by label), for re-attaching after a restart.
    async fn instances(&self) -> Result<Vec<String>, RuntimeError>;

    /// Ids of the instance resource groups (cgroups) on this host. They carry no owner label:
    /// remove (with [`Runtime::remove`]) only the ids your own records know.
    async fn resource_groups(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }

    /// Re-attaches to an instance found by [`Runtime::instances`] after stratus or the host
    /// restarted: re-applies instance-wide resource bounds that a host reboot wiped, and reports
    /// the state. Starts or stops nothing.
    async fn recover(&self, instance_id: &str) -> Result<InstanceState, RuntimeError>;

    /// Removes what the runtime installed on the host for itself (its firewall table), on a
    /// graceful stop of the server. Instances are left as they are.
    async fn close(&self) {}

    /// Housekeeping of what the runtime installed on the host (firewall elements of sandboxes
    /// that are gone). Called after a restart and from time to time.
    async fn tidy(&self) {}
}

/// Checks an instance id: it becomes part of container, network and volume names.
pub fn validate_instance_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidInstanceId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        validate_instance_id("f62ef8f1-7ccd-4557-a504-e74d2c1977b5").unwrap();
        validate_instance_id("a").unwrap();
        for bad in ["", "-a", "a/b", "a b", "../x", &"x".repeat(65)] {
            assert!(validate_instance_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let spec = InstanceSpec {
            instance_id: "i".into(),
            app: ComposeApp::default(),
            cpus: 1.0,
            memory_bytes: 1,
            pids_limit: 1,
            public_key: Some("ssh-rsa AAAA".into()),
            password: Some("hunter2".into()),
        };
        let s = format!("{spec:?}");
        assert!(!s.contains("hunter2") && !s.contains("AAAA"), "{s}");
    }
}
