//! `Amount`: a non-negative integer in the smallest unit of the asset (wei for ether).
//!
//! Amounts overflow 64 bits (100 ether is 10^20 wei), so they are `u128` inside and decimal strings
//! on every wire and in every file; an integer is also accepted on input where it fits.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative amount in the smallest unit of the configured asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn checked_add(self, o: Amount) -> Option<Amount> {
        self.0.checked_add(o.0).map(Amount)
    }
    pub fn checked_sub(self, o: Amount) -> Option<Amount> {
        self.0.checked_sub(o.0).map(Amount)
    }
    pub fn checked_mul(self, n: u128) -> Option<Amount> {
        self.0.checked_mul(n).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Error for a string that is not a plain non-negative decimal integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a non-negative decimal integer: {0:?}")]
pub struct ParseAmountError(pub String);

impl FromStr for Amount {
    type Err = ParseAmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseAmountError(s.to_string()));
        }
        s.parse::<u128>()
            .map(Amount)
            .map_err(|_| ParseAmountError(s.to_string()))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer or a decimal string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(v as u128))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                u128::try_from(v)
                    .map(Amount)
                    .map_err(|_| E::custom("amount must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_big_and_rejects_junk() {
        assert_eq!(
            "100000000000000000000".parse::<Amount>().unwrap(),
            Amount(100_000_000_000_000_000_000)
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "1e3",
            " 1",
            "0x10",
            "999999999999999999999999999999999999999999",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad}");
        }
    }
}
