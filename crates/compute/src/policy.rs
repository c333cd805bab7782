//! What a compose file may ask of a shared host.
//!
//! Owns the limits a compose file is held to ([`Policy`]) and the table of fields that are refused
//! because they would reach outside the sandbox: privileged mode, extra capabilities, host
//! devices, host namespaces, bind mounts of host paths, security options, sysctls, foreign cgroups,
//! builds, external networks and volumes, volume drivers, files read from the host. The compose
//! parser asks this module about every such field and turns a refusal into
//! [`ComposeError::Refused`](crate::compose::ComposeError::Refused), which names the field.
//!
//! It also owns what an `image:` may name ([`Policy::check_image`]: a registry on the
//! allow-list, or a local image the operator lists; never an address, never this host), how many
//! volumes an app may declare, and the host's hard resource limits that `ulimits` may not exceed.
//!
//! This module never relaxes a rule on a value it does not understand: a refused field is allowed
//! only when its value is the harmless default (`privileged: false`, `cap_add: []`,
//! `network_mode: bridge`).

use std::time::Duration;

use stratus_config::ComputeConfig;

use crate::compose::reference::{normalize_registry, ImageRef, DOCKER_HUB};
use crate::compose::yaml::Node;
use crate::compose::ImageSource;

/// Limits a compose file is held to. Build it from the server configuration with
/// [`Policy::from_config`], or start from [`Policy::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Most services one compose file may define.
    pub max_services: usize,
    /// Largest compose file, in bytes of YAML text.
    pub max_bytes: usize,
    /// Most YAML nodes the document may expand to (bounds alias expansion).
    pub max_nodes: usize,
    /// Most scalar bytes the document may expand to (bounds alias expansion of long strings).
    pub max_scalar_bytes: usize,
    /// Most ports the whole app may publish (ranges count each port).
    pub max_published_ports: usize,
    /// Largest size of one tmpfs mount or of `/dev/shm`, in bytes.
    pub max_tmpfs_bytes: u64,
    /// Size of a tmpfs mount that does not say.
    pub default_tmpfs_bytes: u64,
    /// Most tmpfs mounts per service.
    pub max_tmpfs_mounts: usize,
    /// Longest `stop_grace_period` honoured (longer values are refused).
    pub max_stop_grace_period: Duration,
    /// Shortest healthcheck interval allowed (each check runs a process on the host).
    pub min_healthcheck_interval: Duration,
    /// Highest `ulimits.nofile`.
    pub max_nofile: u64,
    /// Most retries of `restart: on-failure:N`.
    pub max_restart_retries: u32,
    /// Most volumes one app may declare: named volumes plus anonymous volume mounts.
    pub max_volumes: usize,
    /// Registries images may come from, normalized (`docker.io` is Docker Hub).
    pub allowed_registries: Vec<String>,
    /// Images on the engine that may run without a registry (never pulled).
    pub local_images: Vec<ImageRef>,
    /// Hard resource limits of this host; `ulimits` may not exceed them.
    pub host_limits: HostLimits,
}

/// Hard resource limits of the host (of this process, which runs beside the engine); `None`
/// is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub memlock: Option<u64>,
    pub core: Option<u64>,
    pub stack: Option<u64>,
}

impl HostLimits {
    /// The hard limits of this process (read from `/proc/self/limits`; where that cannot be
    /// read, nothing is allowed above the conservative defaults of a Linux host).
    pub fn of_this_process() -> HostLimits {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| HostLimits::parse_proc(&t))
            .unwrap_or(HostLimits {
                nofile: Some(4096),
                nproc: Some(4096),
                memlock: Some(64 * 1024),
                core: Some(0),
                stack: Some(8 << 20),
            })
    }

    /// Parses the hard limits out of a `/proc/<pid>/limits` text.
    fn parse_proc(text: &str) -> Option<HostLimits> {
        let hard = |label: &str| -> Option<Option<u64>> {
            let line = text.lines().find(|l| l.starts_with(label))?;
            let fields: Vec<&str> = line[label.len()..].split_whitespace().collect();
            match *fields.get(1)? {
                "unlimited" => Some(None),
                n => n.parse().ok().map(Some),
            }
        };
        Some(HostLimits {
            nofile: hard("Max open files")?,
            nproc: hard("Max processes")?,
            memlock: hard("Max locked memory")?,
            core: hard("Max core file size")?,
            stack: hard("Max stack size")?,
        })
    }

    /// The hard limit of a `ulimits` name (`None`: unlimited), or `Err` for a name not offered.
    pub(crate) fn of(&self, name: &str) -> Result<Option<u64>, ()> {
        match name {
            "nofile" => Ok(self.nofile),
            "nproc" => Ok(self.nproc),
            "memlock" => Ok(self.memlock),
            "core" => Ok(self.core),
            "stack" => Ok(self.stack),
            _ => Err(()),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_services: 8,
            max_bytes: 256 * 1024,
            max_nodes: 100_000,
            max_scalar_bytes: 1024 * 1024,
            max_published_ports: 256,
            max_tmpfs_bytes: 256 * 1024 * 1024,
            default_tmpfs_bytes: 64 * 1024 * 1024,
            max_tmpfs_mounts: 8,
            max_stop_grace_period: Duration::from_secs(60),
            min_healthcheck_interval: Duration::from_secs(1),
            max_nofile: 65_536,
            max_restart_retries: 100,
            max_volumes: 16,
            allowed_registries: vec![DOCKER_HUB.to_string()],
            local_images: Vec::new(),
            host_limits: HostLimits::of_this_process(),
        }
    }
}

