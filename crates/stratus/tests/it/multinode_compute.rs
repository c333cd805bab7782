//! Compute and the chain watcher on several nodes sharing one PostgreSQL database: each node is
//! its own compute host (its server id); a sandbox created through one node is controlled
//! through the other, which records the actions for the owning node; a restarted node leaves
//! the other host's instances alone; the chain watcher runs under a lease that moves to the
//! surviving node when its holder is killed, with no deposit credited twice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{
    b64, docker, eth_address, json, require_docker, Cluster, Ganache, Server, ServerBuilder, KEY_A,
    SPEC1_PRICE, TEST_IMAGE,
};

const WEB: &str = "services:
  web:
    image: stratus-test/busybox:latest
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\"]
";

/// Node `i`'s compute settings: Docker, a public port range of its own on loopback.
fn compute_node(i: usize, b: ServerBuilder) -> ServerBuilder {
    // Below the ephemeral port range, apart from `compute_server`'s ranges (see there).
    let min = 28000 + (i as u16) * 40 + (std::process::id() % 10) as u16 * 100;
    b.env("STRATUS_COMPUTE__GATEWAY_BIND", "127.0.0.1")
        .env("STRATUS_COMPUTE__SERVER_IP", "127.0.0.1")
        .env("STRATUS_COMPUTE__PORT_MIN", &min.to_string())
        .env("STRATUS_COMPUTE__PORT_MAX", &(min + 39).to_string())
        .env(
            "STRATUS_COMPUTE__LOCAL_IMAGES",
            &format!("[\"{TEST_IMAGE}\"]"),
        )
}

fn funded(c: &Cluster, user: &str) -> String {
    let t = c.nodes[0].user_token(user);
    let out = c.nodes[0]
        .admin()
        .args([
            "credit",
            "--account",
            user,
            "--amount",
            &(SPEC1_PRICE * 2).to_string(),
            "--reason",
            "t",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    t
}

fn status(s: &Server, t: &str, id: &str) -> Value {
    let (st, v) = json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(t));
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

/// Waits (through `s`) until the instance has `want`, within 60 s.
fn wait_status(s: &Server, t: &str, id: &str, want: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = status(s, t, id);
        if i["status"] == want {
            return i;
        }
        assert!(Instant::now() < deadline, "waiting for {want}: {i}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put(s: &Server, t: &str, path: &str) -> (u16, Value) {
    json(s.put(path).bearer_auth(t).json(&json!({})))
}

/// Docker's `State.Status` of a container of the instance, or "" when it is gone.
fn container_state(id: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{.State.Status}}",
        &format!("stratus-{id}-web"),
    ])
    .trim()
    .to_string()
}

fn containers_of(id: &str) -> String {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.stratus.instance={id}"),
    ])
    .trim()
    .to_string()
}

#[test]
fn a_sandbox_created_through_a_is_controlled_through_b() {
    require_docker();
    let Some(mut c) = Cluster::start(2, compute_node) else {
        return;
    };
    let (a_id, b_id) = (c.nodes[0].server_id(), c.nodes[1].server_id());
    assert_ne!(a_id, b_id, "each node is its own compute host");
    let t = funded(&c, "13100000901");
    let (st, v) = json(
        c.nodes[0]
            .post("/api/v1/sandbox")
            .bearer_auth(&t)
            .json(&json!({
                "instance": {"specId": 1, "imageId": 1, "duration": 1, "name": "web-1",
                             "password": "somePassword", "dockerCompose": b64(WEB)},
                "networkMapping": [{"name": "web", "protocol": "TCP", "computerPort": 80}]
            })),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let first_port = v["data"]["networkMappings"][0]["serverPort"].as_u64();
    wait_status(&c.nodes[0], &t, &id, 1);
    // Status and list from the store, on the other node.
    assert_eq!(status(&c.nodes[1], &t, &id)["status"], 1);
    let (_, list) = json(c.nodes[1].get("/api/v1/instance").bearer_auth(&t));
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(container_state(&id), "running");

    // Stop through B: performed by A, the container really stops.
    let (st, v) = put(&c.nodes[1], &t, &format!("/api/v1/instance/{id}/stop"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], 3, "closing at once: {v}");
    wait_status(&c.nodes[1], &t, &id, 4);
    assert_eq!(container_state(&id), "exited");

    // A restart of B leaves A's instance as it is (its reconcile sees only B's host).
    c.nodes[1].restart();
    std::thread::sleep(Duration::from_secs(3));
    let i = status(&c.nodes[0], &t, &id);
    assert_eq!(
        (i["status"].as_i64(), &i["statusReason"]),
        (Some(4), &json!("")),
        "{i}"
    );
    assert_eq!(container_state(&id), "exited");

    // Start through B.
    let (st, v) = put(&c.nodes[1], &t, &format!("/api/v1/instance/{id}/start"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], 2, "starting at once: {v}");
    wait_status(&c.nodes[1], &t, &id, 1);
    assert_eq!(container_state(&id), "running");

    // A mapping created through B is opened by A, in A's port range; deleted through B, A
    // closes it.
    let first = first_port;
    let (st, v) = json(
        c.nodes[1]
            .post("/api/v1/network-mappings")
            .bearer_auth(&t)
            .json(&json!({"name": "second", "computerId": id, "computerPort": 80})),
    );
    assert_eq!(st, 200, "{v}");
    let port = v["data"]["serverPort"].as_u64().unwrap() as u16;
    let a_min: u16 = c.nodes[0]
        .env_var("STRATUS_COMPUTE__PORT_MIN")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (a_min..a_min + 40).contains(&port) && Some(port as u64) != first,
        "A's next free port: {port} (first {first:?}, A from {a_min})"
    );
    let mid = v["data"]["id"].as_str().unwrap().to_string();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "A listens"
    );
    let (st, v) = json(
        c.nodes[1]
            .delete(&format!("/api/v1/network-mappings/{mid}"))
            .bearer_auth(&t),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "A closed the port"
    );

    // Restarting B while the instance runs: still running, containers untouched.
    c.nodes[1].restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(&c.nodes[0], &t, &id)["status"], 1);
    assert_eq!(container_state(&id), "running");

    // A goes away (SIGKILL). A mapping asked through B while A's host lease is still live is
    // recorded, never taken, and withdrawn when B gives up (30 s); once the lease has expired
    // (10 s), B refuses at once. Neither takes effect when A comes back.
    c.nodes[0].kill();
    let mapping = |name: &str| {
        json(
            c.nodes[1]
                .post("/api/v1/network-mappings")
                .bearer_auth(&t)
                .json(&json!({"name": name, "computerId": id, "computerPort": 80})),
        )
    };
    let (late, gone) = std::thread::scope(|sc| {
        let late = sc.spawn(|| mapping("late"));
        std::thread::sleep(Duration::from_secs(12));
        let asked = std::time::Instant::now();
        let gone = mapping("gone");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "refused at once: {:?}",
            asked.elapsed()
        );
        (late.join().unwrap(), gone)
    });
    assert_eq!(late.0, 503, "{}", late.1);
    assert_eq!(gone.0, 503, "{}", gone.1);
    c.nodes[0].start_again();
    wait_status(&c.nodes[0], &t, &id, 1);
    std::thread::sleep(Duration::from_secs(2));
    let (_, maps) = json(
        c.nodes[1]
            .get(&format!("/api/v1/network-mappings?instanceId={id}"))
            .bearer_auth(&t),
    );
    let names: Vec<&str> = maps["data"]["list"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["web"], "{maps}");

    // Delete through B: containers removed by A.
    let (st, v) = json(
        c.nodes[1]
            .delete(&format!("/api/v1/instance/{id}"))
            .bearer_auth(&t),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], 6, "deleting at once: {v}");
    wait_status(&c.nodes[1], &t, &id, 7);
    assert_eq!(containers_of(&id), "", "A removed the containers");
}

