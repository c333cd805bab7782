//! Sandbox isolation on a shared host, tried as an attacker would, against the real engine and
//! real nftables: no raw sockets and a private cgroup namespace in a sandbox; a hand-built frame
//! for the host's loopback (sent by a helper that does have `NET_RAW` on the instance network)
//! reaches nothing; egress reaches the "internet" and the instance's own services only — not
//! link-local addresses, not the host's own addresses, not private ranges, not other
//! instances; and the firewall's rules leave with the instance and with the runtime.
//!
//! The "internet" is a network namespace the test makes (its address is declared public with an
//! allow CIDR); every address a probe targets lives on this machine (a namespace, the host, a
//! bridge). Needs root, `ip`, `nft` and the test image.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use stratus_compute::docker::spec::{container_name, network_name, SANDBOX_CAPABILITIES};
use stratus_compute::{
    resolver_fn, DockerConfig, DockerRuntime, Forwarding, Gateway, GatewayConfig, Runtime,
};
use stratus_config::EgressConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

/// Runs a command; panics with its output when it fails.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A runtime with its own firewall table and egress lists.
async fn guarded_runtime(allow: &[&str], deny: &[&str]) -> Arc<DockerRuntime> {
    runtime().await; // the test image
    let config = DockerConfig {
        firewall: Some(EgressConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }),
        ..DockerConfig::default()
    };
    Arc::new(DockerRuntime::connect(config).await.unwrap())
}

/// An instance with a web server (`web`, port 80) and a second service (`store`, port 8080).
async fn web_and_store(rt: &DockerRuntime, tag: &str) -> (String, Cleanup) {
    let id = unique_id(tag);
    let cleanup = Cleanup(id.clone());
    let yaml = r#"
services:
  web:
    image: stratus-test/busybox:latest
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["80:80"]
  store:
    image: stratus-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /srv && echo from-store > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
    expose: ["8080"]
"#;
    rt.create(&spec(&id, yaml)).await.unwrap();
    rt.start(&id).await.unwrap();
    (id, cleanup)
}

/// Whether `GET /` from inside `container` to `ip:port` is answered with `marker` (within a few
/// seconds; a dropped SYN is a timeout).
async fn reaches(rt: &DockerRuntime, container: &str, ip: &str, port: u16, marker: &str) -> bool {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 8 nc -w 4 {ip} {port}");
    let (_, out) = exec(rt.client(), container, &["sh", "-c", &cmd]).await;
    out.contains(marker)
}

/// A TCP server answering every connection with `marker`; counts its connections.
async fn marker_server(addr: SocketAddr, marker: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(format!("HTTP/1.0 200 OK\r\n\r\n{marker}\n").as_bytes())
                .await;
            let _ = s.shutdown().await;
        }
    });
    (port, count)
}

/// `GET /` from the host.
async fn host_reaches(ip: &str, port: u16, marker: &str) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    matches!(http_get(addr).await, Ok(body) if body.contains(marker))
}

/// The instance network's bridge interface and the host's address on it, as the kernel sees
/// them: the route to the instance's `web` container (no engine's naming or IPAM assumed).
fn bridge_of(id: &str) -> (String, String) {
    let ip = container_ip(id, "web");
    let out = sh("ip", &["-4", "-o", "route", "get", &ip]);
    let word_after = |key: &str| {
        out.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .map(str::to_string)
    };
    let bridge = word_after("dev").expect("a route to the container");
    let host = word_after("src").expect("the host's address towards the container");
    (bridge, host)
}

