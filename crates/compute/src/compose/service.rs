//! Parsing of one service of a compose file.
//!
//! Owns the per-key grammar of `services.<name>`: which keys are applied, which are accepted and
//! ignored, and which are unknown. Every key first goes through
//! [`policy::check_service_key`](crate::policy), so a refused key never reaches a parser here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use indexmap::IndexMap;

use super::reference::ImageRef;
use super::values::{
    parse_bytes, parse_duration, parse_port_range, parse_port_short, parse_protocol, parse_restart,
};
use super::yaml::Node;
use super::{
    valid_name, ComposeError, Dependency, DependsCondition, ExposedPort, Healthcheck, Mount,
    PortSpec, Protocol, PullPolicy, RestartPolicy, Service, ServiceNetwork, Ulimit, Volume,
};
use crate::policy::{self, Policy, Verdict};

/// Label prefix reserved for stratus' own labels.
pub(crate) const RESERVED_LABEL_PREFIX: &str = "io.stratus.";

/// What a service may refer to.
pub(crate) struct Context<'a> {
    pub policy: &'a Policy,
    pub services: &'a [String],
    pub volumes: &'a [Volume],
    pub networks: &'a [String],
}

/// Keys accepted and deliberately ignored: naming, logging and resources are stratus' business.
const IGNORED_KEYS: &[&str] = &[
    "container_name",
    "platform",
    "logging",
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "mem_swappiness",
    "cpus",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "cpu_count",
    "cpu_percent",
    "cpuset",
    "pids_limit",
    "blkio_config",
];

