//! Model-based property test: random sequences of append / read / roll / truncate / delete-records /
//! retention / compaction / clean restart / power loss run against the real log on the simulated
//! disk, and after every step the log is compared with a simple in-memory model.
//!
//! The model is a list of batches (base, last, records); compaction and retention are applied to
//! it by their documented rules, not by calling the log's code. Some batches come from idempotent
//! producers, and retries of them must be answered as duplicates while the batch is in the log,
//! and appended again once a truncation or power loss removed it. The seed of a failing case is
//! printed by proptest (and persisted under `proptest-regressions/`).

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use keel_storage::{
    batch::{set_base_offset, set_partition_leader_epoch, BatchBuilder, BatchView, Compression},
    io::{
        sim::{SimClock, SimDisk},
        Clock,
    },
    AppendInfo, CleanupPolicy, FsyncPolicy, Log, LogConfig, StorageError,
};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    ts: i64,
}

#[derive(Clone, Debug)]
struct ModelBatch {
    base: u64,
    last: u64,
    records: BTreeMap<u64, Rec>,
    /// Codec the producer used; compaction keeps it when it rebuilds the batch.
    codec: Compression,
    /// The batch's maxTimestamp: the largest record timestamp, recomputed when compaction rebuilds.
    max_ts: i64,
    /// Exact stored bytes while compaction has not touched the batch.
    bytes: Option<Vec<u8>>,
}

#[derive(Default, Debug)]
struct Model {
    batches: Vec<ModelBatch>,
    log_start: u64,
    log_end: u64,
    /// Batches sent by idempotent producers (one producer id each), for retries.
    sent: Vec<Sent>,
}

/// An idempotent producer's batch as sent, and where the log put it.
#[derive(Clone, Debug)]
struct Sent {
    bytes: Vec<u8>,
    term: u32,
    recs: Vec<Rec>,
    codec: Compression,
    ts: i64,
    base: u64,
    last: u64,
    /// Removed by a truncation or lost in a power loss: the log must not remember it.
    lost: bool,
}

#[derive(Clone, Debug)]
enum Op {
    /// `producer`: sent by a new idempotent producer (its own id, first sequence `seq`).
    Append {
        records: Vec<(Option<u8>, bool, u16)>,
        term: u32,
        codec: Compression,
        producer: Option<u16>,
    },
    /// An idempotent producer resends one of its batches (picked by `pick`).
    Retry {
        pick: u16,
    },
    Read {
        at: u16,
        max_bytes: u16,
    },
    Roll,
    Truncate {
        at: u16,
    },
    AdvanceStart {
        at: u16,
    },
    Retention {
        advance_ms: u32,
    },
    Compact {
        advance_ms: u32,
    },
    Restart,
    Crash,
    TimestampLookup {
        at: u16,
    },
}

/// Mostly uncompressed, as the log's other paths care about; each codec now and then.
fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        4 => Just(Compression::None),
        1 => Just(Compression::Gzip),
        1 => Just(Compression::Snappy),
        1 => Just(Compression::Lz4),
        1 => Just(Compression::Zstd),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let record = (proptest::option::weighted(0.9, 0u8..6), proptest::bool::weighted(0.15), 0u16..400);
    prop_oneof![
        10 => (proptest::collection::vec(record, 1..6), 0u32..4, codec(), proptest::option::weighted(0.3, any::<u16>()))
            .prop_map(|(records, term, codec, producer)| Op::Append { records, term, codec, producer }),
        2 => any::<u16>().prop_map(|pick| Op::Retry { pick }),
        3 => (any::<u16>(), 1u16..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::AdvanceStart { at }),
        1 => (0u32..200_000).prop_map(|advance_ms| Op::Retention { advance_ms }),
        2 => (0u32..200_000).prop_map(|advance_ms| Op::Compact { advance_ms }),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => any::<u16>().prop_map(|at| Op::TimestampLookup { at }),
    ]
}

fn config(policy: CleanupPolicy, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        index_interval_bytes: 300,
        write_bytes: 8192,
        writes_in_flight: 2,
        tail_cache_bytes: 4096,
        preallocate_bytes: 4096,
        fsync,
        cleanup_policy: policy,
        retention_ms: Some(100_000),
        retention_bytes: Some(12_000),
        delete_retention_ms: 50_000,
        ..LogConfig::default()
    }
}

struct Harness {
    disk: SimDisk,
    clock: SimClock,
    config: LogConfig,
    log: Option<SimLog>,
    model: Model,
    counter: u64,
}

