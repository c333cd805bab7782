//! Compute sandboxes on the real Docker engine: the document's sandbox call end to end (HTTP
//! through the public port), stop/start/delete, refused compose fields, ownership, balance,
//! failed boots, mapping management, waiting, a restart of stratus, and the CLI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{
    b64, compute_server, docker, funded, json, Server, BIN, SPEC1_PRICE, TEST_IMAGE,
};

const WEB: &str = "services:
  web:
    image: stratus-test/busybox:latest
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\"]
";

fn sandbox_body(compose: &str, mappings: Value) -> Value {
    json!({
        "instance": {"specId": 1, "imageId": 1, "duration": 1, "name": "web-1",
                     "publicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx test@stratus",
                     "password": "somePassword", "dockerCompose": b64(compose)},
        "networkMapping": mappings
    })
}

fn sandbox(s: &Server, t: &str, compose: &str, mappings: Value) -> (u16, Value) {
    json(
        s.post("/api/v1/sandbox")
            .bearer_auth(t)
            .json(&sandbox_body(compose, mappings)),
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

/// GET / through a public port: the body, or None when the connection is refused or closed.
fn http_get(port: u16) -> Option<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    if out.is_empty() {
        return None;
    }
    Some(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn put(s: &Server, t: &str, path: &str) -> (u16, Value) {
    json(s.put(path).bearer_auth(t).json(&json!({})))
}

/// The server's kernel routes (its nftables `targets` map), as `nft` lists them.
fn kernel_routes(s: &Server) -> String {
    let tables = crate::harness::nft_tables("ip", &format!("stratus_{}_", s.server_id()));
    assert_eq!(tables.len(), 1, "one gateway table per server: {tables:?}");
    let table = &tables[0];
    let out = std::process::Command::new("nft")
        .args(["list", "map", "ip", table, "targets"])
        .output()
        .expect("nft is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the server's kernel route of `port` comes to be there (`present`) or gone, within
/// 10 s: routes follow a status change right after it is recorded.
fn routed_eventually(s: &Server, port: u16, present: bool) -> bool {
    for _ in 0..100 {
        if kernel_routes(s).contains(&format!("{port} : ")) == present {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn sandbox_end_to_end_through_the_public_port() {
    let s = compute_server().start();
    let t = funded(&s, "13100000001", 1);
    let (st, v) = sandbox(
        &s,
        &t,
        WEB,
        json!([{"name": "nginx", "protocol": "TCP", "computerPort": 80}]),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["code"], 200);
    assert_eq!(v["message"], "success");
    let data = &v["data"];
    let id = data["instanceId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    let m = &data["networkMappings"][0];
    assert_eq!(m.as_object().unwrap().len(), 5, "{m}");
    assert_eq!(m["name"], "nginx");
    assert_eq!(m["computerPort"], 80);
    assert_eq!(m["serverIp"], "127.0.0.1");
    let port = m["serverPort"].as_u64().unwrap() as u16;
    assert_eq!(m["id"].as_str().unwrap().len(), 36);
    // The charge is taken at once.
    let (_, b) = json(s.get("/api/v1/balance").bearer_auth(&t));
    assert_eq!(b["data"]["balance"], "0");

    let i = wait(&s, &t, &id, 1);
    assert_eq!(i["status"], 1);
    assert_eq!(i["imageName"], "ubuntu:20.04");
    assert_eq!(i["core"], 2);
    assert_eq!(i["memory"], 4);
    assert_eq!(i["networkMappings"][0]["serverPort"], port);
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    // Served by the kernel (the default `auto` forwarding, as root with nft and conntrack).
    assert!(routed_eventually(&s, port, true), "{}", kernel_routes(&s));
    // The spec bounds the instance; the container runs with no-new-privileges and a pids limit.
    let inspect: Value =
        serde_json::from_str(&docker(&["inspect", &format!("stratus-{id}-web")])).unwrap();
    let host = &inspect[0]["HostConfig"];
    assert!(host["PidsLimit"].as_i64().unwrap() > 0);
    assert!(host["SecurityOpt"]
        .to_string()
        .contains("no-new-privileges"));
    assert_eq!(host["Privileged"], false);
    let bindings = &host["PortBindings"];
    assert!(
        bindings.is_null() || bindings == &json!({}),
        "no host ports (the gateway forwards): {bindings}"
    );

    // Stop: the port answers nothing. Start: served again, same port.
    assert_eq!(put(&s, &t, &format!("/api/v1/instance/{id}/stop")).0, 200);
    assert_eq!(wait(&s, &t, &id, 4)["status"], 4);
    assert_eq!(http_get(port), None);
    assert!(routed_eventually(&s, port, false), "no route while stopped");
    assert_eq!(put(&s, &t, &format!("/api/v1/instance/{id}/start")).0, 200);
    wait(&s, &t, &id, 1);
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    assert!(routed_eventually(&s, port, true), "routed again");
    assert_eq!(
        put(&s, &t, &format!("/api/v1/instance/{id}/restart")).0,
        200
    );
    wait(&s, &t, &id, 1);
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));

    // Delete: port free, containers and network gone.
    let (st, v) = json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    assert_eq!(
        (st, &v["code"], &v["data"]["id"]),
        (200, &json!(200), &json!(id))
    );
    assert!(
        [6, 7].contains(&v["data"]["status"].as_i64().unwrap()),
        "{v}"
    );
    assert_eq!(wait(&s, &t, &id, 7)["status"], 7);
    assert_eq!(http_get(port), None);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the public port is free again");
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.stratus.instance={id}")
        ])
        .trim(),
        ""
    );
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.stratus.instance={id}")
        ])
        .trim(),
        ""
    );
    let (_, list) = json(s.get("/api/v1/instance").bearer_auth(&t));
    assert_eq!(list["data"], json!([]), "deleted instances are not listed");
}

#[test]
fn the_sandbox_answers_with_its_ports_before_the_instance_runs() {
    let s = compute_server().start();
    let t = funded(&s, "13100000002", 1);
    // A slow service: its health check holds the instance in Creating for a while.
    let compose = "services:
  db:
    image: stratus-test/busybox:latest
    command: [\"sh\", \"-c\", \"sleep 2; touch /tmp/ready; sleep 3600\"]
    healthcheck: {test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"], interval: 1s, retries: 30}
  web:
    image: stratus-test/busybox:latest
    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"80:8080\"]
    depends_on: {db: {condition: service_healthy}}
";
    let (st, v) = sandbox(
        &s,
        &t,
        compose,
        json!([{"name": "web", "computerPort": 80}]),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let port = v["data"]["networkMappings"][0]["serverPort"]
        .as_u64()
        .unwrap() as u16;
    let (_, i) = json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    assert_eq!(i["data"]["status"], 0, "still creating");
    assert_eq!(i["data"]["networkMappings"][0]["serverPort"], port);
    wait(&s, &t, &id, 1);
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    wait(&s, &t, &id, 7);
}

#[test]
fn each_dangerous_compose_field_is_refused_naming_it() {
    let s = compute_server().start();
    let t = funded(&s, "13100000003", 40);
    let svc = |extra: &str| format!("services:\n  web:\n    image: {TEST_IMAGE}\n{extra}");
    let cases = [
        ("    privileged: true\n", "services.web.privileged"),
        ("    cap_add: [NET_ADMIN]\n", "services.web.cap_add"),
        (
            "    devices: [\"/dev/sda:/dev/sda\"]\n",
            "services.web.devices",
        ),
        ("    network_mode: host\n", "services.web.network_mode"),
        (
            "    network_mode: \"container:other\"\n",
            "services.web.network_mode",
        ),
        ("    pid: host\n", "services.web.pid"),
        ("    ipc: host\n", "services.web.ipc"),
        ("    uts: host\n", "services.web.uts"),
        (
            "    volumes: [\"/etc:/host-etc\"]\n",
            "services.web.volumes",
        ),
        (
            "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
            "services.web.volumes",
        ),
        (
            "    volumes: [{type: bind, source: /, target: /host}]\n",
            "services.web.volumes",
        ),
        (
            "    security_opt: [\"seccomp:unconfined\"]\n",
            "services.web.security_opt",
        ),
        (
            "    sysctls: {net.ipv4.ip_forward: 1}\n",
            "services.web.sysctls",
        ),
        ("    userns_mode: host\n", "services.web.userns_mode"),
    ];
    for (extra, field) in cases {
        let (st, v) = sandbox(&s, &t, &svc(extra), json!([]));
        assert_eq!(st, 400, "{extra}: {v}");
        assert_eq!(v["reason"], "INVALID_ARGUMENT", "{extra}");
        assert_eq!(v["metadata"]["field"], "instance.dockerCompose", "{extra}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{extra}: {v}"
        );
    }
    // Too many services (the default maximum is 8).
    let many: String = (0..9)
        .map(|i| format!("  s{i}:\n    image: {TEST_IMAGE}\n"))
        .collect();
    let (st, v) = sandbox(&s, &t, &format!("services:\n{many}"), json!([]));
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("services"), "{v}");
    // Not base64, not YAML, a port the compose file does not publish, a bad spec.
    let mut body = sandbox_body(WEB, json!([]));
    body["instance"]["dockerCompose"] = json!("!!!");
    let (st, v) = json(s.post("/api/v1/sandbox").bearer_auth(&t).json(&body));
    assert_eq!(
        (st, v["metadata"]["field"].clone()),
        (400, json!("instance.dockerCompose"))
    );
    let (st, v) = sandbox(&s, &t, "just: [text", json!([]));
    assert_eq!(
        (st, v["metadata"]["field"].clone()),
        (400, json!("instance.dockerCompose"))
    );
    let (st, v) = sandbox(&s, &t, WEB, json!([{"name": "x", "computerPort": 81}]));
    assert_eq!(
        (st, v["metadata"]["field"].clone()),
        (400, json!("networkMapping.computerPort")),
        "{v}"
    );
    let (st, v) = sandbox(
        &s,
        &t,
        WEB,
        json!([{"name": "x", "protocol": "UDP", "computerPort": 80}]),
    );
    assert_eq!(
        (st, v["metadata"]["field"].clone()),
        (400, json!("networkMapping.protocol"))
    );
    let mut body = sandbox_body(WEB, json!([]));
    body["instance"]["specId"] = json!(9);
    let (st, v) = json(s.post("/api/v1/sandbox").bearer_auth(&t).json(&body));
    assert_eq!(
        (st, v["metadata"]["field"].clone()),
        (400, json!("instance.specId"))
    );
    // Nothing was created and nothing was charged.
    let (_, list) = json(s.get("/api/v1/instance").bearer_auth(&t));
    assert_eq!(list["data"], json!([]));
    let (_, b) = json(s.get("/api/v1/balance").bearer_auth(&t));
    assert_eq!(b["data"]["balance"], (SPEC1_PRICE * 40).to_string());
}

#[test]
fn insufficient_balance_creates_nothing() {
    let s = compute_server().start();
    let t = s.user_token("13100000004");
    let (st, v) = sandbox(&s, &t, WEB, json!([{"name": "web", "computerPort": 80}]));
    assert_eq!(
        (st, v),
        (
            402,
            json!({"code": 402, "reason": "INSUFFICIENT_BALANCE",
                     "message": format!("insufficient balance: 0 available, {SPEC1_PRICE} needed"), "metadata": {}})
        )
    );
    let (_, list) = json(s.get("/api/v1/instance").bearer_auth(&t));
    assert_eq!(list["data"], json!([]));
    let (_, maps) = json(s.get("/api/v1/network-mappings").bearer_auth(&t));
    assert_eq!(maps["data"]["total"], 0);
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=io.stratus.service=web",
            "--filter",
            "name=web-1"
        ])
        .trim(),
        ""
    );
}

