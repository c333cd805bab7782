//! Names, labels and container definitions of the Docker runtime.
//!
//! Owns the mapping from a normalized compose service to a `ContainerCreateBody`: the fixed
//! safety settings (no-new-privileges, every capability dropped but the few a web app needs
//! ([`SANDBOX_CAPABILITIES`]), a private cgroup namespace, no host port bindings, bounded logs, a
//! pids limit), the image pinned to the id the runtime verified, resource bounds, mounts of the instance's own volumes, the private
//! network with the service name as alias, and the labels through which the runtime finds
//! everything again (`io.stratus.*`). Pure functions: nothing here talks to the engine.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigCgroupnsModeEnum,
    HostConfigLogConfig, Mount, MountTmpfsOptions, MountType, MountVolumeOptions, NetworkingConfig,
    ResourcesUlimits, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};

use crate::compose::{
    DependsCondition, Healthcheck, Mount as ComposeMount, Protocol, PublishedPort, RestartPolicy,
    Service, ServiceNetwork,
};
use crate::runtime::InstanceSpec;

/// Label carrying the instance id, on every container, network and volume of an instance.
pub const LABEL_INSTANCE: &str = "io.stratus.instance";
/// Label carrying the compose service name of a container.
pub const LABEL_SERVICE: &str = "io.stratus.service";
/// Label carrying the compose volume name of a volume.
pub const LABEL_VOLUME: &str = "io.stratus.volume";
/// Label naming the stratus server that owns an object (see `DockerConfig::owner`).
pub const LABEL_OWNER: &str = "io.stratus.owner";
/// Position of the service in the compose file.
pub(crate) const LABEL_INDEX: &str = "io.stratus.index";
/// Every service of the instance, comma-separated, in file order.
pub(crate) const LABEL_SERVICES: &str = "io.stratus.services";
/// `service=condition,…`: what the service waits for.
pub(crate) const LABEL_DEPENDS: &str = "io.stratus.depends";
/// `published:container/proto,…` or `container/proto`: the ports the service publishes.
pub(crate) const LABEL_PORTS: &str = "io.stratus.ports";
/// `cpus=…,memory=…,pids=…`: the instance-wide bounds, to re-apply them after a reboot.
pub(crate) const LABEL_LIMITS: &str = "io.stratus.limits";
/// The image as the compose file named it (the container runs the id it was verified as).
pub const LABEL_IMAGE: &str = "io.stratus.image";

/// The capabilities a sandbox keeps: what a typical web app needs to start as root, change to
/// its own user, own its files and bind a low port. Everything else Docker grants by default
/// (`NET_RAW` for raw and packet sockets above all, `MKNOD`, `SETPCAP`, `SETFCAP`,
/// `SYS_CHROOT`, `AUDIT_WRITE`, `NET_ADMIN`…) is dropped; `cap_drop` may drop more.
pub const SANDBOX_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
];

/// What a service keeps of [`SANDBOX_CAPABILITIES`] after its `cap_drop`.
pub(crate) fn kept_capabilities(svc: &Service) -> Vec<String> {
    if svc.cap_drop.iter().any(|c| c == "ALL") {
        return Vec::new();
    }
    SANDBOX_CAPABILITIES
        .iter()
        .filter(|c| !svc.cap_drop.iter().any(|d| d == *c))
        .map(|c| c.to_string())
        .collect()
}

/// Name of the instance's private network.
pub fn network_name(instance_id: &str) -> String {
    format!("stratus-{instance_id}")
}

/// Name of a service's container.
pub fn container_name(instance_id: &str, service: &str) -> String {
    format!("stratus-{instance_id}-{service}")
}

/// Name of a named volume of the instance.
pub fn volume_name(instance_id: &str, volume: &str) -> String {
    format!("stratus-{instance_id}-{volume}")
}

/// How the instance's CPU and memory are bounded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bounding {
    /// A parent cgroup holds the instance's limits; each container is also capped at the
    /// whole instance's limits (harmless under the parent, a backstop without it).
    Parent { cgroup_parent: String },
    /// No parent group: the instance's limits are split evenly across its services.
    Split,
}

