//! dag-pb nodes and the UnixFS `Data` message they carry, encoded and decoded by hand so the
//! bytes match go-ipfs/Kubo and js-ipfs exactly.
//!
//! Owns the protobuf wire format of `PBNode`, `PBLink` and UnixFS `Data`, and the envelope of a
//! CIDv0-style leaf. It never hashes, never does I/O, and never panics on malformed input:
//! decoding returns a [`DecodeError`].
//!
//! Encoding is canonical: every `Links` entry (field 2) comes before `Data` (field 1); a link
//! writes `Hash`, `Name`, `Tsize` in that order; `blocksizes` are not packed.

use thiserror::Error;

use crate::cid::{Cid, CidError};
use crate::varint::{self, VarintError};

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// Why bytes are not a dag-pb node or a UnixFS `Data` message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A malformed varint.
    #[error("malformed varint: {0}")]
    Varint(#[from] VarintError),
    /// A length-delimited field runs past the end of its message.
    #[error("field runs past the end of the message")]
    Truncated,
    /// A known field with the wrong wire type, or an unsupported wire type.
    #[error("field {field} has wire type {wire}")]
    WireType {
        /// Field number.
        field: u64,
        /// Wire type found.
        wire: u64,
    },
    /// A field that dag-pb does not define.
    #[error("unknown field {0}")]
    UnknownField(u64),
    /// A field that may appear once appears again, or `PBLink` fields out of order.
    #[error("field {0} repeated or out of order")]
    FieldOrder(u64),
    /// A link without `Hash`.
    #[error("link has no Hash")]
    MissingHash,
    /// A link `Hash` that is not a supported CID.
    #[error("link Hash is not a supported CID: {0}")]
    Cid(#[from] CidError),
    /// A link `Name` that is not UTF-8.
    #[error("link Name is not UTF-8")]
    InvalidName,
    /// A UnixFS message without `Type`.
    #[error("UnixFS Data has no Type")]
    MissingType,
    /// A UnixFS `Type` value outside the enum.
    #[error("unknown UnixFS Type {0}")]
    UnknownType(u64),
    /// The node has no `Data` field, so it is not UnixFS.
    #[error("node has no Data")]
    NoData,
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The linked block.
    pub cid: Cid,
    /// Link name; UnixFS file nodes write it present and empty.
    pub name: Option<String>,
    /// Cumulative size of the linked block and everything below it.
    pub tsize: Option<u64>,
}

/// A decoded (or to-be-encoded) dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DagPbNode {
    /// Links, in order.
    pub links: Vec<PbLink>,
    /// Opaque data; for UnixFS, an encoded [`UnixFsData`].
    pub data: Option<Vec<u8>>,
}

/// UnixFS node types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 0
    Raw,
    /// 1
    Directory,
    /// 2
    File,
    /// 3
    Metadata,
    /// 4
    Symlink,
    /// 5
    HamtShard,
}

impl DataType {
    /// The protobuf enum value.
    pub const fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    /// The type with protobuf enum value `code`.
    pub const fn from_code(code: u64) -> Option<DataType> {
        Some(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }
}

/// The UnixFS `Data` message (fields 1–6; `mode` and `mtime` are skipped when decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData {
    /// `Type` (field 1).
    pub data_type: DataType,
    /// `Data` (field 2): file bytes held inline (CIDv0-style leaves).
    pub data: Option<Vec<u8>>,
    /// `filesize` (field 3): file bytes under this node.
    pub filesize: Option<u64>,
    /// `blocksizes` (field 4): file bytes under each link, in link order.
    pub blocksizes: Vec<u64>,
    /// `hashType` (field 5), HAMT directories only.
    pub hash_type: Option<u64>,
    /// `fanout` (field 6), HAMT directories only.
    pub fanout: Option<u64>,
}

impl UnixFsData {
    /// A file message with no inline data.
    pub fn file(filesize: u64, blocksizes: Vec<u64>) -> UnixFsData {
        UnixFsData {
            data_type: DataType::File,
            data: None,
            filesize: Some(filesize),
            blocksizes,
            hash_type: None,
            fanout: None,
        }
    }

