//! Compose YAML through the compose parser and the default [`Policy`].

use stratus_compute::compose::{Healthcheck, Mount, RestartPolicy, Service};
use stratus_compute::{ComposeApp, Policy};

/// Compose: every app the parser accepts respects the policy it was parsed under (services,
/// published ports, tmpfs mounts and sizes, `/dev/shm`, ulimits, grace period, healthcheck
/// interval, restart retries), names only what it declares (volumes, dependencies), mounts no
/// host path, has a start order, and parses the same way twice. A file that plainly asks for the
/// host (as a general YAML parser reads it) is refused. A stricter policy accepts no more than
/// the default one.
pub fn compose(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let policy = Policy::default();
    let parsed = ComposeApp::parse(text, &policy);
    assert_eq!(
        ComposeApp::parse(text, &policy),
        parsed,
        "not deterministic"
    );
    if let Ok(app) = &parsed {
        respects(app, &policy);
    }
    if let Some(field) = dangerous(text) {
        assert!(parsed.is_err(), "{field} was accepted");
    }
    let strict = Policy {
        max_services: 2,
        max_bytes: 4096,
        max_nodes: 200,
        max_scalar_bytes: 2048,
        max_published_ports: 3,
        // The same default size, so that what both accept is the same app.
        max_tmpfs_bytes: policy.default_tmpfs_bytes,
        default_tmpfs_bytes: policy.default_tmpfs_bytes,
        max_tmpfs_mounts: 1,
        max_stop_grace_period: std::time::Duration::from_secs(5),
        min_healthcheck_interval: std::time::Duration::from_secs(10),
        max_nofile: 1024,
        max_restart_retries: 3,
        max_volumes: 2,
        ..policy.clone()
    };
    if let Ok(app) = ComposeApp::parse(text, &strict) {
        respects(&app, &strict);
        assert_eq!(parsed.as_ref(), Ok(&app), "the strict policy accepted more");
    }
}

fn respects(app: &ComposeApp, policy: &Policy) {
    assert!(!app.services.is_empty());
    assert!(app.services.len() <= policy.max_services);
    assert!(app.published_ports().len() <= policy.max_published_ports);
    let order = app.start_order();
    assert_eq!(order.len(), app.services.len());
    let names = app.service_names();
    for (i, s) in app.services.iter().enumerate() {
        assert!(valid_name(&s.name), "{:?}", s.name);
        assert!(!names[..i].contains(&s.name.as_str()), "duplicate service");
        assert!(!s.image.is_empty());
        service_respects(s, app, policy);
        // Dependencies come first in the start order.
        let at = |name: &str| order.iter().position(|&j| app.services[j].name == name);
        for d in &s.depends_on {
            let dep = at(&d.service).expect("a dependency is a service of the app");
            assert!(dep < at(&s.name).expect("listed"));
        }
    }
    assert!(app.volumes.len() <= policy.max_volumes);
    for v in &app.volumes {
        assert!(valid_name(&v.name), "{:?}", v.name);
    }
    for p in app.published_ports() {
        if p.protocol == stratus_compute::compose::Protocol::Tcp {
            assert!(app.resolve_port(p.machine_port()).is_some());
        }
    }
}

fn service_respects(s: &Service, app: &ComposeApp, policy: &Policy) {
    let tmpfs: Vec<u64> = s
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Tmpfs { size_bytes, .. } => Some(*size_bytes),
            _ => None,
        })
        .collect();
    assert!(tmpfs.len() <= policy.max_tmpfs_mounts);
    assert!(tmpfs.iter().all(|&b| b <= policy.max_tmpfs_bytes));
    assert!(s.shm_size.is_none_or(|b| b <= policy.max_tmpfs_bytes));
    for m in &s.mounts {
        let target = match m {
            Mount::Volume { source, target, .. } => {
                assert!(
                    app.volumes.iter().any(|v| &v.name == source),
                    "volume {source:?} is not declared"
                );
                assert!(!source.contains(['/', '\\', '$']) && !source.starts_with(['.', '~']));
                target
            }
            Mount::Anonymous { target, .. } | Mount::Tmpfs { target, .. } => target,
        };
        assert!(target.starts_with('/'), "mount target {target:?}");
    }
    assert!(s
        .stop_grace_period
        .is_none_or(|d| d <= policy.max_stop_grace_period));
    if let Some(Healthcheck::Check {
        interval,
        start_interval,
        ..
    }) = &s.healthcheck
    {
        for d in [interval, start_interval].into_iter().flatten() {
            assert!(*d >= policy.min_healthcheck_interval);
        }
    }
    if let Some(RestartPolicy::OnFailure {
        max_retries: Some(n),
    }) = s.restart
    {
        assert!(n <= policy.max_restart_retries);
    }
    for u in &s.ulimits {
        assert!(u.soft >= -1 && u.hard >= -1);
        assert!(u.hard == -1 || (u.soft != -1 && u.soft <= u.hard), "{u:?}");
        if u.name == "nofile" {
            assert!(u.soft >= 0 && u.hard >= 0);
            assert!(u.soft as u64 <= policy.max_nofile && u.hard as u64 <= policy.max_nofile);
        }
    }
    for p in &s.ports {
        assert!(p.container_port > 0);
    }
}

/// A name that can be part of a Docker object name (what the parser promises).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A field of a service that plainly reaches outside the sandbox, as a general YAML parser reads
/// the file (merge keys and interpolation are not applied, so this sees fewer cases than the
/// compose parser, never more): `privileged: true`, capabilities, devices, host namespaces, a
/// bind mount of an absolute host path.
fn dangerous(text: &str) -> Option<String> {
    use serde_norway::Value;
    let doc: Value = serde_norway::from_str(text).ok()?;
    let services = doc.get("services")?.as_mapping()?;
    for (name, service) in services {
        let Some(service) = service.as_mapping() else {
            continue;
        };
        for (key, value) in service {
            let Some(key) = key.as_str() else {
                continue;
            };
            let field = format!("services.{name:?}.{key}");
            let found = match (key, value) {
                ("privileged", Value::Bool(true)) => true,
                ("cap_add" | "devices" | "sysctls", Value::Sequence(s)) => !s.is_empty(),
                ("sysctls", Value::Mapping(m)) => !m.is_empty(),
                ("network_mode" | "pid" | "ipc" | "uts" | "userns_mode", Value::String(s)) => {
                    s == "host"
                }
                // `/host:/container[:mode]` (`/scratch:ro` is an anonymous volume).
                ("volumes", Value::Sequence(items)) => items.iter().any(|v| {
                    v.as_str().is_some_and(|s| {
                        s.starts_with('/')
                            && s.split(':').nth(1).is_some_and(|t| t.starts_with('/'))
                    })
                }),
                _ => false,
            };
            if found {
                return Some(field);
            }
        }
    }
    None
}