fn invalid(field: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

fn unsupported(field: String) -> ComposeError {
    ComposeError::Unsupported { field }
}

/// A scalar as a string (`80`, `true` and `1.5` become text, as compose does).
fn scalar(node: &Node, field: &str) -> Result<String, ComposeError> {
    match node {
        Node::Str(s) => Ok(s.clone()),
        Node::Int(i) => Ok(i.to_string()),
        Node::Float(f) => Ok(f.to_string()),
        Node::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(
            field,
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

fn boolean(node: &Node, field: &str) -> Result<bool, ComposeError> {
    match node {
        Node::Bool(b) => Ok(*b),
        Node::Str(s) if s == "true" => Ok(true),
        Node::Str(s) if s == "false" => Ok(false),
        Node::Null => Ok(false),
        other => Err(invalid(
            field,
            format!("expected true or false, found {}", other.kind()),
        )),
    }
}

fn seq<'n>(node: &'n Node, field: &str) -> Result<&'n [Node], ComposeError> {
    match node {
        Node::Seq(items) => Ok(items),
        Node::Null => Ok(&[]),
        other => Err(invalid(
            field,
            format!("expected a list, found {}", other.kind()),
        )),
    }
}

fn string_list(node: &Node, field: &str) -> Result<Vec<String>, ComposeError> {
    seq(node, field)?
        .iter()
        .enumerate()
        .map(|(i, n)| scalar(n, &format!("{field}[{i}]")))
        .collect()
}

fn no_nul(s: &str, field: &str) -> Result<(), ComposeError> {
    if s.contains('\0') {
        return Err(invalid(field, "contains a NUL character"));
    }
    Ok(())
}

fn duration(node: &Node, field: &str) -> Result<Duration, ComposeError> {
    match node {
        Node::Int(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        Node::Str(s) => parse_duration(s).map_err(|m| invalid(field, m)),
        other => Err(invalid(
            field,
            format!("expected a duration such as 30s, found {}", other.kind()),
        )),
    }
}

fn bytes(node: &Node, field: &str) -> Result<u64, ComposeError> {
    match node {
        Node::Int(i) if *i >= 0 => Ok(*i as u64),
        Node::Str(s) => parse_bytes(s).map_err(|m| invalid(field, m)),
        other => Err(invalid(
            field,
            format!("expected a size such as 64m, found {}", other.kind()),
        )),
    }
}

fn absolute_path(node: &Node, field: &str) -> Result<String, ComposeError> {
    let p = scalar(node, field)?;
    check_container_path(&p, field)?;
    Ok(p)
}

fn check_container_path(p: &str, field: &str) -> Result<(), ComposeError> {
    if !p.starts_with('/') || p.contains('\0') || p.contains(':') {
        return Err(invalid(field, format!("{p:?} is not an absolute path")));
    }
    Ok(())
}

/// Parses `services.<name>`; also returns the `links:` aliases it gives other services.
pub(crate) fn parse(
    name: &str,
    node: Node,
    ctx: &Context<'_>,
) -> Result<(Service, Vec<(String, String)>), ComposeError> {
    let field = format!("services.{name}");
    if !valid_name(name) {
        return Err(invalid(
            &field,
            "a service name is letters, digits, '_', '.' and '-', starting with a letter or digit (at most 63)",
        ));
    }
    let map = match node {
        Node::Map(m) => m,
        Node::Null => {
            return Err(invalid(
                &format!("{field}.image"),
                "a service needs an image",
            ))
        }
        other => {
            return Err(invalid(
                &field,
                format!("expected a mapping, found {}", other.kind()),
            ))
        }
    };
    let mut svc = Service {
        name: name.to_string(),
        ..Service::default()
    };
    let mut links = Vec::new();
    let mut image = None;
    for (key, value) in map {
        let f = format!("{field}.{key}");
        let verdict = policy::check_service_key(&key, &value);
        if let Verdict::Refused(reason) = verdict {
            return Err(ComposeError::Refused { field: f, reason });
        }
        match key.as_str() {
            "image" => image = Some(parse_image(&value, &f, ctx.policy)?),
            "pull_policy" => svc.pull_policy = parse_pull_policy(&value, &f)?,
            "command" => svc.command = parse_command(&value, &f)?,
            "entrypoint" => svc.entrypoint = parse_command(&value, &f)?,
            "environment" => svc.environment = parse_environment(&value, &f)?,
            "ports" => svc.ports = parse_ports(&value, &f)?,
            "expose" => svc.expose = parse_expose(&value, &f)?,
            "volumes" => {
                let mounts = parse_mounts(&value, &f, ctx)?;
                svc.mounts.extend(mounts);
            }
            "tmpfs" => {
                let mounts = parse_tmpfs(&value, &f, ctx.policy)?;
                svc.mounts.extend(mounts);
            }
            "depends_on" => svc.depends_on = parse_depends_on(&value, &f, name, ctx)?,
            "restart" => svc.restart = parse_restart_node(&value, &f, ctx.policy)?,
            "healthcheck" => svc.healthcheck = Some(parse_healthcheck(&value, &f, ctx.policy)?),
            "working_dir" => svc.working_dir = Some(absolute_path(&value, &f)?),
            "user" => {
                let u = scalar(&value, &f)?;
                if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c == '\0') {
                    return Err(invalid(&f, format!("invalid user {u:?}")));
                }
                svc.user = Some(u);
            }
            "hostname" => svc.hostname = Some(parse_hostname(&value, &f)?),
            "domainname" => svc.domainname = Some(parse_hostname(&value, &f)?),
            "labels" => svc.labels = parse_labels(value, &f)?,
            "networks" => svc.aliases.extend(parse_service_networks(&value, &f, ctx)?),
            "links" => links.extend(parse_links(&value, &f, ctx)?),
            "network_mode" => {
                if matches!(&value, Node::Str(s) if s == "none") {
                    svc.network = ServiceNetwork::None;
                }
            }
            "extra_hosts" => svc.extra_hosts = parse_extra_hosts(&value, &f)?,
            "stop_grace_period" => {
                let d = duration(&value, &f)?;
                if d > ctx.policy.max_stop_grace_period {
                    return Err(invalid(
                        &f,
                        format!(
                            "at most {} s is allowed",
                            ctx.policy.max_stop_grace_period.as_secs()
                        ),
                    ));
                }
                svc.stop_grace_period = Some(d);
            }
            "stop_signal" => {
                let s = scalar(&value, &f)?;
                if s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
                {
                    return Err(invalid(&f, format!("invalid signal {s:?}")));
                }
                svc.stop_signal = Some(s);
            }
            "tty" => svc.tty = boolean(&value, &f)?,
            "stdin_open" => svc.stdin_open = boolean(&value, &f)?,
            "init" => svc.init = boolean(&value, &f)?,
            "read_only" => svc.read_only = boolean(&value, &f)?,
            "cap_drop" => svc.cap_drop = parse_cap_drop(&value, &f)?,
            "shm_size" => {
                let b = bytes(&value, &f)?;
                if b > ctx.policy.max_tmpfs_bytes {
                    return Err(invalid(
                        &f,
                        format!("at most {} bytes are allowed", ctx.policy.max_tmpfs_bytes),
                    ));
                }
                svc.shm_size = Some(b);
            }
            "ulimits" => svc.ulimits = parse_ulimits(&value, &f, ctx.policy)?,
            "deploy" => check_deploy(&value, &f)?,
            "scale" => {
                if !matches!(value, Node::Int(1)) {
                    return Err(invalid(&f, "only one container per service is run"));
                }
            }
            k if k.starts_with("x-") => {}
            k if IGNORED_KEYS.contains(&k) => {}
            _ if verdict == Verdict::Harmless => {}
            _ => return Err(unsupported(f)),
        }
    }
    let (image, image_ref, image_source) = image.ok_or_else(|| {
        invalid(
            &format!("{field}.image"),
            "a service needs an image (images are not built here)",
        )
    })?;
    svc.image = image;
    svc.image_ref = image_ref;
    svc.image_source = image_source;
    let tmpfs = svc
        .mounts
        .iter()
        .filter(|m| matches!(m, Mount::Tmpfs { .. }))
        .count();
    if tmpfs > ctx.policy.max_tmpfs_mounts {
        return Err(invalid(
            &format!("{field}.tmpfs"),
            format!(
                "at most {} tmpfs mounts are allowed",
                ctx.policy.max_tmpfs_mounts
            ),
        ));
    }
    let mut targets = std::collections::HashSet::new();
    for m in &svc.mounts {
        let t = match m {
            Mount::Volume { target, .. }
            | Mount::Anonymous { target, .. }
            | Mount::Tmpfs { target, .. } => target,
        };
        if !targets.insert(t.trim_end_matches('/').to_string()) {
            return Err(invalid(
                &format!("{field}.volumes"),
                format!("two mounts at {t}"),
            ));
        }
    }
    Ok((svc, links))
}

/// `image:`: a valid reference that the policy lets run here (see `Policy::check_image`).
fn parse_image(
    node: &Node,
    field: &str,
    policy: &Policy,
) -> Result<(String, ImageRef, super::ImageSource), ComposeError> {
    let image = scalar(node, field)?;
    let reference = ImageRef::parse(&image)
        .map_err(|why| invalid(field, format!("invalid image reference {image:?}: {why}")))?;
    let source = policy
        .check_image(&reference)
        .map_err(|why| invalid(field, format!("image {image:?} cannot run here: {why}")))?;
    Ok((image, reference, source))
}

fn parse_pull_policy(node: &Node, field: &str) -> Result<PullPolicy, ComposeError> {
    match scalar(node, field)?.as_str() {
        "missing" | "if_not_present" => Ok(PullPolicy::Missing),
        "always" | "daily" | "weekly" => Ok(PullPolicy::Always),
        "never" => Ok(PullPolicy::Never),
        "build" => Err(ComposeError::Refused {
            field: field.to_string(),
            reason: "images are not built on a shared host; use a published image",
        }),
        other => Err(invalid(field, format!("unknown pull policy {other:?}"))),
    }
}

/// `command` / `entrypoint`: a list, or a string split as a shell would.
fn parse_command(node: &Node, field: &str) -> Result<Option<Vec<String>>, ComposeError> {
    let args = match node {
        Node::Null => return Ok(None),
        Node::Seq(_) => string_list(node, field)?,
        Node::Str(s) => shell_words::split(s)
            .map_err(|e| invalid(field, format!("cannot split {s:?} into words: {e}")))?,
        other => {
            return Err(invalid(
                field,
                format!("expected a string or a list, found {}", other.kind()),
            ))
        }
    };
    for a in &args {
        no_nul(a, field)?;
    }
    Ok(Some(args))
}

/// A mapping or a list of `KEY=VALUE` / `KEY`.
fn key_values(node: &Node, field: &str) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    let mut out = Vec::new();
    match node {
        Node::Null => {}
        Node::Map(m) => {
            for (k, v) in m {
                let f = format!("{field}.{k}");
                let value = match v {
                    Node::Null => None,
                    other => Some(scalar(other, &f)?),
                };
                out.push((k.clone(), value));
            }
        }
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                let s = scalar(item, &f)?;
                match s.split_once('=') {
                    Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                    None => out.push((s, None)),
                }
            }
        }
        other => {
            return Err(invalid(
                field,
                format!("expected a mapping or a list, found {}", other.kind()),
            ))
        }
    }
    for (k, v) in &out {
        if k.is_empty() {
            return Err(invalid(field, "a name is empty"));
        }
        no_nul(k, field)?;
        if let Some(v) = v {
            no_nul(v, field)?;
        }
    }
    Ok(out)
}

