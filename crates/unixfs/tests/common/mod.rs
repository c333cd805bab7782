//! Shared helpers for the integration tests: deterministic file contents, an import that
//! records every block, and a checker of the balanced-layout invariants.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use stratus_unixfs::{
    encode_v0_leaf, Cid, Codec, DagPbNode, DataType, Event, Imported, Importer, LeafFormat,
    Profile, TreeStats, Version,
};

/// Reads `cids.json`: the shared copy when the workspace sits next to it, else the committed
/// fixture.
pub fn vectors_json() -> serde_json::Value {
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/cids.json");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cids.json");
    let text = std::fs::read_to_string(&shared)
        .or_else(|_| std::fs::read_to_string(&fixture))
        .expect("cids.json (shared or fixture)");
    serde_json::from_str(&text).expect("valid JSON")
}

/// File contents given by a function of the offset, so large files need no memory.
pub trait Source {
    /// Writes `out.len()` bytes of the file starting at `offset` into `out`.
    fn fill(&self, offset: u64, out: &mut [u8]);

    fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.fill(offset, &mut out);
        out
    }
}

/// All zero bytes.
pub struct Zeros;

impl Source for Zeros {
    fn fill(&self, _offset: u64, out: &mut [u8]) {
        out.fill(0);
    }
}

/// A repeating pseudo-random pattern whose period (a prime) is coprime with every chunk size,
/// so that no two chunks of a test file are equal.
pub struct Pattern {
    period: Vec<u8>,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        let mut state = seed | 1;
        let period = (0..65_521)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Pattern { period }
    }
}

impl Source for Pattern {
    fn fill(&self, offset: u64, out: &mut [u8]) {
        let p = self.period.len();
        let mut pos = (offset % p as u64) as usize;
        let mut done = 0;
        while done < out.len() {
            let n = (p - pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.period[pos..pos + n]);
            done += n;
            pos = 0;
        }
    }
}

/// Bytes held in memory.
pub struct Memory<'a>(pub &'a [u8]);

impl Source for Memory<'_> {
    fn fill(&self, offset: u64, out: &mut [u8]) {
        let start = offset as usize;
        out.copy_from_slice(&self.0[start..start + out.len()]);
    }
}

/// Everything an import produced.
pub struct Recorded {
    pub root: Cid,
    pub size: u64,
    pub stats: TreeStats,
    /// Leaves in event order: (cid, offset, len).
    pub leaves: Vec<(Cid, u64, u32)>,
    /// Inner nodes by CID (identical subtrees share one entry), and how many node events
    /// there were.
    pub nodes: HashMap<Cid, Bytes>,
    pub node_events: u64,
    /// Every event in order.
    pub order: Vec<Cid>,
}

impl Recorded {
    /// Nothing recorded yet.
    pub fn new() -> Recorded {
        Recorded {
            root: Cid::new_v0([0; 32]),
            size: 0,
            stats: TreeStats::default(),
            leaves: Vec::new(),
            nodes: HashMap::new(),
            node_events: 0,
            order: Vec::new(),
        }
    }

    /// Records the end of the import: the last events, the root, size and statistics.
    pub fn finish(&mut self, imported: Imported) {
        for event in imported.events {
            record(self, event);
        }
        self.root = imported.root;
        self.size = imported.size;
        self.stats = imported.stats;
    }
}

/// Imports `size` bytes of `source` fed in `piece`-byte writes, draining events as it goes.
pub fn import(profile: Profile, source: &dyn Source, size: u64, piece: usize) -> Recorded {
    let mut importer = Importer::new(profile);
    let mut rec = Recorded::new();
    let mut buf = vec![0u8; piece];
    let mut offset = 0u64;
    while offset < size {
        let n = ((size - offset) as usize).min(piece);
        source.fill(offset, &mut buf[..n]);
        importer.write(&buf[..n]);
        offset += n as u64;
        for event in importer.drain_events() {
            record(&mut rec, event);
        }
    }
    rec.finish(importer.finish());
    rec
}

/// Adds an event to `rec`, checking that a node's CID is the hash of its bytes.
pub fn record(rec: &mut Recorded, event: Event) {
    match event {
        Event::Leaf { cid, offset, len } => {
            rec.leaves.push((cid, offset, len));
            rec.order.push(cid);
        }
        Event::Node { cid, bytes } => {
            assert_eq!(Cid::sha256(cid.version(), Codec::DagPb, &bytes), cid);
            rec.nodes.insert(cid, bytes);
            rec.node_events += 1;
            rec.order.push(cid);
        }
    }
}

/// The block of a leaf holding `chunk` under `profile`.
pub fn leaf_block(profile: &Profile, chunk: &[u8]) -> Vec<u8> {
    match profile.leaves {
        LeafFormat::Raw => chunk.to_vec(),
        LeafFormat::DagPb => encode_v0_leaf(chunk),
    }
}