#[test]
fn another_account_cannot_see_control_or_map_an_instance() {
    let s = compute_server().start();
    let t = funded(&s, "13100000005", 1);
    let other = s.user_token("13100000006");
    let (_, v) = sandbox(&s, &t, WEB, json!([{"name": "web", "computerPort": 80}]));
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let mid = v["data"]["networkMappings"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let nf = |v: &Value, reason: &str| {
        assert_eq!(v["code"], 404, "{v}");
        assert_eq!(v["reason"], reason, "{v}");
    };
    nf(
        &json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(&other)).1,
        "INSTANCE_NOT_FOUND",
    );
    nf(
        &put(&s, &other, &format!("/api/v1/instance/{id}/stop")).1,
        "INSTANCE_NOT_FOUND",
    );
    nf(
        &json(
            s.delete(&format!("/api/v1/instance/{id}"))
                .bearer_auth(&other),
        )
        .1,
        "INSTANCE_NOT_FOUND",
    );
    nf(
        &json(
            s.get(&format!("/api/v1/instance/{id}/wait?status=1"))
                .bearer_auth(&other),
        )
        .1,
        "INSTANCE_NOT_FOUND",
    );
    nf(
        &json(
            s.post("/api/v1/network-mappings")
                .bearer_auth(&other)
                .json(&json!({"name": "steal", "computerId": id, "computerPort": 80})),
        )
        .1,
        "INSTANCE_NOT_FOUND",
    );
    nf(
        &json(
            s.get(&format!("/api/v1/network-mappings/{mid}"))
                .bearer_auth(&other),
        )
        .1,
        "NETWORK_MAPPING_NOT_FOUND",
    );
    nf(
        &json(
            s.delete(&format!("/api/v1/network-mappings/{mid}"))
                .bearer_auth(&other),
        )
        .1,
        "NETWORK_MAPPING_NOT_FOUND",
    );
    let (_, l) = json(s.get("/api/v1/instance").bearer_auth(&other));
    assert_eq!(l["data"], json!([]));
    let (_, l) = json(s.get("/api/v1/network-mappings").bearer_auth(&other));
    assert_eq!(l["data"]["total"], 0);
    // The owner still has everything.
    wait(&s, &t, &id, 1);
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    wait(&s, &t, &id, 7);
}

