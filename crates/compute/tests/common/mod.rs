//! Shared helpers of the Docker tests: a connected runtime (failing, never skipping, when Docker
//! is missing), the local test image, unique instance ids, a cleanup guard, exec and raw HTTP.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::ExecConfig;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use bollard::Docker;
use futures_util::StreamExt;
use stratus_compute::docker::spec::LABEL_INSTANCE;
use stratus_compute::{ComposeApp, DockerConfig, DockerRuntime, InstanceSpec, Policy, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const IMAGE: &str = "stratus-test/busybox:latest";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A runtime connected to the local engine, with the test image present. Panics (the test
/// fails) when Docker is not available: CI starts it with `scripts/docker-up.sh`.
pub async fn runtime() -> Arc<DockerRuntime> {
    let rt = match DockerRuntime::connect(DockerConfig::default()).await {
        Ok(rt) => rt,
        Err(e) => {
            panic!("Docker is required for these tests ({e}); start it with scripts/docker-up.sh")
        }
    };
    // Built, or rebuilt when out of date, once per test process (the script is idempotent).
    static IMAGE_READY: std::sync::Once = std::sync::Once::new();
    IMAGE_READY.call_once(|| {
        let status = Command::new(repo_root().join("scripts/test-image.sh"))
            .arg(IMAGE)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "the test image {IMAGE} cannot be built (scripts/test-image.sh)"
        );
    });
    Arc::new(rt)
}

/// A fresh instance id, unique across test processes.
pub fn unique_id(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t-{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the instance when dropped, even when the test panics.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let id = self.0.clone();
        // A separate thread and runtime: the test's runtime may be gone or blocked.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let config = DockerConfig {
                    firewall: None,
                    ..DockerConfig::default()
                };
                if let Ok(docker) = DockerRuntime::connect(config).await {
                    if let Err(e) = docker.remove(&id).await {
                        eprintln!("cleanup of {id} failed: {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// The default policy, with the test image listed as a local image (as servers list it in
/// `compute.local_images`).
pub fn policy() -> Policy {
    Policy::default().with_local_images([IMAGE])
}

pub fn app(yaml: &str) -> ComposeApp {
    ComposeApp::parse(yaml, &policy()).expect("valid compose file")
}

pub fn spec(id: &str, yaml: &str) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.to_string(),
        app: app(yaml),
        cpus: 1.0,
        memory_bytes: 512 << 20,
        pids_limit: 128,
        public_key: None,
        password: None,
    }
}

/// Runs `cmd` in a container; returns (exit code, stdout+stderr).
pub async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> (i64, String) {
    let created = docker
        .create_exec(
            container,
            ExecConfig {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    let mut out = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None)
        .await
        .expect("start exec")
    {
        while let Some(chunk) = output.next().await {
            out.push_str(&chunk.expect("exec output").to_string());
        }
    }
    let code = docker
        .inspect_exec(&created.id)
        .await
        .expect("inspect exec")
        .exit_code
        .unwrap_or(-1);
    (code, out)
}

/// `GET /` over a raw TCP connection (HTTP/1.0); returns the whole response.
pub async fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Retries `http_get` for a few seconds (a server may need a moment to listen).
pub async fn http_get_eventually(addr: SocketAddr) -> String {
    let mut last = None;
    for _ in 0..50 {
        match http_get(addr).await {
            Ok(body) if !body.is_empty() => return body,
            Ok(_) => last = Some("empty response".to_string()),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no HTTP answer from {addr}: {last:?}");
}

fn by_label(id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_INSTANCE}={id}")])])
}

/// Counts the containers, networks and volumes labelled with the instance id.
pub async fn labelled_objects(docker: &Docker, id: &str) -> (usize, usize, usize) {
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(by_label(id)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .len();
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(by_label(id)),
        }))
        .await
        .unwrap()
        .len();
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(by_label(id)),
        }))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .len();
    (containers, networks, volumes)
}
