//! Content-addressed storage through the MEMO dialect: vectors, round trips at every boundary,
//! CAR read back by the IPFS project's own reader, raw blocks, ranges, dedup and delete, quota,
//! bad multipart, listing, fsck, and the CLI.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{json, Value};
use stratus_unixfs::{CarReader, Cid, DagPbNode, Profile};

use crate::harness::{
    blob_files, count_entries, data, json, node_peer, put, upload, Server, BIN, KEY_A, KEY_B,
};

fn memo_error(code: &str, description: &str, status: u16) -> Value {
    json!({"Code": code, "Description": description, "HTTPStatusCode": status})
}

fn expected_cid(bytes: &[u8], profile: Profile) -> String {
    stratus_unixfs::import_reader(profile, bytes)
        .unwrap()
        .root
        .to_string()
}

fn download(s: &Server, target: &str, cid: &str) -> (u16, Vec<u8>) {
    let r = s.get(&format!("/{target}/{cid}")).send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

#[test]
fn every_vector_through_the_server() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::harness::repo_root().join("crates/unixfs/tests/fixtures/cids.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for (i, v) in vectors["vectors"].as_array().unwrap().iter().enumerate() {
        let input = v["input"].as_str().unwrap();
        let bytes = if let Some(z) = input.strip_prefix("zeros:") {
            let len: usize = z.parse().unwrap();
            if len > 50_000_000 {
                continue; // 100 MiB and 1 GiB run in the unixfs crate's own tests (streamed).
            }
            vec![0u8; len]
        } else {
            input.strip_prefix("text:").unwrap().as_bytes().to_vec()
        };
        let target = if i % 2 == 0 { "mefs" } else { "ipfs" };
        let profile = v["profile"].as_str().unwrap();
        let (st, got) = upload(&s, &t, target, "v.bin", bytes.clone(), Some(profile));
        assert_eq!(st, 200, "{input} {profile}: {got}");
        assert_eq!(got["cid"], v["cid"], "{input} {profile}");
        let (st, back) = download(&s, target, v["cid"].as_str().unwrap());
        assert_eq!(st, 200);
        assert!(back == bytes, "{input} {profile}: download differs");
        n += 1;
    }
    assert!(n >= 18, "only {n} vectors ran");
}

#[test]
fn round_trips_at_chunk_and_tree_boundaries() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let mut seed = 1;
    for p in Profile::ALL {
        let c = p.chunk_size as usize;
        let links = p.max_links as usize;
        let mut sizes = vec![0, 1, c - 1, c, c + 1, 2 * c + 7];
        if c * links < 50_000_000 {
            // The first level is full at chunk × links; one more byte adds a level.
            sizes.extend([c * links, c * links + 1]);
        }
        for (k, size) in sizes.into_iter().enumerate() {
            seed += 1;
            let bytes = data(size, seed);
            let want = expected_cid(&bytes, p);
            // Small files go to both targets, large ones alternate.
            let targets: &[&str] = if size <= 2 * c + 7 {
                &["mefs", "ipfs"]
            } else if k % 2 == 0 {
                &["mefs"]
            } else {
                &["ipfs"]
            };
            for target in targets {
                let (st, v) = upload(
                    &s,
                    &t,
                    target,
                    &format!("f{size}.bin"),
                    bytes.clone(),
                    Some(p.name),
                );
                assert_eq!(st, 200, "{} {size}: {v}", p.name);
                assert_eq!(v["cid"], want.as_str(), "{} {size}", p.name);
                let (st, back) = download(&s, target, &want);
                assert_eq!(st, 200);
                assert!(back == bytes, "{} {size} {target}: bytes differ", p.name);
            }
        }
    }
    // The default profile of both targets is memo.
    let bytes = data(300_000, 99);
    let cid = put(&s, &t, "ipfs", "x", bytes.clone());
    assert_eq!(cid, expected_cid(&bytes, Profile::MEMO));
}

