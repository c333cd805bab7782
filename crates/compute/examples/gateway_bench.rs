//! Measures the TCP gateway against a direct connection.
//!
//! 1. Streams `--size-mib` MiB (default 1024) to a sink, directly and through the gateway (splice
//!    and copy modes), and prints each throughput and the ratio gateway / direct. The sink is a
//!    server in this process on loopback, and, with `--container`, also a container of a stratus
//!    instance (busybox `nc` on the instance's private network, reached at its container IP as
//!    the gateway reaches it; needs Docker and the `stratus-test/busybox` image).
//! 2. Runs `--conns` (default 200) concurrent connections each echoing 1 MiB through the gateway.
//!
//! ```sh
//! cargo run --release -p stratus-compute --example gateway_bench -- --container
//! cargo run --release -p stratus-compute --example gateway_bench -- --size-mib 256 --rounds 5
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stratus_compute::{
    resolver_fn, ComposeApp, DockerConfig, DockerRuntime, Gateway, GatewayConfig, InstanceSpec,
    Policy, Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

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
        rounds: 3,
        container: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", argv[i]))
        };
        if argv[i] == "--container" {
            a.container = true;
            i += 1;
            continue;
        }
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

/// Reads everything, then answers with the byte count and closes.
async fn sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn echo() -> SocketAddr {
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

/// How a sink says it has everything.
#[derive(Clone, Copy)]
enum Ack {
    /// Answers with the byte count (the in-process sink).
    Count,
    /// Closes the connection (`nc` in a container).
    Eof,
}

async fn connect(addr: SocketAddr) -> TcpStream {
    // `nc` listens again a moment after each connection.
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {addr}");
}

/// Streams `bytes` to `addr` and waits for the sink's acknowledgement; returns MiB/s.
async fn stream(addr: SocketAddr, bytes: usize, ack: Ack) -> f64 {
    let chunk = vec![0x5au8; MIB];
    let mut s = connect(addr).await;
    let started = Instant::now();
    s.set_nodelay(true).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    s.shutdown().await.unwrap();
    match ack {
        Ack::Count => {
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(u64::from_be_bytes(buf), bytes as u64, "bytes lost");
        }
        Ack::Eof => {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    bytes as f64 / MIB as f64 / secs
}

async fn best_of(rounds: usize, addr: SocketAddr, bytes: usize, ack: Ack) -> f64 {
    let mut best = 0f64;
    for _ in 0..rounds {
        best = best.max(stream(addr, bytes, ack).await);
        if let Ack::Eof = ack {
            // Let `nc` listen again before the gateway connects to it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    best
}

/// Direct versus gateway (splice, copy) to `target`; returns the ratios.
async fn compare(label: &str, target: SocketAddr, ack: Ack, a: &Args) -> Vec<(String, f64)> {
    let bytes = a.size_mib * MIB;
    let direct = best_of(a.rounds, target, bytes, ack).await;
    println!(
        "{label}: direct           {direct:>8.0} MiB/s  ({} MiB, best of {})",
        a.size_mib, a.rounds
    );
    let mut out = Vec::new();
    for splice in [true, false] {
        let gw = Gateway::new(GatewayConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            splice,
            ..GatewayConfig::default()
        });
        let addr = gw
            .open("bench", 0, resolver_fn(move || async move { Some(target) }))
            .await
            .unwrap();
        let via = best_of(a.rounds, addr, bytes, ack).await;
        let mode = if splice { "splice" } else { "copy" };
        println!(
            "{label}: gateway ({mode:<6}) {via:>8.0} MiB/s  ratio {:.2}",
            via / direct
        );
        let stats = gw.stats("bench").unwrap();
        assert_eq!(
            stats.bytes_in,
            (bytes * a.rounds) as u64,
            "counter mismatch"
        );
        out.push((format!("{label} {mode}"), via / direct));
        gw.close_all().await;
    }
    out
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

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut ratios = compare("loopback", sink().await, Ack::Count, &a).await;

        if a.container {
            let runtime = DockerRuntime::connect(DockerConfig::default())
                .await
                .expect("Docker is needed for --container");
            let id = format!("bench-{}", std::process::id());
            let yaml = r#"
services:
  sink:
    image: stratus-test/busybox:latest
    command: ["sh", "-c", "while :; do nc -l -p 9000 > /dev/null; done"]
    ports: ["9000"]
"#;
            let spec = InstanceSpec {
                instance_id: id.clone(),
                app: ComposeApp::parse(yaml, &Policy::default()).unwrap(),
                cpus: 2.0,
                memory_bytes: 512 << 20,
                pids_limit: 64,
                public_key: None,
                password: None,
            };
            runtime.create(&spec).await.unwrap();
            runtime.start(&id).await.unwrap();
            let target = runtime.endpoint(&id, 9000).await.unwrap().unwrap();
            ratios.extend(compare("container", target, Ack::Eof, &a).await);
            runtime.remove(&id).await.unwrap();
        }

        for splice in [true, false] {
            let gw = Gateway::new(GatewayConfig {
                bind: IpAddr::from([127, 0, 0, 1]),
                splice,
                ..GatewayConfig::default()
            });
            let echo_target = echo().await;
            let echo_addr = gw
                .open("echo", 0, resolver_fn(move || async move { Some(echo_target) }))
                .await
                .unwrap();
            let took = concurrent_echo(echo_addr, a.conns).await;
            let moved = (a.conns * MIB * 2) as f64 / MIB as f64;
            let mode = if splice { "splice" } else { "copy" };
            println!(
                "gateway ({mode:<6}) {} concurrent x 1 MiB echo: {:.2} s, {:.0} MiB/s both ways, 0 errors",
                a.conns,
                took.as_secs_f64(),
                moved / took.as_secs_f64()
            );
            gw.close_all().await;
        }
        let direct_echo = concurrent_echo(echo().await, a.conns).await;
        println!(
            "direct           {} concurrent x 1 MiB echo: {:.2} s",
            a.conns,
            direct_echo.as_secs_f64()
        );
        for (what, ratio) in ratios {
            println!("ratio {what}: {ratio:.2} (target >= 0.80)");
        }
    });
}
