//! One consumer thread: its own connection, long-poll Fetches over its share of the partitions.
//!
//! In `consume` it only counts. In `e2e` it also checks what it reads: each record of this run
//! (recognised by the run id in its stamp) is marked in a bitmap per (producer, partition) by its
//! sequence number, so a record read twice is a duplicate, one read after a later sequence number
//! of the same producer and partition is out of order, and one never read is missing (decided at
//! the end against what producers had acknowledged). The offsets read from each partition must be
//! dense, and the sum of the offsets of each (producer, partition)'s records is compared with the
//! offsets the broker acknowledged. End-to-end latency: the moment the Fetch response carrying a
//! record was decoded minus the record's intended send time (its stamp).
//!
//! With a consumer group on kafka:// (`--group`), librdkafka assigns the partitions and moves
//! them on a rebalance; the new owner resumes at the last committed offset, so records may be
//! read twice. Every consumer then tracks every partition: a record its own bitmap already has is
//! redelivered (not a duplicate), records read by several consumers are merged at the end (see
//! `verify`), and offset gaps are not counted. A record never read, or read after a later one
//! of its (producer, partition) by the same consumer without having been read before, still
//! fails the run.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use keel_client::{Consumer, ConsumerConfig, OffsetQuery, StartAt};

use super::{
    args::{Target, Topics},
    kafka::KafkaSource,
    shared::{self, Clock, SecondRecorder, Shared, Stamp, DRAIN_LIMIT},
};
use crate::report;

/// Longest a Fetch waits in the broker for data.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Sequence numbers above this are not from a producer of this run (a corrupt stamp).
const MAX_SEQ: u64 = 1 << 36;
/// How often a keel:// group consumer commits its positions.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// A kafka:// group consumer stops once the producers are done, the consumers together have read
/// as many records as were sent, and it has read nothing for this long: which partitions are
/// whose is the group's business, so it cannot tell what it still owes by itself.
const GROUP_IDLE: Duration = Duration::from_secs(2);

pub enum Mode {
    /// `consume`: count until the end of the schedule or, if asked, until caught up with the high
    /// watermarks seen at setup.
    Throughput { stop_when_caught_up: bool },
    /// `e2e`: check this run's records; stop once every record the producers sent to these
    /// partitions was read, or [`DRAIN_LIMIT`] after the last producer finished.
    Verify { run_id: u64, producers: u32 },
}

/// A record as the checks see it, from either protocol.
pub struct Rec {
    /// Numbered across topics ([`Topics`]).
    pub partition: u32,
    pub offset: u64,
    /// Value + key bytes.
    pub bytes: u64,
    pub stamp: Option<Stamp>,
}

/// Where records come from: a native `keel-client` consumer or a librdkafka one.
enum Source {
    Native(NativeSource),
    Kafka(KafkaSource),
}

/// A `keel-client` consumer of every topic this consumer reads, with the global numbers of
/// its partitions.
struct NativeSource {
    consumer: Consumer,
    layout: Topics,
    /// (global partition, next offset), in the order of the plan's partitions.
    positions: Vec<(u32, u64)>,
    /// Index in `positions` of the consumer's i-th position (it keeps them topic by topic).
    order: Vec<usize>,
}

impl NativeSource {
    fn poll(&mut self, wait: Duration, out: &mut Vec<Rec>) -> Result<(), String> {
        let records = self.consumer.poll(wait).map_err(|e| format!("Fetch failed: {e}"))?;
        // Records come in runs of one topic: look its index up once per run.
        let mut last: Option<(&Arc<str>, usize)> = None;
        for r in &records {
            let t = match last {
                Some((name, t)) if Arc::ptr_eq(name, &r.topic) => t,
                _ => {
                    let t = self.layout.index_of(&r.topic).ok_or("Fetch returned a topic not asked for")?;
                    last = Some((&r.topic, t));
                    t
                }
            };
            out.push(Rec {
                partition: self.layout.global(t, r.partition),
                offset: r.offset,
                bytes: (r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len())) as u64,
                stamp: r.value.as_deref().and_then(Stamp::decode),
            });
        }
        for (&(_, offset), &i) in self.consumer.positions().iter().zip(&self.order) {
            self.positions[i].1 = offset;
        }
        Ok(())
    }

    /// Commits every position to `group`, topic by topic.
    fn commit(&mut self, group: &str) -> Result<(), String> {
        let mut commits = Vec::new();
        for (topic, positions) in self.consumer.topic_positions() {
            commits.push((topic.to_owned(), positions.to_vec()));
        }
        for (topic, positions) in commits {
            self.consumer
                .client()
                .commit_offsets(group, &topic, &positions)
                .map_err(|e| format!("cannot commit to group {group}: {e}"))?;
        }
        Ok(())
    }
}

