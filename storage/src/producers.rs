//! Idempotent producers, storage side: what the log remembers per producer id and the decision
//! an append of an idempotent batch gets (append, duplicate, fenced, out of order). Pure logic, no
//! I/O: the log ([`crate::Log`]) asks [`ProducerStates::check`] before it assigns offsets and
//! calls [`ProducerStates::record`] after; recovery rebuilds the same state from a snapshot plus
//! the batches after it.
//!
//! Semantics follow Kafka's `ProducerStateManager` / `ProducerAppendInfo`:
//! - A batch is idempotent when `producerId >= 0` and `baseSequence >= 0` (and it is not a
//!   control batch: transactions are not supported, markers are not checked).
//! - Per producer id the log keeps the current epoch and the last [`MAX_BATCHES_PER_PRODUCER`]
//!   batches (first and last sequence, offsets, max timestamp).
//! - Lower epoch: fenced. Higher epoch (or unknown producer): accepted when the first sequence is
//!   0; an unknown producer is accepted with any sequence (its batches may have been removed by
//!   retention). Same epoch: a batch equal to one of the last five is a duplicate (answered with
//!   the original's offsets, nothing appended); otherwise its first sequence must follow the last
//!   one (wrapping at `i32::MAX` to 0).
//!
//! Snapshot file (`producers.snapshot`, all integers big-endian):
//! ```text
//! magic u32 = "KPS1" | covers u64 (state of every batch below this offset) | count u32
//! count × { producer_id i64 | epoch i16 | n u8 | n × { first_seq i32 | last_seq i32 |
//!           base_offset u64 | last_offset u64 | max_timestamp i64 } }      (oldest batch first)
//! crc32c u32 of everything before it
//! ```

use std::collections::{HashMap, VecDeque};

use crate::{batch::BatchView, be_reader::BeReader, error::StorageError};

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`; a producer has at most five
/// requests in flight).
pub const MAX_BATCHES_PER_PRODUCER: usize = 5;

/// Name of the snapshot file in a log directory.
pub const SNAPSHOT_FILE: &str = "producers.snapshot";

const SNAPSHOT_MAGIC: u32 = 0x4b50_5331; // "KPS1"
const BATCH_BYTES: usize = 32;

/// One appended batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch's max timestamp.
    pub timestamp: i64,
}

/// What the log remembers of one producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last batches of `epoch`, oldest first, never empty, at most
    /// [`MAX_BATCHES_PER_PRODUCER`].
    pub batches: VecDeque<BatchMeta>,
}

impl ProducerEntry {
    pub fn last(&self) -> &BatchMeta {
        self.batches.back().expect("a producer entry holds at least one batch")
    }
}

/// The producer fields of an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotentBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl IdempotentBatch {
    /// The batch's producer fields if it is idempotent (and not a control batch).
    pub fn of(view: &BatchView<'_>) -> Option<Self> {
        Self::new(
            view.producer_id(),
            view.producer_epoch(),
            view.base_sequence(),
            view.last_offset_delta(),
            view.is_control(),
        )
    }

    /// From raw fields: `None` unless `producer_id >= 0`, `base_sequence >= 0` and not control.
    pub fn new(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        last_offset_delta: i32,
        control: bool,
    ) -> Option<Self> {
        (producer_id >= 0 && base_sequence >= 0 && !control).then(|| IdempotentBatch {
            producer_id,
            epoch,
            first_seq: base_sequence,
            last_seq: increment_sequence(base_sequence, last_offset_delta),
        })
    }

    /// Its metadata once appended at `base_offset..=last_offset`.
    pub fn meta(&self, base_offset: u64, last_offset: u64, timestamp: i64) -> BatchMeta {
        BatchMeta { first_seq: self.first_seq, last_seq: self.last_seq, base_offset, last_offset, timestamp }
    }
}

/// `seq + by`, wrapping from `i32::MAX` to 0 (Kafka's `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// What an idempotent batch's append must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Append it.
    Append,
    /// Append nothing: this batch is already in the log at the original's offsets.
    Duplicate(BatchMeta),
}

/// Producer states of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    max_producers: usize,
}

