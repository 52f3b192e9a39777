//! Record keys: a pool of distinct random keys and which one record k carries.
//!
//! The choice is a pure function of k (and the producer's seed), so a run is reproducible and a
//! record's key can be recomputed anywhere (the native producer's templates, librdkafka's sends)
//! without storing it. Each key goes to its partition by Kafka's murmur2 partitioner, so a skewed
//! key distribution is also a skewed partition load, as it is for a real keyed topic.
//!
//! - round-robin: keys 0, 1, 2, ... in turn: every key and (nearly) every partition equally often.
//! - uniform: a pseudo-random key for every record.
//! - zipf: key i with probability ∝ 1 / (i + 1)^s: a few hot keys, a long tail (s = 1: key 0 is
//!   about twice as frequent as key 1, three times key 2, ...).

use clap::ValueEnum;
use keel_client::partition_for_key;
use serde::Serialize;

use super::args::Topics;
use crate::report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    RoundRobin,
    Uniform,
    Zipf,
}

impl KeyDistribution {
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::RoundRobin => "round-robin",
            KeyDistribution::Uniform => "uniform",
            KeyDistribution::Zipf => "zipf",
        }
    }
}

/// How keys are drawn: the pool and the distribution over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpec {
    pub key_bytes: usize,
    pub count: usize,
    pub distribution: KeyDistribution,
    /// Zipf's s (> 0).
    pub zipf_exponent: f64,
}

enum Chooser {
    RoundRobin,
    Uniform,
    /// Cumulative probabilities of keys 0..count (the last is 1).
    Zipf(Vec<f64>),
}

pub struct Keys {
    bytes: Vec<u8>,
    key_bytes: usize,
    count: usize,
    partitions: Vec<u32>,
    chooser: Chooser,
    salt: u64,
}

impl Keys {
    /// `None` for keyless records (`key_bytes` 0). Key i belongs to topic `i mod topics` of
    /// `layout` and to its murmur2 partition there; [`Keys::partition`] numbers it globally.
    pub fn new(spec: &KeySpec, layout: &Topics, seed: u64) -> Option<Keys> {
        if spec.key_bytes == 0 {
            return None;
        }
        let count = spec.count.max(1);
        let mut bytes = vec![0u8; count * spec.key_bytes];
        report::fill_pseudo_random(&mut bytes, seed ^ 0x5555);
        let topics = layout.names().len();
        let key_partitions = bytes
            .chunks(spec.key_bytes)
            .enumerate()
            .map(|(i, key)| layout.global(i % topics, partition_for_key(key, layout.partitions())))
            .collect();
        let chooser = match spec.distribution {
            KeyDistribution::RoundRobin => Chooser::RoundRobin,
            KeyDistribution::Uniform => Chooser::Uniform,
            KeyDistribution::Zipf => {
                let weights: Vec<f64> = (0..count).map(|i| 1.0 / ((i + 1) as f64).powf(spec.zipf_exponent)).collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = weights
                    .iter()
                    .map(|w| {
                        acc += w / total;
                        acc
                    })
                    .collect();
                if let Some(last) = cdf.last_mut() {
                    *last = 1.0;
                }
                Chooser::Zipf(cdf)
            }
        };
        Some(Keys { bytes, key_bytes: spec.key_bytes, count, partitions: key_partitions, chooser, salt: seed })
    }

    /// The pool index of record k's key.
    pub fn index(&self, k: u64) -> usize {
        match &self.chooser {
            Chooser::RoundRobin => (k % self.count as u64) as usize,
            Chooser::Uniform => (splitmix64(k ^ self.salt) % self.count as u64) as usize,
            Chooser::Zipf(cdf) => {
                let u = (splitmix64(k ^ self.salt) >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|&c| c <= u).min(self.count - 1)
            }
        }
    }

    pub fn key(&self, k: u64) -> &[u8] {
        let at = self.index(k) * self.key_bytes;
        &self.bytes[at..at + self.key_bytes]
    }

    pub fn partition(&self, k: u64) -> u32 {
        self.partitions[self.index(k)]
    }
}

/// A well-mixed 64-bit hash (Steele et al.'s SplitMix64 finalizer); value sizes draw with it too.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(distribution: KeyDistribution, count: usize, s: f64) -> Keys {
        let spec = KeySpec { key_bytes: 8, count, distribution, zipf_exponent: s };
        Keys::new(&spec, &Topics::new("t", 1, 12), 42).unwrap()
    }

    fn histogram(k: &Keys, n: u64) -> Vec<u64> {
        let mut h = vec![0u64; k.count];
        for i in 0..n {
            h[k.index(i)] += 1;
        }
        h
    }

    #[test]
    fn keyless_has_no_pool() {
        let spec = KeySpec { key_bytes: 0, count: 10, distribution: KeyDistribution::Uniform, zipf_exponent: 1.0 };
        assert!(Keys::new(&spec, &Topics::new("t", 1, 4), 1).is_none());
    }

    #[test]
    fn round_robin_cycles_through_every_key() {
        let k = keys(KeyDistribution::RoundRobin, 5, 1.0);
        assert_eq!((0..12).map(|i| k.index(i)).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
        assert_eq!(k.key(7), k.key(2));
        assert_ne!(k.key(1), k.key(2));
        assert_eq!(k.partition(3), partition_for_key(k.key(3), 12));
    }

    #[test]
    fn with_several_topics_a_key_picks_its_topic_then_its_partition() {
        let spec = KeySpec { key_bytes: 8, count: 9, distribution: KeyDistribution::RoundRobin, zipf_exponent: 1.0 };
        let layout = Topics::new("t", 3, 5);
        let k = Keys::new(&spec, &layout, 42).unwrap();
        for i in 0..9u64 {
            let (topic, partition) = layout.locate(k.partition(i));
            assert_eq!(topic, i as usize % 3, "key {i}");
            assert_eq!(partition, partition_for_key(k.key(i), 5), "key {i}: Kafka's partitioner within its topic");
        }
    }

    #[test]
    fn uniform_is_flat_and_reproducible() {
        let k = keys(KeyDistribution::Uniform, 100, 1.0);
        let h = histogram(&k, 200_000);
        // 2000 expected per key; a 4-sigma band is about ±180.
        assert!(h.iter().all(|&c| (1800..=2200).contains(&c)), "{h:?}");
        let again = keys(KeyDistribution::Uniform, 100, 1.0);
        assert!((0..1000).all(|i| k.index(i) == again.index(i)));
        // Not round-robin in disguise.
        assert!((0..100).any(|i| k.index(i) != i as usize));
    }

    #[test]
    fn zipf_follows_its_law() {
        let k = keys(KeyDistribution::Zipf, 1000, 1.0);
        let n = 1_000_000u64;
        let h = histogram(&k, n);
        // P(0) = 1 / H(1000) ≈ 1 / 7.485 = 0.1336.
        let p0 = h[0] as f64 / n as f64;
        assert!((0.128..0.139).contains(&p0), "P(key 0) = {p0}");
        let r = h[0] as f64 / h[1] as f64;
        assert!((1.9..2.1).contains(&r), "key 0 / key 1 = {r}");
        let r = h[0] as f64 / h[9] as f64;
        assert!((9.0..11.0).contains(&r), "key 0 / key 9 = {r}");
        // A steeper exponent concentrates more on the head.
        let steep = histogram(&keys(KeyDistribution::Zipf, 1000, 2.0), n);
        assert!(steep[0] as f64 / n as f64 > 0.55, "{}", steep[0]);
    }
}
