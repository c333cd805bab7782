//! The TCP gateway against local servers: concurrency, half-close, close(), resolvers that say
//! no, connection caps, and byte counters (method and `metrics`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_compute::{resolver_fn, Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

/// A mapping's byte counter as the gateway renders it for `/metrics`.
fn metric_bytes(gw: &Gateway, mapping: &str, direction: &str) -> u64 {
    let mut text = String::new();
    gw.render_metrics(&mut text);
    let series =
        format!("stratus_mapping_bytes_total{{mapping=\"{mapping}\",direction=\"{direction}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn gateway(splice: bool) -> Gateway {
    Gateway::new(GatewayConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        splice,
        ..GatewayConfig::default()
    })
}

/// An echo server: writes back everything, and closes its side after the client's FIN.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

/// Sends `data`, half-closes, reads the echo until EOF.
async fn echo_once(addr: SocketAddr, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await?;
    writer.await.unwrap()?;
    Ok(got)
}

async fn concurrent_echo(splice: bool) {
    let gw = gateway(splice);
    let target = echo_server().await;
    let mapping = format!("echo-{splice}");
    let addr = gw
        .open(
            &mapping,
            0,
            resolver_fn(move || async move { Some(target) }),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let data = pattern(i, MIB);
                let got = echo_once(addr, data.clone()).await?;
                assert_eq!(got.len(), data.len(), "connection {i}");
                assert!(got == data, "connection {i}: corrupted echo");
                Ok::<_, std::io::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("no connection may fail");
    }
    eprintln!(
        "200 x 1 MiB echo through the gateway (splice: {splice}): {:?}",
        started.elapsed()
    );
    // Counters settle once every connection task has finished.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stats = gw.stats(&mapping).unwrap();
    while stats.active_connections > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = gw.stats(&mapping).unwrap();
    }
    let total = 200 * MIB as u64;
    assert_eq!(stats.bytes_in, total);
    assert_eq!(stats.bytes_out, total);
    assert_eq!(stats.accepted_connections, 200);
    assert_eq!(stats.rejected_connections, 0);
    assert_eq!(metric_bytes(&gw, &mapping, "in"), total);
    assert_eq!(metric_bytes(&gw, &mapping, "out"), total);
    gw.close(&mapping).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_echoes_with_splice() {
    concurrent_echo(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_echoes_with_copy() {
    concurrent_echo(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn half_close_is_forwarded() {
    for splice in [true, false] {
        // The server answers only after the client's FIN, then closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            s.read_to_end(&mut req).await.unwrap();
            s.write_all(format!("got {} bytes", req.len()).as_bytes())
                .await
                .unwrap();
            s.shutdown().await.unwrap();
        });
        let gw = gateway(splice);
        let addr = gw
            .open("half", 0, resolver_fn(move || async move { Some(target) }))
            .await
            .unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
            .await
            .expect("the FIN must reach the server")
            .unwrap();
        assert_eq!(answer, "got 4 bytes", "splice: {splice}");
        gw.close("half").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn close_stops_accepting_and_drops_live_connections() {
    let gw = gateway(true);
    let target = echo_server().await;
    let addr = gw
        .open(
            "closing",
            0,
            resolver_fn(move || async move { Some(target) }),
        )
        .await
        .unwrap();
    let mut live = TcpStream::connect(addr).await.unwrap();
    live.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    live.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    assert!(gw.is_open("closing"));

    let started = Instant::now();
    assert!(gw.close("closing").await);
    assert!(!gw.is_open("closing"));
    assert!(gw.stats("closing").is_none());
    // The live connection ends (EOF or reset) promptly.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), live.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the live connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolver_returning_none_closes_at_once() {
    let gw = gateway(true);
    let addr = gw
        .open("nowhere", 0, resolver_fn(|| async { None }))
        .await
        .unwrap();
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(1));
    let stats = gw.stats("nowhere").unwrap();
    assert_eq!((stats.bytes_in, stats.bytes_out), (0, 0));
    gw.close("nowhere").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_closes_the_connection() {
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = gateway(true);
    let addr = gw
        .open("dead", 0, resolver_fn(move || async move { Some(dead) }))
        .await
        .unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    assert!(r.is_ok());
    assert!(buf.is_empty());
    gw.close("dead").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_refused() {
    let gw = Gateway::new(GatewayConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        max_connections_per_mapping: 2,
        ..GatewayConfig::default()
    });
    let target = echo_server().await;
    let addr = gw
        .open(
            "capped",
            0,
            resolver_fn(move || async move { Some(target) }),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        held.push(c);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok() && buf.is_empty(),
        "the third connection must be closed"
    );
    let stats = gw.stats("capped").unwrap();
    assert_eq!(stats.rejected_connections, 1);
    assert_eq!(stats.active_connections, 2);
    // Freeing a slot lets the next one in.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = echo_once(addr, b"again".to_vec()).await.unwrap();
    assert_eq!(got, b"again");
    gw.close("capped").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_target_is_resolved_per_connection() {
    let gw = gateway(true);
    let first = echo_server().await;
    let target = Arc::new(std::sync::Mutex::new(Some(first)));
    let t = target.clone();
    let addr = gw
        .open(
            "moving",
            0,
            resolver_fn(move || {
                let t = t.clone();
                async move { *t.lock().unwrap() }
            }),
        )
        .await
        .unwrap();
    assert_eq!(echo_once(addr, b"one".to_vec()).await.unwrap(), b"one");
    *target.lock().unwrap() = None;
    assert!(echo_once(addr, b"two".to_vec())
        .await
        .unwrap_or_default()
        .is_empty());
    *target.lock().unwrap() = Some(echo_server().await);
    assert_eq!(echo_once(addr, b"three".to_vec()).await.unwrap(), b"three");
    gw.close("moving").await;
}