/// Settings of container definitions that come from the runtime's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Fixed {
    pub log_max_size: String,
    pub log_max_files: u32,
    pub owner: Option<String>,
    /// CPUs of the engine's host: a spec larger than the host gets the whole host (the engine
    /// refuses a `NanoCpus` above it).
    pub host_cpus: f64,
}

/// The instance-wide bounds as a label value.
pub(crate) fn limits_label(spec: &InstanceSpec) -> String {
    format!(
        "cpus={},memory={},pids={},services={}",
        spec.cpus,
        spec.memory_bytes,
        spec.pids_limit,
        spec.app.services.len()
    )
}

/// Parses [`limits_label`]: `(cpus, memory_bytes, pids_limit, services)`.
pub(crate) fn parse_limits_label(s: &str) -> Option<(f64, u64, i64, usize)> {
    let mut cpus = None;
    let mut memory = None;
    let mut pids = None;
    let mut services = None;
    for part in s.split(',') {
        let (k, v) = part.split_once('=')?;
        match k {
            "cpus" => cpus = v.parse().ok(),
            "memory" => memory = v.parse().ok(),
            "pids" => pids = v.parse().ok(),
            "services" => services = v.parse().ok(),
            _ => {}
        }
    }
    Some((cpus?, memory?, pids?, services?))
}

