//! Streaming upload: hash while the bytes arrive, commit atomically at the end.
//!
//! [`Upload::write`] hands each received piece to one blocking worker thread that appends it to
//! the blob store's staging area and feeds the UnixFS importer (whose leaf hashing runs on every
//! core); the DAG's index rows go to an anonymous spill file, so memory stays bounded whatever the
//! file size. The quota is enforced on every piece. [`Upload::finish`] makes the bytes durable and
//! publishes blob, block index and object in the order that keeps every crash harmless; dropping
//! an unfinished [`Upload`] removes everything it wrote.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use stratus_block::Staging;
use stratus_unixfs::{Cid, DagPbNode, Event, Importer, LeafFormat, Profile};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::read::BlockKind;
use super::{Object, Storage, Target};
use crate::{Error, Result};

enum Msg {
    Data(Bytes),
    Finish,
}

/// What the worker produced.
struct Staged {
    staging: Box<dyn Staging>,
    root: Cid,
    size: u64,
    profile: Profile,
    spill: File,
}

/// An upload in progress.
pub struct Upload {
    storage: Storage,
    account_id: String,
    target: Target,
    name: String,
    tx: Option<mpsc::Sender<Msg>>,
    worker: Option<JoinHandle<Result<Staged>>>,
    received: u64,
    used: u64,
    limit: u64,
    max_upload: u64,
}

/// One index row of the spill file.
struct BlockRow {
    cid: String,
    kind: BlockKind,
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
}

fn write_row(w: &mut impl Write, r: &BlockRow) -> std::io::Result<()> {
    let cid = r.cid.as_bytes();
    w.write_all(&[r.kind as u8, cid.len() as u8])?;
    w.write_all(cid)?;
    w.write_all(&r.offset.to_le_bytes())?;
    w.write_all(&r.len.to_le_bytes())?;
    let data = r.data.as_deref().unwrap_or(&[]);
    w.write_all(&(data.len() as u32).to_le_bytes())?;
    w.write_all(data)
}

fn read_row(r: &mut impl Read) -> std::io::Result<Option<BlockRow>> {
    let mut head = [0u8; 2];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut cid = vec![0u8; head[1] as usize];
    r.read_exact(&mut cid)?;
    let mut n8 = [0u8; 8];
    r.read_exact(&mut n8)?;
    let offset = u64::from_le_bytes(n8);
    r.read_exact(&mut n8)?;
    let len = u64::from_le_bytes(n8);
    let mut n4 = [0u8; 4];
    r.read_exact(&mut n4)?;
    let dlen = u32::from_le_bytes(n4) as usize;
    let data = if dlen > 0 {
        let mut d = vec![0u8; dlen];
        r.read_exact(&mut d)?;
        Some(d)
    } else {
        None
    };
    Ok(Some(BlockRow {
        cid: String::from_utf8(cid).map_err(std::io::Error::other)?,
        kind: BlockKind::from_code(head[0]).ok_or_else(|| std::io::Error::other("bad kind"))?,
        offset,
        len,
        data,
    }))
}

/// Turns importer events into index rows. Leaves arrive in file order and a node right after
/// the last leaf under it, so a node covers the `filesize` bytes ending at the last leaf's end.
struct Indexer {
    leaves: LeafFormat,
    leaf_end: u64,
}

impl Indexer {
    fn row(&mut self, ev: Event) -> Result<BlockRow> {
        Ok(match ev {
            Event::Leaf { cid, offset, len } => {
                self.leaf_end = offset + len as u64;
                BlockRow {
                    cid: cid.to_string(),
                    kind: match self.leaves {
                        LeafFormat::Raw => BlockKind::RawLeaf,
                        LeafFormat::DagPb => BlockKind::PbLeaf,
                    },
                    offset,
                    len: len as u64,
                    data: None,
                }
            }
            Event::Node { cid, bytes } => {
                let size = DagPbNode::decode(&bytes)
                    .and_then(|n| n.unixfs())
                    .map_err(Error::internal)?
                    .filesize
                    .unwrap_or(0);
                BlockRow {
                    cid: cid.to_string(),
                    kind: BlockKind::Node,
                    offset: self.leaf_end - size,
                    len: size,
                    data: Some(bytes.to_vec()),
                }
            }
        })
    }
}

