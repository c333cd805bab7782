//! Writes the seed inputs of every fuzz corpus from real data: the CID vectors and the CAR file in
//! `/work/shared/vectors`-style JSON (path as the first argument), DAGs made by the importer, the
//! compose files of the compute tests, the MEMO document's tokens, wallet signatures, and the
//! multipart bodies, headers and JSON bodies the dialects' clients send.
//!
//! `cargo run -p stratus-fuzz --example seeds -- VECTORS_DIR OUT_DIR` writes `OUT_DIR/<target>/
//! seed-<n>`; the fuzzers then grow and `cargo fuzz cmin` minimises the corpora. Only needed to
//! start a corpus again from nothing.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use stratus_unixfs::{car, Base, Cid, Codec, Event, Importer, LeafFormat, Profile, Version};

struct Seeds {
    out: PathBuf,
}

impl Seeds {
    fn add(&self, target: &str, bytes: impl AsRef<[u8]>) {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let n = std::fs::read_dir(&dir).unwrap().count();
        std::fs::write(dir.join(format!("seed-{n:03}")), bytes).unwrap();
    }

    /// A selector byte, then `rest`.
    fn add_with(&self, target: &str, selector: u8, rest: impl AsRef<[u8]>) {
        let mut v = vec![selector];
        v.extend_from_slice(rest.as_ref());
        self.add(target, v);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let vectors = PathBuf::from(args.next().expect("VECTORS_DIR"));
    let seeds = Seeds {
        out: PathBuf::from(args.next().expect("OUT_DIR")),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    cids(&seeds, &vectors);
    dags(&seeds, &vectors);
    multipart(&seeds);
    compose(&seeds, &root);
    tokens(&seeds, &vectors);
    range(&seeds);
    bodies(&seeds);
    wallet(&seeds);
}

fn cids(seeds: &Seeds, vectors: &Path) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(vectors.join("cids.json")).unwrap()).unwrap();
    for vector in v["vectors"].as_array().unwrap() {
        let text = vector["cid"].as_str().unwrap();
        let cid: Cid = text.parse().unwrap();
        seeds.add("cid_text", text);
        seeds.add("cid_binary", cid.to_bytes());
        for base in Base::ALL {
            seeds.add("cid_text", cid.to_string_of_base(base));
        }
    }
    for bad in [
        "bafkreinotacid",
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1Aw0H",
        "mAXASIA",
        "",
    ] {
        seeds.add("cid_text", bad);
    }
    seeds.add("cid_text", format!("z{}", "2".repeat(200)));
}

/// Blocks and CAR files of real DAGs (small chunks, so that they have inner nodes).
fn dags(seeds: &Seeds, vectors: &Path) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(vectors.join("cids.json")).unwrap()).unwrap();
    seeds.add(
        "car",
        hex::decode(v["car"]["hex"].as_str().unwrap()).unwrap(),
    );
    for (leaves, version, size) in [
        (LeafFormat::Raw, Version::V1, 1000usize),
        (LeafFormat::DagPb, Version::V0, 700),
    ] {
        let profile = Profile {
            name: "seed",
            chunk_size: 64,
            max_links: 4,
            leaves,
            cid_version: version,
        };
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut importer = Importer::new(profile);
        importer.write(&data);
        let mut events: Vec<Event> = importer.drain_events().collect();
        let imported = importer.finish();
        events.extend(imported.events);
        let mut blocks = Vec::new();
        for e in events {
            match e {
                Event::Leaf {
                    cid, offset, len, ..
                } => {
                    let chunk = &data[offset as usize..(offset + len as u64) as usize];
                    let block = if cid.codec() == Codec::DagPb {
                        stratus_unixfs::encode_v0_leaf(chunk)
                    } else {
                        chunk.to_vec()
                    };
                    blocks.push((cid, block));
                }
                Event::Node { cid, bytes, .. } => {
                    seeds.add("dagpb", &bytes);
                    blocks.push((cid, bytes.to_vec()));
                }
            }
        }
        let mut file = car::header(&imported.root);
        for (cid, block) in blocks.iter().rev() {
            file.extend_from_slice(&car::block(cid, block));
        }
        seeds.add("car", file);
    }
    seeds.add("dagpb", stratus_unixfs::encode_v0_leaf(b"hello world\n"));
    seeds.add("dagpb", b"");
    let two_roots = [
        Cid::sha256(Version::V1, Codec::Raw, b"a"),
        Cid::sha256(Version::V0, Codec::DagPb, b"\x0a\x00"),
    ];
    let mut file = car::header_with_roots(&two_roots);
    file.extend_from_slice(&car::block(&two_roots[0], b"a"));
    file.extend_from_slice(&car::block(&two_roots[1], b"\x0a\x00"));
    seeds.add("car", file);
}