/// The container's address on its instance network.
fn container_ip(id: &str, service: &str) -> String {
    sh(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &container_name(id, service),
        ],
    )
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_has_no_raw_sockets_and_a_private_cgroup_namespace() {
    let rt = guarded_runtime(&[], &[]).await;
    let (id, _cleanup) = web_and_store(&rt, "caps").await;
    let (bridge, _) = bridge_of(&id);
    let mac = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address")).unwrap();
    for service in ["web", "store"] {
        let name = container_name(&id, service);
        let info = rt.client().inspect_container(&name, None).await.unwrap();
        let hc = info.host_config.unwrap();
        assert_eq!(hc.cap_drop.unwrap_or_default(), ["ALL"]);
        assert_eq!(hc.cap_add.unwrap_or_default(), SANDBOX_CAPABILITIES);
        assert_eq!(
            hc.cgroupns_mode,
            Some(bollard::models::HostConfigCgroupnsModeEnum::PRIVATE)
        );
        // The probe cannot even open its packet socket.
        let (code, out) = exec(
            rt.client(),
            &name,
            &["rawprobe", "eth0", mac.trim(), "127.0.0.1", "9", "1"],
        )
        .await;
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("socket: Operation not permitted"), "{out}");
        // Nor a raw IP socket (what ping -4 without ICMP sockets would use).
        let (_, status) = exec(rt.client(), &name, &["cat", "/proc/self/status"]).await;
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW is not effective: {eff:#x}");
        assert_eq!(
            eff & (1 << 12),
            0,
            "CAP_NET_ADMIN is not effective: {eff:#x}"
        );
        assert_eq!(eff & (1 << 27), 0, "CAP_MKNOD is not effective: {eff:#x}");
        // Its own cgroup namespace: every hierarchy's root is its own group.
        let (_, cgroups) = exec(rt.client(), &name, &["cat", "/proc/self/cgroup"]).await;
        assert!(!cgroups.trim().is_empty());
        for line in cgroups.lines().filter(|l| !l.trim().is_empty()) {
            assert!(line.ends_with(":/"), "cgroup seen from inside: {line}");
        }
    }
    rt.remove(&id).await.unwrap();
    rt.close().await;
}

