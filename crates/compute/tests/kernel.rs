//! Kernel forwarding (nftables DNAT) against local servers: connections bypass the listener,
//! follow the resolver on refresh, lose their route (and their live connections) when the
//! target goes, are capped per mapping, are counted, and leave no rule behind.
//!
//! Needs root and the `nft` and `conntrack` programs (`scripts/test.sh` installs them).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratus_compute::{resolver_fn, Forwarding, Gateway, GatewayConfig, Resolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn kernel_gateway(max_connections: usize) -> Gateway {
    Gateway::new(GatewayConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        forwarding: Forwarding::Kernel,
        max_connections_per_mapping: max_connections,
        ..GatewayConfig::default()
    })
}

/// An echo server on another loopback address, so a DNAT'd connection is told apart from a
/// relayed one by its target. Returns its address and the peers it accepted.
async fn echo_server() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, peer)) = listener.accept().await else {
                return;
            };
            seen.lock().unwrap().push(peer);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, peers)
}

/// A resolver whose answer the test changes.
fn switchable(initial: Option<SocketAddr>) -> (Arc<dyn Resolver>, Arc<Mutex<Option<SocketAddr>>>) {
    let target = Arc::new(Mutex::new(initial));
    let t = target.clone();
    let resolver = resolver_fn(move || {
        let t = t.clone();
        async move { *t.lock().unwrap() }
    });
    (resolver, target)
}

async fn echo_once(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(payload).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    Ok(back)
}

async fn nft_tables() -> String {
    let out = tokio::process::Command::new("nft")
        .args(["list", "tables", "ip"])
        .output()
        .await
        .expect("nft is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn connections_go_through_the_kernel_and_follow_the_target() {
    let gw = kernel_gateway(1024);
    assert!(gw
        .kernel_forwarding()
        .await
        .expect("kernel forwarding sets up"));
    let table = gw.kernel_table().await.expect("a table");
    assert!(nft_tables().await.contains(&format!("table ip {table}\n")));
    let (target, peers) = echo_server().await;
    let (resolver, answer) = switchable(Some(target));
    let public = gw.open_in("instance-1", "m1", 0, resolver).await.unwrap();
    assert_eq!(gw.kernel_routed("m1").await, Some(target));

    // 1 MiB echoed, and the listener never saw the connection.
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_once(public, &payload).await.unwrap(), payload);
    let stats = gw.stats("m1").unwrap();
    assert_eq!(stats.accepted_connections, 0, "the kernel forwarded it");
    assert_eq!(peers.lock().unwrap().len(), 1);

    // The kernel's counters reach the mapping's (IP bytes: the payload plus headers).
    gw.sync_counters().await;
    let stats = gw.stats("m1").unwrap();
    assert!(stats.bytes_in >= payload.len() as u64, "{stats:?}");
    assert!(stats.bytes_out >= payload.len() as u64, "{stats:?}");
    assert!(stats.bytes_in < 2 * payload.len() as u64, "{stats:?}");

    // A live connection, then the target goes (instance stopping): the route is removed at
    // once by refresh, the live connection is reset, and new connections reach the listener,
    // which closes them.
    let mut live = TcpStream::connect(public).await.unwrap();
    live.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    live.read_exact(&mut buf).await.unwrap();
    *answer.lock().unwrap() = None;
    gw.refresh("instance-1").await;
    assert_eq!(gw.kernel_routed("m1").await, None);
    let _ = live.write_all(b"more").await;
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), live.read_to_end(&mut rest)).await;
    assert!(
        matches!(ended, Ok(Err(_)) | Ok(Ok(_))),
        "the live connection ends"
    );
    assert!(rest.is_empty(), "nothing more is echoed: {rest:?}");
    let refused = echo_once(public, b"hello").await;
    assert!(
        refused.map(|b| b.is_empty()).unwrap_or(true),
        "no service behind a stopped instance"
    );
    assert!(gw.stats("m1").unwrap().accepted_connections >= 1);

    // The target comes back (instance started): forwarded by the kernel again.
    *answer.lock().unwrap() = Some(target);
    gw.refresh("instance-1").await;
    assert_eq!(gw.kernel_routed("m1").await, Some(target));
    assert_eq!(echo_once(public, b"again").await.unwrap(), b"again");

    // Refreshing another group changes nothing here.
    *answer.lock().unwrap() = None;
    gw.refresh("instance-2").await;
    assert_eq!(gw.kernel_routed("m1").await, Some(target));

    // Closing frees the port and removes every rule.
    assert!(gw.close("m1").await);
    assert!(TcpStream::connect(public).await.is_err(), "port released");
    gw.close_all().await;
    let tables = nft_tables().await;
    assert!(
        !tables.contains(&format!("table ip {table}\n")),
        "table left behind: {tables}"
    );
    assert_eq!(gw.kernel_table().await, None);
}

