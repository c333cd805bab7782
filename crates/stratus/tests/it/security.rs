//! Shared-host safety of the HTTP surface (issue 9): slow and idle clients, refusals that reach
//! plain HTTP/1.1 clients, lockout that cannot be turned against the owner, bounded
//! unauthenticated work, token families, private operator metrics and files, and the wire
//! details of the file list. Each test reproduces the attack against the real binary and asserts
//! that it fails.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json as j, Value};

use crate::harness::*;

/// A TCP connection to `to` from the local address `from` (any 127.0.0.0/8 address is local).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    sock.into()
}

/// A blocking client whose connections come from `from` and are never reused.
fn client_from(from: &str) -> Client {
    Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Reads until the peer closes (or resets) the connection; panics if it stays open `within`.
/// Returns what was read.
fn read_until_closed(c: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server kept the connection open for {within:?}")
            }
            // A reset closes it too.
            Err(_) => return out,
        }
    }
}

/// One HTTP/1.1 response read from a connection: (status, lower-case headers, body).
fn read_response(c: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = c.read(&mut byte).expect("response head");
        assert!(n == 1, "connection closed before a response: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn healthz_from(s: &Server, from: &str) -> Value {
    let r = client_from(from)
        .get(format!("{}/healthz", s.url))
        .send()
        .expect("/healthz answers");
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

#[test]
fn half_sent_requests_cannot_starve_healthz_and_are_closed_by_the_header_timeout() {
    let s = Server::builder()
        .nofile(64)
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_SERVER__HEADER_READ_TIMEOUT_SECS", "3")
        .start();
    // 60 slowloris connections, half from the address the health check comes from.
    let mut slow = Vec::new();
    for i in 0..60 {
        let from = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
        let mut c = connect_from(from, s.addr);
        // Some connections may already be gone (given way): that is what is wanted.
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: stratus\r\nX-Slow: 1");
        slow.push(c);
    }
    for from in ["127.0.0.1", "127.0.0.3", "127.0.0.1"] {
        assert_eq!(healthz_from(&s, from), j!({"status": "ok"}));
    }
    // Each half-sent connection is closed by the server (the header timeout is 3 s).
    for mut c in slow {
        let got = read_until_closed(&mut c, Duration::from_secs(15));
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 503"),
            "a half-sent request got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(healthz_from(&s, "127.0.0.1"), j!({"status": "ok"}));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_SERVER__IDLE_TIMEOUT_SECS", "2")
        .start();
    let mut c = connect_from("127.0.0.1", s.addr);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: stratus\r\n\r\n")
        .unwrap();
    let (status, headers, _) = read_response(&mut c);
    assert_eq!(status, 200);
    assert_ne!(header(&headers, "connection"), Some("close"));
    // A second request on the same connection still works right away.
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: stratus\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).0, 200);
    assert!(read_until_closed(&mut c, Duration::from_secs(12)).is_empty());
}

#[test]
fn a_stalled_request_body_fails_after_the_body_timeout_and_the_connection_closes() {
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_SERVER__BODY_READ_TIMEOUT_SECS", "2")
        .start();
    let token = s.user_token("13000000001");
    for (path, auth) in [
        ("/api/v1/user/loginWithClient", String::new()),
        ("/mefs/", format!("Authorization: {token}\r\n")),
    ] {
        let mut c = connect_from("127.0.0.1", s.addr);
        let ctype = if path == "/mefs/" {
            "multipart/form-data; boundary=XyZ"
        } else {
            "application/json"
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: stratus\r\n{auth}Content-Type: {ctype}\r\n\
             Content-Length: 100000\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
        )
        .unwrap();
        // …and nothing more: the server gives up on the body and closes.
        let (status, headers, _) = read_response(&mut c);
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_eq!(header(&headers, "connection"), Some("close"), "{path}");
        read_until_closed(&mut c, Duration::from_secs(10));
    }
    // Nothing was stored.
    let (st, v) = json(s.get("/mefs/listobjects").header("Authorization", &token));
    assert_eq!(st, 200);
    assert_eq!(v["Object"], j!([]));
}