/// Rebuilds a file from a CAR by walking its DAG (our reader, independently of the server).
fn file_from_car(car: &[u8]) -> (Cid, Vec<u8>, usize) {
    let mut r = CarReader::new(car).unwrap();
    let root = r.roots()[0];
    let mut blocks = HashMap::new();
    let mut count = 0;
    while let Some((cid, data)) = r.next_block().unwrap() {
        blocks.insert(cid, data);
        count += 1;
    }
    fn walk(c: &Cid, blocks: &HashMap<Cid, Vec<u8>>, out: &mut Vec<u8>) {
        let b = &blocks[c];
        if c.codec() == stratus_unixfs::Codec::Raw {
            out.extend_from_slice(b);
            return;
        }
        let node = DagPbNode::decode(b).unwrap();
        if node.links.is_empty() {
            out.extend_from_slice(node.unixfs().unwrap().data.as_deref().unwrap_or(&[]));
        }
        for l in &node.links {
            walk(&l.cid, blocks, out);
        }
    }
    let mut out = Vec::new();
    walk(&root, &blocks, &mut out);
    (root, out, count)
}

#[test]
fn car_export_is_read_back_by_the_ipfs_js_reader() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let dir = tempfile::tempdir().unwrap();
    // A two-level memo DAG with repeated chunks (dups=n), and a CIDv0 DAG.
    let mut bytes = data(253_952 * 3, 5);
    bytes.extend(vec![0u8; 253_952 * 2]);
    bytes.extend(data(1000, 6));
    for (profile, bytes) in [
        ("memo", bytes.clone()),
        ("kubo-v0", data(262_144 * 2 + 10, 7)),
    ] {
        let (st, v) = upload(&s, &t, "ipfs", "c.bin", bytes.clone(), Some(profile));
        assert_eq!(st, 200, "{v}");
        let cid = v["cid"].as_str().unwrap().to_string();
        for (how, req) in [
            ("query", s.get(&format!("/ipfs/{cid}?format=car"))),
            (
                "accept",
                s.get(&format!("/ipfs/{cid}"))
                    .header("Accept", "application/vnd.ipld.car"),
            ),
        ] {
            let r = req.send().unwrap();
            assert_eq!(r.status(), 200, "{how}");
            assert_eq!(
                r.headers()["content-type"],
                "application/vnd.ipld.car; version=1; order=dfs; dups=n"
            );
            let car = r.bytes().unwrap().to_vec();
            let path = dir.path().join(format!("{profile}-{how}.car"));
            std::fs::write(&path, &car).unwrap();
            let report = node_peer("car_verify.mjs", &[path.to_str().unwrap()]);
            assert_eq!(report["roots"], json!([cid]), "{profile}");
            let listed: Vec<&str> = report["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap())
                .collect();
            assert_eq!(listed[0], cid, "root first");
            let unique: std::collections::HashSet<_> = listed.iter().collect();
            assert_eq!(unique.len(), listed.len(), "no duplicates");
            let (root, rebuilt, count) = file_from_car(&car);
            assert_eq!(root.to_string(), cid);
            assert_eq!(count, listed.len());
            assert!(
                rebuilt == bytes,
                "{profile}: the CAR does not rebuild the file"
            );
        }
    }
}

#[test]
fn raw_blocks_of_any_block_in_a_stored_dag() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    for profile in ["memo", "kubo-v0"] {
        let bytes = data(262_144 * 2 + 99, 11);
        let (_, v) = upload(&s, &t, "mefs", "r.bin", bytes, Some(profile));
        let cid = v["cid"].as_str().unwrap().to_string();
        let car = s
            .get(&format!("/mefs/{cid}?format=car"))
            .send()
            .unwrap()
            .bytes()
            .unwrap()
            .to_vec();
        let mut r = CarReader::new(&car[..]).unwrap();
        let mut n = 0;
        while let Some((block, expected)) = r.next_block().unwrap() {
            let resp = s.get(&format!("/mefs/{block}?format=raw")).send().unwrap();
            assert_eq!(resp.status(), 200, "{profile} {block}");
            assert_eq!(resp.headers()["content-type"], "application/vnd.ipld.raw");
            assert_eq!(
                resp.headers()["content-length"].to_str().unwrap(),
                expected.len().to_string()
            );
            let got = resp.bytes().unwrap().to_vec();
            assert_eq!(got, expected, "{profile} {block}");
            assert_eq!(Cid::sha256(block.version(), block.codec(), &got), block);
            // The Accept form and HEAD.
            let h = s
                .head(&format!("/mefs/{block}"))
                .header("Accept", "application/vnd.ipld.raw")
                .send()
                .unwrap();
            assert_eq!(h.status(), 200);
            assert_eq!(
                h.headers()["content-length"].to_str().unwrap(),
                expected.len().to_string()
            );
            n += 1;
        }
        assert!(n >= 4, "{profile}: {n} blocks");
    }
    let (st, v) =
        json(s.get("/mefs/bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4?format=zip"));
    assert_eq!(st, 400, "{v}");
}

