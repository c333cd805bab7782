//! The balanced DAG layout, built incrementally as leaves arrive.
//!
//! Owns the rule that decides which inner nodes exist: leaves are grouped into parents of at
//! most `max_links`, then the parents, until one node is left; every leaf sits at the same
//! depth, and a trailing group of one link still gets its own parent. A parent is finalized the
//! moment it has `max_links` children, so memory is O(depth × max_links) whatever the file
//! size. It never hashes leaves and never sees file bytes.

use bytes::Bytes;

use crate::cid::{Cid, Codec, Version};
use crate::dagpb::{DagPbNode, PbLink, UnixFsData};
use crate::importer::Event;

/// What a parent needs to know about one child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildLink {
    pub cid: Cid,
    /// Encoded size of the child's block plus everything below it.
    pub tsize: u64,
    /// File bytes under the child.
    pub filesize: u64,
}

/// Where finished inner nodes go.
pub(crate) trait NodeSink {
    fn node(&mut self, event: Event);
}

/// The open (not yet full) group of children at each level; level 0 holds leaves.
pub(crate) struct Balanced {
    levels: Vec<Vec<ChildLink>>,
    max_links: usize,
    version: Version,
    nodes: u64,
}

/// The root of a finished layout.
pub(crate) struct Root {
    pub link: ChildLink,
    /// Number of inner-node levels above the leaves (0: the root is the only leaf).
    pub depth: u32,
    /// Inner nodes built.
    pub nodes: u64,
}

impl Balanced {
    pub fn new(max_links: usize, version: Version) -> Balanced {
        assert!(max_links >= 2, "max_links must be at least 2");
        Balanced {
            levels: Vec::new(),
            max_links,
            version,
            nodes: 0,
        }
    }

    /// Adds the next leaf, in file order.
    pub fn push_leaf(&mut self, leaf: ChildLink, sink: &mut impl NodeSink) {
        self.push(0, leaf, sink);
    }

    /// Adds `link` to `level`, finalizing every group that becomes full on the way up.
    fn push(&mut self, mut level: usize, mut link: ChildLink, sink: &mut impl NodeSink) {
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::with_capacity(self.max_links));
            }
            self.levels[level].push(link);
            if self.levels[level].len() < self.max_links {
                return;
            }
            link = self.build(level, sink);
            level += 1;
        }
    }

    /// Turns the open group at `level` into a parent node and returns the link to it.
    fn build(&mut self, level: usize, sink: &mut impl NodeSink) -> ChildLink {
        let children = &mut self.levels[level];
        let filesize = children.iter().map(|c| c.filesize).sum();
        let mut tsize: u64 = children.iter().map(|c| c.tsize).sum();
        let blocksizes = children.iter().map(|c| c.filesize).collect();
        let node = DagPbNode {
            links: children
                .drain(..)
                .map(|c| PbLink {
                    cid: c.cid,
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(UnixFsData::file(filesize, blocksizes).encode()),
        };
        let bytes = node.encode();
        let cid = Cid::sha256(self.version, Codec::DagPb, &bytes);
        tsize += bytes.len() as u64;
        self.nodes += 1;
        sink.node(Event::Node {
            cid,
            bytes: Bytes::from(bytes),
        });
        ChildLink {
            cid,
            tsize,
            filesize,
        }
    }

    /// Closes every open group bottom-up and returns the root. At least one leaf must have
    /// been pushed.
    pub fn finish(mut self, sink: &mut impl NodeSink) -> Root {
        let mut level = 0;
        loop {
            assert!(level < self.levels.len(), "finish() with no leaves");
            let is_top = self.levels[level + 1..].iter().all(Vec::is_empty);
            let open = self.levels[level].len();
            if is_top && open == 1 {
                let link = self.levels[level][0];
                return Root {
                    link,
                    depth: level as u32,
                    nodes: self.nodes,
                };
            }
            if open > 0 {
                let link = self.build(level, sink);
                self.push(level + 1, link, sink);
            }
            level += 1;
        }
    }
}
