//! Several nodes on one database and one blob store: compare-and-set blob states and
//! node-scoped recovery, driven through the storage API with two `Storage` values (two data
//! directories, so two node ids) sharing a database and a blob directory. The database is an
//! embedded SQLite file, or a fresh PostgreSQL database under `STRATUS_TEST_PG` (a base URL).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_config::{BackendConfig, StorageConfig};
use stratus_model::account::Accounts;
use stratus_model::clock::SystemClock;
use stratus_model::db::Db;
use stratus_model::storage::{FreeTierOnly, Storage};

/// A PostgreSQL database made for one test, dropped with it.
struct PgDb {
    base: String,
    name: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(&self.base)
            .args(["-qAt", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// The test's database: SQLite in `dir`, or PostgreSQL under `STRATUS_TEST_PG`.
async fn open_db(dir: &std::path::Path) -> (Db, Option<PgDb>) {
    let Some(base) = std::env::var("STRATUS_TEST_PG")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return (Db::open_sqlite(&dir.join("s.db")).await.unwrap(), None);
    };
    let name = format!("stratus_n_{}", uuid::Uuid::new_v4().simple());
    let url = stratus_store::create_database(&base, &name).await.unwrap();
    let db = Db::open(
        stratus_model::db::Location::Url(&url),
        &stratus_model::db::Options::default(),
    )
    .await
    .unwrap();
    (db, Some(PgDb { base, name }))
}

struct Nodes {
    _dir: tempfile::TempDir,
    // Dropped WITH (FORCE): the sessions `db` and the nodes still hold are ended.
    _pg: Option<PgDb>,
    blobs: std::path::PathBuf,
    db: Db,
    a: Storage,
    b: Storage,
    alice: String,
    bob: String,
}

async fn setup() -> Nodes {
    let dir = tempfile::tempdir().unwrap();
    let (db, pg) = open_db(dir.path()).await;
    let blobs = dir.path().join("blobs");
    let mut cfg = StorageConfig::default();
    for t in cfg.targets.values_mut() {
        t.backend = BackendConfig::Local {
            path: blobs.clone(),
        };
    }
    let node = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        Storage::new(
            db.clone(),
            Arc::new(SystemClock),
            cfg.clone(),
            &d,
            Arc::new(FreeTierOnly),
        )
        .unwrap()
    };
    let (a, b) = (node("a"), node("b"));
    assert_ne!(a.node(), b.node());
    let accounts = Accounts::new(db.clone());
    let alice = accounts
        .create_with_password("alice", "x", 0)
        .await
        .unwrap();
    let bob = accounts
        .create_with_password("bobby", "x", 0)
        .await
        .unwrap();
    Nodes {
        _dir: dir,
        _pg: pg,
        blobs,
        db,
        a,
        b,
        alice: alice.id,
        bob: bob.id,
    }
}

async fn store(s: &Storage, account: &str, bytes: &[u8]) -> String {
    let mut up = s.begin_upload(account, "mefs", "f", None).await.unwrap();
    up.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    up.finish().await.unwrap().cid
}

impl Nodes {
    fn blob(&self, cid: &str) -> std::path::PathBuf {
        self.blobs.join(&cid[cid.len() - 2..]).join(cid)
    }

    async fn set(&self, cid: &str, state: &str, node: &str) {
        sqlx::query("UPDATE blobs SET state = $1, node = $2 WHERE cid = $3")
            .bind(state)
            .bind(node)
            .bind(cid)
            .execute(self.db.w())
            .await
            .unwrap();
    }

    async fn row(&self, cid: &str) -> Option<(String, Option<String>)> {
        sqlx::query_as("SELECT state, node FROM blobs WHERE cid = $1")
            .bind(cid)
            .fetch_optional(self.db.r())
            .await
            .unwrap()
    }

    /// Leaves `cid` as an upload by `node` that crashed between writing and publishing.
    async fn half_committed(&self, cid: &str, node: &str) {
        sqlx::query("DELETE FROM objects WHERE cid = $1")
            .bind(cid)
            .execute(self.db.w())
            .await
            .unwrap();
        self.set(cid, "pending", node).await;
    }

