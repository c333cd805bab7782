//! The streaming file importer: chunks the bytes it is fed, hashes full chunks on the rayon
//! pool, and builds the balanced DAG as leaf digests come back in order.
//!
//! Owns chunking, leaf hashing and the flow control between the caller and the worker pool.
//! It never does I/O of its own (the `read_from`/`import_reader*` helpers only read from the
//! reader they are given) and never keeps more than a bounded number of chunks in memory:
//! at most `max_in_flight + 2` chunks plus O(depth × max_links) links, whatever the file
//! size. Events are kept until the caller drains them.
//!
//! Full chunks go to the pool two at a time, and one job hashes both together (interleaved
//! SHA-256, faster per core than one after the other): a full chunk waits for the next one
//! before it is sent, which is the extra chunk in the bound above. Whenever the importer has
//! to wait for a leaf, a chunk still waiting for a partner is first sent alone, so nothing
//! ever waits on it.
//!
//! A chunk is either a buffer the bytes were copied into ([`Importer::write`],
//! [`Importer::read_from`]) or the list of [`Bytes`] pieces it was given
//! ([`Importer::write_bytes`]), hashed where they lie: no copy at all. Pieces share the memory
//! they were cut from, which stays alive until the chunk is hashed.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc;

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};

use crate::cid::{Cid, Codec, Version, DIGEST_LEN};
use crate::dagpb::v0_leaf_envelope;
use crate::layout::{Balanced, ChildLink, NodeSink};
use crate::profile::{LeafFormat, Profile};
use crate::sha256x2::digest_pair;

/// Upper bound on the bytes held by chunks waiting for (or being) hashed.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
/// Chunks smaller than this are hashed on the caller's thread: handing them to the pool costs
/// more than hashing them.
const POOL_MIN_CHUNK: usize = 16 << 10;

/// A block the importer produced, in creation order (children before parents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A leaf and where its bytes lie in the file. For raw leaves the block is exactly
    /// `file[offset..offset + len]`; for dag-pb leaves (kubo-v0) it is
    /// [`encode_v0_leaf`](crate::dagpb::encode_v0_leaf) of those bytes.
    Leaf {
        /// The leaf's CID.
        cid: Cid,
        /// Offset of the chunk in the file.
        offset: u64,
        /// Length of the chunk.
        len: u32,
    },
    /// An inner dag-pb node and its encoded bytes.
    Node {
        /// The node's CID.
        cid: Cid,
        /// The block.
        bytes: Bytes,
    },
}

impl Event {
    /// The CID of the block.
    pub fn cid(&self) -> &Cid {
        match self {
            Event::Leaf { cid, .. } | Event::Node { cid, .. } => cid,
        }
    }
}

/// Shape of an imported DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeStats {
    /// Number of leaves (at least one: an empty file is one empty leaf).
    pub leaves: u64,
    /// Number of inner nodes.
    pub nodes: u64,
    /// Inner-node levels above the leaves; 0 when the root is the only leaf.
    pub depth: u32,
    /// Cumulative size of the root: every block's length, duplicates included (the root
    /// link's `Tsize`).
    pub dag_size: u64,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The root CID: the file's CID.
    pub root: Cid,
    /// File size in bytes.
    pub size: u64,
    /// Events not drained before [`Importer::finish`]; the root's event is the last one.
    pub events: Vec<Event>,
    /// Shape of the DAG.
    pub stats: TreeStats,
}

/// A chunk whose leaf is being hashed on the pool.
struct Pending {
    offset: u64,
    len: u32,
    done: mpsc::Receiver<Hashed>,
}

/// The bytes of one chunk.
enum Chunk {
    /// Copied into a buffer of `chunk_size` bytes.
    Buffer(Box<[u8]>),
    /// The pieces given to [`Importer::write_bytes`], in order.
    Pieces(Vec<Bytes>),
}

impl Chunk {
    /// Digest and block length of the leaf holding the first `len` bytes.
    fn hash(&self, format: LeafFormat, len: usize) -> ([u8; DIGEST_LEN], u64) {
        hash_leaf(format, len, self.parts(len))
    }