fn parse_environment(
    node: &Node,
    field: &str,
) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    let env = key_values(node, field)?;
    for (k, _) in &env {
        if k.contains('=') || k.chars().any(char::is_whitespace) {
            return Err(invalid(field, format!("invalid variable name {k:?}")));
        }
    }
    Ok(env)
}

/// `labels:` of a service or a volume; keys under `io.stratus.` are refused.
pub(crate) fn parse_labels(
    node: Node,
    field: &str,
) -> Result<BTreeMap<String, String>, ComposeError> {
    let mut out = BTreeMap::new();
    for (k, v) in key_values(&node, field)? {
        if k.starts_with(RESERVED_LABEL_PREFIX) {
            return Err(ComposeError::Refused {
                field: format!("{field}.{k}"),
                reason: "labels under io.stratus. are reserved for stratus",
            });
        }
        out.insert(k, v.unwrap_or_default());
    }
    Ok(out)
}

fn parse_ports(node: &Node, field: &str) -> Result<Vec<PortSpec>, ComposeError> {
    let mut out = Vec::new();
    for (i, item) in seq(node, field)?.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match item {
            Node::Str(_) | Node::Int(_) => {
                let spec = scalar(item, &f)?;
                out.extend(parse_port_short(&spec).map_err(|m| invalid(&f, m))?);
            }
            Node::Map(m) => out.extend(parse_port_long(m, &f)?),
            other => {
                return Err(invalid(
                    &f,
                    format!("expected a port spec, found {}", other.kind()),
                ))
            }
        }
    }
    Ok(out)
}

