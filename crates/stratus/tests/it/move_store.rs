//! `stratus admin move-store`: an embedded deployment (SQLite and local blobs) moves to
//! PostgreSQL and a real Garage with nothing lost — tokens stay valid, the ledger verifies,
//! every CID downloads byte-exact, balances and file lists are equal. The move refuses to run
//! beside a live server and into a database that is not empty.
//!
//! Needs PostgreSQL (`STRATUS_TEST_PG`); without it the test says so and passes, unless
//! `STRATUS_REQUIRE_PEERS` is set.

use serde_json::{json, Value};

use crate::harness::{data, funded, json, put, PgDatabase, Server, DATABASE_URL, KEY_A};
use crate::s3::Garage;

/// Both targets on the Garage bucket.
fn garage_env(g: &Garage) -> Vec<(String, String)> {
    let mut env = g.target_env();
    let ipfs: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.replace("__MEFS__", "__IPFS__"), v.clone()))
        .collect();
    env.extend(ipfs);
    env
}

fn listing(s: &Server, token: &str, target: &str) -> Value {
    let (st, l) = json(
        s.get(&format!("/{target}/listobjects"))
            .header("Authorization", token),
    );
    assert_eq!(st, 200, "{l}");
    l
}

#[test]
fn move_store_moves_an_embedded_deployment_to_postgres_and_garage() {
    let Some(base) = crate::harness::pg_or_skip("move-store") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The embedded store, even though this run uses PostgreSQL for everything else.
    let sqlite = format!("sqlite://{}", dir.path().join("stratus.db").display());
    let mut old = Server::builder()
        .no_limits()
        .data_dir(dir.path())
        .env(DATABASE_URL, &sqlite)
        .start();

    // Accounts (password and wallet), tokens, objects of several sizes, money and a purchase.
    let alice = funded(&old, "alice", 2);
    let (addr, memo, _) = old.wallet_login(KEY_A);
    let out = old
        .admin()
        .args(["credit", "--account", &addr, "--amount", "3000000000000000"])
        .args(["--reason", "top-up"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (st, v) = json(
        old.post("/mefs/buypkg")
            .header("Authorization", &memo)
            .json(&json!({"pkgid": 1})),
    );
    assert_eq!(st, 200, "{v}");
    let mut files = Vec::new();
    for (i, size) in [0usize, 1, 1000, 256 * 1024 + 7, 3 * 1024 * 1024 + 1]
        .into_iter()
        .enumerate()
    {
        let bytes = data(size, 100 + i as u64);
        let cid = put(&old, &memo, "mefs", &format!("f{i}.bin"), bytes.clone());
        files.push(("mefs", cid, bytes));
    }
    let bytes = data(70_000, 7);
    files.push((
        "ipfs",
        put(&old, &memo, "ipfs", "i.bin", bytes.clone()),
        bytes,
    ));
    let (_, balance) = json(old.get("/mefs/balance").header("Authorization", &memo));
    assert_eq!(balance["Balance"], "2000000000000000");
    let (_, user) = json(old.get("/api/v1/user").header("Authorization", &alice));
    let (_, alice_balance) = json(old.get("/api/v1/balance").header("Authorization", &alice));
    let lists = [listing(&old, &memo, "mefs"), listing(&old, &memo, "ipfs")];

    let g = Garage::start();
    let pg = PgDatabase::create(&base);
    let move_store = |s: &Server| {
        let mut c = s.admin();
        c.args(["move-store", "--to-database", &pg.url]);
        for (k, v) in garage_env(&g) {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // Not beside a live server.
    let out = move_store(&old);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a stratus server is running on"), "{err}");
    assert!(
        g.objects("").is_empty(),
        "nothing copied: {:?}",
        g.objects("")
    );

    old.terminate();
    let out = move_store(&old);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("blobs: 6 copied"), "{stdout}");
    assert!(stdout.contains("verified: row counts"), "{stdout}");
    assert!(stdout.contains("STRATUS_JWT_KEY"), "{stdout}");
    assert!(stdout.contains("database.url = \"postgres://"), "{stdout}");

    // Once only: the target is no longer empty.
    let again = move_store(&old);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("the target database is not empty"), "{err}");

    // A new node: another data dir, the same token key, PostgreSQL and Garage.
    let key = std::fs::read_to_string(dir.path().join("secrets/jwt.key")).unwrap();
    let mut b = Server::builder()
        .no_limits()
        .env(DATABASE_URL, &pg.url)
        .env("STRATUS_JWT_KEY", key.trim());
    for (k, v) in garage_env(&g) {
        b = b.env(&k, &v);
    }
    let new = b.start();
    let (st, u) = json(new.get("/api/v1/user").header("Authorization", &alice));
    assert_eq!((st, &u), (200, &user));
    let (_, b2) = json(new.get("/api/v1/balance").header("Authorization", &alice));
    assert_eq!(b2, alice_balance);
    let (_, b1) = json(new.get("/mefs/balance").header("Authorization", &memo));
    assert_eq!(b1, balance);
    assert_eq!(
        [listing(&new, &memo, "mefs"), listing(&new, &memo, "ipfs")],
        lists
    );
    for (target, cid, bytes) in &files {
        let r = new.get(&format!("/{target}/{cid}")).send().unwrap();
        assert_eq!(r.status(), 200, "{target}/{cid}");
        assert!(
            r.bytes().unwrap()[..] == bytes[..],
            "{target}/{cid} differs"
        );
    }
    // The blobs are in Garage; the ledger verifies on PostgreSQL.
    assert_eq!(g.objects("").len(), 6, "{:?}", g.objects(""));
    let out = new.admin().args(["ledger", "verify"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mismatches"], json!([]));
    // Identities continue after the copied ones: a new upload and a purchase work.
    let cid = put(&new, &memo, "mefs", "after.bin", data(5000, 9));
    assert!(!cid.is_empty());
    let (st, v) = json(
        new.post("/mefs/buypkg")
            .header("Authorization", &memo)
            .json(&json!({"pkgid": 1})),
    );
    assert_eq!(st, 200, "{v}");
}
