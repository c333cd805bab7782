//! Import profiles: the parameters that, with the file bytes, decide a file's CID.
//!
//! Owns the named profiles (`memo`, `kubo`, `kubo-v0`, `unixfs-v1-2025`) and their
//! validation. It never changes a published profile's numbers: doing so changes every CID
//! computed with it.

use thiserror::Error;

use crate::cid::Version;

/// How leaves (chunks of file bytes) are stored as blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafFormat {
    /// A `raw` block holding the chunk.
    Raw,
    /// A dag-pb node `Data = UnixFS{Type=File, Data=chunk, filesize=len}` (CIDv0 style).
    DagPb,
}

/// The parameters of a UnixFS file import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Name used by [`Profile::by_name`].
    pub name: &'static str,
    /// Size of every chunk but the last.
    pub chunk_size: u32,
    /// Most links an inner node may have.
    pub max_links: u32,
    /// How leaves are stored.
    pub leaves: LeafFormat,
    /// Version of every CID in the DAG.
    pub cid_version: Version,
}

/// Why a hand-made profile cannot be imported with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    /// `chunk_size` is zero.
    #[error("chunk size must be at least 1")]
    ZeroChunkSize,
    /// `max_links` is below two, which would never reduce the tree to one root.
    #[error("max links must be at least 2")]
    TooFewLinks,
    /// CIDv0 can only name dag-pb blocks.
    #[error("CIDv0 requires dag-pb leaves")]
    RawLeavesWithV0,
}

impl Profile {
    /// MEMO's default: CIDv1, raw leaves, 253,952-byte chunks, 174 links.
    pub const MEMO: Profile = Profile {
        name: "memo",
        chunk_size: 253_952,
        max_links: 174,
        leaves: LeafFormat::Raw,
        cid_version: Version::V1,
    };

    /// `ipfs add --cid-version=1`: CIDv1, raw leaves, 262,144-byte chunks, 174 links.
    pub const KUBO: Profile = Profile {
        name: "kubo",
        chunk_size: 262_144,
        max_links: 174,
        leaves: LeafFormat::Raw,
        cid_version: Version::V1,
    };

    /// Plain `ipfs add`: CIDv0, dag-pb leaves, 262,144-byte chunks, 174 links.
    pub const KUBO_V0: Profile = Profile {
        name: "kubo-v0",
        chunk_size: 262_144,
        max_links: 174,
        leaves: LeafFormat::DagPb,
        cid_version: Version::V0,
    };

    /// The 2025 UnixFS profile: CIDv1, raw leaves, 1 MiB chunks, 1024 links.
    pub const UNIXFS_V1_2025: Profile = Profile {
        name: "unixfs-v1-2025",
        chunk_size: 1_048_576,
        max_links: 1024,
        leaves: LeafFormat::Raw,
        cid_version: Version::V1,
    };

    /// Every named profile, the default first.
    pub const ALL: [Profile; 4] = [
        Profile::MEMO,
        Profile::KUBO,
        Profile::KUBO_V0,
        Profile::UNIXFS_V1_2025,
    ];

    /// The named profile, if it exists.
    pub fn by_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name == name)
    }

    /// Checks that an importer can use this profile.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.chunk_size == 0 {
            return Err(ProfileError::ZeroChunkSize);
        }
        if self.max_links < 2 {
            return Err(ProfileError::TooFewLinks);
        }
        if self.cid_version == Version::V0 && self.leaves == LeafFormat::Raw {
            return Err(ProfileError::RawLeavesWithV0);
        }
        Ok(())
    }
}

impl Default for Profile {
    /// [`Profile::MEMO`].
    fn default() -> Profile {
        Profile::MEMO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles() {
        for p in Profile::ALL {
            assert_eq!(Profile::by_name(p.name), Some(p));
            assert_eq!(p.validate(), Ok(()));
        }
        assert_eq!(Profile::default(), Profile::MEMO);
        assert_eq!(Profile::by_name("nope"), None);
        let bad = Profile {
            leaves: LeafFormat::Raw,
            ..Profile::KUBO_V0
        };
        assert_eq!(bad.validate(), Err(ProfileError::RawLeavesWithV0));
    }
}