fn parse_port_long(
    map: &IndexMap<String, Node>,
    field: &str,
) -> Result<Vec<PortSpec>, ComposeError> {
    let mut target = None;
    let mut published = None;
    let mut protocol = Protocol::Tcp;
    for (k, v) in map {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "target" => {
                let (a, b) = parse_port_range(&scalar(v, &f)?).map_err(|m| invalid(&f, m))?;
                if a != b {
                    return Err(invalid(&f, "the target is one port"));
                }
                target = Some(a);
            }
            "published" => {
                if !matches!(v, Node::Null) {
                    let s = scalar(v, &f)?;
                    if !s.is_empty() {
                        published = Some(parse_port_range(&s).map_err(|m| invalid(&f, m))?);
                    }
                }
            }
            "protocol" => protocol = parse_protocol(&scalar(v, &f)?).map_err(|m| invalid(&f, m))?,
            "host_ip" | "mode" | "name" | "app_protocol" => {}
            k if k.starts_with("x-") => {}
            _ => return Err(unsupported(f)),
        }
    }
    let target =
        target.ok_or_else(|| invalid(&format!("{field}.target"), "a port needs a target"))?;
    let published = match published {
        Some((a, b)) if a == b => Some(a),
        _ => None,
    };
    Ok(vec![PortSpec {
        container_port: target,
        published,
        protocol,
    }])
}

fn parse_expose(node: &Node, field: &str) -> Result<Vec<ExposedPort>, ComposeError> {
    let mut out = Vec::new();
    for (i, item) in seq(node, field)?.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let s = scalar(item, &f)?;
        let (range, protocol) = match s.rsplit_once('/') {
            Some((r, p)) => (r, parse_protocol(p).map_err(|m| invalid(&f, m))?),
            None => (s.as_str(), Protocol::Tcp),
        };
        let (a, b) = parse_port_range(range).map_err(|m| invalid(&f, m))?;
        if b - a >= 1024 {
            return Err(invalid(&f, "at most 1024 ports per range"));
        }
        out.extend((a..=b).map(|port| ExposedPort { port, protocol }));
    }
    Ok(out)
}

fn volume_declared(name: &str, field: &str, ctx: &Context<'_>) -> Result<(), ComposeError> {
    if ctx.volumes.iter().any(|v| v.name == name) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("volume {name:?} is not declared under the top-level volumes"),
        ))
    }
}

fn parse_mounts(node: &Node, field: &str, ctx: &Context<'_>) -> Result<Vec<Mount>, ComposeError> {
    let mut out = Vec::new();
    for (i, item) in seq(node, field)?.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match item {
            Node::Str(s) => out.push(parse_mount_short(s, &f, ctx)?),
            Node::Map(m) => out.push(parse_mount_long(m, &f, ctx)?),
            other => {
                return Err(invalid(
                    &f,
                    format!("expected a volume spec, found {}", other.kind()),
                ))
            }
        }
    }
    Ok(out)
}

/// Mode flags of the short syntax; returns `(read_only, nocopy)`.
fn mount_mode(mode: &str, field: &str) -> Result<(bool, bool), ComposeError> {
    let mut read_only = false;
    let mut nocopy = false;
    for flag in mode.split(',').filter(|f| !f.is_empty()) {
        match flag {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            // SELinux relabelling and macOS consistency hints have no effect on a named volume.
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            _ => return Err(invalid(field, format!("unknown volume mode {flag:?}"))),
        }
    }
    Ok((read_only, nocopy))
}

fn is_mode(s: &str) -> bool {
    s.split(',').all(|f| {
        matches!(
            f,
            "ro" | "rw" | "nocopy" | "z" | "Z" | "consistent" | "cached" | "delegated"
        )
    })
}

fn parse_mount_short(spec: &str, field: &str, ctx: &Context<'_>) -> Result<Mount, ComposeError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [a, b] if a.starts_with('/') && is_mode(b) => (None, *a, *b),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode] => (Some(*source), *target, *mode),
        _ => return Err(invalid(field, format!("invalid volume spec {spec:?}"))),
    };
    if let Some(source) = source {
        if let Some(reason) = policy::refused_volume_source(source) {
            return Err(ComposeError::Refused {
                field: field.to_string(),
                reason,
            });
        }
    }
    check_container_path(target, field)?;
    if target == "/" {
        return Err(invalid(field, "a volume cannot be mounted at /"));
    }
    let (read_only, nocopy) = mount_mode(mode, field)?;
    match source {
        None => Ok(Mount::Anonymous {
            target: target.to_string(),
            read_only,
        }),
        Some(source) => {
            volume_declared(source, field, ctx)?;
            Ok(Mount::Volume {
                source: source.to_string(),
                target: target.to_string(),
                read_only,
                nocopy,
            })
        }
    }
}

