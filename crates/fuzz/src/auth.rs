//! Tokens (JWT decoding), the `Authorization` header forms, and wallet addresses and signatures.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stratus_model::token::{
    basic_credentials, token_from_authorization, Claims, TokenKey, TokenKind, MAX_TOKEN_LEN,
};
use stratus_model::wallet;
use stratus_model::AuthFailure;

use crate::Input;

/// The key the fuzzer's tokens are signed with (the MEMO document's), and another one.
const KEY: &[u8] = b"memo.io";
const OTHER_KEY: &[u8] = b"memo.io2";

/// JWT decoding with [`TokenKey`]. The first byte picks how the token is made: taken as it is
/// (forgeries), signed here over a header and payload from the input (so decoding gets past the
/// signature), or signed by [`TokenKey::sign`] from claims the input chooses.
///
/// A decoded token re-signs to the same text when it is in the canonical form (the document's
/// header, the claims as [`TokenKey::sign`] serializes them), and to a token that decodes to the
/// same claims otherwise; no other key decodes it; over-long tokens are refused; anything but
/// HS256 is refused.
pub fn jwt(data: &[u8]) {
    let key = TokenKey::new(KEY);
    let mut input = Input::new(data);
    let token = match input.byte() % 3 {
        0 => match crate::text(input.rest()) {
            Some(t) => t.to_string(),
            None => return,
        },
        1 => {
            let header = input.line();
            let payload = input.rest();
            let token = sign_raw(header, payload);
            let alg = serde_json::from_slice::<serde_json::Value>(header)
                .ok()
                .and_then(|h| h.get("alg").cloned());
            let decoded = key.decode(&token);
            if matches!(&alg, Some(serde_json::Value::String(a)) if a != "HS256") {
                assert!(decoded.is_err(), "alg {alg:?} accepted");
            }
            if let Ok(claims) = &decoded {
                // The claims are what the payload says, read by a general JSON parser.
                let direct: Claims =
                    serde_json::from_slice(payload).expect("the payload is claims");
                assert_eq!(&direct, claims);
            }
            token
        }
        _ => {
            let kind = if input.byte() & 1 == 0 {
                TokenKind::Access
            } else {
                TokenKind::Refresh
            };
            let mut number = || i64::from_le_bytes(input.take(8).try_into().unwrap_or_default());
            let (exp, iat) = (number(), number());
            let with_jti = input.byte() & 1 == 0;
            let aud = String::from_utf8_lossy(input.line()).into_owned();
            let sub = String::from_utf8_lossy(input.line()).into_owned();
            let jti = with_jti.then(|| String::from_utf8_lossy(input.rest()).into_owned());
            let claims = Claims {
                kind,
                iss: aud.clone(),
                aud,
                exp,
                iat,
                sub,
                jti,
            };
            let token = key.sign(&claims);
            if token.len() <= MAX_TOKEN_LEN {
                assert_eq!(key.decode(&token).as_ref(), Ok(&claims));
            }
            assert_eq!(key.sign(&claims), token, "signing is deterministic");
            token
        }
    };
    let decoded = key.decode(&token);
    if token.len() > MAX_TOKEN_LEN {
        assert_eq!(decoded, Err(AuthFailure::MalformedToken));
    }
    if token.is_empty() {
        assert_eq!(decoded, Err(AuthFailure::MissingToken));
    }
    if let Ok(claims) = decoded {
        let again = key.sign(&claims);
        let signed_part = |t: &str| t.rsplit_once('.').map(|(head, _)| head.to_string());
        if signed_part(&again) == signed_part(&token) {
            assert_eq!(
                again, token,
                "the same header and payload signed differently"
            );
        }
        if again.len() <= MAX_TOKEN_LEN {
            assert_eq!(key.decode(&again), Ok(claims));
        }
        assert_eq!(
            TokenKey::new(OTHER_KEY).decode(&token),
            Err(AuthFailure::BadSignature)
        );
    }
}