impl Source {
    fn poll(&mut self, wait: Duration, out: &mut Vec<Rec>) -> Result<(), String> {
        match self {
            Source::Native(source) => source.poll(wait, out),
            Source::Kafka(source) => source.poll(wait, out),
        }
    }

    fn positions(&self) -> &[(u32, u64)] {
        match self {
            Source::Native(source) => &source.positions,
            Source::Kafka(source) => source.positions(),
        }
    }

    /// Commits the positions to `group` (keel://; librdkafka commits a group's offsets itself).
    fn commit(&mut self, group: &str) -> Result<(), String> {
        match self {
            Source::Native(source) => source.commit(group),
            Source::Kafka(_) => Ok(()),
        }
    }

    /// Stops (`false`) or restarts fetching. The native consumer only fetches inside `poll`;
    /// librdkafka prefetches in the background, so it is paused explicitly.
    fn set_fetching(&mut self, on: bool) -> Result<(), String> {
        match self {
            Source::Native(_) => Ok(()),
            Source::Kafka(source) => source.set_fetching(on),
        }
    }
}

pub struct ConsumerPlan {
    pub id: u32,
    pub target: Target,
    /// The topics; partitions are numbered across them ([`Topics`]).
    pub topics: Topics,
    /// The partitions this consumer reads.
    pub partitions: Vec<u32>,
    pub start: StartAt,
    pub fetch_max_bytes: u32,
    pub mode: Mode,
    /// Read nothing from `start` to `end` after t0 (a backlog builds up, then is caught up
    /// with): the catch-up read's pause, phases that pause the consumers.
    pub pauses: Vec<(Duration, Duration)>,
    /// Consume as this consumer group (kafka://: subscribed, `partitions` = all of them).
    pub group: Option<String>,
}

/// What one (producer, partition) pair's records looked like to the consumer.
#[derive(Debug, Clone, Default)]
pub struct SeenPair {
    /// Bit `seq` is set once the record with that sequence number was read.
    pub bits: Vec<u64>,
    /// Distinct records read and the sum of their offsets (wrapping).
    pub distinct: u64,
    pub offset_sum: u64,
    /// One past the highest sequence number read.
    next_seq: u64,
}