fn ports_label(svc: &Service) -> String {
    svc.ports
        .iter()
        .map(|p| match p.published {
            Some(h) => format!("{h}:{}/{}", p.container_port, p.protocol.as_str()),
            None => format!("{}/{}", p.container_port, p.protocol.as_str()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a service's [`LABEL_PORTS`] back.
pub(crate) fn parse_ports_label(service: &str, s: &str) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let Some((ports, proto)) = item.split_once('/') else {
            continue;
        };
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => continue,
        };
        let (published, container) = match ports.split_once(':') {
            Some((h, c)) => (h.parse().ok(), c),
            None => (None, ports),
        };
        let Ok(container_port) = container.parse() else {
            continue;
        };
        out.push(PublishedPort {
            service: service.to_string(),
            container_port,
            published,
            protocol,
        });
    }
    out
}

fn depends_label(svc: &Service) -> String {
    svc.depends_on
        .iter()
        .map(|d| format!("{}={}", d.service, d.condition.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`LABEL_DEPENDS`] back.
pub(crate) fn parse_depends_label(s: &str) -> Vec<(String, DependsCondition)> {
    s.split(',')
        .filter_map(|item| {
            let (name, cond) = item.split_once('=')?;
            Some((name.to_string(), DependsCondition::parse(cond)?))
        })
        .collect()
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The container definition of service `index` of `spec`, running image `image_id` (the id the
/// runtime verified the service's image as).
pub(crate) fn container_body(
    spec: &InstanceSpec,
    index: usize,
    image_id: &str,
    bounding: &Bounding,
    fixed: &Fixed,
) -> ContainerCreateBody {
    let svc = &spec.app.services[index];
    let id = &spec.instance_id;
    let network = network_name(id);

    let mut labels: HashMap<String, String> = svc
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_INSTANCE.into(), id.clone());
    labels.insert(LABEL_SERVICE.into(), svc.name.clone());
    labels.insert(LABEL_INDEX.into(), index.to_string());
    labels.insert(LABEL_SERVICES.into(), spec.app.service_names().join(","));
    labels.insert(LABEL_DEPENDS.into(), depends_label(svc));
    labels.insert(LABEL_PORTS.into(), ports_label(svc));
    labels.insert(LABEL_LIMITS.into(), limits_label(spec));
    labels.insert(LABEL_IMAGE.into(), svc.image.clone());
    if let Some(owner) = &fixed.owner {
        labels.insert(LABEL_OWNER.into(), owner.clone());
    }

    let env: Vec<String> = svc
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();

    let mut exposed: Vec<String> = svc
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.container_port, p.protocol.as_str()))
        .chain(
            svc.expose
                .iter()
                .map(|e| format!("{}/{}", e.port, e.protocol.as_str())),
        )
        .collect();
    exposed.sort();
    exposed.dedup();

    let healthcheck = svc.healthcheck.as_ref().map(|h| match h {
        Healthcheck::Disabled => HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        },
        Healthcheck::Check {
            test,
            interval,
            timeout,
            retries,
            start_period,
            start_interval,
        } => HealthConfig {
            test: test.clone(),
            interval: interval.map(nanos),
            timeout: timeout.map(nanos),
            retries: retries.map(i64::from),
            start_period: start_period.map(nanos),
            start_interval: start_interval.map(nanos),
        },
    });

    let entrypoint = svc.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            // An empty string resets the image's entrypoint.
            vec![String::new()]
        } else {
            e.clone()
        }
    });

    let restart = match svc.restart.unwrap_or(RestartPolicy::No) {
        RestartPolicy::No => DockerRestart {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        },
        // `always` would bring a stopped instance back when the engine restarts.
        RestartPolicy::Always | RestartPolicy::UnlessStopped => DockerRestart {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        },
        RestartPolicy::OnFailure { max_retries } => DockerRestart {
            name: Some(RestartPolicyNameEnum::ON_FAILURE),
            maximum_retry_count: max_retries.map(i64::from),
        },
    };

    let instance_label = HashMap::from([(LABEL_INSTANCE.to_string(), id.clone())]);
    let mounts: Vec<Mount> = svc
        .mounts
        .iter()
        .map(|m| match m {
            ComposeMount::Volume {
                source,
                target,
                read_only,
                nocopy,
            } => Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume_name(id, source)),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(*nocopy),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ComposeMount::Anonymous { target, read_only } => Mount {
                typ: Some(MountType::VOLUME),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                // Labelled so that removal by label finds it even if its container is gone.
                volume_options: Some(MountVolumeOptions {
                    labels: Some(instance_label.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ComposeMount::Tmpfs {
                target,
                size_bytes,
                mode,
            } => Mount {
                typ: Some(MountType::TMPFS),
                target: Some(target.clone()),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(i64::try_from(*size_bytes).unwrap_or(i64::MAX)),
                    mode: mode.map(i64::from),
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect();

    let services = spec.app.services.len().max(1);
    let cpus = spec.cpus.min(fixed.host_cpus.max(0.01));
    let (memory, nano_cpus, cgroup_parent) = match bounding {
        Bounding::Parent { cgroup_parent } => {
            (spec.memory_bytes, cpus * 1e9, Some(cgroup_parent.clone()))
        }
        Bounding::Split => (
            spec.memory_bytes / services as u64,
            cpus * 1e9 / services as f64,
            None,
        ),
    };
    let memory = i64::try_from(memory).unwrap_or(i64::MAX);

    let ulimits: Vec<ResourcesUlimits> = svc
        .ulimits
        .iter()
        .map(|u| ResourcesUlimits {
            name: Some(u.name.clone()),
            soft: Some(u.soft),
            hard: Some(u.hard),
        })
        .collect();

    let host_config = HostConfig {
        network_mode: Some(match svc.network {
            ServiceNetwork::Private => network.clone(),
            ServiceNetwork::None => "none".into(),
        }),
        cgroup_parent,
        memory: Some(memory),
        // Equal to the memory limit: no swap on top of it.
        memory_swap: Some(memory),
        nano_cpus: Some(nano_cpus.round() as i64),
        pids_limit: Some(spec.pids_limit),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
        readonly_rootfs: Some(svc.read_only),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(kept_capabilities(svc)),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        publish_all_ports: Some(false),
        restart_policy: Some(restart),
        mounts: (!mounts.is_empty()).then_some(mounts),
        shm_size: svc.shm_size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        init: svc.init.then_some(true),
        extra_hosts: (!svc.extra_hosts.is_empty()).then(|| svc.extra_hosts.clone()),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), fixed.log_max_size.clone()),
                ("max-file".to_string(), fixed.log_max_files.to_string()),
            ])),
        }),
        ..Default::default()
    };

    let networking_config = match svc.network {
        ServiceNetwork::Private => {
            let mut aliases = vec![svc.name.clone()];
            for a in &svc.aliases {
                if !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network,
                    EndpointSettings {
                        aliases: Some(aliases),
                        ..Default::default()
                    },
                )])),
            })
        }
        ServiceNetwork::None => None,
    };

    ContainerCreateBody {
        image: Some(image_id.to_string()),
        cmd: svc.command.clone(),
        entrypoint,
        env: (!env.is_empty()).then_some(env),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        working_dir: svc.working_dir.clone(),
        user: svc.user.clone(),
        hostname: svc.hostname.clone(),
        domainname: svc.domainname.clone(),
        tty: Some(svc.tty),
        open_stdin: Some(svc.stdin_open),
        stop_signal: svc.stop_signal.clone(),
        stop_timeout: svc
            .stop_grace_period
            .map(|d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)),
        healthcheck,
        labels: Some(labels),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::ComposeApp;
    use crate::policy::Policy;

    fn spec(yaml: &str) -> InstanceSpec {
        InstanceSpec {
            instance_id: "i-1".into(),
            app: ComposeApp::parse(yaml, &Policy::default()).unwrap(),
            cpus: 2.0,
            memory_bytes: 1 << 30,
            pids_limit: 256,
            public_key: None,
            password: Some("secret".into()),
        }
    }

    const APP: &str = r#"
