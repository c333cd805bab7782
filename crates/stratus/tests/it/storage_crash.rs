//! A server killed with SIGKILL in the middle of an upload: after a restart nothing partial is
//! listed or left behind, and the same upload then succeeds.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{blob_files, count_entries, data, json, put, Server, KEY_A};

#[test]
fn sigkill_during_an_upload_leaves_nothing_and_the_upload_then_succeeds() {
    let mut s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let bytes = data(40_000_000, 77);
    let head = "--B0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    let tail = "\r\n--B0und--\r\n";
    let len = head.len() + bytes.len() + tail.len();
    let mut conn = TcpStream::connect(s.addr).unwrap();
    write!(
        conn,
        "POST /mefs/ HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nContent-Type: multipart/form-data; boundary=B0und\r\nContent-Length: {len}\r\n\r\n{head}"
    )
    .unwrap();
    // Send a third of the file, then wait until the server has staged some of it.
    conn.write_all(&bytes[..13_000_000]).unwrap();
    let staging = s.data_dir.join("blobs/.staging");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let staged: u64 = std::fs::read_dir(&staging)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        if staged > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never reached the staging area"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.kill();
    drop(conn);
    assert!(
        count_entries(&staging) > 0,
        "a crash leaves the staged bytes behind"
    );
    s.restart();
    assert_eq!(count_entries(&staging), 0, "cleaned at start");
    assert_eq!(count_entries(&s.data_dir.join("tmp")), 0);
    assert!(blob_files(&s.data_dir).is_empty());
    let (_, l) = json(s.get("/mefs/listobjects").header("Authorization", &t));
    assert_eq!(l["Object"], json!([]));
    let (_, sp) = json(s.get("/mefs/storage").header("Authorization", &t));
    assert_eq!(sp["Used"], "0");
    let cid = put(&s, &t, "mefs", "big.bin", bytes.clone());
    let back = s
        .get(&format!("/mefs/{cid}"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(back.as_ref() == bytes.as_slice());
}
