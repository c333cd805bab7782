//! Content identifiers: CIDv0 and CIDv1 with the `raw` and `dag-pb` codecs and a sha2-256
//! multihash, in binary and text form.
//!
//! Owns parsing and printing of CIDs. Parsing never panics: every malformed input is a
//! [`CidError`]. This module never hashes file data itself beyond [`Cid::sha256`].
//!
//! CID text comes straight from URLs, so its length is capped at [`MAX_TEXT_LEN`] before any
//! decoding: parsing costs time linear in the input (the length check) plus a bounded decode.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::multibase::{Base, BaseError};
use crate::varint::{self, VarintError};

/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Length of a sha2-256 digest.
pub const DIGEST_LEN: usize = 32;

/// Longest binary CID that [`MAX_TEXT_LEN`] is sized for: the version (1 byte), a codec and a
/// hash function code of up to 4 varint bytes each (codes below 2^28, which covers every entry of
/// the multicodec table), a 1-byte digest length and a 64-byte digest (sha2-512, blake2b-512…).
pub const MAX_BINARY_LEN: usize = 1 + 4 + 4 + 1 + 64;

/// Longest CID text [`Cid::from_str`] reads: the multibase prefix plus base16 (the longest of the
/// supported bases) of [`MAX_BINARY_LEN`] bytes, 149 characters. Every CID with a digest of at
/// most 64 bytes fits in every supported base (base32: 1 + 119, base36: 1 + 115, base58btc: 1 + 102); only
/// identity-hash CIDs, which inline their data, can be longer, and they are refused
/// ([`CidError::TooLong`]) like any other over-long text. Longer text is refused before a single
/// character is decoded.
pub const MAX_TEXT_LEN: usize = 1 + 2 * MAX_BINARY_LEN;

/// CID version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// A bare sha2-256 multihash of a dag-pb block, printed in base58btc (`Qm…`).
    V0,
    /// `<version><codec><multihash>`, printed with a multibase prefix (`b…` by default).
    V1,
}

/// The codec (multicodec) of the block a CID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// `raw` (0x55): the block is opaque bytes.
    Raw,
    /// `dag-pb` (0x70): the block is a protobuf PBNode.
    DagPb,
}

impl Codec {
    /// The multicodec code.
    pub const fn code(self) -> u64 {
        match self {
            Codec::Raw => 0x55,
            Codec::DagPb => 0x70,
        }
    }

    /// The codec with multicodec `code`, if supported.
    pub const fn from_code(code: u64) -> Option<Codec> {
        match code {
            0x55 => Some(Codec::Raw),
            0x70 => Some(Codec::DagPb),
            _ => None,
        }
    }
}

/// A content identifier whose multihash is sha2-256.
///
/// Ordering is by version, then codec, then digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    version: Version,
    codec: Codec,
    digest: [u8; DIGEST_LEN],
}

