//! Authentication across nodes (issue 11, "no per-process truth"): two `stratus serve` nodes on
//! one PostgreSQL database with one token key. A nonce issued by one node logs in on the other,
//! once; a logout on one node is refused by the other within a second; a login lockout earned
//! through one node holds on the other. Skipped (saying so) without PostgreSQL, unless
//! `STRATUS_REQUIRE_PEERS` is set (then the harness fails).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::json as j;

use crate::harness::*;

/// A blocking client whose connections come from `from` (a 127.0.0.0/8 address).
fn client_from(from: &str) -> Client {
    Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn two_nodes() -> Option<Cluster> {
    Cluster::start(2, |_, b| {
        b.env("STRATUS_COMPUTE__RUNTIME", "none")
            .env("STRATUS_AUTH__LOCKOUT_AFTER_FAILURES", "3")
            .env("STRATUS_AUTH__LOCKOUT_MAX_SECS", "60")
    })
}

#[test]
fn a_nonce_from_node_a_logs_in_on_node_b_once() {
    let Some(c) = two_nodes() else { return };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let nonce = a.get("/getnonce").send().unwrap().text().unwrap();
    assert!(is_nonce(&nonce), "{nonce}");
    let addr = eth_address(KEY_A);
    let sig = eth_sign(KEY_A, &addr, &nonce, "memo.io");
    let body =
        j!({"address": addr, "nonce": nonce, "domain": "memo.io", "signature": sig["sig01"]});
    let (st, v) = json(b.post("/login").json(&body));
    assert_eq!(st, 200, "node B refused node A's nonce: {v}");
    let access = v["access token"].as_str().unwrap().to_string();
    // The session works on both nodes.
    for n in [a, b] {
        let (st, me) = json(n.get("/api/v1/user").header("Authorization", &access));
        assert_eq!(st, 200, "{me}");
        assert_eq!(me["data"]["walletAddress"], addr.as_str());
    }
    // A replay is refused on either node.
    for n in [a, b] {
        let (st, v) = json(n.post("/login").json(&body));
        assert_eq!(st, 401, "replayed nonce accepted: {v}");
        assert!(v.to_string().contains("wrong nonce"), "{v}");
    }
    // A nonce first presented on A for wallet A (with a bad signature) is bound to wallet A:
    // node B refuses wallet B's valid signature over it, and still takes wallet A's.
    let nonce = b.get("/getnonce").send().unwrap().text().unwrap();
    let other = eth_address(KEY_B);
    let bad = eth_sign(KEY_B, &addr, &nonce, "memo.io");
    let (st, v) = json(a.post("/login").json(
        &j!({"address": addr, "nonce": nonce, "domain": "memo.io", "signature": bad["sig01"]}),
    ));
    assert_eq!(st, 401, "{v}");
    assert!(v.to_string().contains("wrong address"), "{v}");
    let sig_b = eth_sign(KEY_B, &other, &nonce, "memo.io");
    let (st, v) = json(b.post("/login").json(
        &j!({"address": other, "nonce": nonce, "domain": "memo.io", "signature": sig_b["sig01"]}),
    ));
    assert_eq!(
        st, 401,
        "a nonce bound to another address was accepted: {v}"
    );
    assert!(v.to_string().contains("wrong nonce"), "{v}");
    let sig = eth_sign(KEY_A, &addr, &nonce, "memo.io");
    let (st, v) = json(b.post("/login").json(
        &j!({"address": addr, "nonce": nonce, "domain": "memo.io", "signature": sig["sig01"]}),
    ));
    assert_eq!(st, 200, "{v}");
    // A nonce made with another token key is unknown.
    let forged = "0".repeat(64);
    let sig = eth_sign(KEY_A, &addr, &forged, "memo.io");
    let (st, v) = json(b.post("/login").json(
        &j!({"address": addr, "nonce": forged, "domain": "memo.io", "signature": sig["sig01"]}),
    ));
    assert_eq!(st, 401);
    assert!(v.to_string().contains("wrong nonce"), "{v}");
}

#[test]
fn a_logout_on_node_a_is_refused_on_node_b_within_a_second() {
    let Some(c) = two_nodes() else { return };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let token = a.user_token("multinode-logout");
    let (st, _) = json(b.get("/api/v1/user").bearer_auth(&token));
    assert_eq!(st, 200, "node B knows the session before the logout");
    let (st, v) = json(a.post("/api/v1/user/logout").bearer_auth(&token));
    assert_eq!(st, 200, "{v}");
    let logged_out = Instant::now();
    let refused_after = loop {
        let (st, _) = json(b.get("/api/v1/user").bearer_auth(&token));
        if st == 401 {
            break logged_out.elapsed();
        }
        assert_eq!(st, 200);
        assert!(
            logged_out.elapsed() < Duration::from_secs(3),
            "node B still accepts the token 3 s after the logout on node A"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        refused_after < Duration::from_secs(1),
        "node B refused the token only after {refused_after:?}"
    );
    // And it stays refused on both (node A at once).
    for n in [a, b] {
        let (st, _) = json(n.get("/api/v1/user").bearer_auth(&token));
        assert_eq!(st, 401);
    }

    // A password change on A ends the account's earlier tokens on B within a second too.
    let token = a.login("multinode-logout", "password-123");
    let (st, _) = json(b.get("/api/v1/user").bearer_auth(&token));
    assert_eq!(st, 200);
    let (st, v) = json(
        a.put("/api/v1/user/password")
            .bearer_auth(&token)
            .json(&j!({"oldPassword": "password-123", "newPassword": "password-456"})),
    );
    assert_eq!(st, 200, "{v}");
    let changed = Instant::now();
    loop {
        let (st, _) = json(b.get("/api/v1/user").bearer_auth(&token));
        if st == 401 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "node B accepts a token 1 s after the password change on node A"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_lockout_earned_on_node_a_holds_on_node_b() {
    let Some(c) = two_nodes() else { return };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.user_token("multinode-lockout");
    let attacker = "127.0.0.2";
    let login = |n: &Server, from: &str, password: &str| {
        json(
            client_from(from)
                .post(format!("{}/api/v1/user/loginWithClient", n.url))
                .json(&j!({"username": "multinode-lockout", "password": password})),
        )
    };
    // Three failures through A lock the attacker's address for 1 s, the next ones for 2 s, 4 s.
    for _ in 0..3 {
        let (st, v) = login(a, attacker, "guess");
        assert_eq!(st, 400, "{v}");
    }
    let (st, _) = login(b, attacker, "guess");
    assert_eq!(st, 429, "node B ignored the lock earned on node A");
    for wait_ms in [1_100, 2_100] {
        std::thread::sleep(Duration::from_millis(wait_ms));
        let (st, v) = login(a, attacker, "guess");
        assert_eq!(st, 400, "{v}");
    }
    // Now locked for 4 s: node B refuses even the right password from that address.
    let r = client_from(attacker)
        .post(format!("{}/api/v1/user/loginWithClient", b.url))
        .json(&j!({"username": "multinode-lockout", "password": "password-123"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait = retry_after(&r);
    assert!((3..=4).contains(&wait), "retry-after {wait}");
    // The owner's address is not locked, on either node.
    for n in [a, b] {
        let (st, v) = login(n, "127.0.0.1", "password-123");
        assert_eq!(st, 200, "the owner was locked out: {v}");
    }
}

#[test]
fn a_per_account_budget_spent_on_node_a_is_spent_on_node_b() {
    // Three tokens at once per account, then one a minute: one budget for the deployment.
    let Some(c) = Cluster::start(2, |_, b| {
        b.env("STRATUS_COMPUTE__RUNTIME", "none")
            .env("STRATUS_LIMITS__TOKENS_PER_ACCOUNT__PER_MINUTE", "1")
            .env("STRATUS_LIMITS__TOKENS_PER_ACCOUNT__BURST", "3")
    }) else {
        return;
    };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    // A wallet login request for `key` through `n`, on a nonce of `n`'s.
    let login = |n: &Server, key: &str| {
        let nonce = n.get("/getnonce").send().unwrap().text().unwrap();
        let addr = eth_address(key);
        let sig = eth_sign(key, &addr, &nonce, "memo.io");
        n.post("/login").json(
            &j!({"address": addr, "nonce": nonce, "domain": "memo.io", "signature": sig["sig01"]}),
        )
    };
    for n in [a, b, a] {
        let (st, v) = json(login(n, KEY_B));
        assert_eq!(st, 200, "{v}");
    }
    // The fourth login, through either node, finds the budget spent.
    for n in [b, a] {
        let r = login(n, KEY_B).send().unwrap();
        assert_eq!(
            r.status(),
            429,
            "{} gave a token past the shared budget",
            n.url
        );
        let wait = retry_after(&r);
        assert!((1..=60).contains(&wait), "retry-after {wait}");
    }
    // Another account's budget is its own.
    let (st, v) = json(login(b, KEY_A));
    assert_eq!(st, 200, "{v}");
}