impl Policy {
    /// The default policy with the server's configured limits, registries and local images.
    /// A local image entry that is not a valid reference is left out (and logged): it never
    /// widens what runs.
    pub fn from_config(config: &ComputeConfig) -> Self {
        let local_images = config
            .local_images
            .iter()
            .filter_map(|i| match ImageRef::parse(i) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(image = %i, error = %e, "compute.local_images: not an image reference; ignored");
                    None
                }
            })
            .collect();
        Policy {
            max_services: config.max_services.max(1) as usize,
            max_volumes: config.max_volumes as usize,
            allowed_registries: config
                .allowed_registries
                .iter()
                .map(|r| normalize_registry(r))
                .filter(|r| !r.is_empty())
                .collect(),
            local_images,
            ..Policy::default()
        }
    }

    /// The same policy with `images` (`name:tag`) listed as local images.
    pub fn with_local_images<'a>(mut self, images: impl IntoIterator<Item = &'a str>) -> Self {
        self.local_images.extend(
            images
                .into_iter()
                .map(|i| ImageRef::parse(i).expect("a valid image reference")),
        );
        self
    }

    /// Where an image may come from, or why it may not run here. The answer depends on the
    /// reference alone: nothing is resolved or contacted.
    pub fn check_image(&self, image: &ImageRef) -> Result<ImageSource, String> {
        if self.local_images.contains(image) {
            return Ok(ImageSource::Local);
        }
        if self.allowed_registries.contains(&image.registry) {
            return Ok(ImageSource::Registry);
        }
        let allowed = if self.allowed_registries.is_empty() {
            "no registry is allowed here".to_string()
        } else {
            format!(
                "images come from {} only",
                self.allowed_registries.join(", ")
            )
        };
        let what = if image.registry_is_ip() {
            "a registry named by an IP address is not allowed".to_string()
        } else if image.registry_is_local() {
            "a registry on this host is not allowed".to_string()
        } else {
            format!("registry {} is not allowed", image.registry)
        };
        Err(format!("{what}; {allowed}"))
    }
}

const HOST_NAMESPACES: &str = "sharing the host's or another container's namespaces is not allowed";

/// What the policy says about a service-level key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not a key this policy governs.
    NotGoverned,
    /// A governed key with a harmless value (`privileged: false`): accepted, nothing to apply.
    Harmless,
    /// Refused, with the reason.
    Refused(&'static str),
}

