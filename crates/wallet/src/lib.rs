//! Ethereum wallets: addresses, the login digest, signing, and recovery of the signer of a login.
//!
//! A login signature is go-ethereum's `crypto.Sign` over
//! `keccak256(utf8(address) ‖ utf8(nonce) ‖ utf8(domain))`: 65 bytes `r ‖ s ‖ v` with `v` in
//! {0, 1} (27/28 accepted too). High-S signatures are refused, as go-ethereum refuses them.
//!
//! Shared by the server core (which checks logins) and the client (which signs them), so that the
//! client needs none of the core.

use alloy_primitives::Keccak256;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};

/// The workspace's one address type (alloy's): `Display` is the EIP-55 form put in tokens.
pub use alloy_primitives::Address;

/// A signature that is malformed, high-S, or does not recover a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signature is malformed, high-S or does not recover a key")]
pub struct BadSignature;

/// The address of a public key.
pub fn address_of(key: &VerifyingKey) -> Address {
    Address::from_raw_public_key(&key.to_encoded_point(false).as_bytes()[1..])
}

/// The digest a wallet signs to log in, over the strings exactly as sent.
pub fn login_digest(address: &str, nonce: &str, domain: &str) -> [u8; 32] {
    let mut h = Keccak256::new();
    for part in [address, nonce, domain] {
        h.update(part);
    }
    h.finalize().0
}

/// Parses a `0x`-hex 65-byte signature and recovers its signer from `digest`.
pub fn recover_signer(digest: &[u8; 32], signature_hex: &str) -> Result<Address, BadSignature> {
    let hex_part = signature_hex
        .strip_prefix("0x")
        .or_else(|| signature_hex.strip_prefix("0X"))
        .ok_or(BadSignature)?;
    if hex_part.len() != 130 {
        return Err(BadSignature);
    }
    let mut raw = [0u8; 65];
    hex::decode_to_slice(hex_part, &mut raw).map_err(|_| BadSignature)?;
    recover_signer_bytes(digest, &raw)
}

/// Recovers the signer of a 65-byte `r ‖ s ‖ v` signature.
pub fn recover_signer_bytes(digest: &[u8; 32], raw: &[u8; 65]) -> Result<Address, BadSignature> {
    let v = match raw[64] {
        v @ (0 | 1) => v,
        v @ (27 | 28) => v - 27,
        _ => return Err(BadSignature),
    };
    let sig = Signature::from_slice(&raw[..64]).map_err(|_| BadSignature)?;
    if sig.normalize_s().is_some() {
        // s is in the upper half of the curve order: malleable, refused.
        return Err(BadSignature);
    }
    let recid = RecoveryId::from_byte(v).ok_or(BadSignature)?;
    let key = VerifyingKey::recover_from_prehash(digest, &sig, recid).map_err(|_| BadSignature)?;
    Ok(address_of(&key))
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
    fn addresses_of_keys() {
        // The first account of ganache's and hardhat's well-known test mnemonic.
        let key = k256::ecdsa::SigningKey::from_slice(
            &hex::decode("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
                .unwrap(),
        )
        .unwrap();
        let a = address_of(key.verifying_key());
        assert_eq!(a.to_string(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    }

    #[test]
    fn sign_then_recover_and_malleability() {
        let key = k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let me = address_of(key.verifying_key());
        let d = login_digest(&me.to_string(), "ab", "memo.io");
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
        assert_eq!(recover_signer_bytes(&d, &twin), Err(BadSignature));

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