fn worker(
    target: Target,
    node: String,
    profile: Profile,
    tmp_dir: std::path::PathBuf,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<Staged> {
    let mut staging = target.store.stage(&node)?;
    let mut spill = BufWriter::with_capacity(256 << 10, tempfile::tempfile_in(&tmp_dir)?);
    let mut importer = Importer::new(profile);
    let mut indexer = Indexer {
        leaves: profile.leaves,
        leaf_end: 0,
    };
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(b)) => {
                staging.write(&b)?;
                // The importer hashes the received frames where they lie.
                importer.write_bytes(b);
                for ev in importer.drain_events() {
                    write_row(&mut spill, &indexer.row(ev)?)?;
                }
            }
            Some(Msg::Finish) => break,
            // The upload was abandoned: dropping `staging` removes what it wrote.
            None => {
                return Err(Error::Invalid {
                    field: crate::Field::File,
                    message: "upload abandoned".into(),
                })
            }
        }
    }
    let imported = importer.finish();
    for ev in imported.events {
        write_row(&mut spill, &indexer.row(ev)?)?;
    }
    let mut spill = spill.into_inner().map_err(|e| e.into_error())?;
    spill.seek(SeekFrom::Start(0))?;
    Ok(Staged {
        staging,
        root: imported.root,
        size: imported.size,
        profile,
        spill,
    })
}

impl Storage {
    /// Starts an upload of a file called `name` into `target` for `account_id`.
    pub async fn begin_upload(
        &self,
        account_id: &str,
        target: &str,
        name: &str,
        profile: Option<Profile>,
    ) -> Result<Upload> {
        let target = self
            .target(target)
            .ok_or_else(|| Error::NotFound(format!("storage target {target}")))?
            .clone();
        let profile = profile.unwrap_or(target.profile);
        let usage = self.usage(account_id, &target.name).await?;
        let (free, extra) = self.limit(account_id, &target.name).await?;
        let (tx, rx) = mpsc::channel(32);
        let tmp = self.tmp_dir.clone();
        let t2 = target.clone();
        let node = self.node.clone();
        let worker = tokio::task::spawn_blocking(move || worker(t2, node, profile, tmp, rx));
        Ok(Upload {
            storage: self.clone(),
            account_id: account_id.to_string(),
            target,
            name: name.to_string(),
            tx: Some(tx),
            worker: Some(worker),
            received: 0,
            used: usage.used,
            limit: free.saturating_add(extra),
            max_upload: self.cfg.max_upload_bytes,
        })
    }