    fn staging(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.blobs.join(".staging"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_touches_only_the_nodes_own_work() {
    let n = setup().await;
    let (a, b) = (n.a.node().to_string(), n.b.node().to_string());
    let of_a = store(&n.a, &n.alice, b"in flight on a").await;
    n.half_committed(&of_a, &a).await;
    let of_b = store(&n.b, &n.alice, b"in flight on b").await;
    n.half_committed(&of_b, &b).await;
    std::fs::write(n.blobs.join(".staging").join(format!("{a}.x")), b"a").unwrap();
    std::fs::write(n.blobs.join(".staging").join(format!("{b}.x")), b"b").unwrap();

    n.b.recover().await.unwrap();
    assert_eq!(
        n.row(&of_a).await,
        Some(("pending".into(), Some(a.clone())))
    );
    assert!(
        n.blob(&of_a).exists(),
        "another node's upload is left alone"
    );
    assert_eq!(n.row(&of_b).await, None);
    assert!(
        !n.blob(&of_b).exists(),
        "the node's own leftover is removed"
    );
    assert_eq!(n.staging(), vec![format!("{a}.x")]);

    n.a.recover().await.unwrap();
    assert_eq!(n.row(&of_a).await, None);
    assert!(!n.blob(&of_a).exists());
    assert!(n.staging().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_reclaims_the_work_of_gone_nodes_only() {
    let n = setup().await;
    let a = n.a.node().to_string();
    let cid = store(&n.a, &n.alice, b"abandoned by a").await;
    n.half_committed(&cid, &a).await;
    std::fs::write(n.blobs.join(".staging").join(format!("{a}.x")), b"a").unwrap();

    // While a's lease lives, b leaves its work alone.
    assert!(n
        .db
        .try_lease(&format!("node:{a}"), &a, Duration::from_secs(60))
        .await
        .unwrap());
    assert_eq!(n.b.collect_garbage().await.unwrap(), 0);
    assert!(n.blob(&cid).exists());
    assert_eq!(n.row(&cid).await, Some(("pending".into(), Some(a.clone()))));

    // Once it is gone, b reclaims staging leftovers and the pending blob.
    n.db.release_lease(&format!("node:{a}"), &a).await.unwrap();
    assert_eq!(n.b.collect_garbage().await.unwrap(), 2);
    assert!(!n.blob(&cid).exists());
    assert_eq!(n.row(&cid).await, None);
    assert!(n.staging().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_leaves_a_blob_another_node_is_committing() {
    let n = setup().await;
    let cid = store(&n.a, &n.alice, b"shared bytes").await;
    // Node b claimed the blob for an upload of the same bytes (pending, its node, alive).
    let b = n.b.node().to_string();
    n.set(&cid, "pending", &b).await;
    n.a.delete(&n.alice, "mefs", &cid, None).await.unwrap();
    assert_eq!(n.row(&cid).await, Some(("pending".into(), Some(b))));
    assert!(n.blob(&cid).exists(), "the bytes b is committing stay");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_waits_for_another_nodes_delete_then_writes_the_bytes_again() {
    let n = setup().await;
    let data = b"deleted and uploaded at once";
    let cid = store(&n.a, &n.alice, data).await;
    // Node b (alive) marked the blob and is removing it.
    let b = n.b.node().to_string();
    assert!(n
        .db
        .try_lease(&format!("node:{b}"), &b, Duration::from_secs(60))
        .await
        .unwrap());
    sqlx::query("DELETE FROM objects WHERE cid = $1")
        .bind(&cid)
        .execute(n.db.w())
        .await
        .unwrap();
    n.set(&cid, "deleting", &b).await;
    let upload = {
        let (a, bob) = (n.a.clone(), n.bob.clone());
        tokio::spawn(async move { store(&a, &bob, data).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!upload.is_finished(), "the upload waits for b's delete");
    // b finishes: bytes, then row.
    std::fs::remove_file(n.blob(&cid)).unwrap();
    sqlx::query("DELETE FROM blobs WHERE cid = $1")
        .bind(&cid)
        .execute(n.db.w())
        .await
        .unwrap();
    assert_eq!(upload.await.unwrap(), cid);
    assert_eq!(n.row(&cid).await, Some(("live".into(), None)));
    assert_eq!(std::fs::read(n.blob(&cid)).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_takes_over_a_gone_nodes_delete() {
    let n = setup().await;
    let data = b"a gone node was deleting this";
    let cid = store(&n.a, &n.alice, data).await;
    sqlx::query("DELETE FROM objects WHERE cid = $1")
        .bind(&cid)
        .execute(n.db.w())
        .await
        .unwrap();
    // A node that holds no lease: gone.
    n.set(&cid, "deleting", "deadbeef").await;
    assert_eq!(store(&n.a, &n.bob, data).await, cid);
    assert_eq!(n.row(&cid).await, Some(("live".into(), None)));
    assert_eq!(std::fs::read(n.blob(&cid)).unwrap(), data);
}