/// Bodies as browsers, curl and reqwest send them, with the selector, flags and frame sizes.
fn multipart(seeds: &Seeds) {
    let bodies: [(u8, &str); 5] = [
        (
            0,
            "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nsome bytes\r\n--XyZ\r\n\
             Content-Disposition: form-data; name=\"paytype\"\r\n\r\n1\r\n--XyZ--\r\n",
        ),
        (
            2,
            "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; \
             name=\"file\"; filename=\"C:\\fakepath\\photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\
             \u{ff}\u{d8}\u{ff}\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n",
        ),
        (
            3,
            "preamble\r\n--------------------------d74496d66958873e\r\nContent-Disposition: \
             form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC%20rates.txt\r\n\r\n\
             --------------------------d74496d66958873\r\n\
             --------------------------d74496d66958873e--",
        ),
        (
            1,
            "--b \t\r\ncontent-disposition:form-data;\r\n\tname=\"file\"\r\n\r\n\r\n--b\r\n\
             Content-Disposition: form-data; name=a\r\n\r\nx\r\n--b--epilogue",
        ),
        (4, "--a(\r\nContent-Disposition: form-data; name=file\r\n\r\na(\r\n--a\r\n--a(--"),
    ];
    for (selector, body) in bodies {
        for (flags, sizes) in [(0u8, &[][..]), (1, &[1u8][..]), (0, &[3, 7, 64][..])] {
            let mut v = vec![selector, flags, sizes.len() as u8];
            v.extend_from_slice(sizes);
            v.extend_from_slice(body.as_bytes());
            seeds.add("multipart", v);
        }
    }
    // A Content-Type line read by boundary_of.
    seeds.add(
        "multipart",
        b"\xffmultipart/form-data; boundary=\"a b\"\n\x00\x00--a b\r\n\
          Content-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--a b--"
            .as_slice(),
    );
}

/// The compose files of the compute tests (raw strings in the parser's unit tests and in the
/// integration tests), and a few that must be refused.
fn compose(seeds: &Seeds, root: &Path) {
    for file in [
        "crates/compute/src/compose/tests.rs",
        "crates/compute/tests/docker.rs",
        "crates/stratus/tests/it/compute.rs",
        "crates/model/tests/compute_clock.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("r#\"") {
            let body = &rest[i + 3..];
            let Some(j) = body.find("\"#") else { break };
            if body[..j].contains("services") {
                seeds.add("compose", &body[..j]);
            }
            rest = &body[j + 2..];
        }
    }
    for text in [
        "services:\n  web:\n    image: nginx\n    ports: [\"80:80\"]\n",
        "services:\n  web:\n    image: a\n    privileged: true\n",
        "services:\n  web:\n    image: a\n    volumes: [\"/var/run/docker.sock:/s\"]\n",
        "services:\n  web:\n    image: a\n    ulimits:\n      nofile: {soft: 10, hard: 20}\n      nproc: 5\n",
        "services:\n  web:\n    image: a\n    tmpfs: [\"/t:size=1m\"]\n    shm_size: 64m\n",
        "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nservices: {w: {image: a}}\n",
    ] {
        seeds.add("compose", text);
    }
}

fn tokens(seeds: &Seeds, vectors: &Path) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(vectors.join("memo-doc-tokens.json")).unwrap())
            .unwrap();
    for (_, token) in v["tokens"].as_object().unwrap() {
        let token = token.as_str().unwrap();
        seeds.add_with("jwt", 0, token);
        seeds.add("authorization", token);
        seeds.add("authorization", format!("Bearer {token}"));
        seeds.add(
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("{token}:x"))),
        );
        // Its header and payload, to be signed by the target.
        let mut parts = token.split('.');
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts.next().unwrap())
            .unwrap();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts.next().unwrap())
            .unwrap();
        let mut raw = header;
        raw.push(b'\n');
        raw.extend_from_slice(&payload);
        seeds.add_with("jwt", 1, raw);
    }
    seeds.add_with(
        "jwt",
        1,
        "{\"alg\":\"none\"}\n{\"type\":1,\"aud\":\"memo.io\",\"exp\":1,\"iat\":0,\"iss\":\"memo.io\",\"sub\":\"x\"}",
    );
    let mut claims = vec![0u8];
    claims.extend_from_slice(&1_700_000_900i64.to_le_bytes());
    claims.extend_from_slice(&1_700_000_000i64.to_le_bytes());
    claims.push(0);
    claims.extend_from_slice(b"memo.io\n0xE7E9f12f99aD17d4786b9B1247C097e63ceaF8Db\n8c1f0b6d");
    seeds.add_with("jwt", 2, claims);
    for h in [
        "Basic MTMwMDAwMDAwMDA6c29tZVBhc3N3b3Jk",
        "bearer  abc ",
        "Basic ",
        "Bearer",
    ] {
        seeds.add("authorization", h);
    }
}