const KEY_DEPOSIT: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";
const ETHER: u128 = 1_000_000_000_000_000_000;

fn balance(s: &Server, token: &str) -> u128 {
    let (st, v) = json(s.get("/mefs/balance").header("Authorization", token));
    assert_eq!(st, 200, "{v}");
    v["Balance"].as_str().unwrap().parse().unwrap()
}

fn wait_balance(s: &Server, token: &str, want: u128, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let b = balance(s, token);
        if b == want {
            return;
        }
        assert!(Instant::now() < deadline, "balance {b}, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn runs_watcher(s: &Server) -> bool {
    std::fs::read_to_string(&s.log)
        .unwrap_or_default()
        .contains("chain watcher started on this node")
}

#[test]
fn sigkill_of_the_watcher_node_moves_the_watcher_without_double_credit() {
    let g = Ganache::start(&[KEY_A, KEY_DEPOSIT]);
    let Some(mut c) = Cluster::start(2, |_, b| {
        b.env("STRATUS_CHAIN__RPC_URL", &g.url)
            .env("STRATUS_CHAIN__DEPOSIT_ADDRESS", &eth_address(KEY_DEPOSIT))
            .env("STRATUS_CHAIN__CONFIRMATIONS", "1")
            .env("STRATUS_CHAIN__POLL_INTERVAL_MS", "100")
    }) else {
        return;
    };
    let (_, t, _) = c.nodes[0].wallet_login(KEY_A);
    let pay = |wei: u128| {
        g.send(
            json!({"from": eth_address(KEY_A), "to": eth_address(KEY_DEPOSIT),
                      "value": format!("0x{wei:x}")}),
        );
        g.mine(2);
    };
    pay(ETHER);
    wait_balance(&c.nodes[1], &t, ETHER, Duration::from_secs(30));
    let holders: Vec<usize> = (0..2).filter(|&i| runs_watcher(&c.nodes[i])).collect();
    assert_eq!(holders.len(), 1, "exactly one node runs the watcher");
    let (dead, alive) = (holders[0], 1 - holders[0]);

    c.nodes[dead].kill();
    let killed = Instant::now();
    pay(2 * ETHER);
    wait_balance(&c.nodes[alive], &t, 3 * ETHER, Duration::from_secs(20));
    assert!(
        killed.elapsed() <= Duration::from_secs(15),
        "the watcher moved in {:?}",
        killed.elapsed()
    );
    assert!(runs_watcher(&c.nodes[alive]));
    // Both deposits once each, and nothing more comes.
    pay(0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(balance(&c.nodes[alive], &t), 3 * ETHER);
    // The killed node comes back: it does not take the lease from a live holder, and credits
    // nothing again.
    c.nodes[dead].restart();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !runs_watcher(&c.nodes[dead]) || {
            // Its log from before the kill says it ran the watcher then; it must not now.
            let log = std::fs::read_to_string(&c.nodes[dead].log).unwrap_or_default();
            log.matches("chain watcher started on this node").count() == 1
        }
    );
    assert_eq!(balance(&c.nodes[dead], &t), 3 * ETHER);
}