#[test]
fn a_boot_that_fails_is_marked_with_its_reason_and_refunded() {
    let s = compute_server().start();
    let t = funded(&s, "13100000007", 1);
    let compose =
        "services:\n  web:\n    image: stratus-test/not-there:1.0\n    ports: [\"80:80\"]\n";
    let (st, v) = sandbox(
        &s,
        &t,
        compose,
        json!([{"name": "web", "computerPort": 80}]),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let port = v["data"]["networkMappings"][0]["serverPort"]
        .as_u64()
        .unwrap() as u16;
    let (st, v) = json(
        s.get(&format!("/api/v1/instance/{id}/wait?status=1&timeout=60"))
            .bearer_auth(&t),
    );
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["reason"], "INSTANCE_STATE");
    assert_eq!(v["metadata"]["status"], "10");
    let (_, i) = json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    assert_eq!(i["data"]["status"], 10);
    assert!(
        i["data"]["statusReason"]
            .as_str()
            .unwrap()
            .contains("stratus-test/not-there:1.0"),
        "{i}"
    );
    assert_eq!(i["data"]["networkMappings"], json!([]));
    let (_, b) = json(s.get("/api/v1/balance").bearer_auth(&t));
    assert_eq!(b["data"]["balance"], SPEC1_PRICE.to_string(), "refunded");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port freed");
    let (st, v) = put(&s, &t, &format!("/api/v1/instance/{id}/start"));
    assert_eq!((st, v["reason"].clone()), (409, json!("INSTANCE_STATE")));
}

