//! MEMO wallet login: `/getnonce`, `/login`, `/fresh`, with signatures made by eth-account.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{eth_address, eth_sign, is_nonce, json, Server, KEY_A, KEY_B};

fn payload(token: &str) -> String {
    String::from_utf8(
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Asserts a wrapped MEMO authentication failure and returns the fresh nonce.
fn assert_wrapped(
    status: u16,
    v: &Value,
    expect_status: u16,
    code: &str,
    description: &str,
) -> String {
    assert_eq!(status, expect_status, "{v}");
    assert_eq!(
        v["Error"],
        json!({"Code": code, "Description": description, "HTTPStatusCode": expect_status}),
        "{v}"
    );
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "only Nonce and Error: {v}");
    let nonce = v["Nonce"].as_str().unwrap().to_string();
    assert!(is_nonce(&nonce), "{nonce}");
    nonce
}

fn login(s: &Server, body: Value) -> (u16, Value) {
    json(s.post("/login").json(&body))
}

fn nonce(s: &Server) -> String {
    s.get("/getnonce").send().unwrap().text().unwrap()
}

#[test]
fn getnonce_is_64_lowercase_hex_as_text() {
    let s = Server::start();
    let r = s.get("/getnonce").send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let a = r.text().unwrap();
    assert!(is_nonce(&a), "{a:?}");
    assert_ne!(a, nonce(&s), "random");
}

#[test]
fn wallet_login_tokens_match_the_document_and_work_everywhere() {
    let s = Server::start();
    let (addr, access, fresh) = s.wallet_login(KEY_A);
    // Header and claim order byte-compatible with the document's tokens.
    assert!(access.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    let p = payload(&access);
    assert!(
        p.starts_with("{\"type\":1,\"aud\":\"memo.io\",\"exp\":"),
        "{p}"
    );
    let claims: Value = serde_json::from_str(&p).unwrap();
    let keys: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 6);
    assert!(
        p.contains(&format!(",\"iss\":\"memo.io\",\"sub\":\"{addr}\"}}")),
        "{p}"
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    let fc: Value = serde_json::from_str(&payload(&fresh)).unwrap();
    assert_eq!(fc["type"], 2);
    assert_eq!(
        fc["exp"].as_i64().unwrap() - fc["iat"].as_i64().unwrap(),
        7 * 24 * 3600
    );

    // The access token works on other dialects, sent bare as in the screenshots.
    let (st, me) = json(s.get("/api/v1/user").header("Authorization", &access));
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["data"]["walletAddress"], addr.as_str());

    // /fresh with the bare fresh token gives a new access token.
    let (st, v) = json(s.get("/fresh").header("Authorization", &fresh));
    assert_eq!(st, 200, "{v}");
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1);
    let renewed = v["access token"].as_str().unwrap();
    let (st, _) = json(
        s.get("/api/v1/user")
            .header("Authorization", format!("Bearer {renewed}")),
    );
    assert_eq!(st, 200);

    // The same wallet logs into the same account again.
    let (_, again, _) = s.wallet_login(KEY_A);
    let (_, me2) = json(s.get("/api/v1/user").header("Authorization", &again));
    assert_eq!(me2["data"]["id"], me["data"]["id"]);
}

#[test]
fn v27_lowercase_address_and_text_content_type_are_accepted() {
    let s = Server::start();
    let addr = eth_address(KEY_A).to_lowercase();
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr, &n, "memo.io");
    // Postman "raw / Text" as in the document's screenshot.
    let r = s
        .post("/login")
        .header("Content-Type", "text/plain")
        .body(
            json!({"address": addr, "nonce": n, "domain": "memo.io", "signature": sig["sig27"]})
                .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let p: Value = serde_json::from_str(&payload(v["access token"].as_str().unwrap())).unwrap();
    assert_eq!(
        p["sub"],
        eth_address(KEY_A),
        "the token carries the EIP-55 form"
    );
}

