//! `Address`: a 20-byte Ethereum account or contract address.
//!
//! Parsed from `0x` + 40 hex digits in any case (the checksum of a mixed-case input is not
//! enforced: nodes answer in lower case), shown in EIP-55 mixed case, and convertible to and from
//! the 32-byte left-padded form it takes as an indexed event topic. The crate keeps its own type
//! so that the core crate, which implements [`crate::DepositStore`], can depend on this one
//! without a cycle; convert with `Address(bytes)` / `.0`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use sha3::{Digest, Keccak256};

use crate::encoding::{self, HexError};

/// An Ethereum address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// Parses `0x` + 40 hex digits, in any case.
    pub fn parse(s: &str) -> Result<Address, HexError> {
        encoding::parse_fixed::<20>(s).map(Address)
    }

    /// Lower-case `0x…` form.
    pub fn to_lower(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// EIP-55 mixed-case form.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }

    /// The address as an indexed event argument: 12 zero bytes, then the 20 address bytes.
    pub fn to_topic(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[12..].copy_from_slice(&self.0);
        out
    }

    /// Reads an indexed address argument; `None` when the 12 padding bytes are not zero.
    pub fn from_topic(topic: &[u8; 32]) -> Option<Address> {
        if topic[..12].iter().any(|&b| b != 0) {
            return None;
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(&topic[12..]);
        Some(Address(out))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl FromStr for Address {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl From<[u8; 20]> for Address {
    fn from(b: [u8; 20]) -> Self {
        Address(b)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_checksum())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_vectors() {
        // The examples of the EIP-55 specification.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a.to_checksum(), s);
            assert_eq!(a.to_lower(), s.to_lowercase());
            assert_eq!(Address::parse(&s.to_lowercase()).unwrap(), a);
        }
        assert!(Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe").is_err());
        assert!(Address::parse("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(Address::parse("0xZaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }

    #[test]
    fn topics() {
        let a: Address = "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1"
            .parse()
            .unwrap();
        let t = a.to_topic();
        assert_eq!(
            hex::encode(t),
            "00000000000000000000000090f8bf6a479f320ead074411a4b0e7944ea8c9c1"
        );
        assert_eq!(Address::from_topic(&t), Some(a));
        let mut dirty = t;
        dirty[0] = 1;
        assert_eq!(Address::from_topic(&dirty), None);
    }

    #[test]
    fn serde_round_trip() {
        let a: Address =
            serde_json::from_str("\"0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed\"").unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\""
        );
        assert!(serde_json::from_str::<Address>("\"0x12\"").is_err());
    }
}
