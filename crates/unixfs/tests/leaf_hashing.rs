//! Full chunks are hashed two at a time (SHA-NI, interleaved) or alone (`sha2`), depending on
//! how they arrive: the CIDs must be those of plain SHA-256 either way. Every leaf is re-hashed
//! with `sha2` from the file bytes and every node from its bytes while walking the tree
//! (`common::check`), for sizes around chunk boundaries, fed through `write` and through
//! `write_bytes` in random pieces, with every profile.

mod common;

use bytes::Bytes;
use stratus_unixfs::{import_reader, Importer, Profile};

use common::{Memory, Pattern, Recorded, Source};

/// xorshift64: reproducible piece sizes without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Piece sizes for a file cut with `chunk`-byte chunks: tiny, around a chunk, and several
/// chunks at once.
fn random_pieces(rng: &mut Rng, chunk: usize) -> Vec<usize> {
    (0..16)
        .map(|_| match rng.below(4) {
            0 => 1 + rng.below(100),
            1 => chunk - 50 + rng.below(100),
            2 => 1 + rng.below(chunk),
            _ => 1 + rng.below(3 * chunk),
        })
        .collect()
}

/// Imports `data` in `pieces` (cycled) through `write_bytes` (pieces of one shared buffer)
/// or `write`, draining events now and then.
fn import(profile: Profile, data: &[u8], pieces: &[usize], shared: bool) -> Recorded {
    let mut importer = Importer::new(profile);
    let mut rec = Recorded::new();
    let whole = Bytes::copy_from_slice(data);
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = pieces[i % pieces.len()].min(data.len() - at);
        if shared {
            importer.write_bytes(whole.slice(at..at + n));
        } else {
            importer.write(&data[at..at + n]);
        }
        at += n;
        i += 1;
        if i % 3 == 0 {
            for event in importer.drain_events() {
                common::record(&mut rec, event);
            }
        }
    }
    rec.finish(importer.finish());
    rec
}

#[test]
fn leaves_hash_as_plain_sha256() {
    let mut rng = Rng(0x5eed_1eaf);
    for profile in Profile::ALL {
        let chunk = profile.chunk_size as usize;
        let sizes = [
            0,
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            3 * chunk + 7,
            17 * chunk + 5,
        ];
        for size in sizes {
            let data = Pattern::new(size as u64 + 1).bytes(0, size);
            let source = Memory(&data);
            let pieces = random_pieces(&mut rng, chunk);
            let written = import(profile, &data, &pieces, false);
            common::check(&profile, &written, &source, true);
            let shared = import(profile, &data, &pieces, true);
            common::check(&profile, &shared, &source, true);
            let what = format!("{} bytes, profile {}", size, profile.name);
            assert_eq!(shared.root, written.root, "{what}");
            assert_eq!(shared.order, written.order, "{what}");
            let quick = import_reader(profile, &data[..]).unwrap();
            assert_eq!(quick.root, written.root, "{what}");
        }
    }
}
