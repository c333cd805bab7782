//! CARv1 streaming of imported DAGs in depth-first order without duplicates, read back and
//! verified with `CarReader`.

mod common;

use std::collections::{HashMap, HashSet};

use stratus_unixfs::{
    car, encode_v0_leaf, CarError, CarReader, Cid, DagPbNode, DfsWalk, Event, Importer, LeafFormat,
    Profile,
};

/// Imports `data` and returns the root and every block by CID.
fn blocks_of(profile: Profile, data: &[u8]) -> (Cid, HashMap<Cid, Vec<u8>>) {
    let mut importer = Importer::new(profile);
    importer.write(data);
    let imported = importer.finish();
    let mut blocks = HashMap::new();
    for event in imported.events {
        match event {
            Event::Leaf { cid, offset, len } => {
                let chunk = &data[offset as usize..offset as usize + len as usize];
                let block = match profile.leaves {
                    LeafFormat::Raw => chunk.to_vec(),
                    LeafFormat::DagPb => encode_v0_leaf(chunk),
                };
                blocks.insert(cid, block);
            }
            Event::Node { cid, bytes } => {
                blocks.insert(cid, bytes.to_vec());
            }
        }
    }
    (imported.root, blocks)
}

/// Streams the DAG as a CAR, the way a gateway does.
fn write_car(root: Cid, blocks: &HashMap<Cid, Vec<u8>>) -> (Vec<u8>, Vec<Cid>) {
    let mut out = car::header(&root);
    let mut order = Vec::new();
    let mut walk = DfsWalk::new(root);
    while let Some(cid) = walk.next_block() {
        let data = &blocks[&cid];
        walk.visit(&cid, data).unwrap();
        out.extend_from_slice(&car::block_frame(&cid, data.len()));
        out.extend_from_slice(data);
        order.push(cid);
    }
    (out, order)
}

/// The expected pre-order depth-first sequence, first occurrences only.
fn reference_dfs(
    cid: Cid,
    blocks: &HashMap<Cid, Vec<u8>>,
    seen: &mut HashSet<Cid>,
    out: &mut Vec<Cid>,
) {
    if !seen.insert(cid) {
        return;
    }
    out.push(cid);
    if cid.codec() == stratus_unixfs::Codec::DagPb {
        let node = DagPbNode::decode(&blocks[&cid]).unwrap();
        for link in node.links {
            reference_dfs(link.cid, blocks, seen, out);
        }
    }
}

#[test]
fn multi_level_dag_round_trips() {
    for leaves in [LeafFormat::Raw, LeafFormat::DagPb] {
        let profile = Profile {
            name: "tiny",
            chunk_size: 10,
            max_links: 3,
            leaves,
            cid_version: match leaves {
                LeafFormat::Raw => stratus_unixfs::Version::V1,
                LeafFormat::DagPb => stratus_unixfs::Version::V0,
            },
        };
        let data = common::Source::bytes(&common::Pattern::new(11), 0, 377);
        let (root, blocks) = blocks_of(profile, &data);
        let (bytes, order) = write_car(root, &blocks);

        let mut expected = Vec::new();
        reference_dfs(root, &blocks, &mut HashSet::new(), &mut expected);
        assert_eq!(order, expected);
        assert_eq!(order.len(), blocks.len());

        let mut reader = CarReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.roots(), [root]);
        let read: Vec<(Cid, Vec<u8>)> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(read.iter().map(|(c, _)| *c).collect::<Vec<_>>(), order);
        for (cid, data) in read {
            assert_eq!(blocks[&cid], data);
        }
    }
}

#[test]
fn duplicate_leaves_are_sent_once() {
    // 1 MiB of zeros under kubo: four identical leaves under one root.
    let data = vec![0u8; 1 << 20];
    let (root, blocks) = blocks_of(Profile::KUBO, &data);
    assert_eq!(
        root.to_string(),
        "bafybeiggzq4ryi7hscq5hzvzcnk4urnxt3asp37dhgvnjilf7exskximla"
    );
    let (bytes, order) = write_car(root, &blocks);
    assert_eq!(order.len(), 2);
    let read: Vec<_> = CarReader::new(&bytes[..])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read.len(), 2);
    assert_eq!(read[1].1.len(), 262_144);
}

#[test]
fn corrupted_block_is_rejected() {
    let data = common::Source::bytes(&common::Pattern::new(2), 0, 100);
    let profile = Profile {
        chunk_size: 30,
        ..Profile::KUBO
    };
    let (root, blocks) = blocks_of(profile, &data);
    let (mut bytes, _) = write_car(root, &blocks);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let results: Vec<_> = CarReader::new(&bytes[..]).unwrap().collect();
    assert!(matches!(
        results.last(),
        Some(Err(CarError::HashMismatch(_)))
    ));
    assert!(results[..results.len() - 1].iter().all(Result::is_ok));
}