    /// The first `len` bytes, as slices.
    fn parts(&self, len: usize) -> impl Iterator<Item = &[u8]> {
        let (buffer, pieces) = match self {
            Chunk::Buffer(buf) => (Some(&buf[..len]), &[][..]),
            Chunk::Pieces(pieces) => (None, &pieces[..]),
        };
        buffer.into_iter().chain(pieces.iter().map(|p| &p[..]))
    }

    /// The buffer to hand back for reuse, if the chunk has one. Pieces are let go of.
    fn into_buffer(self) -> Option<Box<[u8]>> {
        match self {
            Chunk::Buffer(buf) => Some(buf),
            Chunk::Pieces(_) => None,
        }
    }
}

/// A full chunk sent to the pool: its bytes and where its result goes.
struct Job {
    chunk: Chunk,
    done: mpsc::SyncSender<Hashed>,
}

impl Job {
    /// Hands the result (and the buffer) back. The importer may have been dropped; then
    /// nobody wants it.
    fn send(self, digest: [u8; DIGEST_LEN], block_len: u64) {
        let _ = self.done.send(Hashed {
            digest,
            block_len,
            buf: self.chunk.into_buffer(),
        });
    }
}

/// A hashed chunk, with its buffer (if it had one) handed back for reuse.
struct Hashed {
    digest: [u8; DIGEST_LEN],
    block_len: u64,
    buf: Option<Box<[u8]>>,
}

/// Event storage that can be switched off for CID-only imports.
struct Events {
    keep: bool,
    queue: Vec<Event>,
}

impl NodeSink for Events {
    fn node(&mut self, event: Event) {
        if self.keep {
            self.queue.push(event);
        }
    }
}

/// Streaming UnixFS file importer. Feed it with [`write`](Importer::write),
/// [`write_bytes`](Importer::write_bytes) (no copy) or [`read_from`](Importer::read_from), drain
/// [`Event`]s to persist blocks as they appear, and call [`finish`](Importer::finish) for the
/// root.
///
/// Feeding blocks while too many chunks are waiting to be hashed; from async code, do it in a
/// blocking section. Do not call it from inside a one-thread rayon pool.
pub struct Importer {
    profile: Profile,
    chunk_size: usize,
    /// The chunk being filled, and how much of it is filled: a buffer, or (when `pieces` is not
    /// empty) pieces. `current` may hold an empty buffer while pieces are in use.
    current: Option<Box<[u8]>>,
    pieces: Vec<Bytes>,
    filled: usize,
    /// Buffers handed back by the workers.
    spare: Vec<Box<[u8]>>,
    /// Leaves not collected yet, in file order; the last one may be `unpaired`.
    in_flight: VecDeque<Pending>,
    /// A full chunk in `in_flight` not sent to the pool yet: it waits for the next one, to be
    /// hashed with it.
    unpaired: Option<Job>,
    max_in_flight: usize,
    /// File offset of `current`'s first byte.
    offset: u64,
    leaves: u64,
    tree: Balanced,
    events: Events,
}

impl Importer {
    /// A new import. Panics if `profile` fails [`Profile::validate`].
    pub fn new(profile: Profile) -> Importer {
        Importer::with_events(profile, true)
    }

    /// A new import that records no events: only the root CID and statistics come out. Use it
    /// to compute a CID without persisting blocks (memory stays bounded however large the file).
    pub fn without_events(profile: Profile) -> Importer {
        Importer::with_events(profile, false)
    }

    fn with_events(profile: Profile, keep: bool) -> Importer {
        if let Err(e) = profile.validate() {
            panic!("invalid profile {:?}: {e}", profile.name);
        }
        let chunk_size = profile.chunk_size as usize;
        let by_threads = 3 * rayon::current_num_threads();
        let by_memory = MAX_IN_FLIGHT_BYTES / chunk_size;
        Importer {
            profile,
            chunk_size,
            current: None,
            pieces: Vec::new(),
            filled: 0,
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            unpaired: None,
            max_in_flight: by_threads.min(by_memory).max(2),
            offset: 0,
            leaves: 0,
            tree: Balanced::new(profile.max_links as usize, profile.cid_version),
            events: Events {
                keep,
                queue: Vec::new(),
            },
        }
    }

