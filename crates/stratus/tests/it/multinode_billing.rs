//! Money across nodes (issue 11, "invariants in the database"): three `stratus serve` nodes on
//! one PostgreSQL database. A hundred purchases sent at once, spread over the nodes, with a
//! balance for ten: exactly ten succeed, the rest are refused for want of balance, and the
//! ledger verifies. Nothing in any process serializes them: only the account row lock and the
//! ledger's per-account sequence (unique key and trigger) do. Skipped (saying so) without
//! PostgreSQL, unless `STRATUS_REQUIRE_PEERS` is set (then the harness fails).

use serde_json::{json as j, Value};

use crate::harness::*;

const P1: u128 = 1_000_000_000_000_000; // default package 1

#[test]
fn a_hundred_purchases_spread_over_three_nodes_with_a_balance_for_ten_buy_exactly_ten() {
    let Some(c) = Cluster::start(3, |_, b| {
        b.no_limits().env("STRATUS_COMPUTE__RUNTIME", "none")
    }) else {
        return;
    };
    let (addr, token, _) = c.nodes[0].wallet_login(KEY_A);
    // Ten packages and a third of one more.
    let out = c.nodes[1]
        .admin()
        .args(["credit", "--account", &addr, "--amount"])
        .arg((10 * P1 + P1 / 3).to_string())
        .args(["--reason", "test top-up"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let results: Vec<(usize, u16)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..100usize)
            .map(|i| {
                let (node, token) = (&c.nodes[i % 3], &token);
                sc.spawn(move || {
                    let (st, v) = json(
                        node.post("/mefs/buypkg")
                            .header("Authorization", token)
                            .json(&j!({"pkgid": 1})),
                    );
                    assert!(st == 200 || st == 519, "node {}: {st} {v}", i % 3);
                    (i % 3, st)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let bought = results.iter().filter(|r| r.1 == 200).count();
    assert_eq!(bought, 10, "{results:?}");
    // Every node refused some: each decided with the others' sales in view.
    for n in 0..3 {
        assert!(
            results.iter().any(|r| r.0 == n && r.1 == 519),
            "{results:?}"
        );
    }
    for n in &c.nodes {
        let (_, b) = json(n.get("/mefs/balance").header("Authorization", &token));
        assert_eq!(b["Balance"], (P1 / 3).to_string(), "{b}");
    }
    let out = c.nodes[2]
        .admin()
        .args(["ledger", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_debits"], (10 * P1).to_string(), "{v}");
    assert_eq!(v["mismatches"], j!([]), "{v}");
    // The purchases are ten, each with its own ledger entry.
    let (st, l) = json(
        c.service
            .get("/api/v1/ledger?page=1&size=100")
            .header("Authorization", &token),
    );
    assert_eq!(st, 200, "{l}");
    let debits = l["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "debit")
        .count();
    assert_eq!(debits, 10, "{l}");
}
