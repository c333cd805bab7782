//! Reading stored content: any block of a stored DAG by its CID, a byte range of the file it
//! covers, its raw block bytes, or the DAG below it as a CARv1 stream (depth-first, without
//! duplicates, as trustless gateways serve it). Leaves are never stored twice: their bytes are
//! read from the blob (and wrapped again for CIDv0 leaves).

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use stratus_block::{BlobStore, ByteStream};
use stratus_unixfs::{car, dagpb, Cid, Codec, DagPbNode, Version};
use tokio::sync::mpsc;

use super::Storage;
use crate::{Error, Result};

/// What a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    /// A raw leaf: exactly the file bytes it covers.
    RawLeaf = 0,
    /// A CIDv0 leaf: dag-pb wrapping the file bytes it covers.
    PbLeaf = 1,
    /// An inner dag-pb node, stored inline.
    Node = 2,
}

impl BlockKind {
    pub fn from_code(c: u8) -> Option<BlockKind> {
        match c {
            0 => Some(BlockKind::RawLeaf),
            1 => Some(BlockKind::PbLeaf),
            2 => Some(BlockKind::Node),
            _ => None,
        }
    }
}

/// A block found in a stored DAG.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub target: String,
    store: Arc<dyn BlobStore>,
    backend: String,
    /// The blob (root CID) holding the bytes.
    pub root: String,
    pub cid: Cid,
    pub kind: BlockKind,
    /// The file bytes this block covers.
    pub offset: u64,
    pub len: u64,
    node: Option<Bytes>,
    /// When `cid` is a stored file's root: the name it is downloaded under by anyone (see
    /// [`Storage::own_name`] for its owners).
    pub name: Option<String>,
}

impl Resolved {
    /// Whether this is the root of a stored file.
    pub fn is_root(&self) -> bool {
        self.root == self.cid.to_string()
    }

    /// Length of the raw block.
    pub fn block_len(&self) -> u64 {
        match self.kind {
            BlockKind::RawLeaf => self.len,
            BlockKind::PbLeaf => dagpb::v0_leaf_len(self.len as usize) as u64,
            BlockKind::Node => self.node.as_ref().map(|n| n.len() as u64).unwrap_or(0),
        }
    }
}

/// A block found: its root, kind, place in the file, node bytes (a dag-pb node), and the least
/// and greatest names the root was stored under in the target.
#[derive(sqlx::FromRow)]
struct Row {
    root: String,
    kind: i16,
    file_offset: i64,
    file_len: i64,
    data: Option<Vec<u8>>,
    least: String,
    greatest: String,
}

/// The extension of a file name (`png` of `a.b.png`), if it has one.
fn extension(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && ext.len() <= 16).then_some(ext)
}

fn one_shot(b: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(b) }))
}

impl Storage {
    /// A block of a live file that somebody stored in `target` (targets may share a backend,
    /// but what was stored in one is not served from the other), with the least and greatest
    /// names the file was stored under there.
    async fn find_block(&self, backend: &str, target: &str, cid: &str) -> Result<Option<Row>> {
        Ok(sqlx::query_as(
            "SELECT * FROM ( \
               SELECT b.root, b.kind, b.file_offset, b.file_len, b.data, \
                      (SELECT MIN(ob.name) FROM objects ob \
                       WHERE ob.backend = b.backend AND ob.cid = b.root AND ob.target = $3) AS least, \
                      (SELECT MAX(ob.name) FROM objects ob \
                       WHERE ob.backend = b.backend AND ob.cid = b.root AND ob.target = $3) AS greatest \
               FROM blocks b JOIN blobs o ON o.backend = b.backend AND o.cid = b.root \
               WHERE b.cid = $1 AND b.backend = $2 AND o.state = 'live' \
             ) found WHERE least IS NOT NULL LIMIT 1",
        )
        .bind(cid)
        .bind(backend)
        .bind(target)
        .fetch_optional(self.db.r())
        .await?)
    }

