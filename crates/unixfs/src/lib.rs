//! IPFS UnixFS *file* import with no I/O of its own: CIDs, import profiles, dag-pb and UnixFS
//! encoding, a streaming balanced-DAG importer, CARv1 framing and a depth-first walk plan.
//!
//! This crate owns the bytes and identifiers of a file's DAG. It never opens files, sockets or
//! databases: callers hand it bytes (or a reader they own) and persist the blocks it reports.
//!
//! # How a server uses it
//!
//! **Upload.** Create an [`Importer`] with the account's [`Profile`]. For every piece of the
//! request body: append the bytes to the stored object (the server's own storage), call
//! [`Importer::write`], then persist what [`Importer::drain_events`] yields — for an
//! [`Event::Leaf`], an index entry `cid → (object, offset, len)` (the leaf's bytes are already in
//! the object, so nothing is copied); for an [`Event::Node`], its bytes under its CID. At the end,
//! [`Importer::finish`] returns the root and the last events (the root's is last). Events come
//! children first, so once the root is published the whole DAG is readable. `write` may block
//! briefly while the hashing pool catches up: from async code, run the import in a blocking
//! task. Memory stays bounded whatever the file size as long as events are drained.
//!
//! **kubo-v0 leaves.** A CIDv0 leaf is not the file bytes but a dag-pb wrapper around them.
//! Regenerate it from the indexed range with [`encode_v0_leaf`], or stream
//! `prefix ‖ file[offset..offset + len] ‖ suffix` with [`v0_leaf_envelope`] without copying.
//!
//! **CAR export.** Write [`car::header`]`(&root)`, then walk with [`DfsWalk`]: for each CID it
//! yields, fetch the block (a stored node, a file range, or a regenerated v0 leaf), pass dag-pb
//! blocks to [`DfsWalk::visit`] so their children come next, and write
//! [`car::block_frame`]`(&cid, len)` followed by the block's bytes. Serve it as
//! `application/vnd.ipld.car; version=1; order=dfs; dups=n`. [`CarReader`] reads such a stream
//! back and verifies every block.
//!
//! **Just the CID.** [`import_reader`] reads a reader straight into chunk buffers and keeps no
//! events; it is what `stratus cid FILE` calls.
//!
//! ```
//! use stratus_unixfs::{Event, Importer, Profile};
//!
//! let mut importer = Importer::new(Profile::KUBO);
//! importer.write(b"hello world\n");
//! for event in importer.drain_events() {
//!     match event {
//!         Event::Leaf { .. } => { /* the bytes are file[offset..offset + len] */ }
//!         Event::Node { .. } => { /* store the node's bytes under its CID */ }
//!     }
//! }
//! let imported = importer.finish();
//! assert_eq!(
//!     imported.root.to_string(),
//!     "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
//! );
//! ```

pub mod car;
pub mod cid;
pub mod dagpb;
pub mod importer;
mod layout;
pub mod multibase;
pub mod profile;
mod sha256x2;
pub mod varint;
pub mod walk;

pub use crate::car::{CarError, CarReader};
pub use crate::cid::{Cid, CidError, Codec, Version};
pub use crate::dagpb::{
    encode_v0_leaf, v0_leaf_envelope, DagPbNode, DataType, DecodeError, PbLink, UnixFsData,
};
pub use crate::importer::{
    import_reader, import_reader_with, Event, Imported, Importer, TreeStats,
};
pub use crate::multibase::Base;
pub use crate::profile::{LeafFormat, Profile, ProfileError};
pub use crate::walk::DfsWalk;
