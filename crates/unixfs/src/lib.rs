//! IPFS UnixFS *file* import with no I/O of its own: CIDs, import profiles, dag-pb and UnixFS
//! encoding, a streaming balanced-DAG importer, CARv1 framing and a depth-first walk plan.
//!
//! This crate owns the bytes and identifiers of a file's DAG. It never opens files, sockets or
//! databases: callers hand it bytes (or a reader they own) and persist the blocks it reports.
//!
//! Import a file and persist its blocks:
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