fn parse_mount_long(
    map: &IndexMap<String, Node>,
    field: &str,
    ctx: &Context<'_>,
) -> Result<Mount, ComposeError> {
    let kind = match map.get("type") {
        Some(n) => scalar(n, &format!("{field}.type"))?,
        None => return Err(invalid(&format!("{field}.type"), "a mount needs a type")),
    };
    if let Some(reason) = policy::refused_mount_type(&kind) {
        return Err(ComposeError::Refused {
            field: format!("{field}.type"),
            reason,
        });
    }
    if kind != "volume" && kind != "tmpfs" {
        return Err(invalid(
            &format!("{field}.type"),
            format!("unknown mount type {kind:?} (volume or tmpfs)"),
        ));
    }
    let mut source = None;
    let mut target = None;
    let mut read_only = false;
    let mut nocopy = false;
    let mut size = None;
    let mut mode = None;
    for (k, v) in map {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "type" | "consistency" => {}
            "source" => {
                let s = scalar(v, &f)?;
                if !s.is_empty() {
                    source = Some(s);
                }
            }
            "target" => target = Some(absolute_path(v, &f)?),
            "read_only" => read_only = boolean(v, &f)?,
            "volume" if kind == "volume" => {
                let Node::Map(m) = v else {
                    return Err(invalid(&f, "expected a mapping"));
                };
                for (vk, vv) in m {
                    let vf = format!("{f}.{vk}");
                    match vk.as_str() {
                        "nocopy" => nocopy = boolean(vv, &vf)?,
                        _ => return Err(unsupported(vf)),
                    }
                }
            }
            "tmpfs" if kind == "tmpfs" => {
                let Node::Map(m) = v else {
                    return Err(invalid(&f, "expected a mapping"));
                };
                for (tk, tv) in m {
                    let tf = format!("{f}.{tk}");
                    match tk.as_str() {
                        "size" => size = Some(bytes(tv, &tf)?),
                        "mode" => mode = Some(file_mode(tv, &tf)?),
                        _ => return Err(unsupported(tf)),
                    }
                }
            }
            k if k.starts_with("x-") => {}
            _ => return Err(unsupported(f)),
        }
    }
    let target =
        target.ok_or_else(|| invalid(&format!("{field}.target"), "a mount needs a target"))?;
    if target == "/" {
        return Err(invalid(
            &format!("{field}.target"),
            "nothing can be mounted at /",
        ));
    }
    if kind == "tmpfs" {
        if source.is_some() {
            return Err(invalid(
                &format!("{field}.source"),
                "a tmpfs mount has no source",
            ));
        }
        return tmpfs_mount(
            target,
            size,
            mode,
            &format!("{field}.tmpfs.size"),
            ctx.policy,
        );
    }
    match source {
        None => Ok(Mount::Anonymous { target, read_only }),
        Some(source) => {
            if let Some(reason) = policy::refused_volume_source(&source) {
                return Err(ComposeError::Refused {
                    field: format!("{field}.source"),
                    reason,
                });
            }
            volume_declared(&source, &format!("{field}.source"), ctx)?;
            Ok(Mount::Volume {
                source,
                target,
                read_only,
                nocopy,
            })
        }
    }
}

fn file_mode(node: &Node, field: &str) -> Result<u32, ComposeError> {
    // YAML reads 1777 as decimal; compose means octal digits either way.
    let s = scalar(node, field)?;
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| invalid(field, format!("invalid file mode {s:?}")))?;
    if m > 0o7777 {
        return Err(invalid(field, format!("invalid file mode {s:?}")));
    }
    Ok(m)
}

fn tmpfs_mount(
    target: String,
    size: Option<u64>,
    mode: Option<u32>,
    size_field: &str,
    policy: &Policy,
) -> Result<Mount, ComposeError> {
    let size_bytes = size
        .filter(|&s| s > 0)
        .unwrap_or(policy.default_tmpfs_bytes);
    if size_bytes > policy.max_tmpfs_bytes {
        return Err(invalid(
            size_field,
            format!("at most {} bytes are allowed", policy.max_tmpfs_bytes),
        ));
    }
    Ok(Mount::Tmpfs {
        target,
        size_bytes,
        mode,
    })
}

