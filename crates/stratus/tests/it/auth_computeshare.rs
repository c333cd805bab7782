//! ComputeShare accounts: sign-up, `loginWithClient`, profile, errors, rate limits, slowdown.

use serde_json::{json, Value};

use crate::harness::{json, retry_after, Server};

fn login(s: &Server, u: &str, p: &str) -> (u16, Value) {
    json(
        s.post("/api/v1/user/loginWithClient")
            .json(&json!({"username": u, "password": p})),
    )
}

fn password_error() -> Value {
    json!({"code": 400, "reason": "PASSWORD_ERROR", "message": "wrong username or password", "metadata": {}})
}

#[test]
fn login_with_client_exactly_as_documented() {
    let s = Server::start();
    s.add_user("1300000000", "somePassword");
    let r = s
        .post("/api/v1/user/loginWithClient")
        .header("Content-Type", "application/json")
        .body(r#"{"username": "1300000000", "password": "somePassword"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["code", "data", "message"]);
    assert_eq!(v["code"], 200);
    assert_eq!(v["message"], "success");
    assert_eq!(v["data"].as_object().unwrap().len(), 1);
    let token = v["data"]["token"].as_str().unwrap();
    // Ten years by default.
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        10 * 365 * 24 * 3600
    );
    let (st, me) = json(s.get("/api/v1/user").bearer_auth(token));
    assert_eq!(st, 200);
    assert_eq!(me["data"]["username"], "1300000000");
    assert_eq!(me["data"]["pwdConfig"], true);
    assert_eq!(me["data"]["walletAddress"], "");
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer() {
    let s = Server::start();
    s.add_user("13000000010", "right-password");
    assert_eq!(
        login(&s, "13000000010", "wrong-password"),
        (400, password_error())
    );
    assert_eq!(
        login(&s, "13999999999", "right-password"),
        (400, password_error())
    );
    assert_eq!(login(&s, "", ""), (400, password_error()));
}

#[test]
fn malformed_bodies_get_clear_400s() {
    let s = Server::start();
    for body in ["{", "[]", "\"x\"", "{\"username\": 5}"] {
        let (st, v) = json(s.post("/api/v1/user/loginWithClient").body(body));
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["reason"], "INVALID_ARGUMENT");
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("request body is not valid JSON"));
    }
    let (st, v) = json(s.post("/api/v1/user/loginWithClient"));
    assert_eq!(
        (st, v),
        (
            400,
            json!({"code": 400, "reason": "INVALID_ARGUMENT", "message": "request body is empty", "metadata": {}})
        )
    );
    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let (st, v) = json(s.post("/api/v1/user/loginWithClient").body(huge));
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["reason"], "BODY_TOO_LARGE");
    // Unknown fields are ignored.
    s.add_user("13000000011", "right-password");
    let (st, _) = json(
        s.post("/api/v1/user/loginWithClient")
            .json(&json!({"username": "13000000011", "password": "right-password", "captcha": 1})),
    );
    assert_eq!(st, 200);
}

#[test]
fn register_validates_and_refuses_duplicates() {
    let s = Server::start();
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "13000000012", "password": "long-enough"})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["username"], "13000000012");
    assert_eq!(v["data"]["id"].as_str().unwrap().len(), 36);
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "13000000012", "password": "long-enough"})),
    );
    assert_eq!(
        (st, v),
        (
            409,
            json!({"code": 409, "reason": "CONFLICT", "message": "username 13000000012 is taken", "metadata": {}})
        )
    );
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "13000000013", "password": "short"})),
    );
    assert_eq!(
        (st, v),
        (
            400,
            json!({"code": 400, "reason": "INVALID_ARGUMENT", "message": "password: must be at least 8 characters long", "metadata": {"field": "password"}})
        )
    );
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "a b", "password": "long-enough"})),
    );
    assert_eq!(st, 400);
    assert_eq!(v["metadata"]["field"], "username");
}

#[test]
fn registration_can_be_closed() {
    let s = Server::builder()
        .env("STRATUS_AUTH__REGISTRATION", "false")
        .start();
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "13000000014", "password": "long-enough"})),
    );
    assert_eq!(
        (st, v),
        (
            403,
            json!({"code": 403, "reason": "FORBIDDEN", "message": "registration is closed", "metadata": {}})
        )
    );
}

#[test]
fn password_logins_are_rate_limited_per_ip() {
    let s = Server::builder()
        .env("STRATUS_LIMITS__LOGIN_PER_IP__PER_MINUTE", "6")
        .env("STRATUS_LIMITS__LOGIN_PER_IP__BURST", "3")
        .start();
    s.add_user("13000000015", "right-password");
    for _ in 0..3 {
        assert_eq!(login(&s, "13000000015", "right-password").0, 200);
    }
    let r = s
        .post("/api/v1/user/loginWithClient")
        .json(&json!({"username": "13000000015", "password": "right-password"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry = retry_after(&r);
    assert!((1..=10).contains(&retry), "{retry}");
    let v: Value = r.json().unwrap();
    assert_eq!(v["code"], 429);
    assert_eq!(v["reason"], "TOO_MANY_REQUESTS");
}

#[test]
fn failed_logins_slow_the_account_down() {
    let s = Server::builder()
        .env("STRATUS_LIMITS__LOGIN_PER_IP__BURST", "1000")
        .env("STRATUS_LIMITS__LOGIN_PER_ACCOUNT__BURST", "1000")
        .env("STRATUS_AUTH__LOCKOUT_AFTER_FAILURES", "3")
        .start();
    s.add_user("13000000016", "right-password");
    s.add_user("13000000017", "right-password");
    for _ in 0..3 {
        assert_eq!(login(&s, "13000000016", "guess").0, 400);
    }
    // Locked now: even the right password waits.
    let (st, v) = login(&s, "13000000016", "right-password");
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["reason"], "TOO_MANY_REQUESTS");
    // Other accounts are not affected.
    assert_eq!(login(&s, "13000000017", "right-password").0, 200);
    // After the lock (1 s for the first), the right password works and clears the record.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(login(&s, "13000000016", "right-password").0, 200);
}

#[test]
fn health_metrics_and_unknown_routes() {
    let s = Server::start();
    let (st, v) = json(s.get("/healthz"));
    assert_eq!((st, v), (200, json!({"status": "ok"})));
    let _ = s.get("/getnonce").send().unwrap();
    assert_eq!(s.get("/metrics").send().unwrap().status(), 401);
    let m = s.metrics();
    assert!(m.contains("stratus_http_requests_total"), "{m}");
    assert!(m.contains("route=\"/getnonce\""), "{m}");
    let (st, v) = json(s.get("/api/v1/nothing"));
    assert_eq!(
        (st, v),
        (
            404,
            json!({"code": 404, "reason": "NOT_FOUND", "message": "no such route", "metadata": {}})
        )
    );
    let (st, v) = json(s.get("/api/v1/user/loginWithClient"));
    assert_eq!(st, 405);
    assert_eq!(v["reason"], "METHOD_NOT_ALLOWED");
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let mut s = Server::start();
    let st = s.terminate();
    assert!(st.success(), "{st:?}");
    let log = s.log_when(|l| l.contains("stratus stopped"));
    assert!(log.contains("stratus stopped"), "{log}");
}
