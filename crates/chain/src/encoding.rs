//! Hex encodings of the Ethereum JSON-RPC API: quantities, byte strings, 32-byte hashes, uint256.
//!
//! A *quantity* is `0x` followed by big-endian hex digits. Parsing is lenient where real nodes
//! differ (leading zeros, upper-case digits, the empty `0x` read as zero) and strict everywhere
//! else: the `0x` prefix is required and any sign, space or non-hex character is an error. A value
//! wider than its target type is an error, never truncated. *Data* (`0x` + an even number of hex
//! digits) is parsed exactly. Nothing here does I/O.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A malformed hex value in a node's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("missing 0x prefix in {0:?}")]
    MissingPrefix(String),
    #[error("invalid hex digits in {0:?}")]
    InvalidDigit(String),
    #[error("odd number of hex digits in {0:?}")]
    OddLength(String),
    #[error("{value} does not fit in {bits} bits")]
    Overflow { value: String, bits: u32 },
    #[error("expected {expected} bytes, got {actual} in {value:?}")]
    Length {
        expected: usize,
        actual: usize,
        value: String,
    },
}

/// A short form of `s` for error messages (node answers may be megabytes long).
fn excerpt(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &s[..cut])
    }
}

/// The hex digits after the `0x` (or `0X`) prefix.
pub fn strip_0x(s: &str) -> Result<&str, HexError> {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| HexError::MissingPrefix(excerpt(s)))
}

/// The significant hex digits of a quantity: prefix and leading zeros removed, digits checked.
fn quantity_digits(s: &str) -> Result<&str, HexError> {
    let digits = strip_0x(s)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HexError::InvalidDigit(excerpt(s)));
    }
    Ok(digits.trim_start_matches('0'))
}

/// Parses a quantity that must fit in 64 bits (block numbers, indexes, status, chain id).
pub fn parse_u64(s: &str) -> Result<u64, HexError> {
    let digits = quantity_digits(s)?;
    if digits.len() > 16 {
        return Err(HexError::Overflow {
            value: excerpt(s),
            bits: 64,
        });
    }
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 16).map_err(|_| HexError::InvalidDigit(excerpt(s)))
}

/// Parses a quantity that must fit in 128 bits.
pub fn parse_u128(s: &str) -> Result<u128, HexError> {
    let v = U256::parse_quantity(s)?;
    v.to_u128().ok_or_else(|| HexError::Overflow {
        value: excerpt(s),
        bits: 128,
    })
}

/// Formats a quantity the way the specification wants it: `0x`, no leading zeros, `0x0` for zero.
pub fn format_u64(v: u64) -> String {
    format!("{v:#x}")
}

/// Parses data: `0x` followed by an even number of hex digits.
pub fn parse_data(s: &str) -> Result<Vec<u8>, HexError> {
    let digits = strip_0x(s)?;
    if digits.len() % 2 != 0 {
        return Err(HexError::OddLength(excerpt(s)));
    }
    hex::decode(digits).map_err(|_| HexError::InvalidDigit(excerpt(s)))
}

/// Parses data of exactly `N` bytes.
pub fn parse_fixed<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let bytes = parse_data(s)?;
    let actual = bytes.len();
    bytes.try_into().map_err(|_| HexError::Length {
        expected: N,
        actual,
        value: excerpt(s),
    })
}

/// Decodes a 64-digit hex string at compile time (for constants such as event topics).
pub const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not a hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64, "expected 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// A 32-byte hash (block, transaction, log topic), shown as `0x` + 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct H256(pub [u8; 32]);

impl H256 {
    pub fn parse(s: &str) -> Result<H256, HexError> {
        parse_fixed::<32>(s).map(H256)
    }
}

impl fmt::Display for H256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for H256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for H256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        H256::parse(&s).map_err(de::Error::custom)
    }
}

/// An unsigned 256-bit integer, big-endian (an EVM word: transfer values, `uint256` amounts).
///
/// Only what the watcher needs: parse, compare with zero, narrow to `u128`, print.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct U256(pub [u8; 32]);

impl U256 {
    pub const ZERO: U256 = U256([0u8; 32]);

    /// Parses a quantity of at most 256 bits.
    pub fn parse_quantity(s: &str) -> Result<U256, HexError> {
        let digits = quantity_digits(s)?;
        if digits.len() > 64 {
            return Err(HexError::Overflow {
                value: excerpt(s),
                bits: 256,
            });
        }
        let padded = format!("{digits:0>64}");
        let mut out = [0u8; 32];
        hex::decode_to_slice(padded, &mut out).map_err(|_| HexError::InvalidDigit(excerpt(s)))?;
        Ok(U256(out))
    }

    /// Reads a big-endian word of exactly 32 bytes (ABI encoding of `uint256`).
    pub fn from_word(word: &[u8]) -> Option<U256> {
        word.try_into().ok().map(U256)
    }