/// `tmpfs: /run` or `tmpfs: ["/run:size=64m,mode=1777"]`.
fn parse_tmpfs(node: &Node, field: &str, policy: &Policy) -> Result<Vec<Mount>, ComposeError> {
    let items: Vec<(String, String)> = match node {
        Node::Str(s) => vec![(field.to_string(), s.clone())],
        _ => seq(node, field)?
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let f = format!("{field}[{i}]");
                scalar(n, &f).map(|s| (f, s))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for (f, spec) in items {
        let (target, options) = spec.split_once(':').unwrap_or((&spec, ""));
        check_container_path(target, &f)?;
        let mut size = None;
        let mut mode = None;
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", v)) => size = Some(parse_bytes(v).map_err(|m| invalid(&f, m))?),
                Some(("mode", v)) => mode = Some(file_mode(&Node::Str(v.to_string()), &f)?),
                Some(("uid" | "gid", v)) if v.parse::<u32>().is_ok() => {}
                None if matches!(opt, "ro" | "rw" | "noexec" | "exec" | "nosuid" | "nodev") => {}
                _ => return Err(invalid(&f, format!("unsupported tmpfs option {opt:?}"))),
            }
        }
        out.push(tmpfs_mount(target.to_string(), size, mode, &f, policy)?);
    }
    Ok(out)
}

fn parse_depends_on(
    node: &Node,
    field: &str,
    me: &str,
    ctx: &Context<'_>,
) -> Result<Vec<Dependency>, ComposeError> {
    let mut out: Vec<Dependency> = Vec::new();
    let mut add =
        |service: String, condition, required: bool, f: &str| -> Result<(), ComposeError> {
            if service == me {
                return Err(invalid(f, "a service cannot depend on itself"));
            }
            if !ctx.services.contains(&service) {
                if !required {
                    return Ok(());
                }
                return Err(invalid(f, format!("service {service:?} is not defined")));
            }
            if !out.iter().any(|d| d.service == service) {
                out.push(Dependency { service, condition });
            }
            Ok(())
        };
    match node {
        Node::Null => {}
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                add(scalar(item, &f)?, DependsCondition::Started, true, &f)?;
            }
        }
        Node::Map(m) => {
            for (service, spec) in m {
                let f = format!("{field}.{service}");
                let mut condition = DependsCondition::Started;
                let mut required = true;
                match spec {
                    Node::Null => {}
                    Node::Map(opts) => {
                        for (k, v) in opts {
                            let of = format!("{f}.{k}");
                            match k.as_str() {
                                "condition" => {
                                    let c = scalar(v, &of)?;
                                    condition = DependsCondition::parse(&c).ok_or_else(|| {
                                        invalid(
                                            &of,
                                            format!("unknown condition {c:?} (service_started, service_healthy or service_completed_successfully)"),
                                        )
                                    })?;
                                }
                                "required" => required = boolean(v, &of)?,
                                "restart" => {
                                    boolean(v, &of)?;
                                }
                                k if k.starts_with("x-") => {}
                                _ => return Err(unsupported(of)),
                            }
                        }
                    }
                    other => {
                        return Err(invalid(
                            &f,
                            format!("expected a mapping, found {}", other.kind()),
                        ))
                    }
                }
                add(service.clone(), condition, required, &f)?;
            }
        }
        other => {
            return Err(invalid(
                field,
                format!("expected a list or a mapping, found {}", other.kind()),
            ))
        }
    }
    Ok(out)
}

fn parse_restart_node(
    node: &Node,
    field: &str,
    policy: &Policy,
) -> Result<Option<RestartPolicy>, ComposeError> {
    let restart = match node {
        Node::Null => return Ok(None),
        Node::Bool(false) => RestartPolicy::No,
        other => parse_restart(&scalar(other, field)?).map_err(|m| invalid(field, m))?,
    };
    if let RestartPolicy::OnFailure {
        max_retries: Some(n),
    } = restart
    {
        if n > policy.max_restart_retries {
            return Err(invalid(
                field,
                format!("at most {} retries are allowed", policy.max_restart_retries),
            ));
        }
    }
    Ok(Some(restart))
}

