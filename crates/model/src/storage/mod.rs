//! Content-addressed storage: the `mefs` and `ipfs` targets.
//!
//! A target is bound by configuration to a blob store (see `stratus_block`) and an import profile.
//! Uploaded bytes are hashed into a UnixFS DAG while they stream into a staging area; the file's
//! bytes become a *blob* named by the root CID, every block of the DAG gets an index row (leaves
//! point into the blob, inner nodes are kept inline), and the uploader gets an *object* record.
//! Identical content in one backend is stored once, with a record per owner.
//!
//! Invariants: an object is visible only once its blob is durable and fully indexed; a blob is
//! deleted only when no object references it (decided in one transaction); every half-done commit
//! or delete is finished by [`Storage::recover`] at start.
//!
//! Several nodes (server processes, each with its own server id) may share one database and one
//! blob store. Blob state transitions are compare-and-set in the database (see `delete`), and
//! in-flight work belongs to the node that started it: a `pending` or `deleting` blob row names
//! its node, staging names carry it. A node's [`Storage::recover`] touches only its own;
//! [`Storage::collect_garbage`], run by the holder of the `storage-gc` lease, reclaims the work of
//! nodes whose `node:<id>` lease has expired.

mod delete;
mod fsck;
mod object;
mod read;
mod upload;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use stratus_block::BlobStore;
use stratus_config::StorageConfig;
use stratus_unixfs::Profile;
use tokio::sync::{Mutex, MutexGuard};

pub use fsck::{FsckIssue, FsckReport};
pub use object::{Object, Page, Usage};
pub use read::{BlockKind, Resolved};
pub use upload::Upload;

use crate::clock::SharedClock;
use crate::db::Db;
use crate::{Error, Result};

/// Extra bytes an account may store in a target beyond the free tier (purchased packages).
#[async_trait::async_trait]
pub trait Allowance: Send + Sync + std::fmt::Debug {
    async fn extra_bytes(&self, account_id: &str, target: &str, now_ms: i64) -> Result<u64>;
}

/// No packages: only the free tier.
#[derive(Debug, Default)]
pub struct FreeTierOnly;

#[async_trait::async_trait]
impl Allowance for FreeTierOnly {
    async fn extra_bytes(&self, _: &str, _: &str, _: i64) -> Result<u64> {
        Ok(0)
    }
}

/// One storage target.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub store: Arc<dyn BlobStore>,
    pub profile: Profile,
}

/// The storage service.
#[derive(Debug, Clone)]
pub struct Storage {
    db: Db,
    clock: SharedClock,
    cfg: StorageConfig,
    targets: Arc<BTreeMap<String, Target>>,
    tmp_dir: PathBuf,
    allowance: Arc<dyn Allowance>,
    locks: Arc<Vec<Mutex<()>>>,
    /// This node's id (the server id).
    node: String,
}

/// The name prefix of the leases that say which nodes are alive (`node:<id>`).
pub const NODE_LEASE_PREFIX: &str = "node:";

/// How long an upload waits for another live node's commit or delete of the same blob.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

const LOCK_STRIPES: usize = 256;

/// What a client learns when a blob store fails (the cause, which may name paths, is logged).
const STORE_UNAVAILABLE: &str = "the storage backend is unavailable";

impl Storage {
    /// Opens every configured target's blob store.
    pub fn new(
        db: Db,
        clock: SharedClock,
        cfg: StorageConfig,
        data_dir: &std::path::Path,
        allowance: Arc<dyn Allowance>,
    ) -> Result<Storage> {
        let mut targets = BTreeMap::new();
        for (name, t) in &cfg.targets {
            let store = stratus_block::open(&t.backend, data_dir).map_err(|e| match e {
                stratus_block::BlobError::Config(m) => {
                    Error::invalid(crate::Field::StorageTarget, format!("target {name}: {m}"))
                }
                e => Error::Internal(format!("storage target {name}: {e}")),
            })?;
            let profile = Profile::by_name(&t.profile)
                .ok_or_else(|| Error::Internal(format!("unknown profile {}", t.profile)))?;
            targets.insert(
                name.clone(),
                Target {
                    name: name.clone(),
                    store,
                    profile,
                },
            );
        }
        let tmp_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        let node = stratus_config::load_or_create_server_id(data_dir).map_err(Error::internal)?;
        Ok(Storage {
            db,
            clock,
            cfg,
            targets: Arc::new(targets),
            tmp_dir,
            allowance,
            locks: Arc::new((0..LOCK_STRIPES).map(|_| Mutex::new(())).collect()),
            node,
        })
    }