    /// Publishes a staged upload: blob durable first, then index and record in one transaction.
    /// The blob's state changes are compare-and-set (see the module doc for the interleavings).
    async fn commit(
        &self,
        account_id: &str,
        target: &Target,
        name: &str,
        staged: Staged,
    ) -> Result<Object> {
        let cid = staged.root.to_string();
        let backend = target.store.id().to_string();
        let guard = self.lock_blob(&backend, &cid).await;
        let now = self.clock.now_ms();
        let Staged {
            staging,
            size,
            profile,
            mut spill,
            ..
        } = staged;
        let record = Record {
            account_id,
            target,
            name,
            backend: &backend,
            cid: &cid,
            size,
            now,
        };
        let deadline = std::time::Instant::now() + super::BUSY_WAIT;
        loop {
            match self.blob_state(&backend, &cid).await? {
                Some((state, _)) if state == "live" => {
                    // Identical content is durable: publish a record of it, unless a delete
                    // (on any node) marked it in the meantime.
                    let published = self.publish(&record, Publish::Live).await?;
                    if let Some(o) = published {
                        // The staged copy is not needed.
                        tokio::task::spawn_blocking(move || drop(staging))
                            .await
                            .map_err(Error::internal)?;
                        return Ok(o);
                    }
                }
                seen => {
                    let claimable = match &seen {
                        None => true,
                        Some((_, owner)) => self.may_take(owner.as_deref()).await?,
                    };
                    if claimable {
                        if self
                            .claim_pending(&backend, &cid, size, profile.name, now, seen)
                            .await?
                        {
                            break;
                        }
                        // Somebody else changed it first: look again.
                        continue;
                    }
                    // Another live node is committing or deleting this blob: wait for it.
                    if std::time::Instant::now() > deadline {
                        return Err(Error::unavailable(
                            super::STORE_UNAVAILABLE,
                            format!("blob {cid} stayed busy on another node"),
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        // The blob row is `pending` and ours: write the bytes, then publish.
        let key = cid.clone();
        let committed = tokio::task::spawn_blocking(move || staging.commit(&key))
            .await
            .map_err(Error::internal)
            .and_then(|r| r.map_err(Error::from));
        if let Err(e) = committed {
            drop(guard);
            self.discard_unpublished(&backend, &cid).await;
            return Err(e);
        }
        spill.seek(SeekFrom::Start(0))?;
        let published = self.publish(&record, Publish::Pending(spill)).await;
        drop(guard);
        match published {
            Ok(Some(o)) => Ok(o),
            // Our claim was taken over (this node's lease had expired): the bytes are the
            // other node's business now.
            Ok(None) => Err(Error::unavailable(
                super::STORE_UNAVAILABLE,
                format!("the pending blob {cid} was reclaimed by another node"),
            )),
            Err(e) => {
                // Nothing references the blob we just wrote: remove it.
                self.discard_unpublished(&backend, &cid).await;
                Err(e)
            }
        }
    }

    /// Makes the blob row `pending` and this node's, if it is still as seen (`None`: absent).
    async fn claim_pending(
        &self,
        backend: &str,
        cid: &str,
        size: u64,
        profile: &str,
        now: i64,
        seen: Option<(String, Option<String>)>,
    ) -> Result<bool> {
        let n = match seen {
            None => sqlx::query(
                "INSERT INTO blobs (backend, cid, size, profile, state, created_at, node) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6) ON CONFLICT (backend, cid) DO NOTHING",
            )
            .bind(backend)
            .bind(cid)
            .bind(size as i64)
            .bind(profile)
            .bind(now)
            .bind(&self.node)
            .execute(self.db.w())
            .await?
            .rows_affected(),
            Some((state, owner)) => sqlx::query(
                "UPDATE blobs SET state = 'pending', node = $1, size = $2, profile = $3 \
                 WHERE backend = $4 AND cid = $5 AND state = $6 AND COALESCE(node, '') = $7",
            )
            .bind(&self.node)
            .bind(size as i64)
            .bind(profile)
            .bind(backend)
            .bind(cid)
            .bind(state)
            .bind(owner.unwrap_or_default())
            .execute(self.db.w())
            .await?
            .rows_affected(),
        };
        Ok(n == 1)
    }

    /// Inserts the object record (unless the same one exists) if the blob is as `blob` expects
    /// and the quota allows; `None` when the blob changed under us.
    async fn publish(&self, record: &Record<'_>, blob: Publish) -> Result<Option<Object>> {
        let Record {
            account_id,
            target,
            name,
            backend,
            cid,
            size,
            now,
        } = *record;
        // A file sent without a name is named by its CID.
        let name = if name.is_empty() { cid } else { name };
        let (free, extra) = self.limit(account_id, &target.name).await?;
        let limit = free.saturating_add(extra);
        let mut tx = self.db.w().begin().await?;
        // Quota and the blob's state are decided under locks every node takes in this order:
        // account, then blob.
        self.db.lock_account(&mut tx, account_id).await?;
        self.db.lock_blob(&mut tx, backend, cid).await?;
        let spill = match blob {
            Publish::Live => {
                // Compare-and-set: the blob must still be live (not marked by a delete).
                let still = sqlx::query(
                    "UPDATE blobs SET state = 'live' WHERE backend = $1 AND cid = $2 \
                     AND state = 'live'",
                )
                .bind(backend)
                .bind(cid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if still == 0 {
                    return Ok(None);
                }
                None
            }
            Publish::Pending(spill) => Some(spill),
        };
        // Every record counts: `Used` is the sum of the sizes the file list shows. The same bytes
        // under the same name again add no record, and no size.
        let existing: Option<(i64, i64)> = sqlx::query_as(
            "SELECT id, created_at FROM objects \
             WHERE account_id = $1 AND target = $2 AND cid = $3 AND name = $4",
        )
        .bind(account_id)
        .bind(&target.name)
        .bind(cid)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let (used,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM objects WHERE account_id = $1 AND target = $2",
        )
        .bind(account_id)
        .bind(&target.name)
        .fetch_one(&mut *tx)
        .await?;
        let used = used as u64;
        if existing.is_none() && used.saturating_add(size) > limit {
            return Err(Error::QuotaExceeded {
                used,
                limit,
                wanted: size,
            });
        }
        if let Some(spill) = spill {
            sqlx::query("DELETE FROM blocks WHERE backend = $1 AND root = $2")
                .bind(backend)
                .bind(cid)
                .execute(&mut *tx)
                .await?;
            let (btx, mut brx) = mpsc::channel::<std::io::Result<Vec<BlockRow>>>(2);
            let reader = tokio::task::spawn_blocking(move || {
                let mut r = BufReader::with_capacity(256 << 10, spill);
                loop {
                    let mut batch = Vec::with_capacity(256);
                    while batch.len() < 256 {
                        match read_row(&mut r) {
                            Ok(Some(row)) => batch.push(row),
                            Ok(None) => break,
                            Err(e) => {
                                let _ = btx.blocking_send(Err(e));
                                return;
                            }
                        }
                    }
                    let last = batch.len() < 256;
                    if !batch.is_empty() && btx.blocking_send(Ok(batch)).is_err() {
                        return;
                    }
                    if last {
                        return;
                    }
                }
            });
            while let Some(batch) = brx.recv().await {
                let batch = batch?;
                // `$n` placeholders written out: sqlx's QueryBuilder writes `?` for the Any
                // driver, which PostgreSQL does not take.
                let mut sql = String::from(
                    "INSERT INTO blocks (backend, root, cid, kind, file_offset, file_len, data) VALUES ",
                );
                for i in 0..batch.len() {
                    let n = i * 7;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6,
                        n + 7
                    ));
                }
                sql.push_str(" ON CONFLICT (backend, root, cid) DO NOTHING");
                let mut q = sqlx::query(&sql);
                for r in batch {
                    q = q
                        .bind(backend)
                        .bind(cid)
                        .bind(r.cid)
                        .bind(r.kind as i16)
                        .bind(r.offset as i64)
                        .bind(r.len as i64)
                        .bind(r.data);
                }
                q.execute(&mut *tx).await?;
            }
            reader.await.map_err(Error::internal)?;
            // Compare-and-set: pending and ours -> live.
            let won = sqlx::query(
                "UPDATE blobs SET state = 'live', node = NULL WHERE backend = $1 AND cid = $2 \
                 AND state = 'pending' AND node = $3",
            )
            .bind(backend)
            .bind(cid)
            .bind(&self.node)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if won == 0 {
                return Ok(None);
            }
        }
        let (id, created_at) = match existing {
            Some(found) => found,
            None => {
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO objects (account_id, target, cid, backend, name, size, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(account_id)
                .bind(&target.name)
                .bind(cid)
                .bind(backend)
                .bind(name)
                .bind(size as i64)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                (id, now)
            }
        };
        tx.commit().await?;
        Ok(Some(Object {
            id,
            target: target.name.clone(),
            cid: cid.to_string(),
            name: name.to_string(),
            size,
            created_at,
        }))
    }
}

/// The object record an upload publishes.
#[derive(Clone, Copy)]
struct Record<'a> {
    account_id: &'a str,
    target: &'a Target,
    name: &'a str,
    backend: &'a str,
    cid: &'a str,
    size: u64,
    now: i64,
}

/// Which blob state a publish expects.
enum Publish {
    /// The blob is live already (identical content): only a record is added.
    Live,
    /// This node claimed the blob (`pending`) and wrote its bytes; the index is in the spill.
    Pending(File),
}

impl Upload {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Appends a piece of the file. Fails (and the upload must be dropped) when the quota or the
    /// size limit would be exceeded, or when storing failed.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.received += data.len() as u64;
        if self.used.saturating_add(self.received) > self.limit {
            return Err(Error::QuotaExceeded {
                used: self.used,
                limit: self.limit,
                wanted: self.received,
            });
        }
        if self.max_upload > 0 && self.received > self.max_upload {
            return Err(Error::invalid(
                crate::Field::File,
                format!("larger than the {} byte upload limit", self.max_upload),
            ));
        }
        let tx = self.tx.as_ref().expect("open until finish");
        if tx.send(Msg::Data(data)).await.is_err() {
            return Err(self.worker_error().await);
        }
        Ok(())
    }

    async fn worker_error(&mut self) -> Error {
        match self.worker.take() {
            Some(w) => match w.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => Error::internal("upload worker stopped early"),
                Err(e) => Error::internal(e),
            },
            None => Error::internal("upload worker gone"),
        }
    }

    /// Ends the upload: the object is durable and visible when this returns `Ok`.
    pub async fn finish(mut self) -> Result<Object> {
        let tx = self.tx.take().expect("open until finish");
        if tx.send(Msg::Finish).await.is_err() {
            return Err(self.worker_error().await);
        }
        drop(tx);
        let staged = match self.worker.take().expect("worker").await {
            Ok(r) => r?,
            Err(e) => return Err(Error::internal(e)),
        };
        let storage = self.storage.clone();
        let target = self.target.clone();
        let result = storage
            .commit(&self.account_id, &target, &self.name, staged)
            .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("stratus_storage_uploads_total", "target" => target.name.clone(), "result" => outcome)
            .increment(1);
        if result.is_ok() {
            metrics::counter!("stratus_storage_upload_bytes_total", "target" => target.name)
                .increment(self.received);
        }
        result
    }
}