/// `base64url(header).base64url(payload).base64url(HMAC-SHA256)` with [`KEY`].
fn sign_raw(header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("any key length");
    mac.update(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    token
}

/// The `Authorization` header forms: whatever token comes out is non-empty and no longer than
/// the header; Bearer and bare tokens come out trimmed and read back from `Bearer <t>`; Basic
/// credentials read back from their own encoding.
pub fn authorization(data: &[u8]) {
    let mut headers = http::HeaderMap::new();
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    headers.insert(http::header::AUTHORIZATION, value);
    let token = stratus_api_request::token(&headers);
    let Ok(text) = std::str::from_utf8(data) else {
        // A header that is not visible ASCII carries no token.
        assert_eq!(token, None);
        return;
    };
    let Ok(visible) = headers[http::header::AUTHORIZATION].to_str() else {
        assert_eq!(token, None);
        return;
    };
    assert_eq!(token, token_from_authorization(visible));
    if let Some(t) = &token {
        assert!(!t.is_empty());
        assert!(t.len() <= text.len());
        let basic = text
            .trim()
            .split_once(' ')
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        if !basic {
            assert_eq!(t.trim(), t);
            assert_eq!(
                token_from_authorization(&format!("Bearer {t}")).as_ref(),
                Some(t)
            );
        }
    }
    if let Some((user, password)) = basic_credentials(text) {
        assert!(!user.contains(':'));
        let again = STANDARD.encode(format!("{user}:{password}"));
        assert_eq!(basic_credentials(&again), Some((user.clone(), password)));
        if !user.is_empty() {
            assert_eq!(
                token_from_authorization(&format!("Basic {again}")),
                Some(user)
            );
        }
    }
}

/// Wallets: a parsed address prints to forms that parse back to it; a signature from the input
/// never panics, and one that recovers recovers the same signer in every accepted spelling
/// (`v` 0/1 or 27/28, `0x` or `0X`); a key from the input signs a digest that recovers its own
/// address, and the signature's high-S twin is refused.
pub fn wallet_signature(data: &[u8]) {
    let mut input = Input::new(data);
    let address = String::from_utf8_lossy(input.line()).into_owned();
    let nonce = String::from_utf8_lossy(input.line()).into_owned();
    let signature = String::from_utf8_lossy(input.line()).into_owned();
    let secret = input.take(32);
    if let Some(a) = wallet::parse_address(&address) {
        assert_eq!(address.len(), 42);
        let checksum = a.to_checksum(None);
        let lower = wallet::address_lower(&a);
        assert_eq!(checksum.len(), 42);
        assert_eq!(wallet::parse_address(&checksum), Some(a));
        assert_eq!(wallet::parse_address(&lower), Some(a));
        assert_eq!(checksum.to_ascii_lowercase(), lower);
        assert!(address.eq_ignore_ascii_case(&checksum));
    }
    let digest = wallet::login_digest(&address, &nonce, "memo.io");
    if let Ok(signer) = wallet::recover_signer(&digest, &signature) {
        let raw: [u8; 65] = hex::decode(&signature[2..])
            .expect("accepted hex")
            .try_into()
            .expect("65 bytes");
        assert_eq!(wallet::recover_signer_bytes(&digest, &raw), Ok(signer));
        let mut other_v = raw;
        other_v[64] = if raw[64] < 27 {
            raw[64] + 27
        } else {
            raw[64] - 27
        };
        assert_eq!(wallet::recover_signer_bytes(&digest, &other_v), Ok(signer));
        let upper_prefix = format!("0X{}", &signature[2..]);
        assert_eq!(wallet::recover_signer(&digest, &upper_prefix), Ok(signer));
    }
    let Ok(key) = k256::ecdsa::SigningKey::from_slice(secret) else {
        return;
    };
    let me = wallet::address_of(key.verifying_key());
    let sig = wallet::sign_digest(&key, &digest);
    assert!(sig[64] <= 1);
    assert_eq!(wallet::recover_signer_bytes(&digest, &sig), Ok(me));
    let text = format!("0x{}", hex::encode(sig));
    assert_eq!(wallet::recover_signer(&digest, &text), Ok(me));
    // The high-S twin (n - s, v flipped) is the same signature mathematically; it is refused.
    let s = k256::ecdsa::Signature::from_slice(&sig[..64]).expect("a valid signature");
    let (r, low_s) = s.split_scalars();
    let high_s = -*low_s;
    let twin = k256::ecdsa::Signature::from_scalars(r.to_bytes(), high_s.to_bytes())
        .expect("n - s is a valid scalar");
    let mut raw = [0u8; 65];
    raw[..64].copy_from_slice(&twin.to_bytes());
    raw[64] = sig[64] ^ 1;
    assert_eq!(
        wallet::recover_signer_bytes(&digest, &raw),
        Err(AuthFailure::WrongSignature)
    );
}