/// Sends a request with a body of `len` bytes, writing all of it before reading anything (as
/// plain HTTP/1.1 clients do), and returns the response.
fn send_all_then_read(s: &Server, head: &str, len: usize) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut c = connect_from("127.0.0.1", s.addr);
    let head = format!("{head}Content-Length: {len}\r\n\r\n");
    c.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        c.write_all(&chunk[..n])
            .expect("the server read the refused body instead of resetting the connection");
        left -= n;
    }
    let r = read_response(&mut c);
    read_until_closed(&mut c, Duration::from_secs(15));
    r
}

#[test]
fn a_request_refused_before_its_body_is_read_is_answered_and_closed_gracefully() {
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    let token = s.user_token("13000000002");
    // 401: no token on an upload of 8 MiB.
    let (status, headers, body) = send_all_then_read(
        &s,
        "POST /mefs/ HTTP/1.1\r\nHost: stratus\r\nContent-Type: multipart/form-data; boundary=b\r\n",
        8 << 20,
    );
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["Error"],
        j!({"Code": "Authentication", "Description": "Authentication Failed (Token is Null)", "HTTPStatusCode": 401})
    );
    assert!(is_nonce(v["Nonce"].as_str().unwrap()));
    // 518: a target that does not exist.
    let (status, headers, body) = send_all_then_read(
        &s,
        &format!(
            "POST /nosuch/ HTTP/1.1\r\nHost: stratus\r\nAuthorization: {token}\r\n\
             Content-Type: multipart/form-data; boundary=b\r\n"
        ),
        4 << 20,
    );
    assert_eq!(status, 518);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Code"], "Storage");
    // 413: a JSON body larger than the server reads.
    let (status, headers, body) = send_all_then_read(
        &s,
        "POST /api/v1/user/loginWithClient HTTP/1.1\r\nHost: stratus\r\nContent-Type: application/json\r\n",
        3 << 20,
    );
    assert_eq!(status, 413);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 413);
}

#[test]
fn default_limits_serve_256_concurrent_clients_from_one_address() {
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    let mut conns: Vec<TcpStream> = (0..256)
        .map(|_| connect_from("127.0.0.1", s.addr))
        .collect();
    for c in &mut conns {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: stratus\r\n\r\n")
            .unwrap();
    }
    for c in &mut conns {
        assert_eq!(read_response(c).0, 200);
    }
    // All 256 are still open and usable.
    for c in &mut conns {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: stratus\r\n\r\n")
            .unwrap();
    }
    for c in &mut conns {
        assert_eq!(read_response(c).0, 200);
    }
}

fn login_from(s: &Server, from: &str, user: &str, password: &str) -> (u16, Value) {
    json(
        client_from(from)
            .post(format!("{}/api/v1/user/loginWithClient", s.url))
            .json(&j!({"username": user, "password": password})),
    )
}

#[test]
fn an_attacker_timing_failures_to_each_lock_end_cannot_lock_the_owner_out() {
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_AUTH__LOCKOUT_AFTER_FAILURES", "3")
        .env("STRATUS_AUTH__LOCKOUT_MAX_SECS", "4")
        .start();
    s.add_user("13000000003", "owner-password-1");
    let attacker = "127.0.0.2";
    let owner = "127.0.0.1";
    // The attacker fails until locked, then fails again each time the lock ends.
    let mut locked = 0;
    let mut failed = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let r = client_from(attacker)
            .post(format!("{}/api/v1/user/loginWithClient", s.url))
            .json(&j!({"username": "13000000003", "password": "guess"}))
            .send()
            .unwrap();
        match r.status().as_u16() {
            // ComputeShare answers a wrong password with 400 PASSWORD_ERROR.
            400 => failed += 1,
            429 => {
                locked += 1;
                let wait = retry_after(&r);
                std::thread::sleep(Duration::from_millis(wait.min(4) * 1000 + 20));
            }
            other => panic!("attacker got {other}: {}", r.text().unwrap()),
        }
    }
    assert!(
        failed >= 4 && locked >= 2,
        "failed {failed}, locked {locked}"
    );
    // Meanwhile the owner logs in from their own address, again and again.
    let mut token = String::new();
    for _ in 0..3 {
        let (st, v) = login_from(&s, owner, "13000000003", "owner-password-1");
        assert_eq!(st, 200, "the owner was locked out: {v}");
        token = v["data"]["token"].as_str().unwrap().to_string();
        // The attacker is still locked or failing.
        let (st, _) = login_from(&s, attacker, "13000000003", "guess");
        assert!(st == 400 || st == 429);
    }
    // And changes the password with the valid token, lock or no lock.
    let (st, v) = json(
        client_from(owner)
            .put(format!("{}/api/v1/user/password", s.url))
            .header("Authorization", format!("Bearer {token}"))
            .json(&j!({"oldPassword": "owner-password-1", "newPassword": "owner-password-2"})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, _) = login_from(&s, owner, "13000000003", "owner-password-2");
    assert_eq!(st, 200);
    // A new address, while the account is under attack, is slowed down but not refused.
    let (st, v) = login_from(&s, "127.0.0.4", "13000000003", "owner-password-2");
    assert_eq!(st, 200, "{v}");
}