fn parse_healthcheck(
    node: &Node,
    field: &str,
    policy: &Policy,
) -> Result<Healthcheck, ComposeError> {
    let Node::Map(map) = node else {
        return Err(invalid(
            field,
            format!("expected a mapping, found {}", node.kind()),
        ));
    };
    let mut test = None;
    let mut interval = None;
    let mut timeout = None;
    let mut retries = None;
    let mut start_period = None;
    let mut start_interval = None;
    let mut disabled = false;
    for (k, v) in map {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "test" => {
                let t = match v {
                    Node::Str(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                    Node::Seq(_) => string_list(v, &f)?,
                    other => {
                        return Err(invalid(
                            &f,
                            format!("expected a string or a list, found {}", other.kind()),
                        ))
                    }
                };
                match t.first().map(String::as_str) {
                    Some("NONE") => disabled = true,
                    Some("CMD") if t.len() > 1 => test = Some(t),
                    Some("CMD-SHELL") if t.len() == 2 => test = Some(t),
                    _ => {
                        return Err(invalid(
                            &f,
                            "a test is a string or a list starting with CMD, CMD-SHELL or NONE",
                        ))
                    }
                }
                for a in test.iter().flatten() {
                    no_nul(a, &f)?;
                }
            }
            "interval" => {
                let d = duration(v, &f)?;
                if d < policy.min_healthcheck_interval {
                    return Err(invalid(
                        &f,
                        format!(
                            "must be at least {} ms",
                            policy.min_healthcheck_interval.as_millis()
                        ),
                    ));
                }
                interval = Some(d);
            }
            "timeout" => timeout = Some(duration(v, &f)?),
            "start_period" => start_period = Some(duration(v, &f)?),
            "start_interval" => {
                let d = duration(v, &f)?;
                if d < policy.min_healthcheck_interval {
                    return Err(invalid(
                        &f,
                        format!(
                            "must be at least {} ms",
                            policy.min_healthcheck_interval.as_millis()
                        ),
                    ));
                }
                start_interval = Some(d);
            }
            "retries" => match v {
                Node::Int(n) if (0..=1000).contains(n) => retries = Some(*n as u32),
                _ => return Err(invalid(&f, "expected a number of retries (0 to 1000)")),
            },
            "disable" => disabled |= boolean(v, &f)?,
            k if k.starts_with("x-") => {}
            _ => return Err(unsupported(f)),
        }
    }
    if disabled {
        return Ok(Healthcheck::Disabled);
    }
    Ok(Healthcheck::Check {
        test,
        interval,
        timeout,
        retries,
        start_period,
        start_interval,
    })
}

fn parse_hostname(node: &Node, field: &str) -> Result<String, ComposeError> {
    let h = scalar(node, field)?;
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(invalid(field, format!("invalid host name {h:?}")));
    }
    Ok(h)
}

fn alias(s: &str, field: &str) -> Result<String, ComposeError> {
    if !valid_name(s) {
        return Err(invalid(field, format!("invalid alias {s:?}")));
    }
    Ok(s.to_string())
}

/// `networks:` of a service: every compose network is the instance's one private network, so
/// only the aliases matter.
fn parse_service_networks(
    node: &Node,
    field: &str,
    ctx: &Context<'_>,
) -> Result<Vec<String>, ComposeError> {
    let known = |name: &str, f: &str| -> Result<(), ComposeError> {
        if ctx.networks.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(invalid(
                f,
                format!("network {name:?} is not declared under the top-level networks"),
            ))
        }
    };
    let mut aliases = Vec::new();
    match node {
        Node::Null => {}
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                known(&scalar(item, &f)?, &f)?;
            }
        }
        Node::Map(m) => {
            for (name, spec) in m {
                let f = format!("{field}.{name}");
                known(name, &f)?;
                match spec {
                    Node::Null => {}
                    Node::Map(opts) => {
                        for (k, v) in opts {
                            let of = format!("{f}.{k}");
                            match k.as_str() {
                                "aliases" => {
                                    for (i, a) in string_list(v, &of)?.iter().enumerate() {
                                        aliases.push(alias(a, &format!("{of}[{i}]"))?);
                                    }
                                }
                                "priority" | "gw_priority" => {}
                                k if k.starts_with("x-") => {}
                                _ => return Err(unsupported(of)),
                            }
                        }
                    }
                    other => {
                        return Err(invalid(
                            &f,
                            format!("expected a mapping, found {}", other.kind()),
                        ))
                    }
                }
            }
        }
        other => {
            return Err(invalid(
                field,
                format!("expected a list or a mapping, found {}", other.kind()),
            ))
        }
    }
    Ok(aliases)
}

/// `links: ["db", "db:database"]`: the alias is given to the linked service.
fn parse_links(
    node: &Node,
    field: &str,
    ctx: &Context<'_>,
) -> Result<Vec<(String, String)>, ComposeError> {
    let mut out = Vec::new();
    for (i, s) in string_list(node, field)?.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let (service, name) = s.split_once(':').unwrap_or((s, s));
        if !ctx.services.iter().any(|x| x == service) {
            return Err(invalid(&f, format!("service {service:?} is not defined")));
        }
        if service != name {
            out.push((service.to_string(), alias(name, &f)?));
        }
    }
    Ok(out)
}