impl Harness {
    fn log(&self) -> &SimLog {
        self.log.as_ref().expect("open")
    }

    fn reopen(&mut self) {
        let (log, _) =
            block_on(Log::open(self.disk.dir("p0"), self.clock.clone(), self.config.clone())).expect("reopen");
        self.log = Some(log);
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append { records, term, codec, producer } => {
                self.clock.advance(10);
                let ts = self.clock.now_ms();
                let mut builder = BatchBuilder::new().compression(codec);
                if let Some(seq) = producer {
                    // A new producer id each time: an unknown producer starts at any sequence.
                    builder = builder.producer(5_000 + self.model.sent.len() as i64, 0, i32::from(seq));
                }
                let mut recs = Vec::new();
                for (i, (key, tombstone, len)) in records.into_iter().enumerate() {
                    self.counter += 1;
                    let key = key.map(|k| vec![b'k', k]);
                    let value = (!tombstone).then(|| {
                        let mut v = format!("value-{}", self.counter).into_bytes();
                        v.resize(len as usize + v.len(), b'x');
                        v
                    });
                    let rec_ts = ts + i as i64;
                    builder.push(rec_ts, key.as_deref(), value.as_deref(), &[(b"h", Some(b"1"))]);
                    recs.push(Rec { key, value, ts: rec_ts });
                }
                let bytes = builder.build();
                let info = block_on(self.log().append(&bytes, term))
                    .map_err(|e| TestCaseError::fail(format!("append: {e}")))?;
                prop_assert!(!info.duplicate);
                if producer.is_some() {
                    let (base, last) = (info.base_offset, info.last_offset);
                    let sent =
                        Sent { bytes: bytes.clone(), term, recs: recs.clone(), codec, ts, base, last, lost: false };
                    self.model.sent.push(sent);
                }
                self.push_appended(info, bytes, term, recs, codec, ts)?;
            }
            Op::Retry { pick } => {
                if self.model.sent.is_empty() {
                    return Ok(());
                }
                let i = pick as usize % self.model.sent.len();
                let sent = self.model.sent[i].clone();
                let in_log = !sent.lost && self.model.batches.iter().any(|b| b.base == sent.base);
                let info = block_on(self.log().append(&sent.bytes, sent.term))
                    .map_err(|e| TestCaseError::fail(format!("retry of {}: {e}", sent.base)))?;
                // In the log: a duplicate. Truncated or lost: appended again. Emptied by
                // compaction or deleted by retention: either (the log may still remember it).
                if in_log || (!sent.lost && info.duplicate) {
                    prop_assert!(info.duplicate, "retry of the batch at {} is a duplicate", sent.base);
                    prop_assert_eq!((info.base_offset, info.last_offset), (sent.base, sent.last));
                } else {
                    prop_assert!(!info.duplicate, "the batch at {} is gone: its retry appends", sent.base);
                    let s = &mut self.model.sent[i];
                    (s.base, s.last, s.lost) = (info.base_offset, info.last_offset, false);
                    self.push_appended(info, sent.bytes, sent.term, sent.recs, sent.codec, sent.ts)?;
                }
            }
            Op::Read { at, max_bytes } => {
                let span = self.model.log_end - self.model.log_start + 1;
                let from = self.model.log_start + u64::from(at) % span;
                let read = block_on(self.log().read(from, max_bytes as usize))
                    .map_err(|e| TestCaseError::fail(format!("read {from}: {e}")))?;
                let got = split(&read.bytes);
                let expected: Vec<&ModelBatch> = self.model.batches.iter().filter(|b| b.last >= from).collect();
                if expected.is_empty() {
                    prop_assert!(got.is_empty());
                } else {
                    prop_assert!(!got.is_empty(), "read from {} returned nothing", from);
                    prop_assert!(got.len() == 1 || read.bytes.len() <= max_bytes as usize);
                    for (g, m) in got.iter().zip(expected.iter()) {
                        check_batch(g, m)?;
                    }
                    prop_assert!(got.len() <= expected.len());
                    prop_assert_eq!(read.next_offset, got.last().unwrap().1 + 1);
                }
            }
            Op::Roll => block_on(self.log().roll()).map_err(|e| TestCaseError::fail(format!("roll: {e}")))?,
            Op::Truncate { at } => {
                let candidates: Vec<u64> =
                    self.model.batches.iter().map(|b| b.base).filter(|&b| b >= self.model.log_start).collect();
                if candidates.is_empty() {
                    return Ok(());
                }
                let new_end = candidates[at as usize % candidates.len()];
                block_on(self.log().truncate_suffix(new_end))
                    .map_err(|e| TestCaseError::fail(format!("truncate {new_end}: {e}")))?;
                self.model.batches.retain(|b| b.base < new_end);
                self.model.log_end = new_end;
                self.model.sent.iter_mut().filter(|s| s.base >= new_end).for_each(|s| s.lost = true);
            }
            Op::AdvanceStart { at } => {
                let span = self.model.log_end - self.model.log_start + 1;
                let to = self.model.log_start + u64::from(at) % span;
                block_on(self.log().advance_log_start(to))
                    .map_err(|e| TestCaseError::fail(format!("advance start: {e}")))?;
                self.model.log_start = to;
                self.model.batches.retain(|b| b.last >= to);
            }
            Op::Retention { advance_ms } => {
                self.clock.advance(i64::from(advance_ms));
                let before = self.model.log_start;
                let bases = self.log().segment_bases();
                let out = block_on(self.log().enforce_retention())
                    .map_err(|e| TestCaseError::fail(format!("retention: {e}")))?;
                prop_assert!(out.log_start >= before);
                if out.log_start > before {
                    prop_assert!(bases.contains(&out.log_start), "log start {} is not a segment base", out.log_start);
                    prop_assert!(out.log_start <= *bases.last().unwrap());
                    self.model.log_start = out.log_start;
                    // Whole segments go: a batch is either wholly kept or wholly gone.
                    self.model.batches.retain(|b| b.base >= out.log_start);
                }
            }
            Op::Compact { advance_ms } => {
                self.clock.advance(i64::from(advance_ms));
                let active = self.log().active_segment_base();
                block_on(self.log().compact()).map_err(|e| TestCaseError::fail(format!("compact: {e}")))?;
                self.model_compact(active);
            }
            Op::Restart => {
                let log = self.log.take().unwrap();
                block_on(log.close()).map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
                self.reopen();
            }
            Op::Crash => {
                let durable = self.log().offsets().flushed_end;
                drop(self.log.take());
                self.disk.crash();
                self.reopen();
                // Whatever was durable survives; anything after it may be lost, but only as a
                // suffix: the log is a prefix of the model.
                let end = self.log().offsets().log_end;
                prop_assert!(end >= durable, "lost durable data: log end {} < flushed {}", end, durable);
                self.model.batches.retain(|b| b.last < end);
                self.model.log_end = end;
                self.model.sent.iter_mut().filter(|s| s.last >= end).for_each(|s| s.lost = true);
            }
            Op::TimestampLookup { at } => {
                let all: Vec<(u64, i64)> =
                    self.model.batches.iter().flat_map(|b| b.records.iter().map(|(o, r)| (*o, r.ts))).collect();
                let ts = all.get(at as usize % all.len().max(1)).map(|x| x.1).unwrap_or(0) + i64::from(at % 3) - 1;
                // A compressed batch is not opened: its first offset the log serves answers when
                // its maxTimestamp reaches `ts`.
                let start = self.model.log_start;
                let expected =
                    self.model.batches.iter().filter(|b| b.last >= start).find_map(|b| {
                        b.records.iter().find(|(o, r)| **o >= start && r.ts >= ts).map(|(o, r)| (*o, r.ts))
                    });
                let got = block_on(self.log().offset_for_timestamp(ts))
                    .map_err(|e| TestCaseError::fail(format!("ts lookup: {e}")))?;
                prop_assert_eq!(got, expected, "timestamp {}", ts);
            }
        }
        self.check_whole_log()
    }

    /// Adds a batch the log just appended to the model.
    fn push_appended(
        &mut self,
        info: AppendInfo,
        bytes: Vec<u8>,
        term: u32,
        recs: Vec<Rec>,
        codec: Compression,
        ts: i64,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(info.base_offset, self.model.log_end);
        let mut stored = bytes;
        set_base_offset(&mut stored, info.base_offset as i64);
        set_partition_leader_epoch(&mut stored, term as i32);
        let base = info.base_offset;
        self.model.batches.push(ModelBatch {
            base,
            last: info.last_offset,
            max_ts: recs.iter().map(|r| r.ts).max().unwrap_or(ts),
            records: recs.into_iter().enumerate().map(|(i, r)| (base + i as u64, r)).collect(),
            codec,
            bytes: Some(stored),
        });
        self.model.log_end = info.last_offset + 1;
        Ok(())
    }

    /// Applies compaction's documented rule to the model: in batches below the active segment,
    /// keep only the latest record per key (latest below the active segment); drop tombstones
    /// older than delete.retention.ms; drop batches left empty.
    fn model_compact(&mut self, active_base: u64) {
        if !self.config.cleanup_policy.compacts() {
            return;
        }
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for b in self.model.batches.iter().filter(|b| b.base < active_base) {
            for (o, r) in &b.records {
                if let Some(k) = &r.key {
                    latest.insert(k.clone(), *o);
                }
            }
        }
        let horizon = self.clock.now_ms() - self.config.delete_retention_ms;
        for b in self.model.batches.iter_mut().filter(|b| b.base < active_base) {
            let before = b.records.len();
            b.records.retain(|o, r| match &r.key {
                None => true,
                Some(k) => latest[k] == *o && !(r.value.is_none() && r.ts < horizon),
            });
            if b.records.len() != before {
                b.bytes = None;
                b.max_ts = b.records.values().map(|r| r.ts).max().unwrap_or(b.max_ts);
            }
        }
        self.model.batches.retain(|b| !b.records.is_empty());
    }

    fn check_whole_log(&self) -> Result<(), TestCaseError> {
        let offsets = self.log().offsets();
        prop_assert_eq!(offsets.log_start, self.model.log_start);
        prop_assert_eq!(offsets.log_end, self.model.log_end);
        prop_assert_eq!(offsets.written_end, self.model.log_end);
        if self.config.fsync == FsyncPolicy::Always {
            prop_assert_eq!(
                offsets.flushed_end,
                self.model.log_end,
                "fsync=always: everything acknowledged is durable"
            );
        }
        let all = read_all(self.log());
        prop_assert_eq!(all.len(), self.model.batches.len(), "batches in log vs model");
        for (g, m) in all.iter().zip(&self.model.batches) {
            check_batch(g, m)?;
        }
        Ok(())
    }
}