/// CVE-2020-8558 on a sandbox bridge: with kernel forwarding the bridge has
/// `route_localnet=1`; a helper with `NET_RAW` on the instance network hand-builds a frame to
/// the bridge's MAC for 127.0.0.1. A host listener on 127.0.0.1 never sees it (while it answers
/// the host), and the mapping's loopback clients still work.
#[tokio::test(flavor = "multi_thread")]
async fn raw_frames_to_the_host_loopback_reach_nothing() {
    let rt = guarded_runtime(&[], &[]).await;
    let (id, _cleanup) = web_and_store(&rt, "raw").await;
    let (bridge, _) = bridge_of(&id);
    let mac = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address"))
        .unwrap()
        .trim()
        .to_string();

    // Kernel forwarding to the instance, bound on every address, as a server runs it.
    let gw = Gateway::new(GatewayConfig {
        bind: IpAddr::from([0, 0, 0, 0]),
        forwarding: Forwarding::Kernel,
        ..GatewayConfig::default()
    });
    let target = rt.endpoint(&id, 80).await.unwrap().unwrap();
    let public = gw
        .open_in(
            &id,
            "raw-1",
            0,
            resolver_fn(move || async move { Some(target) }),
        )
        .await
        .unwrap();
    assert_eq!(gw.kernel_routed("raw-1").await, Some(target));
    let localnet =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
            .unwrap();
    assert_eq!(localnet.trim(), "1", "the attack's precondition holds");
    // A DNAT'd loopback client still works.
    let body = http_get_eventually(SocketAddr::from(([127, 0, 0, 1], public.port()))).await;
    assert!(body.contains("hello from stratus-test"), "{body}");

    // A UDP echo service on the host's loopback.
    let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(std::sync::Mutex::new(Vec::<SocketAddr>::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = listener.recv_from(&mut buf).await {
            seen.lock().unwrap().push(from);
            let _ = listener.send_to(&buf[..n], from).await;
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(b"from the host", ("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("the listener answers the host")
        .unwrap();
    assert_eq!(&buf[..n], b"from the host");
    received.lock().unwrap().clear();

    // The attacker: NET_RAW on the instance's network.
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            &network_name(&id),
            "--cap-add",
            "NET_RAW",
            IMAGE,
            "rawprobe",
            "eth0",
            &mac,
            "127.0.0.1",
            &port.to_string(),
            "3",
        ])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("no answer"), "{said}");
    assert!(
        received.lock().unwrap().is_empty(),
        "the host's loopback service got the sandbox's frame: {:?}",
        received.lock().unwrap()
    );
    // A graceful teardown turns route_localnet off again.
    gw.close_all().await;
    let localnet =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
            .unwrap();
    assert_eq!(localnet.trim(), "0");
    rt.remove(&id).await.unwrap();
    rt.close().await;
}

/// An "internet" for the test: a network namespace behind a veth pair, serving HTTP on
/// `public` (declared public by an allow CIDR) and `denied` (in that CIDR, but denied), plus a
/// link-local address routed through it (as a cloud's metadata service is) and a link-local
/// address of the host itself (on its end of the veth pair; this kernel has no dummy
/// interfaces). Removed on drop.
struct Internet {
    ns: String,
    veth: String,
    public: String,
    denied: String,
    routed_link_local: String,
    host_link_local: String,
    subnet: String,
    httpd: Option<Child>,
}

impl Internet {
    fn new() -> Internet {
        let k = std::process::id() % 200 + 20;
        let ns = format!("stratus-inet-{k}");
        let veth = format!("stih{k}");
        // Left by an earlier run that was killed: gone first.
        quietly(&["netns", "del", &ns]);
        quietly(&["link", "del", &veth]);
        let mut inet = Internet {
            public: format!("10.203.{k}.2"),
            denied: format!("10.203.{k}.3"),
            routed_link_local: format!("169.254.{k}.254"),
            host_link_local: format!("169.254.{k}.1"),
            subnet: format!("10.203.{k}.0/24"),
            ns,
            veth,
            httpd: None,
        };
        let peer = format!("stin{k}");
        let ns_name = inet.ns.clone();
        let ns = ns_name.as_str();
        sh("ip", &["netns", "add", ns]);
        sh(
            "ip",
            &[
                "link", "add", &inet.veth, "type", "veth", "peer", "name", &peer,
            ],
        );
        sh("ip", &["link", "set", &peer, "netns", ns]);
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.203.{k}.1/24"),
                "dev",
                &inet.veth,
            ],
        );
        sh("ip", &["link", "set", &inet.veth, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns, "ip"];
            all.extend_from_slice(args);
            sh("ip", &all);
        };
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["link", "set", &peer, "up"]);
        in_ns(&["addr", "add", &format!("{}/24", inet.public), "dev", &peer]);
        in_ns(&["addr", "add", &format!("{}/24", inet.denied), "dev", &peer]);
        in_ns(&[
            "addr",
            "add",
            &format!("{}/32", inet.routed_link_local),
            "dev",
            &peer,
        ]);
        in_ns(&["route", "add", "default", "via", &format!("10.203.{k}.1")]);
        sh(
            "ip",
            &[
                "route",
                "add",
                &format!("{}/32", inet.routed_link_local),
                "via",
                &inet.public,
            ],
        );
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/32", inet.host_link_local),
                "dev",
                &inet.veth,
            ],
        );
        let www = std::env::temp_dir().join(format!("stratus-inet-www-{k}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "the internet\n").unwrap();
        let httpd = Command::new("ip")
            .args([
                "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox (scripts/test.sh installs busybox-static)");
        inet.httpd = Some(httpd);
        inet
    }
}

/// Runs `ip` with `args`, whatever comes of it.
fn quietly(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Internet {
    fn drop(&mut self) {
        if let Some(mut c) = self.httpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["route", "del", &format!("{}/32", self.routed_link_local)])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// The host's own global IPv4 addresses (its interfaces but the test's and loopback).
fn host_addresses(except: &[&str]) -> Vec<String> {
    let out = sh("ip", &["-4", "-o", "addr", "show", "scope", "global"]);
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let dev = w.nth(1)?;
            let addr = w.skip_while(|x| *x != "inet").nth(1)?.split('/').next()?;
            let link_local = addr.starts_with("169.254.");
            (!link_local && !except.iter().any(|e| dev.starts_with(e))).then(|| addr.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_reaches_the_internet_and_its_own_instance_only() {
    let inet = Internet::new();
    let rt = guarded_runtime(&[&inet.subnet], &[&format!("{}/32", inet.denied)]).await;
    let fw_table = rt.firewall().unwrap().table().to_string();
    let (id, cleanup) = web_and_store(&rt, "egress").await;
    let web = container_name(&id, "web");
    let (bridge, bridge_gw) = bridge_of(&id);
    assert!(rt
        .firewall()
        .unwrap()
        .admitted()
        .await
        .unwrap()
        .contains(&bridge));

    // The internet stand-in answers the host, and the sandbox (allowed as public).
    for ip in [&inet.public, &inet.denied, &inet.routed_link_local] {
        let mut up = false;
        for _ in 0..50 {
            if host_reaches(ip, 80, "the internet").await {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "the host reaches {ip}");
    }
    assert!(reaches(&rt, &web, &inet.public, 80, "the internet").await);
    // Denied although inside the allowed range: deny wins.
    assert!(!reaches(&rt, &web, &inet.denied, 80, "the internet").await);
    // Link-local: routed through the internet's router (a cloud's metadata service)…
    assert!(!reaches(&rt, &web, &inet.routed_link_local, 80, "the internet").await);
    // …and on an interface of the host.
    let (ll_port, ll_count) = marker_server(
        SocketAddr::new(inet.host_link_local.parse().unwrap(), 0),
        "link-local",
    )
    .await;
    assert!(host_reaches(&inet.host_link_local, ll_port, "link-local").await);
    let before = ll_count.load(Ordering::SeqCst);
    assert!(!reaches(&rt, &web, &inet.host_link_local, ll_port, "link-local").await);
    assert_eq!(
        ll_count.load(Ordering::SeqCst),
        before,
        "no connection arrived"
    );

    // The host's own addresses: its address on the instance's bridge, on Docker's default
    // bridge, on its uplink…
    let (host_port, host_count) = marker_server(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        "the host",
    )
    .await;
    let mut addresses = host_addresses(&["br-", "veth"]);
    if !addresses.contains(&bridge_gw) {
        addresses.push(bridge_gw.clone());
    }
    assert!(addresses.len() >= 2, "{addresses:?}");
    for ip in &addresses {
        assert!(host_reaches(ip, host_port, "the host").await, "{ip}");
        let before = host_count.load(Ordering::SeqCst);
        assert!(
            !reaches(&rt, &web, ip, host_port, "the host").await,
            "the sandbox reached the host at {ip}"
        );
        assert_eq!(host_count.load(Ordering::SeqCst), before, "{ip}");
    }

    // Its own services, by name; not another instance (which, under a runtime with the
    // default policy, cannot reach the private "internet" either).
    assert!(reaches(&rt, &web, "store", 8080, "from-store").await);
    let other_rt = guarded_runtime(&[], &[]).await;
    let (other, _other_cleanup) = web_and_store(&other_rt, "egress-other").await;
    let other_web = container_name(&other, "web");
    let other_ip = container_ip(&other, "web");
    assert!(host_reaches(&other_ip, 80, "hello from stratus-test").await);
    assert!(!reaches(&rt, &web, &other_ip, 80, "hello from stratus-test").await);
    assert!(
        !reaches(
            &other_rt,
            &other_web,
            &container_ip(&id, "store"),
            8080,
            "from-store"
        )
        .await
    );
    assert!(!reaches(&other_rt, &other_web, &inet.public, 80, "the internet").await);
    assert!(reaches(&other_rt, &other_web, "store", 8080, "from-store").await);

    // The rules leave with the instance, and the table with the runtime.
    rt.remove(&id).await.unwrap();
    drop(cleanup);
    assert!(!rt
        .firewall()
        .unwrap()
        .admitted()
        .await
        .unwrap()
        .contains(&bridge));
    rt.close().await;
    let tables = sh("nft", &["list", "tables", "inet"]);
    assert!(
        !tables.contains(&format!("table inet {fw_table}\n")),
        "{tables}"
    );
    other_rt.remove(&other).await.unwrap();
    other_rt.close().await;
}

/// The runtime refuses to run sandboxes when its firewall cannot be installed, unless the
/// operator turned the firewall off.
#[tokio::test(flavor = "multi_thread")]
async fn no_firewall_no_sandbox() {
    let config = DockerConfig {
        firewall: Some(EgressConfig {
            allow: vec!["fd00::/8".into()],
            deny: vec![],
        }),
        ..DockerConfig::default()
    };
    let err = DockerRuntime::connect(config).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("the sandbox firewall cannot be installed"),
        "{err}"
    );
    assert!(err.to_string().contains("compute.egress.allow"), "{err}");
    // The operator's explicit opt-out (`compute.firewall = false`): no table at all.
    let off = DockerRuntime::connect(DockerConfig {
        firewall: None,
        ..DockerConfig::default()
    })
    .await
    .unwrap();
    assert!(off.firewall().is_none());
}
