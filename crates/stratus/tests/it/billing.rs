//! Billing through the dialects: prices, packages, purchases, quota from purchases, balances,
//! the ledger, concurrent purchases, exact error bodies, and the billing CLI.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{json, Server, BIN, KEY_A};

const P1: u128 = 1_000_000_000_000_000; // default package 1: 100 GiB / 30 days
const GIB: u64 = 1 << 30;

fn admin_credit(s: &Server, account: &str, amount: u128, reference: Option<&str>) -> String {
    let mut c = s.admin();
    c.args([
        "credit",
        "--account",
        account,
        "--amount",
        &amount.to_string(),
        "--reason",
        "test top-up",
    ]);
    if let Some(r) = reference {
        c.args(["--reference", r]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn memo(code: &str, d: &str, st: u16) -> Value {
    json!({"Code": code, "Description": d, "HTTPStatusCode": st})
}

#[test]
fn prices_and_packages_in_both_dialects() {
    let s = Server::start();
    let (st, v) = json(s.get("/mefs/pkginfos"));
    assert_eq!(st, 200);
    assert_eq!(
        v[0],
        json!({"Pkgid": 1, "Name": "100 GiB / 30 days", "Time": 2592000, "Days": 30, "Kind": 0,
               "Buysize": 100 * GIB, "Amount": P1.to_string(), "State": 1})
    );
    let (_, v) = json(s.get("/ipfs/pkginfos"));
    assert_eq!(v[1]["Kind"], 1);
    assert_eq!(v[1]["Pkgid"], 2);
    let (st, v) = json(s.get("/mefs/getprice"));
    assert_eq!(
        (st, v),
        (
            200,
            json!({"Price": "1000", "Unit": "byte/day", "Asset": "ETH", "Decimals": 18})
        )
    );
    let (st, v) = json(s.get("/api/v1/compute/spec/price?specId=2"));
    assert_eq!(
        (st, v),
        (
            200,
            json!({"code": 200, "message": "success",
                     "data": {"day": 30, "cycle": 20_000_000_000_000_000u64, "price": "20000000000000000"}})
        )
    );
    let (st, v) = json(s.get("/api/v1/compute/spec/price?specId=9"));
    assert_eq!((st, v["reason"].clone()), (404, json!("SPEC_NOT_FOUND")));
    let (st, v) = json(s.get("/api/v1/compute/spec/price?specId=x"));
    assert_eq!((st, v["metadata"]["field"].clone()), (400, json!("specId")));
    let (st, v) = json(s.get("/api/v1/compute/spec/price"));
    assert_eq!(st, 400, "{v}");
    let (_, v) = json(s.get("/api/v1/compute/spec"));
    assert_eq!(
        v["data"],
        json!([{"id": 1, "core": 2, "memory": 4}, {"id": 2, "core": 4, "memory": 8}])
    );
    let (_, v) = json(s.get("/api/v1/compute/image"));
    assert_eq!(
        v["data"],
        json!([{"id": 1, "name": "ubuntu", "image": "ubuntu", "tag": "20.04", "port": 22}])
    );
}

#[test]
fn buying_moves_money_and_space_with_exact_errors() {
    let s = Server::start();
    let (addr, t, _) = s.wallet_login(KEY_A);
    let (_, b) = json(s.get("/mefs/balance").header("Authorization", &t));
    assert_eq!(b, json!({"Address": addr, "Balance": "0"}));
    let buy = |body: Value| {
        json(
            s.post("/mefs/buypkg")
                .header("Authorization", &t)
                .json(&body),
        )
    };
    assert_eq!(
        buy(json!({"pkgid": 1, "amount": 1})),
        (
            519,
            memo(
                "Balance",
                &format!("Balance Error (insufficient balance: 0 available, {P1} needed)"),
                519
            )
        )
    );
    assert_eq!(
        buy(json!({"pkgid": 9, "amount": 1})),
        (
            400,
            memo(
                "InvalidArgument",
                "Invalid Argument (pkgid: no package 9)",
                400
            )
        )
    );
    for bad in [json!(0), json!(-1), json!(100_000), json!("x"), json!(1.5)] {
        let (st, v) = buy(json!({"pkgid": 1, "amount": bad}));
        assert_eq!(st, 400, "{bad}: {v}");
        assert_eq!(v["Code"], "InvalidArgument");
    }
    let (st, v) = buy(json!({"amount": 1}));
    assert_eq!(
        (st, v),
        (
            400,
            memo("InvalidArgument", "Invalid Argument (pkgid: missing)", 400)
        )
    );
    let (st, _) = json(s.post("/mefs/buypkg").json(&json!({"pkgid": 1})));
    assert_eq!(st, 401);

    let out = admin_credit(&s, &addr, 3 * P1 + 5, Some("topup-1"));
    assert!(out.contains("credited"), "{out}");
    // The same reference again changes nothing.
    let out = admin_credit(&s, &addr, 3 * P1 + 5, Some("topup-1"));
    assert!(out.contains("nothing changed"), "{out}");
    let (_, b) = json(s.get("/ipfs/balance").header("Authorization", &t));
    assert_eq!(b["Balance"], (3 * P1 + 5).to_string());

    let (st, p) = buy(json!({"pkgid": 1, "amount": 2}));
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["Pkgid"], 1);
    assert_eq!(p["Count"], 2);
    assert_eq!(p["Buysize"], 200 * GIB);
    assert_eq!(p["Amount"], (2 * P1).to_string());
    assert_eq!(p["Balance"], (P1 + 5).to_string());
    assert_eq!(
        p["Endtime"].as_i64().unwrap() - p["Starttime"].as_i64().unwrap(),
        30 * 86400
    );
    // The original's GET form with query parameters.
    let (st, p2) = json(
        s.get("/ipfs/buypkg?pkgid=1&amount=1")
            .header("Authorization", &t),
    );
    assert_eq!(st, 200, "{p2}");
    assert_eq!(p2["Kind"], 1);
    let (_, b) = json(s.get("/mefs/balance").header("Authorization", &t));
    assert_eq!(b["Balance"], "5");
    // POST with form fields, or with the query and no body, reads the same parameters (here the
    // balance no longer covers a package: 519).
    for rb in [
        s.post("/mefs/buypkg")
            .form(&[("pkgid", "1"), ("amount", "1")]),
        s.post("/mefs/buypkg?pkgid=1&amount=1"),
    ] {
        let (st, v) = json(rb.header("Authorization", &t));
        assert_eq!((st, &v["Code"]), (519, &json!("Balance")), "{v}");
    }

    let (_, sp) = json(s.get("/mefs/storage").header("Authorization", &t));
    assert_eq!(
        sp,
        json!({"Used": "0", "Available": (200 * GIB).to_string(), "Free": "10737418240", "Files": "0"})
    );
    let (_, sp) = json(s.get("/ipfs/storage").header("Authorization", &t));
    assert_eq!(sp["Available"], (100 * GIB).to_string());
    let (st, list) = json(s.get("/mefs/getbuypkgs").header("Authorization", &t));
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["State"], 1);
    assert_eq!(list[0]["Count"], 2);

    // The ComputeShare view of the same money.
    let (st, v) = json(s.get("/api/v1/balance").header("Authorization", &t));
    assert_eq!(st, 200);
    assert_eq!(v["data"]["balance"], "5");
    assert_eq!(v["data"]["walletAddress"], addr.as_str());
    let (_, l) = json(
        s.get("/api/v1/ledger?page=1&size=10")
            .header("Authorization", &t),
    );
    assert_eq!(l["data"]["total"], 3);
    let kinds: Vec<&str> = l["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["debit", "debit", "credit"]);
    assert_eq!(l["data"]["list"][0]["balanceAfter"], "5");
    assert_eq!(l["data"]["list"][2]["reason"], "admin");
    let (st, v) = json(s.get("/api/v1/ledger?page=x").header("Authorization", &t));
    assert_eq!(
        (st, v["reason"].clone()),
        (400, json!("INVALID_ARGUMENT")),
        "{v}"
    );
}

#[test]
fn a_hundred_concurrent_purchases_never_overdraw() {
    let s = Server::builder().no_limits().start();
    let (addr, t, _) = s.wallet_login(KEY_A);
    let k = 23u128;
    admin_credit(&s, &addr, k * P1 + P1 / 3, None);
    let results: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                sc.spawn(|| {
                    json(
                        s.post("/mefs/buypkg")
                            .header("Authorization", &t)
                            .json(&json!({"pkgid": 1})),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|&&c| c == 200).count(), k as usize);
    assert_eq!(
        results.iter().filter(|&&c| c == 519).count(),
        100 - k as usize
    );
    let (_, b) = json(s.get("/mefs/balance").header("Authorization", &t));
    assert_eq!(b["Balance"], (P1 / 3).to_string());
    let out = s.admin().args(["ledger", "verify"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_debits"], (k * P1).to_string());
    assert_eq!(v["mismatches"], json!([]));
}

#[test]
fn billing_cli() {
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
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert!(
        cli(&[
            "login",
            "--server",
            &s.url,
            "--wallet-key-file",
            key.to_str().unwrap()
        ])
        .0
    );
    let (ok, out) = cli(&["balance"]);
    assert!(ok && out.starts_with("0 "), "{out}");
    let (ok, out) = cli(&["packages"]);
    assert!(ok && out.contains("100 GiB / 30 days"), "{out}");
    let (ok, out) = cli(&["buy", "1"]);
    assert!(!ok && out.contains("519"), "{out}");
    admin_credit(&s, &crate::harness::eth_address(KEY_A), P1, None);
    let (ok, out) = cli(&["buy", "1", "--amount", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["ledger"]);
    assert!(
        ok && out.contains("debit") && out.contains("credit"),
        "{out}"
    );
    let (ok, out) = cli(&["balance"]);
    assert!(ok && out.starts_with("0 "), "{out}");
}