fn check_batch(got: &(u64, u64, Vec<u8>), want: &ModelBatch) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.0, want.base);
    prop_assert_eq!(got.1, want.last);
    if let Some(bytes) = &want.bytes {
        prop_assert!(&got.2 == bytes, "batch {} not byte-identical", want.base);
    }
    let view = BatchView::parse(&got.2).unwrap();
    prop_assert_eq!(view.compression(), want.codec, "codec of batch {}", want.base);
    let section = view.decompressed_records().unwrap();
    let recs: BTreeMap<u64, Rec> = section
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r.offset(view.base_offset()) as u64,
                Rec {
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    ts: r.timestamp(view.base_timestamp()),
                },
            )
        })
        .collect();
    prop_assert_eq!(&recs, &want.records, "records of batch {}", want.base);
    Ok(())
}

fn run(seed: u64, policy: CleanupPolicy, fsync: FsyncPolicy, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let disk = SimDisk::new(seed);
    let clock = SimClock::new(1_000_000);
    let config = config(policy, fsync);
    let mut h = Harness { disk, clock, config, log: None, model: Model::default(), counter: 0 };
    h.reopen();
    for op in ops {
        h.apply(op)?;
    }
    Ok(())
}

/// Cases per property: `KEEL_MODEL_CASES` (the torture target raises it), else 300.
fn cases() -> u32 {
    std::env::var("KEEL_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_delete_policy(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        run(seed, CleanupPolicy::Delete, FsyncPolicy::Always, ops)?;
    }

    #[test]
    fn log_matches_model_compact_policy(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        run(seed, CleanupPolicy::Compact, FsyncPolicy::Always, ops)?;
    }

    /// fsync=never: a power loss may drop a suffix of what was written (never a middle part,
    /// never a torn batch served), and never what a seal or clean close made durable.
    #[test]
    fn log_matches_model_without_fsync(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        run(seed, CleanupPolicy::CompactDelete, FsyncPolicy::Never, ops)?;
    }
}

#[test]
fn not_a_batch_boundary_is_refused() {
    let disk = SimDisk::new(9);
    let clock = SimClock::new(0);
    let log = open(&disk, &clock, config(CleanupPolicy::Delete, FsyncPolicy::Always));
    block_on(log.append(&batch(0, 5, 5, 10, 0), 0)).unwrap();
    block_on(log.append(&batch(1, 5, 5, 10, 0), 0)).unwrap();
    assert!(matches!(block_on(log.truncate_suffix(3)), Err(StorageError::NotBatchBoundary { offset: 3 })));
    block_on(log.truncate_suffix(5)).unwrap();
    assert_eq!(log.offsets().log_end, 5);
}
