//! Crash recovery of the storage core, driven through its API with the database put in the
//! states a crash leaves behind.

use std::sync::Arc;

use bytes::Bytes;
use stratus_config::StorageConfig;
use stratus_model::account::Accounts;
use stratus_model::clock::SystemClock;
use stratus_model::db::Db;
use stratus_model::storage::{FreeTierOnly, Storage};

async fn setup() -> (tempfile::TempDir, Db, Storage, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("s.db")).await.unwrap();
    let storage = Storage::new(
        db.clone(),
        Arc::new(SystemClock),
        StorageConfig::default(),
        dir.path(),
        Arc::new(FreeTierOnly),
    )
    .unwrap();
    let accounts = Accounts::new(db.clone());
    let a = accounts
        .create_with_password("alice", "x", 0)
        .await
        .unwrap();
    let b = accounts
        .create_with_password("bobby", "x", 0)
        .await
        .unwrap();
    (dir, db, storage, a.id, b.id)
}

async fn store(s: &Storage, account: &str, bytes: &[u8]) -> String {
    let mut up = s.begin_upload(account, "mefs", "f", None).await.unwrap();
    up.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    up.finish().await.unwrap().cid
}

fn blob_path(dir: &std::path::Path, cid: &str) -> std::path::PathBuf {
    dir.join("blobs").join(&cid[cid.len() - 2..]).join(cid)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_delete_never_loses_referenced_bytes() {
    let (dir, db, s, a, b) = setup().await;
    let shared = store(&s, &a, b"shared content").await;
    assert_eq!(store(&s, &b, b"shared content").await, shared);
    let orphan = store(&s, &a, b"only alice had this").await;

    // A crash after the orphan's record was removed and its blob marked, before the bytes went.
    sqlx::query("DELETE FROM objects WHERE cid = $1")
        .bind(&orphan)
        .execute(db.w())
        .await
        .unwrap();
    sqlx::query("UPDATE blobs SET state = 'deleting' WHERE cid = $1")
        .bind(&orphan)
        .execute(db.w())
        .await
        .unwrap();
    // A blob wrongly left 'deleting' while still referenced must survive recovery.
    sqlx::query("UPDATE blobs SET state = 'deleting' WHERE cid = $1")
        .bind(&shared)
        .execute(db.w())
        .await
        .unwrap();
    // A commit interrupted after the rename, before publication: referenced by nobody.
    let pending = store(&s, &a, b"half committed").await;
    sqlx::query("DELETE FROM objects WHERE cid = $1")
        .bind(&pending)
        .execute(db.w())
        .await
        .unwrap();
    sqlx::query("UPDATE blobs SET state = 'pending' WHERE cid = $1")
        .bind(&pending)
        .execute(db.w())
        .await
        .unwrap();

    s.recover().await.unwrap();

    assert!(
        blob_path(dir.path(), &shared).exists(),
        "referenced bytes kept"
    );
    assert!(
        !blob_path(dir.path(), &orphan).exists(),
        "unreferenced bytes removed"
    );
    assert!(
        !blob_path(dir.path(), &pending).exists(),
        "unpublished bytes removed"
    );
    let states: Vec<(String, String)> = sqlx::query_as("SELECT cid, state FROM blobs ORDER BY cid")
        .fetch_all(db.r())
        .await
        .unwrap();
    assert_eq!(states, vec![(shared.clone(), "live".to_string())]);
    let blocks: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT root FROM blocks")
        .fetch_all(db.r())
        .await
        .unwrap();
    assert_eq!(blocks, vec![(shared.clone(),)]);
    // It is served again, and the next delete by one owner keeps it for the other.
    assert!(s
        .resolve("mefs", &shared.parse().unwrap())
        .await
        .unwrap()
        .is_some());
    s.delete(&a, "mefs", &shared, None).await.unwrap();
    assert!(blob_path(dir.path(), &shared).exists());
    s.delete(&b, "mefs", &shared, None).await.unwrap();
    assert!(!blob_path(dir.path(), &shared).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_upload_leaves_nothing() {
    let (dir, _db, s, a, _) = setup().await;
    {
        let mut up = s.begin_upload(&a, "mefs", "f", None).await.unwrap();
        up.write(Bytes::from(vec![1u8; 3_000_000])).await.unwrap();
    }
    // The worker notices the abandoned upload and removes its staging file.
    for _ in 0..100 {
        if std::fs::read_dir(dir.path().join("blobs/.staging"))
            .unwrap()
            .count()
            == 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/.staging"))
            .unwrap()
            .count(),
        0
    );
    assert!(s
        .list(&a, "mefs", None, None)
        .await
        .unwrap()
        .objects
        .is_empty());
}