#[test]
fn network_mappings_are_managed_and_limited() {
    let s = compute_server()
        .env("STRATUS_COMPUTE__MAX_MAPPINGS_PER_INSTANCE", "3")
        .start();
    let t = funded(&s, "13100000008", 1);
    let compose = "services:
  web:
    image: stratus-test/busybox:latest
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\", \"8080:80\"]
";
    let (_, v) = sandbox(&s, &t, compose, json!([{"name": "a", "computerPort": 80}]));
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let first = v["data"]["networkMappings"][0]["serverPort"]
        .as_u64()
        .unwrap();
    let (st, v) =
        json(s.post("/api/v1/network-mappings").bearer_auth(&t).json(
            &json!({"name": "b", "protocol": "TCP", "computerId": id, "computerPort": 8080}),
        ));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"], v["networkMapping"], "both shapes");
    let m = &v["data"];
    assert_eq!(
        m["serverPort"].as_u64().unwrap(),
        first + 1,
        "lowest free port"
    );
    assert_eq!(m["instanceId"], id.as_str());
    assert_eq!(m["computerPort"], 8080);
    let mid = m["id"].as_str().unwrap().to_string();
    wait(&s, &t, &id, 1);
    assert_eq!(
        http_get(first as u16 + 1).as_deref(),
        Some("hello from stratus-test\n")
    );
    // Renamed.
    let (st, v) = json(
        s.put(&format!("/api/v1/network-mappings/{mid}"))
            .bearer_auth(&t)
            .json(&json!({"name": "renamed"})),
    );
    assert_eq!((st, v["data"]["name"].clone()), (200, json!("renamed")));
    // The gateway's per-mapping series are in /metrics while the mapping exists.
    let series = format!("stratus_mapping_bytes_total{{mapping=\"{mid}\",direction=\"out\"}}");
    assert!(s.metrics().contains(&series), "{}", s.metrics());
    // Listing, paged, as the original.
    let (_, l) = json(
        s.get(&format!(
            "/api/v1/network-mappings/page?page=1&size=1&instanceId={id}"
        ))
        .bearer_auth(&t),
    );
    assert_eq!(l["data"]["total"], 2);
    assert_eq!(l["data"]["list"].as_array().unwrap().len(), 1);
    assert_eq!(
        (l["data"]["page"].clone(), l["data"]["size"].clone()),
        (json!(1), json!(1))
    );
    // The limit.
    let add = || {
        json(
            s.post("/api/v1/network-mappings")
                .bearer_auth(&t)
                .json(&json!({"name": "c", "computerId": id, "computerPort": 80})),
        )
    };
    assert_eq!(add().0, 200);
    let (st, v) = add();
    assert_eq!(
        (st, v["reason"].clone()),
        (409, json!("INSTANCE_STATE")),
        "{v}"
    );
    // A port the compose file does not publish.
    let (st, v) = json(
        s.post("/api/v1/network-mappings")
            .bearer_auth(&t)
            .json(&json!({"name": "d", "computerId": id, "computerPort": 22})),
    );
    assert_eq!(
        (st, v["metadata"]["field"].clone()),
        (400, json!("networkMapping.computerPort"))
    );
    // Delete frees the port.
    let (st, _) = json(
        s.delete(&format!("/api/v1/network-mappings/{mid}"))
            .bearer_auth(&t),
    );
    assert_eq!(st, 200);
    assert_eq!(http_get(first as u16 + 1), None);
    std::net::TcpListener::bind(("127.0.0.1", first as u16 + 1)).expect("port freed");
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    wait(&s, &t, &id, 7);
    // The series of deleted mappings are gone from /metrics.
    let metrics = s.metrics();
    assert!(!metrics.contains(&mid), "{metrics}");
}