/// What the policy says about a service-level key with this value.
pub(crate) fn check_service_key(key: &str, value: &Node) -> Verdict {
    let reason = match key {
        "privileged" => {
            if is_false(value) {
                return Verdict::Harmless;
            }
            "privileged containers can take over the shared host"
        }
        "cap_add" => "extra kernel capabilities are not granted on a shared host",
        "devices" | "device_cgroup_rules" | "gpus" => "host devices cannot be passed to a sandbox",
        "network_mode" => {
            if let Node::Str(s) = value {
                if matches!(s.as_str(), "bridge" | "default" | "none") {
                    return Verdict::Harmless;
                }
            }
            "a sandbox runs on its own private network; host and shared network modes are not allowed"
        }
        "pid" | "uts" | "userns_mode" => HOST_NAMESPACES,
        "ipc" => {
            if let Node::Str(s) = value {
                if matches!(s.as_str(), "private" | "shareable") {
                    return Verdict::Harmless;
                }
            }
            HOST_NAMESPACES
        }
        "cgroup" => {
            if matches!(value, Node::Str(s) if s == "private") {
                return Verdict::Harmless;
            }
            HOST_NAMESPACES
        }
        "security_opt" => {
            // Asking for what every sandbox gets anyway is fine.
            if let Node::Seq(items) = value {
                if items.iter().all(|i| {
                    matches!(i, Node::Str(s) if s == "no-new-privileges" || s == "no-new-privileges:true")
                }) {
                    return Verdict::Harmless;
                }
            }
            "security options are fixed by stratus"
        }
        "sysctls" => "kernel parameters cannot be changed on a shared host",
        "cgroup_parent" => "resource groups are set by stratus",
        "volumes_from" => "mounting another container's volumes is not allowed",
        "build" => "images are not built on a shared host; use a published image",
        "env_file" => "env_file reads files on the host; put the variables under environment",
        "secrets" | "configs" => "file-based secrets and configs read files on the host",
        "extends" => "extends reads other compose files on the host",
        "external_links" => "links to containers outside the app are not allowed",
        "runtime" | "isolation" => "the container runtime is fixed by stratus",
        "oom_kill_disable" | "oom_score_adj" => "the out-of-memory policy is fixed by stratus",
        "storage_opt" => "storage options are fixed by stratus",
        "credential_spec" => "credential specs read files on the host",
        "use_api_socket" => "the container engine's socket is never given to a sandbox",
        _ => return Verdict::NotGoverned,
    };
    if is_empty(value) {
        return Verdict::Harmless;
    }
    Verdict::Refused(reason)
}

/// Why a top-level key is refused, if it is.
pub(crate) fn refused_top_level_key(key: &str, value: &Node) -> Option<&'static str> {
    let reason = match key {
        "secrets" | "configs" => "file-based secrets and configs read files on the host",
        "include" => "include reads other compose files on the host",
        _ => return None,
    };
    if is_empty(value) {
        return None;
    }
    Some(reason)
}

/// Why a key of a top-level `volumes:` entry is refused, if it is.
pub(crate) fn refused_volume_key(key: &str, value: &Node) -> Option<&'static str> {
    match key {
        "driver" if !matches!(value, Node::Str(s) if s == "local") && !is_empty(value) => {
            Some("volume drivers can mount host paths; only the local driver is available")
        }
        "driver_opts" if !is_empty(value) => Some("volume driver options can mount host paths"),
        "external" if !is_false(value) => Some("external volumes belong to someone else"),
        _ => None,
    }
}

/// Why a key of a top-level `networks:` entry is refused, if it is.
pub(crate) fn refused_network_key(key: &str, value: &Node) -> Option<&'static str> {
    match key {
        "external" if !is_false(value) => Some("external networks belong to someone else"),
        "driver" if !matches!(value, Node::Str(s) if s == "bridge") && !is_empty(value) => {
            Some("a sandbox has one private bridge network; other drivers are not available")
        }
        "driver_opts" | "ipam" if !is_empty(value) => Some("network options are set by stratus"),
        _ => None,
    }
}

/// Why the source of a volume (short syntax `SOURCE:TARGET`) is refused: any host path.
pub(crate) fn refused_volume_source(source: &str) -> Option<&'static str> {
    if source.starts_with('/')
        || source.starts_with('.')
        || source.starts_with('~')
        || source.contains('/')
        || source.contains('\\')
        || source.contains('$')
    {
        return Some("bind mounts expose the host's file system; use a named volume");
    }
    None
}

/// The reason a long-syntax mount `type` is refused, if it is.
pub(crate) fn refused_mount_type(kind: &str) -> Option<&'static str> {
    match kind {
        "bind" => Some("bind mounts expose the host's file system; use a named volume"),
        "npipe" => Some("named pipes of the host cannot be mounted"),
        "cluster" | "image" => Some("only volume and tmpfs mounts are available"),
        _ => None,
    }
}

fn is_false(value: &Node) -> bool {
    matches!(value, Node::Bool(false) | Node::Null) || matches!(value, Node::Str(s) if s == "false")
}

