//! The depth-first, duplicate-free block order a gateway uses to stream a DAG as a CAR
//! (`application/vnd.ipld.car; version=1; order=dfs; dups=n`).
//!
//! Owns only the order: it says which block comes next and learns a dag-pb block's children
//! when the caller hands the block back. It never fetches, stores or verifies blocks; the
//! caller does the I/O and checks integrity.
//!
//! A server streams a CAR like this:
//!
//! ```
//! use stratus_unixfs::{car, DfsWalk, Imported};
//! # fn fetch(cid: &stratus_unixfs::Cid) -> Vec<u8> { b"hello world\n".to_vec() }
//! # let root: stratus_unixfs::Cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4".parse().unwrap();
//! let mut out = car::header(&root);
//! let mut walk = DfsWalk::new(root);
//! while let Some(cid) = walk.next_block() {
//!     let bytes = fetch(&cid); // raw leaf: file[offset..offset+len]; node: stored bytes
//!     walk.visit(&cid, &bytes).expect("stored blocks decode");
//!     out.extend_from_slice(&car::block_frame(&cid, bytes.len()));
//!     out.extend_from_slice(&bytes);
//! }
//! ```

use std::collections::HashSet;

use crate::cid::{Cid, Codec};
use crate::dagpb::{DagPbNode, DecodeError};

/// A pre-order depth-first walk from a root that yields each distinct CID once.
///
/// Memory: one stack entry per link not yet visited, and one set entry per distinct block
/// yielded.
#[derive(Debug, Clone)]
pub struct DfsWalk {
    /// CIDs still to visit; the top is next.
    stack: Vec<Cid>,
    seen: HashSet<Cid>,
}

impl DfsWalk {
    /// A walk starting at `root`.
    pub fn new(root: Cid) -> DfsWalk {
        DfsWalk {
            stack: vec![root],
            seen: HashSet::new(),
        }
    }

    /// The next block to emit, or `None` when the walk is over. Blocks already yielded are
    /// skipped. After a dag-pb CID, call [`visit`](DfsWalk::visit) with its bytes before
    /// asking again, or its children are never reached.
    pub fn next_block(&mut self) -> Option<Cid> {
        while let Some(cid) = self.stack.pop() {
            if self.seen.insert(cid) {
                return Some(cid);
            }
        }
        None
    }

    /// Schedules the children of the block `cid` (just returned by
    /// [`next_block`](DfsWalk::next_block)) so they come next, in link order. Raw blocks have
    /// no children and are not decoded.
    pub fn visit(&mut self, cid: &Cid, bytes: &[u8]) -> Result<(), DecodeError> {
        if cid.codec() == Codec::DagPb {
            let node = DagPbNode::decode(bytes)?;
            self.stack
                .extend(node.links.iter().rev().map(|link| link.cid));
        }
        Ok(())
    }
}
