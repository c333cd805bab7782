//! Hex encodings of the Ethereum JSON-RPC API: quantities, byte strings, 32-byte hashes, uint256.
//!
//! A *quantity* is `0x` followed by big-endian hex digits. Parsing is lenient where real nodes
//! differ (leading zeros, upper-case digits, the empty `0x` read as zero) and strict everywhere
//! else: the `0x` prefix is required and any sign, space or non-hex character is an error. A value
//! wider than its target type is an error, never truncated. *Data* (`0x` + an even number of hex
//! digits) is parsed exactly. Nothing here does I/O.
//!
//! The types are alloy's ([`Address`] with EIP-55, [`B256`], [`U256`]), one set for the whole
//! workspace; what this module adds is the strict parsing above (alloy's own parsers also take
//! digits without `0x`, decimal numbers, and so on) and serde helpers that use it.

use alloy_primitives::{Address, B256, U256};
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
    parse_narrow(s, 64)
}

/// Parses a quantity that must fit in 128 bits.
pub fn parse_u128(s: &str) -> Result<u128, HexError> {
    parse_narrow(s, 128)
}

/// Parses a quantity that must fit in `T`, `bits` wide.
fn parse_narrow<T: TryFrom<U256>>(s: &str, bits: u32) -> Result<T, HexError> {
    let overflow = || HexError::Overflow {
        value: excerpt(s),
        bits,
    };
    match parse_u256(s) {
        Ok(v) => T::try_from(v).map_err(|_| overflow()),
        Err(HexError::Overflow { .. }) => Err(overflow()),
        Err(e) => Err(e),
    }
}

/// Parses a quantity of at most 256 bits (transfer values, `uint256` amounts).
pub fn parse_u256(s: &str) -> Result<U256, HexError> {
    let digits = quantity_digits(s)?;
    if digits.len() > 64 {
        return Err(HexError::Overflow {
            value: excerpt(s),
            bits: 256,
        });
    }
    if digits.is_empty() {
        return Ok(U256::ZERO);
    }
    U256::from_str_radix(digits, 16).map_err(|_| HexError::InvalidDigit(excerpt(s)))
}