/// Why bytes or text are not a supported CID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidError {
    /// Empty input.
    #[error("empty CID")]
    Empty,
    /// Text longer than [`MAX_TEXT_LEN`]; nothing of it was decoded.
    #[error("CID text is {0} bytes long, more than the {max} allowed", max = MAX_TEXT_LEN)]
    TooLong(usize),
    /// The text starts with a character that is not a supported multibase prefix.
    #[error("unsupported multibase prefix {0:?}")]
    UnsupportedMultibase(char),
    /// The text is not valid in its base.
    #[error("invalid multibase text: {0}")]
    Base(#[from] BaseError),
    /// A varint in the binary form is malformed.
    #[error("malformed varint: {0}")]
    Varint(#[from] VarintError),
    /// A CID version other than 1 in the explicit binary form.
    #[error("unsupported CID version {0}")]
    UnsupportedVersion(u64),
    /// A codec other than raw or dag-pb.
    #[error("unsupported codec 0x{0:x}")]
    UnsupportedCodec(u64),
    /// A multihash function other than sha2-256.
    #[error("unsupported multihash function 0x{0:x}")]
    UnsupportedHash(u64),
    /// A sha2-256 multihash whose declared digest length is not 32.
    #[error("digest length {0} is not 32")]
    DigestLength(u64),
    /// The input ends inside the digest.
    #[error("CID is truncated")]
    Truncated,
    /// Bytes follow a complete CID.
    #[error("{0} trailing bytes after the CID")]
    TrailingBytes(usize),
    /// A `Qm…` string whose bytes are not a CIDv0.
    #[error("not a CIDv0")]
    NotV0,
}

impl Cid {
    /// A CIDv0 (always dag-pb) with the given sha2-256 digest.
    pub const fn new_v0(digest: [u8; DIGEST_LEN]) -> Cid {
        Cid {
            version: Version::V0,
            codec: Codec::DagPb,
            digest,
        }
    }

    /// A CIDv1 with the given codec and sha2-256 digest.
    pub const fn new_v1(codec: Codec, digest: [u8; DIGEST_LEN]) -> Cid {
        Cid {
            version: Version::V1,
            codec,
            digest,
        }
    }

    /// Hashes `block` and names it. CIDv0 can only name dag-pb blocks, so a V0 request with
    /// another codec gives a CIDv1.
    pub fn sha256(version: Version, codec: Codec, block: &[u8]) -> Cid {
        let digest: [u8; DIGEST_LEN] = Sha256::digest(block).into();
        match (version, codec) {
            (Version::V0, Codec::DagPb) => Cid::new_v0(digest),
            _ => Cid::new_v1(codec, digest),
        }
    }

    /// The CID version.
    pub const fn version(&self) -> Version {
        self.version
    }

    /// The codec of the named block.
    pub const fn codec(&self) -> Codec {
        self.codec
    }

    /// The sha2-256 digest of the named block.
    pub const fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// The multihash: `0x12 0x20 <digest>`.
    pub fn multihash(&self) -> [u8; 2 + DIGEST_LEN] {
        let mut out = [0u8; 2 + DIGEST_LEN];
        out[0] = SHA2_256 as u8;
        out[1] = DIGEST_LEN as u8;
        out[2..].copy_from_slice(&self.digest);
        out
    }

    /// The same content as a CIDv1 (a CIDv1 is returned unchanged).
    pub const fn to_v1(&self) -> Cid {
        Cid::new_v1(self.codec, self.digest)
    }

    /// Length of the binary form.
    pub const fn encoded_len(&self) -> usize {
        match self.version {
            Version::V0 => 2 + DIGEST_LEN,
            // Version 1, codec 0x55 or 0x70 and the multihash header are one byte each.
            Version::V1 => 4 + DIGEST_LEN,
        }
    }

    /// Appends the binary form to `out`.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        if self.version == Version::V1 {
            varint::encode(1, out);
            varint::encode(self.codec.code(), out);
        }
        out.extend_from_slice(&self.multihash());
    }

    /// The binary form: the multihash for a CIDv0, `0x01 <codec> <multihash>` for a CIDv1.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_bytes(&mut out);
        out
    }

    /// Parses a binary CID that fills `bytes` exactly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        let (cid, used) = Cid::read_bytes(bytes)?;
        if used != bytes.len() {
            return Err(CidError::TrailingBytes(bytes.len() - used));
        }
        Ok(cid)
    }

    /// Parses a binary CID at the start of `bytes`; returns it and the number of bytes used.
    pub fn read_bytes(bytes: &[u8]) -> Result<(Cid, usize), CidError> {
        match bytes.first() {
            None => Err(CidError::Empty),
            // A CIDv0 is a bare multihash, and 0x12 is never a valid CID version.
            Some(&b) if u64::from(b) == SHA2_256 => {
                let (digest, used) = read_multihash(bytes)?;
                Ok((Cid::new_v0(digest), used))
            }
            Some(_) => {
                let (version, mut used) = varint::decode_minimal(bytes)?;
                if version != 1 {
                    return Err(CidError::UnsupportedVersion(version));
                }
                let (code, n) = varint::decode_minimal(&bytes[used..])?;
                used += n;
                let codec = Codec::from_code(code).ok_or(CidError::UnsupportedCodec(code))?;
                let (digest, n) = read_multihash(&bytes[used..])?;
                Ok((Cid::new_v1(codec, digest), used + n))
            }
        }
    }

    /// The text form in `base`, with its multibase prefix, of the binary form. For a CIDv0 this
    /// encodes the bare multihash (which [`FromStr`] reads back as the same CIDv0); its usual
    /// text form is [`Display`](fmt::Display)'s `Qm…`.
    pub fn to_string_of_base(&self, base: Base) -> String {
        let mut out = String::with_capacity(64);
        out.push(base.prefix());
        out.push_str(&base.encode(&self.to_bytes()));
        out
    }
}

