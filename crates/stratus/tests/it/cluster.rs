//! The multi-node harness: the round-robin proxy on its own (plain TCP backends), one node
//! behind it, and — with PostgreSQL (`STRATUS_TEST_PG`, set by `scripts/test.sh`) — three
//! nodes on one database that share accounts and the token key.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;

use crate::harness::{json, put, Cluster, Proxy, KEY_A};

/// A TCP backend that greets each connection with its tag byte, then echoes what it reads.
/// Returns its address; it stops accepting when `stop` is dropped.
fn echo_backend(tag: u8) -> (std::net::SocketAddr, std::sync::mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || loop {
        if let Err(std::sync::mpsc::TryRecvError::Disconnected) = rx.try_recv() {
            return; // the listener closes: connections are refused
        }
        match l.accept() {
            Ok((mut c, _)) => {
                c.set_nonblocking(false).unwrap();
                std::thread::spawn(move || {
                    c.write_all(&[tag]).unwrap();
                    let mut buf = [0u8; 1024];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    });
    (addr, tx)
}

fn tag_of(mut c: &TcpStream) -> u8 {
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    b[0]
}

#[test]
fn the_proxy_hands_connections_out_in_turn_copies_both_ways_and_skips_a_dead_backend() {
    let backends: Vec<_> = (0..3).map(echo_backend).collect();
    let proxy = Proxy::start(backends.iter().map(|(a, _)| *a).collect());
    let mut conns = Vec::new();
    let mut tags = Vec::new();
    for _ in 0..6 {
        let c = TcpStream::connect(proxy.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tags.push(tag_of(&c));
        conns.push(c);
    }
    assert_eq!(tags, [0, 1, 2, 0, 1, 2]);
    assert_eq!(proxy.handed(), [2, 2, 2]);
    // Bytes go both ways, on every connection at once.
    for (i, c) in conns.iter_mut().enumerate() {
        let msg = format!("hello {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    // A backend that is gone is skipped.
    let mut backends = backends;
    let (_, stop1) = backends.remove(1);
    drop(stop1);
    std::thread::sleep(Duration::from_millis(100));
    let tags: Vec<u8> = (0..4)
        .map(|_| {
            let c = TcpStream::connect(proxy.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            tag_of(&c)
        })
        .collect();
    assert_eq!(tags, [0, 2, 0, 2]);
    // Dropping the proxy closes what it holds open: the client reads the end.
    let mut c = conns.pop().unwrap();
    drop(proxy);
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0, "{rest:?}");
}

#[test]
fn one_node_behind_the_proxy_answers_and_signs_with_the_shared_key() {
    let c = Cluster::start_single(|_, b| b.no_limits());
    let node = &c.nodes[0];
    // The key came from STRATUS_JWT_KEY: none was generated in the data dir.
    assert!(!node.data_dir.join("secrets/jwt.key").exists());
    assert_eq!(c.jwt_key.len(), 64);
    let r = c.service.get("/healthz").send().unwrap();
    assert_eq!(r.status(), 200);
    // An account made through the proxy; its token works on the node directly.
    let t = c.service.user_token("13000000101");
    let (st, v) = json(
        crate::harness::client()
            .get(format!("{}/api/v1/user", c.urls()[0]))
            .bearer_auth(&t),
    );
    assert_eq!(st, 200, "{v}");
    // Many fresh connections through the proxy, all answered by the one node.
    for _ in 0..5 {
        let r = crate::harness::client()
            .get(format!("{}/healthz", c.url()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(c.proxy.handed().len(), 1);
    assert!(c.proxy.handed()[0] >= 2, "{:?}", c.proxy.handed());
}

#[test]
fn three_nodes_on_one_database_share_accounts_tokens_and_files() {
    let Some(c) = Cluster::start(3, |_, b| b.no_limits()) else {
        return;
    };
    assert!(c.database_url().is_some());
    let [a, b, d] = [0, 1, 2].map(|i| &c.nodes[i]);
    // Registered on one node, logged in on another, used on the third.
    let (st, v) = json(
        a.post("/api/v1/user/register")
            .json(&json!({"username": "13000000102", "password": "password-123"})),
    );
    assert_eq!(st, 200, "{v}");
    let t = b.login("13000000102", "password-123");
    let (st, v) = json(d.get("/api/v1/user").bearer_auth(&t));
    assert_eq!(st, 200, "{v}");
    // A MEMO account's upload through the service is listed by every node.
    let (_, mt, _) = c.service.wallet_login(KEY_A);
    let cid = put(&c.service, &mt, "mefs", "f.txt", b"shared".to_vec());
    for n in &c.nodes {
        let (st, v) = json(n.get("/mefs/listobjects").header("Authorization", &mt));
        assert_eq!(st, 200, "{v}");
        assert!(v.to_string().contains(&cid), "{} lists {v}", n.url);
    }
}