/// Checks every structural invariant of a balanced UnixFS file DAG. `verify_leaves` re-hashes
/// every leaf from `source`.
pub fn check(profile: &Profile, rec: &Recorded, source: &dyn Source, verify_leaves: bool) {
    let chunk = u64::from(profile.chunk_size);
    let size = rec.size;
    // Leaves cover the file exactly, in order.
    let expected_leaves = size.div_ceil(chunk).max(1);
    assert_eq!(rec.leaves.len() as u64, expected_leaves, "leaf count");
    assert_eq!(rec.stats.leaves, expected_leaves);
    let mut offset = 0u64;
    for (i, &(_, leaf_offset, len)) in rec.leaves.iter().enumerate() {
        assert_eq!(leaf_offset, offset, "leaf {i} offset");
        let last = i + 1 == rec.leaves.len();
        if !last {
            assert_eq!(u64::from(len), chunk, "leaf {i} is a full chunk");
        } else {
            assert!(u64::from(len) <= chunk && (len > 0 || size == 0));
        }
        offset += u64::from(len);
    }
    assert_eq!(offset, size, "leaves cover the file");

    // Expected depth: the smallest d with max_links^d >= leaves.
    let mut depth = 0u32;
    let mut capacity = 1u64;
    while capacity < expected_leaves {
        capacity = capacity.saturating_mul(u64::from(profile.max_links));
        depth += 1;
    }
    assert_eq!(rec.stats.depth, depth, "depth");
    assert_eq!(rec.stats.nodes, rec.node_events);

    // Walk the tree: leaves come in event order, all at the same depth, and the events are
    // exactly the tree's post-order (children before parents, duplicates included).
    let mut walker = Walker {
        profile,
        rec,
        source,
        verify_leaves,
        next_leaf: 0,
        next_event: 0,
        leaf_depths: Vec::new(),
        seen_nodes: 0,
    };
    let (filesize, tsize) = walker.visit(&rec.root, 0);
    assert_eq!(walker.next_leaf, rec.leaves.len(), "every leaf reached");
    assert!(
        walker.leaf_depths.iter().all(|&d| d == depth),
        "leaves at depth {depth}"
    );
    assert_eq!(walker.seen_nodes, rec.node_events, "every node reached");
    assert_eq!(filesize, size);
    assert_eq!(tsize, rec.stats.dag_size);
    assert_eq!(
        walker.next_event,
        rec.order.len(),
        "every event is in the tree"
    );
}

struct Walker<'a> {
    profile: &'a Profile,
    rec: &'a Recorded,
    source: &'a dyn Source,
    verify_leaves: bool,
    next_leaf: usize,
    /// Index in `rec.order` of the next event the post-order walk must meet.
    next_event: usize,
    leaf_depths: Vec<u32>,
    seen_nodes: u64,
}

impl Walker<'_> {
    /// Returns (file bytes, Tsize) of `cid`.
    fn visit(&mut self, cid: &Cid, depth: u32) -> (u64, u64) {
        assert_eq!(cid.version(), self.profile.cid_version);
        let node = match cid.codec() {
            Codec::Raw => None,
            Codec::DagPb => self.rec.nodes.get(cid),
        };
        if let Some(bytes) = node {
            self.seen_nodes += 1;
            let node = DagPbNode::decode(bytes).expect("node decodes");
            assert_eq!(node.encode(), &bytes[..], "canonical encoding");
            assert!(!node.links.is_empty() && node.links.len() <= self.profile.max_links as usize);
            let unixfs = node.unixfs().expect("UnixFS data");
            assert_eq!(unixfs.data_type, DataType::File);
            assert_eq!(unixfs.data, None);
            assert_eq!(unixfs.blocksizes.len(), node.links.len());
            assert_eq!(unixfs.filesize, Some(unixfs.blocksizes.iter().sum()));
            let mut tsize = bytes.len() as u64;
            for (link, &blocksize) in node.links.iter().zip(&unixfs.blocksizes) {
                assert_eq!(link.name.as_deref(), Some(""));
                let (child_size, child_tsize) = self.visit(&link.cid, depth + 1);
                assert_eq!(child_size, blocksize, "blocksize matches child");
                assert_eq!(link.tsize, Some(child_tsize), "Tsize matches child");
                tsize += child_tsize;
            }
            self.expect_event(cid);
            return (unixfs.filesize.unwrap(), tsize);
        }
        let (leaf_cid, offset, len) = self.rec.leaves[self.next_leaf];
        self.next_leaf += 1;
        assert_eq!(*cid, leaf_cid, "leaves in file order");
        self.leaf_depths.push(depth);
        let expected_codec = match self.profile.leaves {
            LeafFormat::Raw => Codec::Raw,
            LeafFormat::DagPb => Codec::DagPb,
        };
        assert_eq!(cid.codec(), expected_codec);
        let block_len = match self.profile.leaves {
            LeafFormat::Raw => len as u64,
            LeafFormat::DagPb => stratus_unixfs::dagpb::v0_leaf_len(len as usize) as u64,
        };
        if self.verify_leaves {
            let block = leaf_block(self.profile, &self.source.bytes(offset, len as usize));
            assert_eq!(block.len() as u64, block_len);
            let version = if self.profile.cid_version == Version::V0 {
                Version::V0
            } else {
                Version::V1
            };
            assert_eq!(
                Cid::sha256(version, expected_codec, &block),
                *cid,
                "leaf hash"
            );
        }
        self.expect_event(cid);
        (u64::from(len), block_len)
    }

    fn expect_event(&mut self, cid: &Cid) {
        assert_eq!(
            self.rec.order.get(self.next_event),
            Some(cid),
            "event {} is the tree's post-order",
            self.next_event
        );
        self.next_event += 1;
    }
}