impl ProducerStates {
    /// Empty state keeping at most `max_producers` producers (the one whose last batch is oldest
    /// is forgotten first).
    pub fn new(max_producers: usize) -> Self {
        ProducerStates { producers: HashMap::new(), max_producers: max_producers.max(1) }
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides an append of `batch` (see the module doc). Errors are
    /// [`StorageError::ProducerFenced`] and [`StorageError::OutOfOrderSequence`].
    pub fn check(&self, batch: &IdempotentBatch) -> Result<Decision, StorageError> {
        let pid = batch.producer_id;
        let Some(entry) = self.producers.get(&pid) else {
            // Unknown: its earlier batches may have been removed by retention; accept any sequence.
            return Ok(Decision::Append);
        };
        if batch.epoch < entry.epoch {
            return Err(StorageError::ProducerFenced { producer_id: pid, epoch: batch.epoch, current: entry.epoch });
        }
        if batch.epoch > entry.epoch {
            return if batch.first_seq == 0 {
                Ok(Decision::Append)
            } else {
                Err(StorageError::OutOfOrderSequence { producer_id: pid, expected: 0, got: batch.first_seq })
            };
        }
        if let Some(original) =
            entry.batches.iter().find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
        {
            return Ok(Decision::Duplicate(*original));
        }
        let expected = increment_sequence(entry.last().last_seq, 1);
        if batch.first_seq == expected {
            Ok(Decision::Append)
        } else {
            Err(StorageError::OutOfOrderSequence { producer_id: pid, expected, got: batch.first_seq })
        }
    }

    /// Remembers an appended (or replayed) batch. A new epoch replaces the producer's batches.
    pub fn record(&mut self, producer_id: i64, epoch: i16, meta: BatchMeta) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= self.max_producers {
            // Forget the producer whose last batch is oldest (ties: lowest id, so a replay
            // forgets the same one).
            let victim = self.producers.iter().map(|(pid, e)| (e.last().timestamp, *pid)).min().map(|(_, pid)| pid);
            if let Some(victim) = victim {
                self.producers.remove(&victim);
            }
        }
        let entry =
            self.producers.entry(producer_id).or_insert_with(|| ProducerEntry { epoch, batches: VecDeque::new() });
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(meta);
        while entry.batches.len() > MAX_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Forgets every batch at or after offset `end` (a suffix truncation); a producer left with no
    /// batch is forgotten (it is then unknown, and accepted with any sequence).
    pub fn truncate(&mut self, end: u64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.last_offset < end);
            !e.batches.is_empty()
        });
    }

    /// Forgets producers whose last batch's timestamp is `expiration_ms` or more before `now_ms`
    /// (Kafka's `producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last().timestamp) < expiration_ms);
    }

    /// The snapshot file's bytes for this state, which covers every batch below `covers`.
    pub fn encode(&self, covers: u64) -> Vec<u8> {
        let mut ids: Vec<i64> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(20 + ids.len() * (11 + MAX_BATCHES_PER_PRODUCER * BATCH_BYTES));
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
        out.extend_from_slice(&covers.to_be_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for pid in ids {
            let e = &self.producers[&pid];
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot: `(covers, state)`, or `None` if it is damaged.
    pub fn decode(bytes: &[u8], max_producers: usize) -> Option<(u64, Self)> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = BeReader(body);
        if r.u32()? != SNAPSHOT_MAGIC {
            return None;
        }
        let covers = r.u64()?;
        let count = r.u32()?;
        let mut state = ProducerStates::new(max_producers);
        for _ in 0..count {
            let pid = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let n = r.take(1)?[0] as usize;
            if n == 0 || n > MAX_BATCHES_PER_PRODUCER {
                return None;
            }
            for _ in 0..n {
                let meta = BatchMeta {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                    timestamp: r.u64()? as i64,
                };
                state.record(pid, epoch, meta);
            }
        }
        r.rest().is_empty().then_some((covers, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 7;

    /// A batch of `records` records starting at sequence `seq`.
    fn b(epoch: i16, seq: i32, records: i32) -> IdempotentBatch {
        IdempotentBatch::new(PID, epoch, seq, records - 1, false).expect("idempotent")
    }

    /// Appends `batch` at offset `at` (after checking it is accepted) and returns the next offset.
    fn append(s: &mut ProducerStates, batch: IdempotentBatch, at: u64, records: u64) -> u64 {
        assert_eq!(s.check(&batch).expect("accepted"), Decision::Append, "{batch:?}");
        s.record(batch.producer_id, batch.epoch, batch.meta(at, at + records - 1, at as i64));
        at + records
    }

    fn out_of_order(r: Result<Decision, StorageError>) -> (i32, i32) {
        match r {
            Err(StorageError::OutOfOrderSequence { producer_id: PID, expected, got }) => (expected, got),
            other => panic!("expected out of order, got {other:?}"),
        }
    }

    #[test]
    fn non_idempotent_and_control_batches_are_not_tracked() {
        assert_eq!(IdempotentBatch::new(-1, 0, 0, 0, false), None);
        assert_eq!(IdempotentBatch::new(1, 0, -1, 0, false), None);
        assert_eq!(IdempotentBatch::new(1, 0, 0, 0, true), None);
        assert!(IdempotentBatch::new(0, 0, 0, 0, false).is_some());
    }

    #[test]
    fn in_order_appends_advance_the_sequence() {
        let mut s = ProducerStates::new(10);
        let mut at = append(&mut s, b(0, 0, 3), 0, 3);
        at = append(&mut s, b(0, 3, 1), at, 1);
        at = append(&mut s, b(0, 4, 10), at, 10);
        assert_eq!(at, 14);
        let e = s.get(PID).unwrap();
        assert_eq!((e.epoch, e.last().last_seq, e.last().base_offset), (0, 13, 4));
    }

    #[test]
    fn each_of_the_last_five_is_a_duplicate_and_the_sixth_is_out_of_order() {
        let mut s = ProducerStates::new(10);
        let mut at = 100;
        for i in 0..6 {
            at = append(&mut s, b(3, i * 2, 2), at, 2);
        }
        // Batches 1..=5 (seq 2..=11) are remembered, with their original offsets.
        for i in 1..6 {
            let d = s.check(&b(3, i * 2, 2)).unwrap();
            let base = 100 + 2 * i as u64;
            assert_eq!(
                d,
                Decision::Duplicate(BatchMeta {
                    first_seq: i * 2,
                    last_seq: i * 2 + 1,
                    base_offset: base,
                    last_offset: base + 1,
                    timestamp: base as i64
                })
            );
        }
        // Batch 0 (seq 0..=1) is too old to be recognised: out of order.
        assert_eq!(out_of_order(s.check(&b(3, 0, 2))), (12, 0));
        // Same first sequence but different length is not a duplicate.
        assert_eq!(out_of_order(s.check(&b(3, 10, 1))), (12, 10));
    }

    #[test]
    fn gaps_and_going_back_are_out_of_order() {
        let mut s = ProducerStates::new(10);
        append(&mut s, b(0, 0, 5), 0, 5);
        assert_eq!(out_of_order(s.check(&b(0, 6, 1))), (5, 6));
        assert_eq!(out_of_order(s.check(&b(0, 4, 1))), (5, 4));
        assert_eq!(out_of_order(s.check(&b(0, 1, 1))), (5, 1));
        assert_eq!(s.check(&b(0, 5, 1)).unwrap(), Decision::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
        let mut s = ProducerStates::new(10);
        // Records i32::MAX-1, i32::MAX, 0: last sequence 0.
        let first = b(0, i32::MAX - 1, 3);
        assert_eq!(first.last_seq, 0);
        let at = append(&mut s, first, 0, 3);
        assert_eq!(out_of_order(s.check(&b(0, 3, 1))), (1, 3));
        append(&mut s, b(0, 1, 1), at, 1);
        // The wrapped batch is still recognised as a duplicate.
        assert!(matches!(s.check(&first).unwrap(), Decision::Duplicate(m) if m.base_offset == 0));
        // A batch ending exactly at i32::MAX is followed by 0.
        let mut s = ProducerStates::new(10);
        append(&mut s, b(0, i32::MAX - 1, 2), 0, 2);
        assert_eq!(s.check(&b(0, 0, 1)).unwrap(), Decision::Append);
        assert_eq!(out_of_order(s.check(&b(0, 1, 1))), (0, 1));
    }

    #[test]
    fn a_lower_epoch_is_fenced() {
        let mut s = ProducerStates::new(10);
        append(&mut s, b(5, 0, 1), 0, 1);
        match s.check(&b(4, 1, 1)) {
            Err(StorageError::ProducerFenced { producer_id: PID, epoch: 4, current: 5 }) => {}
            other => panic!("expected fenced, got {other:?}"),
        }
        // Even a batch that equals a remembered one of the current epoch.
        assert!(matches!(s.check(&b(4, 0, 1)), Err(StorageError::ProducerFenced { .. })));
    }

    #[test]
    fn a_new_epoch_starts_from_zero_and_forgets_the_old_batches() {
        let mut s = ProducerStates::new(10);
        let at = append(&mut s, b(1, 0, 4), 0, 4);
        assert_eq!(out_of_order(s.check(&b(2, 4, 1))), (0, 4));
        let at = append(&mut s, b(2, 0, 1), at, 1);
        let e = s.get(PID).unwrap();
        assert_eq!((e.epoch, e.batches.len(), e.last().last_seq), (2, 1, 0));
        // The old epoch's batch is now fenced rather than a duplicate.
        assert!(matches!(s.check(&b(1, 0, 4)), Err(StorageError::ProducerFenced { .. })));
        append(&mut s, b(2, 1, 1), at, 1);
    }

    #[test]
    fn an_unknown_producer_is_accepted_with_any_sequence() {
        let mut s = ProducerStates::new(10);
        let at = append(&mut s, b(3, 1_000, 2), 50, 2);
        assert_eq!(s.get(PID).unwrap().last().last_seq, 1_001);
        append(&mut s, b(3, 1_002, 1), at, 1);
        // Another producer is independent.
        let other = IdempotentBatch::new(8, 0, 77, 0, false).unwrap();
        assert_eq!(s.check(&other).unwrap(), Decision::Append);
    }

    #[test]
    fn truncation_forgets_batches_past_the_cut() {
        let mut s = ProducerStates::new(10);
        let mut at = 0;
        for i in 0..3 {
            at = append(&mut s, b(0, i, 1), at, 1);
        }
        s.record(9, 0, BatchMeta { first_seq: 0, last_seq: 0, base_offset: 3, last_offset: 3, timestamp: 0 });
        s.truncate(2);
        assert_eq!(s.get(PID).unwrap().last().last_seq, 1);
        assert!(s.get(9).is_none(), "a producer with nothing left is forgotten");
        // The truncated batch's retry appends again.
        assert_eq!(s.check(&b(0, 2, 1)).unwrap(), Decision::Append);
    }

    #[test]
    fn expiration_and_the_producer_bound() {
        let mut s = ProducerStates::new(3);
        for pid in 0..3 {
            s.record(
                pid,
                0,
                BatchMeta { first_seq: 0, last_seq: 0, base_offset: 0, last_offset: 0, timestamp: 10 + pid },
            );
        }
        // Full: a fourth producer evicts the one whose last batch is oldest (pid 0).
        s.record(3, 0, BatchMeta { first_seq: 0, last_seq: 0, base_offset: 1, last_offset: 1, timestamp: 5 });
        assert_eq!(s.len(), 3);
        assert!(s.get(0).is_none() && s.get(3).is_some());
        s.expire(1_011, 1_000);
        let mut left: Vec<i64> = s.producers.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, vec![2], "timestamps 5, 11 are 1000 ms old or more; 12 is not");
    }

    #[test]
    fn snapshot_roundtrip_and_damage() {
        let mut s = ProducerStates::new(100);
        let mut at = 0;
        for i in 0..7 {
            at = append(&mut s, b(2, i * 3, 3), at, 3);
        }
        s.record(5, 1, BatchMeta { first_seq: 9, last_seq: 9, base_offset: at, last_offset: at, timestamp: -1 });
        let bytes = s.encode(at + 1);
        let (covers, back) = ProducerStates::decode(&bytes, 100).expect("decodes");
        assert_eq!(covers, at + 1);
        assert_eq!(back, s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(ProducerStates::decode(&bad, 100).is_none(), "flip at {i}");
        }
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 1], 100).is_none());
        let empty = ProducerStates::new(100).encode(0);
        assert_eq!(ProducerStates::decode(&empty, 100), Some((0, ProducerStates::new(100))));
    }
}
