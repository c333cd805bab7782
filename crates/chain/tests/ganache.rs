//! The watcher against a real Ethereum dev node (ganache from `tests/peers`), with real
//! transactions: native and ERC-20 deposits, failed transfers, restarts, re-scans, late links.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_chain::scan::{native_candidates, TRANSFER_TOPIC};
use stratus_chain::{Address, Asset, Deposit, WatchError, Watcher, B256, U256};
use support::{pow2, word, Ganache, MemStore};
use tokio::sync::watch;

const ETHER: u128 = 1_000_000_000_000_000_000;

/// Waits for `cond` to hold, polling every 20 ms, failing after `secs` seconds.
async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log index of the `Transfer` event in a transaction's receipt.
async fn transfer_log_index(g: &Ganache, tx: &B256) -> u64 {
    let r = g.receipt(tx).await;
    let logs = r["logs"].as_array().expect("logs");
    let log = logs
        .iter()
        .find(|l| l["topics"][0].as_str() == Some(&TRANSFER_TOPIC.to_string()))
        .expect("a Transfer event");
    stratus_chain::encoding::parse_u64(log["logIndex"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn native_deposits_are_reported_after_their_confirmations_only() {
    let g = Ganache::start().await;
    let (alice, bob, carol, dep) = (g.accounts[1], g.accounts[2], g.accounts[3], g.accounts[9]);

    // A deposit before start_block is not the watcher's business.
    let early = g.send_value(alice, dep, 5).await;
    g.mine(1).await;
    let start = g.head().await;

    let store = Arc::new(MemStore::new());
    let mut cfg = g.watcher_config(dep, Asset::Native, 3);
    cfg.start_block = start;
    let w = Watcher::new(cfg, store.clone()).unwrap();

    let tx = g.send_value(alice, dep, 3 * ETHER / 2).await;
    let (b, b_hash) = g.block_of(&tx).await;
    g.send_value(bob, carol, 7 * ETHER).await; // to another address
    assert_eq!(g.head().await, b + 1);

    // Head b+1, 3 confirmations: only blocks up to b-1 are final.
    let r = w.poll_once().await.unwrap();
    assert_eq!(r.head, b + 1);
    assert_eq!(r.safe_head, Some(b - 1));
    assert!(r.deposits.is_empty(), "{:?}", r.deposits);
    assert_eq!(store.cursor_now(), Some(b - 1));
    assert!(store.deposits().is_empty());

    // One more block: b now has 3 confirmations (b, b+1, b+2).
    g.mine(1).await;
    let r = w.poll_once().await.unwrap();
    let expected = Deposit {
        reference: tx.to_string(),
        from: alice,
        amount: 3 * ETHER / 2,
        block_number: b,
        block_hash: b_hash,
    };
    assert_eq!(r.deposits, vec![expected.clone()]);
    assert_eq!(r.cursor, Some(b));
    assert_eq!(store.deposits().len(), 1);
    assert_eq!(store.get(&tx.to_string()).unwrap().deposit, expected);
    assert!(expected.reference.starts_with("0x") && expected.reference.len() == 66);
    assert_eq!(expected.reference, expected.reference.to_lowercase());
    assert!(store.get(&early.to_string()).is_none());

    // Two deposits in a row from two senders; nothing moves until both are confirmed.
    let t2 = g.send_value(bob, dep, 2).await;
    let t3 = g.send_value(carol, dep, 3).await;
    let r = w.poll_once().await.unwrap();
    assert!(r.deposits.is_empty());
    g.mine(2).await;
    let r = w.poll_once().await.unwrap();
    let got: Vec<(String, Address, u128)> = r
        .deposits
        .iter()
        .map(|d| (d.reference.clone(), d.from, d.amount))
        .collect();
    assert_eq!(
        got,
        vec![(t2.to_string(), bob, 2), (t3.to_string(), carol, 3)]
    );
    assert!(r.anomalies.is_empty());
    assert_eq!(store.deposits().len(), 3);
}

#[tokio::test]
async fn a_reverted_native_transfer_is_not_counted() {
    let g = Ganache::start().await;
    let (owner, alice) = (g.accounts[0], g.accounts[1]);
    // The test token has no receive function: ether sent to it reverts. Use it as the deposit
    // address so that a mined transaction to the deposit address has receipt status 0.
    let sink = g.deploy_token(owner, word(1)).await;
    let failed = g.send_value(alice, sink, ETHER).await;
    assert_eq!(
        g.status(&failed).await,
        0,
        "the transfer should have reverted"
    );
    let (b, _) = g.block_of(&failed).await;
    let block = g.rpc.block_with_transactions(b).await.unwrap().unwrap();
    assert_eq!(
        native_candidates(&block, &sink).len(),
        1,
        "the reverted transfer is in the block, to the deposit address"
    );

    let store = Arc::new(MemStore::new());
    let w = Watcher::new(g.watcher_config(sink, Asset::Native, 1), store.clone()).unwrap();
    let r = w.poll_once().await.unwrap();
    assert_eq!(r.cursor, Some(b));
    assert!(r.deposits.is_empty(), "{:?}", r.deposits);
    assert!(r.anomalies.is_empty());
    assert!(store.deposits().is_empty());
}

#[tokio::test]
async fn erc20_deposits_of_the_configured_token_only() {
    let g = Ganache::start().await;
    let (owner, alice, bob, carol, dep) = (
        g.accounts[0],
        g.accounts[1],
        g.accounts[2],
        g.accounts[3],
        g.accounts[9],
    );
    // Supply 2^200 so that a transfer above u128 is possible.
    let token = g.deploy_token(owner, pow2(200)).await;
    let other = g.deploy_token(owner, word(1_000_000 * ETHER)).await;
    let start = g.head().await + 1;

    g.token_transfer(token, owner, alice, word(1_000_000)).await;
    let t1 = g.token_transfer(token, alice, dep, word(250_000)).await;
    let t2 = g.token_transfer(token, owner, dep, word(7 * ETHER)).await;
    g.token_approve(token, alice, bob, 1_000).await;
    let t3 = g.token_transfer_from(token, bob, alice, dep, 400).await; // from = alice
    g.token_transfer(token, alice, carol, word(5)).await; // another recipient
    g.token_transfer(other, owner, dep, word(999)).await; // another token
    let huge = g.token_transfer(token, owner, dep, pow2(130)).await; // above u128
    g.send_value(alice, dep, ETHER).await; // native coin: not this watcher's asset
    g.mine(1).await;

    let store = Arc::new(MemStore::new());
    let mut cfg = g.watcher_config(dep, Asset::Erc20 { contract: token }, 2);
    cfg.start_block = start;
    cfg.batch_blocks = 3; // several batches, several commits
    let w = Watcher::new(cfg, store.clone()).unwrap();
    let r = w.poll_once().await.unwrap();
    assert_eq!(r.safe_head, Some(g.head().await - 1));
    assert!(r.batches >= 3, "{} batches", r.batches);

    let mut expected = Vec::new();
    for (tx, from, amount) in [
        (t1, alice, 250_000),
        (t2, owner, 7 * ETHER),
        (t3, alice, 400),
    ] {
        let (n, h) = g.block_of(&tx).await;
        expected.push(Deposit {
            reference: format!("{tx}:{}", transfer_log_index(&g, &tx).await),
            from,
            amount,
            block_number: n,
            block_hash: h,
        });
    }
    assert_eq!(r.deposits, expected);
    assert_eq!(store.deposits().len(), 3);

    let huge_ref = format!("{huge}:{}", transfer_log_index(&g, &huge).await);
    assert_eq!(r.anomalies.len(), 1);
    assert_eq!(r.anomalies[0].reference, huge_ref);
    assert_eq!(r.anomalies[0].from, Some(owner));
    assert!(
        r.anomalies[0].to_string().contains(&pow2_decimal(130)),
        "{}",
        r.anomalies[0]
    );
    assert_eq!(store.anomalies(), vec![huge_ref.clone()]);
    assert!(store.get(&huge_ref).is_none());

    // The chain agrees on what the deposit address holds (2^130 + the three deposits).
    let held = U256::from_be_bytes(g.token_balance(token, dep).await);
    let mut sum = pow2(130);
    let low = 250_000u128 + 7 * ETHER + 400;
    sum[16..].copy_from_slice(&low.to_be_bytes());
    assert_eq!(held, U256::from_be_bytes(sum));
}

fn pow2_decimal(bit: u32) -> String {
    U256::from_be_bytes(pow2(bit)).to_string()
}

#[tokio::test]
async fn a_restart_between_deposit_and_confirmation_credits_once() {
    let g = Ganache::start().await;
    let (alice, dep) = (g.accounts[1], g.accounts[9]);
    g.mine(5).await;
    let store = Arc::new(MemStore::new());
    store.link(alice, "alice");
    let cfg = g.watcher_config(dep, Asset::Native, 4);

    // First watcher, running its loop.
    let (stop, stop_rx) = watch::channel(false);
    let first = Watcher::new(cfg.clone(), store.clone())
        .unwrap()
        .spawn(stop_rx);
    let tx = g.send_value(alice, dep, 42 * ETHER).await;
    let (b, _) = g.block_of(&tx).await;
    // It catches up to the last confirmed block, which is before the deposit, and stays there.
    wait_until(10, "the first watcher to catch up", || {
        store.cursor_now() >= Some(b - 3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await; // a few more polls
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the watcher stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(store.cursor_now(), Some(b - 3));
    assert_eq!(store.balance("alice"), 0);
    assert!(store.get(&tx.to_string()).is_none());

    // The deposit gets its confirmations while no watcher runs.
    g.mine(3).await;

    // A new watcher on the same store resumes from the cursor.
    let second = Watcher::new(cfg, store.clone()).unwrap();
    let r = second.poll_once().await.unwrap();
    assert_eq!(r.cursor_before, Some(b - 3));
    assert_eq!(r.deposits.len(), 1);
    assert_eq!(r.deposits[0].reference, tx.to_string());
    assert_eq!(store.balance("alice"), 42 * ETHER);
    let r = second.poll_once().await.unwrap();
    assert!(r.deposits.is_empty());
    assert_eq!(store.times_received(&tx.to_string()), 1);
    assert_eq!(store.total_credited(), 42 * ETHER);
}

#[tokio::test]
async fn a_transfer_seen_twice_is_credited_once() {
    let g = Ganache::start().await;
    let (alice, bob, dep) = (g.accounts[1], g.accounts[2], g.accounts[9]);
    let token = g.deploy_token(bob, word(1_000 * ETHER)).await;
    let store = Arc::new(MemStore::new());
    store.link(alice, "alice");
    store.link(bob, "bob");

    let native = g.send_value(alice, dep, 3 * ETHER).await;
    let w = Watcher::new(g.watcher_config(dep, Asset::Native, 1), store.clone()).unwrap();
    let r = w.poll_once().await.unwrap();
    assert_eq!(r.deposits.len(), 1);
    assert_eq!(store.balance("alice"), 3 * ETHER);

    // Cursor moved back (an operator forcing a re-scan): the same transfer is reported again,
    // the store keeps it once.
    store.set_cursor(None);
    let r = w.poll_once().await.unwrap();
    assert_eq!(r.deposits.len(), 1);
    assert_eq!(r.deposits[0].reference, native.to_string());
    assert_eq!(store.times_received(&native.to_string()), 2);
    assert_eq!(store.balance("alice"), 3 * ETHER);

    // Two watchers over the same range at the same time, on fresh stores: whichever commits
    // second hands the store references it already has.
    let tok = g.token_transfer(token, bob, dep, word(11)).await;
    let tok_ref = format!("{tok}:{}", transfer_log_index(&g, &tok).await);
    for (asset, reference, account, amount) in [
        (Asset::Native, native.to_string(), "alice", 3 * ETHER),
        (Asset::Erc20 { contract: token }, tok_ref, "bob", 11),
    ] {
        let fresh = Arc::new(MemStore::new());
        fresh.link(alice, "alice");
        fresh.link(bob, "bob");
        let w1 = Watcher::new(g.watcher_config(dep, asset, 1), fresh.clone()).unwrap();
        let w2 = Watcher::new(g.watcher_config(dep, asset, 1), fresh.clone()).unwrap();
        let (r1, r2) = tokio::join!(w1.poll_once(), w2.poll_once());
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        let seen: Vec<&Deposit> = r1.deposits.iter().chain(&r2.deposits).collect();
        assert!(!seen.is_empty() && seen.iter().all(|d| d.reference == reference));
        assert_eq!(fresh.times_received(&reference), seen.len());
        assert_eq!(fresh.balance(account), amount);
        assert_eq!(fresh.total_credited(), amount);
    }
}

#[tokio::test]
async fn a_deposit_before_the_wallet_is_linked_is_kept_and_credited_on_link() {
    let g = Ganache::start().await;
    let (alice, dep) = (g.accounts[1], g.accounts[9]);
    let store = Arc::new(MemStore::new());
    let w = Watcher::new(g.watcher_config(dep, Asset::Native, 1), store.clone()).unwrap();

    let early = g.send_value(alice, dep, 5 * ETHER).await;
    w.poll_once().await.unwrap();
    let kept = store
        .get(&early.to_string())
        .expect("recorded although unlinked");
    assert_eq!(kept.credited_to, None);
    assert_eq!(store.balance("alice"), 0);

    store.link(alice, "alice");
    assert_eq!(store.balance("alice"), 5 * ETHER);

    // Later deposits are credited at once; a re-scan changes nothing.
    g.send_value(alice, dep, ETHER).await;
    w.poll_once().await.unwrap();
    assert_eq!(store.balance("alice"), 6 * ETHER);
    store.set_cursor(None);
    w.poll_once().await.unwrap();
    assert_eq!(store.balance("alice"), 6 * ETHER);
    assert_eq!(store.total_credited(), 6 * ETHER);
}

#[tokio::test]
async fn the_run_loop_credits_as_blocks_arrive_and_checks_the_chain_id() {
    let g = Ganache::start().await;
    let (alice, dep) = (g.accounts[1], g.accounts[9]);
    let store = Arc::new(MemStore::new());
    store.link(alice, "alice");

    // A node of another chain is refused at once.
    let mut wrong = g.watcher_config(dep, Asset::Native, 1);
    wrong.expected_chain_id = Some(1);
    let (_keep, rx) = watch::channel(false);
    let err = Watcher::new(wrong, store.clone())
        .unwrap()
        .run(rx)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        WatchError::WrongChain {
            expected: 1,
            actual: 1337
        }
    ));

    let (stop, rx) = watch::channel(false);
    let task = Watcher::new(g.watcher_config(dep, Asset::Native, 2), store.clone())
        .unwrap()
        .spawn(rx);
    g.send_value(alice, dep, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.balance("alice"), 0, "one confirmation is not two");
    g.mine(1).await;
    wait_until(10, "the deposit to be credited", || {
        store.balance("alice") == 10
    })
    .await;
    g.send_value(alice, dep, 20).await;
    g.mine(1).await;
    wait_until(10, "the second deposit", || store.balance("alice") == 30).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
    let commits = store.commits();
    assert!(commits.windows(2).all(|w| w[0].0 < w[1].0), "{commits:?}");
}
