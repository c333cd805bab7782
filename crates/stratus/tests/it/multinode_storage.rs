//! Storage on two nodes sharing one PostgreSQL database and one Garage bucket (issue 11): an
//! upload through one node racing a delete of the same content through the other never leaves
//! an object whose bytes are gone, and a node's restart leaves the other node's in-flight upload
//! alone. Skipped without PostgreSQL (see `Cluster::start`).

use std::io::{Read, Write};
use std::time::Duration;

use crate::harness::{data, json, put, Cluster, Server, KEY_A, KEY_B};
use crate::s3::{partial_upload, wait_for, Garage};

fn cluster(g: &Garage) -> Option<Cluster> {
    Cluster::start(2, |_, mut b| {
        for (k, v) in g.target_env() {
            b = b.env(&k, &v);
        }
        b.no_limits()
    })
}

/// Every object `token`'s account lists downloads byte-exact from every node.
fn all_listed_download(
    c: &Cluster,
    token: &str,
    expect: &std::collections::HashMap<String, Vec<u8>>,
) {
    let (st, l) = json(
        c.service
            .get("/mefs/listobjects")
            .header("Authorization", token),
    );
    assert_eq!(st, 200, "{l}");
    for o in l["Object"].as_array().unwrap() {
        let cid = o["Cid"]
            .as_str()
            .or(o["cid"].as_str())
            .unwrap_or_else(|| panic!("{o}"));
        let want = &expect[cid];
        for n in &c.nodes {
            let r = n.get(&format!("/mefs/{cid}")).send().unwrap();
            assert_eq!(r.status(), 200, "{cid} through {}", n.url);
            assert!(
                r.bytes().unwrap().as_ref() == want.as_slice(),
                "{cid} byte-exact"
            );
        }
    }
}

#[test]
fn an_upload_through_one_node_racing_a_delete_through_another_never_loses_bytes() {
    let g = Garage::start();
    let Some(c) = cluster(&g) else { return };
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let (_, alice, _) = c.service.wallet_login(KEY_A);
    let (_, bob, _) = c.service.wallet_login(KEY_B);
    let mut expect = std::collections::HashMap::new();
    for round in 0..20u64 {
        let bytes = data(200_000 + round as usize * 1000, 100 + round);
        // Alice's copy is the only record; Bob uploads the same bytes through A while Alice
        // deletes hers through B.
        let cid = put(a, &alice, "mefs", "x.bin", bytes.clone());
        expect.insert(cid.clone(), bytes.clone());
        let (up, del) = std::thread::scope(|s| {
            let up = s.spawn(|| put(a, &bob, "mefs", "x.bin", bytes.clone()));
            let del = s.spawn(|| {
                if round % 2 == 0 {
                    std::thread::sleep(Duration::from_millis(round % 7));
                }
                json(
                    b.delete(&format!("/mefs/{cid}"))
                        .header("Authorization", &alice),
                )
            });
            (up.join().unwrap(), del.join().unwrap())
        });
        assert_eq!(up, cid);
        assert_eq!(del.0, 200, "{}", del.1);
        all_listed_download(&c, &bob, &expect);
        assert!(
            g.objects("blobs/").contains(&format!("blobs/{cid}")),
            "round {round}: Bob's object has its bytes"
        );
        // Bob's delete through B reclaims the bytes.
        let (st, v) = json(
            b.delete(&format!("/mefs/{cid}"))
                .header("Authorization", &bob),
        );
        assert_eq!(st, 200, "{v}");
        assert!(!g.objects("blobs/").contains(&format!("blobs/{cid}")));
    }
}

/// Reads one HTTP response (headers and a `Content-Length` body) from `conn`.
fn response(conn: &mut std::net::TcpStream) -> (u16, String) {
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = text[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + len].to_string());
            }
        }
    }
}

#[test]
fn a_node_restart_leaves_another_nodes_upload_in_flight_alone() {
    let g = Garage::start();
    let Some(mut c) = cluster(&g) else { return };
    let (_, alice, _) = c.service.wallet_login(KEY_A);
    let a_id = c.nodes[0].server_id();
    let b_id = c.nodes[1].server_id();
    assert_ne!(a_id, b_id);
    let bytes = data(40_000_000, 7);
    // A slow upload through A: 20 MB sent (parts staged under A's node), the rest later.
    let mut conn = partial_upload(&c.nodes[0], &alice, &bytes, 20_000_000);
    let ours = format!("staging/{a_id}/");
    wait_for("A's staged multipart upload", || {
        g.incomplete_uploads().iter().any(|k| k.starts_with(&ours))
    });
    c.nodes[1].restart();
    // B's recovery ran before it answered: A's upload is still there.
    assert!(
        g.incomplete_uploads().iter().any(|k| k.starts_with(&ours)),
        "B's restart left A's multipart upload alone: {:?}",
        g.incomplete_uploads()
    );
    conn.write_all(&bytes[20_000_000..]).unwrap();
    conn.write_all(b"\r\n--B0und--\r\n").unwrap();
    let (st, body) = response(&mut conn);
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cid = v["cid"].as_str().unwrap_or_else(|| panic!("{v}"));
    for n in &c.nodes {
        let r = n.get(&format!("/mefs/{cid}")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.bytes().unwrap().as_ref() == bytes.as_slice(),
            "byte-exact"
        );
    }
    assert!(g.incomplete_uploads().is_empty());
    let _: &Server = &c.service;
}

#[test]
fn a_killed_nodes_upload_in_flight_is_reclaimed_by_another_node_once_its_lease_expires() {
    let g = Garage::start();
    let Some(mut c) = cluster(&g) else { return };
    let (_, alice, _) = c.service.wallet_login(KEY_A);
    let a_id = c.nodes[0].server_id();
    let bytes = data(30_000_000, 9);
    let conn = partial_upload(&c.nodes[0], &alice, &bytes, 20_000_000);
    let ours = format!("staging/{a_id}/");
    wait_for("A's staged multipart upload", || {
        g.incomplete_uploads().iter().any(|k| k.starts_with(&ours))
    });
    // A dies mid-upload: nothing of its own will ever finish or abort it.
    c.nodes[0].kill();
    drop(conn);
    // B (the collector, once A's 10 s lease has expired) aborts A's multipart upload.
    let since = std::time::Instant::now();
    wait_for("B to reclaim A's abandoned upload", || {
        !g.incomplete_uploads().iter().any(|k| k.starts_with(&ours))
    });
    assert!(
        since.elapsed() >= Duration::from_secs(3),
        "reclaimed while A's lease could still be live ({:?})",
        since.elapsed()
    );
    assert!(
        g.objects("staging/").is_empty(),
        "{:?}",
        g.objects("staging/")
    );
    // The service goes on through B.
    let cid = put(&c.nodes[1], &alice, "mefs", "after.bin", bytes.clone());
    let r = c.nodes[1].get(&format!("/mefs/{cid}")).send().unwrap();
    assert_eq!(r.status(), 200);
}