#[test]
fn download_headers_ranges_and_conditional_requests() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let bytes = data(100_000, 3);
    let cid = put(&s, &t, "mefs", "report \"final\".pdf", bytes.clone());
    let r = s.get(&format!("/mefs/{cid}")).send().unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["content-type"], "application/pdf");
    assert_eq!(h["content-length"], "100000");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"report _final_.pdf\""
    );
    assert_eq!(h["etag"], format!("\"{cid}\"").as_str());
    assert_eq!(h["cache-control"], "public, max-age=29030400, immutable");
    assert_eq!(h["accept-ranges"], "bytes");

    let range = |spec: &str| {
        let r = s
            .get(&format!("/mefs/{cid}"))
            .header("Range", spec)
            .send()
            .unwrap();
        let st = r.status().as_u16();
        let cr = r
            .headers()
            .get("content-range")
            .map(|v| v.to_str().unwrap().to_string());
        (st, cr, r.bytes().unwrap().to_vec())
    };
    assert_eq!(
        range("bytes=0-0"),
        (206, Some("bytes 0-0/100000".into()), bytes[..1].to_vec())
    );
    assert_eq!(
        range("bytes=-1"),
        (
            206,
            Some("bytes 99999-99999/100000".into()),
            bytes[99_999..].to_vec()
        )
    );
    assert_eq!(
        range("bytes=99999-"),
        (
            206,
            Some("bytes 99999-99999/100000".into()),
            bytes[99_999..].to_vec()
        )
    );
    assert_eq!(
        range("bytes=0-"),
        (206, Some("bytes 0-99999/100000".into()), bytes.clone())
    );
    assert_eq!(
        range("bytes=10-20"),
        (
            206,
            Some("bytes 10-20/100000".into()),
            bytes[10..21].to_vec()
        )
    );
    assert_eq!(
        range("bytes=99990-200000"),
        (
            206,
            Some("bytes 99990-99999/100000".into()),
            bytes[99_990..].to_vec()
        )
    );
    assert_eq!(
        range("bytes=-200000"),
        (206, Some("bytes 0-99999/100000".into()), bytes.clone())
    );
    assert_eq!(
        range("bytes=100000-"),
        (416, Some("bytes */100000".into()), vec![])
    );
    assert_eq!(
        range("bytes=-0"),
        (416, Some("bytes */100000".into()), vec![])
    );
    // Several ranges or nonsense: the whole file.
    assert_eq!(range("bytes=0-1,5-6").0, 200);
    assert_eq!(range("items=0-1").0, 200);
    assert_eq!(range("bytes=5-2").0, 200);
    // If-Range with another validator: the whole file.
    let r = s
        .get(&format!("/mefs/{cid}"))
        .header("Range", "bytes=0-0")
        .header("If-Range", "\"other\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    for inm in [
        format!("\"{cid}\""),
        "*".to_string(),
        format!("\"x\", W/\"{cid}\""),
    ] {
        let r = s
            .get(&format!("/mefs/{cid}"))
            .header("If-None-Match", &inm)
            .send()
            .unwrap();
        assert_eq!(r.status(), 304, "{inm}");
        assert_eq!(r.headers()["etag"], format!("\"{cid}\"").as_str());
        assert!(r.bytes().unwrap().is_empty());
    }
    let r = s.head(&format!("/mefs/{cid}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100000");
    assert!(r.bytes().unwrap().is_empty());

    // An empty file: 200 with no bytes; any range is unsatisfiable.
    let empty = put(&s, &t, "mefs", "empty.txt", vec![]);
    assert_eq!(download(&s, "mefs", &empty), (200, vec![]));
    let r = s
        .get(&format!("/mefs/{empty}"))
        .header("Range", "bytes=0-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);

    // Non-ASCII names get an RFC 5987 form too.
    let cid2 = put(&s, &t, "mefs", "报告.txt", b"x".to_vec());
    let r = s.get(&format!("/mefs/{cid2}")).send().unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.txt"
    );
    assert_eq!(r.headers()["content-type"], "text/plain");
}

