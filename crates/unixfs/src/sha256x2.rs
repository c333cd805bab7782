//! SHA-256 of two independent messages at once.
//!
//! On x86_64 CPUs with the SHA extensions, the two messages are compressed in lockstep, one
//! 64-byte block of each per step, so that the rounds of one hide the latency of
//! `sha256rnds2` in the other: more bytes per second per core than hashing them one after the
//! other. Elsewhere it is two [`Sha256`] hashers. Either way the digests are those of
//! [`Sha256`]; only the speed differs.

use sha2::{Digest, Sha256};

/// SHA-256 of the concatenation of `a`'s slices, and of the concatenation of `b`'s slices.
/// Slices may have any length, empty ones included.
///
/// Unoptimized, the intrinsics are not inlined and the SHA-NI code runs some 25 times slower
/// than `sha2`: the workspace's dev profile builds this crate with `opt-level = 2`.
pub(crate) fn digest_pair<'a, A, B>(a: A, b: B) -> ([u8; 32], [u8; 32])
where
    A: IntoIterator<Item = &'a [u8]>,
    B: IntoIterator<Item = &'a [u8]>,
{
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = shani::Shani::detect() {
        return shani::digest_pair(cpu, a, b);
    }
    digest_pair_fallback(a, b)
}

/// [`digest_pair`] with two [`Sha256`] hashers, whatever the CPU.
pub(crate) fn digest_pair_fallback<'a, A, B>(a: A, b: B) -> ([u8; 32], [u8; 32])
where
    A: IntoIterator<Item = &'a [u8]>,
    B: IntoIterator<Item = &'a [u8]>,
{
    fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().into()
    }
    (digest(a), digest(b))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod shani {
    //! The SHA-NI path: state kept as the two vectors ABEF and CDGH, as `sha256rnds2` wants
    //! it; message schedule with `sha256msg1`, `palignr` and `sha256msg2`.

    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
        _mm_shuffle_epi8, _mm_storeu_si128,
    };
    use std::sync::OnceLock;

    const BLOCK: usize = 64;

    /// The initial hash value.
    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    /// The round constants.
    static K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Proof that the CPU has what the SHA-NI code needs (SHA, SSE2, SSSE3, SSE4.1): only
    /// [`Shani::detect`] makes one.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Shani(());

    impl Shani {
        /// `Some` when this CPU has the SHA extensions (the answer is cached).
        pub(crate) fn detect() -> Option<Shani> {
            static HAS: OnceLock<bool> = OnceLock::new();
            let has = *HAS.get_or_init(|| {
                is_x86_feature_detected!("sha")
                    && is_x86_feature_detected!("sse2")
                    && is_x86_feature_detected!("ssse3")
                    && is_x86_feature_detected!("sse4.1")
            });
            has.then_some(Shani(()))
        }

        /// Compresses the whole blocks of `blocks` into `state`.
        fn compress(self, state: &mut [u32; 8], blocks: &[u8]) {
            assert_eq!(blocks.len() % BLOCK, 0);
            // SAFETY: `self` exists only if `detect` found every feature `compress1` enables.
            unsafe { compress1(state, blocks) }
        }

        /// Compresses `a` into `state_a` and `b` into `state_b`, block by block together.
        fn compress2(self, state_a: &mut [u32; 8], a: &[u8], state_b: &mut [u32; 8], b: &[u8]) {
            assert!(a.len() == b.len() && a.len() % BLOCK == 0);
            // SAFETY: `self` exists only if `detect` found every feature `compress2` enables.
            unsafe { compress2(state_a, a, state_b, b) }
        }
    }

    /// [`super::digest_pair`] with SHA-NI.
    pub(crate) fn digest_pair<'a, A, B>(cpu: Shani, a: A, b: B) -> ([u8; 32], [u8; 32])
    where
        A: IntoIterator<Item = &'a [u8]>,
        B: IntoIterator<Item = &'a [u8]>,
    {
        let mut a = Stream::new(a.into_iter());
        let mut b = Stream::new(b.into_iter());
        let (mut state_a, mut state_b) = (H0, H0);
        // Both messages in lockstep while both have whole blocks.
        loop {
            match (a.fill(), b.fill()) {
                (true, true) => {
                    let (run_a, run_b) = (a.run(), b.run());
                    let n = run_a.len().min(run_b.len());
                    cpu.compress2(&mut state_a, &run_a[..n], &mut state_b, &run_b[..n]);
                    a.consume(n);
                    b.consume(n);
                }
                (true, false) => {
                    a.compress_rest(cpu, &mut state_a);
                    break;
                }
                (false, true) => {
                    b.compress_rest(cpu, &mut state_b);
                    break;
                }
                (false, false) => break,
            }
        }
        // The last block or two of each, in lockstep as far as they go.
        let (pad_a, len_a) = a.padding();
        let (pad_b, len_b) = b.padding();
        let n = len_a.min(len_b);
        cpu.compress2(&mut state_a, &pad_a[..n], &mut state_b, &pad_b[..n]);
        cpu.compress(&mut state_a, &pad_a[n..len_a]);
        cpu.compress(&mut state_b, &pad_b[n..len_b]);
        (to_bytes(&state_a), to_bytes(&state_b))
    }

    fn to_bytes(state: &[u32; 8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// A message given as slices, read as runs of whole blocks: straight from a slice when a
    /// block lies within one, else from a block copied together from several.
    struct Stream<'a, I> {
        parts: std::iter::Fuse<I>,
        /// What is left of the current slice.
        rest: &'a [u8],
        /// A block being gathered across slices, `gathered` bytes of it so far.
        block: [u8; BLOCK],
        gathered: usize,
        /// Bytes compressed so far.
        done: u64,
    }

    impl<'a, I: Iterator<Item = &'a [u8]>> Stream<'a, I> {
        fn new(parts: I) -> Self {
            Stream {
                parts: parts.fuse(),
                rest: &[],
                block: [0; BLOCK],
                gathered: 0,
                done: 0,
            }
        }

        /// Makes a whole block available to [`run`](Self::run), if the message has one left.
        /// When it returns false, every byte not compressed yet is in `block`.
        fn fill(&mut self) -> bool {
            loop {
                if self.gathered == BLOCK || (self.gathered == 0 && self.rest.len() >= BLOCK) {
                    return true;
                }
                if self.rest.is_empty() {
                    match self.parts.next() {
                        Some(part) => self.rest = part,
                        None => return false,
                    }
                    continue;
                }
                let n = (BLOCK - self.gathered).min(self.rest.len());
                self.block[self.gathered..self.gathered + n].copy_from_slice(&self.rest[..n]);
                self.gathered += n;
                self.rest = &self.rest[n..];
            }
        }

        /// The whole blocks available after a successful [`fill`](Self::fill).
        fn run(&self) -> &[u8] {
            if self.gathered == BLOCK {
                &self.block
            } else {
                &self.rest[..self.rest.len() / BLOCK * BLOCK]
            }
        }

        /// Marks the first `n` bytes of [`run`](Self::run) as compressed.
        fn consume(&mut self, n: usize) {
            if self.gathered == BLOCK {
                debug_assert_eq!(n, BLOCK);
                self.gathered = 0;
            } else {
                self.rest = &self.rest[n..];
            }
            self.done += n as u64;
        }

        /// Compresses every whole block left.
        fn compress_rest(&mut self, cpu: Shani, state: &mut [u32; 8]) {
            while self.fill() {
                let run = self.run();
                let n = run.len();
                cpu.compress(state, run);
                self.consume(n);
            }
        }

        /// The padded last block(s) once [`fill`](Self::fill) has returned false: the
        /// buffer and how many of its bytes (64 or 128) to compress.
        fn padding(&self) -> ([u8; 2 * BLOCK], usize) {
            let mut out = [0u8; 2 * BLOCK];
            let tail = self.gathered;
            debug_assert!(tail < BLOCK && self.rest.is_empty());
            out[..tail].copy_from_slice(&self.block[..tail]);
            out[tail] = 0x80;
            let len = if tail < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
            let bits = (self.done + tail as u64).wrapping_mul(8);
            out[len - 8..len].copy_from_slice(&bits.to_be_bytes());
            (out, len)
        }
    }

    /// The four rounds of group `$i` (0..16) for each lane `state0 state1 w k`: `state0` and
    /// `state1` are ABEF and CDGH, `w` the last four groups of message words (`w[$i % 4]`
    /// holds group `$i - 4` on entry, group `$i` on exit), `k` scratch. Each step is done for
    /// every lane before the next, so the lanes' dependency chains interleave.
    macro_rules! rounds4 {
        ($i:expr; $($s0:ident $s1:ident $w:ident $k:ident),+) => {
            $(
                if $i >= 4 {
                    // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], four at a time.
                    let t = _mm_sha256msg1_epu32($w[$i % 4], $w[($i + 1) % 4]);
                    let t = _mm_add_epi32(t, _mm_alignr_epi8($w[($i + 3) % 4], $w[($i + 2) % 4], 4));
                    $w[$i % 4] = _mm_sha256msg2_epu32(t, $w[($i + 3) % 4]);
                }
                $k = _mm_add_epi32($w[$i % 4], _mm_loadu_si128(K.as_ptr().add(4 * $i).cast()));
            )+
            $( $s1 = _mm_sha256rnds2_epu32($s1, $s0, $k); )+
            $( $s0 = _mm_sha256rnds2_epu32($s0, $s1, _mm_shuffle_epi32($k, 0x0E)); )+
        };
    }

    /// All 64 rounds of one block for each lane (see [`rounds4`]).
    macro_rules! rounds64 {
        ($($lane:tt)+) => {
            rounds4!(0; $($lane)+);
            rounds4!(1; $($lane)+);
            rounds4!(2; $($lane)+);
            rounds4!(3; $($lane)+);
            rounds4!(4; $($lane)+);
            rounds4!(5; $($lane)+);
            rounds4!(6; $($lane)+);
            rounds4!(7; $($lane)+);
            rounds4!(8; $($lane)+);
            rounds4!(9; $($lane)+);
            rounds4!(10; $($lane)+);
            rounds4!(11; $($lane)+);
            rounds4!(12; $($lane)+);
            rounds4!(13; $($lane)+);
            rounds4!(14; $($lane)+);
            rounds4!(15; $($lane)+);
        };
    }

    /// State words a..h as the vectors (ABEF, CDGH), highest word in the lowest lane.
    ///
    /// Safety: the CPU must have SHA, SSE2, SSSE3 and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
        let dcba = _mm_loadu_si128(state.as_ptr().cast());
        let hgfe = _mm_loadu_si128(state.as_ptr().add(4).cast());
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        let abef = _mm_alignr_epi8(cdab, efgh, 8);
        let cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
        (abef, cdgh)
    }

    /// The inverse of [`load_state`].
    ///
    /// Safety: the CPU must have SHA, SSE2, SSSE3 and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn store_state(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgfe = _mm_alignr_epi8(dchg, feba, 8);
        _mm_storeu_si128(state.as_mut_ptr().cast(), dcba);
        _mm_storeu_si128(state.as_mut_ptr().add(4).cast(), hgfe);
    }

    /// The 16 message words of a block, as big-endian words in four vectors.
    ///
    /// Safety: the CPU must have SHA, SSE2, SSSE3 and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn load_block(block: &[u8; BLOCK]) -> [__m128i; 4] {
        let swap = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
        let p = block.as_ptr().cast::<__m128i>();
        [
            _mm_shuffle_epi8(_mm_loadu_si128(p), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), swap),
        ]
    }

    /// Compresses `blocks` (a multiple of 64 bytes) into `state`.
    ///
    /// Safety: the CPU must have SHA, SSE2, SSSE3 and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress1(state: &mut [u32; 8], blocks: &[u8]) {
        // SAFETY (here and below): the helpers need the CPU features this function needs,
        // which its caller guarantees.
        let (mut s0, mut s1) = load_state(state);
        for block in blocks.chunks_exact(BLOCK) {
            let (saved0, saved1) = (s0, s1);
            let mut w = load_block(block.try_into().expect("a whole block"));
            let mut k;
            rounds64!(s0 s1 w k);
            s0 = _mm_add_epi32(s0, saved0);
            s1 = _mm_add_epi32(s1, saved1);
        }
        // SAFETY: as above.
        store_state(state, s0, s1);
    }

    /// Compresses `a` into `state_a` and `b` into `state_b` (the same multiple of 64 bytes),
    /// the rounds of both blocks of a step interleaved.
    ///
    /// Safety: the CPU must have SHA, SSE2, SSSE3 and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress2(state_a: &mut [u32; 8], a: &[u8], state_b: &mut [u32; 8], b: &[u8]) {
        // SAFETY (here and below): the helpers need the CPU features this function needs,
        // which its caller guarantees.
        let (mut a0, mut a1) = load_state(state_a);
        let (mut b0, mut b1) = load_state(state_b);
        for (block_a, block_b) in a.chunks_exact(BLOCK).zip(b.chunks_exact(BLOCK)) {
            let (saved_a0, saved_a1, saved_b0, saved_b1) = (a0, a1, b0, b1);
            let mut wa = load_block(block_a.try_into().expect("a whole block"));
            let mut wb = load_block(block_b.try_into().expect("a whole block"));
            let (mut ka, mut kb);
            rounds64!(a0 a1 wa ka, b0 b1 wb kb);
            a0 = _mm_add_epi32(a0, saved_a0);
            a1 = _mm_add_epi32(a1, saved_a1);
            b0 = _mm_add_epi32(b0, saved_b0);
            b1 = _mm_add_epi32(b1, saved_b1);
        }
        // SAFETY: as above.
        store_state(state_a, a0, a1);
        store_state(state_b, b0, b1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    /// Deterministic bytes.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    }

    /// `data` cut at `cuts` (sorted and clamped here), empty slices included.
    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts {
            out.push(&data[at..cut]);
            at = cut;
        }
        out.push(&data[at..]);
        out
    }

    /// Checks every implementation against [`Sha256`] on `a` and `b` cut into those slices.
    fn check(a: &[&[u8]], b: &[&[u8]]) {
        let expected = (sha(&a.concat()), sha(&b.concat()));
        let (a, b) = (a.iter().copied(), b.iter().copied());
        assert_eq!(digest_pair(a.clone(), b.clone()), expected);
        assert_eq!(digest_pair_fallback(a.clone(), b.clone()), expected);
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = shani::Shani::detect() {
            assert_eq!(shani::digest_pair(cpu, a, b), expected);
        }
    }

    #[test]
    fn known_answers() {
        let abc = hex::decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let empty = hex::decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let (x, y) = digest_pair([&b"abc"[..]], []);
        assert_eq!((x.to_vec(), y.to_vec()), (abc.unwrap(), empty.unwrap()));
        let (x, y) = digest_pair([&b"ab"[..], b"", b"c"], [&b""[..]]);
        assert_eq!(x, sha(b"abc"));
        assert_eq!(y, sha(b""));
    }

    #[test]
    fn every_length_up_to_300_against_a_few() {
        let big = bytes(301, 1);
        let other = bytes(1000, 2);
        for len_a in 0..=300 {
            let a = &big[..len_a];
            for len_b in [0, 1, 63, 64, 65, 200, 1000] {
                let b = &other[..len_b];
                check(&[a], &[b]);
                check(&[b], &[a]);
            }
        }
    }

    #[test]
    fn lengths_around_block_boundaries() {
        let lens = [55, 56, 63, 64, 65, 119, 120, 127, 128];
        let x = bytes(128, 3);
        let y = bytes(128, 4);
        for &len_a in &lens {
            for &len_b in &lens {
                let (a, b) = (&x[..len_a], &y[..len_b]);
                check(&[a], &[b]);
                // A block spanning slices, and slices of one byte.
                check(&split(a, &[1, 60, 70]), &split(b, &[64]));
                let ones_a: Vec<&[u8]> = a.chunks(1).collect();
                let ones_b: Vec<&[u8]> = b.chunks(1).collect();
                check(&ones_a, &ones_b);
            }
        }
    }

    #[test]
    fn large_messages() {
        let a = bytes((1 << 20) + 13, 5);
        let b = bytes((1 << 20) + 1001, 6);
        check(&[&a], &[&b]);
        check(&split(&a, &[100, 100, 4096, 70_001, 500_000]), &[&b]);
        check(
            &split(&a, &[64 * 1000]),
            &split(&b, &[3, 64 * 999 + 3, 900_000]),
        );
        // Very different lengths: most of one message goes alone.
        check(&[&a[..10]], &[&b]);
        check(&[&a], &[]);
    }

    #[test]
    fn fallback_is_sha256() {
        let a = bytes(1000, 7);
        let b = bytes(77, 8);
        let got = digest_pair_fallback(split(&a, &[10, 500]), [&b[..]]);
        assert_eq!(got, (sha(&a), sha(&b)));
        assert_eq!(digest_pair_fallback([], []), (sha(b""), sha(b"")));
    }

    /// Single-thread throughput of [`digest_pair`] against two [`Sha256::digest`] calls:
    /// `cargo test --release -p stratus-unixfs --lib -- --ignored --nocapture throughput`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn throughput() {
        use std::time::Instant;
        let (a, b) = (bytes(1 << 20, 9), bytes(1 << 20, 10));
        let rounds = 200;
        let mb = (2 * rounds * (1 << 20)) as f64 / 1e6;
        let measure = |name: &str, f: &dyn Fn() -> ([u8; 32], [u8; 32])| {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let start = Instant::now();
                for _ in 0..rounds {
                    std::hint::black_box(f());
                }
                best = best.min(start.elapsed().as_secs_f64());
            }
            eprintln!("{name}: {:.0} MB/s", mb / best);
        };
        #[cfg(target_arch = "x86_64")]
        eprintln!("SHA-NI: {}", shani::Shani::detect().is_some());
        measure("two Sha256::digest", &|| (sha(&a), sha(&b)));
        measure("digest_pair", &|| digest_pair([&a[..]], [&b[..]]));
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = shani::Shani::detect() {
            // The single-lane SHA-NI code of this module, on one message after the other.
            measure("digest_pair, one message at a time", &|| {
                let (x, _) = shani::digest_pair(cpu, [&a[..]], []);
                let (y, _) = shani::digest_pair(cpu, [&b[..]], []);
                (x, y)
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_splits(
            len_a in 0usize..1200,
            len_b in 0usize..1200,
            cuts_a in proptest::collection::vec(0usize..1200, 0..12),
            cuts_b in proptest::collection::vec(0usize..1200, 0..12),
            seed: u64,
        ) {
            let a = bytes(len_a, seed);
            let b = bytes(len_b, seed ^ 0xff);
            check(&split(&a, &cuts_a), &split(&b, &cuts_b));
        }
    }
}
