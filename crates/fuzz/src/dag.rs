//! dag-pb nodes (with their UnixFS data) and CARv1 streams.

use stratus_unixfs::car::{self, CarReader};
use stratus_unixfs::{
    encode_v0_leaf, v0_leaf_envelope, Cid, Codec, DagPbNode, DfsWalk, UnixFsData,
};

/// dag-pb: decode → encode → decode gives the same node, the canonical encoding is never longer
/// than the input and is a fixed point; the same holds for a node's UnixFS data; a CIDv0-style
/// leaf built around the input decodes back to it.
pub fn dagpb(data: &[u8]) {
    if let Ok(node) = DagPbNode::decode(data) {
        let encoded = node.encode();
        assert!(encoded.len() <= data.len());
        assert_eq!(DagPbNode::decode(&encoded).as_ref(), Ok(&node));
        assert_eq!(DagPbNode::decode(&encoded).unwrap().encode(), encoded);
        if let Ok(unixfs) = node.unixfs() {
            unixfs_round_trips(&unixfs);
        }
        // The walk schedules exactly the node's links, in order.
        let cid = Cid::sha256(stratus_unixfs::Version::V1, Codec::DagPb, data);
        let mut walk = DfsWalk::new(cid);
        assert_eq!(walk.next_block(), Some(cid));
        walk.visit(&cid, data).expect("the node decoded");
        let mut seen = std::collections::HashSet::from([cid]);
        let expected: Vec<Cid> = node
            .links
            .iter()
            .map(|l| l.cid)
            .filter(|c| seen.insert(*c))
            .collect();
        let walked: Vec<Cid> = std::iter::from_fn(|| walk.next_block()).collect();
        assert_eq!(walked, expected);
    }
    if let Ok(unixfs) = UnixFsData::decode(data) {
        unixfs_round_trips(&unixfs);
    }
    // A kubo-v0 leaf around the input: a file node holding exactly these bytes.
    let leaf = encode_v0_leaf(data);
    let (prefix, suffix) = v0_leaf_envelope(data.len());
    assert_eq!(leaf.len(), prefix.len() + data.len() + suffix.len());
    let node = DagPbNode::decode(&leaf).expect("a v0 leaf decodes");
    assert!(node.links.is_empty());
    assert_eq!(node.encode(), leaf);
    let unixfs = node.unixfs().expect("a v0 leaf is UnixFS");
    assert_eq!(unixfs.data_type, stratus_unixfs::DataType::File);
    assert_eq!(unixfs.filesize, Some(data.len() as u64));
    assert_eq!(
        unixfs.data.as_deref().unwrap_or_default(),
        data,
        "the leaf holds the chunk"
    );
}

fn unixfs_round_trips(unixfs: &UnixFsData) {
    let encoded = unixfs.encode();
    assert_eq!(UnixFsData::decode(&encoded).as_ref(), Ok(unixfs));
}

/// CARv1: the blocks read from a stream (each verified against its CID), written again with the
/// same roots, read back as the same roots and blocks; reading never takes more frames than the
/// input has bytes.
pub fn car(data: &[u8]) {
    let Ok(mut reader) = CarReader::new(data) else {
        return;
    };
    let roots = reader.roots().to_vec();
    let mut blocks = Vec::new();
    let mut failed = false;
    for block in reader.by_ref() {
        match block {
            Ok(b) => blocks.push(b),
            Err(_) => {
                failed = true;
                break;
            }
        }
        assert!(blocks.len() <= data.len());
    }
    for (cid, bytes) in &blocks {
        assert_eq!(
            Cid::sha256(cid.version(), cid.codec(), bytes).digest(),
            cid.digest()
        );
    }
    let mut out = car::header_with_roots(&roots);
    if let [root] = roots.as_slice() {
        assert_eq!(car::header(root), out);
    }
    for (cid, bytes) in &blocks {
        let frame = car::block(cid, bytes);
        assert_eq!(
            frame[..frame.len() - bytes.len()],
            car::block_frame(cid, bytes.len())
        );
        out.extend_from_slice(&frame);
    }
    let mut again = CarReader::new(&out[..]).expect("the written header reads back");
    assert_eq!(again.roots(), &roots[..]);
    let reread: Vec<(Cid, Vec<u8>)> = again
        .by_ref()
        .map(|b| b.expect("the written blocks read back"))
        .collect();
    assert_eq!(reread, blocks);
    if !failed {
        // A stream read to its end is, once rewritten, no longer than it was.
        assert!(out.len() <= data.len(), "{} > {}", out.len(), data.len());
    }
}
