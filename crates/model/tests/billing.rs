//! Billing in the core: concurrent purchases never overdraw, references apply once, packages
//! expire on an injected clock, deposits are credited exactly once (also after a late link).

use std::sync::Arc;

use bytes::Bytes;
use stratus_config::{Amount, BillingConfig, PackageConfig, StorageConfig};
use stratus_model::account::{Account, Accounts};
use stratus_model::billing::{self, Billing, ChainDeposits, EntryKind, Posted, Posting};
use stratus_model::clock::{ManualClock, SharedClock};
use stratus_model::db::Db;
use stratus_model::storage::Storage;
use stratus_model::wallet::Address;
use stratus_model::Error;

const DAY: i64 = 24 * 3600 * 1000;
const PRICE: u128 = 1_000_000_000_000_000_000; // 1 ether: beyond 2^53, as real prices are

struct World {
    _dir: tempfile::TempDir,
    db: Db,
    clock: ManualClock,
    billing: Billing,
    storage: Storage,
    accounts: Accounts,
}

async fn world(free_bytes: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("b.db")).await.unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let shared: SharedClock = Arc::new(clock.clone());
    let cfg = BillingConfig {
        packages: vec![PackageConfig {
            id: 7,
            name: "small".into(),
            bytes: 1_000_000,
            days: 30,
            price: Amount(PRICE),
        }],
        ..BillingConfig::default()
    };
    let billing = Billing::new(db.clone(), shared.clone(), cfg);
    let storage = Storage::new(
        db.clone(),
        shared,
        StorageConfig {
            free_bytes,
            ..StorageConfig::default()
        },
        dir.path(),
        billing::allowance(&billing),
    )
    .unwrap();
    World {
        accounts: Accounts::new(db.clone()),
        _dir: dir,
        db,
        clock,
        billing,
        storage,
    }
}

async fn account(w: &World, name: &str) -> Account {
    w.accounts.create_with_password(name, "h", 0).await.unwrap()
}

