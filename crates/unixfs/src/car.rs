//! CARv1 framing: the header and block frames a writer streams, and a reader that checks
//! every block against its CID.
//!
//! Owns the CARv1 byte layout (`varint(len) ‖ dag-cbor {"roots": [..], "version": 1}`, then
//! `varint(len(cid) + len(data)) ‖ cid ‖ data` per block). The writer side only builds byte
//! prefixes, so large block bodies can be streamed by the caller without copying; the reader
//! only reads from the reader it is given. Nothing here decides block order (see
//! [`crate::walk`]).

use std::io::{self, Read};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cid::{Cid, CidError};
use crate::varint;

/// Default largest frame [`CarReader`] accepts (CID plus block data).
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;
/// Largest header [`CarReader`] accepts.
pub const MAX_HEADER: usize = 1 << 20;

/// CBOR tag for an IPLD link.
const CID_TAG: u64 = 42;

/// The CAR header naming one root.
pub fn header(root: &Cid) -> Vec<u8> {
    header_with_roots(std::slice::from_ref(root))
}

/// The CAR header naming `roots`: `varint(len) ‖ {"roots": [..], "version": 1}` in dag-cbor,
/// keys in that order (dag-cbor's canonical order: shorter key first).
pub fn header_with_roots(roots: &[Cid]) -> Vec<u8> {
    let mut cbor = Vec::with_capacity(24 + 40 * roots.len());
    cbor_head(&mut cbor, 5, 2);
    cbor_text(&mut cbor, "roots");
    cbor_head(&mut cbor, 4, roots.len() as u64);
    for root in roots {
        cbor_head(&mut cbor, 6, CID_TAG);
        cbor_head(&mut cbor, 2, 1 + root.encoded_len() as u64);
        cbor.push(0x00);
        root.write_bytes(&mut cbor);
    }
    cbor_text(&mut cbor, "version");
    cbor_head(&mut cbor, 0, 1);
    let mut out = varint::to_vec(cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// The bytes before a block's data: `varint(len(cid) + data_len) ‖ cid`. Write them, then the
/// block's `data_len` bytes.
pub fn block_frame(cid: &Cid, data_len: usize) -> Vec<u8> {
    let cid_len = cid.encoded_len();
    let mut out = Vec::with_capacity(varint::MAX_LEN + cid_len);
    varint::encode((cid_len + data_len) as u64, &mut out);
    cid.write_bytes(&mut out);
    out
}

/// A whole block frame: [`block_frame`] followed by `data`.
pub fn block(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let mut out = block_frame(cid, data.len());
    out.extend_from_slice(data);
    out
}

/// Why a CAR stream could not be read.
#[derive(Debug, Error)]
pub enum CarError {
    /// The underlying reader failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside the header or a block frame.
    #[error("CAR is truncated")]
    Truncated,
    /// A malformed length varint.
    #[error("malformed varint: {0}")]
    Varint(#[from] varint::VarintError),
    /// The header is not `{"roots": [cid..], "version": 1}`.
    #[error("invalid CAR header: {0}")]
    Header(&'static str),
    /// A frame longer than the configured limit.
    #[error("frame of {0} bytes exceeds the limit")]
    FrameTooLarge(u64),
    /// A block's CID is malformed or unsupported.
    #[error("invalid block CID: {0}")]
    Cid(#[from] CidError),
    /// A block's bytes do not hash to its CID.
    #[error("block {0} does not match its CID")]
    HashMismatch(Cid),
}

/// Reads a CARv1 stream block by block, verifying each block's sha2-256 digest. Reads one byte
/// at a time for the length varints, so give it a buffered reader.
pub struct CarReader<R> {
    reader: R,
    roots: Vec<Cid>,
    max_frame: usize,
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header.
    pub fn new(mut reader: R) -> Result<CarReader<R>, CarError> {
        let len = read_varint(&mut reader)?.ok_or(CarError::Truncated)?;
        if len > MAX_HEADER as u64 {
            return Err(CarError::FrameTooLarge(len));
        }
        let mut header = vec![0u8; len as usize];
        read_exact(&mut reader, &mut header)?;
        let roots = parse_header(&header)?;
        Ok(CarReader {
            reader,
            roots,
            max_frame: DEFAULT_MAX_FRAME,
        })
    }

    /// Sets the largest frame (CID plus data) accepted.
    pub fn with_max_frame(mut self, max_frame: usize) -> CarReader<R> {
        self.max_frame = max_frame;
        self
    }

    /// The header's roots.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, or `None` at a clean end of stream.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        let Some(len) = read_varint(&mut self.reader)? else {
            return Ok(None);
        };
        if len > self.max_frame as u64 {
            return Err(CarError::FrameTooLarge(len));
        }
        let mut frame = vec![0u8; len as usize];
        read_exact(&mut self.reader, &mut frame)?;
        let (cid, used) = Cid::read_bytes(&frame)?;
        frame.drain(..used);
        let digest: [u8; 32] = Sha256::digest(&frame).into();
        if &digest != cid.digest() {
            return Err(CarError::HashMismatch(cid));
        }
        Ok(Some((cid, frame)))
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>), CarError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

/// Reads a varint byte by byte; `None` if the stream ends before its first byte.
fn read_varint<R: Read>(reader: &mut R) -> Result<Option<u64>, CarError> {
    let mut buf = [0u8; varint::MAX_LEN];
    for i in 0..varint::MAX_LEN {
        let mut byte = [0u8; 1];
        loop {
            match reader.read(&mut byte) {
                Ok(0) if i == 0 => return Ok(None),
                Ok(0) => return Err(CarError::Truncated),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf[i] = byte[0];
        if byte[0] & 0x80 == 0 {
            let (value, _) = varint::decode_minimal(&buf[..=i])?;
            return Ok(Some(value));
        }
    }
    Err(varint::VarintError::Overflow.into())
}

fn read_exact<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<(), CarError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => CarError::Truncated,
        _ => CarError::Io(e),
    })
}

fn cbor_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | value as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, value as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, 3, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over the dag-cbor header; understands only what a CARv1 header holds.
struct Cbor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cbor<'a> {
    /// Major type and argument of the next item (definite lengths only).
    fn head(&mut self) -> Result<(u8, u64), CarError> {
        let first = *self
            .bytes
            .get(self.pos)
            .ok_or(CarError::Header("truncated"))?;
        self.pos += 1;
        let width = match first & 0x1f {
            n @ 0..=23 => return Ok((first >> 5, u64::from(n))),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(CarError::Header("indefinite or reserved length")),
        };
        let raw = self.take(width)?;
        let value = raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        Ok((first >> 5, value))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], CarError> {
        let rest = (self.bytes.len() - self.pos) as u64;
        if len > rest {
            return Err(CarError::Header("truncated"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn text(&mut self) -> Result<&'a [u8], CarError> {
        match self.head()? {
            (3, len) => self.take(len),
            _ => Err(CarError::Header("map key is not a string")),
        }
    }

    fn cid(&mut self) -> Result<Cid, CarError> {
        if self.head()? != (6, CID_TAG) {
            return Err(CarError::Header("root is not a tag-42 link"));
        }
        let bytes = match self.head()? {
            (2, len) => self.take(len)?,
            _ => return Err(CarError::Header("link is not a byte string")),
        };
        match bytes.split_first() {
            Some((0, cid)) => Ok(Cid::from_bytes(cid)?),
            _ => Err(CarError::Header("link lacks the 0x00 multibase prefix")),
        }
    }
}

fn parse_header(bytes: &[u8]) -> Result<Vec<Cid>, CarError> {
    let mut cbor = Cbor { bytes, pos: 0 };
    let (major, entries) = cbor.head()?;
    if major != 5 {
        return Err(CarError::Header("not a map"));
    }
    let mut roots = None;
    let mut version = None;
    for _ in 0..entries {
        match cbor.text()? {
            b"roots" if roots.is_none() => {
                let (major, count) = cbor.head()?;
                if major != 4 {
                    return Err(CarError::Header("roots is not an array"));
                }
                if count > bytes.len() as u64 {
                    return Err(CarError::Header("truncated"));
                }
                let list = (0..count)
                    .map(|_| cbor.cid())
                    .collect::<Result<Vec<_>, _>>()?;
                roots = Some(list);
            }
            b"version" if version.is_none() => version = Some(cbor.head()?),
            _ => return Err(CarError::Header("unexpected or repeated key")),
        }
    }
    if cbor.pos != bytes.len() {
        return Err(CarError::Header("trailing bytes"));
    }
    if version != Some((0, 1)) {
        return Err(CarError::Header("version is not 1"));
    }
    roots.ok_or(CarError::Header("no roots"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{Codec, Version};

    fn hello() -> (Cid, &'static [u8]) {
        let data: &[u8] = b"hello world\n";
        (Cid::sha256(Version::V1, Codec::Raw, data), data)
    }

    #[test]
    fn round_trip() {
        let (cid, data) = hello();
        let v0 = Cid::sha256(Version::V0, Codec::DagPb, b"\x0a\x00");
        let mut car = header_with_roots(&[cid, v0]);
        car.extend_from_slice(&block(&cid, data));
        car.extend_from_slice(&block(&v0, b"\x0a\x00"));
        let mut reader = CarReader::new(&car[..]).unwrap();
        assert_eq!(reader.roots(), [cid, v0]);
        assert_eq!(reader.next_block().unwrap(), Some((cid, data.to_vec())));
        assert_eq!(
            reader.next_block().unwrap(),
            Some((v0, b"\x0a\x00".to_vec()))
        );
        assert!(reader.next_block().unwrap().is_none());
    }

    #[test]
    fn rejects_bad_streams() {
        let (cid, data) = hello();
        let mut car = header(&cid);
        car.extend_from_slice(&block(&cid, data));
        // Truncated inside the block.
        let cut = &car[..car.len() - 1];
        let mut reader = CarReader::new(cut).unwrap();
        assert!(matches!(reader.next_block(), Err(CarError::Truncated)));
        // Corrupted data.
        let mut bad = car.clone();
        *bad.last_mut().unwrap() ^= 1;
        let mut reader = CarReader::new(&bad[..]).unwrap();
        assert!(matches!(reader.next_block(), Err(CarError::HashMismatch(c)) if c == cid));
        // Frame limit.
        let mut reader = CarReader::new(&car[..]).unwrap().with_max_frame(8);
        assert!(matches!(
            reader.next_block(),
            Err(CarError::FrameTooLarge(_))
        ));
        // Broken headers.
        assert!(matches!(CarReader::new(&[][..]), Err(CarError::Truncated)));
        let mut wrong_version = header(&cid);
        *wrong_version.last_mut().unwrap() = 2;
        assert!(matches!(
            CarReader::new(&wrong_version[..]),
            Err(CarError::Header(_))
        ));
        assert!(matches!(
            CarReader::new(&[0x01, 0xa0][..]),
            Err(CarError::Header(_))
        ));
        assert!(matches!(
            CarReader::new(&[0x02, 0xa0][..]),
            Err(CarError::Truncated)
        ));
    }
}
