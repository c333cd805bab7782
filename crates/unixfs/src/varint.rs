//! Unsigned LEB128 varints, as used by protobuf and by multiformats (CIDs, multihashes, CAR
//! frames).
//!
//! Owns encoding and decoding of a single integer from a byte slice. It never reads from a
//! stream and never allocates beyond the output vector it is given.

use thiserror::Error;

/// The longest varint that can hold a `u64`.
pub const MAX_LEN: usize = 10;

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VarintError {
    /// The input ended before the last byte (the one without the continuation bit).
    #[error("varint is truncated")]
    Truncated,
    /// The value does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    Overflow,
    /// A multiformats varint that uses more bytes than needed, or more than 9 bytes.
    #[error("varint is not minimally encoded")]
    NotMinimal,
}

/// Appends the varint form of `value` to `out`.
pub fn encode(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Returns the varint form of `value` as a new vector.
pub fn to_vec(value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(value));
    encode(value, &mut out);
    out
}

/// Number of bytes [`encode`] writes for `value`.
pub const fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes a protobuf varint at the start of `buf`; returns the value and the number of bytes
/// used. Non-minimal encodings are accepted (protobuf allows them).
pub fn decode(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_LEN) {
        let part = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 0x01 {
            return Err(VarintError::Overflow);
        }
        value |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= MAX_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Decodes a multiformats unsigned varint at the start of `buf`: like [`decode`], but the
/// encoding must be minimal and at most 9 bytes long (values below 2^63).
pub fn decode_minimal(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let (value, used) = decode(buf)?;
    if used > 9 {
        return Err(VarintError::NotMinimal);
    }
    if used > 1 && buf[used - 1] == 0 {
        return Err(VarintError::NotMinimal);
    }
    Ok((value, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        assert_eq!(to_vec(0), [0x00]);
        assert_eq!(to_vec(1), [0x01]);
        assert_eq!(to_vec(127), [0x7f]);
        assert_eq!(to_vec(128), [0x80, 0x01]);
        assert_eq!(to_vec(300), [0xac, 0x02]);
        assert_eq!(to_vec(0x70), [0x70]);
        assert_eq!(to_vec(u64::MAX).len(), 10);
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xff; 10]), Err(VarintError::Overflow));
        assert_eq!(decode(&[0xff; 11]), Err(VarintError::Overflow));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(decode(&too_big), Err(VarintError::Overflow));
        assert_eq!(decode_minimal(&[0x80, 0x00]), Err(VarintError::NotMinimal));
        assert_eq!(decode(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(
            decode_minimal(&to_vec(u64::MAX)),
            Err(VarintError::NotMinimal)
        );
    }

    proptest! {
        #[test]
        fn round_trip(value: u64, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = to_vec(value);
            prop_assert_eq!(buf.len(), encoded_len(value));
            let len = buf.len();
            buf.extend_from_slice(&tail);
            prop_assert_eq!(decode(&buf), Ok((value, len)));
            if value < 1 << 63 {
                prop_assert_eq!(decode_minimal(&buf), Ok((value, len)));
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((value, used)) = decode_minimal(&bytes) {
                prop_assert_eq!(&to_vec(value)[..], &bytes[..used]);
            }
            let _ = decode(&bytes);
        }
    }
}