#[test]
fn unknown_malformed_and_unsupported() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let (st, v) = json(s.get("/mefs/bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"));
    assert_eq!(
        (st, v),
        (404, memo_error("NoSuchObject", "The specified object does not exist (no object bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4 in mefs)", 404))
    );
    let (st, v) = json(s.get("/ipfs/bafkreinotacid"));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["Code"], "InvalidArgument");
    assert!(v["Description"]
        .as_str()
        .unwrap()
        .starts_with("Invalid Argument (invalid CID \"bafkreinotacid\""));
    for (method, path) in [
        ("GET", "/s3/listobjects"),
        ("GET", "/foo/storage"),
        ("POST", "/foo/"),
    ] {
        let rb = if method == "GET" {
            s.get(path)
        } else {
            s.post(path)
        };
        let (st, v) = json(rb.header("Authorization", &t));
        assert_eq!(
            (st, v),
            (
                518,
                memo_error("Storage", "Storage Error (storage not support)", 518)
            ),
            "{path}"
        );
    }
    // Authenticated routes answer a missing token with the wrapped error and a fresh nonce.
    for path in ["/mefs/listobjects", "/mefs/storage", "/mefs/balance"] {
        let (st, v) = json(s.get(path));
        assert_eq!(st, 401);
        assert_eq!(
            v["Error"],
            memo_error(
                "Authentication",
                "Authentication Failed (Token is Null)",
                401
            )
        );
        assert!(crate::harness::is_nonce(v["Nonce"].as_str().unwrap()));
    }
    let (st, v) = json(s.get("/mefs/listobjects").header("Authorization", "x.y.z"));
    assert_eq!(st, 401);
    assert_eq!(
        v["Error"],
        memo_error(
            "Authentication",
            "Authentication Failed (Invalid token payload)",
            401
        )
    );
    let (st, v) = json(
        s.delete("/mefs/bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")
            .header("Authorization", &t),
    );
    assert_eq!(
        (st, v),
        (404, memo_error("NoSuchObject", "The specified object does not exist (you store no object bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4)", 404))
    );
}