fn is_empty(value: &Node) -> bool {
    match value {
        Node::Null => true,
        Node::Str(s) => s.is_empty(),
        Node::Seq(v) => v.is_empty(),
        Node::Map(m) => m.is_empty(),
        Node::Bool(b) => !b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmless_defaults_pass() {
        use Verdict::*;
        let refused = |k: &str, v: Node| matches!(check_service_key(k, &v), Refused(_));
        assert_eq!(
            check_service_key("privileged", &Node::Bool(false)),
            Harmless
        );
        assert_eq!(check_service_key("cap_add", &Node::Seq(vec![])), Harmless);
        assert_eq!(
            check_service_key("network_mode", &Node::Str("bridge".into())),
            Harmless
        );
        assert_eq!(
            check_service_key("image", &Node::Str("x".into())),
            NotGoverned
        );
        assert!(refused("privileged", Node::Bool(true)));
        assert!(refused("network_mode", Node::Str("host".into())));
        assert!(refused("network_mode", Node::Str("service:db".into())));
        assert!(refused("pid", Node::Str("host".into())));
        assert!(refused("ipc", Node::Str("container:x".into())));
        assert!(refused("use_api_socket", Node::Bool(true)));
        assert_eq!(
            check_service_key(
                "security_opt",
                &Node::Seq(vec![Node::Str("no-new-privileges:true".into())])
            ),
            Harmless
        );
        assert!(refused(
            "security_opt",
            Node::Seq(vec![
                Node::Str("no-new-privileges:true".into()),
                Node::Str("apparmor:unconfined".into())
            ])
        ));
    }

    #[test]
    fn host_paths_are_refused() {
        for src in [
            "/etc",
            "./data",
            "../x",
            "~/x",
            "a/b",
            "/var/run/docker.sock",
        ] {
            assert!(refused_volume_source(src).is_some(), "{src}");
        }
        assert_eq!(refused_volume_source("data"), None);
    }

    #[test]
    fn policy_follows_the_config() {
        let c = ComputeConfig {
            max_services: 3,
            max_volumes: 2,
            allowed_registries: vec!["Index.Docker.IO".into(), "quay.io".into()],
            local_images: vec!["stratus-test/busybox:latest".into(), "Not Valid".into()],
            ..ComputeConfig::default()
        };
        let p = Policy::from_config(&c);
        assert_eq!(p.max_services, 3);
        assert_eq!(p.max_volumes, 2);
        assert_eq!(p.allowed_registries, ["docker.io", "quay.io"]);
        assert_eq!(
            p.local_images,
            [ImageRef::parse("stratus-test/busybox:latest").unwrap()]
        );
        assert_eq!(Policy::default().max_volumes, 16);
    }

    #[test]
    fn host_limits_are_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max stack size            8388608              unlimited            bytes
Max core file size        0                    unlimited            bytes
Max processes             96365                96365                processes
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
";
        assert_eq!(
            HostLimits::parse_proc(text),
            Some(HostLimits {
                nofile: Some(20000),
                nproc: Some(96365),
                memlock: Some(8388608),
                core: None,
                stack: None,
            })
        );
        let mine = HostLimits::of_this_process();
        assert!(mine.nofile.is_some(), "{mine:?}");
    }

    #[test]
    fn images_come_from_allowed_registries_or_the_local_list() {
        let p = Policy::default().with_local_images(["stratus-test/busybox:latest"]);
        let check = |s: &str| p.check_image(&ImageRef::parse(s).unwrap());
        assert_eq!(check("nginx"), Ok(ImageSource::Registry));
        assert_eq!(
            check("docker.io/library/nginx:1"),
            Ok(ImageSource::Registry)
        );
        assert_eq!(check("stratus-test/busybox"), Ok(ImageSource::Local));
        assert_eq!(
            check("docker.io/stratus-test/busybox:latest"),
            Ok(ImageSource::Local)
        );
        // Another tag of a local image is a registry image: it must come from Docker Hub.
        assert_eq!(check("stratus-test/busybox:2"), Ok(ImageSource::Registry));
        for (image, why) in [
            ("127.0.0.1:5000/x", "IP address"),
            ("[::1]:5000/x", "IP address"),
            ("10.0.0.1/x", "IP address"),
            ("169.254.169.254/x", "IP address"),
            ("localhost:5000/x", "on this host"),
            ("quay.io/x", "registry quay.io is not allowed"),
        ] {
            let e = check(image).unwrap_err();
            assert!(
                e.contains(why) && e.contains("docker.io only"),
                "{image}: {e}"
            );
        }
        let closed = Policy {
            allowed_registries: vec![],
            ..Policy::default()
        };
        assert!(closed
            .check_image(&ImageRef::parse("nginx").unwrap())
            .unwrap_err()
            .contains("no registry is allowed"));
    }
}
