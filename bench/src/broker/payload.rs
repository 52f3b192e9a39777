//! The bytes record values are cut from: pseudo-random, with a chosen share of repeats.
//!
//! Values of zeros or of one repeated pattern compress a hundredfold and would make every codec
//! look free; purely random values do not compress at all. Real payloads (JSON, logs, protobuf
//! with repeated field names) are in between. So the payload is pseudo-random bytes in which
//! runs of 16 to 64 bytes copy bytes from 64 to 1023 bytes earlier, with probability
//! `compressibility` per run: an LZ-style codec (all four of Kafka's) finds the copies and not
//! much else, and shrinks a value to roughly `1 − compressibility` of its size. The first KiB has
//! no copies (nothing far enough back), so short values compress less. Fixed by the seed, like
//! every other part of a record.

use crate::report;

/// Shortest and longest repeated run, and how far back a run may copy from.
const RUN_MIN: usize = 16;
const RUN_MAX: usize = 64;
const BACK_MIN: usize = 64;
const BACK_MAX: usize = 1023;
const _: () = assert!(BACK_MIN >= RUN_MAX, "a copy never overlaps itself");

/// Fills `buf` from `seed`; about `compressibility` (0 to 1) of the bytes after the first
/// [`BACK_MAX`] repeat earlier ones.
pub fn fill(buf: &mut [u8], seed: u64, compressibility: f64) {
    assert!((0.0..=1.0).contains(&compressibility), "compressibility {compressibility} is validated to 0..=1");
    report::fill_pseudo_random(buf, seed);
    let mut state = seed ^ 0xC0FF_EE00_D15E_A5E5;
    let mut at = 0;
    while at < buf.len() {
        state = super::keys::splitmix64(state);
        let run = RUN_MIN + (state % (RUN_MAX - RUN_MIN + 1) as u64) as usize;
        let copy = ((state >> 40) as f64 / (1u64 << 24) as f64) < compressibility;
        if copy && at >= BACK_MAX {
            let back = BACK_MIN + ((state >> 16) % (BACK_MAX - BACK_MIN + 1) as u64) as usize;
            let end = (at + run).min(buf.len());
            buf.copy_within(at - back..end - back, at);
        }
        at += run;
    }
}

#[cfg(test)]
mod tests {
    use keel_storage::{batch::Compression, compression::compress};

    use super::*;

    fn ratio(codec: Compression, compressibility: f64) -> f64 {
        let mut buf = vec![0u8; 256 << 10];
        fill(&mut buf, 11, compressibility);
        compress(codec, &buf).len() as f64 / buf.len() as f64
    }

    #[test]
    fn codecs_shrink_it_to_about_one_minus_the_compressibility() {
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            assert!(ratio(codec, 0.0) > 0.99, "{codec}: random bytes do not compress");
            let half = ratio(codec, 0.5);
            assert!((0.45..0.7).contains(&half), "{codec}: 0.5 compresses to {half}");
            let most = ratio(codec, 0.9);
            assert!(most < 0.3, "{codec}: 0.9 compresses to {most}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let (mut a, mut b, mut c) = (vec![0u8; 5000], vec![0u8; 5000], vec![0u8; 5000]);
        fill(&mut a, 1, 0.5);
        fill(&mut b, 1, 0.5);
        fill(&mut c, 2, 0.5);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