#[test]
fn identical_content_is_stored_once_and_outlives_one_owner() {
    let s = Server::start();
    let (_, ta, _) = s.wallet_login(KEY_A);
    let (_, tb, _) = s.wallet_login(KEY_B);
    let bytes = data(3_000_000, 21);
    let (ba, bb) = (bytes.clone(), bytes.clone());
    let (ca, cb) = std::thread::scope(|sc| {
        let a = sc.spawn(|| put(&s, &ta, "mefs", "a.bin", ba));
        let b = sc.spawn(|| put(&s, &tb, "mefs", "b.bin", bb));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(ca, cb);
    assert_eq!(blob_files(&s.data_dir), vec![ca.clone()], "stored once");
    // Each owner lists it under their own name.
    let (_, la) = json(s.get("/mefs/listobjects").header("Authorization", &ta));
    let (_, lb) = json(s.get("/mefs/listobjects").header("Authorization", &tb));
    assert_eq!(la["Object"][0]["Name"], "a.bin");
    assert_eq!(lb["Object"][0]["Name"], "b.bin");
    // A deletes: B still has it, the bytes stay.
    let (st, v) = json(
        s.delete(&format!("/mefs/{ca}"))
            .header("Authorization", &ta),
    );
    assert_eq!((st, v), (200, json!({"state": "success", "cid": ca})));
    let (_, la) = json(s.get("/mefs/listobjects").header("Authorization", &ta));
    assert_eq!(la["Object"], json!([]));
    assert_eq!(download(&s, "mefs", &ca), (200, bytes.clone()));
    let (_, sa) = json(s.get("/mefs/storage").header("Authorization", &ta));
    assert_eq!(sa["Used"], "0");
    // B deletes: the bytes are reclaimed.
    let (st, _) = json(
        s.delete(&format!("/mefs/{ca}"))
            .header("Authorization", &tb),
    );
    assert_eq!(st, 200);
    assert!(blob_files(&s.data_dir).is_empty());
    assert_eq!(download(&s, "mefs", &ca).0, 404);
    // Uploading it again works.
    assert_eq!(put(&s, &tb, "mefs", "b.bin", bytes.clone()), ca);
    assert_eq!(download(&s, "mefs", &ca), (200, bytes));
}

#[test]
fn download_names_are_stable_and_targets_are_separate() {
    let s = Server::start();
    let (_, ta, _) = s.wallet_login(KEY_A);
    let (_, tb, _) = s.wallet_login(KEY_B);
    let bytes = data(40_000, 33);
    let cid = put(&s, &ta, "mefs", "plan.pdf", bytes.clone());
    let disposition = |path: &str| {
        let r = s.get(path).send().unwrap();
        let h = |n: &str| r.headers()[n].to_str().unwrap().to_string();
        (
            r.status().as_u16(),
            h("content-disposition"),
            h("content-type"),
        )
    };
    let first = (
        200,
        "attachment; filename=\"plan.pdf\"".to_string(),
        "application/pdf".to_string(),
    );
    assert_eq!(disposition(&format!("/mefs/{cid}")), first);
    // Somebody else storing the same bytes under another name: neither name is handed to the
    // other or to anyone else; each owner (by its token) downloads under its own.
    assert_eq!(put(&s, &tb, "mefs", "other.bin", bytes.clone()), cid);
    assert_eq!(
        disposition(&format!("/mefs/{cid}")),
        (
            200,
            format!("attachment; filename=\"{cid}\""),
            "application/octet-stream".to_string()
        )
    );
    let owned = |token: &str| {
        let r = s
            .get(&format!("/mefs/{cid}"))
            .header("Authorization", token)
            .send()
            .unwrap();
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(owned(&ta), "attachment; filename=\"plan.pdf\"");
    assert_eq!(owned(&tb), "attachment; filename=\"other.bin\"");
    // The IPFS gateway convention: ?filename= chooses the name (and so the type).
    assert_eq!(
        disposition(&format!("/mefs/{cid}?filename=notes.txt")),
        (
            200,
            "attachment; filename=\"notes.txt\"".to_string(),
            "text/plain".to_string()
        )
    );
    let (st, v) = json(s.get(&format!("/mefs/{cid}?filename=a%2Fb")));
    assert_eq!(st, 400, "{v}");
    // What was stored in mefs is not served from ipfs, though both share the local backend.
    let (st, v) = json(s.get(&format!("/ipfs/{cid}")));
    assert_eq!(
        (st, v),
        (
            404,
            memo_error(
                "NoSuchObject",
                &format!("The specified object does not exist (no object {cid} in ipfs)"),
                404
            )
        )
    );
    assert_eq!(put(&s, &ta, "ipfs", "plan.pdf", bytes.clone()), cid);
    assert_eq!(download(&s, "ipfs", &cid), (200, bytes));
    // A known route with another method answers in the MEMO format.
    let (st, v) = json(s.post("/getnonce"));
    assert_eq!(
        (st, v),
        (405, memo_error("MethodNotAllowed", "The specified method is not allowed against this resource (POST is not allowed on /getnonce)", 405))
    );
}

#[test]
fn quota_is_enforced_while_streaming_and_nothing_is_kept() {
    let s = Server::builder()
        .env("STRATUS_STORAGE__FREE_BYTES", "3000000")
        .start();
    let (_, t, _) = s.wallet_login(KEY_A);
    put(&s, &t, "mefs", "first.bin", data(2_000_000, 1));
    let (st, v) = upload(&s, &t, "mefs", "second.bin", data(2_000_000, 2), None);
    assert_eq!(
        (st, v),
        (
            516,
            memo_error("Storage", "Error storing file (insufficient space)", 516)
        )
    );
    // Far beyond the quota with a declared length: refused before reading the body.
    let (st, _) = upload(&s, &t, "mefs", "huge.bin", vec![7u8; 64 << 20], None);
    assert_eq!(st, 516);
    // Chunked (no length): refused while streaming, after the first bytes over the limit.
    let part = reqwest::blocking::multipart::Part::reader(std::io::Cursor::new(vec![7u8; 8 << 20]))
        .file_name("chunked.bin");
    let (st, v) = json(
        s.post("/mefs/")
            .header("Authorization", &t)
            .multipart(reqwest::blocking::multipart::Form::new().part("file", part)),
    );
    assert_eq!(
        (st, v),
        (
            516,
            memo_error("Storage", "Error storing file (insufficient space)", 516)
        )
    );
    let (_, sp) = json(s.get("/mefs/storage").header("Authorization", &t));
    assert_eq!(
        sp,
        json!({"Used": "2000000", "Available": "0", "Free": "3000000", "Files": "1"})
    );
    // The other target has its own space.
    put(&s, &t, "ipfs", "second.bin", data(2_000_000, 2));
    assert_eq!(blob_files(&s.data_dir).len(), 2);
    assert_eq!(count_entries(&s.data_dir.join("blobs/.staging")), 0);
    assert_eq!(count_entries(&s.data_dir.join("tmp")), 0);
}

#[test]
fn bad_multipart_gets_clear_400s() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    // No file field.
    let form = reqwest::blocking::multipart::Form::new().text("paytype", "1");
    let (st, v) = json(s.post("/mefs/").header("Authorization", &t).multipart(form));
    assert_eq!(
        (st, v),
        (
            400,
            memo_error(
                "InvalidArgument",
                "Invalid Argument (the form has no file field)",
                400
            )
        )
    );
    // Not multipart at all.
    let (st, v) = json(
        s.post("/mefs/")
            .header("Authorization", &t)
            .json(&json!({"file": "x"})),
    );
    assert_eq!(
        (st, v),
        (
            400,
            memo_error(
                "InvalidArgument",
                "Invalid Argument (Content-Type must be multipart/form-data with a boundary)",
                400
            )
        )
    );
    // A body that ends before the closing boundary.
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.bin\"\r\n\r\nsome bytes but no end";
    let (st, v) = json(
        s.post("/mefs/")
            .header("Authorization", &t)
            .header("Content-Type", "multipart/form-data; boundary=XyZ")
            .body(body),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["Description"]
            .as_str()
            .unwrap()
            .starts_with("Invalid Argument (malformed multipart body"),
        "{v}"
    );
    // Two file fields.
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(vec![1]).file_name("a"),
        )
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(vec![2]).file_name("b"),
        );
    let (st, v) = json(s.post("/mefs/").header("Authorization", &t).multipart(form));
    assert_eq!(
        (st, v),
        (
            400,
            memo_error(
                "InvalidArgument",
                "Invalid Argument (more than one file field)",
                400
            )
        )
    );
    // An unknown profile.
    let (st, v) = upload(&s, &t, "mefs", "a", vec![1], Some("zstd"));
    assert_eq!(st, 400, "{v}");
    // Nothing of it was kept.
    let (_, l) = json(s.get("/mefs/listobjects").header("Authorization", &t));
    assert_eq!(l["Object"], json!([]));
    assert!(blob_files(&s.data_dir).is_empty());
    assert_eq!(count_entries(&s.data_dir.join("blobs/.staging")), 0);
    // A field without a file name is named by its CID; other fields are ignored.
    let form = reqwest::blocking::multipart::Form::new()
        .text("paytype", "1")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(b"abc".to_vec()),
        );
    let (st, v) = json(s.post("/mefs/").header("Authorization", &t).multipart(form));
    assert_eq!(st, 200, "{v}");
    let (_, l) = json(s.get("/mefs/listobjects").header("Authorization", &t));
    assert_eq!(l["Object"][0]["Name"], v["cid"]);
}