#[test]
fn a_flood_of_bad_token_requests_cannot_evict_a_pending_login_nonce() {
    let s = Server::builder()
        .no_limits()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_AUTH__MAX_NONCES", "1000")
        .start();
    let nonce = s.get("/getnonce").send().unwrap().text().unwrap();
    let c = client();
    for _ in 0..1100 {
        let (st, v) = json(
            c.get(format!("{}/mefs/listobjects", s.url))
                .header("Authorization", "Bearer not-a-token"),
        );
        assert_eq!(st, 401);
        assert!(is_nonce(v["Nonce"].as_str().unwrap()), "{v}");
    }
    let addr = eth_address(KEY_A);
    let sig = eth_sign(KEY_A, &addr, &nonce, "memo.io");
    let (st, v) = json(s.post("/login").json(&j!({
        "address": addr, "nonce": nonce, "domain": "memo.io", "signature": sig["sig01"],
    })));
    assert_eq!(st, 200, "the victim's nonce was evicted: {v}");
}

fn twocloud_token(s: &Server, basic_user: &str, basic_pass: &str) -> (u16, Value) {
    json(
        s.post("/twocloud/tokens")
            .basic_auth(basic_user, Some(basic_pass)),
    )
}

fn cs_user(s: &Server, token: &str) -> u16 {
    s.get("/api/v1/user")
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn renewed_twocloud_tokens_die_with_their_parent() {
    let s = Server::builder()
        .no_limits()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    s.add_user("13000000005", "password-555");
    let (st, v) = twocloud_token(&s, "13000000005", "password-555");
    assert_eq!(st, 200, "{v}");
    let parent = v["token"].as_str().unwrap().to_string();
    let (_, v) = twocloud_token(&s, &parent, "");
    let child = v["token"].as_str().unwrap().to_string();
    let (_, v) = twocloud_token(&s, &child, "");
    let grandchild = v["token"].as_str().unwrap().to_string();
    // Another login is another family.
    let (_, v) = twocloud_token(&s, "13000000005", "password-555");
    let other = v["token"].as_str().unwrap().to_string();
    for t in [&parent, &child, &grandchild, &other] {
        assert_eq!(cs_user(&s, t), 200);
    }
    let r = s
        .delete("/twocloud/tokens")
        .header("Authorization", format!("Bearer {parent}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    for t in [&parent, &child, &grandchild] {
        assert_eq!(cs_user(&s, t), 401);
        let (st, v) = twocloud_token(&s, t, "");
        assert_eq!(st, 401, "a dead token renewed itself: {v}");
    }
    assert_eq!(cs_user(&s, &other), 200);
}

#[test]
fn a_fresh_token_logout_ends_its_session_and_a_wallet_account_can_revoke_everything() {
    let s = Server::builder()
        .no_limits()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    let (_, access, fresh) = s.wallet_login(KEY_A);
    let refreshed = |fresh: &str| -> String {
        let (st, v) = json(s.get("/fresh").header("Authorization", fresh));
        assert_eq!(st, 200, "{v}");
        v["access token"].as_str().unwrap().to_string()
    };
    let minted = refreshed(&fresh);
    for t in [&access, &minted] {
        assert_eq!(cs_user(&s, t), 200);
    }
    // Logout with the fresh token (MEMO): the fresh token and every access token of the session.
    let (st, v) = json(s.post("/logout").header("Authorization", &fresh));
    assert_eq!(st, 200, "{v}");
    for t in [&access, &minted] {
        assert_eq!(cs_user(&s, t), 401);
    }
    let r = s
        .get("/fresh")
        .header("Authorization", &fresh)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().unwrap(), "Illegal fresh token");
    // The ComputeShare logout takes a refresh token too.
    let (_, _, fresh2) = s.wallet_login(KEY_A);
    let minted2 = refreshed(&fresh2);
    let (st, v) = json(
        s.post("/api/v1/user/logout")
            .header("Authorization", format!("Bearer {fresh2}")),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(cs_user(&s, &minted2), 401);
    // A wallet-only account revokes every token it has, however obtained.
    let (_, a1, f1) = s.wallet_login(KEY_A);
    let (_, a2, _) = s.wallet_login(KEY_A);
    let a3 = refreshed(&f1);
    let (st, v) = json(
        s.post("/api/v1/user/logout?all=true")
            .header("Authorization", format!("Bearer {a1}")),
    );
    assert_eq!(st, 200, "{v}");
    for t in [&a1, &a2, &a3] {
        assert_eq!(cs_user(&s, t), 401);
    }
    assert_eq!(
        s.get("/fresh")
            .header("Authorization", &f1)
            .send()
            .unwrap()
            .status(),
        401
    );
    // New logins work.
    let (_, a4, _) = s.wallet_login(KEY_A);
    assert_eq!(cs_user(&s, &a4), 200);
}

#[test]
fn metrics_are_for_the_operator_only() {
    let op_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_OPERATOR__LISTEN", &format!("127.0.0.1:{op_port}"))
        .start();
    let r = s.get("/metrics").send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let user_token = s.user_token("13000000006");
    let r = s
        .get("/metrics")
        .header("Authorization", format!("Bearer {user_token}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a user's token is not the operator's");
    let op = std::fs::read_to_string(s.data_dir.join("secrets/operator.token")).unwrap();
    let r = s
        .get("/metrics")
        .header("Authorization", format!("Bearer {}", op.trim()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("stratus_http_requests_total"));
    // The operator listener needs no token.
    let r = client()
        .get(format!("http://127.0.0.1:{op_port}/metrics"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn the_data_directory_and_what_it_holds_are_private() {
    let s = Server::builder()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    let token = s.user_token("13000000007");
    put(&s, &token, "mefs", "a.txt", b"private bytes".to_vec());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data_dir), 0o700);
    assert_eq!(mode(&s.data_dir.join("secrets")), 0o700);
    assert_eq!(mode(&s.data_dir.join("secrets/jwt.key")), 0o600);
    if !s.uses_pg() {
        assert_eq!(mode(&s.data_dir.join("stratus.db")), 0o600);
    }
    // Every file the server wrote (blobs, staging, the database's journal) is its owner's alone.
    let mut seen = 0;
    let mut dirs = vec![s.data_dir.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.ends_with("server.log") {
                continue; // written by the test harness, not the server
            }
            assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
            seen += 1;
            if e.file_type().unwrap().is_dir() {
                dirs.push(p);
            }
        }
    }
    assert!(seen > 5 && !blob_files(&s.data_dir).is_empty());
}

fn listing(s: &Server, token: &str, query: &str) -> Value {
    let (st, v) = json(
        s.get(&format!("/mefs/listobjects{query}"))
            .header("Authorization", token),
    );
    assert_eq!(st, 200, "{v}");
    v
}

fn download_name(s: &Server, cid: &str, token: Option<&str>) -> (String, String) {
    let mut rb = s.get(&format!("/mefs/{cid}"));
    if let Some(t) = token {
        rb = rb.header("Authorization", t);
    }
    let r = rb.send().unwrap();
    assert_eq!(r.status(), 200);
    let h = |k: &str| r.headers()[k].to_str().unwrap().to_string();
    (h("content-disposition"), h("content-type"))
}

#[test]
fn the_file_list_shows_every_name_and_names_stay_with_their_owner() {
    let s = Server::builder()
        .no_limits()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    let alice = s.user_token("13000000008");
    let bob = s.user_token("13000000009");
    let bytes = data(5000, 9);
    let cid = put(&s, &alice, "mefs", "holiday.png", bytes.clone());
    assert_eq!(put(&s, &alice, "mefs", "copy.png", bytes.clone()), cid);
    // The same name and bytes again add nothing.
    assert_eq!(put(&s, &alice, "mefs", "holiday.png", bytes.clone()), cid);
    let v = listing(&s, &alice, "");
    let names: Vec<&str> = v["Object"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["holiday.png", "copy.png"]);
    let (_, st) = json(s.get("/mefs/storage").header("Authorization", &alice));
    assert_eq!(st["Files"], "2");
    assert_eq!(st["Used"], "10000");
    // One owner, two names: anonymous downloads show neither, only the CID with the shared
    // extension; the owner sees the first name.
    let (disp, ctype) = download_name(&s, &cid, None);
    assert_eq!(disp, format!("attachment; filename=\"{cid}.png\""));
    assert_eq!(ctype, "image/png");
    assert_eq!(
        download_name(&s, &cid, Some(&alice)).0,
        "attachment; filename=\"holiday.png\""
    );
    // Deleting one name keeps the other.
    let (st, _) = json(
        s.delete(&format!("/mefs/{cid}?name=copy.png"))
            .header("Authorization", &alice),
    );
    assert_eq!(st, 200);
    assert_eq!(
        listing(&s, &alice, "")["Object"].as_array().unwrap().len(),
        1
    );
    // With one name left, anonymous downloads show it (the documented behaviour)…
    assert_eq!(
        download_name(&s, &cid, None).0,
        "attachment; filename=\"holiday.png\""
    );
    // …until another account stores the bytes under another name: then Bob sees his, Alice
    // hers, and nobody else either.
    put(&s, &bob, "mefs", "bobs-secret-plan.txt", bytes.clone());
    assert_eq!(
        download_name(&s, &cid, Some(&bob)).0,
        "attachment; filename=\"bobs-secret-plan.txt\""
    );
    assert_eq!(
        download_name(&s, &cid, Some(&alice)).0,
        "attachment; filename=\"holiday.png\""
    );
    let (disp, ctype) = download_name(&s, &cid, None);
    assert_eq!(disp, format!("attachment; filename=\"{cid}\""));
    assert_eq!(ctype, "application/octet-stream");
    let carol = s.user_token("13000000010");
    assert_eq!(
        download_name(&s, &cid, Some(&carol)).0,
        format!("attachment; filename=\"{cid}\"")
    );
}

#[test]
fn expired_and_wrong_type_tokens_are_the_documented_invalid_token() {
    let s = Server::builder()
        .no_limits()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .env("STRATUS_AUTH__ACCESS_TOKEN_TTL", "1")
        .start();
    let (_, access, fresh) = s.wallet_login(KEY_B);
    for (token, why) in [
        (fresh.as_str(), "a fresh token"),
        (access.as_str(), "expired"),
    ] {
        if why == "expired" {
            std::thread::sleep(Duration::from_millis(2100));
        }
        let (st, v) = json(s.get("/mefs/listobjects").header("Authorization", token));
        assert_eq!(st, 401, "{why}");
        assert_eq!(
            v["Error"],
            j!({"Code": "Authentication", "Description": "Authentication Failed (Invalid token)", "HTTPStatusCode": 401}),
            "{why}"
        );
    }
}

#[test]
fn listobjects_pages_by_1000_by_default() {
    let s = Server::builder()
        .no_limits()
        .env("STRATUS_COMPUTE__RUNTIME", "none")
        .start();
    let token = s.user_token("13000000011");
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let (s, token) = (&s, &token);
            sc.spawn(move || {
                for i in (t..1001).step_by(8) {
                    put(s, token, "mefs", &format!("f{i:04}"), data(16, i + 1));
                }
            });
        }
    });
    let first = listing(&s, &token, "");
    assert_eq!(first["Object"].as_array().unwrap().len(), 1000);
    let next = first["NextAfter"]
        .as_str()
        .expect("NextAfter on a full page");
    let second = listing(&s, &token, &format!("?after={next}"));
    assert_eq!(second["Object"].as_array().unwrap().len(), 1);
    assert!(second.get("NextAfter").is_none());
    // S3 spellings of the page size.
    let v = listing(&s, &token, "?max-keys=10");
    assert_eq!(v["Object"].as_array().unwrap().len(), 10);
}