    /// The protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 4 * self.blocksizes.len());
        put_varint_field(&mut out, 1, self.data_type.code());
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 2, data);
        }
        if let Some(filesize) = self.filesize {
            put_varint_field(&mut out, 3, filesize);
        }
        for &size in &self.blocksizes {
            put_varint_field(&mut out, 4, size);
        }
        if let Some(hash_type) = self.hash_type {
            put_varint_field(&mut out, 5, hash_type);
        }
        if let Some(fanout) = self.fanout {
            put_varint_field(&mut out, 6, fanout);
        }
        out
    }

    /// Parses the protobuf bytes. Unknown fields are skipped; `blocksizes` may be packed or not.
    pub fn decode(bytes: &[u8]) -> Result<UnixFsData, DecodeError> {
        let mut data_type = None;
        let mut out = UnixFsData {
            data_type: DataType::Raw,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
        };
        let mut reader = Reader { bytes, pos: 0 };
        while let Some((field, wire)) = reader.key()? {
            match (field, wire) {
                (1, WIRE_VARINT) => {
                    let code = reader.varint()?;
                    data_type =
                        Some(DataType::from_code(code).ok_or(DecodeError::UnknownType(code))?);
                }
                (2, WIRE_LEN) => out.data = Some(reader.bytes()?.to_vec()),
                (3, WIRE_VARINT) => out.filesize = Some(reader.varint()?),
                (4, WIRE_VARINT) => out.blocksizes.push(reader.varint()?),
                (4, WIRE_LEN) => {
                    let mut packed = Reader {
                        bytes: reader.bytes()?,
                        pos: 0,
                    };
                    while !packed.at_end() {
                        out.blocksizes.push(packed.varint()?);
                    }
                }
                (5, WIRE_VARINT) => out.hash_type = Some(reader.varint()?),
                (6, WIRE_VARINT) => out.fanout = Some(reader.varint()?),
                (1..=6, _) => return Err(DecodeError::WireType { field, wire }),
                _ => reader.skip(field, wire)?,
            }
        }
        out.data_type = data_type.ok_or(DecodeError::MissingType)?;
        Ok(out)
    }
}

impl DagPbNode {
    /// The canonical protobuf bytes: links first, then data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.links.len() * 48 + self.data.as_ref().map_or(0, |d| d.len() + 8),
        );
        let mut link_buf = Vec::with_capacity(64);
        for link in &self.links {
            link_buf.clear();
            let hash = link.cid.to_bytes();
            put_bytes_field(&mut link_buf, 1, &hash);
            if let Some(name) = &link.name {
                put_bytes_field(&mut link_buf, 2, name.as_bytes());
            }
            if let Some(tsize) = link.tsize {
                put_varint_field(&mut link_buf, 3, tsize);
            }
            put_bytes_field(&mut out, 2, &link_buf);
        }
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 1, data);
        }
        out
    }

    /// Parses a dag-pb block. Only fields 1 (`Data`, at most once) and 2 (`Links`) are allowed;
    /// `Data` is accepted before or after the links; link fields must be in order.
    pub fn decode(bytes: &[u8]) -> Result<DagPbNode, DecodeError> {
        let mut node = DagPbNode::default();
        let mut reader = Reader { bytes, pos: 0 };
        while let Some((field, wire)) = reader.key()? {
            match (field, wire) {
                (1, WIRE_LEN) => {
                    if node.data.is_some() {
                        return Err(DecodeError::FieldOrder(1));
                    }
                    node.data = Some(reader.bytes()?.to_vec());
                }
                (2, WIRE_LEN) => node.links.push(decode_link(reader.bytes()?)?),
                (1 | 2, _) => return Err(DecodeError::WireType { field, wire }),
                _ => return Err(DecodeError::UnknownField(field)),
            }
        }
        Ok(node)
    }

    /// Decodes `data` as a UnixFS message.
    pub fn unixfs(&self) -> Result<UnixFsData, DecodeError> {
        UnixFsData::decode(self.data.as_deref().ok_or(DecodeError::NoData)?)
    }
}

fn decode_link(bytes: &[u8]) -> Result<PbLink, DecodeError> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut last_field = 0;
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    while let Some((field, wire)) = reader.key()? {
        if field <= last_field && (1..=3).contains(&field) {
            return Err(DecodeError::FieldOrder(field));
        }
        last_field = field;
        match (field, wire) {
            (1, WIRE_LEN) => cid = Some(Cid::from_bytes(reader.bytes()?)?),
            (2, WIRE_LEN) => {
                let text =
                    std::str::from_utf8(reader.bytes()?).map_err(|_| DecodeError::InvalidName)?;
                name = Some(text.to_owned());
            }
            (3, WIRE_VARINT) => tsize = Some(reader.varint()?),
            (1..=3, _) => return Err(DecodeError::WireType { field, wire }),
            _ => return Err(DecodeError::UnknownField(field)),
        }
    }
    Ok(PbLink {
        cid: cid.ok_or(DecodeError::MissingHash)?,
        name,
        tsize,
    })
}

/// Length of the dag-pb block [`encode_v0_leaf`] makes for a chunk of `len` bytes.
pub fn v0_leaf_len(len: usize) -> usize {
    let (prefix, suffix) = v0_leaf_envelope(len);
    prefix.len() + len + suffix.len()
}

