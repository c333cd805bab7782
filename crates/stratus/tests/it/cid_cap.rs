//! A CID in a request is capped in length before it is decoded: a 60 KB CID (whose base58
//! decoding used to cost a second of CPU) is a plain MEMO 400 on every route that reads one, with
//! or without a token, and the answer does not echo the 60 KB back.

use serde_json::{json, Value};
use stratus_unixfs::cid::MAX_TEXT_LEN;

use crate::harness::{json, put, Server, KEY_A};

/// `z` and 60,000 base58 digits: what the issue measured at a second of CPU per request.
fn long_cid() -> String {
    format!("z{}", "2".repeat(60_000))
}

fn too_long(len: usize, shown: &str) -> Value {
    json!({
        "Code": "InvalidArgument",
        "Description": format!(
            "Invalid Argument ({shown}CID text is {len} bytes long, more than the {MAX_TEXT_LEN} allowed)"
        ),
        "HTTPStatusCode": 400,
    })
}

/// What the error repeats of the CID: its first [`MAX_TEXT_LEN`] characters and an ellipsis.
fn echoed(cid: &str) -> String {
    format!("invalid CID \"{}\"…: ", &cid[..MAX_TEXT_LEN])
}

#[test]
fn an_over_long_cid_is_a_memo_400_everywhere() {
    let s = Server::start();
    let (_, token, _) = s.wallet_login(KEY_A);
    // A stored object, so that a CID that is not over the cap does reach the store.
    let cid = put(&s, &token, "mefs", "a.txt", b"capped".to_vec());
    let long = long_cid();
    let want = too_long(long.len(), &echoed(&long));

    for target in ["mefs", "ipfs"] {
        let path = format!("/{target}/{long}");
        // Downloads need no token: the cap holds for anyone.
        let r = s.get(&path).send().unwrap();
        assert_eq!(r.status(), 400, "GET /{target}");
        let text = r.text().unwrap();
        assert!(
            text.len() < 1024,
            "the answer echoes the CID: {} bytes",
            text.len()
        );
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            want,
            "GET /{target}"
        );
        // The trustless forms read the same CID.
        for query in ["?format=raw", "?format=car", "?filename=x.bin"] {
            let (st, v) = json(s.get(&format!("{path}{query}")));
            assert_eq!((st, v), (400, want.clone()), "GET /{target}{query}");
        }
        let r = s.head(&path).send().unwrap();
        assert_eq!(r.status(), 400, "HEAD /{target}");
        let (st, v) = json(s.delete(&path).header("Authorization", &token));
        assert_eq!((st, v), (400, want.clone()), "DELETE /{target}");
        let (st, v) = json(
            s.get(&format!("/{target}/listobjects?after={long}"))
                .header("Authorization", &token),
        );
        let after = too_long(long.len(), &format!("after: {}", echoed(&long)));
        assert_eq!((st, v), (400, after), "listobjects?after=");
    }

    // Just over the cap is refused; the stored object is still there and served.
    let over = format!("{cid}{}", "a".repeat(MAX_TEXT_LEN + 1 - cid.len()));
    let (st, v) = json(s.get(&format!("/mefs/{over}")));
    assert_eq!((st, v), (400, too_long(over.len(), &echoed(&over))));
    let r = s.get(&format!("/mefs/{cid}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"capped");
    // The same CID in base16, the longest base, is under the cap and finds the object.
    let base16 = cid
        .parse::<stratus_unixfs::Cid>()
        .unwrap()
        .to_string_of_base(stratus_unixfs::Base::Base16Lower);
    assert!(base16.len() <= MAX_TEXT_LEN);
    let r = s.get(&format!("/mefs/{base16}")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"capped");
}