fn parse_extra_hosts(node: &Node, field: &str) -> Result<Vec<String>, ComposeError> {
    let mut pairs = Vec::new();
    match node {
        Node::Map(m) => {
            for (host, ip) in m {
                pairs.push((host.clone(), scalar(ip, &format!("{field}.{host}"))?));
            }
        }
        _ => {
            for s in string_list(node, field)? {
                // `host:ip` or `host=ip`; an IPv6 address may itself contain colons.
                let split = s.split_once('=').or_else(|| s.split_once(':'));
                let (h, ip) = split
                    .ok_or_else(|| invalid(field, format!("invalid entry {s:?} (host:ip)")))?;
                pairs.push((h.to_string(), ip.to_string()));
            }
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (host, ip) in pairs {
        let ip = ip.trim_start_matches('[').trim_end_matches(']').to_string();
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !host_ok || (ip != "host-gateway" && ip.parse::<IpAddr>().is_err()) {
            return Err(invalid(field, format!("invalid entry {host}:{ip}")));
        }
        out.push(format!("{host}:{ip}"));
    }
    Ok(out)
}

/// `cap_drop:` names, normalized as the engine spells them (`NET_RAW`, `ALL`).
fn parse_cap_drop(node: &Node, field: &str) -> Result<Vec<String>, ComposeError> {
    let mut caps = Vec::new();
    for c in string_list(node, field)? {
        if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(field, format!("invalid capability {c:?}")));
        }
        let upper = c.to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper).to_string();
        if !caps.contains(&name) {
            caps.push(name);
        }
    }
    Ok(caps)
}

/// `ulimits:`: each limit at most the host's hard limit (and `nofile` at most the policy's), soft
/// at most hard; `-1` (unlimited) only where the host itself is unlimited, and never for
/// `memlock` and `nproc`, which would let a sandbox pin the host's memory or count against
/// processes of other sandboxes running as the same user.
fn parse_ulimits(node: &Node, field: &str, policy: &Policy) -> Result<Vec<Ulimit>, ComposeError> {
    let Node::Map(map) = node else {
        return Err(invalid(
            field,
            format!("expected a mapping, found {}", node.kind()),
        ));
    };
    let mut out = Vec::new();
    for (name, v) in map {
        let f = format!("{field}.{name}");
        let Ok(host_hard) = policy.host_limits.of(name) else {
            return Err(unsupported(f));
        };
        // The largest value allowed; `None`: unlimited (-1) is allowed too.
        let max: Option<u64> = match name.as_str() {
            "nofile" => Some(host_hard.map_or(policy.max_nofile, |h| h.min(policy.max_nofile))),
            "memlock" | "nproc" => Some(host_hard.unwrap_or(i64::MAX as u64)),
            _ => host_hard,
        };
        let num = |n: &Node, f: &str| -> Result<i64, ComposeError> {
            match n {
                Node::Int(i) if *i >= -1 => Ok(*i),
                _ => Err(invalid(f, "expected a number (-1 for unlimited)")),
            }
        };
        let (soft, hard, at) = match v {
            Node::Int(_) => {
                let n = num(v, &f)?;
                (n, n, f.clone())
            }
            Node::Map(m) => {
                let soft = m
                    .get("soft")
                    .ok_or_else(|| invalid(&f, "needs soft and hard"))?;
                let hard = m
                    .get("hard")
                    .ok_or_else(|| invalid(&f, "needs soft and hard"))?;
                if let Some(k) = m.keys().find(|k| *k != "soft" && *k != "hard") {
                    return Err(unsupported(format!("{f}.{k}")));
                }
                (
                    num(soft, &format!("{f}.soft"))?,
                    num(hard, &format!("{f}.hard"))?,
                    f.clone(),
                )
            }
            _ => return Err(invalid(&f, "expected a number or soft/hard")),
        };
        let allowed = |x: i64| match (x, max) {
            (-1, None) => true,
            (-1, Some(_)) => false,
            (x, None) => x >= 0,
            (x, Some(m)) => x >= 0 && (x as u64) <= m,
        };
        let limit = match max {
            Some(m) => format!("at most {m} on this host"),
            None => "unlimited on this host".to_string(),
        };
        if !allowed(hard) || !allowed(soft) {
            return Err(invalid(
                &at,
                format!("{name} limit out of range ({limit}; -1, unlimited, only where the host is unlimited)"),
            ));
        }
        let unlimited = |x: i64| x == -1;
        if !unlimited(hard) && (unlimited(soft) || soft > hard) {
            return Err(invalid(
                &at,
                format!("the soft {name} limit must not exceed the hard one"),
            ));
        }
        out.push(Ulimit {
            name: name.clone(),
            soft,
            hard,
        });
    }
    Ok(out)
}

/// `deploy:` is swarm's; only a single replica makes sense here, resources are stratus'.
fn check_deploy(node: &Node, field: &str) -> Result<(), ComposeError> {
    let map = match node {
        Node::Null => return Ok(()),
        Node::Map(m) => m,
        other => {
            return Err(invalid(
                field,
                format!("expected a mapping, found {}", other.kind()),
            ))
        }
    };
    for (k, v) in map {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "replicas" => {
                if !matches!(v, Node::Int(1)) {
                    return Err(invalid(&f, "only one container per service is run"));
                }
            }
            "resources" | "restart_policy" | "mode" | "placement" | "labels" | "update_config"
            | "rollback_config" | "endpoint_mode" => {}
            k if k.starts_with("x-") => {}
            _ => return Err(unsupported(f)),
        }
    }
    Ok(())
}
