//! Crash consistency of sandboxes, through the real binary and engine: the server kills itself
//! with a real SIGKILL at a named point (`STRATUS_TEST_KILL_AT`, a test hook of the compute
//! code) — after an instance's network exists, with 3 of its 8 containers created, in the
//! middle of a delete, between marking an instance failed and writing its refund — and a
//! restarted server must end each instance Running or Failed-and-refunded exactly once, keep
//! the ledger balanced, and leave no container, network, volume, cgroup, nftables table or
//! listening port that no instance owns. Also: a mapping update racing a delete leaves no
//! listener, and an instance missing containers is not started.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{
    b64, compute_server, docker, funded, json, nft_tables, Server, SPEC1_PRICE, TEST_IMAGE,
};

fn sandbox(s: &Server, t: &str, compose: &str, mappings: Value) -> (String, Vec<u16>) {
    sandbox_or_crash(s, t, compose, mappings).expect("the sandbox call answered")
}

/// The sandbox call on a server that may kill itself before its answer is out: `None` then
/// (find the instance with [`only_instance`] after a restart).
fn sandbox_or_crash(
    s: &Server,
    t: &str,
    compose: &str,
    mappings: Value,
) -> Option<(String, Vec<u16>)> {
    let r = s
        .post("/api/v1/sandbox")
        .bearer_auth(t)
        .json(&json!({
            "instance": {"specId": 1, "imageId": 1, "duration": 1, "name": "crash",
                         "dockerCompose": b64(compose)},
            "networkMapping": mappings
        }))
        .send()
        .ok()?;
    let st = r.status().as_u16();
    let v: Value = r.json().ok()?;
    assert_eq!(st, 200, "{v}");
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let ports = v["data"]["networkMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["serverPort"].as_u64().unwrap() as u16)
        .collect();
    Some((id, ports))
}

/// The account's one instance, and the server's whole public port range (what its mappings
/// could have been given).
fn only_instance(s: &Server, t: &str) -> (String, Vec<u16>) {
    let (_, l) = json(s.get("/api/v1/instance").bearer_auth(t));
    let list = l["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{l}");
    let min: u16 = s
        .env_var("STRATUS_COMPUTE__PORT_MIN")
        .unwrap()
        .parse()
        .unwrap();
    let max: u16 = s
        .env_var("STRATUS_COMPUTE__PORT_MAX")
        .unwrap()
        .parse()
        .unwrap();
    (
        list[0]["id"].as_str().unwrap().to_string(),
        (min..=max).collect(),
    )
}

fn wait(s: &Server, t: &str, id: &str, status: i64) -> Value {
    let (st, v) = json(
        s.get(&format!(
            "/api/v1/instance/{id}/wait?status={status}&timeout=60"
        ))
        .bearer_auth(t),
    );
    assert_eq!(st, 200, "waiting for {status}: {v}");
    v["data"].clone()
}

fn instance(s: &Server, t: &str, id: &str) -> Value {
    let (st, v) = json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(t));
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

fn balance(s: &Server, t: &str) -> String {
    let (_, b) = json(s.get("/api/v1/balance").bearer_auth(t));
    b["data"]["balance"].as_str().unwrap().to_string()
}

/// The account's ledger entries with `reason`.
fn entries(s: &Server, t: &str, reason: &str) -> Vec<Value> {
    let (_, l) = json(s.get("/api/v1/ledger?size=1000").bearer_auth(t));
    l["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == reason)
        .cloned()
        .collect()
}

/// `stratus admin ledger verify` on the live data dir: every account balances.
fn ledger_verifies(s: &Server) {
    let out = s.admin().args(["ledger", "verify"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mismatches"], json!([]), "{v}");
}

/// Starts a server whose compute code kills the process at `point`.
fn armed(point: &str) -> Server {
    compute_server().env("STRATUS_TEST_KILL_AT", point).start()
}

/// Waits for the server to kill itself, and checks it died of SIGKILL; it starts unarmed next.
fn killed(s: &mut Server) {
    use std::os::unix::process::ExitStatusExt;
    let st = s.wait_exit();
    assert_eq!(st.signal(), Some(9), "the server killed itself: {st:?}");
    s.remove_env("STRATUS_TEST_KILL_AT");
}

/// Ids of the containers, networks and volumes on the engine that carry `label` (`key=value`).
fn labelled_objects(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut all = Vec::new();
    for what in [
        &["ps", "-aq", "--filter", &filter][..],
        &["network", "ls", "-q", "--filter", &filter],
        &["volume", "ls", "-q", "--filter", &filter],
    ] {
        all.extend(docker(what).split_whitespace().map(str::to_string));
    }
    all
}

/// Ids of the containers, networks and volumes of instance `id` on the engine.
fn engine_objects(id: &str) -> Vec<String> {
    labelled_objects(&format!("io.stratus.instance={id}"))
}

/// Everything of the server's owner on the engine (containers, networks, volumes).
fn owner_objects(s: &Server) -> Vec<String> {
    labelled_objects(&format!("io.stratus.owner={}", s.server_id()))
}

/// The instance's cgroup directories (`<hierarchy>/stratus/<id>`, in every cgroup hierarchy
/// this host mounts, as `/proc/self/mountinfo` lists them) that exist.
fn cgroup_dirs(id: &str) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fs = right.split(' ').next()?;
            (fs == "cgroup" || fs == "cgroup2").then(|| left.split(' ').nth(4))?
        })
        .map(|mount| std::path::Path::new(mount).join("stratus").join(id))
        .filter(|dir| dir.is_dir())
        .map(|dir| dir.display().to_string())
        .collect()
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The server's gateway (`ip`) and firewall (`inet`) tables.
fn tables_of(s: &Server) -> (Vec<String>, Vec<String>) {
    let owner = s.server_id();
    (
        nft_tables("ip", &format!("stratus_{owner}_")),
        nft_tables("inet", &format!("stratus_guard_{owner}_")),
    )
}

/// Whether the gateway's `DOCKER-USER` rule is installed.
fn docker_user_rule() -> bool {
    Command::new("iptables")
        .args([
            "-C",
            "DOCKER-USER",
            "-m",
            "connmark",
            "--mark",
            "0x53540000/0xffff0000",
            "-j",
            "ACCEPT",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The `DOCKER-USER` rule stays only while some server's gateway table exists on the host
/// (other tests' servers may hold one; then nothing can be said).
fn docker_user_rule_follows_the_tables() {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tables = nft_tables("ip", "stratus_");
        if !tables.is_empty() || !docker_user_rule() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no gateway table is left, yet the DOCKER-USER rule stays"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After a restart: nothing of `id` is left on the engine or in the cgroup tree, its ports
/// are free, the server's own stale tables are gone (the killed run's gateway table goes at
/// start even though no port opens; only the live firewall table is left).
fn nothing_left(s: &Server, id: &str, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let objects = engine_objects(id);
        let groups = cgroup_dirs(id);
        let (gw, fw) = tables_of(s);
        let free = ports.iter().all(|p| port_free(*p));
        if objects.is_empty() && groups.is_empty() && gw.is_empty() && fw.len() == 1 && free {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: objects {objects:?}, cgroups {groups:?}, gateway tables {gw:?}, \
             firewall tables {fw:?}, ports free: {free}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(owner_objects(s), Vec::<String>::new());
    docker_user_rule_follows_the_tables();
}

/// The instance failed with a reason and its charge came back exactly once.
fn failed_and_refunded_once(s: &Server, t: &str, id: &str, funded_with: u128) {
    let i = wait(s, t, id, 10);
    assert_eq!(i["status"], 10, "{i}");
    assert!(!i["statusReason"].as_str().unwrap().is_empty(), "{i}");
    assert_eq!(i["networkMappings"], json!([]));
    assert_eq!(balance(s, t), funded_with.to_string(), "refunded");
    let refunds = entries(s, t, "refund");
    assert_eq!(refunds.len(), 1, "one refund: {refunds:?}");
    assert_eq!(refunds[0]["reference"], format!("refund:{id}"));
    assert_eq!(refunds[0]["amount"], SPEC1_PRICE.to_string());
    ledger_verifies(s);
}

const WEB: &str = "services:
  web:
    image: stratus-test/busybox:latest
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\"]
    volumes: [\"data:/data\"]
volumes:
  data: {}
";

#[test]
fn sigkill_after_the_network_exists_fails_and_refunds_the_instance_once() {
    let mut s = armed("compute.create.after_network");
    let t = funded(&s, "13300000001", 1);
    let answered = sandbox_or_crash(&s, &t, WEB, json!([{"name": "web", "computerPort": 80}]));
    killed(&mut s);
    // Killed with the network made and no container yet.
    let owner = format!("label=io.stratus.owner={}", s.server_id());
    let net = docker(&["network", "ls", "-q", "--filter", &owner]);
    assert_eq!(net.split_whitespace().count(), 1, "the network exists");
    assert_eq!(docker(&["ps", "-aq", "--filter", &owner]).trim(), "");
    // The killed run's gateway table is not asserted here: it is a dead server's table, which
    // any other server starting on this host (the tests run in parallel) rightly deletes at once.
    assert!(tables_of(&s).0.len() <= 1, "the killed run's gateway table");

    s.start_again();
    let (id, ports) = answered.unwrap_or_else(|| only_instance(&s, &t));
    failed_and_refunded_once(&s, &t, &id, SPEC1_PRICE);
    assert!(
        instance(&s, &t, &id)["statusReason"]
            .as_str()
            .unwrap()
            .contains("stratus stopped before the instance was created"),
        "{}",
        instance(&s, &t, &id)
    );
    nothing_left(&s, &id, &ports);
    // Another restart changes nothing: refunded once.
    s.restart();
    failed_and_refunded_once(&s, &t, &id, SPEC1_PRICE);
}

/// Eight services, each a web server; the mapping targets the first.
fn eight_services() -> String {
    let mut c = String::from("services:\n");
    for i in 0..8 {
        c += &format!(
            "  s{i}:\n    image: {TEST_IMAGE}\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n"
        );
        if i == 0 {
            c += "    ports: [\"80:80\"]\n";
        }
    }
    c
}

#[test]
fn sigkill_with_3_of_8_services_created_fails_and_refunds_the_instance_once() {
    let mut s = armed("compute.create.after_service:3");
    let t = funded(&s, "13300000002", 1);
    let answered = sandbox_or_crash(
        &s,
        &t,
        &eight_services(),
        json!([{"name": "web", "computerPort": 80}]),
    );
    killed(&mut s);
    let owner = format!("label=io.stratus.owner={}", s.server_id());
    let containers = docker(&["ps", "-aq", "--filter", &owner]);
    assert_eq!(containers.split_whitespace().count(), 3, "{containers}");

    s.start_again();
    let (id, ports) = answered.unwrap_or_else(|| only_instance(&s, &t));
    failed_and_refunded_once(&s, &t, &id, SPEC1_PRICE);
    nothing_left(&s, &id, &ports);
    let (st, v) = json(
        s.put(&format!("/api/v1/instance/{id}/start"))
            .bearer_auth(&t)
            .json(&json!({})),
    );
    assert_eq!(
        (st, v["reason"].clone()),
        (409, json!("INSTANCE_STATE")),
        "{v}"
    );
}

#[test]
fn an_instance_missing_containers_is_not_started() {
    let s = compute_server().start();
    let t = funded(&s, "13300000003", 1);
    let compose = format!(
        "services:\n  web:\n    image: {TEST_IMAGE}\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    ports: [\"80:80\"]\n  side:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
    );
    let (id, _) = sandbox(
        &s,
        &t,
        &compose,
        json!([{"name": "web", "computerPort": 80}]),
    );
    wait(&s, &t, &id, 1);
    let (st, _) = json(
        s.put(&format!("/api/v1/instance/{id}/stop"))
            .bearer_auth(&t)
            .json(&json!({})),
    );
    assert_eq!(st, 200);
    wait(&s, &t, &id, 4);
    // A container removed behind stratus' back.
    docker(&["rm", "-f", &format!("stratus-{id}-side")]);
    let (st, v) = json(
        s.put(&format!("/api/v1/instance/{id}/start"))
            .bearer_auth(&t)
            .json(&json!({})),
    );
    assert_eq!(
        (st, v["reason"].clone()),
        (409, json!("INSTANCE_STATE")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("side") && message.contains("missing"),
        "{v}"
    );
    assert_eq!(instance(&s, &t, &id)["status"], 4, "still closed");
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    wait(&s, &t, &id, 7);
    assert_eq!(engine_objects(&id), Vec::<String>::new());
}

#[test]
fn sigkill_during_a_delete_is_finished_at_the_next_start() {
    for point in [
        "compute.delete.after_mark",
        "compute.remove.after_containers",
    ] {
        // A transition deadline far beyond the waits below: the delete must be finished by the
        // start itself, not by the sweeper resolving a stuck transition.
        let mut s = compute_server()
            .env("STRATUS_COMPUTE__TRANSITION_TIMEOUT_SECS", "3600")
            .start();
        let t = funded(&s, "13300000004", 1);
        let (id, ports) = sandbox(&s, &t, WEB, json!([{"name": "web", "computerPort": 80}]));
        wait(&s, &t, &id, 1);
        s.restart_with(&[("STRATUS_TEST_KILL_AT", point)]);
        assert_eq!(instance(&s, &t, &id)["status"], 1);
        // The server dies in the middle of the delete (before or after its answer is out).
        if let Ok(r) = s
            .delete(&format!("/api/v1/instance/{id}"))
            .bearer_auth(&t)
            .send()
        {
            if let Ok(v) = r.json::<Value>() {
                assert_eq!(v["data"]["status"], 6, "{v}");
            }
        }
        killed(&mut s);
        if point == "compute.remove.after_containers" {
            assert!(
                !engine_objects(&id).is_empty(),
                "killed with the network and volume left"
            );
        }
        s.start_again();
        let i = wait(&s, &t, &id, 7);
        assert_eq!(i["status"], 7, "{point}: {i}");
        nothing_left(&s, &id, &ports);
        // It ran: the charge stays, and nothing was refunded.
        assert_eq!(balance(&s, &t), "0");
        assert!(entries(&s, &t, "refund").is_empty());
        ledger_verifies(&s);
    }
}

#[test]
fn sigkill_between_failing_and_refunding_refunds_once() {
    let mut s = armed("compute.refund.before_credit");
    let t = funded(&s, "13300000005", 1);
    // An image no registry gives this host: the boot fails, and the server dies as it records
    // the failure.
    let compose =
        "services:\n  web:\n    image: stratus-test/not-there:1.0\n    ports: [\"80:80\"]\n";
    let answered = sandbox_or_crash(
        &s,
        &t,
        compose,
        json!([{"name": "web", "computerPort": 80}]),
    );
    killed(&mut s);
    s.start_again();
    let (id, ports) = answered.unwrap_or_else(|| only_instance(&s, &t));
    failed_and_refunded_once(&s, &t, &id, SPEC1_PRICE);
    nothing_left(&s, &id, &ports);
    s.restart();
    failed_and_refunded_once(&s, &t, &id, SPEC1_PRICE);
}

#[test]
fn a_mapping_update_racing_a_delete_leaves_no_listener() {
    let s = compute_server().start();
    let t = funded(&s, "13300000006", 3);
    let compose = format!(
        "services:\n  web:\n    image: {TEST_IMAGE}\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    ports: [\"80:80\", \"8080:80\"]\n"
    );
    for round in 0..3 {
        let (st, v) = json(s.post("/api/v1/sandbox").bearer_auth(&t).json(&json!({
            "instance": {"specId": 1, "imageId": 1, "duration": 1, "name": "race",
                         "dockerCompose": b64(&compose)},
            "networkMapping": [{"name": "web", "computerPort": 80}]
        })));
        assert_eq!(st, 200, "{v}");
        let id = v["data"]["instanceId"].as_str().unwrap().to_string();
        let mapping = v["data"]["networkMappings"][0].clone();
        let (mid, port) = (
            mapping["id"].as_str().unwrap().to_string(),
            mapping["serverPort"].as_u64().unwrap() as u16,
        );
        wait(&s, &t, &id, 1);
        let updater = {
            let (url, t, mid) = (s.url.clone(), t.clone(), mid.clone());
            std::thread::spawn(move || {
                let client = crate::harness::client();
                let mut refused = 0;
                for n in 0..400 {
                    let r = client
                        .put(format!("{url}/api/v1/network-mappings/{mid}"))
                        .bearer_auth(&t)
                        .json(&json!({"computerPort": if n % 2 == 0 { 8080 } else { 80 }}))
                        .send()
                        .unwrap();
                    match r.status().as_u16() {
                        200 => {}
                        404 | 409 => {
                            refused += 1;
                            if refused > 20 {
                                return;
                            }
                        }
                        other => panic!("update answered {other}: {}", r.text().unwrap()),
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 * (round + 1)));
        let (st, v) = json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
        assert_eq!(st, 200, "{v}");
        updater.join().unwrap();
        wait(&s, &t, &id, 7);
        assert!(
            port_free(port),
            "round {round}: a listener was left on {port}"
        );
        assert!(
            !s.metrics().contains(&mid),
            "round {round}: the gateway still has mapping {mid}"
        );
        let (st, v) = json(
            s.put(&format!("/api/v1/network-mappings/{mid}"))
                .bearer_auth(&t)
                .json(&json!({"computerPort": 8080})),
        );
        assert_eq!(st, 404, "{v}");
    }
}