impl SeenPair {
    /// Marks sequence number `seq` read at `offset`; false if it had been read already.
    pub fn mark(&mut self, seq: u64, offset: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits.len() <= word {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.distinct += 1;
        self.offset_sum = self.offset_sum.wrapping_add(offset);
        true
    }

    /// What several consumers read of one pair, each record once. The offset sum is only
    /// meaningful if at most one of them read anything.
    pub fn merge(pairs: &[&SeenPair]) -> SeenPair {
        let words = pairs.iter().map(|s| s.bits.len()).max().unwrap_or(0);
        let mut bits = vec![0u64; words];
        for s in pairs {
            for (w, b) in bits.iter_mut().zip(&s.bits) {
                *w |= b;
            }
        }
        let distinct = bits.iter().map(|w| u64::from(w.count_ones())).sum();
        let readers: Vec<_> = pairs.iter().filter(|s| s.distinct > 0).collect();
        let offset_sum = if readers.len() == 1 { readers[0].offset_sum } else { 0 };
        SeenPair { bits, distinct, offset_sum, next_seq: 0 }
    }

    /// Distinct records read with a sequence number below `n`.
    pub fn count_below(&self, n: u64) -> u64 {
        let full = (n / 64) as usize;
        let mut count: u64 = self.bits.iter().take(full).map(|w| u64::from(w.count_ones())).sum();
        if let Some(w) = self.bits.get(full) {
            let rest = n % 64;
            if rest > 0 {
                count += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        count
    }
}

pub struct ConsumerTally {
    pub partitions: Vec<u32>,
    /// End-to-end latency of this run's records intended in the measurement window, µs.
    pub e2e_latency: Histogram<u64>,
    /// The current second's end-to-end latencies (every record of this run).
    pub seconds: SecondRecorder,
    /// Every record read, and its value+key bytes.
    pub records: u64,
    pub bytes: u64,
    /// Records read within the measurement window, and their value+key bytes.
    pub window_records: u64,
    pub window_bytes: u64,
    /// Records of this run (e2e), duplicates included.
    pub run_records: u64,
    /// Records without this run's stamp (e2e).
    pub foreign: u64,
    pub duplicates: u64,
    /// Group consumers: records read again after a rebalance (not counted as duplicates).
    pub redelivered: u64,
    pub out_of_order: u64,
    /// Records whose offset is not one past the previous record read from its partition.
    pub offset_gaps: u64,
    /// When this consumer had read up to the high watermarks seen at setup.
    pub caught_up_at: Option<Instant>,
    /// Indexed by `producer * partitions.len() + i` for the i-th partition of this consumer.
    pub seen: Vec<SeenPair>,
}

impl ConsumerTally {
    /// Nothing read yet of `partitions`, written by `producers` producers of this run.
    pub fn new(partitions: Vec<u32>, producers: usize) -> ConsumerTally {
        ConsumerTally {
            seen: vec![SeenPair::default(); producers * partitions.len()],
            partitions,
            e2e_latency: report::latency_histogram(),
            seconds: SecondRecorder::default(),
            records: 0,
            bytes: 0,
            window_records: 0,
            window_bytes: 0,
            run_records: 0,
            foreign: 0,
            duplicates: 0,
            redelivered: 0,
            out_of_order: 0,
            offset_gaps: 0,
            caught_up_at: None,
        }
    }
}

pub fn run(plan: ConsumerPlan, shared: Arc<Shared>) -> ConsumerTally {
    let producers = match plan.mode {
        Mode::Verify { producers, .. } => producers as usize,
        Mode::Throughput { .. } => 0,
    };
    let mut tally = ConsumerTally::new(plan.partitions.clone(), producers);
    let setup = setup(&plan);
    if let Err(e) = &setup {
        shared.fail(format!("consumer {}: {e}", plan.id));
    }
    let clock = shared.wait_start();
    if let (Ok((consumer, high_watermarks)), Some(clock)) = (setup, clock) {
        let mut reader = Reader::new(&plan, &shared, clock, high_watermarks);
        if let Err(e) = reader.read(consumer, &mut tally) {
            shared.fail(format!("consumer {}: {e}", plan.id));
        }
    }
    tally.seconds.flush(&shared.e2e_by_second);
    tally
}

/// Connects and resolves the start positions (before the clock starts: e2e consumers must be
/// positioned at the end before the first record is produced). Also returns the high
/// watermarks at that moment.
fn setup(plan: &ConsumerPlan) -> Result<(Source, Vec<u64>), String> {
    if let (true, Some(group)) = (plan.target.is_kafka(), &plan.group) {
        let source = KafkaSource::subscribe(
            &plan.target,
            &format!("keel-bench-consumer-{}", plan.id),
            &plan.topics,
            group,
            plan.fetch_max_bytes,
        )?;
        return Ok((Source::Kafka(source), Vec::new()));
    }
    if plan.target.is_kafka() {
        let (source, high_watermarks) = KafkaSource::open(
            &plan.target,
            &format!("keel-bench-consumer-{}", plan.id),
            &plan.topics,
            &plan.partitions,
            plan.start == StartAt::Earliest,
            plan.fetch_max_bytes,
        )?;
        return Ok((Source::Kafka(source), high_watermarks));
    }
    let client = shared::connect(&plan.target, &format!("keel-bench-consumer-{}", plan.id))?;
    let config = ConsumerConfig {
        max_bytes: plan.fetch_max_bytes,
        partition_max_bytes: plan.fetch_max_bytes.min(ConsumerConfig::default().partition_max_bytes),
    };
    let layout = &plan.topics;
    // Each topic's partitions, with their index in the plan's order (the consumer keeps its
    // positions topic by topic; the plan's order may differ).
    let by_topic = layout.group(plan.partitions.iter().copied().zip(0..));
    let partitions_of = |ps: &[(u32, usize)]| ps.iter().map(|p| p.0).collect::<Vec<u32>>();
    let topics = by_topic.iter().map(|(t, ps)| (layout.names()[*t].clone(), Some(partitions_of(ps)))).collect();
    let mut consumer = Consumer::with_topics(client, topics, plan.start, config)
        .map_err(|e| format!("cannot start reading {}: {e}", layout.names().join(", ")))?;
    let order: Vec<usize> = by_topic.iter().flat_map(|(_, ps)| ps.iter().map(|p| p.1)).collect();
    let mut high_watermarks = vec![0; plan.partitions.len()];
    for (t, ps) in &by_topic {
        let topic = &layout.names()[*t];
        let queries: Vec<_> = ps.iter().map(|&(p, _)| (p, OffsetQuery::Latest)).collect();
        let found = consumer
            .client()
            .list_offsets(topic, &queries)
            .map_err(|e| format!("cannot read the high watermarks of {topic}: {e}"))?;
        for (&(_, i), f) in ps.iter().zip(&found) {
            high_watermarks[i] = f.1.unwrap_or(0);
        }
    }
    let mut positions: Vec<(u32, u64)> = plan.partitions.iter().map(|&g| (g, 0)).collect();
    for (&(_, offset), &i) in consumer.positions().iter().zip(&order) {
        positions[i].1 = offset;
    }
    let source = NativeSource { consumer, layout: layout.clone(), positions, order };
    Ok((Source::Native(source), high_watermarks))
}

struct Reader<'a> {
    plan: &'a ConsumerPlan,
    shared: &'a Shared,
    clock: Clock,
    high_watermarks: Vec<u64>,
    /// Partition → index in `plan.partitions` (`u32::MAX` if not ours).
    local: Vec<u32>,
    last_offset: Vec<Option<u64>>,
    /// Distinct records of this run read per partition (index as `plan.partitions`).
    distinct: Vec<u64>,
}

impl<'a> Reader<'a> {
    fn new(plan: &'a ConsumerPlan, shared: &'a Shared, clock: Clock, high_watermarks: Vec<u64>) -> Reader<'a> {
        let mut local = vec![u32::MAX; plan.topics.total() as usize];
        for (i, &p) in plan.partitions.iter().enumerate() {
            local[p as usize] = i as u32;
        }
        let n = plan.partitions.len();
        Reader { plan, shared, clock, high_watermarks, local, last_offset: vec![None; n], distinct: vec![0; n] }
    }

    fn read(&mut self, mut consumer: Source, tally: &mut ConsumerTally) -> Result<(), String> {
        let mut records = Vec::new();
        let kafka_group = self.plan.target.is_kafka() && self.plan.group.is_some();
        let mut last_commit = Instant::now();
        let mut last_read = Instant::now();
        loop {
            if self.shared.stopped() {
                return Ok(());
            }
            let t0 = self.clock.t0;
            let pause = self.plan.pauses.iter().find(|(from, to)| (t0 + *from..t0 + *to).contains(&Instant::now()));
            if let Some(&(_, to)) = pause {
                consumer.set_fetching(false)?;
                let resume = t0 + to;
                while !self.shared.stopped() && Instant::now() < resume {
                    std::thread::sleep(resume.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
                }
                consumer.set_fetching(true)?;
                continue;
            }
            let now = Instant::now();
            match self.plan.mode {
                Mode::Throughput { stop_when_caught_up } => {
                    if stop_when_caught_up && self.caught_up(consumer.positions()) {
                        tally.caught_up_at = Some(now);
                        return Ok(());
                    }
                    if now >= self.clock.end {
                        return Ok(());
                    }
                }
                Mode::Verify { .. } => {
                    if let Some(done_at) = self.shared.producers_done() {
                        let read_all = if kafka_group {
                            self.shared.consumed_records.load(Ordering::Relaxed) >= self.sent_total()
                                && now.saturating_duration_since(last_read) >= GROUP_IDLE
                        } else {
                            self.all_read()
                        };
                        if read_all || now >= done_at + DRAIN_LIMIT {
                            return Ok(());
                        }
                    }
                }
            }
            if let Some(group) = &self.plan.group {
                if now - last_commit >= COMMIT_INTERVAL {
                    consumer.commit(group)?;
                    last_commit = now;
                }
            }
            records.clear();
            consumer.poll(POLL_WAIT, &mut records)?;
            let seen_at = Instant::now();
            if !records.is_empty() {
                last_read = seen_at;
            }
            let in_window = self.clock.in_window(seen_at);
            let mut bytes = 0u64;
            for r in &records {
                bytes += r.bytes;
                let i = self.local[r.partition as usize] as usize;
                if let Some(last) = self.last_offset[i].filter(|_| !kafka_group) {
                    if r.offset != last + 1 {
                        tally.offset_gaps += 1;
                    }
                }
                self.last_offset[i] = Some(r.offset);
                if let Mode::Verify { run_id, producers } = self.plan.mode {
                    self.check(r.stamp, r.offset, i, run_id, producers, seen_at, tally);
                }
            }
            tally.records += records.len() as u64;
            tally.bytes += bytes;
            if in_window {
                tally.window_records += records.len() as u64;
                tally.window_bytes += bytes;
            }
            self.shared.consumed_records.fetch_add(records.len() as u64, Ordering::Relaxed);
            self.shared.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        stamp: Option<Stamp>,
        offset: u64,
        i: usize,
        run_id: u64,
        producers: u32,
        seen_at: Instant,
        tally: &mut ConsumerTally,
    ) {
        let stamp = match stamp {
            Some(s) if s.run_id == run_id && s.producer < producers && s.seq < MAX_SEQ => s,
            _ => {
                tally.foreign += 1;
                return;
            }
        };
        tally.run_records += 1;
        let pair = &mut tally.seen[stamp.producer as usize * self.plan.partitions.len() + i];
        if pair.mark(stamp.seq, offset) {
            self.distinct[i] += 1;
            if stamp.seq < pair.next_seq {
                tally.out_of_order += 1;
            }
        } else if self.plan.group.is_some() && self.plan.target.is_kafka() {
            tally.redelivered += 1;
        } else {
            tally.duplicates += 1;
        }
        pair.next_seq = pair.next_seq.max(stamp.seq + 1);
        let intended = self.clock.t0 + Duration::from_nanos(stamp.intended_ns);
        let latency = seen_at.saturating_duration_since(intended);
        if self.clock.in_window(intended) {
            report::record_us(&mut tally.e2e_latency, latency);
        }
        tally.seconds.record(&self.shared.e2e_by_second, self.clock.t0, seen_at, latency, 1);
    }

    fn caught_up(&self, positions: &[(u32, u64)]) -> bool {
        positions.iter().zip(&self.high_watermarks).all(|(&(_, at), &hw)| at >= hw)
    }

    /// Records the (finished) producers sent, to every partition.
    fn sent_total(&self) -> u64 {
        self.shared.sent_per_partition.iter().map(|n| n.load(Ordering::SeqCst)).sum()
    }

    /// Every record the (finished) producers sent to our partitions has been read.
    fn all_read(&self) -> bool {
        self.plan
            .partitions
            .iter()
            .zip(&self.distinct)
            .all(|(&p, &read)| read >= self.shared.sent_per_partition[p as usize].load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_bits_below() {
        let s = SeenPair { bits: vec![u64::MAX, 0b1011], ..SeenPair::default() };
        assert_eq!(s.count_below(0), 0);
        assert_eq!(s.count_below(10), 10);
        assert_eq!(s.count_below(64), 64);
        assert_eq!(s.count_below(66), 66);
        assert_eq!(s.count_below(67), 66);
        assert_eq!(s.count_below(1000), 67);
    }
}
