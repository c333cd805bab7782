//! Sandboxes on a shared host, end to end through the real binary and engine, tried as an
//! attacker would: images that would make the engine contact an address of the attacker's
//! choosing, look-alikes of registry images made on the shared engine, compose limits that would
//! be charged and fail later, containers' capabilities and cgroup namespace, the host firewall
//! (a sandbox reaches no address of the host; the server's table follows instances and leaves
//! with a graceful stop), and the refusal to run sandboxes without it.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{b64, compute_server, docker, funded, json, Server, TEST_IMAGE};

fn sandbox(s: &Server, t: &str, compose: &str, mappings: Value) -> (u16, Value) {
    json(s.post("/api/v1/sandbox").bearer_auth(t).json(&json!({
        "instance": {"specId": 1, "imageId": 1, "duration": 1, "name": "sec",
                     "dockerCompose": b64(compose)},
        "networkMapping": mappings
    })))
}

fn balance(s: &Server, t: &str) -> String {
    let (_, b) = json(s.get("/api/v1/balance").bearer_auth(t));
    b["data"]["balance"].as_str().unwrap().to_string()
}

/// The 400 of a compose file refused at `field` with `message`.
fn refused(message: &str) -> Value {
    json!({"code": 400, "reason": "INVALID_ARGUMENT",
           "message": format!("instance.dockerCompose: {message}"),
           "metadata": {"field": "instance.dockerCompose"}})
}

/// Containers, networks and volumes on the engine that belong to this server.
fn engine_objects(s: &Server) -> String {
    let owner = std::fs::read_to_string(s.data_dir.join("server.id")).unwrap();
    let filter = format!("label=io.stratus.owner={}", owner.trim());
    let mut all = String::new();
    for what in [
        &["ps", "-aq", "--filter", &filter][..],
        &["network", "ls", "-q", "--filter", &filter],
        &["volume", "ls", "-q", "--filter", &filter],
    ] {
        all += docker(what).trim();
    }
    all
}

fn wait(s: &Server, t: &str, id: &str, status: i64) -> (u16, Value) {
    json(
        s.get(&format!(
            "/api/v1/instance/{id}/wait?status={status}&timeout=60"
        ))
        .bearer_auth(t),
    )
}

/// The hard limit of `what` (a `/proc/<pid>/limits` label) of this process, which the server
/// inherits.
fn hard_limit(what: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = text.lines().find(|l| l.starts_with(what)).unwrap();
    line[what.len()..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn images_that_name_an_address_or_another_registry_are_refused_without_a_connection() {
    let s = compute_server().start();
    let t = funded(&s, "13200000001", 1);
    let before = balance(&s, &t);
    // Something listens where the attacker points the engine.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ip_literal =
        "a registry named by an IP address is not allowed; images come from docker.io only";
    let cases = [
        (format!("127.0.0.1:{port}/probe:1"), ip_literal.to_string()),
        (format!("127.0.0.1:{port}/probe"), ip_literal.to_string()),
        (format!("localhost:{port}/probe"), "a registry on this host is not allowed; images come from docker.io only".to_string()),
        (format!("10.0.0.1:{port}/probe"), ip_literal.to_string()),
        ("192.168.1.10/team/app".to_string(), ip_literal.to_string()),
        ("169.254.169.254/latest/meta-data".to_string(), ip_literal.to_string()),
        (format!("'[::1]:{port}/probe'"), ip_literal.to_string()),
        ("ghcr.io/someone/app:1".to_string(), "registry ghcr.io is not allowed; images come from docker.io only".to_string()),
        (format!("registry.example.com:{port}/app"), format!("registry registry.example.com:{port} is not allowed; images come from docker.io only")),
    ];
    for (image, why) in cases {
        let compose = format!("services:\n  web:\n    image: {image}\n");
        let (st, v) = sandbox(&s, &t, &compose, json!([]));
        let written = image.trim_matches('\'');
        assert_eq!(
            (st, v),
            (
                400,
                refused(&format!(
                    "services.web.image: image \"{written}\" cannot run here: {why}"
                ))
            ),
            "{image}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        listener.accept().is_err(),
        "the engine never connected to 127.0.0.1:{port}"
    );
    assert_eq!(balance(&s, &t), before, "nothing charged");
    let (_, list) = json(s.get("/api/v1/instance").bearer_auth(&t));
    assert_eq!(list["data"], json!([]));
    assert_eq!(engine_objects(&s), "", "nothing created on the engine");
}

/// Removes image tags when dropped.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = Command::new("docker").args(["rmi", t]).output();
        }
    }
}

