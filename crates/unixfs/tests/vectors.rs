//! Every vector of `cids.json` (root CIDs from go-ipfs/Kubo and the IPFS JS importer, and one
//! CARv1 file byte for byte). A mismatch is a bug in this crate.

mod common;

use std::collections::HashMap;

use stratus_unixfs::{car, Base, CarReader, Cid, DfsWalk, Event, Importer, Profile, Version};

/// Parses an `input` field: `zeros:N` or `text:S`.
enum Input {
    Zeros(u64),
    Text(String),
}

fn parse_input(input: &str) -> Input {
    if let Some(n) = input.strip_prefix("zeros:") {
        Input::Zeros(n.parse().expect("zeros count"))
    } else if let Some(text) = input.strip_prefix("text:") {
        Input::Text(text.to_owned())
    } else {
        panic!("unknown input {input}")
    }
}

/// Root CID of `input` under `profile` fed as shared pieces of uneven sizes
/// ([`Importer::write_bytes`]).
fn root_of_shared(profile: Profile, input: &Input) -> Cid {
    let mut importer = Importer::without_events(profile);
    let whole = match input {
        Input::Zeros(n) => {
            let zeros = bytes::Bytes::from(vec![0u8; 1 << 20]);
            let mut left = *n;
            let mut i = 0;
            while left > 0 {
                let piece = left.min(100_003 + (i % 7) * 150_001) as usize;
                let piece = piece.min(zeros.len());
                importer.write_bytes(zeros.slice(..piece));
                left -= piece as u64;
                i += 1;
            }
            return importer.finish().root;
        }
        Input::Text(text) => bytes::Bytes::copy_from_slice(text.as_bytes()),
    };
    for piece in whole.chunks(7).map(|c| whole.slice_ref(c)) {
        importer.write_bytes(piece);
    }
    importer.finish().root
}

/// Root CID of `input` under `profile`; zeros are streamed from a small buffer.
fn root_of(profile: Profile, input: &Input) -> Cid {
    let mut importer = Importer::without_events(profile);
    match input {
        Input::Zeros(n) => {
            let zeros = vec![0u8; 1 << 20];
            let mut left = *n;
            while left > 0 {
                let piece = left.min(zeros.len() as u64) as usize;
                importer.write(&zeros[..piece]);
                left -= piece as u64;
            }
        }
        Input::Text(text) => importer.write(text.as_bytes()),
    }
    let imported = importer.finish();
    assert!(imported.events.is_empty());
    imported.root
}

#[test]
fn all_root_cids() {
    let json = common::vectors_json();
    let vectors = json["vectors"].as_array().expect("vectors");
    assert!(vectors.len() >= 21);
    let mut failures = Vec::new();
    for vector in vectors {
        let input = vector["input"].as_str().unwrap();
        let profile = Profile::by_name(vector["profile"].as_str().unwrap()).expect("known profile");
        let expected = vector["cid"].as_str().unwrap();
        let parsed: Cid = expected.parse().expect("vector CID parses");
        assert_eq!(parsed.to_string(), expected, "vector CID prints back");
        let got = root_of(profile, &parse_input(input));
        if got != parsed {
            failures.push(format!(
                "{input} / {}: got {got}, want {expected}",
                profile.name
            ));
        }
        let shared = root_of_shared(profile, &parse_input(input));
        if shared != parsed {
            failures.push(format!(
                "{input} / {} (shared pieces): got {shared}, want {expected}",
                profile.name
            ));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn vector_cids_round_trip_in_every_base() {
    let json = common::vectors_json();
    for vector in json["vectors"].as_array().unwrap() {
        let text = vector["cid"].as_str().unwrap();
        let cid: Cid = text.parse().unwrap();
        assert_eq!(Cid::from_bytes(&cid.to_bytes()).unwrap(), cid);
        for base in Base::ALL {
            let other = cid.to_string_of_base(base);
            assert_eq!(other.parse::<Cid>().unwrap(), cid, "{other}");
        }
        let v1 = cid.to_v1();
        assert_eq!(v1.version(), Version::V1);
        assert_eq!(v1.to_string().parse::<Cid>().unwrap(), v1);
        if cid.version() == Version::V0 {
            assert!(text.starts_with("Qm"));
            assert_ne!(v1, cid);
        } else {
            assert!(text.starts_with('b'));
            assert_eq!(v1, cid);
        }
    }
}

#[test]
fn car_vector_byte_for_byte() {
    let json = common::vectors_json();
    let vector = &json["car"];
    let Input::Text(text) = parse_input(vector["input"].as_str().unwrap()) else {
        panic!("text input expected")
    };
    let expected = hex::decode(vector["hex"].as_str().unwrap()).unwrap();

    let mut importer = Importer::new(Profile::KUBO);
    importer.write(text.as_bytes());
    let imported = importer.finish();
    let mut blocks: HashMap<Cid, Vec<u8>> = HashMap::new();
    for event in imported.events {
        match event {
            Event::Leaf { cid, offset, len } => {
                let start = offset as usize;
                blocks.insert(cid, text.as_bytes()[start..start + len as usize].to_vec());
            }
            Event::Node { cid, bytes } => {
                blocks.insert(cid, bytes.to_vec());
            }
        }
    }

    let mut out = car::header(&imported.root);
    let mut walk = DfsWalk::new(imported.root);
    while let Some(cid) = walk.next_block() {
        let data = &blocks[&cid];
        walk.visit(&cid, data).unwrap();
        out.extend_from_slice(&car::block_frame(&cid, data.len()));
        out.extend_from_slice(data);
    }
    assert_eq!(hex::encode(&out), hex::encode(&expected));

    let mut reader = CarReader::new(&expected[..]).unwrap();
    assert_eq!(reader.roots(), [imported.root]);
    let (cid, data) = reader.next_block().unwrap().unwrap();
    assert_eq!(cid, imported.root);
    assert_eq!(data, text.as_bytes());
    assert!(reader.next_block().unwrap().is_none());
}
