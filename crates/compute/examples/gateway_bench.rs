//! Measures the TCP gateway against a direct connection.
//!
//! 1. Streams `--size-mib` MiB (default 1024) to a sink, directly and through the gateway (splice
//!    and copy modes), and prints each throughput and the ratio gateway / direct. The sink runs
//!    on its own threads (as another process would); the gateway runs on its own tokio runtime,
//!    apart from the client. The sink listens on loopback, and, with `--container`, also inside
//!    the network namespace of a stratus instance's container, reached at the container's private
//!    IP exactly as the gateway reaches services (needs Docker, root and the
//!    `stratus-test/busybox` image).
//! 2. Runs `--conns` (default 200) concurrent connections each echoing 1 MiB through the gateway
//!    and directly.
//!
//! ```sh
//! cargo run --release -p stratus-compute --example gateway_bench -- --container
//! cargo run --release -p stratus-compute --example gateway_bench -- --size-mib 256 --rounds 9
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_compute::{
    resolver_fn, ComposeApp, DockerConfig, DockerRuntime, Gateway, GatewayConfig, InstanceSpec,
    Policy, Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime as Tokio;

const MIB: usize = 1 << 20;

#[derive(Clone)]
struct Args {
    size_mib: usize,
    conns: usize,
    rounds: usize,
    container: bool,
}

fn args() -> Args {
    let mut a = Args {
        size_mib: 1024,
        conns: 200,
        rounds: 5,
        container: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        if argv[i] == "--container" {
            a.container = true;
            i += 1;
            continue;
        }
        let value = || {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--size-mib" => a.size_mib = value(),
            "--conns" => a.conns = value(),
            "--rounds" => a.rounds = value(),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn runtime(threads: usize, name: &str) -> Tokio {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// CPU seconds (user + system) used so far by this process's threads named `name`.
fn cpu_seconds(name: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 12 {
                total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    total as f64 / ticks
}

/// A blocking sink on its own threads: reads everything, answers with the byte count. With
/// `netns_of`, the listening thread first joins the network namespace of that process.
fn sink(netns_of: Option<i64>, port: u16) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(pid) = netns_of {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("container netns");
            // SAFETY: setns on this thread only, with a descriptor we hold.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes());
            });
        }
    });
    rx.recv().unwrap()
}

/// Streams `bytes` to `addr` and waits for the sink's count; returns MiB/s.
async fn stream(addr: SocketAddr, bytes: usize) -> f64 {
    let chunk = vec![0x5au8; MIB];
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    s.set_nodelay(true).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    s.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.unwrap();
    assert_eq!(u64::from_be_bytes(count), bytes as u64, "bytes lost");
    bytes as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Opens a mapping to `target` on the gateway's own runtime.
fn open(gw_rt: &Tokio, splice: bool, target: SocketAddr) -> (Gateway, SocketAddr) {
    let gw = Gateway::new(GatewayConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        splice,
        ..GatewayConfig::default()
    });
    let g = gw.clone();
    let addr = gw_rt
        .block_on(async move {
            g.open("bench", 0, resolver_fn(move || async move { Some(target) }))
                .await
        })
        .unwrap();
    (gw, addr)
}

/// Direct versus gateway (splice, copy) to `target`, interleaved round by round so that load
/// from elsewhere hits every variant alike; prints medians and returns the ratios.
fn compare(
    label: &str,
    target: SocketAddr,
    a: &Args,
    client: &Tokio,
    gw_rt: &Tokio,
) -> Vec<(String, f64)> {
    let bytes = a.size_mib * MIB;
    let (splice_gw, splice_addr) = open(gw_rt, true, target);
    let (copy_gw, copy_addr) = open(gw_rt, false, target);
    let mut direct = Vec::new();
    let mut via_splice = Vec::new();
    let mut via_copy = Vec::new();
    let (mut cpu_splice, mut cpu_copy) = (0.0, 0.0);
    for _ in 0..a.rounds {
        direct.push(client.block_on(stream(target, bytes)));
        let before = cpu_seconds("gateway");
        via_splice.push(client.block_on(stream(splice_addr, bytes)));
        let middle = cpu_seconds("gateway");
        via_copy.push(client.block_on(stream(copy_addr, bytes)));
        cpu_splice += middle - before;
        cpu_copy += cpu_seconds("gateway") - middle;
    }
    let gib = (bytes * a.rounds) as f64 / (1u64 << 30) as f64;
    let direct = median(direct);
    println!(
        "{label:<9} direct           {direct:>6.0} MiB/s  ({} MiB, median of {})",
        a.size_mib, a.rounds
    );
    let mut out = Vec::new();
    for (mode, via, cpu, gw) in [
        ("splice", median(via_splice), cpu_splice, splice_gw),
        ("copy", median(via_copy), cpu_copy, copy_gw),
    ] {
        println!(
            "{label:<9} gateway ({mode:<6}) {via:>6.0} MiB/s  ratio {:.2}  gateway CPU {:.2} s/GiB",
            via / direct,
            cpu / gib
        );
        let stats = gw.stats("bench").unwrap();
        assert_eq!(
            stats.bytes_in,
            (bytes * a.rounds) as u64,
            "counter mismatch"
        );
        out.push((format!("{label} {mode}"), via / direct));
        gw_rt.block_on(gw.close_all());
    }
    out
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn concurrent_echo(addr: SocketAddr, conns: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            tokio::spawn(async move {
                let data: Vec<u8> = (0..MIB).map(|j| ((i + j) % 251) as u8).collect();
                let s = TcpStream::connect(addr).await.unwrap();
                let (mut r, mut w) = s.into_split();
                let expected = data.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(&data).await.unwrap();
                    w.shutdown().await.unwrap();
                });
                let mut got = Vec::with_capacity(MIB);
                r.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap();
                assert!(got == expected, "connection {i}: bad echo");
            })
        })
        .collect();
    let mut failures = 0;
    for t in tasks {
        if t.await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 0, "{failures} connections failed");
    started.elapsed()
}