#[test]
fn listing_shape_and_paging() {
    let s = Server::start();
    let (addr, t, _) = s.wallet_login(KEY_A);
    let (st, v) = json(s.get("/mefs/listobjects").header("Authorization", &t));
    assert_eq!(
        (st, v),
        (
            200,
            json!({"Address": addr, "Storage": "mefs", "Object": []})
        )
    );
    let mut cids = Vec::new();
    for i in 0..5 {
        cids.push(put(
            &s,
            &t,
            "mefs",
            &format!("f{i}.txt"),
            format!("file {i}").into_bytes(),
        ));
    }
    let (_, all) = json(s.get("/mefs/listobjects").header("Authorization", &t));
    let o = &all["Object"][0];
    assert_eq!(o["Name"], "f0.txt");
    assert_eq!(o["Size"], 6);
    assert_eq!(o["Cid"], cids[0].as_str());
    assert_eq!(
        o["UserDefined"],
        json!({"encryption": "none", "etag": "cid"})
    );
    let mt = o["ModTime"].as_str().unwrap();
    assert!(
        mt.len() == 20 && mt.ends_with('Z') && mt.as_bytes()[10] == b'T',
        "{mt}"
    );
    assert_eq!(
        o.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["Cid", "ModTime", "Name", "Size", "UserDefined"]
    );
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (st, page) = json(
            s.get(&format!("/mefs/listobjects?limit=2&after={after}"))
                .header("Authorization", &t),
        );
        assert_eq!(st, 200);
        for o in page["Object"].as_array().unwrap() {
            seen.push(o["Cid"].as_str().unwrap().to_string());
        }
        match page["NextAfter"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, cids);
    let (st, v) = json(
        s.get(
            "/mefs/listobjects?after=bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
        )
        .header("Authorization", &t),
    );
    assert_eq!(st, 400, "{v}");
    // Another account sees none of it.
    let (_, tb, _) = s.wallet_login(KEY_B);
    let (_, l) = json(s.get("/mefs/listobjects").header("Authorization", &tb));
    assert_eq!(l["Object"], json!([]));
    let (st, _) = json(
        s.delete(&format!("/mefs/{}", cids[0]))
            .header("Authorization", &tb),
    );
    assert_eq!(st, 404);
}