    /// The profile in use.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Bytes fed so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset + self.filled as u64
    }

    /// Feeds the next bytes of the file, in pieces of any size.
    pub fn write(&mut self, mut data: &[u8]) {
        self.pieces_to_buffer();
        while !data.is_empty() {
            let filled = self.filled;
            let buf = self.buffer();
            let n = (buf.len() - filled).min(data.len());
            buf[filled..filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == self.chunk_size {
                self.submit();
            }
        }
    }

    /// Reads once from `reader` straight into the chunk being filled (no intermediate copy).
    /// Returns the number of bytes read; 0 means end of input. Errors, `Interrupted` included,
    /// are returned as they are.
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.pieces_to_buffer();
        let filled = self.filled;
        let buf = self.buffer();
        let n = reader.read(&mut buf[filled..])?;
        self.filled += n;
        if self.filled == self.chunk_size {
            self.submit();
        }
        Ok(n)
    }

    /// Feeds the next bytes of the file without copying them: chunks are made of the pieces
    /// given (split where chunks end) and hashed from there. Same events and CIDs as
    /// [`write`](Importer::write) of the same bytes, however they are cut.
    ///
    /// Each piece keeps the memory it shares alive until its chunk is hashed. A chunk begun by
    /// `write` or `read_from` is completed by copying.
    pub fn write_bytes(&mut self, mut data: Bytes) {
        if self.pieces.is_empty() && self.filled > 0 {
            let n = (self.chunk_size - self.filled).min(data.len());
            self.write(&data[..n]);
            data.advance(n);
        }
        while !data.is_empty() {
            let n = (self.chunk_size - self.filled).min(data.len());
            self.pieces.push(data.split_to(n));
            self.filled += n;
            if self.filled == self.chunk_size {
                self.submit();
            }
        }
    }

    /// Blocks produced so far, in creation order (children before parents). Persist them
    /// before their parents become visible to readers.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.collect(usize::MAX);
        self.events.queue.drain(..)
    }

    /// Hashes what is left, closes the tree and returns the root.
    pub fn finish(mut self) -> Imported {
        self.collect(0);
        if self.filled > 0 || self.leaves == 0 {
            let (digest, block_len) = match self.take_chunk() {
                Some(chunk) => chunk.hash(self.profile.leaves, self.filled),
                None => hash_leaf(self.profile.leaves, 0, []),
            };
            let (offset, len) = (self.offset, self.filled as u32);
            self.offset += u64::from(len);
            self.filled = 0;
            self.add_leaf(offset, len, digest, block_len);
        }
        let root = self.tree.finish(&mut self.events);
        Imported {
            root: root.link.cid,
            size: self.offset,
            events: self.events.queue,
            stats: TreeStats {
                leaves: self.leaves,
                nodes: root.nodes,
                depth: root.depth,
                dag_size: root.link.tsize,
            },
        }
    }

    /// The chunk buffer being filled, taken from the spares or allocated.
    fn buffer(&mut self) -> &mut [u8] {
        let chunk_size = self.chunk_size;
        let spare = &mut self.spare;
        self.current
            .get_or_insert_with(|| {
                spare
                    .pop()
                    .unwrap_or_else(|| vec![0u8; chunk_size].into_boxed_slice())
            })
            .as_mut()
    }

    /// Makes the chunk being filled a buffer, copying the pieces it has (if any) into it.
    fn pieces_to_buffer(&mut self) {
        if self.pieces.is_empty() {
            return;
        }
        let pieces = std::mem::take(&mut self.pieces);
        let buf = self.buffer();
        let mut at = 0;
        for piece in &pieces {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        debug_assert_eq!(at, self.filled);
    }

    /// The chunk being filled, taken out (`None` when nothing was ever written to it).
    fn take_chunk(&mut self) -> Option<Chunk> {
        if self.pieces.is_empty() {
            self.current.take().map(Chunk::Buffer)
        } else {
            Some(Chunk::Pieces(std::mem::take(&mut self.pieces)))
        }
    }

    /// Sends the full current chunk to the pool (paired with the next one), then waits while
    /// too many are in flight.
    fn submit(&mut self) {
        let chunk = self.take_chunk().expect("a full chunk");
        let len = self.chunk_size;
        let format = self.profile.leaves;
        if len < POOL_MIN_CHUNK {
            let (digest, block_len) = chunk.hash(format, len);
            if let Chunk::Buffer(buf) = chunk {
                self.current = Some(buf);
            }
            let offset = self.offset;
            self.offset += len as u64;
            self.filled = 0;
            self.add_leaf(offset, len as u32, digest, block_len);
            return;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.in_flight.push_back(Pending {
            offset: self.offset,
            len: len as u32,
            done: rx,
        });
        self.offset += len as u64;
        self.filled = 0;
        let job = Job { chunk, done: tx };
        match self.unpaired.take() {
            None => {
                // Wait for a partner; meanwhile take what is ready.
                self.unpaired = Some(job);
                self.collect(usize::MAX);
            }
            Some(first) => {
                rayon::spawn(move || {
                    let (digests, block_len) =
                        hash_leaf_pair(format, len, &first.chunk, &job.chunk);
                    first.send(digests.0, block_len);
                    job.send(digests.1, block_len);
                });
                self.collect(self.max_in_flight - 1);
            }
        }
    }

    /// Sends the chunk waiting for a partner (if any) to the pool alone.
    fn send_unpaired(&mut self) {
        if let Some(job) = self.unpaired.take() {
            let (format, len) = (self.profile.leaves, self.chunk_size);
            rayon::spawn(move || {
                let (digest, block_len) = job.chunk.hash(format, len);
                job.send(digest, block_len);
            });
        }
    }

    /// Consumes finished leaves in order: every ready one, and more (waiting) until at most
    /// `keep` are still in flight.
    fn collect(&mut self, keep: usize) {
        if self.in_flight.len() > keep {
            // About to wait: every leaf waited for must be on its way.
            self.send_unpaired();
        }
        while let Some(front) = self.in_flight.front() {
            let hashed = if self.in_flight.len() > keep {
                wait(&front.done)
            } else {
                match front.done.try_recv() {
                    Ok(hashed) => hashed,
                    Err(mpsc::TryRecvError::Empty) => return,
                    Err(mpsc::TryRecvError::Disconnected) => panic!("leaf hashing task failed"),
                }
            };
            let Pending { offset, len, .. } = self.in_flight.pop_front().expect("front exists");
            self.add_leaf(offset, len, hashed.digest, hashed.block_len);
            self.spare.extend(hashed.buf);
        }
    }

    fn add_leaf(&mut self, offset: u64, len: u32, digest: [u8; DIGEST_LEN], block_len: u64) {
        let cid = match (self.profile.leaves, self.profile.cid_version) {
            (LeafFormat::Raw, _) => Cid::new_v1(Codec::Raw, digest),
            (LeafFormat::DagPb, Version::V0) => Cid::new_v0(digest),
            (LeafFormat::DagPb, Version::V1) => Cid::new_v1(Codec::DagPb, digest),
        };
        self.leaves += 1;
        if self.events.keep {
            self.events.queue.push(Event::Leaf { cid, offset, len });
        }
        let link = ChildLink {
            cid,
            tsize: block_len,
            filesize: u64::from(len),
        };
        self.tree.push_leaf(link, &mut self.events);
    }
}

/// Waits for a result. On a rayon worker thread, runs other pool jobs meanwhile so a small
/// pool cannot deadlock on its own caller.
fn wait(done: &mpsc::Receiver<Hashed>) -> Hashed {
    if rayon::current_thread_index().is_none() {
        return done.recv().expect("leaf hashing task failed");
    }
    loop {
        match done.try_recv() {
            Ok(hashed) => return hashed,
            Err(mpsc::TryRecvError::Disconnected) => panic!("leaf hashing task failed"),
            Err(mpsc::TryRecvError::Empty) => {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    match done.recv_timeout(std::time::Duration::from_millis(1)) {
                        Ok(hashed) => return hashed,
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            panic!("leaf hashing task failed")
                        }
                    }
                }
            }
        }
    }
}