    /// The name a file is downloaded under by someone who did not store it: the name its owners
    /// gave it when they all gave the same one; otherwise no owner's name is shown, only the CID
    /// (with the extension the names share, if they share one, so the type stays right).
    async fn public_name(
        &self,
        backend: &str,
        target: &str,
        root: &str,
        least: String,
        greatest: String,
    ) -> Result<String> {
        if least == greatest {
            return Ok(least);
        }
        let (lo, hi) = (extension(&least), extension(&greatest));
        if lo.is_none() || lo != hi {
            return Ok(root.to_string());
        }
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT name FROM objects WHERE backend = $1 AND cid = $2 AND target = $3 \
             LIMIT 1000",
        )
        .bind(backend)
        .bind(root)
        .bind(target)
        .fetch_all(self.db.r())
        .await?;
        Ok(if names.iter().all(|(n,)| extension(n) == lo) {
            format!("{root}.{}", lo.unwrap_or_default())
        } else {
            root.to_string()
        })
    }

    /// The name `account_id` stored `cid` under in `target` (its first), if it stores it.
    pub async fn own_name(
        &self,
        account_id: &str,
        target: &str,
        cid: &str,
    ) -> Result<Option<String>> {
        Ok(self.object(account_id, target, cid).await?.map(|o| o.name))
    }

    /// Finds `cid` among the blocks stored in `target` (either CID version of a dag-pb block).
    pub async fn resolve(&self, target: &str, cid: &Cid) -> Result<Option<Resolved>> {
        let t = self
            .target(target)
            .ok_or_else(|| Error::NotFound(format!("storage target {target}")))?;
        let backend = t.store.id().to_string();
        let mut candidates = vec![*cid];
        if cid.codec() == Codec::DagPb {
            match cid.version() {
                Version::V0 => candidates.push(cid.to_v1()),
                Version::V1 => candidates.push(Cid::new_v0(*cid.digest())),
            }
        }
        for c in candidates {
            let text = c.to_string();
            if let Some(Row {
                root,
                kind,
                file_offset,
                file_len,
                data,
                least,
                greatest,
            }) = self.find_block(&backend, target, &text).await?
            {
                // Only the file itself has a name; an inner block is served by CID.
                let name = if root == text {
                    Some(
                        self.public_name(&backend, target, &root, least, greatest)
                            .await?,
                    )
                } else {
                    None
                };
                return Ok(Some(Resolved {
                    target: target.to_string(),
                    store: t.store.clone(),
                    backend,
                    root,
                    cid: c,
                    kind: BlockKind::from_code(kind as u8)
                        .ok_or_else(|| Error::internal("corrupt block kind"))?,
                    offset: file_offset as u64,
                    len: file_len as u64,
                    node: data.map(Bytes::from),
                    name,
                }));
            }
        }
        Ok(None)
    }

    /// Streams `range` (relative to the block's file bytes) of the file bytes a block covers.
    pub async fn read_file(&self, r: &Resolved, range: Range<u64>) -> Result<ByteStream> {
        if range.end > r.len || range.start > range.end {
            return Err(Error::invalid(crate::Field::Range, "outside the file"));
        }
        let abs = r.offset + range.start..r.offset + range.end;
        if abs.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        r.store
            .read(&r.root, abs)
            .await
            .map_err(|e| Error::unavailable(super::STORE_UNAVAILABLE, e))
    }

    /// Streams the raw block.
    pub async fn read_block(&self, r: &Resolved) -> Result<ByteStream> {
        match r.kind {
            BlockKind::RawLeaf => self.read_file(r, 0..r.len).await,
            BlockKind::Node => Ok(one_shot(r.node.clone().unwrap_or_default())),
            BlockKind::PbLeaf => {
                let (prefix, suffix) = dagpb::v0_leaf_envelope(r.len as usize);
                let body = self.read_file(r, 0..r.len).await?;
                Ok(Box::pin(
                    one_shot(Bytes::from(prefix))
                        .chain(body)
                        .chain(one_shot(Bytes::from(suffix))),
                ))
            }
        }
    }

    /// Streams the DAG under `r` as CARv1 with `r.cid` as root, depth-first, no duplicates.
    pub fn car(&self, r: Resolved) -> ByteStream {
        let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, stratus_block::BlobError>>(8);
        let storage = self.clone();
        tokio::spawn(async move {
            if let Err(e) = storage.car_walk(&r, &tx).await {
                tracing::warn!(error = %e, cid = %r.cid, "CAR stream ended early");
                let _ = tx
                    .send(Err(stratus_block::BlobError::Remote(e.to_string())))
                    .await;
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn car_walk(
        &self,
        r: &Resolved,
        tx: &mpsc::Sender<std::result::Result<Bytes, stratus_block::BlobError>>,
    ) -> Result<()> {
        let send = |b: Bytes| async move {
            tx.send(Ok(b))
                .await
                .map_err(|_| Error::internal("client went away"))
        };
        send(Bytes::from(car::header(&r.cid))).await?;
        // One sequential read of every file byte under the root: leaves come in file order.
        let mut file = Sequential::new(self.read_file(r, 0..r.len).await?);
        let mut seen: HashSet<Cid> = HashSet::new();
        let mut stack: Vec<(Cid, u64)> = vec![(r.cid, r.len)];
        while let Some((cid, len)) = stack.pop() {
            if !seen.insert(cid) {
                file.skip(len).await?;
                continue;
            }
            let (kind, node) = if cid == r.cid {
                (r.kind, r.node.clone())
            } else if cid.codec() == Codec::Raw {
                (BlockKind::RawLeaf, None)
            } else {
                let row: Option<(i16, Option<Vec<u8>>)> = sqlx::query_as(
                    "SELECT kind, data FROM blocks WHERE backend = $1 AND root = $2 AND cid = $3",
                )
                .bind(&r.backend)
                .bind(&r.root)
                .bind(cid.to_string())
                .fetch_optional(self.db.r())
                .await?;
                let (k, d) = row.ok_or_else(|| Error::internal(format!("block {cid} missing")))?;
                (
                    BlockKind::from_code(k as u8).ok_or_else(|| Error::internal("bad kind"))?,
                    d.map(Bytes::from),
                )
            };
            match kind {
                BlockKind::RawLeaf => {
                    send(Bytes::from(car::block_frame(&cid, len as usize))).await?;
                    for piece in file.take(len).await? {
                        send(piece).await?;
                    }
                }
                BlockKind::PbLeaf => {
                    let (prefix, suffix) = dagpb::v0_leaf_envelope(len as usize);
                    let total = prefix.len() + len as usize + suffix.len();
                    send(Bytes::from(car::block_frame(&cid, total))).await?;
                    send(Bytes::from(prefix)).await?;
                    for piece in file.take(len).await? {
                        send(piece).await?;
                    }
                    send(Bytes::from(suffix)).await?;
                }
                BlockKind::Node => {
                    let data = node.ok_or_else(|| Error::internal("node without data"))?;
                    let decoded = DagPbNode::decode(&data).map_err(Error::internal)?;
                    let sizes = decoded.unixfs().map_err(Error::internal)?.blocksizes;
                    if sizes.len() != decoded.links.len() {
                        return Err(Error::internal(format!(
                            "node {cid}: blocksizes do not match links"
                        )));
                    }
                    send(Bytes::from(car::block_frame(&cid, data.len()))).await?;
                    send(data).await?;
                    for (link, size) in decoded.links.iter().zip(sizes).rev() {
                        stack.push((link.cid, size));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Consumes a byte stream in exact amounts.
struct Sequential {
    inner: ByteStream,
    buf: VecDeque<Bytes>,
}

impl Sequential {
    fn new(inner: ByteStream) -> Self {
        Sequential {
            inner,
            buf: VecDeque::new(),
        }
    }

    async fn fill(&mut self) -> Result<()> {
        match self.inner.next().await {
            Some(Ok(b)) => {
                self.buf.push_back(b);
                Ok(())
            }
            Some(Err(e)) => Err(Error::unavailable(super::STORE_UNAVAILABLE, e)),
            None => Err(Error::internal("stored file is shorter than its DAG")),
        }
    }

    async fn take(&mut self, mut n: u64) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        while n > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let mut head = self.buf.pop_front().expect("filled");
            if (head.len() as u64) > n {
                let rest = head.split_off(n as usize);
                self.buf.push_front(rest);
            }
            n -= head.len() as u64;
            out.push(head);
        }
        Ok(out)
    }

    async fn skip(&mut self, n: u64) -> Result<()> {
        self.take(n).await.map(|_| ())
    }
}