#[test]
fn waiting_times_out_with_408() {
    let s = compute_server().start();
    let t = funded(&s, "13100000009", 1);
    let (_, v) = sandbox(&s, &t, WEB, json!([]));
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    wait(&s, &t, &id, 1);
    let (st, v) = json(
        s.get(&format!("/api/v1/instance/{id}/wait?status=4&timeout=0.5"))
            .bearer_auth(&t),
    );
    assert_eq!(
        (st, v["reason"].clone(), v["metadata"]["status"].clone()),
        (408, json!("WAIT_TIMEOUT"), json!("1"))
    );
    let (st, _) = json(
        s.get(&format!("/api/v1/instance/{id}/wait?status=42"))
            .bearer_auth(&t),
    );
    assert_eq!(st, 400);
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    wait(&s, &t, &id, 7);
}

#[test]
fn after_a_restart_of_stratus_the_page_is_served_through_the_same_port() {
    let mut s = compute_server().start();
    let t = funded(&s, "13100000010", 1);
    let (_, v) = sandbox(&s, &t, WEB, json!([{"name": "web", "computerPort": 80}]));
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let port = v["data"]["networkMappings"][0]["serverPort"]
        .as_u64()
        .unwrap() as u16;
    wait(&s, &t, &id, 1);
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    s.restart();
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    let (_, i) = json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    assert_eq!(i["data"]["status"], 1);
    // Killed while stopped: it comes back stopped, and start serves again.
    put(&s, &t, &format!("/api/v1/instance/{id}/stop"));
    wait(&s, &t, &id, 4);
    s.restart();
    assert_eq!(http_get(port), None);
    put(&s, &t, &format!("/api/v1/instance/{id}/start"));
    wait(&s, &t, &id, 1);
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    wait(&s, &t, &id, 7);
}