    /// This node's id: what its in-flight blob rows and staging names carry.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A blob row's state and owning node.
    async fn blob_state(
        &self,
        backend: &str,
        cid: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        Ok(
            sqlx::query_as("SELECT state, node FROM blobs WHERE backend = $1 AND cid = $2")
                .bind(backend)
                .bind(cid)
                .fetch_optional(self.db.w())
                .await?,
        )
    }

    /// Whether this node may take over in-flight work owned by `owner`: its own (this process
    /// holds the blob's lock, so nothing of its own is in flight), a row from before nodes
    /// existed, or a node whose lease has expired.
    async fn may_take(&self, owner: Option<&str>) -> Result<bool> {
        match owner {
            None => Ok(true),
            Some(n) if n == self.node => Ok(true),
            Some(n) => Ok(!self.live_nodes().await?.iter().any(|l| l == n)),
        }
    }

    /// The nodes whose lease is live, this one included.
    async fn live_nodes(&self) -> Result<Vec<String>> {
        let mut live = self
            .db
            .live_holders(NODE_LEASE_PREFIX)
            .await
            .map_err(Error::from)?;
        live.push(self.node.clone());
        Ok(live)
    }

    /// The target called `name` (`mefs`, `ipfs`), or `None` if not configured.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.get(name)
    }

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }

    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    /// Serializes commits and deletes of one blob within this process.
    async fn lock_blob(&self, backend: &str, cid: &str) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (backend, cid).hash(&mut h);
        self.locks[(h.finish() as usize) % LOCK_STRIPES]
            .lock()
            .await
    }

    /// Bytes the account may store in `target`: the free tier plus unexpired packages.
    pub async fn limit(&self, account_id: &str, target: &str) -> Result<(u64, u64)> {
        let extra = self
            .allowance
            .extra_bytes(account_id, target, self.clock.now_ms())
            .await?;
        Ok((self.cfg.free_bytes, extra))
    }

    /// Removes leftovers of this node's interrupted uploads and finishes its interrupted commits
    /// and deletes. Other nodes' work is left alone: they may be running.
    pub async fn recover(&self) -> Result<()> {
        for t in self.targets.values() {
            let n = t
                .store
                .clean_staging(&self.node)
                .await
                .map_err(Error::internal)?;
            if n > 0 {
                tracing::warn!(target = %t.name, leftovers = n, "removed interrupted uploads");
            }
        }
        // The spill files of interrupted uploads (the tmp dir is this node's own).
        if let Ok(rd) = std::fs::read_dir(&self.tmp_dir) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.finish_pending_deletes(&[]).await?;
        Ok(())
    }

    /// Reclaims the work of nodes that are gone (their lease expired): their staging leftovers
    /// and incomplete multipart uploads, and their `pending`/`deleting` blobs. Run by the holder
    /// of the `storage-gc` lease; harmless anywhere (it never touches a live node's work).
    /// Returns how many leftovers and blobs it dealt with.
    pub async fn collect_garbage(&self) -> Result<u64> {
        let live = self.live_nodes().await?;
        let mut n = 0;
        for t in self.targets.values() {
            let nodes = t.store.staging_nodes().await.map_err(Error::internal)?;
            for dead in nodes.iter().filter(|s| !live.contains(s)) {
                let k = t.store.clean_staging(dead).await.map_err(Error::internal)?;
                if k > 0 {
                    tracing::info!(target = %t.name, node = %dead, leftovers = k, "removed a gone node's interrupted uploads");
                }
                n += k;
            }
        }
        n += self.finish_pending_deletes(&live).await?;
        Ok(n)
    }
}
