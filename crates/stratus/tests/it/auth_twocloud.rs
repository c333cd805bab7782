//! TwoCloud: `POST /twocloud/tokens` with HTTP Basic.

use serde_json::{json, Value};

use crate::harness::{json, Server};

fn assert_401(r: reqwest::blocking::Response, msg: &str) {
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Authentication Required\""
    );
    let v: Value = r.json().unwrap();
    assert_eq!(v, json!({"code": 401, "msg": msg}));
}

#[test]
fn tokens_exactly_as_documented() {
    let s = Server::start();
    s.add_user("alice", "alice-password");
    let r = s
        .post("/twocloud/tokens")
        .basic_auth("alice", Some("alice-password"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2);
    assert_eq!(v["duration"], 86400);
    let token = v["token"].as_str().unwrap();
    let (st, me) = json(s.get("/api/v1/user").bearer_auth(token));
    assert_eq!(st, 200);
    assert_eq!(me["data"]["username"], "alice");

    // The token as the Basic username gives a new token for the same account.
    let r = s
        .post("/twocloud/tokens")
        .basic_auth(token, Some("unused"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let (_, me2) = json(
        s.get("/api/v1/user")
            .bearer_auth(v["token"].as_str().unwrap()),
    );
    assert_eq!(me2["data"]["id"], me["data"]["id"]);

    // Without Basic, the parameters the document's table names are read from the body.
    let r = s
        .post("/twocloud/tokens")
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["duration"], 86400);
    let r = s
        .post("/twocloud/tokens")
        .form(&[("username", "alice"), ("password", "wrong-password")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn failures_are_401_with_www_authenticate() {
    let s = Server::start();
    s.add_user("bob", "bob-password");
    assert_401(
        s.post("/twocloud/tokens")
            .basic_auth("bob", Some("nope"))
            .send()
            .unwrap(),
        "Unauthorized Access: wrong username or password",
    );
    assert_401(
        s.post("/twocloud/tokens")
            .basic_auth("nobody", Some("bob-password"))
            .send()
            .unwrap(),
        "Unauthorized Access: wrong username or password",
    );
    assert_401(
        s.post("/twocloud/tokens").send().unwrap(),
        "Unauthorized Access: HTTP Basic credentials are required",
    );
    assert_401(
        s.post("/twocloud/tokens")
            .header("Authorization", "Basic !!!notbase64")
            .send()
            .unwrap(),
        "Unauthorized Access: malformed Basic credentials",
    );
    assert_401(
        s.post("/twocloud/tokens")
            .header("Authorization", "Bearer x")
            .send()
            .unwrap(),
        "Unauthorized Access: HTTP Basic credentials are required",
    );
    let r = s.get("/twocloud/tokens").send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"code": 405, "msg": "Method Not Allowed"})
    );
}

#[test]
fn lifetime_is_configurable_and_issuance_rate_limited() {
    let s = Server::builder()
        .env("STRATUS_AUTH__TWOCLOUD_TOKEN_TTL", "600")
        .env("STRATUS_LIMITS__LOGIN_PER_IP__BURST", "2")
        .start();
    s.add_user("carol", "carol-password");
    for _ in 0..2 {
        let v: Value = s
            .post("/twocloud/tokens")
            .basic_auth("carol", Some("carol-password"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["duration"], 600);
    }
    let r = s
        .post("/twocloud/tokens")
        .basic_auth("carol", Some("carol-password"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().unwrap();
    assert_eq!(v["code"], 429);
}