/// The bytes a leaf of `len` bytes of `format` adds around them: `(prefix, suffix)`.
fn leaf_envelope(format: LeafFormat, len: usize) -> (Vec<u8>, Vec<u8>) {
    match format {
        LeafFormat::Raw => (Vec::new(), Vec::new()),
        LeafFormat::DagPb => v0_leaf_envelope(len),
    }
}

/// Digest and block length of the leaf holding a chunk of `len` bytes made of `parts`.
fn hash_leaf<'a>(
    format: LeafFormat,
    len: usize,
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> ([u8; DIGEST_LEN], u64) {
    let (prefix, suffix) = leaf_envelope(format, len);
    let mut hasher = Sha256::new();
    hasher.update(&prefix);
    for part in parts {
        hasher.update(part);
    }
    hasher.update(&suffix);
    let block_len = prefix.len() + len + suffix.len();
    (hasher.finalize().into(), block_len as u64)
}

/// [`Chunk::hash`] of two chunks at once: both digests, and the block length they share.
fn hash_leaf_pair(
    format: LeafFormat,
    len: usize,
    a: &Chunk,
    b: &Chunk,
) -> (([u8; DIGEST_LEN], [u8; DIGEST_LEN]), u64) {
    let (prefix, suffix) = leaf_envelope(format, len);
    let digests = digest_pair(
        leaf_parts(&prefix, a, len, &suffix),
        leaf_parts(&prefix, b, len, &suffix),
    );
    let block_len = prefix.len() + len + suffix.len();
    (digests, block_len as u64)
}