/// Reads a sha2-256 multihash; returns the digest and the number of bytes used.
fn read_multihash(bytes: &[u8]) -> Result<([u8; DIGEST_LEN], usize), CidError> {
    let (code, mut used) = varint::decode_minimal(bytes)?;
    if code != SHA2_256 {
        return Err(CidError::UnsupportedHash(code));
    }
    let (len, n) = varint::decode_minimal(&bytes[used..])?;
    used += n;
    if len != DIGEST_LEN as u64 {
        return Err(CidError::DigestLength(len));
    }
    let digest = bytes
        .get(used..used + DIGEST_LEN)
        .ok_or(CidError::Truncated)?;
    Ok((
        digest.try_into().expect("slice of digest length"),
        used + DIGEST_LEN,
    ))
}

impl fmt::Display for Cid {
    /// CIDv0 as base58btc (`Qm…`), CIDv1 as base32 lower case (`b…`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Version::V0 => f.write_str(&Base::Base58Btc.encode(&self.multihash())),
            Version::V1 => f.write_str(&self.to_string_of_base(Base::Base32Lower)),
        }
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    /// Accepts `Qm…` (CIDv0, 46 characters) and the multibase prefixes `b`, `B`, `z`, `k`, `f`.
    /// Text longer than [`MAX_TEXT_LEN`] bytes is refused first, without decoding.
    fn from_str(s: &str) -> Result<Cid, CidError> {
        if s.len() > MAX_TEXT_LEN {
            return Err(CidError::TooLong(s.len()));
        }
        if s.len() == 46 && s.starts_with("Qm") {
            let cid = Cid::from_bytes(&Base::Base58Btc.decode(s)?)?;
            if cid.version != Version::V0 {
                return Err(CidError::NotV0);
            }
            return Ok(cid);
        }
        let mut chars = s.chars();
        let prefix = chars.next().ok_or(CidError::Empty)?;
        let base = Base::from_prefix(prefix).ok_or(CidError::UnsupportedMultibase(prefix))?;
        let bytes = base.decode(chars.as_str())?;
        Cid::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HELLO_V1: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    const EMPTY_V0: &str = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH";

    #[test]
    fn raw_hello_world() {
        let cid = Cid::sha256(Version::V1, Codec::Raw, b"hello world");
        assert_eq!(cid.to_string(), HELLO_V1);
        assert_eq!(HELLO_V1.parse::<Cid>().unwrap(), cid);
        assert_eq!(format!("{cid:?}"), format!("Cid({HELLO_V1})"));
    }

    #[test]
    fn v0_round_trip_and_to_v1() {
        let cid: Cid = EMPTY_V0.parse().unwrap();
        assert_eq!(cid.version(), Version::V0);
        assert_eq!(cid.codec(), Codec::DagPb);
        assert_eq!(cid.to_string(), EMPTY_V0);
        assert_eq!(cid.to_bytes().len(), 34);
        let v1 = cid.to_v1();
        assert_eq!(v1.version(), Version::V1);
        assert_eq!(v1.digest(), cid.digest());
        assert!(v1.to_string().starts_with("bafybei"));
        assert_eq!(v1.to_v1(), v1);
    }

    #[test]
    fn known_text_forms() {
        // Printed by the multiformats JS library.
        let cases = [
            (
                HELLO_V1,
                "k2cwued9o1pvrt3q271rrqbo49x30tbxwpoeaq75z14e5ui2rzygpbe1",
                "zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn",
                "f01551220b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            ),
            (
                "bafybeiggzq4ryi7hscq5hzvzcnk4urnxt3asp37dhgvnjilf7exskximla",
                "k2jmtxwbhfbzcqcqkr9p2bvy18edu93443lf85ne6mahw23xwce2fjvc",
                "zdj7WiovRGGHD7WXtCLZdgB1csdT1dF8rQ5VJMomzAS24CxiB",
                "f01701220c6cc391c23e790a1d3e6b91355ca45b79ec127efe339aad4a165f92f255d0c58",
            ),
        ];
        for (b32, b36, b58, b16) in cases {
            let cid: Cid = b32.parse().unwrap();
            assert_eq!(cid.to_string_of_base(Base::Base36Lower), b36);
            assert_eq!(cid.to_string_of_base(Base::Base58Btc), b58);
            assert_eq!(cid.to_string_of_base(Base::Base16Lower), b16);
            assert_eq!(cid.to_string_of_base(Base::Base32Upper), b32.to_uppercase());
            for text in [b36, b58, b16] {
                assert_eq!(text.parse::<Cid>().unwrap(), cid);
            }
        }
    }

    #[test]
    fn every_base_round_trips() {
        let cids = [HELLO_V1.parse::<Cid>().unwrap(), EMPTY_V0.parse().unwrap()];
        for cid in cids {
            for base in Base::ALL {
                let text = cid.to_string_of_base(base);
                assert!(text.starts_with(base.prefix()));
                assert_eq!(text.parse::<Cid>().unwrap(), cid, "{text}");
            }
        }
    }

    #[test]
    fn malformed_text() {
        let err = |s: &str| s.parse::<Cid>().unwrap_err();
        assert_eq!(err(""), CidError::Empty);
        assert_eq!(err("mAXASIA"), CidError::UnsupportedMultibase('m'));
        assert_eq!(err("Qm"), CidError::UnsupportedMultibase('Q'));
        // The whole string in upper case is valid base32 upper (`B…`).
        assert_eq!(
            HELLO_V1.to_uppercase().parse::<Cid>().unwrap(),
            HELLO_V1.parse::<Cid>().unwrap()
        );
        // Upper case digits under the lower-case prefix.
        let mixed = format!("b{}", HELLO_V1[1..].to_uppercase());
        assert!(matches!(err(&mixed), CidError::Base(_)));
        // Truncated and extended.
        assert_eq!(err(&HELLO_V1[..HELLO_V1.len() - 2]), CidError::Truncated);
        assert!(matches!(
            err(&format!("{HELLO_V1}aa")),
            CidError::Base(_) | CidError::TrailingBytes(_)
        ));
        // A Qm string with an invalid base58 character.
        assert!(matches!(
            err("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1Aw0H"),
            CidError::Base(_)
        ));
        assert_eq!(err(&HELLO_V1[..9]), CidError::Truncated);
        assert_eq!(err("bafkrei"), CidError::Base(BaseError::NonCanonical));
    }

    #[test]
    fn malformed_bytes() {
        let good = Cid::sha256(Version::V1, Codec::Raw, b"x").to_bytes();
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(Cid::from_bytes(&bad), Err(CidError::UnsupportedVersion(2)));
        bad = good.clone();
        bad[0] = 0;
        assert_eq!(Cid::from_bytes(&bad), Err(CidError::UnsupportedVersion(0)));
        bad = good.clone();
        bad[1] = 0x71;
        assert_eq!(Cid::from_bytes(&bad), Err(CidError::UnsupportedCodec(0x71)));
        bad = good.clone();
        bad[2] = 0x13;
        assert_eq!(Cid::from_bytes(&bad), Err(CidError::UnsupportedHash(0x13)));
        bad = good.clone();
        bad[3] = 0x20 - 1;
        assert_eq!(Cid::from_bytes(&bad), Err(CidError::DigestLength(31)));
        assert_eq!(Cid::from_bytes(&good[..20]), Err(CidError::Truncated));
        bad = good.clone();
        bad.push(0);
        assert_eq!(Cid::from_bytes(&bad), Err(CidError::TrailingBytes(1)));
        assert_eq!(Cid::from_bytes(&[]), Err(CidError::Empty));
        assert_eq!(
            Cid::from_bytes(&[0x81]),
            Err(CidError::Varint(VarintError::Truncated))
        );
        assert_eq!(
            Cid::from_bytes(&[0x81, 0x00, 0x55]),
            Err(CidError::Varint(VarintError::NotMinimal))
        );
        // A CIDv0 with a wrong digest length.
        assert_eq!(
            Cid::from_bytes(&[0x12, 0x10, 0]),
            Err(CidError::DigestLength(16))
        );
    }

    #[test]
    fn over_long_text_is_refused_before_decoding() {
        // 60,000 base58 digits: decoding them would cost about a second (quadratic base58).
        let long = format!("z{}", "2".repeat(60_000));
        assert_eq!(long.parse::<Cid>(), Err(CidError::TooLong(60_001)));
        // Nothing is decoded: not the prefix, not an invalid digit at the very end.
        let bad_digit = format!("z{}0", "2".repeat(60_000));
        assert_eq!(bad_digit.parse::<Cid>(), Err(CidError::TooLong(60_002)));
        let bad_prefix = "x".repeat(MAX_TEXT_LEN + 1);
        assert_eq!(
            bad_prefix.parse::<Cid>(),
            Err(CidError::TooLong(MAX_TEXT_LEN + 1))
        );
        // The cap counts bytes: multi-byte characters cannot slip under it.
        let wide = format!("b{}", "é".repeat(MAX_TEXT_LEN / 2 + 1));
        assert_eq!(wide.parse::<Cid>(), Err(CidError::TooLong(wide.len())));
        // At the cap the text is decoded (and here found invalid for other reasons).
        let at_cap = format!("f{}", "0".repeat(MAX_TEXT_LEN - 1));
        assert_eq!(at_cap.parse::<Cid>(), Err(CidError::UnsupportedVersion(0)));
        let at_cap = format!("z{}", "2".repeat(MAX_TEXT_LEN - 1));
        assert!(!matches!(at_cap.parse::<Cid>(), Err(CidError::TooLong(_))));
        assert_eq!(
            CidError::TooLong(60_001).to_string(),
            "CID text is 60001 bytes long, more than the 149 allowed"
        );
    }

    #[test]
    fn every_real_cid_fits_under_the_cap() {
        // The longest CIDs in use: a two-byte codec (dag-json 0x0129), a three-byte hash function
        // (blake2b-512 0xb240) and a 64-byte digest; and the worst case the cap is sized for.
        let mut dag_json_blake2b = vec![0x01];
        varint::encode(0x0129, &mut dag_json_blake2b);
        varint::encode(0xb240, &mut dag_json_blake2b);
        dag_json_blake2b.push(64);
        dag_json_blake2b.extend_from_slice(&[0xff; 64]);
        let worst = [0xffu8; MAX_BINARY_LEN];
        for bytes in [&dag_json_blake2b[..], &worst[..]] {
            for base in Base::ALL {
                let text = format!("{}{}", base.prefix(), base.encode(bytes));
                assert!(text.len() <= MAX_TEXT_LEN, "{base:?}: {}", text.len());
                // Under the cap, so the parser looks at it (and refuses the hash function).
                assert_ne!(text.parse::<Cid>(), Err(CidError::TooLong(text.len())));
            }
        }
        assert_eq!(
            format!("{}{}", 'f', Base::Base16Lower.encode(&worst)).len(),
            MAX_TEXT_LEN
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "[bBzkfQm][a-zA-Z0-9]{0,70}") {
            let _ = text.parse::<Cid>();
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(cid) = Cid::from_bytes(&bytes) {
                prop_assert_eq!(cid.to_bytes(), bytes);
            }
        }

        #[test]
        fn any_cid_round_trips(digest: [u8; 32], v1: bool, raw: bool) {
            let cid = if v1 {
                Cid::new_v1(if raw { Codec::Raw } else { Codec::DagPb }, digest)
            } else {
                Cid::new_v0(digest)
            };
            prop_assert_eq!(Cid::from_bytes(&cid.to_bytes()).unwrap(), cid);
            prop_assert_eq!(cid.to_string().parse::<Cid>().unwrap(), cid);
            for base in Base::ALL {
                prop_assert_eq!(cid.to_string_of_base(base).parse::<Cid>().unwrap(), cid);
            }
        }
    }
}
