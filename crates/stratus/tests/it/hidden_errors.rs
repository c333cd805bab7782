//! Internal failures answer a generic text with a request id, in every dialect, and never the
//! cause: the cause (here SQLite's "database is locked", or a blob store's own message) goes to
//! the server's log under the same id. The failures are real: another process holds the
//! database's write lock (as a backup tool or a stray `sqlite3` shell would), or a blob file is
//! cut short behind the server's back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::harness::{self, json, put, Server};

/// Why the lock tests do not run on PostgreSQL: the failure they cause is SQLite's own (a
/// PostgreSQL server has no write lock another client can hold on a whole database).
const SQLITE_LOCK: &str = "the failure is another process holding SQLite's write lock";

/// Another process holding SQLite's write lock on the server's database until dropped. The
/// server's writers wait for it (`busy_timeout`, 10 s) and then fail.
struct WriteLock {
    child: Child,
}

impl WriteLock {
    fn take(s: &Server) -> WriteLock {
        let db = s.data_dir.join("stratus.db");
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n\
                 c.execute('ROLLBACK')\n",
            ])
            .arg(&db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "the lock holder did not start");
        WriteLock { child }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        // End of input: the holder rolls back and exits.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The request id a generic answer names: `… (request id <32 hex>)` or `…; request id <id>)`.
fn id_in(text: &str) -> String {
    let at = text
        .find("request id ")
        .unwrap_or_else(|| panic!("no request id in {text:?}"))
        + "request id ".len();
    let id: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    assert_eq!(id.len(), 32, "{text:?}");
    id
}

/// Checks that `body` shows none of the cause, that `header` (the response's `X-Request-Id`)
/// is the id it names, and that the server logged the cause under that id.
fn hidden(s: &Server, body: &Value, text: &str, header: Option<&str>, cause: &str) -> String {
    let id = id_in(text);
    assert_eq!(header, Some(id.as_str()), "X-Request-Id");
    let raw = body.to_string().to_lowercase();
    let data_dir = s.data_dir.display().to_string().to_lowercase();
    for leak in [
        cause,
        "sqlite",
        "database",
        "blob store",
        "os error",
        &data_dir,
    ] {
        assert!(
            !raw.contains(&leak.to_lowercase()),
            "{leak:?} leaked: {body}"
        );
    }
    let logged = |log: &str| {
        log.lines()
            .any(|l| l.contains(&id) && l.to_lowercase().contains(&cause.to_lowercase()))
    };
    let log = s.log_when(logged);
    assert!(logged(&log), "the cause is not logged under {id}:\n{log}");
    id
}

/// Sends, returning (status, X-Request-Id, JSON body).
fn send(rb: reqwest::blocking::RequestBuilder) -> (u16, Option<String>, Value) {
    let r = rb.send().unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text:?}"));
    (status, id, v)
}

#[test]
fn computeshare_internal_errors_are_generic_with_a_request_id() {
    if harness::skip_under_pg(SQLITE_LOCK) {
        return;
    }
    let s = Server::builder().no_limits().start();
    let lock = WriteLock::take(&s);
    let (st, header, v) = send(
        s.post("/api/v1/user/register")
            .json(&serde_json::json!({"username": "13300000001", "password": "password-123"})),
    );
    drop(lock);
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["code"], 500);
    assert_eq!(v["reason"], "INTERNAL_ERROR");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.starts_with("internal error, please try again (request id "),
        "{v}"
    );
    let id = hidden(&s, &v, message, header.as_deref(), "database is locked");
    assert_eq!(v["metadata"], serde_json::json!({"requestId": id}));
    // Success answers carry no request id; the database works again once the lock is gone.
    let r = s
        .post("/api/v1/user/register")
        .json(&serde_json::json!({"username": "13300000001", "password": "password-123"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_none());
}

#[test]
fn twocloud_internal_errors_are_generic_with_a_request_id() {
    if harness::skip_under_pg(SQLITE_LOCK) {
        return;
    }
    let s = Server::builder().no_limits().start();
    let token = s.user_token("13300000002");
    let lock = WriteLock::take(&s);
    // Revoking writes to the database.
    let (st, header, v) = send(s.delete("/twocloud/tokens").bearer_auth(&token));
    drop(lock);
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["code"], 500);
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.starts_with("Internal Server Error (request id "), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    hidden(&s, &v, msg, header.as_deref(), "database is locked");
    // Nothing was revoked: the token still works.
    let r = s
        .delete("/twocloud/tokens")
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[test]
fn memo_internal_errors_are_generic_with_a_request_id() {
    if harness::skip_under_pg(SQLITE_LOCK) {
        return;
    }
    let s = Server::builder().no_limits().start();
    let token = s.user_token("13300000003");
    let lock = WriteLock::take(&s);
    // Storing a file commits its index and record.
    let (st, header, v) = {
        let part =
            reqwest::blocking::multipart::Part::bytes(harness::data(5000, 3)).file_name("a.bin");
        send(
            s.post("/mefs/")
                .header("Authorization", &token)
                .multipart(reqwest::blocking::multipart::Form::new().part("file", part)),
        )
    };
    drop(lock);
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["Code"], "InternalError");
    assert_eq!(v["HTTPStatusCode"], 500);
    let d = v["Description"].as_str().unwrap();
    assert!(
        d.starts_with("We encountered an internal error, please try again. (request id "),
        "{v}"
    );
    hidden(&s, &v, d, header.as_deref(), "database is locked");
    // Nothing half-stored: the same upload succeeds now and the list has it once.
    let cid = put(&s, &token, "mefs", "a.bin", harness::data(5000, 3));
    let (st, list) = json(s.get("/mefs/listobjects").header("Authorization", &token));
    assert_eq!(st, 200);
    assert_eq!(list["Object"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["Object"][0]["Cid"], cid.as_str());
}

#[test]
fn memo_unavailable_storage_names_the_capability_not_the_cause() {
    let s = Server::builder().no_limits().start();
    let token = s.user_token("13300000004");
    let cid = put(&s, &token, "mefs", "b.bin", harness::data(5000, 4));
    // The blob file is cut short behind the server's back: the store cannot serve it.
    let shard = &cid[cid.len() - 2..];
    let blob = s.data_dir.join("blobs").join(shard).join(&cid);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap_or_else(|e| panic!("{}: {e}", blob.display()))
        .set_len(10)
        .unwrap();
    let (st, header, v) = send(s.get(&format!("/mefs/{cid}")));
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["Code"], "ServiceUnavailable");
    let d = v["Description"].as_str().unwrap();
    assert!(
        d.starts_with("Service Unavailable (the storage backend is unavailable; request id "),
        "{v}"
    );
    hidden(&s, &v, d, header.as_deref(), "blob has 10 bytes");
}