/// The bytes that go before and after a chunk of `len` bytes to make its CIDv0-style leaf
/// block (`PBNode{Data = UnixFS{Type=File, Data=chunk, filesize=len}}`), so that a reader can
/// stream `prefix ‖ chunk ‖ suffix` without copying the chunk. An empty chunk has no `Data`
/// field, as Kubo writes it.
pub fn v0_leaf_envelope(len: usize) -> (Vec<u8>, Vec<u8>) {
    let len64 = len as u64;
    let mut suffix = Vec::with_capacity(11);
    put_varint_field(&mut suffix, 3, len64);
    let data_field = if len == 0 {
        0
    } else {
        1 + varint::encoded_len(len64) + len
    };
    let unixfs_len = 2 + data_field + suffix.len();
    let mut prefix = Vec::with_capacity(16);
    put_key(&mut prefix, 1, WIRE_LEN);
    varint::encode(unixfs_len as u64, &mut prefix);
    put_varint_field(&mut prefix, 1, DataType::File.code());
    if len > 0 {
        put_key(&mut prefix, 2, WIRE_LEN);
        varint::encode(len64, &mut prefix);
    }
    (prefix, suffix)
}

/// The CIDv0-style leaf block of `chunk`: a dag-pb node with
/// `Data = UnixFS{Type=File, Data=chunk, filesize=len}`.
pub fn encode_v0_leaf(chunk: &[u8]) -> Vec<u8> {
    let (prefix, suffix) = v0_leaf_envelope(chunk.len());
    let mut out = Vec::with_capacity(prefix.len() + chunk.len() + suffix.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(chunk);
    out.extend_from_slice(&suffix);
    out
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint::encode((field << 3) | wire, out);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_key(out, field, WIRE_VARINT);
    varint::encode(value, out);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    varint::encode(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A cursor over one protobuf message.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let (value, used) = varint::decode(&self.bytes[self.pos..])?;
        self.pos += used;
        Ok(value)
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u64, u64)>, DecodeError> {
        if self.at_end() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::UnknownField(0));
        }
        Ok(Some((field, key & 7)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let rest = self.bytes.len() - self.pos;
        if len > rest as u64 {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn skip(&mut self, field: u64, wire: u64) -> Result<(), DecodeError> {
        let width = match wire {
            WIRE_VARINT => return self.varint().map(drop),
            WIRE_LEN => return self.bytes().map(drop),
            WIRE_FIXED64 => 8,
            WIRE_FIXED32 => 4,
            _ => return Err(DecodeError::WireType { field, wire }),
        };
        if self.bytes.len() - self.pos < width {
            return Err(DecodeError::Truncated);
        }
        self.pos += width;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{Codec, Version};
    use proptest::prelude::*;

    #[test]
    fn v0_leaf_bytes() {
        // "hello world" as plain `ipfs add` stores it.
        let leaf = encode_v0_leaf(b"hello world");
        let mut expected = vec![0x0a, 0x11, 0x08, 0x02, 0x12, 0x0b];
        expected.extend_from_slice(b"hello world");
        expected.extend_from_slice(&[0x18, 0x0b]);
        assert_eq!(leaf, expected);
        assert_eq!(v0_leaf_len(11), leaf.len());
        assert_eq!(encode_v0_leaf(b""), [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        let node = DagPbNode::decode(&leaf).unwrap();
        assert!(node.links.is_empty());
        let unixfs = node.unixfs().unwrap();
        assert_eq!(unixfs.data_type, DataType::File);
        assert_eq!(unixfs.data.as_deref(), Some(&b"hello world"[..]));
        assert_eq!(unixfs.filesize, Some(11));
    }

    #[test]
    fn big_v0_leaf_envelope() {
        let chunk = vec![7u8; 262_144];
        let leaf = encode_v0_leaf(&chunk);
        assert_eq!(leaf.len(), v0_leaf_len(chunk.len()));
        let unixfs = DagPbNode::decode(&leaf).unwrap().unixfs().unwrap();
        assert_eq!(unixfs.data.unwrap(), chunk);
        assert_eq!(unixfs.filesize, Some(262_144));
    }

    #[test]
    fn links_come_first_and_data_order_is_tolerated() {
        let cid = Cid::sha256(Version::V1, Codec::Raw, b"x");
        let node = DagPbNode {
            links: vec![PbLink {
                cid,
                name: Some(String::new()),
                tsize: Some(1),
            }],
            data: Some(UnixFsData::file(1, vec![1]).encode()),
        };
        let bytes = node.encode();
        assert_eq!(bytes[0], 0x12);
        assert_eq!(DagPbNode::decode(&bytes).unwrap(), node);
        // Data before Links.
        let data = node.data.clone().unwrap();
        let mut data_first = vec![0x0a, data.len() as u8];
        data_first.extend_from_slice(&data);
        let links_len = bytes.len() - data.len() - 2;
        data_first.extend_from_slice(&bytes[..links_len]);
        assert_eq!(DagPbNode::decode(&data_first).unwrap(), node);
    }

    #[test]
    fn rejects_malformed_nodes() {
        assert_eq!(
            DagPbNode::decode(&[0x1a, 0x00]),
            Err(DecodeError::UnknownField(3))
        );
        assert_eq!(
            DagPbNode::decode(&[0x08, 0x00]),
            Err(DecodeError::WireType { field: 1, wire: 0 })
        );
        assert_eq!(
            DagPbNode::decode(&[0x0a, 0x05, 0x00]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            DagPbNode::decode(&[0x0a, 0x00, 0x0a, 0x00]),
            Err(DecodeError::FieldOrder(1))
        );
        // A link with Tsize before Name.
        assert_eq!(
            DagPbNode::decode(&[0x12, 0x04, 0x18, 0x01, 0x12, 0x00]),
            Err(DecodeError::FieldOrder(2))
        );
        assert_eq!(
            DagPbNode::decode(&[0x12, 0x02, 0x18, 0x01]),
            Err(DecodeError::MissingHash)
        );
        assert!(matches!(
            DagPbNode::decode(&[0x12, 0x03, 0x0a, 0x01, 0x00]),
            Err(DecodeError::Cid(_))
        ));
        assert_eq!(
            DagPbNode::decode(&[0x0a]),
            Err(DecodeError::Varint(VarintError::Truncated))
        );
        assert_eq!(
            UnixFsData::decode(&[0x18, 0x00]),
            Err(DecodeError::MissingType)
        );
        assert_eq!(
            UnixFsData::decode(&[0x08, 0x09]),
            Err(DecodeError::UnknownType(9))
        );
        assert_eq!(DagPbNode::default().unixfs(), Err(DecodeError::NoData));
    }

    #[test]
    fn packed_blocksizes_and_unknown_fields() {
        // Type=File, blocksizes packed [1, 300], mode=0o644 (field 7), then filesize.
        let bytes = [
            0x08, 0x02, 0x22, 0x03, 0x01, 0xac, 0x02, 0x38, 0xa4, 0x03, 0x18, 0xad, 0x02,
        ];
        let data = UnixFsData::decode(&bytes).unwrap();
        assert_eq!(data.blocksizes, [1, 300]);
        assert_eq!(data.filesize, Some(301));
    }

    fn arb_cid() -> impl Strategy<Value = Cid> {
        (any::<[u8; 32]>(), 0u8..3).prop_map(|(digest, kind)| match kind {
            0 => Cid::new_v0(digest),
            1 => Cid::new_v1(Codec::Raw, digest),
            _ => Cid::new_v1(Codec::DagPb, digest),
        })
    }

    fn arb_link() -> impl Strategy<Value = PbLink> {
        (
            arb_cid(),
            proptest::option::of(".{0,12}"),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(cid, name, tsize)| PbLink { cid, name, tsize })
    }

    fn arb_data_type() -> impl Strategy<Value = DataType> {
        (0u64..6).prop_map(|c| DataType::from_code(c).unwrap())
    }

    fn arb_unixfs() -> impl Strategy<Value = UnixFsData> {
        (
            arb_data_type(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(any::<u64>(), 0..8),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |(data_type, data, filesize, blocksizes, hash_type, fanout)| UnixFsData {
                    data_type,
                    data,
                    filesize,
                    blocksizes,
                    hash_type,
                    fanout,
                },
            )
    }

    proptest! {
        #[test]
        fn node_round_trip(
            links in proptest::collection::vec(arb_link(), 0..6),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let node = DagPbNode { links, data };
            let bytes = node.encode();
            prop_assert_eq!(DagPbNode::decode(&bytes).unwrap(), node.clone());
            prop_assert_eq!(DagPbNode::decode(&bytes).unwrap().encode(), bytes);
        }

        #[test]
        fn unixfs_round_trip(data in arb_unixfs()) {
            let bytes = data.encode();
            prop_assert_eq!(UnixFsData::decode(&bytes).unwrap(), data);
        }

        #[test]
        fn v0_leaf_round_trip(chunk in proptest::collection::vec(any::<u8>(), 0..300)) {
            let leaf = encode_v0_leaf(&chunk);
            prop_assert_eq!(leaf.len(), v0_leaf_len(chunk.len()));
            let unixfs = DagPbNode::decode(&leaf).unwrap().unixfs().unwrap();
            let expected = UnixFsData {
                data: (!chunk.is_empty()).then(|| chunk.clone()),
                ..UnixFsData::file(chunk.len() as u64, vec![])
            };
            prop_assert_eq!(unixfs.encode(), leaf[leaf.len() - unixfs.encode().len()..].to_vec());
            prop_assert_eq!(unixfs, expected);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(node) = DagPbNode::decode(&bytes) {
                let _ = node.unixfs();
            }
            let _ = UnixFsData::decode(&bytes);
        }
    }
}