#[test]
fn fsck_reports_and_quarantines_and_a_reupload_heals() {
    let s = Server::start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let bytes = data(600_000, 8);
    let cid = put(&s, &t, "mefs", "f.bin", bytes.clone());
    put(&s, &t, "mefs", "g.bin", data(1000, 9));
    let fsck = |repair: bool| {
        let mut c = s.admin();
        c.args(["fsck", "--json"]);
        if repair {
            c.arg("--repair");
        }
        let out = c.output().unwrap();
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
        (out.status.success(), report)
    };
    let (ok, r) = fsck(false);
    assert!(ok, "{r}");
    assert_eq!(r["checked"], 2);
    assert_eq!(r["issues"], json!([]));
    // Flip one byte of the stored file.
    let path = s
        .data_dir
        .join("blobs")
        .join(&cid[cid.len() - 2..])
        .join(&cid);
    let mut raw = std::fs::read(&path).unwrap();
    raw[300_000] ^= 1;
    std::fs::write(&path, raw).unwrap();
    let (ok, r) = fsck(false);
    assert!(!ok);
    assert_eq!(r["issues"].as_array().unwrap().len(), 1);
    assert_eq!(r["issues"][0]["kind"], "mismatch");
    assert_eq!(r["issues"][0]["cid"], cid.as_str());
    let (ok, r) = fsck(true);
    assert!(ok);
    assert_eq!(r["repaired"], 1);
    assert_eq!(
        download(&s, "mefs", &cid).0,
        404,
        "quarantined content is not served"
    );
    assert_eq!(count_entries(&s.data_dir.join("blobs/.quarantine")), 1);
    // Uploading the true content again heals it.
    assert_eq!(put(&s, &t, "mefs", "f.bin", bytes.clone()), cid);
    assert_eq!(download(&s, "mefs", &cid), (200, bytes));
    let (ok, r) = fsck(false);
    assert!(ok, "{r}");
}

#[test]
fn cli_put_get_ls_rm_and_offline_cid() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, KEY_A).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .env("STRATUS_CLIENT_DIR", dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&[
        "login",
        "--server",
        &s.url,
        "--wallet-key-file",
        key.to_str().unwrap(),
    ]);
    let file = dir.path().join("data.bin");
    let bytes = data(1_000_000, 4);
    std::fs::write(&file, &bytes).unwrap();
    let offline = cli(&["cid", file.to_str().unwrap()]);
    let kubo = cli(&["cid", "--profile", "kubo", file.to_str().unwrap()]);
    assert_ne!(offline, kubo);
    let cid = cli(&["put", file.to_str().unwrap()]);
    assert_eq!(cid, offline);
    let cid = cid.trim();
    let listed = cli(&["ls"]);
    assert!(
        listed.contains(cid) && listed.contains("data.bin") && listed.contains("1000000"),
        "{listed}"
    );
    let k2 = cli(&[
        "put",
        "--target",
        "ipfs",
        "--profile",
        "kubo",
        file.to_str().unwrap(),
    ]);
    assert_eq!(k2, kubo);
    let out = dir.path().join("back.bin");
    cli(&["get", cid, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    cli(&["rm", cid]);
    assert!(!cli(&["ls"]).contains(cid));
    assert!(cli(&["ls", "--target", "ipfs"]).contains(k2.trim()));
}
