//! Storage when things go wrong under it, through the real binary: an upload whose connection is
//! cut after the closing boundary but before its Content-Length, a data dir on a full tmpfs
//! (blob, staging and database writes), and a blob truncated on disk while it is downloaded.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{blob_files, count_entries, data, json, put, upload, Server, KEY_A, KEY_B};

/// Waits (generously) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's open connections (its `stratus_http_connections` gauge; the request reading
/// it counts as one).
fn open_connections(s: &Server) -> f64 {
    s.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("stratus_http_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn staged_files(s: &Server) -> usize {
    count_entries(&s.data_dir.join("blobs/.staging"))
}

/// The caller's listing and `Used`.
fn listing_and_used(s: &Server, token: &str) -> (Value, String) {
    let (st, l) = json(s.get("/mefs/listobjects").header("Authorization", token));
    assert_eq!(st, 200, "{l}");
    let (st, sp) = json(s.get("/mefs/storage").header("Authorization", token));
    assert_eq!(st, 200, "{sp}");
    (
        l["Object"].clone(),
        sp["Used"].as_str().unwrap().to_string(),
    )
}

#[test]
fn an_upload_cut_after_its_closing_boundary_publishes_nothing() {
    cut_upload_publishes_nothing(&Server::start());
}

fn cut_upload_publishes_nothing(s: &Server) {
    let (_, t, _) = s.wallet_login(KEY_A);
    let bytes = data(3_000_000, 41);
    let head = "--B0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    let tail = "\r\n--B0und--\r\n";
    let sent = head.len() + bytes.len() + tail.len();
    let mut conn = TcpStream::connect(s.addr).unwrap();
    // The whole form, closing delimiter included, under a Content-Length 100 bytes larger.
    write!(
        conn,
        "POST /mefs/ HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nContent-Type: multipart/form-data; boundary=B0und\r\nContent-Length: {}\r\n\r\n{head}",
        sent + 100
    )
    .unwrap();
    conn.write_all(&bytes).unwrap();
    conn.write_all(tail.as_bytes()).unwrap();
    // The server must wait for the rest of the body: no answer while the body is unfinished.
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    match conn.read(&mut buf) {
        Ok(n) => answer.extend_from_slice(&buf[..n]),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "an unfinished body was answered 200: {}",
        String::from_utf8_lossy(&answer)
    );
    // The client goes away without the last 100 bytes.
    conn.shutdown(Shutdown::Both).unwrap();
    drop(conn);
    // Once the server has let the connection go, the upload is over one way or the other.
    wait_for("the cut connection to be released", || {
        open_connections(s) <= 1.0
    });
    wait_for("the staging area to be emptied", || staged_files(s) == 0);
    assert!(blob_files(&s.data_dir).is_empty(), "no blob");
    assert_eq!(count_entries(&s.data_dir.join("tmp")), 0);
    let (objects, used) = listing_and_used(s, &t);
    assert_eq!(objects, json!([]), "nothing listed");
    assert_eq!(used, "0", "quota unchanged");
    // The same form sent whole is stored.
    let cid = put(s, &t, "mefs", "cut.bin", bytes.clone());
    let (objects, used) = listing_and_used(s, &t);
    assert_eq!(objects[0]["Cid"], cid.as_str());
    assert_eq!(used, bytes.len().to_string());
}

/// A tmpfs mounted for one test; unmounted (after the server stops) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with a file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5au8; 64 << 10];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Smaller writes take the last partial block.
        while let Ok(n) = f.write(&block[..512]) {
            if n == 0 {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the harness may still be closing the server's log on it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_answers_the_storage_error_stays_healthy_and_gets_its_space_back() {
    let fs = Tmpfs::mount("64m");
    let dir = fs.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let mut s = Server::builder().no_limits().data_dir(&dir).start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let full = json!({"Code": "Storage", "Description": "Error storing file (insufficient space)", "HTTPStatusCode": 516});

    // Blob writes: an upload larger than the disk (far below the quota) is refused as a storage
    // error, and nothing of it stays.
    let (st, v) = upload(&s, &t, "mefs", "big.bin", data(100_000_000, 5), None);
    assert_eq!((st, v), (516, full.clone()));
    wait_for("the staging area to be emptied", || staged_files(&s) == 0);
    assert!(blob_files(&s.data_dir).is_empty(), "no partial blob");
    assert_eq!(count_entries(&s.data_dir.join("tmp")), 0, "no spill file");
    let (objects, used) = listing_and_used(&s, &t);
    assert_eq!((objects, used.as_str()), (json!([]), "0"));
    let r = s.get("/healthz").send().unwrap();
    assert_eq!(r.status(), 200);
    // The space came back: an upload that fits is stored and reads back.
    let small = data(8_000_000, 6);
    let cid = put(&s, &t, "mefs", "small.bin", small.clone());
    let back = s.get(&format!("/mefs/{cid}")).send().unwrap();
    assert_eq!(back.status(), 200);
    assert!(back.bytes().unwrap().as_ref() == small.as_slice());

    // Database writes on a disk with no byte left: a login that creates an account (MEMO), a
    // registration (ComputeShare), a token (TwoCloud), an upload's records — each the dialect's
    // storage error.
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "13000000088", "password": "password-123"})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = json(
        s.post("/twocloud/tokens")
            .basic_auth("13000000088", Some("password-123")),
    );
    assert_eq!(st, 200, "{v}");
    let tc_token = v["token"].as_str().unwrap().to_string();
    let filler = fs.fill();
    if s.uses_pg() {
        // The database is not on the data dir's disk: only the blob write below can fail.
        eprintln!("under PostgreSQL: database writes on a full data dir disk are not tested");
    } else {
        let nonce = s.get("/getnonce").send().unwrap().text().unwrap();
        let addr = crate::harness::eth_address(KEY_B);
        let sig = crate::harness::eth_sign(KEY_B, &addr, &nonce, "memo.io");
        let (st, v) = json(s.post("/login").json(&json!({
            "address": addr, "nonce": nonce, "domain": "memo.io", "signature": sig["sig01"],
        })));
        assert_eq!(st, 516, "{v}");
        assert_eq!(v["Error"], full, "{v}");
        let (st, v) = json(
            s.post("/api/v1/user/register")
                .json(&json!({"username": "13000000077", "password": "password-123"})),
        );
        assert_eq!(st, 507, "{v}");
        assert_eq!(v["code"], 507);
        assert_eq!(v["reason"], "INSUFFICIENT_STORAGE");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        // Renewing a TwoCloud token records the new token's family.
        let (st, v) = json(
            s.post("/twocloud/tokens")
                .basic_auth(&tc_token, None::<&str>),
        );
        assert_eq!(st, 507, "{v}");
        assert_eq!(v["code"], 507, "{v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (st, v) = upload(&s, &t, "mefs", "tiny.txt", b"hello".to_vec(), None);
    assert_eq!((st, v), (516, full.clone()));
    // Still healthy, and reads still work.
    assert_eq!(s.get("/healthz").send().unwrap().status(), 200);
    let (objects, _) = listing_and_used(&s, &t);
    assert_eq!(objects.as_array().unwrap().len(), 1);

    // Space freed: the same writes succeed.
    std::fs::remove_file(filler).unwrap();
    wait_for("the staging area to be emptied", || staged_files(&s) == 0);
    let (_, t2, _) = s.wallet_login(KEY_B);
    assert!(!t2.is_empty());
    let (st, v) = json(
        s.post("/api/v1/user/register")
            .json(&json!({"username": "13000000077", "password": "password-123"})),
    );
    assert_eq!(st, 200, "{v}");
    put(&s, &t, "mefs", "tiny.txt", b"hello".to_vec());
    s.kill();
}

/// `GET` on a raw connection: the status line and headers, then whatever body bytes arrive
/// until the server closes (or resets) the connection. `before_rest` runs after `first` body
/// bytes have been read.
fn raw_download(
    s: &Server,
    path: &str,
    first: usize,
    before_rest: impl FnOnce(),
) -> (String, u64, Vec<u8>) {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let header_end = loop {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the headers");
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..header_end]).to_string();
    let len: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let mut body = got[header_end..].to_vec();
    while body.len() < first {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0);
        body.extend_from_slice(&buf[..n]);
    }
    before_rest();
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the download: {e}"),
        }
    }
    (head, len, body)
}

