//! Fuzz entry points: one `pub fn <target>(data: &[u8])` for every parser of untrusted input in
//! stratus. The cargo-fuzz package in `fuzz/` wraps each in a libFuzzer target (nightly), and
//! `tests/replay.rs` runs each over its committed corpus and regressions on stable, so the inputs
//! the fuzzers found keep being checked by `cargo test`.
//!
//! An entry point does more than look for panics: it asserts what an accepted input must satisfy
//! (round trips through the encoder, bounds the parser documents, agreement with an independent
//! implementation or with the same parser fed differently). Inputs that are not even text where
//! text is expected are skipped. Nothing here talks to a network, a disk or a database.
//!
//! Targets: [`cid_text`], [`cid_binary`], [`dagpb`], [`car`], [`multipart`], [`compose`],
//! [`jwt`], [`authorization`], [`range`], [`memo_json`], [`computeshare_json`],
//! [`twocloud_body`], [`wallet_signature`].

mod auth;
mod bodies;
mod cid;
mod compose;
mod dag;
mod gateway;
mod multipart;

pub use auth::{authorization, jwt, wallet_signature};
pub use bodies::{computeshare_json, memo_json, twocloud_body};
pub use cid::{cid_binary, cid_text};
pub use compose::compose;
pub use dag::{car, dagpb};
pub use gateway::range;
pub use multipart::multipart;

/// An entry point: panics when an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every target by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("cid_text", cid_text),
    ("cid_binary", cid_binary),
    ("dagpb", dagpb),
    ("car", car),
    ("multipart", multipart),
    ("compose", compose),
    ("jwt", jwt),
    ("authorization", authorization),
    ("range", range),
    ("memo_json", memo_json),
    ("computeshare_json", computeshare_json),
    ("twocloud_body", twocloud_body),
    ("wallet_signature", wallet_signature),
];

/// A cursor that splits a fuzz input into the pieces a target needs. Reading past the end gives
/// zeros and empty slices, so every input is usable.
pub(crate) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    /// The next byte (0 at the end).
    pub(crate) fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Up to the next `\n` (not included), or everything left.
    pub(crate) fn line(&mut self) -> &'a [u8] {
        match self.rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                line
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// Everything left.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// `bytes` as text, when it is UTF-8.
pub(crate) fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}