#[test]
fn login_attacks_are_refused_with_exact_bodies() {
    let s = Server::start();
    let addr_a = eth_address(KEY_A);
    let addr_b = eth_address(KEY_B);

    // Replayed nonce.
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr_a, &n, "memo.io");
    let body =
        json!({"address": addr_a, "nonce": n, "domain": "memo.io", "signature": sig["sig01"]});
    assert_eq!(login(&s, body.clone()).0, 200);
    let (st, v) = login(&s, body);
    let fresh_nonce = assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong nonce)",
    );

    // The nonce handed back with the error is valid for the next attempt.
    let sig = eth_sign(KEY_A, &addr_a, &fresh_nonce, "memo.io");
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": fresh_nonce, "domain": "memo.io", "signature": sig["sig01"]}),
    );
    assert_eq!(st, 200, "{v}");

    // Unknown nonce.
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": "ab".repeat(32), "domain": "memo.io", "signature": sig["sig01"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong nonce)",
    );

    // A nonce first tried by A cannot be used by B, even with B's valid signature.
    let n = nonce(&s);
    let bad = eth_sign(KEY_B, &addr_a, &n, "memo.io");
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": n, "domain": "memo.io", "signature": bad["sig01"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong address)",
    );
    let sig_b = eth_sign(KEY_B, &addr_b, &n, "memo.io");
    let (st, v) = login(
        &s,
        json!({"address": addr_b, "nonce": n, "domain": "memo.io", "signature": sig_b["sig01"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong nonce)",
    );

    // Wrong domain (signed over the wrong domain too).
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr_a, &n, "evil.io");
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": n, "domain": "evil.io", "signature": sig["sig01"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong domain)",
    );

    // High-S twin of a valid signature.
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr_a, &n, "memo.io");
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": n, "domain": "memo.io", "signature": sig["high_s"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong signature)",
    );

    // Malformed hex, missing 0x, truncated, over-long.
    let good = sig["sig01"].as_str().unwrap().to_string();
    for bad in [
        format!("0x{}zz", &good[2..good.len() - 2]),
        good[2..].to_string(),
        good[..good.len() - 2].to_string(),
        format!("{good}00"),
        "0x".to_string(),
    ] {
        let (st, v) = login(
            &s,
            json!({"address": addr_a, "nonce": n, "domain": "memo.io", "signature": bad}),
        );
        assert_wrapped(
            st,
            &v,
            401,
            "Authentication",
            "Authentication Failed (Got wrong signature)",
        );
    }
    // v outside {0,1,27,28}.
    let mut v5 = good.clone();
    v5.replace_range(v5.len() - 2.., "05");
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": n, "domain": "memo.io", "signature": v5}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong signature)",
    );

    // Malformed address.
    let (st, v) = login(
        &s,
        json!({"address": "0x1234", "nonce": n, "domain": "memo.io", "signature": good}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong address)",
    );

    // Empty parameter.
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": n, "domain": "memo.io"}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (There is an empty parameter)",
    );

    // The nonce survived the failed attempts of its own address: the real signature still works.
    let (st, v) = login(
        &s,
        json!({"address": addr_a, "nonce": n, "domain": "memo.io", "signature": good}),
    );
    assert_eq!(st, 200, "{v}");

    // No body at all: the document's empty parameter.
    let (st, v) = json(s.post("/login"));
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (There is an empty parameter)",
    );
    // Form fields (what `curl -d a=…&b=…` sends) are read like the JSON object.
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr_a, &n, "memo.io");
    let (st, v) = json(s.post("/login").form(&[
        ("address", addr_a.as_str()),
        ("nonce", n.as_str()),
        ("domain", "memo.io"),
        ("signature", sig["sig01"].as_str().unwrap()),
    ]));
    assert_eq!(st, 200, "{v}");
    assert!(v["access token"].is_string());

    // Malformed JSON.
    let r = s.post("/login").body("{not json").send().unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert_eq!(st, 400);
    assert_eq!(v["Error"]["Code"], "InvalidArgument");
    assert_eq!(v["Error"]["HTTPStatusCode"], 400);
    assert!(v["Error"]["Description"]
        .as_str()
        .unwrap()
        .starts_with("Invalid Argument (request body is not valid JSON"));
    assert!(is_nonce(v["Nonce"].as_str().unwrap()));
}

#[test]
fn expired_nonce_is_refused() {
    let s = Server::builder()
        .env("STRATUS_AUTH__NONCE_TTL", "1")
        .start();
    let addr = eth_address(KEY_A);
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr, &n, "memo.io");
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let (st, v) = login(
        &s,
        json!({"address": addr, "nonce": n, "domain": "memo.io", "signature": sig["sig01"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong nonce)",
    );
}

#[test]
fn configured_domain_is_the_one_checked_and_put_in_tokens() {
    let s = Server::builder()
        .env("STRATUS_AUTH__DOMAIN", "example.org")
        .start();
    let addr = eth_address(KEY_A);
    let n = nonce(&s);
    let sig = eth_sign(KEY_A, &addr, &n, "memo.io");
    let (st, v) = login(
        &s,
        json!({"address": addr, "nonce": n, "domain": "memo.io", "signature": sig["sig01"]}),
    );
    assert_wrapped(
        st,
        &v,
        401,
        "Authentication",
        "Authentication Failed (Got wrong domain)",
    );
    let sig = eth_sign(KEY_A, &addr, &n, "example.org");
    let (st, v) = login(
        &s,
        json!({"address": addr, "nonce": n, "domain": "example.org", "signature": sig["sig01"]}),
    );
    assert_eq!(st, 200, "{v}");
    let p: Value = serde_json::from_str(&payload(v["access token"].as_str().unwrap())).unwrap();
    assert_eq!(p["aud"], "example.org");
    assert_eq!(p["iss"], "example.org");
}

#[test]
fn fresh_refuses_everything_but_a_fresh_token() {
    let s = Server::start();
    let (_, access, _) = s.wallet_login(KEY_A);
    for auth in [Some(access.as_str()), Some("garbage"), Some("a.b.c"), None] {
        let mut rb = s.get("/fresh");
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        let r = rb.send().unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.text().unwrap(), "Illegal fresh token");
    }
}

#[test]
fn nonce_issuance_is_rate_limited_per_ip() {
    let s = Server::builder()
        .env("STRATUS_LIMITS__NONCES_PER_IP__PER_MINUTE", "60")
        .env("STRATUS_LIMITS__NONCES_PER_IP__BURST", "3")
        .start();
    for _ in 0..3 {
        assert_eq!(s.get("/getnonce").send().unwrap().status(), 200);
    }
    let r = s.get("/getnonce").send().unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().unwrap();
    assert_eq!(v["Code"], "TooManyRequests");
    assert_eq!(v["HTTPStatusCode"], 429);
}
