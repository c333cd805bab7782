//! The Docker runtime against the real engine with the local busybox image. These tests fail
//! (they do not skip) when Docker is not running.

mod common;

use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use common::*;
use stratus_compute::docker::spec::{container_name, network_name, volume_name};
use stratus_compute::{Bounds, DockerConfig, DockerRuntime, InstanceState, Runtime, RuntimeError};

const APP: &str = r#"
services:
  web:
    image: stratus-test/busybox:latest
    container_name: chosen-by-the-user
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["80:80"]
    volumes: ["data:/data"]
    depends_on:
      store:
        condition: service_healthy
      seed:
        condition: service_completed_successfully
  store:
    image: stratus-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /srv && echo from-store > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
    expose: ["8080"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      retries: 30
  seed:
    image: stratus-test/busybox:latest
    command: ["sh", "-c", "echo seeded > /data/seed"]
    volumes: ["data:/data"]
volumes:
  data:
"#;

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_lifecycle() {
    let rt = runtime().await;
    let docker = rt.client();
    let id = unique_id("e2e");
    let _cleanup = Cleanup(id.clone());
    let web = container_name(&id, "web");

    rt.create(&spec(&id, APP)).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Stopped);
    assert_eq!(rt.endpoint(&id, 80).await.unwrap(), None, "not started yet");
    let (containers, networks, volumes) = labelled_objects(docker, &id).await;
    assert_eq!((containers, networks, volumes), (3, 1, 1));
    let info = docker.inspect_container(&web, None).await.unwrap();
    assert_eq!(
        info.name.as_deref(),
        Some(format!("/{web}").as_str()),
        "container_name is ignored"
    );
    let labels = info.config.unwrap().labels.unwrap();
    assert_eq!(labels["io.stratus.instance"], id);
    assert_eq!(labels["io.stratus.service"], "web");
    docker
        .inspect_volume(&volume_name(&id, "data"))
        .await
        .unwrap();
    docker
        .inspect_network(&network_name(&id), None)
        .await
        .unwrap();

    // Start: store becomes healthy and seed completes before web starts.
    rt.start(&id).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Running);
    let addr = rt
        .endpoint(&id, 80)
        .await
        .unwrap()
        .expect("web publishes 80");
    assert!(!addr.ip().is_loopback());
    let body = http_get_eventually(addr).await;
    assert!(body.contains("hello from stratus-test"), "{body}");
    assert_eq!(
        rt.endpoint(&id, 8080).await.unwrap(),
        None,
        "expose is not publish"
    );
    assert_eq!(rt.endpoint(&id, 22).await.unwrap(), None);

    // Services reach each other by name.
    let (code, out) = exec(docker, &web, &["wget", "-q", "-O-", "http://store:8080/"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("from-store"), "{out}");
    // The one-shot service wrote into the shared named volume.
    let (_, out) = exec(docker, &web, &["cat", "/data/seed"]).await;
    assert_eq!(out.trim(), "seeded");

    // The named volume survives a restart.
    let (code, _) = exec(docker, &web, &["sh", "-c", "echo kept > /data/marker"]).await;
    assert_eq!(code, 0);
    rt.restart(&id).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Running);
    let (_, out) = exec(docker, &web, &["cat", "/data/marker"]).await;
    assert_eq!(out.trim(), "kept");
    let addr = rt.endpoint(&id, 80).await.unwrap().unwrap();
    assert!(http_get_eventually(addr)
        .await
        .contains("hello from stratus-test"));

    // Stop: nothing to connect to.
    rt.stop(&id).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Stopped);
    assert_eq!(rt.endpoint(&id, 80).await.unwrap(), None);
    assert!(
        http_get(addr).await.is_err(),
        "the old address must not answer"
    );

    // Start again: served again.
    rt.start(&id).await.unwrap();
    let addr = rt.endpoint(&id, 80).await.unwrap().unwrap();
    assert!(http_get_eventually(addr)
        .await
        .contains("hello from stratus-test"));

    // One service stopped behind our back: the instance is partly up; start() brings it back.
    docker
        .stop_container(&container_name(&id, "store"), None::<StopContainerOptions>)
        .await
        .unwrap();
    assert_eq!(
        rt.state(&id).await.unwrap(),
        InstanceState::Partial {
            running: vec!["web".into()],
            stopped: vec!["store".into()],
        }
    );
    rt.start(&id).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Running);

    // Remove: containers, network and volumes are gone; removing again is fine.
    rt.remove(&id).await.unwrap();
    assert_eq!(labelled_objects(docker, &id).await, (0, 0, 0));
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Missing);
    rt.remove(&id).await.unwrap();
    if let Some(dir) = rt.instance_cgroup_dir(&id) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(matches!(
        rt.start(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_applied() {
    let rt = runtime().await;
    let docker = rt.client();
    let id = unique_id("limits");
    let _cleanup = Cleanup(id.clone());
    let yaml = r#"
services:
  a:
    image: stratus-test/busybox:latest
    command: ["sleep", "3600"]
    ports: ["80"]
  b:
    image: stratus-test/busybox:latest
    command: ["sleep", "3600"]
"#;
    let mut s = spec(&id, yaml);
    s.cpus = 0.5;
    s.memory_bytes = 256 << 20;
    s.pids_limit = 64;
    rt.create(&s).await.unwrap();
    rt.start(&id).await.unwrap();

    for service in ["a", "b"] {
        let info = docker
            .inspect_container(&container_name(&id, service), None)
            .await
            .unwrap();
        let hc = info.host_config.unwrap();
        assert_eq!(hc.pids_limit, Some(64));
        assert!(hc
            .security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges")));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.cap_drop.unwrap_or_default(), ["ALL"]);
        assert_eq!(
            hc.cap_add.unwrap_or_default(),
            stratus_compute::docker::spec::SANDBOX_CAPABILITIES
        );
        assert_eq!(
            hc.cgroupns_mode,
            Some(bollard::models::HostConfigCgroupnsModeEnum::PRIVATE)
        );
        assert!(
            hc.port_bindings.unwrap_or_default().is_empty(),
            "nothing bound on the host"
        );
        assert_eq!(hc.readonly_rootfs, Some(false));
        let log = hc.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert!(log.config.unwrap().contains_key("max-size"));
        match rt.bounds() {
            Bounds::ParentCgroup { .. } => {
                assert_eq!(
                    hc.cgroup_parent.as_deref(),
                    Some(format!("/stratus/{id}").as_str())
                );
                assert_eq!(hc.memory, Some(256 << 20));
                assert_eq!(hc.nano_cpus, Some(500_000_000));
            }
            Bounds::Split { .. } => {
                assert_eq!(hc.memory, Some(128 << 20));
                assert_eq!(hc.nano_cpus, Some(250_000_000));
            }
        }
    }

    if let Bounds::ParentCgroup { version } = rt.bounds() {
        let dir = rt.instance_cgroup_dir(&id).unwrap();
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
        if *version == 1 {
            assert_eq!(
                read(dir.join("memory.limit_in_bytes")),
                (256u64 << 20).to_string()
            );
            // Each controller's hierarchy where this host mounts it (no layout assumed).
            let cpu = cgroup_v1_mount("cpu").join("stratus").join(&id);
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
            let pids = cgroup_v1_mount("pids").join("stratus").join(&id);
            assert_eq!(read(pids.join("pids.max")), "128");
        } else {
            assert_eq!(read(dir.join("memory.max")), (256u64 << 20).to_string());
            assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        }
        // Both containers live under the instance's group.
        for service in ["a", "b"] {
            let cid = docker
                .inspect_container(&container_name(&id, service), None)
                .await
                .unwrap()
                .id
                .unwrap();
            assert!(
                dir.join(&cid).is_dir(),
                "container {service} is not under {}",
                dir.display()
            );
        }
    } else {
        eprintln!(
            "instance bounds are split across services here: {:?}",
            rt.bounds()
        );
    }

    // The pids limit is enforced: a burst of processes cannot exceed it.
    let (_, out) = exec(
        docker,
        &container_name(&id, "a"),
        &[
            "sh",
            "-c",
            "for i in $(seq 1 100); do sleep 5 & done 2>&1; echo spawned",
        ],
    )
    .await;
    assert!(
        out.contains("can't fork") && !out.contains("spawned"),
        "100 background processes must not fit in a pids limit of 64: {out}"
    );
    rt.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_fails_create_with_a_clear_reason() {
    let rt = runtime().await;
    let id = unique_id("noimage");
    let _cleanup = Cleanup(id.clone());
    let yaml = "services:\n  web:\n    image: stratus-test/does-not-exist:1.0\n";
    let err = rt.create(&spec(&id, yaml)).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::ImageUnavailable { image, .. } if image == "stratus-test/does-not-exist:1.0"),
        "{err:?}"
    );
    // Not on this host and no registry to pull from here: a generic reason (the engine's
    // text is only logged).
    assert_eq!(
        err.to_string(),
        "image stratus-test/does-not-exist:1.0 could not be pulled from its registry"
    );
    assert!(err.is_user_error());
    assert_eq!(
        labelled_objects(rt.client(), &id).await,
        (0, 0, 0),
        "nothing left behind"
    );
    assert_eq!(rt.state(&id).await.unwrap(), InstanceState::Missing);

    let never =
        "services:\n  web:\n    image: stratus-test/does-not-exist:2\n    pull_policy: never\n";
    let err = rt.create(&spec(&id, never)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "image stratus-test/does-not-exist:2 is not available on this host (pull_policy: never)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_found_again_by_label() {
    let rt = runtime().await;
    let a = unique_id("reattach-a");
    let b = unique_id("reattach-b");
    let _ca = Cleanup(a.clone());
    let _cb = Cleanup(b.clone());
    let yaml = r#"
services:
  web:
    image: stratus-test/busybox:latest
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["8080:80"]
"#;
    rt.create(&spec(&a, yaml)).await.unwrap();
    rt.create(&spec(&b, yaml)).await.unwrap();
    rt.start(&a).await.unwrap();

    // A new runtime, as after a restart of stratus.
    let fresh = DockerRuntime::connect(DockerConfig::default())
        .await
        .unwrap();
    let ids = fresh.instances().await.unwrap();
    assert!(ids.contains(&a) && ids.contains(&b), "{ids:?}");
    assert_eq!(fresh.recover(&a).await.unwrap(), InstanceState::Running);
    assert_eq!(fresh.recover(&b).await.unwrap(), InstanceState::Stopped);
    // The mapping's computerPort is the published port (8080), as on a compose machine.
    let addr = fresh.endpoint(&a, 8080).await.unwrap().unwrap();
    assert_eq!(addr.port(), 80);
    assert!(http_get_eventually(addr)
        .await
        .contains("hello from stratus-test"));
    assert_eq!(
        fresh.endpoint(&a, 80).await.unwrap(),
        Some(addr),
        "container port also resolves"
    );

    fresh.remove(&a).await.unwrap();
    fresh.remove(&b).await.unwrap();
    let ids = rt.instances().await.unwrap();
    assert!(!ids.contains(&a) && !ids.contains(&b));
}

#[tokio::test(flavor = "multi_thread")]
async fn never_touches_unlabelled_objects() {
    let rt = runtime().await;
    let docker = rt.client();
    let id = unique_id("foreign");
    let _cleanup = Cleanup(id.clone());
    // Someone else's container happens to have the name our web container would get.
    let foreign = container_name(&id, "web");
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(foreign.clone()),
                ..Default::default()
            }),
            bollard::models::ContainerCreateBody {
                image: Some(IMAGE.into()),
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let yaml = "services:\n  web:\n    image: stratus-test/busybox:latest\n";
    let err = rt.create(&spec(&id, yaml)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists(_)), "{err:?}");
    rt.remove(&id).await.unwrap();
    assert!(
        docker.inspect_container(&foreign, None).await.is_ok(),
        "an unlabelled container must survive remove()"
    );
    assert_eq!(
        labelled_objects(docker, &id).await,
        (0, 0, 0),
        "our network was rolled back"
    );
    docker
        .remove_container(
            &foreign,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_and_failed_dependencies_are_reported() {
    let rt = runtime().await;
    let id = unique_id("fail");
    let _cleanup = Cleanup(id.clone());
    let yaml = r#"
services:
  web:
    image: stratus-test/busybox:latest
    command: ["sh", "-c", "sleep 1; exit 3"]
"#;
    rt.create(&spec(&id, yaml)).await.unwrap();
    rt.start(&id).await.unwrap();
    let mut state = rt.state(&id).await.unwrap();
    for _ in 0..50 {
        if matches!(state, InstanceState::Failed { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = rt.state(&id).await.unwrap();
    }
    assert_eq!(
        state,
        InstanceState::Failed {
            reason: "service web exited with code 3".into()
        }
    );
    rt.remove(&id).await.unwrap();

    let id = unique_id("faildep");
    let _cleanup = Cleanup(id.clone());
    let yaml = r#"
services:
  web:
    image: stratus-test/busybox:latest
    command: ["sleep", "3600"]
    depends_on:
      migrate: {condition: service_completed_successfully}
  migrate:
    image: stratus-test/busybox:latest
    command: ["sh", "-c", "exit 7"]
"#;
    rt.create(&spec(&id, yaml)).await.unwrap();
    let err = rt.start(&id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "service web: dependency migrate exited with code 7"
    );
    rt.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_command_fails_start_with_the_engine_reason() {
    let rt = runtime().await;
    let id = unique_id("badcmd");
    let _cleanup = Cleanup(id.clone());
    let yaml = "services:\n  web:\n    image: stratus-test/busybox:latest\n    command: [\"/no/such/binary\"]\n";
    rt.create(&spec(&id, yaml)).await.unwrap();
    let err = rt.start(&id).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Service { service, .. } if service == "web"),
        "{err:?}"
    );
    assert!(err.is_user_error());
    rt.remove(&id).await.unwrap();
}

/// Where the cgroup v1 hierarchy holding `controller` is mounted (from `/proc/self/mountinfo`).
fn cgroup_v1_mount(controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            if r.next()? != "cgroup" {
                return None;
            }
            let options = r.nth(1)?;
            let mount = left.split(' ').nth(4)?;
            options
                .split(',')
                .any(|o| o == controller)
                .then(|| std::path::PathBuf::from(mount))
        })
        .unwrap_or_else(|| panic!("no cgroup v1 hierarchy holds {controller}"))
}

/// Connects to `addr` and expects the connection closed at once, nothing read.
async fn assert_closed_at_once(addr: std::net::SocketAddr) {
    use tokio::io::AsyncReadExt;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// A started instance whose `web` service (busybox httpd) publishes port 80.
async fn running_web(rt: &DockerRuntime, prefix: &str) -> (String, Cleanup) {
    let id = unique_id(prefix);
    let cleanup = Cleanup(id.clone());
    let yaml = r#"
services:
  web:
    image: stratus-test/busybox:latest
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["80:80"]
"#;
    rt.create(&spec(&id, yaml)).await.unwrap();
    rt.start(&id).await.unwrap();
    (id, cleanup)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_forwards_to_an_instance_and_follows_its_state() {
    use std::net::IpAddr;
    use stratus_compute::{Gateway, GatewayConfig, RuntimeResolver};

    let rt = runtime().await;
    let (id, _cleanup) = running_web(&rt, "gw").await;

    let gw = Gateway::new(GatewayConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        ..GatewayConfig::default()
    });
    let runtime: std::sync::Arc<dyn Runtime> = rt.clone();
    let resolver = RuntimeResolver::new(runtime, id.clone(), 80).with_ttl(Duration::ZERO);
    let public = gw
        .open("m-1", 0, std::sync::Arc::new(resolver))
        .await
        .unwrap();
    let body = http_get_eventually(public).await;
    assert!(body.contains("hello from stratus-test"), "{body}");
    let stats = gw.stats("m-1").unwrap();
    assert!(stats.bytes_in > 0 && stats.bytes_out > body.len() as u64 / 2);

    // Stopped instance: connections are accepted and closed at once.
    rt.stop(&id).await.unwrap();
    assert_closed_at_once(public).await;

    // Started again: the same mapping serves the new container address.
    rt.start(&id).await.unwrap();
    assert!(http_get_eventually(public)
        .await
        .contains("hello from stratus-test"));
    gw.close("m-1").await;
    rt.remove(&id).await.unwrap();
}

/// Kernel forwarding with the gateway bound on every address: a client on this host (loopback)
/// and a client in another container (through Docker's `FORWARD` chain, across bridges) both
/// reach the instance, the listener sees neither, and a stopped instance loses its route.
#[tokio::test(flavor = "multi_thread")]
async fn kernel_forwarding_serves_the_host_and_other_containers() {
    use std::net::IpAddr;
    use stratus_compute::{Forwarding, Gateway, GatewayConfig, RuntimeResolver};

    let rt = runtime().await;
    let (id, _cleanup) = running_web(&rt, "kgw").await;

    let gw = Gateway::new(GatewayConfig {
        bind: IpAddr::from([0, 0, 0, 0]),
        forwarding: Forwarding::Kernel,
        ..GatewayConfig::default()
    });
    let runtime: std::sync::Arc<dyn Runtime> = rt.clone();
    let resolver = RuntimeResolver::new(runtime.clone(), id.clone(), 80).with_ttl(Duration::ZERO);
    let public = gw
        .open_in(&id, "k-1", 0, std::sync::Arc::new(resolver))
        .await
        .unwrap();
    let target = runtime.endpoint(&id, 80).await.unwrap();
    assert_eq!(gw.kernel_routed("k-1").await, target);
    let port = public.port();

    // From this host, over loopback.
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = http_get_eventually(local).await;
    assert!(body.contains("hello from stratus-test"), "{body}");

    // From a container on Docker's default bridge, to the host's address on that bridge, as
    // the container's kernel sees it: its default route (engines differ in what their IPAM
    // lists; some list no gateway at all).
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "stratus-test/busybox:latest",
            "sh",
            "-c",
            &format!(
                "host=$(ip route | awk '/^default/ {{print $3; exit}}'); \
                 test -n \"$host\" || {{ echo no default route; exit 1; }}; \
                 printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 $host {port}"
            ),
        ])
        .output()
        .await
        .unwrap();
    let from_container = String::from_utf8_lossy(&out.stdout);
    assert!(
        from_container.contains("hello from stratus-test"),
        "from a container: {from_container} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        gw.stats("k-1").unwrap().accepted_connections,
        0,
        "every connection was forwarded by the kernel"
    );
    gw.sync_counters().await;
    assert!(gw.stats("k-1").unwrap().bytes_out > 2 * body.len() as u64);

    // Stopped: the route goes on refresh; connections reach the listener and are closed.
    rt.stop(&id).await.unwrap();
    gw.refresh(&id).await;
    assert_eq!(gw.kernel_routed("k-1").await, None);
    assert_closed_at_once(local).await;

    // Started again: routed to the new address.
    rt.start(&id).await.unwrap();
    gw.refresh(&id).await;
    assert_eq!(
        gw.kernel_routed("k-1").await,
        runtime.endpoint(&id, 80).await.unwrap()
    );
    assert!(http_get_eventually(local)
        .await
        .contains("hello from stratus-test"));
    gw.close_all().await;
    rt.remove(&id).await.unwrap();
}