services:
  web:
    image: busybox
    command: ["httpd", "-f"]
    entrypoint: ""
    environment: {A: "1", B: null}
    ports: ["8080:80", "443"]
    expose: [9000]
    volumes: ["data:/data:ro", "/anon", {type: tmpfs, target: /t}]
    depends_on: {db: {condition: service_healthy}}
    restart: always
    healthcheck: {test: "true", interval: 2s}
    labels: {team: x}
    stop_grace_period: 5s
    networks: {default: {aliases: [www]}}
  db:
    image: postgres
volumes:
  data:
"#;

    fn fixed() -> Fixed {
        Fixed {
            host_cpus: 64.0,
            owner: None,
            log_max_size: "10m".into(),
            log_max_files: 3,
        }
    }

    #[test]
    fn safe_fixed_settings_and_labels() {
        let s = spec(APP);
        let body = container_body(&s, 0, "sha256:web", &Bounding::Split, &fixed());
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(
            hc.security_opt.as_deref(),
            Some(&["no-new-privileges".to_string()][..])
        );
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(
            hc.cap_add.as_deref().unwrap(),
            SANDBOX_CAPABILITIES,
            "only what a web app needs"
        );
        assert_eq!(hc.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE));
        assert_eq!(
            body.image.as_deref(),
            Some("sha256:web"),
            "pinned to the id"
        );
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.publish_all_ports, Some(false));
        assert_eq!(hc.pids_limit, Some(256));
        assert_eq!(hc.readonly_rootfs, Some(false));
        assert_eq!(hc.network_mode.as_deref(), Some("stratus-i-1"));
        assert_eq!(hc.memory, Some(1 << 29), "split across two services");
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.cgroup_parent, None);
        assert_eq!(
            hc.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let log = hc.log_config.as_ref().unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.as_ref().unwrap()["max-size"], "10m");
        let mounts = hc.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].source.as_deref(), Some("stratus-i-1-data"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].source, None);
        assert_eq!(
            mounts[1]
                .volume_options
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap()[LABEL_INSTANCE],
            "i-1"
        );
        assert_eq!(mounts[2].typ, Some(MountType::TMPFS));

        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_INSTANCE], "i-1");
        assert_eq!(labels[LABEL_SERVICE], "web");
        assert_eq!(labels[LABEL_IMAGE], "busybox");
        assert_eq!(labels["team"], "x");
        assert_eq!(labels[LABEL_SERVICES], "web,db");
        assert_eq!(labels[LABEL_PORTS], "8080:80/tcp,443/tcp");
        assert_eq!(labels[LABEL_DEPENDS], "db=service_healthy");
        assert_eq!(
            parse_limits_label(&labels[LABEL_LIMITS]),
            Some((2.0, 1 << 30, 256, 2))
        );
        assert_eq!(body.env.as_deref(), Some(&["A=1".to_string()][..]));
        assert_eq!(body.entrypoint, Some(vec![String::new()]));
        assert_eq!(body.stop_timeout, Some(5));
        assert_eq!(
            body.exposed_ports.as_deref(),
            Some(&["443/tcp".to_string(), "80/tcp".into(), "9000/tcp".into()][..])
        );
        let hc = body.healthcheck.unwrap();
        assert_eq!(hc.test.unwrap(), vec!["CMD-SHELL", "true"]);
        assert_eq!(hc.interval, Some(2_000_000_000));
        let ep = &body.networking_config.unwrap().endpoints_config.unwrap()["stratus-i-1"];
        assert_eq!(ep.aliases.as_deref().unwrap(), ["web", "www"]);
        let json = serde_json_string(&s);
        assert!(
            !json.contains("secret"),
            "the password never reaches the engine"
        );
    }

    fn serde_json_string(s: &InstanceSpec) -> String {
        (0..s.app.services.len())
            .map(|i| {
                format!(
                    "{:?}",
                    container_body(s, i, "sha256:x", &Bounding::Split, &fixed())
                )
            })
            .collect()
    }

    #[test]
    fn parent_group_caps_each_container_at_the_whole_instance() {
        let s = spec(APP);
        let body = container_body(
            &s,
            1,
            "sha256:db",
            &Bounding::Parent {
                cgroup_parent: "/stratus/i-1".into(),
            },
            &fixed(),
        );
        let hc = body.host_config.unwrap();
        assert_eq!(hc.cgroup_parent.as_deref(), Some("/stratus/i-1"));
        assert_eq!(hc.memory, Some(1 << 30));
        assert_eq!(hc.memory_swap, Some(1 << 30));
        assert_eq!(hc.nano_cpus, Some(2_000_000_000));
    }

    #[test]
    fn a_spec_larger_than_the_host_gets_the_whole_host() {
        let s = spec(APP); // 2 CPUs
        let small_host = Fixed {
            host_cpus: 1.0,
            ..fixed()
        };
        let parent = Bounding::Parent {
            cgroup_parent: "/stratus/i-1".into(),
        };
        let hc = container_body(&s, 0, "sha256:web", &parent, &small_host)
            .host_config
            .unwrap();
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        let hc = container_body(&s, 0, "sha256:web", &Bounding::Split, &small_host)
            .host_config
            .unwrap();
        assert_eq!(hc.nano_cpus, Some(500_000_000), "split across two services");
    }

    #[test]
    fn cap_drop_removes_more_and_all_removes_everything() {
        let s = spec(
            "services:\n  a:\n    image: x\n    cap_drop: [cap_kill, NET_BIND_SERVICE, NET_RAW]\n  b:\n    image: x\n    cap_drop: [all]\n",
        );
        let caps = |i| {
            container_body(&s, i, "sha256:x", &Bounding::Split, &fixed())
                .host_config
                .unwrap()
                .cap_add
                .unwrap()
        };
        assert_eq!(
            caps(0),
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "SETGID",
                "SETUID"
            ]
        );
        assert!(caps(1).is_empty());
    }

    #[test]
    fn labels_round_trip() {
        let s = spec(APP);
        let ports = parse_ports_label("web", &ports_label(&s.app.services[0]));
        assert_eq!(ports, s.app.published_ports()[..2].to_vec());
        assert_eq!(
            parse_depends_label(&depends_label(&s.app.services[0])),
            vec![("db".to_string(), DependsCondition::Healthy)]
        );
        assert!(parse_depends_label("").is_empty());
        assert!(parse_ports_label("x", "").is_empty());
    }
}
