//! Ethereum wallets: addresses, EIP-55 checksums, and recovery of the signer of a login.
//!
//! A login signature is go-ethereum's `crypto.Sign` over
//! `keccak256(utf8(address) ‖ utf8(nonce) ‖ utf8(domain))`: 65 bytes `r ‖ s ‖ v` with `v` in
//! {0, 1} (27/28 accepted too). High-S signatures are refused, as go-ethereum refuses them.

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

use crate::AuthFailure;

/// An Ethereum address (20 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_checksum())
    }
}

impl Address {
    /// Parses `0x` + 40 hex digits, in any case.
    pub fn parse(s: &str) -> Option<Address> {
        let hex_part = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
        if hex_part.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(Address(out))
    }

    /// The address of a public key.
    pub fn from_key(key: &VerifyingKey) -> Address {
        let point = key.to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }

    /// Lower-case `0x…` form (how addresses are stored).
    pub fn to_lower(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// EIP-55 mixed-case form (how addresses are shown and put in tokens).
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Keccak-256 of the concatenation of `parts`.
pub fn keccak256_concat(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Keccak-256 of `data`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    keccak256_concat(&[data])
}

/// The digest a wallet signs to log in, over the strings exactly as sent.
pub fn login_digest(address: &str, nonce: &str, domain: &str) -> [u8; 32] {
    keccak256_concat(&[address.as_bytes(), nonce.as_bytes(), domain.as_bytes()])
}

/// Parses a `0x`-hex 65-byte signature and recovers its signer from `digest`.
pub fn recover_signer(digest: &[u8; 32], signature_hex: &str) -> Result<Address, AuthFailure> {
    let hex_part = signature_hex
        .strip_prefix("0x")
        .or_else(|| signature_hex.strip_prefix("0X"))
        .ok_or(AuthFailure::WrongSignature)?;
    if hex_part.len() != 130 {
        return Err(AuthFailure::WrongSignature);
    }
    let mut raw = [0u8; 65];
    hex::decode_to_slice(hex_part, &mut raw).map_err(|_| AuthFailure::WrongSignature)?;
    recover_signer_bytes(digest, &raw)
}

/// Recovers the signer of a 65-byte `r ‖ s ‖ v` signature.
pub fn recover_signer_bytes(digest: &[u8; 32], raw: &[u8; 65]) -> Result<Address, AuthFailure> {
    let v = match raw[64] {
        v @ (0 | 1) => v,
        v @ (27 | 28) => v - 27,
        _ => return Err(AuthFailure::WrongSignature),
    };
    let sig = Signature::from_slice(&raw[..64]).map_err(|_| AuthFailure::WrongSignature)?;
    if sig.normalize_s().is_some() {
        // s is in the upper half of the curve order: malleable, refused.
        return Err(AuthFailure::WrongSignature);
    }
    let recid = RecoveryId::from_byte(v).ok_or(AuthFailure::WrongSignature)?;
    let key = VerifyingKey::recover_from_prehash(digest, &sig, recid)
        .map_err(|_| AuthFailure::WrongSignature)?;
    Ok(Address::from_key(&key))
}

/// Signs `digest` as go-ethereum's `crypto.Sign` does (`r ‖ s ‖ v`, low-S, `v` ∈ {0,1}).
pub fn sign_digest(key: &k256::ecdsa::SigningKey, digest: &[u8; 32]) -> [u8; 65] {
    let (sig, recid) = key
        .sign_prehash_recoverable(digest)
        .expect("signing a 32-byte digest cannot fail");
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig.to_bytes());
    out[64] = recid.to_byte();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_examples() {
        // From the EIP-55 specification.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert_eq!(Address::parse(s).unwrap().to_checksum(), s);
        }
        assert!(Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe").is_none());
        assert!(Address::parse("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_none());
        assert!(Address::parse("0xZaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_none());
    }

    #[test]
    fn sign_then_recover_and_malleability() {
        let key = k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let me = Address::from_key(key.verifying_key());
        let d = login_digest(&me.to_checksum(), "ab", "memo.io");
        let sig = sign_digest(&key, &d);
        assert_eq!(recover_signer_bytes(&d, &sig).unwrap(), me);
        let mut v27 = sig;
        v27[64] += 27;
        assert_eq!(recover_signer_bytes(&d, &v27).unwrap(), me);
        let mut bad_v = sig;
        bad_v[64] = 2;
        assert!(recover_signer_bytes(&d, &bad_v).is_err());

        // The high-S twin (n - s, v flipped) recovers the same key mathematically; it is refused.
        let n = hex::decode("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141")
            .unwrap();
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig[32..64]);
        let high = sub_be(&n, &s);
        let mut twin = sig;
        twin[32..64].copy_from_slice(&high);
        twin[64] ^= 1;
        assert_eq!(
            recover_signer_bytes(&d, &twin),
            Err(AuthFailure::WrongSignature)
        );

        let hexsig = format!("0x{}", hex::encode(sig));
        assert_eq!(recover_signer(&d, &hexsig).unwrap(), me);
        assert!(recover_signer(&d, &hexsig[..hexsig.len() - 2]).is_err());
        assert!(recover_signer(&d, &hexsig[2..]).is_err());
        assert!(recover_signer(&d, &hexsig.replace('a', "g")).is_err() || !hexsig.contains('a'));
    }

    fn sub_be(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = a[i] as i16 - b[i] as i16 - borrow;
            borrow = if d < 0 {
                d += 256;
                1
            } else {
                0
            };
            out[i] = d as u8;
        }
        out
    }
}
