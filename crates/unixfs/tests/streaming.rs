//! The importer's answer does not depend on how the bytes arrive: random piece sizes, reads
//! straight into chunk buffers, short and interrupted reads, shared `Bytes` pieces (alone or
//! mixed with the other ways).

mod common;

use std::io::{self, Read};

use bytes::Bytes;
use proptest::prelude::*;
use stratus_unixfs::{
    import_reader, import_reader_with, Event, Importer, LeafFormat, Profile, Version,
};

fn import_whole(profile: Profile, data: &[u8]) -> (String, Vec<Event>) {
    let mut importer = Importer::new(profile);
    importer.write(data);
    let imported = importer.finish();
    (imported.root.to_string(), imported.events)
}

fn import_pieces(profile: Profile, data: &[u8], pieces: &[usize]) -> (String, Vec<Event>) {
    let mut importer = Importer::new(profile);
    let mut events = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = pieces[i % pieces.len()].min(rest.len());
        importer.write(&rest[..n]);
        rest = &rest[n..];
        i += 1;
        if i % 3 == 0 {
            events.extend(importer.drain_events());
        }
    }
    let imported = importer.finish();
    events.extend(imported.events);
    (imported.root.to_string(), events)
}

/// Feeds `data` through `write_bytes` in pieces cut from one shared buffer. With `mixed`, every
/// third piece goes through `write` and every fifth through `read_from` instead.
fn import_bytes(
    profile: Profile,
    data: &[u8],
    pieces: &[usize],
    mixed: bool,
) -> (String, Vec<Event>) {
    let mut importer = Importer::new(profile);
    let mut events = Vec::new();
    let mut rest = Bytes::copy_from_slice(data);
    let mut i = 0;
    while !rest.is_empty() {
        let n = pieces[i % pieces.len()].min(rest.len());
        let piece = rest.split_to(n);
        i += 1;
        if mixed && i % 3 == 0 {
            importer.write(&piece);
        } else if mixed && i % 5 == 0 {
            let mut reader = &piece[..];
            while !reader.is_empty() {
                importer.read_from(&mut reader).unwrap();
            }
        } else {
            importer.write_bytes(piece);
        }
        if i % 4 == 0 {
            events.extend(importer.drain_events());
        }
    }
    assert_eq!(importer.bytes_written(), data.len() as u64);
    let imported = importer.finish();
    events.extend(imported.events);
    (imported.root.to_string(), events)
}

fn small_profile() -> impl Strategy<Value = Profile> {
    (1u32..200, 2u32..6, 0u8..3).prop_map(|(chunk_size, max_links, kind)| {
        let (leaves, cid_version) = match kind {
            0 => (LeafFormat::Raw, Version::V1),
            1 => (LeafFormat::DagPb, Version::V0),
            _ => (LeafFormat::DagPb, Version::V1),
        };
        Profile {
            name: "test",
            chunk_size,
            max_links,
            leaves,
            cid_version,
        }
    })
}

/// A reader that returns at most `max` bytes per call and fails with `Interrupted` every
/// third call.
struct Choppy<'a> {
    data: &'a [u8],
    max: usize,
    calls: usize,
}