/// The bytes of a leaf block: `prefix`, the first `len` bytes of `chunk`, `suffix`.
fn leaf_parts<'a>(
    prefix: &'a [u8],
    chunk: &'a Chunk,
    len: usize,
    suffix: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> {
    std::iter::once(prefix)
        .chain(chunk.parts(len))
        .chain(std::iter::once(suffix))
}

/// Computes a file's CID from `reader`, reading straight into chunk buffers. No events are
/// kept (see [`Importer::without_events`]); `Interrupted` reads are retried. This is the
/// fast path for "what is the CID of this file".
pub fn import_reader<R: Read>(profile: Profile, mut reader: R) -> io::Result<Imported> {
    let mut importer = Importer::without_events(profile);
    read_all(&mut importer, &mut reader, &mut |_| Ok(()))?;
    Ok(importer.finish())
}

/// Imports from `reader`, handing every event to `on_event` as soon as it exists (children
/// before parents). The returned [`Imported::events`] is empty. Stops at the first error of
/// the reader or of `on_event`.
pub fn import_reader_with<R, F>(
    profile: Profile,
    mut reader: R,
    mut on_event: F,
) -> io::Result<Imported>
where
    R: Read,
    F: FnMut(Event) -> io::Result<()>,
{
    let mut importer = Importer::new(profile);
    read_all(&mut importer, &mut reader, &mut on_event)?;
    let mut imported = importer.finish();
    for event in imported.events.drain(..) {
        on_event(event)?;
    }
    Ok(imported)
}

fn read_all<R: Read>(
    importer: &mut Importer,
    reader: &mut R,
    on_event: &mut dyn FnMut(Event) -> io::Result<()>,
) -> io::Result<()> {
    loop {
        match importer.read_from(reader) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if importer.events.keep {
            for event in importer.drain_events() {
                on_event(event)?;
            }
        }
    }
}
