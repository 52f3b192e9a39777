//! Which partition a record goes to: Kafka's default partitioner for keyed records, so a key
//! lands on the same partition whether a Kafka Java client or this one produced it.
//!
//! - A record **with a key** (an empty key counts as a key, as in Kafka) goes to
//!   `toPositive(murmur2(key)) % partitions`, exactly Kafka's
//!   `BuiltInPartitioner.partitionForKey` (`Utils.toPositive(Utils.murmur2(keyBytes)) %
//!   numPartitions`).
//! - A record **without a key** goes to the next partition in round-robin order (0, 1, 2, …,
//!   per producer). Kafka's current Java producer instead sticks to one partition per batch
//!   ("uniform sticky"); round-robin spreads keyless records evenly record by record, which is
//!   simpler to reason about for a blocking client without a background sender.

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, little-endian 4-byte
/// blocks, as a Java `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java truncates the length to an int; keys are far below 2 GiB.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        // Java's switch falls through from case 3 to case 1.
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner gives a record with `key`:
/// `toPositive(murmur2(key)) % partitions`. Panics if `partitions` is 0.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    // to_positive is in 0..=i32::MAX, so the u32 conversion is lossless.
    to_positive(murmur2(key)) as u32 % partitions
}

/// Chooses partitions for a producer: by key hash, or round-robin for keyless records.
#[derive(Debug, Clone)]
pub(crate) struct Partitioner {
    /// The topic's partition count (at least 1).
    partitions: u32,
    /// The partition the next keyless record goes to.
    next_keyless: u32,
}

impl Partitioner {
    pub(crate) fn new(partitions: u32) -> Partitioner {
        assert!(partitions > 0, "a topic has at least one partition");
        Partitioner { partitions, next_keyless: 0 }
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition for a record with `key` (`None` = no key).
    pub(crate) fn partition(&mut self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(key) => partition_for_key(key, self.partitions),
            None => {
                let p = self.next_keyless;
                self.next_keyless = (p + 1) % self.partitions;
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` (clients/src/test/java/org/apache/kafka/common/utils/
    /// UtilsTest.java), all of its vectors.
    const KAFKA_VECTORS: &[(&[u8], i32)] = &[
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        (b"abc", 479_470_107),
    ];

    #[test]
    fn murmur2_matches_kafka() {
        for &(input, want) in KAFKA_VECTORS {
            assert_eq!(murmur2(input), want, "murmur2({:?})", String::from_utf8_lossy(input));
        }
        // Not in Kafka's test, but what its algorithm gives for no bytes (seed ^ 0, then the
        // final mix); other Kafka-compatible clients test the same value.
        assert_eq!(murmur2(b""), 275_646_681);
        // Bytes that are not text, a tail of 2 after a block: the Java client's value, as
        // recorded by Kafka-compatible Go clients (sarama, kafkautil).
        assert_eq!(murmur2(&[12, 42, 56, 24, 109, 111]), 274_204_207);
    }

    #[test]
    fn key_partition_is_kafkas() {
        // toPositive(-973932308) = 2^31 - 973932308.
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
        assert_eq!(partition_for_key(b"21", 12), 1_173_551_340 % 12);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        assert_eq!(partition_for_key(b"abc", 1000), 479_470_107 % 1000);
        assert_eq!(to_positive(i32::MIN), 0);
    }

    #[test]
    fn same_key_same_partition() {
        let mut p = Partitioner::new(16);
        for i in 0..500 {
            let key = format!("user-{i}");
            let first = p.partition(Some(key.as_bytes()));
            p.partition(None); // keyless records in between change nothing
            assert_eq!(p.partition(Some(key.as_bytes())), first);
            assert_eq!(first, partition_for_key(key.as_bytes(), 16));
        }
        assert_eq!(p.partitions(), 16);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_for_key(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn keyless_records_round_robin() {
        let mut p = Partitioner::new(3);
        let got: Vec<u32> = (0..7).map(|_| p.partition(None)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        // An empty key is a key, as in Kafka.
        let mut p = Partitioner::new(5);
        let empty = partition_for_key(b"", 5);
        assert!((0..4).all(|_| p.partition(Some(b"")) == empty));
    }
}