fn range(seeds: &Seeds) {
    let cases: [(u64, &str); 6] = [
        (
            1000,
            "bytes=0-99\n\"bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\"\n\
             W/\"x\", *\napplication/vnd.ipld.raw\nformat=car&filename=a.txt\nphoto.png",
        ),
        (1000, "bytes=-100\n\n\n\n\n报告.txt"),
        (0, "bytes=0-\n\n\n\nformat=raw\n"),
        (5, "bytes=3-1\n\"other\"\n\n\nfilename=C%3A%5Cx\n../x"),
        (
            u64::MAX,
            "bytes=18446744073709551614-\n\n\napplication/vnd.ipld.car; version=1\n\n",
        ),
        (
            10,
            "bytes=1-2,4-5\n\n\ntext/html, application/vnd.ipld.raw;q=0.9\nformat=\n\"q\"\\",
        ),
    ];
    for (len, rest) in cases {
        let mut v = len.to_le_bytes().to_vec();
        v.push(0);
        v.extend_from_slice(rest.as_bytes());
        seeds.add("range", v);
    }
}

fn bodies(seeds: &Seeds) {
    let login = json!({"address": "0xE7E9f12f99aD17d4786b9B1247C097e63ceaF8Db",
        "nonce": "a".repeat(64), "domain": "memo.io", "signature": format!("0x{}", "1b".repeat(65))});
    seeds.add_with("memo_json", 0, login.to_string());
    seeds.add_with(
        "memo_json",
        0,
        "address=0x1&nonce=ab&domain=memo.io&signature=0x%20",
    );
    seeds.add_with("memo_json", 0, "");
    seeds.add_with("memo_json", 1, "pkgid=1\n{\"pkgid\":1,\"amount\":2}");
    seeds.add_with("memo_json", 1, "\npkgId=3&Amount=%202");
    seeds.add_with("memo_json", 2, "pkgid=1&amount=-1");
    seeds.add_with("memo_json", 3, "profile=kubo-v0");
    seeds.add_with(
        "memo_json",
        4,
        "limit=10&after=bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
    );

    let compose = "services:\n  web:\n    image: nginx\n    ports: [\"80:80\", \"8080:81\"]\n";
    let sandbox = json!({
        "instance": {"specId": 1, "imageId": "1", "duration": 1, "name": "demo",
            "publicKey": "ssh-ed25519 AAAA", "password": "somePassword",
            "dockerCompose": STANDARD.encode(compose)},
        "networkMapping": [{"name": "web", "protocol": "TCP", "computerPort": 80},
            {"name": "alt", "computer_port": "8080"}],
    });
    let cs: [(u8, String); 11] = [
        (
            0,
            json!({"username": "13000000000", "password": "somePassword"}).to_string(),
        ),
        (
            1,
            json!({"oldPassword": "a", "new_password": "b"}).to_string(),
        ),
        (2, sandbox.to_string()),
        (3, sandbox["instance"].to_string()),
        (
            4,
            json!({"name": "web", "protocol": "tcp", "computerId": " id ", "computerPort": 80})
                .to_string(),
        ),
        (5, json!({"name": "x", "computerPort": "81"}).to_string()),
        (
            6,
            json!({"address": "0x1", "nonce": "n", "signature": "0x2", "domain": null}).to_string(),
        ),
        (7, "status=1&timeout=30".into()),
        (7, "status=4&timeout=1e400".into()),
        (8, "status=0&page=2&size=1000&specId=1&instanceId=x".into()),
        (8, "status=%2010".into()),
    ];
    for (selector, body) in cs {
        seeds.add_with("computeshare_json", selector, body);
    }

    seeds.add_with(
        "twocloud_body",
        1,
        format!("Basic {}\n", STANDARD.encode("13000000000:somePassword")),
    );
    seeds.add_with(
        "twocloud_body",
        0,
        json!({"username": "13000000000", "password": "somePassword"}).to_string(),
    );
    seeds.add_with(
        "twocloud_body",
        0,
        "username=13000000000&password=somePassword",
    );
    seeds.add_with("twocloud_body", 1, "Bearer x\n");
}

fn wallet(seeds: &Seeds) {
    let key = k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let me = stratus_model::wallet::address_of(key.verifying_key());
    let nonce = "ab".repeat(32);
    let digest = stratus_model::wallet::login_digest(&me.to_checksum(None), &nonce, "memo.io");
    let sig = stratus_model::wallet::sign_digest(&key, &digest);
    let mut v = format!(
        "{}\n{nonce}\n0x{}\n",
        me.to_checksum(None),
        hex::encode(sig)
    )
    .into_bytes();
    v.extend_from_slice(&[7u8; 32]);
    seeds.add("wallet_signature", v);
    seeds.add(
        "wallet_signature",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\nnonce\n0X00\n",
    );
}