#[test]
fn a_look_alike_of_a_registry_image_never_runs() {
    let s = compute_server().start();
    let t = funded(&s, "13200000002", 3);
    // Another tenant of the engine commits an image and tags it as Docker Hub's nginx (and as
    // another tag of the listed local image).
    let maker = format!("stratus-lookalike-{}", std::process::id());
    let out = Command::new("docker")
        .args([
            "run",
            "--name",
            &maker,
            TEST_IMAGE,
            "sh",
            "-c",
            "echo pwned > /www/index.html",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let committed = docker(&["commit", &maker]).trim().to_string();
    let _ = Command::new("docker").args(["rm", "-f", &maker]).output();
    assert!(committed.starts_with("sha256:"), "{committed}");
    let _tags = Tags(vec![
        "nginx:latest".into(),
        "stratus-test/busybox:lookalike".into(),
        committed.clone(),
    ]);
    for tag in ["nginx:latest", "stratus-test/busybox:lookalike"] {
        docker(&["tag", &committed, tag]);
    }
    let before = balance(&s, &t);
    for (image, policy, reason) in [
        (
            "nginx",
            "",
            "image nginx could not be pulled from its registry",
        ),
        (
            "nginx:latest",
            "    pull_policy: never\n",
            "image nginx:latest is not available on this host (pull_policy: never)",
        ),
        (
            "stratus-test/busybox:lookalike",
            "",
            "image stratus-test/busybox:lookalike could not be pulled from its registry",
        ),
    ] {
        let compose = format!(
            "services:\n  web:\n    image: {image}\n{policy}    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    ports: [\"80:80\"]\n"
        );
        let (st, v) = sandbox(
            &s,
            &t,
            &compose,
            json!([{"name": "web", "computerPort": 80}]),
        );
        assert_eq!(st, 200, "accepted (the registry is allowed): {v}");
        let id = v["data"]["instanceId"].as_str().unwrap().to_string();
        let (st, v) = wait(&s, &t, &id, 1);
        assert_eq!(st, 409, "{v}");
        let (_, i) = json(s.get(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
        assert_eq!(i["data"]["status"], 10, "{i}");
        assert_eq!(i["data"]["statusReason"], reason, "{i}");
        assert_eq!(balance(&s, &t), before, "refunded");
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
    }
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &format!("ancestor={committed}")]).trim(),
        "",
        "no container ever ran the look-alike"
    );
}

#[test]
fn compose_limits_are_refused_before_any_charge() {
    let s = compute_server().start();
    let t = funded(&s, "13200000003", 1);
    let before = balance(&s, &t);
    let nofile = hard_limit("Max open files");
    let nproc = hard_limit("Max processes");
    let memlock = hard_limit("Max locked memory");
    let volumes: String = (0..400).map(|i| format!("  v{i}:\n")).collect();
    let svc = |extra: &str| format!("services:\n  web:\n    image: {TEST_IMAGE}\n{extra}");
    let nofile_max = nofile.min(65_536);
    let cases = [
        (
            format!("{}volumes:\n{volumes}", svc("")),
            "volumes: the app declares 400 volumes, at most 16 are allowed".to_string(),
        ),
        (
            svc("    ulimits: {memlock: -1}\n"),
            format!("services.web.ulimits.memlock: memlock limit out of range (at most {memlock} on this host; -1, unlimited, only where the host is unlimited)"),
        ),
        (
            svc("    ulimits: {nproc: -1}\n"),
            format!("services.web.ulimits.nproc: nproc limit out of range (at most {nproc} on this host; -1, unlimited, only where the host is unlimited)"),
        ),
        (
            svc(&format!("    ulimits: {{nofile: {{soft: 1024, hard: {}}}}}\n", nofile_max + 1)),
            format!("services.web.ulimits.nofile: nofile limit out of range (at most {nofile_max} on this host; -1, unlimited, only where the host is unlimited)"),
        ),
        (
            svc("    ulimits: {nofile: {soft: 2048, hard: 1024}}\n"),
            "services.web.ulimits.nofile: the soft nofile limit must not exceed the hard one".to_string(),
        ),
    ];
    for (compose, message) in cases {
        let (st, v) = sandbox(&s, &t, &compose, json!([]));
        assert_eq!((st, v), (400, refused(&message)));
    }
    assert_eq!(balance(&s, &t), before, "nothing charged");
    let (_, list) = json(s.get("/api/v1/instance").bearer_auth(&t));
    assert_eq!(list["data"], json!([]));
    assert_eq!(engine_objects(&s), "", "nothing created on the engine");
}

/// Runs `sh -c cmd` in a container; (exit code, output).
fn exec(container: &str, cmd: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", cmd])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The names of the server's firewall tables (`inet stratus_guard_<server id>_<n>`).
fn guard_tables(s: &Server) -> Vec<String> {
    crate::harness::nft_tables("inet", &format!("stratus_guard_{}_", s.server_id()))
}

/// The server's live firewall table (the newest), as `nft` lists it (empty when there is none).
fn guard_table(s: &Server) -> String {
    guard_tables(s)
        .last()
        .map(|t| table_text(t))
        .unwrap_or_default()
}

fn table_text(name: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bridge of an instance's network and the host's address on it, as the kernel sees them
/// (the route to the service's container), whatever the engine names or lists.
fn bridge_of(id: &str, service: &str) -> (String, String) {
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &format!("stratus-{id}-{service}"),
    ]);
    let out = Command::new("ip")
        .args(["-4", "-o", "route", "get", ip.trim()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = |key: &str| {
        out.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {key} in {out:?}"))
    };
    (after("dev"), after("src"))
}

#[test]
fn sandboxes_run_behind_the_firewall_with_few_capabilities() {
    behind_the_firewall("auto", "13200000004");
}

#[test]
fn the_firewall_holds_with_user_space_forwarding_too() {
    behind_the_firewall("userspace", "13200000006");
}

/// GET / through a public port on loopback: the body, or None.
fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// A sandbox served through the gateway in `forwarding` mode: reduced capabilities, a private
/// cgroup namespace, its bridge under the server's firewall, no way to any address of the host,
/// the mapping still served (replies to the gateway pass); the bridge leaves the table with the
/// instance, and the table leaves with a graceful stop.
fn behind_the_firewall(forwarding: &str, user: &str) {
    let mut s = compute_server()
        .env("STRATUS_COMPUTE__GATEWAY_FORWARDING", forwarding)
        .start();
    let t = funded(&s, user, 1);
    let compose = format!(
        "services:
  web:
    image: {TEST_IMAGE}
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\"]
  helper:
    image: {TEST_IMAGE}
    command: [\"sleep\", \"3600\"]
    cap_drop: [KILL]
"
    );
    let (st, v) = sandbox(
        &s,
        &t,
        &compose,
        json!([{"name": "web", "computerPort": 80}]),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    let (st, v) = wait(&s, &t, &id, 1);
    assert_eq!(st, 200, "{v}");
    let port = v["data"]["networkMappings"][0]["serverPort"]
        .as_u64()
        .unwrap() as u16;
    let mut served = None;
    for _ in 0..50 {
        served = http_get(port);
        if served.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served.as_deref(), Some("hello from stratus-test\n"));

    // Every container: all capabilities dropped but a web app's, a private cgroup namespace.
    for (service, caps) in [
        (
            "web",
            json!([
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "NET_BIND_SERVICE",
                "SETGID",
                "SETUID"
            ]),
        ),
        (
            "helper",
            json!([
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "NET_BIND_SERVICE",
                "SETGID",
                "SETUID"
            ]),
        ),
    ] {
        let inspect: Value =
            serde_json::from_str(&docker(&["inspect", &format!("stratus-{id}-{service}")]))
                .unwrap();
        let host = &inspect[0]["HostConfig"];
        assert_eq!(host["CapDrop"], json!(["ALL"]), "{service}");
        assert_eq!(host["CapAdd"], caps, "{service}");
        assert_eq!(host["CgroupnsMode"], "private", "{service}");
        assert_eq!(host["Privileged"], false);
    }
    let web = format!("stratus-{id}-web");
    let (code, out) = exec(&web, "rawprobe eth0 02:00:00:00:00:01 127.0.0.1 9 1");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("socket: Operation not permitted"), "{out}");

    // The server's table guards the instance's bridge.
    let (bridge, gateway) = bridge_of(&id, "web");
    assert!(
        guard_table(&s).contains(&format!("\"{bridge}\"")),
        "{}",
        guard_table(&s)
    );

    // A service on every address of the host: the host reaches it, the sandbox does not, on
    // any of the host's addresses (its bridge's gateway included).
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let addrs = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let mut targets: Vec<String> = addrs
        .lines()
        .filter(|l| {
            let dev = l.split_whitespace().nth(1).unwrap_or("");
            !dev.starts_with("br-") && !dev.starts_with("veth")
        })
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .map(str::to_string)
        })
        .collect();
    if !targets.contains(&gateway) {
        targets.push(gateway);
    }
    assert!(!targets.is_empty());
    for ip in &targets {
        let c = std::net::TcpStream::connect((ip.as_str(), host_port)).expect("the host connects");
        let mut accepted = false;
        for _ in 0..250 {
            if listener.accept().is_ok() {
                accepted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(accepted, "the host reaches its own service at {ip}");
        drop(c);
        let (code, out) = exec(
            &web,
            &format!("timeout 8 nc -w 4 {ip} {host_port} </dev/null && echo CONNECTED"),
        );
        assert!(
            !out.contains("CONNECTED"),
            "the sandbox reached the host at {ip}: {code} {out}"
        );
        assert!(
            listener.accept().is_err(),
            "no connection from the sandbox to {ip}"
        );
    }

    // Deleting the instance takes its bridge out; a graceful stop removes the table.
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    let (st, _) = wait(&s, &t, &id, 7);
    assert_eq!(st, 200);
    assert!(!guard_table(&s).contains(&format!("\"{bridge}\"")));
    assert!(guard_table(&s).contains("chain forward"), "still guarding");
    assert!(s.terminate().success());
    assert_eq!(
        guard_tables(&s),
        Vec::<String>::new(),
        "the table left with the server"
    );
}

/// A graceful stop while a sandbox runs leaves the sandbox guarded: the table stays, and the
/// restarted server takes the sandbox into its own table, after which the old one goes.
#[test]
fn a_graceful_stop_leaves_running_sandboxes_guarded() {
    let mut s = compute_server().start();
    let t = funded(&s, "13200000009", 1);
    let compose = format!(
        "services:
  web:
    image: {TEST_IMAGE}
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\"]
"
    );
    let (st, v) = sandbox(
        &s,
        &t,
        &compose,
        json!([{"name": "web", "computerPort": 80}]),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["data"]["instanceId"].as_str().unwrap().to_string();
    assert_eq!(wait(&s, &t, &id, 1).0, 200);
    let (bridge, _) = bridge_of(&id, "web");
    let bridge = format!("\"{bridge}\"");
    let first = guard_tables(&s);
    assert_eq!(first.len(), 1, "{first:?}");
    let old = first[0].clone();
    assert!(table_text(&old).contains(&bridge));
    assert!(s.terminate().success());
    let running = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("stratus-{id}-web"),
    ]);
    assert_eq!(running.trim(), "true", "the sandbox outlives the server");
    let kept = table_text(&old);
    assert!(
        kept.contains(&bridge),
        "still guarded while stratus is down: {kept}"
    );
    assert!(kept.contains("chain forward") && kept.contains("chain input"));
    s.start_again();
    let mut adopted = false;
    for _ in 0..100 {
        let tables = guard_tables(&s);
        if tables.len() == 1 && tables[0] != old && table_text(&tables[0]).contains(&bridge) {
            adopted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(adopted, "tables: {:?}", guard_tables(&s));
    json(s.delete(&format!("/api/v1/instance/{id}")).bearer_auth(&t));
    assert_eq!(wait(&s, &t, &id, 7).0, 200);
    assert!(s.terminate().success());
    assert_eq!(
        guard_tables(&s),
        Vec::<String>::new(),
        "nothing left to guard: the table went"
    );
}

#[test]
fn without_its_firewall_the_server_refuses_sandboxes() {
    let s = compute_server()
        .env("STRATUS_COMPUTE__EGRESS__ALLOW", "[\"not-a-cidr\"]")
        .start();
    let t = funded(&s, "13200000005", 1);
    let before = balance(&s, &t);
    let compose = format!("services:\n  web:\n    image: {TEST_IMAGE}\n");
    let (st, v) = sandbox(&s, &t, &compose, json!([]));
    // The client learns which capability is missing and a request id, never the cause.
    let id = v["metadata"]["requestId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 32, "{v}");
    assert_eq!(
        (st, &v),
        (
            503,
            &json!({"code": 503, "reason": "SERVICE_UNAVAILABLE",
                   "message": format!("sandboxes are unavailable: the host firewall cannot be installed (request id {id})"),
                   "metadata": {"requestId": id}})
        )
    );
    assert_eq!(balance(&s, &t), before);
    let log = s.log_when(|l| {
        l.lines()
            .any(|l| l.contains(&id) && l.contains("\"not-a-cidr\" is not an IPv4 CIDR"))
    });
    assert!(
        log.contains("sandboxes are refused: the host firewall cannot be installed"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("\"not-a-cidr\" is not an IPv4 CIDR")),
        "the cause is logged under {id}: {log}"
    );
}