#[test]
fn sandbox_cli() {
    let s = compute_server().start();
    funded(&s, "13100000011", 1);
    let dir = tempfile::tempdir().unwrap();
    let compose = dir.path().join("docker-compose.yml");
    std::fs::write(&compose, WEB).unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(BIN);
        c.env("STRATUS_CLIENT_DIR", dir.path()).args(args);
        let out = match stdin {
            Some(i) => crate::harness::run_with_stdin(&mut c, i),
            None => c.output().unwrap(),
        };
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert!(
        cli(
            &[
                "login",
                "--server",
                &s.url,
                "--username",
                "13100000011",
                "--password-stdin"
            ],
            Some("password-123\n")
        )
        .0
    );
    let (ok, out) = cli(
        &[
            "sandbox",
            "create",
            "-f",
            compose.to_str().unwrap(),
            "--spec",
            "1",
            "--duration",
            "1",
            "--map",
            "web=80",
        ],
        None,
    );
    assert!(ok, "{out}");
    let id = out
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .unwrap()
        .to_string();
    let port: u16 = out
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {out}"));
    let (ok, out) = cli(&["sandbox", "wait", &id, "--status", "1"], None);
    assert!(ok, "{out}");
    assert_eq!(http_get(port).as_deref(), Some("hello from stratus-test\n"));
    let (ok, out) = cli(&["sandbox", "ls"], None);
    assert!(ok && out.contains(&id) && out.contains("running"), "{out}");
    let (ok, out) = cli(&["sandbox", "show", &id], None);
    assert!(ok && out.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert!(cli(&["sandbox", "stop", &id], None).0);
    assert!(cli(&["sandbox", "wait", &id, "--status", "4"], None).0);
    assert!(cli(&["sandbox", "start", &id], None).0);
    assert!(cli(&["sandbox", "wait", &id, "--status", "1"], None).0);
    assert!(cli(&["sandbox", "rm", &id], None).0);
    assert!(cli(&["sandbox", "wait", &id, "--status", "7"], None).0);
}