    pub fn from_u128(v: u128) -> U256 {
        let mut out = [0u8; 32];
        out[16..].copy_from_slice(&v.to_be_bytes());
        U256(out)
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// The value as `u128`, or `None` when it is wider (never truncated).
    pub fn to_u128(&self) -> Option<u128> {
        if self.0[..16].iter().any(|&b| b != 0) {
            return None;
        }
        let mut low = [0u8; 16];
        low.copy_from_slice(&self.0[16..]);
        Some(u128::from_be_bytes(low))
    }

    /// Decimal digits, by repeated division of the big-endian bytes by 10.
    pub fn to_decimal(&self) -> String {
        let mut n = self.0;
        let mut digits = Vec::new();
        while n.iter().any(|&b| b != 0) {
            let mut rem = 0u16;
            for byte in n.iter_mut() {
                let cur = (rem << 8) | u16::from(*byte);
                *byte = (cur / 10) as u8;
                rem = cur % 10;
            }
            digits.push(b'0' + rem as u8);
        }
        if digits.is_empty() {
            return "0".to_string();
        }
        digits.reverse();
        String::from_utf8(digits).expect("ascii digits")
    }
}

impl fmt::Display for U256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal())
    }
}

impl fmt::Debug for U256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U256({})", self.to_decimal())
    }
}

impl<'de> Deserialize<'de> for U256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        U256::parse_quantity(&s).map_err(de::Error::custom)
    }
}

/// Serde helpers for `#[serde(deserialize_with = …)]` on JSON-RPC objects.
pub(crate) mod de_hex {
    use super::*;

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        parse_u64(&s).map_err(de::Error::custom)
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse_u64(&s).map_err(de::Error::custom))
            .transpose()
    }

    pub fn data<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        parse_data(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_u64("0x0"), Ok(0));
        assert_eq!(parse_u64("0x"), Ok(0));
        assert_eq!(parse_u64("0x41"), Ok(65));
        assert_eq!(parse_u64("0x0041"), Ok(65));
        assert_eq!(parse_u64("0X4A"), Ok(74));
        assert_eq!(parse_u64("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_u64("0x0000ffffffffffffffff"), Ok(u64::MAX));
        assert!(matches!(
            parse_u64("0x10000000000000000"),
            Err(HexError::Overflow { bits: 64, .. })
        ));
        for bad in [
            "", "41", "0x-1", "0x 1", " 0x1", "0x1 ", "0xg", "0x1.0", "+0x1", "0x+1",
        ] {
            assert!(parse_u64(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_u64("400"), Err(HexError::MissingPrefix(_))));
        assert_eq!(format_u64(0), "0x0");
        assert_eq!(format_u64(1024), "0x400");
    }

    #[test]
    fn u128_boundary() {
        assert_eq!(parse_u128(&format!("{:#x}", u128::MAX)), Ok(u128::MAX));
        // 2^128: one more than u128::MAX, rejected, not wrapped to 0.
        assert!(matches!(
            parse_u128("0x100000000000000000000000000000000"),
            Err(HexError::Overflow { bits: 128, .. })
        ));
        assert_eq!(
            parse_u128("0x56bc75e2d63100000"),
            Ok(100_000_000_000_000_000_000)
        );
    }

    #[test]
    fn u256() {
        let max = format!("0x{}", "f".repeat(64));
        let v = U256::parse_quantity(&max).unwrap();
        assert_eq!(v.to_u128(), None);
        assert_eq!(
            v.to_decimal(),
            "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        );
        assert!(U256::parse_quantity(&format!("0x1{}", "0".repeat(64))).is_err());
        assert_eq!(U256::parse_quantity("0x0").unwrap(), U256::ZERO);
        assert!(U256::ZERO.is_zero());
        assert_eq!(U256::ZERO.to_decimal(), "0");
        let x = U256::from_u128(123_456_789_000_000_000_000_000);
        assert_eq!(x.to_u128(), Some(123_456_789_000_000_000_000_000));
        assert_eq!(x.to_string(), "123456789000000000000000");
        let two_128 = U256::parse_quantity("0x100000000000000000000000000000000").unwrap();
        assert_eq!(
            two_128.to_decimal(),
            "340282366920938463463374607431768211456"
        );
        assert_eq!(U256::from_word(&[0u8; 31]), None);
    }

    #[test]
    fn data_and_hashes() {
        assert_eq!(parse_data("0x"), Ok(vec![]));
        assert_eq!(parse_data("0x00ff"), Ok(vec![0, 255]));
        assert!(matches!(parse_data("0x0"), Err(HexError::OddLength(_))));
        assert!(matches!(parse_data("00"), Err(HexError::MissingPrefix(_))));
        assert!(matches!(parse_data("0xzz"), Err(HexError::InvalidDigit(_))));
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(H256::parse(&h).unwrap().to_string(), h);
        assert_eq!(
            H256::parse(&h.to_uppercase().replace("0X", "0x"))
                .unwrap()
                .to_string(),
            h
        );
        assert!(matches!(
            H256::parse("0xabcd"),
            Err(HexError::Length {
                expected: 32,
                actual: 2,
                ..
            })
        ));
        let long = format!("0x{}", "0".repeat(1000));
        let msg = H256::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn hex32_const() {
        const X: [u8; 32] =
            hex32("00000000000000000000000000000000000000000000000000000000000001Ff");
        assert_eq!(X[30], 1);
        assert_eq!(X[31], 0xff);
    }
}