#[test]
fn a_blob_truncated_during_a_download_fails_that_download_and_fsck_names_it() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let bytes = data(64 << 20, 9);
    let cid = put(&s, &t, "mefs", "long.bin", bytes.clone());
    let blob = s
        .data_dir
        .join("blobs")
        .join(&cid[cid.len() - 2..])
        .join(&cid);
    assert!(blob.exists());
    let (head, len, body) = raw_download(&s, &format!("/mefs/{cid}"), 1 << 20, || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&blob)
            .unwrap()
            .set_len(4096)
            .unwrap();
    });
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(len, bytes.len() as u64);
    assert!(
        (body.len() as u64) < len,
        "the download must end short, not be completed with other bytes"
    );
    assert!(
        body == bytes[..body.len()],
        "what was sent is the start of the true content"
    );
    // The server lives on and answers.
    assert_eq!(s.get("/healthz").send().unwrap().status(), 200);
    let (objects, _) = listing_and_used(&s, &t);
    assert_eq!(objects[0]["Cid"], cid.as_str());
    // A second download fails before its headers promise anything.
    let r = s.get(&format!("/mefs/{cid}")).send().unwrap();
    assert_ne!(r.status(), 200);
    // The integrity check names the blob.
    let out = s.admin().args(["fsck", "--json"]).output().unwrap();
    assert!(!out.status.success(), "fsck reports a problem");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let issues = report["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 1, "{report}");
    assert_eq!(issues[0]["cid"], cid.as_str(), "{report}");
    assert_eq!(issues[0]["kind"], "mismatch", "{report}");
    assert_eq!(issues[0]["actual_size"], 4096, "{report}");
}