async fn credit(w: &World, a: &Account, amount: u128, reference: &str) -> Posted {
    w.billing
        .ledger()
        .post(Posting {
            account_id: &a.id,
            kind: EntryKind::Credit,
            amount: Amount(amount),
            reason: "admin",
            reference,
            memo: "test",
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_parallel_purchases_never_overdraw() {
    let w = world(0).await;
    let a = account(&w, "buyer").await;
    let k = 37u128;
    credit(&w, &a, k * PRICE + PRICE / 2, "seed").await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let b = w.billing.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move { b.buy(&id, "mefs", 7, 1).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::InsufficientBalance { needed, available }) => {
                assert_eq!(needed, Amount(PRICE));
                assert!(available.0 < PRICE);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, k as usize, "exactly k purchases succeed");
    assert_eq!(
        w.billing.ledger().balance(&a.id).await.unwrap(),
        Amount(PRICE / 2)
    );
    let v = w.billing.ledger().verify().await.unwrap();
    assert!(v.mismatches.is_empty());
    assert_eq!(
        v.total_debits,
        Amount(k * PRICE),
        "debits = purchases × price"
    );
    assert_eq!(v.total_credits, Amount(k * PRICE + PRICE / 2));
    assert_eq!(
        w.billing
            .purchases(&a.id, Some("mefs"))
            .await
            .unwrap()
            .len(),
        k as usize
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_applies_once() {
    let w = world(0).await;
    let a = account(&w, "alice").await;
    assert!(matches!(credit(&w, &a, 5, "r1").await, Posted::New(_)));
    assert!(matches!(
        credit(&w, &a, 5, "r1").await,
        Posted::Duplicate(_)
    ));
    assert_eq!(w.billing.ledger().balance(&a.id).await.unwrap(), Amount(5));
    // The same reference with another amount is a conflict, not a second credit.
    let e = w
        .billing
        .ledger()
        .post(Posting {
            account_id: &a.id,
            kind: EntryKind::Credit,
            amount: Amount(6),
            reason: "admin",
            reference: "r1",
            memo: "",
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    // A debit retried once the balance no longer covers it is the same debit, not a refusal.
    let debit = || {
        w.billing.ledger().post(Posting {
            account_id: &a.id,
            kind: EntryKind::Debit,
            amount: Amount(5),
            reason: "purchase",
            reference: "d1",
            memo: "",
        })
    };
    assert!(matches!(debit().await.unwrap(), Posted::New(_)));
    assert!(matches!(debit().await.unwrap(), Posted::Duplicate(_)));
    assert_eq!(w.billing.ledger().balance(&a.id).await.unwrap(), Amount(0));
    credit(&w, &a, 5, "r2").await;
    // Zero and unknown packages and absurd quantities are refused.
    for (pkg, q) in [(7, 0), (7, -1), (7, 1_000_000), (99, 1)] {
        let e = w.billing.buy(&a.id, "mefs", pkg, q).await.unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{pkg} {q}: {e}");
    }
    assert_eq!(w.billing.ledger().balance(&a.id).await.unwrap(), Amount(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn packages_add_space_until_they_expire_and_nothing_is_deleted() {
    let w = world(100_000).await;
    let a = account(&w, "carol").await;
    credit(&w, &a, PRICE, "seed").await;
    let put = |n: usize| {
        let s = w.storage.clone();
        let id = a.id.clone();
        async move {
            let mut up = s.begin_upload(&id, "mefs", "f", None).await?;
            up.write(Bytes::from(vec![n as u8; n])).await?;
            up.finish().await
        }
    };
    assert!(matches!(
        put(200_000).await,
        Err(Error::QuotaExceeded { .. })
    ));
    w.billing.buy(&a.id, "mefs", 7, 1).await.unwrap();
    assert_eq!(
        w.storage.limit(&a.id, "mefs").await.unwrap(),
        (100_000, 1_000_000)
    );
    assert_eq!(
        w.storage.limit(&a.id, "ipfs").await.unwrap(),
        (100_000, 0),
        "per target"
    );
    put(200_000).await.unwrap();
    // One day before the end: still there.
    w.clock.advance_ms(29 * DAY);
    put(300_000).await.unwrap();
    // Expired: new uploads are refused, nothing stored is deleted.
    w.clock.advance_ms(DAY + 1);
    assert_eq!(w.storage.limit(&a.id, "mefs").await.unwrap(), (100_000, 0));
    assert!(matches!(put(1_000).await, Err(Error::QuotaExceeded { .. })));
    let listed = w.storage.list(&a.id, "mefs", None, None).await.unwrap();
    assert_eq!(listed.objects.len(), 2);
    let p = &w.billing.purchases(&a.id, None).await.unwrap()[0];
    assert!(!p.active_at(w.clock_now()));
    // Room again after deleting: uploads within the free tier work.
    for o in listed.objects {
        w.storage.delete(&a.id, "mefs", &o.cid, None).await.unwrap();
    }
    put(1_000).await.unwrap();
}

impl World {
    fn clock_now(&self) -> i64 {
        use stratus_model::clock::Clock;
        self.clock.now_ms()
    }
}

fn deposit(reference: &str, from: Address, amount: u128, block: u64) -> stratus_chain::Deposit {
    stratus_chain::Deposit {
        reference: reference.into(),
        from,
        amount,
        block_number: block,
        block_hash: [block as u8; 32],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deposits_are_credited_once_and_on_a_late_link() {
    use stratus_chain::DepositStore;
    let w = world(0).await;
    let store = ChainDeposits::new(w.db.clone(), Arc::new(w.clock.clone()));
    let linked = Address::repeat_byte(1);
    let later = Address::repeat_byte(2);
    let a = w
        .accounts
        .get_or_create_for_wallet(linked, 0)
        .await
        .unwrap();
    let b = account(&w, "dave").await;
    assert_eq!(store.cursor().await.unwrap(), None);
    store
        .commit(
            10,
            &[
                deposit("0xaa", linked, 50, 9),
                deposit("0xbb", later, 70, 10),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.cursor().await.unwrap(), Some(10));
    assert_eq!(w.billing.ledger().balance(&a.id).await.unwrap(), Amount(50));
    // Seen twice (a re-scan): nothing changes.
    store.rescan_from(5).await.unwrap();
    assert_eq!(store.cursor().await.unwrap(), Some(4));
    store
        .commit(
            10,
            &[
                deposit("0xaa", linked, 50, 9),
                deposit("0xbb", later, 70, 10),
            ],
        )
        .await
        .unwrap();
    assert_eq!(w.billing.ledger().balance(&a.id).await.unwrap(), Amount(50));
    // The unknown wallet is linked later: its deposit is credited then, once.
    let credited = w.billing.link_wallet(&w.accounts, &b, later).await.unwrap();
    assert_eq!(credited, Amount(70));
    assert_eq!(w.billing.ledger().balance(&b.id).await.unwrap(), Amount(70));
    store
        .commit(11, &[deposit("0xbb", later, 70, 10)])
        .await
        .unwrap();
    store
        .commit(12, &[deposit("0xcc", later, 5, 12)])
        .await
        .unwrap();
    assert_eq!(w.billing.ledger().balance(&b.id).await.unwrap(), Amount(75));
    // A wallet linked to one account cannot be linked to another.
    let e = w
        .billing
        .link_wallet(&w.accounts, &b, linked)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let v = w.billing.ledger().verify().await.unwrap();
    assert!(v.mismatches.is_empty());
    assert_eq!(v.entries, 3);
}
