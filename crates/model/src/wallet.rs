//! Ethereum wallets: addresses, EIP-55 checksums, and recovery of the signer of a login.
//!
//! The primitives (the login digest, signing, recovery) are `stratus-wallet`'s, shared with the
//! client; this module adds the core's parsing and storage forms and its refusal type.

use crate::AuthFailure;

pub use stratus_wallet::{address_of, login_digest, sign_digest, Address};

/// Parses `0x` + 40 hex digits, in any case (the checksum of mixed case is not enforced).
pub fn parse_address(s: &str) -> Option<Address> {
    stratus_chain::parse_address(s).ok()
}

/// The lower-case `0x…` form (how addresses are stored).
pub use stratus_chain::encoding::address_lower;

/// Parses a `0x`-hex 65-byte signature and recovers its signer from `digest`.
pub fn recover_signer(digest: &[u8; 32], signature_hex: &str) -> Result<Address, AuthFailure> {
    stratus_wallet::recover_signer(digest, signature_hex).map_err(|_| AuthFailure::WrongSignature)
}

/// Recovers the signer of a 65-byte `r ‖ s ‖ v` signature.
pub fn recover_signer_bytes(digest: &[u8; 32], raw: &[u8; 65]) -> Result<Address, AuthFailure> {
    stratus_wallet::recover_signer_bytes(digest, raw).map_err(|_| AuthFailure::WrongSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_and_stored_forms() {
        // The first account of ganache's and hardhat's well-known test mnemonic.
        let key = k256::ecdsa::SigningKey::from_slice(
            &hex::decode("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
                .unwrap(),
        )
        .unwrap();
        let a = address_of(key.verifying_key());
        assert_eq!(
            address_lower(&a),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
        assert_eq!(
            parse_address("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
            Some(a)
        );
        assert_eq!(
            parse_address("f39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
            None
        );
    }

    #[test]
    fn a_bad_signature_is_a_wrong_signature() {
        let key = k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let d = login_digest("0x00", "ab", "memo.io");
        let sig = sign_digest(&key, &d);
        assert_eq!(
            recover_signer_bytes(&d, &sig),
            Ok(address_of(key.verifying_key()))
        );
        let mut bad_v = sig;
        bad_v[64] = 2;
        assert_eq!(
            recover_signer_bytes(&d, &bad_v),
            Err(AuthFailure::WrongSignature)
        );
        assert_eq!(recover_signer(&d, "0x12"), Err(AuthFailure::WrongSignature));
    }
}