impl Read for Choppy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.max).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn piece_sizes_do_not_matter(
        profile in small_profile(),
        data in proptest::collection::vec(any::<u8>(), 0..4000),
        pieces in proptest::collection::vec(1usize..500, 1..8),
    ) {
        let whole = import_whole(profile, &data);
        let pieces = import_pieces(profile, &data, &pieces);
        prop_assert_eq!(&whole, &pieces);
        let source = common::Memory(&data);
        let rec = common::import(profile, &source, data.len() as u64, 97);
        common::check(&profile, &rec, &source, true);
        prop_assert_eq!(rec.root.to_string(), whole.0);
    }

    #[test]
    fn shared_pieces_match_write(
        profile in small_profile(),
        data in proptest::collection::vec(any::<u8>(), 0..4000),
        pieces in proptest::collection::vec(1usize..500, 1..8),
        mixed: bool,
    ) {
        let whole = import_whole(profile, &data);
        prop_assert_eq!(import_bytes(profile, &data, &pieces, mixed), whole);
    }

    #[test]
    fn reader_paths_match_write(
        profile in small_profile(),
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        max in 1usize..400,
    ) {
        let (root, events) = import_whole(profile, &data);
        let quick = import_reader(profile, Choppy { data: &data, max, calls: 0 }).unwrap();
        prop_assert_eq!(quick.root.to_string(), root.clone());
        prop_assert!(quick.events.is_empty());
        let mut streamed = Vec::new();
        let full = import_reader_with(profile, Choppy { data: &data, max, calls: 0 }, |e| {
            streamed.push(e);
            Ok(())
        })
        .unwrap();
        prop_assert_eq!(full.root.to_string(), root);
        prop_assert_eq!(streamed, events);
        prop_assert_eq!(full.size, data.len() as u64);
        prop_assert_eq!(quick.stats, full.stats);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// The real profiles, with pieces large and small, over a few chunks.
    #[test]
    fn real_profiles_piece_sizes(
        which in 0usize..4,
        len in 0usize..2_200_000,
        pieces in proptest::collection::vec(1usize..700_000, 1..5),
        seed: u64,
    ) {
        let profile = Profile::ALL[which];
        let data = common::Source::bytes(&common::Pattern::new(seed), 0, len);
        let whole = import_whole(profile, &data);
        prop_assert_eq!(import_bytes(profile, &data, &pieces, false), whole.clone());
        prop_assert_eq!(import_bytes(profile, &data, &pieces, true), whole.clone());
        let pieces = import_pieces(profile, &data, &pieces);
        prop_assert_eq!(whole, pieces);
    }
}

#[test]
fn reader_errors_are_returned() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let err = import_reader(Profile::MEMO, Broken).unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
    let err = import_reader_with(Profile::MEMO, &b"abc"[..], |_| {
        Err(io::Error::other("full"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "full");
}

#[test]
fn read_from_reads_into_the_chunk() {
    let data = common::Source::bytes(&common::Pattern::new(5), 0, 600_000);
    let mut importer = Importer::new(Profile::KUBO);
    let mut reader = &data[..];
    let mut reads = 0;
    while importer.read_from(&mut reader).unwrap() > 0 {
        reads += 1;
    }
    // A slice reader fills the chunk in one call: two full chunks and the tail.
    assert_eq!(reads, 3);
    assert_eq!(importer.bytes_written(), 600_000);
    let imported = importer.finish();
    assert_eq!(
        imported.root.to_string(),
        import_whole(Profile::KUBO, &data).0
    );
}

#[test]
#[should_panic(expected = "invalid profile")]
fn invalid_profile_panics() {
    Importer::new(Profile {
        max_links: 1,
        ..Profile::MEMO
    });
}

#[test]
fn importer_inside_the_rayon_pool() {
    // A one-thread pool calling the importer from its own worker must not deadlock.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let data = common::Source::bytes(&common::Pattern::new(8), 0, 3_000_000);
    let expected = import_whole(Profile::KUBO, &data).0;
    let got = pool.install(|| import_whole(Profile::KUBO, &data).0);
    assert_eq!(got, expected);
}

#[test]
fn importer_can_move_to_a_blocking_task() {
    fn assert_send<T: Send>() {}
    assert_send::<Importer>();
    assert_send::<Event>();
}

#[test]
fn shared_pieces_of_one_byte_and_empty_ones() {
    let data = common::Source::bytes(&common::Pattern::new(3), 0, 70_000);
    for profile in [Profile::KUBO_V0, Profile::MEMO] {
        let small = Profile {
            chunk_size: 20_000,
            ..profile
        };
        let mut importer = Importer::new(small);
        for (i, b) in data.iter().enumerate() {
            if i % 1000 == 0 {
                importer.write_bytes(Bytes::new());
            }
            importer.write_bytes(Bytes::copy_from_slice(&[*b]));
        }
        let imported = importer.finish();
        let whole = import_whole(small, &data);
        assert_eq!((imported.root.to_string(), imported.events), whole);
    }
    // Nothing at all, and an empty piece only: the empty file.
    let mut importer = Importer::new(Profile::MEMO);
    importer.write_bytes(Bytes::new());
    assert_eq!(
        importer.finish().root.to_string(),
        import_whole(Profile::MEMO, &[]).0
    );
}

#[test]
fn event_cid_accessor() {
    let mut importer = Importer::new(Profile::KUBO);
    importer.write(&[1u8; 300_000]);
    let imported = importer.finish();
    assert_eq!(imported.events.last().unwrap().cid(), &imported.root);
}