fn container_target(a: &Args, client: &Tokio, gw_rt: &Tokio) -> Vec<(String, f64)> {
    let docker = Arc::new(
        client
            .block_on(DockerRuntime::connect(DockerConfig::default()))
            .expect("Docker is needed for --container"),
    );
    let id = format!("bench-{}", std::process::id());
    let yaml = r#"
services:
  app:
    image: stratus-test/busybox:latest
    command: ["sleep", "3600"]
    ports: ["9000"]
"#;
    let spec = InstanceSpec {
        instance_id: id.clone(),
        app: ComposeApp::parse(
            yaml,
            &Policy::default().with_local_images(["stratus-test/busybox:latest"]),
        )
        .unwrap(),
        cpus: 2.0,
        memory_bytes: 512 << 20,
        pids_limit: 64,
        public_key: None,
        password: None,
    };
    client.block_on(docker.create(&spec)).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.block_on(docker.start(&id)).unwrap();
        let target = client
            .block_on(docker.endpoint(&id, 9000))
            .unwrap()
            .expect("the app publishes 9000");
        let pid = client
            .block_on(
                docker
                    .client()
                    .inspect_container(&format!("stratus-{id}-app"), None),
            )
            .unwrap()
            .state
            .unwrap()
            .pid
            .unwrap();
        sink(Some(pid), target.port());
        compare("container", target, a, client, gw_rt)
    }));
    client.block_on(docker.remove(&id)).unwrap();
    client.block_on(docker.close());
    result.expect("container benchmark")
}

fn main() {
    let a = args();
    let client = runtime(2, "client");
    let gw_rt = runtime(2, "gateway");
    let service = runtime(2, "service");

    let port = sink(None, 0);
    let mut ratios = compare(
        "loopback",
        SocketAddr::from(([127, 0, 0, 1], port)),
        &a,
        &client,
        &gw_rt,
    );
    if a.container {
        ratios.extend(container_target(&a, &client, &gw_rt));
    }

    let echo = service.block_on(echo_server());
    let direct_echo = client.block_on(concurrent_echo(echo, a.conns));
    println!(
        "direct              {} concurrent x 1 MiB echo: {:.2} s",
        a.conns,
        direct_echo.as_secs_f64()
    );
    for splice in [true, false] {
        let (gw, addr) = open(&gw_rt, splice, echo);
        let took = client.block_on(concurrent_echo(addr, a.conns));
        let mut stats = gw.stats("bench").unwrap();
        for _ in 0..100 {
            if stats.active_connections == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            stats = gw.stats("bench").unwrap();
        }
        assert_eq!(stats.bytes_out, (a.conns * MIB) as u64, "counter mismatch");
        let mode = if splice { "splice" } else { "copy" };
        println!(
            "gateway ({mode:<6})    {} concurrent x 1 MiB echo: {:.2} s, {:.0} MiB/s both ways, 0 errors",
            a.conns,
            took.as_secs_f64(),
            (a.conns * 2) as f64 / took.as_secs_f64()
        );
        gw_rt.block_on(gw.close_all());
    }
    for (what, ratio) in ratios {
        println!("ratio {what}: {ratio:.2} (target >= 0.80)");
    }
}