#[tokio::test]
async fn connections_over_the_cap_are_reset() {
    let gw = kernel_gateway(2);
    let (target, _) = echo_server().await;
    let public = gw
        .open(
            "capped",
            0,
            resolver_fn(move || async move { Some(target) }),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(public).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        held.push(s);
    }
    let third = TcpStream::connect(public).await;
    assert!(third.is_err(), "the third connection is refused");
    drop(held);
    // Once the first ones are closed, there is room again.
    let mut ok = false;
    for _ in 0..50 {
        if echo_once(public, b"y").await.ok().as_deref() == Some(b"y") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "room again after the connections closed");
    gw.close_all().await;
}

#[tokio::test]
async fn userspace_forwarding_sets_up_nothing() {
    let gw = Gateway::new(GatewayConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        forwarding: Forwarding::Userspace,
        ..GatewayConfig::default()
    });
    assert!(!gw.kernel_forwarding().await.unwrap());
    let (target, _) = echo_server().await;
    let public = gw
        .open("u", 0, resolver_fn(move || async move { Some(target) }))
        .await
        .unwrap();
    assert_eq!(echo_once(public, b"z").await.unwrap(), b"z");
    assert_eq!(gw.stats("u").unwrap().accepted_connections, 1);
    assert_eq!(gw.kernel_routed("u").await, None);
    gw.close_all().await;
}

async fn add_table(name: &str) {
    let out = tokio::process::Command::new("nft")
        .args(["add", "table", "ip", name])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tables_of_dead_servers_are_removed_and_live_servers_keep_theirs() {
    // Tables are owned by server ids, alive while a process holds the id's claim: one of a
    // server that is gone (nobody holds its id), one of a live server sharing the host (its
    // claim held here, as that server would), and one of an earlier version named after a
    // process id.
    let live_owner = "test-live-server-3b1d";
    let _live = stratus_compute::liveness::claim(live_owner).unwrap();
    let dead = "stratus_test-dead-server-3b1d_0".to_string();
    let live = format!("stratus_{live_owner}_0");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid_named = format!("stratus_{}_0", child.id());
    child.wait().unwrap();
    for t in [&dead, &live, &pid_named] {
        add_table(t).await;
    }

    let gw = kernel_gateway(16);
    assert!(gw.kernel_forwarding().await.unwrap());
    let tables = nft_tables().await;
    assert!(!tables.contains(&format!("table ip {dead}\n")), "{tables}");
    assert!(
        !tables.contains(&format!("table ip {pid_named}\n")),
        "{tables}"
    );
    assert!(tables.contains(&format!("table ip {live}\n")), "{tables}");
    // Our own live table stays, named after our id.
    let own = gw.kernel_table().await.unwrap();
    assert!(tables.contains(&format!("table ip {own}\n")), "{tables}");
    assert!(own.starts_with("stratus_anon-"), "{own}");

    // Once the other server is gone, its table goes at the next collection (a server's start).
    drop(_live);
    gw.collect_stale().await;
    let tables = nft_tables().await;
    assert!(!tables.contains(&format!("table ip {live}\n")), "{tables}");
    assert!(tables.contains(&format!("table ip {own}\n")), "{tables}");
    gw.close_all().await;
}

#[tokio::test]
async fn routes_no_mapping_owns_are_tidied_away() {
    let gw = kernel_gateway(16);
    assert!(gw.kernel_forwarding().await.unwrap());
    let table = gw.kernel_table().await.unwrap();
    let (target, _) = echo_server().await;
    let (resolver, _) = switchable(Some(target));
    let public = gw.open_in("instance-t", "mt", 0, resolver).await.unwrap();
    assert_eq!(gw.kernel_routed("mt").await, Some(target));
    // A port routed in the table with no mapping open on it, as a close whose nft call failed
    // would leave it: new connections to it would still go to the old address.
    let stale: u16 = if public.port() == 65000 { 65001 } else { 65000 };
    let script = format!(
        "add element ip {table} marks {{ {stale} : 0x5354{stale:04x} }}\n\
         add element ip {table} targets {{ {stale} : 127.0.0.2 . 9 }}\n"
    );
    let mut nft = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .await
        .unwrap();
    assert!(nft.wait().await.unwrap().success());
    let routes = |table: String| async move {
        let out = tokio::process::Command::new("nft")
            .args(["list", "map", "ip", &table, "targets"])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(routes(table.clone()).await.contains(&format!("{stale} : ")));

    assert_eq!(gw.tidy().await, vec![stale]);
    let after = routes(table.clone()).await;
    assert!(!after.contains(&format!("{stale} : ")), "{after}");
    assert!(
        after.contains(&format!("{} : ", public.port())),
        "the open mapping keeps its route: {after}"
    );
    assert_eq!(gw.tidy().await, Vec::<u16>::new());
    gw.close_all().await;
}
