//! Recharge from a real Ethereum dev node (ganache): native and ERC-20 deposits, a deposit made
//! before the wallet is linked, a restart between deposit and confirmation, a transfer seen
//! twice. The deposits are real transactions; stratus's watcher sees them over JSON-RPC.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{eth_address, eth_sign, json, Ganache, Server, KEY_A, KEY_B};

/// A key that only funds and receives (the deposit address holder).
const KEY_DEPOSIT: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";
const ETHER: u128 = 1_000_000_000_000_000_000;
const CONFIRMATIONS: u32 = 3;

fn chain_server(g: &Ganache, token: Option<&str>, data_dir: Option<&std::path::Path>) -> Server {
    let mut b = Server::builder()
        .env("STRATUS_CHAIN__RPC_URL", &g.url)
        .env("STRATUS_CHAIN__DEPOSIT_ADDRESS", &eth_address(KEY_DEPOSIT))
        .env("STRATUS_CHAIN__CONFIRMATIONS", &CONFIRMATIONS.to_string())
        .env("STRATUS_CHAIN__POLL_INTERVAL_MS", "100");
    if let Some(t) = token {
        b = b.env("STRATUS_CHAIN__TOKEN_CONTRACT", t);
    }
    if let Some(d) = data_dir {
        b = b.data_dir(d);
    }
    b.start()
}

fn balance(s: &Server, token: &str) -> u128 {
    let (st, v) = json(s.get("/mefs/balance").header("Authorization", token));
    assert_eq!(st, 200, "{v}");
    v["Balance"].as_str().unwrap().parse().unwrap()
}

fn wait_balance(s: &Server, token: &str, want: u128) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = balance(s, token);
        if b == want {
            return;
        }
        assert!(Instant::now() < deadline, "balance {b}, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the watcher has processed block `n` (its cursor), as the admin tool reports it.
fn wait_cursor(s: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = s.admin().args(["chain", "status"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let at: u64 = text
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        if at >= n {
            return;
        }
        assert!(Instant::now() < deadline, "watcher stuck at {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pay(g: &Ganache, from_key: &str, wei: u128) -> Value {
    g.send(json!({"from": eth_address(from_key), "to": eth_address(KEY_DEPOSIT), "value": format!("0x{wei:x}")}))
}

#[test]
fn native_deposits_are_credited_after_confirmations_exactly_once() {
    let g = Ganache::start(&[KEY_A, KEY_B, KEY_DEPOSIT]);
    let mut s = chain_server(&g, None, None);
    let (_, t, _) = s.wallet_login(KEY_A);
    let r = pay(&g, KEY_A, 2 * ETHER);
    let block = u64::from_str_radix(
        r["blockNumber"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    // Not yet confirmed: with 3 confirmations the deposit's block needs 2 more on top.
    wait_cursor(&s, block - 1);
    assert_eq!(balance(&s, &t), 0);
    g.mine(CONFIRMATIONS - 1);
    wait_balance(&s, &t, 2 * ETHER);
    // A payment to another address is ignored.
    g.send(json!({"from": eth_address(KEY_A), "to": eth_address(KEY_B), "value": "0x1000"}));
    // Restart between a deposit and its confirmation: credited once, after the restart.
    pay(&g, KEY_A, ETHER);
    s.restart();
    g.mine(CONFIRMATIONS);
    wait_balance(&s, &t, 3 * ETHER);
    // Seen twice: scan everything again; nothing is credited a second time.
    let head = g.block_number();
    let out = s
        .admin()
        .args(["chain", "rescan", "--from", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    g.mine(1);
    wait_cursor(&s, head + 2 - CONFIRMATIONS as u64);
    assert_eq!(balance(&s, &t), 3 * ETHER);
    let (_, l) = json(s.get("/api/v1/ledger").header("Authorization", &t));
    assert_eq!(l["data"]["total"], 2);
    assert!(l["data"]["list"][0]["reference"]
        .as_str()
        .unwrap()
        .starts_with("deposit:0x"));
}

#[test]
fn a_deposit_before_the_wallet_is_linked_is_credited_at_link_time() {
    let g = Ganache::start(&[KEY_B, KEY_DEPOSIT]);
    let s = chain_server(&g, None, None);
    // A password account; its owner pays from a wallet stratus does not know yet.
    let t = s.user_token("13000000090");
    pay(&g, KEY_B, 5 * ETHER);
    g.mine(CONFIRMATIONS);
    wait_cursor(&s, g.block_number() + 1 - CONFIRMATIONS as u64);
    assert_eq!(balance(&s, &t), 0);
    // Link the wallet with a signed nonce (eth-account signs).
    let addr = eth_address(KEY_B);
    let nonce = s.get("/getnonce").send().unwrap().text().unwrap();
    let sig = eth_sign(KEY_B, &addr, &nonce, "memo.io");
    let (st, v) = json(
        s.post("/api/v1/user/wallet")
            .bearer_auth(&t)
            .json(&json!({"address": addr, "nonce": nonce, "signature": sig["sig01"]})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"],
        json!({"walletAddress": addr, "credited": (5 * ETHER).to_string(), "balance": (5 * ETHER).to_string()})
    );
    assert_eq!(balance(&s, &t), 5 * ETHER);
    // Later deposits from it are credited directly; wallet login reaches the same account.
    pay(&g, KEY_B, ETHER);
    g.mine(CONFIRMATIONS);
    wait_balance(&s, &t, 6 * ETHER);
    let (_, wt, _) = s.wallet_login(KEY_B);
    assert_eq!(balance(&s, &wt), 6 * ETHER);
    // A bad proof names the problem; the nonce cannot be reused.
    let (st, v) = json(
        s.post("/api/v1/user/wallet")
            .bearer_auth(&t)
            .json(&json!({"address": addr, "nonce": nonce, "signature": sig["sig01"]})),
    );
    assert_eq!(
        (st, v),
        (
            400,
            json!({"code": 400, "reason": "WALLET_VERIFICATION_FAILED", "message": "Got wrong nonce", "metadata": {}})
        )
    );
}

#[test]
fn erc20_deposits_of_the_configured_token_only() {
    let g = Ganache::start(&[KEY_A, KEY_DEPOSIT]);
    let token = g.deploy_token(&eth_address(KEY_A), 1_000_000 * ETHER);
    let other = g.deploy_token(&eth_address(KEY_A), 1_000_000 * ETHER);
    let s = chain_server(&g, Some(&token), None);
    let (_, t, _) = s.wallet_login(KEY_A);
    g.token_transfer(
        &token,
        &eth_address(KEY_A),
        &eth_address(KEY_DEPOSIT),
        42 * ETHER,
    );
    g.token_transfer(
        &other,
        &eth_address(KEY_A),
        &eth_address(KEY_DEPOSIT),
        7 * ETHER,
    );
    // Native coin sent to the deposit address does not count for an ERC-20 deployment.
    pay(&g, KEY_A, ETHER);
    g.mine(CONFIRMATIONS);
    wait_balance(&s, &t, 42 * ETHER);
    wait_cursor(&s, g.block_number() + 1 - CONFIRMATIONS as u64);
    assert_eq!(balance(&s, &t), 42 * ETHER);
    let (_, l) = json(s.get("/api/v1/ledger").header("Authorization", &t));
    assert_eq!(l["data"]["total"], 1);
    assert!(l["data"]["list"][0]["reference"]
        .as_str()
        .unwrap()
        .contains(':'));
}