/// Reads a big-endian word of exactly 32 bytes (ABI encoding of `uint256`).
pub fn u256_from_word(word: &[u8]) -> Option<U256> {
    <[u8; 32]>::try_from(word).ok().map(U256::from_be_bytes)
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

/// Parses a 32-byte hash (block, transaction, log topic): `0x` + 64 hex digits in any case.
pub fn parse_b256(s: &str) -> Result<B256, HexError> {
    parse_fixed::<32>(s).map(B256::from)
}

/// Parses an address: `0x` (or `0X`) + 40 hex digits in any case. The checksum of a mixed-case
/// input is not enforced (nodes answer in lower case; people paste either form).
pub fn parse_address(s: &str) -> Result<Address, HexError> {
    parse_fixed::<20>(s).map(Address::from)
}

/// The lower-case `0x…` form of an address (how it is stored and sent to nodes); its
/// `Display` is the EIP-55 mixed-case form.
pub fn address_lower(a: &Address) -> String {
    format!("{a:#x}")
}

/// Reads an indexed address argument (12 zero bytes, then the address); `None` when the padding
/// is not zero. The other way is [`Address::into_word`].
pub fn address_from_topic(topic: &B256) -> Option<Address> {
    topic[..12]
        .iter()
        .all(|&b| b == 0)
        .then(|| Address::from_word(*topic))
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

    pub fn u256<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let s = String::deserialize(d)?;
        parse_u256(&s).map_err(de::Error::custom)
    }

    pub fn b256<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
        let s = String::deserialize(d)?;
        parse_b256(&s).map_err(de::Error::custom)
    }

    pub fn b256_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<B256>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| parse_b256(s).map_err(de::Error::custom))
            .collect()
    }

    pub fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        parse_address(&s).map_err(de::Error::custom)
    }

    pub fn opt_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse_address(&s).map_err(de::Error::custom))
            .transpose()
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
        assert!(matches!(
            parse_u64(&format!("0x1{}", "0".repeat(70))),
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
        let v = parse_u256(&max).unwrap();
        assert_eq!(v, U256::MAX);
        assert!(u128::try_from(v).is_err());
        assert_eq!(
            v.to_string(),
            "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        );
        // Leading zeros beyond 64 digits are fine; a 65th significant digit is not.
        assert_eq!(
            parse_u256(&format!("0x000{}", "f".repeat(64))),
            Ok(U256::MAX)
        );
        assert!(matches!(
            parse_u256(&format!("0x1{}", "0".repeat(64))),
            Err(HexError::Overflow { bits: 256, .. })
        ));
        assert_eq!(parse_u256("0x0"), Ok(U256::ZERO));
        assert_eq!(parse_u256("0x"), Ok(U256::ZERO));
        assert_eq!(parse_u256("0XfF"), Ok(U256::from(255u8)));
        // alloy's own parser reads these; quantities never do.
        for bad in ["", "255", "ff", "0x-1", "0x 1", "0x1_0", "0xg", "+0x1"] {
            assert!(parse_u256(bad).is_err(), "{bad:?}");
        }
        assert!(U256::ZERO.is_zero());
        assert_eq!(U256::ZERO.to_string(), "0");
        let x = U256::from(123_456_789_000_000_000_000_000u128);
        assert_eq!(u128::try_from(x), Ok(123_456_789_000_000_000_000_000));
        assert_eq!(x.to_string(), "123456789000000000000000");
        let two_128 = parse_u256("0x100000000000000000000000000000000").unwrap();
        assert_eq!(
            two_128.to_string(),
            "340282366920938463463374607431768211456"
        );
        assert_eq!(two_128, U256::from(u128::MAX) + U256::from(1u8));
        assert!(u128::try_from(two_128).is_err());
        // ABI words: exactly 32 big-endian bytes.
        assert_eq!(u256_from_word(&[0u8; 31]), None);
        assert_eq!(u256_from_word(&[0u8; 33]), None);
        let mut word = [0u8; 32];
        word[31] = 7;
        word[0] = 0x80;
        let w = u256_from_word(&word).unwrap();
        assert!(w.bit(255));
        assert_eq!(w.byte(0), 7);
        assert_eq!(w.to_be_bytes::<32>(), word);
    }

    #[test]
    fn data_and_hashes() {
        assert_eq!(parse_data("0x"), Ok(vec![]));
        assert_eq!(parse_data("0x00ff"), Ok(vec![0, 255]));
        assert!(matches!(parse_data("0x0"), Err(HexError::OddLength(_))));
        assert!(matches!(parse_data("00"), Err(HexError::MissingPrefix(_))));
        assert!(matches!(parse_data("0xzz"), Err(HexError::InvalidDigit(_))));
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_b256(&h).unwrap().to_string(), h);
        assert_eq!(format!("{:?}", parse_b256(&h).unwrap()), h);
        assert_eq!(
            parse_b256(&h.to_uppercase().replace("0X", "0x"))
                .unwrap()
                .to_string(),
            h
        );
        assert!(parse_b256(&h[2..]).is_err(), "no 0x, no hash");
        assert!(matches!(
            parse_b256("0xabcd"),
            Err(HexError::Length {
                expected: 32,
                actual: 2,
                ..
            })
        ));
        let long = format!("0x{}", "0".repeat(1000));
        let msg = parse_b256(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    /// The examples of the EIP-55 specification, and the MEMO document's address.
    const EIP55: [&str; 5] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        "0xE7E9f12f99aD17d4786b9B1247C097e63ceaF8Db",
    ];

    #[test]
    fn addresses_round_trip_in_eip55() {
        for s in EIP55 {
            let a = parse_address(s).unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_checksum(None), s);
            assert_eq!(address_lower(&a), s.to_lowercase());
            // Any case is accepted, the checksum of a mixed-case input is not enforced.
            assert_eq!(parse_address(&s.to_lowercase()).unwrap(), a);
            assert_eq!(
                parse_address(&format!("0x{}", s[2..].to_uppercase())).unwrap(),
                a
            );
            assert_eq!(parse_address(&format!("0X{}", &s[2..])).unwrap(), a);
            let mut flipped = s.to_string();
            let i = flipped
                .rfind(|c: char| c.is_ascii_alphabetic() && c != 'x')
                .unwrap();
            let c = flipped.as_bytes()[i] as char;
            let other = if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            };
            flipped.replace_range(i..=i, &other.to_string());
            assert_eq!(parse_address(&flipped).unwrap(), a);
        }
        for bad in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", // 39 digits
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed0", // 41 digits
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", // no 0x: alloy reads it, we do not
            "0xZaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed ",
            "",
            "0x",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics() {
        let a = parse_address("0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1").unwrap();
        let t = a.into_word();
        assert_eq!(
            t.to_string(),
            "0x00000000000000000000000090f8bf6a479f320ead074411a4b0e7944ea8c9c1"
        );
        assert_eq!(address_from_topic(&t), Some(a));
        let mut dirty = t;
        dirty[0] = 1;
        assert_eq!(address_from_topic(&dirty), None);
    }

    #[test]
    fn strict_serde_helpers() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "de_hex::address")]
            a: Address,
            #[serde(default, deserialize_with = "de_hex::opt_address")]
            to: Option<Address>,
            #[serde(deserialize_with = "de_hex::b256_list")]
            topics: Vec<B256>,
            #[serde(deserialize_with = "de_hex::u256")]
            v: U256,
        }
        let t: T = serde_json::from_value(serde_json::json!({
            "a": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "to": null,
            "topics": [format!("0x{}", "00".repeat(32))],
            "v": "0x0de0b6b3a7640000",
        }))
        .unwrap();
        assert_eq!(t.a.to_string(), EIP55[0]);
        assert_eq!(t.to, None);
        assert_eq!(t.topics, vec![B256::ZERO]);
        assert_eq!(t.v.to_string(), "1000000000000000000");
        for bad in [
            serde_json::json!({"a": "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "topics": [], "v": "0x1"}),
            serde_json::json!({"a": EIP55[0], "topics": ["00"], "v": "0x1"}),
            serde_json::json!({"a": EIP55[0], "topics": [], "v": "1"}),
            serde_json::json!({"a": EIP55[0], "topics": [], "v": 1}),
        ] {
            assert!(serde_json::from_value::<T>(bad.clone()).is_err(), "{bad}");
        }
    }
}
