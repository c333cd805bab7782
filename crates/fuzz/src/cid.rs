//! CIDs in text (URLs, `after=`) and binary (dag-pb links, CAR frames) form, and the multibase
//! decoders under them.

use stratus_unixfs::cid::{MAX_TEXT_LEN, SHA2_256};
use stratus_unixfs::varint;
use stratus_unixfs::{Base, Cid, CidError, Version};

/// CID text: over the cap is refused by length alone; an accepted text is the canonical text of
/// its CID in its own base, and prints back to the same CID in every base; each base decoder
/// agrees with an independent implementation; the MEMO dialect's error echoes a bounded amount.
pub fn cid_text(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let parsed = text.parse::<Cid>();
    match &parsed {
        Ok(cid) => {
            assert!(text.len() <= MAX_TEXT_LEN);
            // The text is the canonical form of the CID in the base it was written in.
            let canonical = if text.len() == 46 && text.starts_with("Qm") {
                cid.to_string()
            } else {
                let base = Base::from_prefix(text.chars().next().expect("not empty"))
                    .expect("a supported prefix");
                cid.to_string_of_base(base)
            };
            assert_eq!(canonical, text);
            assert_round_trips(cid);
        }
        Err(CidError::TooLong(n)) => assert!(*n == text.len() && *n > MAX_TEXT_LEN),
        Err(_) => assert!(text.len() <= MAX_TEXT_LEN),
    }
    // What a MEMO route answers for the same text.
    match stratus_api_memo::fuzzing::cid(text) {
        Ok(cid) => assert_eq!(Ok(cid), parsed),
        Err(description) => {
            assert!(parsed.is_err());
            assert!(description.starts_with("400 "), "{description}");
            // The text is echoed at most up to the cap (Debug escapes a char in at most 10 bytes).
            assert!(description.len() <= 10 * MAX_TEXT_LEN + 256);
        }
    }
    if text.len() <= 512 {
        multibase_agrees(text);
    }
}

/// Every base decoder against an independent one (`bs58`, `data-encoding`), on text of any
/// content (the decoders themselves have no cap; the caller keeps the text short enough for
/// the fuzzer to stay fast).
fn multibase_agrees(text: &str) {
    use data_encoding::{BASE32_NOPAD, HEXLOWER};
    let ours = |base: Base| base.decode(text).ok();
    assert_eq!(
        ours(Base::Base58Btc),
        bs58::decode(text).into_vec().ok(),
        "base58btc"
    );
    assert_eq!(
        ours(Base::Base32Upper),
        BASE32_NOPAD.decode(text.as_bytes()).ok(),
        "base32 upper"
    );
    let lower = (!text.bytes().any(|b| b.is_ascii_uppercase()))
        .then(|| {
            BASE32_NOPAD
                .decode(text.to_ascii_uppercase().as_bytes())
                .ok()
        })
        .flatten();
    assert_eq!(ours(Base::Base32Lower), lower, "base32 lower");
    assert_eq!(
        ours(Base::Base16Lower),
        HEXLOWER.decode(text.as_bytes()).ok(),
        "base16"
    );
    // Whatever decodes encodes back to the same text (every base has one spelling per value).
    for base in Base::ALL {
        if let Ok(bytes) = base.decode(text) {
            assert_eq!(base.encode(&bytes), text, "{base:?}");
        }
    }
}

/// Binary CIDs: an accepted one is its own canonical encoding; a CID read from the start of a
/// buffer is exactly the bytes it used; varints decode to what encodes back to them.
pub fn cid_binary(data: &[u8]) {
    match Cid::from_bytes(data) {
        Ok(cid) => {
            assert_eq!(cid.to_bytes(), data);
            assert_eq!(cid.encoded_len(), data.len());
            assert_round_trips(&cid);
        }
        Err(CidError::TooLong(_)) => panic!("binary CIDs have no length error"),
        Err(_) => {}
    }
    match Cid::read_bytes(data) {
        Ok((cid, used)) => {
            assert!(used <= data.len());
            assert_eq!(cid.to_bytes(), &data[..used]);
            assert_eq!(Cid::from_bytes(&data[..used]), Ok(cid));
            let trailing = data.len() - used;
            if trailing > 0 {
                assert_eq!(
                    Cid::from_bytes(data),
                    Err(CidError::TrailingBytes(trailing))
                );
            }
        }
        Err(e) => assert_eq!(Cid::from_bytes(data), Err(e)),
    }
    if let Ok((value, used)) = varint::decode(data) {
        assert!(used <= varint::MAX_LEN);
        let mut again = Vec::new();
        varint::encode(value, &mut again);
        assert!(again.len() <= used);
        assert_eq!(varint::decode(&again), Ok((value, again.len())));
    }
    if let Ok((value, used)) = varint::decode_minimal(data) {
        assert_eq!(varint::to_vec(value), &data[..used]);
    }
    // A digest from the input names the same content in both versions.
    if let Some(digest) = data.get(..32) {
        let digest: [u8; 32] = digest.try_into().expect("32 bytes");
        let v0 = Cid::new_v0(digest);
        assert_eq!(v0.to_bytes()[0], SHA2_256 as u8);
        assert_eq!(v0.to_v1().digest(), v0.digest());
        assert_eq!(v0.to_v1().version(), Version::V1);
        assert_round_trips(&v0);
        assert_round_trips(&v0.to_v1());
    }
}

/// A CID prints to text in every base and to bytes, and each parses back to it.
fn assert_round_trips(cid: &Cid) {
    assert_eq!(cid.to_string().parse::<Cid>().as_ref(), Ok(cid));
    for base in Base::ALL {
        let text = cid.to_string_of_base(base);
        assert!(text.len() <= MAX_TEXT_LEN, "{text}");
        assert_eq!(text.parse::<Cid>().as_ref(), Ok(cid), "{text}");
    }
    assert_eq!(Cid::from_bytes(&cid.to_bytes()).as_ref(), Ok(cid));
}
