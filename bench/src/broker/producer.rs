//! One producer thread: its own connection, one Produce request in flight at a time.
//!
//! Records are numbered k = 0, 1, 2, ... per producer. Record k goes to partition
//! `(first + k) mod P` (keyless) or to its key's partition (keys cycle through a pool), P and the
//! partitions numbered over every topic of the run ([`Topics`]): one request carries every
//! topic it touches. A request
//! takes the next records in order, as many as are due (open loop) or as fit (closed loop), at
//! most `batch_bytes` per partition and `max_request_bytes` in all, and carries one RecordBatch v2
//! per partition. Each partition's batch is cut from a template encoded once (see [`Template`]):
//! per request only the header, keys, stamps and CRC are written, no record value is copied.
//! With a value size distribution ([`super::sizes`]) the layout changes from request to request,
//! so batches are written record by record with a [`BatchWriter`] instead (one copy of each
//! value). With `--compression`, each finished batch's records section is then compressed
//! ([`batch::compressed`]); the request limits apply to the uncompressed bytes.
//!
//! Open loop: record k's intended send time is `t0 + phase + k / rate`. Its latency is the time
//! its request was acknowledged minus that intended time, whatever delayed the send (the previous
//! request still in flight, a stall in the broker), so a stall counts against every record that
//! should have been sent during it. Records scheduled before the end but still unsent
//! [`DRAIN_LIMIT`] after it are abandoned and recorded with the latency they had reached then (a
//! lower bound). Closed loop: a request goes out as soon as the previous one is answered; latency
//! is acknowledgement minus the moment its bytes were handed to the socket.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use keel_client::{Acks, BatchWriter};
use keel_storage::batch::{self, BatchView, Compression, HEADER_LEN, LOG_OVERHEAD};

use super::{
    args::{Target, Topics},
    kafka_wire::KafkaWire,
    keys::{KeySpec, Keys},
    payload,
    shared::{self, Clock, Schedule, SecondRecorder, Shared, Stamp, DRAIN_LIMIT, STAMP_LEN},
    sizes::{SizeDistribution, Sizes},
};
use crate::report;

/// Bounds on the payload region values are cut from (see [`Generator::payload`]).
const PAYLOAD_REGION_MIN: usize = 64 << 10;
const PAYLOAD_REGION_MAX: usize = 16 << 20;

pub struct ProducerPlan {
    pub id: u32,
    pub target: Target,
    /// The topics; partitions are numbered across them ([`Topics`]).
    pub topics: Topics,
    pub acks: Acks,
    pub batch_bytes: usize,
    pub max_request_bytes: usize,
    pub linger: Duration,
    /// A kafka:// target driven by [`KafkaWire`] instead of librdkafka.
    pub kafka_wire: bool,
    pub value_sizes: SizeDistribution,
    /// Share of the payload that repeats itself (see [`payload`]).
    pub value_compressibility: f64,
    /// Codec of every batch.
    pub compression: Compression,
    /// The keys (`keys.key_bytes` 0: keyless records).
    pub keys: KeySpec,
    /// Records per second of this producer (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// This producer's place among the producers (i / n): its records lag producer 0's by
    /// this share of an interval, so the producers' schedules interleave instead of sending in
    /// lockstep.
    pub share: f64,
    /// A workload with phases: this producer's rate part by part, `(end after t0, records/s)`,
    /// instead of `rate` throughout.
    pub rate_parts: Vec<(Duration, f64)>,
    pub run_id: u64,
    /// Stop once every producer together has this many value+key bytes acknowledged (prefill).
    pub stop_after_bytes: Option<u64>,
    /// Keyless records go round-robin over these partitions only (`--producer-partitions
    /// by-shard`); `None`: over every partition.
    pub own_partitions: Option<Vec<u32>>,
}

impl ProducerPlan {
    /// The open loop's schedule at `rate` (or the rate of each phase).
    pub(super) fn schedule(&self, clock: &Clock, rate: f64) -> Schedule {
        if self.rate_parts.is_empty() {
            Schedule::new(clock, rate, Duration::from_secs_f64(self.share / rate))
        } else {
            Schedule::with_parts(clock, &self.rate_parts, self.share)
        }
    }
}

/// What one producer did.
pub struct ProducerTally {
    /// Acknowledgement latency of records intended (open loop) or sent (closed loop) in the
    /// measurement window, µs. Empty with acks=0.
    pub ack_latency: Histogram<u64>,
    /// The current second's acknowledgement latencies (every record, warmup and drain too).
    pub seconds: SecondRecorder,
    /// Open loop: actual send minus intended send time, µs (how late the schedule ran).
    pub send_delay: Histogram<u64>,
    /// Records written to the socket.
    pub sent: u64,
    /// Records acknowledged (0 with acks=0).
    pub acked: u64,
    /// Records acknowledged (sent, with acks=0) within the measurement window, and their
    /// value+key bytes.
    pub window_records: u64,
    pub window_bytes: u64,
    /// Value+key bytes acknowledged (sent, with acks=0), whole run.
    pub bytes: u64,
    /// Open loop: records scheduled but still unsent at the drain limit.
    pub not_sent: u64,
    pub requests: u64,
    /// Partition batches sent (sum over requests of the partitions in each).
    pub batches: u64,
    /// Per partition: records sent, acknowledged, and the sum of the offsets the broker assigned
    /// them (wrapping), to compare with what consumers read.
    pub per_partition: Vec<PartitionTally>,
    /// Acknowledged base offsets that were not above this producer's previous batch for the
    /// partition.
    pub offset_regressions: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionTally {
    pub sent: u64,
    pub acked: u64,
    pub offset_sum: u64,
    /// One past the last offset acknowledged to this producer.
    pub next_offset: u64,
}

impl ProducerTally {
    pub(super) fn new(partitions: u32) -> ProducerTally {
        ProducerTally {
            ack_latency: report::latency_histogram(),
            seconds: SecondRecorder::default(),
            send_delay: report::latency_histogram(),
            sent: 0,
            acked: 0,
            window_records: 0,
            window_bytes: 0,
            bytes: 0,
            not_sent: 0,
            requests: 0,
            batches: 0,
            per_partition: vec![PartitionTally::default(); partitions as usize],
            offset_regressions: 0,
        }
    }
}

/// Runs one producer to the end of the schedule (or an error, recorded in `shared`).
pub fn run(plan: ProducerPlan, shared: Arc<Shared>) -> ProducerTally {
    if plan.target.is_kafka() && !plan.kafka_wire {
        shared::tighten_timer_slack();
        return super::kafka::run_producer(plan, shared);
    }
    let mut tally = ProducerTally::new(plan.topics.total());
    shared::tighten_timer_slack();
    let client_id = format!("keel-bench-producer-{}", plan.id);
    let client = if plan.kafka_wire {
        KafkaWire::connect(&plan.target, &client_id).map(Connection::Kafka)
    } else {
        shared::connect(&plan.target, &client_id).map(Connection::Keel)
    };
    let client = match client {
        Ok(c) => Some(c),
        Err(e) => {
            shared.fail(e);
            None
        }
    };
    let clock = shared.wait_start();
    if let (Some(client), Some(clock)) = (client, clock) {
        let mut p = Producer { plan: &plan, shared: &shared, client, gen: Generator::new(&plan), clock };
        let result = match plan.rate {
            Some(rate) => p.open_loop(rate, &mut tally),
            None => p.closed_loop(&mut tally),
        };
        if let Err(e) = result {
            shared.fail(format!("producer {}: {e}", plan.id));
        }
    }
    tally.seconds.flush(&shared.ack_by_second);
    let sent: Vec<u64> = tally.per_partition.iter().map(|p| p.sent).collect();
    shared.producer_finished(&sent);
    tally
}

/// Where the requests go: the native protocol, or Kafka's with the same requests.
enum Connection {
    Keel(keel_client::Client),
    Kafka(KafkaWire),
}

impl Connection {
    /// Sends `batches` (global partition of `layout`, batch), sorted by partition, in one
    /// request; answers `(global partition, base offset)` per batch, in order.
    fn produce_many(
        &mut self,
        layout: &Topics,
        batches: Vec<(u32, Bytes)>,
        acks: Acks,
    ) -> Result<Vec<(u32, u64)>, String> {
        let c = match self {
            Connection::Keel(c) => c,
            Connection::Kafka(c) => return c.produce_many(layout, batches, acks),
        };
        let topics = layout.group(batches);
        let order: Vec<usize> = topics.iter().map(|t| t.0).collect();
        let request = topics.into_iter().map(|(t, batches)| (layout.names()[t].clone(), batches)).collect();
        let answered = c.produce_topics(request, acks).map_err(|e| e.to_string())?;
        Ok(order
            .into_iter()
            .zip(answered)
            .flat_map(|(t, offsets)| offsets.into_iter().map(move |(p, base)| (layout.global(t, p), base)))
            .collect())
    }
}

struct Producer<'a> {
    plan: &'a ProducerPlan,
    shared: &'a Shared,
    client: Connection,
    gen: Generator,
    clock: Clock,
}

impl Producer<'_> {
    fn closed_loop(&mut self, tally: &mut ProducerTally) -> Result<(), String> {
        let mut k = 0u64;
        loop {
            if self.shared.closed_loop_done(self.clock.end, self.plan.stop_after_bytes) {
                return Ok(());
            }
            let n = self.gen.plan_request(k, u64::MAX, self.plan);
            let stamp_ns = self.clock.t0.elapsed().as_nanos() as u64;
            let batches = self.gen.encode(k, n, self.plan, |_| stamp_ns);
            let (sent_at, acked_at) = self.send(batches, n, tally)?;
            if self.plan.acks != Acks::None {
                if self.clock.in_window(sent_at) {
                    tally.ack_latency.saturating_record_n(us(acked_at - sent_at), n);
                }
                let seconds = &self.shared.ack_by_second;
                tally.seconds.record(seconds, self.clock.t0, acked_at, acked_at - sent_at, n);
            }
            k += n;
        }
    }

    fn open_loop(&mut self, rate: f64, tally: &mut ProducerTally) -> Result<(), String> {
        let schedule = self.plan.schedule(&self.clock, rate);
        let total = schedule.total;
        let clock = self.clock;
        let intended_ns = |k: u64| schedule.intended_ns(k);
        let intended = |k: u64| schedule.intended(k);
        let fill = self.gen.records_per_full_request(self.plan);
        let drain_deadline = self.clock.end + DRAIN_LIMIT;
        let mut k = 0u64;
        while k < total {
            if self.shared.stopped() {
                return Ok(());
            }
            let now = Instant::now();
            let due_end = schedule.due_end(now);
            if due_end <= k {
                sleep_until(intended(k));
                continue;
            }
            if now >= drain_deadline {
                // Abandoned: each has waited at least this long.
                tally.not_sent = total - k;
                for j in k..total {
                    let t = intended(j);
                    if self.clock.in_window(t) && self.plan.acks != Acks::None {
                        report::record_us(&mut tally.ack_latency, now - t);
                    }
                }
                return Ok(());
            }
            let due = due_end - k;
            if !self.plan.linger.is_zero() && due < fill {
                let hold_until = intended(k) + self.plan.linger;
                if now < hold_until {
                    sleep_until(hold_until.min(intended(k + fill - 1)));
                    continue;
                }
            }
            let n = self.gen.plan_request(k, due, self.plan);
            let batches = self.gen.encode(k, n, self.plan, intended_ns);
            let (sent_at, acked_at) = self.send(batches, n, tally)?;
            for j in k..k + n {
                let t = intended(j);
                if self.plan.acks != Acks::None {
                    let latency = acked_at.saturating_duration_since(t);
                    tally.seconds.record(&self.shared.ack_by_second, clock.t0, acked_at, latency, 1);
                }
                if self.clock.in_window(t) {
                    report::record_us(&mut tally.send_delay, sent_at.saturating_duration_since(t));
                    if self.plan.acks != Acks::None {
                        report::record_us(&mut tally.ack_latency, acked_at.saturating_duration_since(t));
                    }
                }
            }
            k += n;
        }
        // A schedule that ends early (phases at rate 0) still ends with the run.
        self.shared.wait_until(self.clock.end);
        Ok(())
    }

    /// Sends one request of `n` records and accounts for it; returns when its bytes went to the
    /// socket and when it was acknowledged (with acks=0: written).
    fn send(
        &mut self,
        batches: Vec<(u32, Bytes)>,
        n: u64,
        tally: &mut ProducerTally,
    ) -> Result<(Instant, Instant), String> {
        let parts = batches.len();
        let sent_at = Instant::now();
        let offsets = self
            .client
            .produce_many(&self.plan.topics, batches, self.plan.acks)
            .map_err(|e| format!("Produce of {n} records failed: {e}"))?;
        let acked_at = Instant::now();
        tally.requests += 1;
        tally.batches += parts as u64;
        tally.sent += n;
        for &p in &self.gen.touched {
            tally.per_partition[p as usize].sent += u64::from(self.gen.counts[p as usize]);
        }
        if self.plan.acks != Acks::None {
            if offsets.len() != parts {
                return Err(format!("Produce answered {} partitions for {parts}", offsets.len()));
            }
            for (p, base) in offsets {
                let count = u64::from(self.gen.counts[p as usize]);
                let t = &mut tally.per_partition[p as usize];
                if base < t.next_offset {
                    tally.offset_regressions += 1;
                }
                t.next_offset = base + count;
                t.acked += count;
                // Offsets base..base+count-1.
                let sum = base.wrapping_mul(count).wrapping_add(count * count.saturating_sub(1) / 2);
                t.offset_sum = t.offset_sum.wrapping_add(sum);
            }
            tally.acked += n;
        }
        let bytes = self.gen.planned_bytes;
        tally.bytes += bytes;
        if self.clock.in_window(acked_at) {
            tally.window_records += n;
            tally.window_bytes += bytes;
        }
        self.shared.produced_records.fetch_add(n, Ordering::Relaxed);
        self.shared.produced_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok((sent_at, acked_at))
    }
}

/// Prebuilt payload and keys, the partition of each record, and the buffers requests are built
/// in, all reused from request to request.
pub(super) struct Generator {
    /// Random bytes (see [`payload`]): `region` bytes, plus the largest value. Values are cut
    /// from it one after the other, wrapping around at `region`, which is at least a request's
    /// bytes: the values of one batch never overlap, or a codec would find every value in the
    /// one before it and compress far more than the payload's own compressibility.
    payload: Vec<u8>,
    region: usize,
    /// Where the next value starts (variable sizes and the kafka:// producer; a template's
    /// values are laid out once, back to back).
    cursor: usize,
    /// Record k's value size.
    sizes: Sizes,
    /// Writes the batches of variable-size records (fixed sizes use the templates).
    writer: BatchWriter,
    /// The key pool (`None` for keyless records).
    keys: Option<Keys>,
    /// The partitions keyless records go to, round-robin from `first_partition` (an index).
    round_robin: Vec<u32>,
    first_partition: u32,
    /// Next sequence number per partition.
    pub(super) next_seq: Vec<u64>,
    /// Per partition, built when first used.
    templates: Vec<Option<Template>>,
    /// Of the planned request: partition per record, records and bytes per partition, the
    /// partitions touched (sorted after planning), and record indices grouped by partition.
    parts: Vec<u32>,
    counts: Vec<u32>,
    bytes: Vec<usize>,
    touched: Vec<u32>,
    order: Vec<u32>,
    slot: Vec<u32>,
    /// Value+key bytes of the planned request.
    planned_bytes: u64,
}

impl Generator {
    pub(super) fn new(plan: &ProducerPlan) -> Generator {
        let seed = plan.run_id ^ (u64::from(plan.id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let region = plan.max_request_bytes.max(plan.batch_bytes).clamp(PAYLOAD_REGION_MIN, PAYLOAD_REGION_MAX);
        let mut payload = vec![0u8; region + plan.value_sizes.max() as usize];
        payload::fill(&mut payload, seed, plan.value_compressibility);
        let keys = Keys::new(&plan.keys, &plan.topics, seed);
        let partitions = plan.topics.total();
        let p = partitions as usize;
        let round_robin = plan.own_partitions.clone().unwrap_or_else(|| (0..partitions).collect());
        Generator {
            payload,
            region,
            cursor: 0,
            sizes: Sizes::new(&plan.value_sizes, seed),
            writer: BatchWriter::new(),
            keys,
            first_partition: (plan.id * 7919) % round_robin.len() as u32,
            round_robin,
            next_seq: vec![0; p],
            templates: (0..p).map(|_| None).collect(),
            parts: Vec::new(),
            counts: vec![0; p],
            bytes: vec![0; p],
            touched: Vec::new(),
            order: Vec::new(),
            slot: vec![0; p],
            planned_bytes: 0,
        }
    }

    /// Record k's value size.
    pub(super) fn size(&self, k: u64) -> usize {
        self.sizes.size(k)
    }

    /// The mean value size.
    pub(super) fn mean_size(&self) -> f64 {
        self.sizes.mean()
    }

    /// The next record's value before its stamp (the kafka:// producer; the native one cuts
    /// values from a template or writes them itself).
    pub(super) fn fill_value(&mut self, value: &mut [u8]) {
        let start = self.next_value_start(value.len());
        value.copy_from_slice(&self.payload[start..start + value.len()]);
    }

    /// Where the next value of `len` bytes starts in the payload.
    fn next_value_start(&mut self, len: usize) -> usize {
        let start = self.cursor;
        self.cursor = (start + len) % self.region;
        start
    }

    /// Record k's key (`None` for keyless records).
    pub(super) fn key(&self, k: u64) -> Option<&[u8]> {
        self.keys.as_ref().map(|keys| keys.key(k))
    }

    pub(super) fn partition(&self, k: u64) -> u32 {
        match &self.keys {
            None => self.round_robin[((u64::from(self.first_partition) + k) % self.round_robin.len() as u64) as usize],
            Some(keys) => keys.partition(k),
        }
    }

    /// About how many records make a full request.
    fn records_per_full_request(&self, plan: &ProducerPlan) -> u64 {
        let record = BatchWriter::record_bytes(0, 0, key_len(plan), Some(self.sizes.mean() as usize));
        let cap = plan.max_request_bytes.min(plan.batch_bytes.saturating_mul(self.round_robin.len()));
        (cap / record).max(1) as u64
    }

    /// Chooses the records of the next request: from record `k`, at most `limit`, while each
    /// partition's batch stays within `batch_bytes` and the request within `max_request_bytes`
    /// (one record at least). Returns how many.
    fn plan_request(&mut self, k: u64, limit: u64, plan: &ProducerPlan) -> u64 {
        for &p in &self.touched {
            self.counts[p as usize] = 0;
            self.bytes[p as usize] = 0;
        }
        self.touched.clear();
        self.parts.clear();
        let key_len = key_len(plan);
        let mut request_bytes = 0;
        let mut payload_bytes = 0;
        let mut n = 0u64;
        while n < limit {
            let p = self.partition(k + n);
            let pi = p as usize;
            let count = self.counts[pi] as usize;
            let value = self.sizes.size(k + n);
            let record = BatchWriter::record_bytes(0, count, key_len, Some(value));
            let grow = record + if count == 0 { HEADER_LEN } else { 0 };
            if n > 0
                && ((count > 0 && self.bytes[pi] + record > plan.batch_bytes)
                    || request_bytes + grow > plan.max_request_bytes)
            {
                break;
            }
            if count == 0 {
                self.touched.push(p);
            }
            self.counts[pi] += 1;
            self.bytes[pi] += grow;
            request_bytes += grow;
            payload_bytes += value + plan.keys.key_bytes;
            self.parts.push(p);
            n += 1;
        }
        self.touched.sort_unstable();
        self.planned_bytes = payload_bytes as u64;
        n
    }

    /// Encodes the planned request (records `k..k+n`), one batch per partition in partition
    /// order, from the partitions' templates; `intended_ns(j)` is record j's stamp time.
    fn encode(&mut self, k: u64, n: u64, plan: &ProducerPlan, intended_ns: impl Fn(u64) -> u64) -> Vec<(u32, Bytes)> {
        // Group record indices by partition (counting sort).
        let mut at = 0u32;
        for &p in &self.touched {
            self.slot[p as usize] = at;
            at += self.counts[p as usize];
        }
        self.order.resize(n as usize, 0);
        for (j, &p) in self.parts.iter().enumerate() {
            let s = &mut self.slot[p as usize];
            self.order[*s as usize] = j as u32;
            *s += 1;
        }
        let ts_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut batches = Vec::with_capacity(self.touched.len());
        let mut from = 0usize;
        for &p in &self.touched {
            let count = self.counts[p as usize] as usize;
            let records = &self.order[from..from + count];
            let next_seq = &mut self.next_seq[p as usize];
            let keys = &self.keys;
            // The i-th record of the batch: its number and stamp (sequence numbers dense per
            // partition, in batch order).
            let mut next = |i: usize| {
                let rec = k + u64::from(records[i]);
                let stamp =
                    Stamp { intended_ns: intended_ns(rec), run_id: plan.run_id, producer: plan.id, seq: *next_seq };
                *next_seq += 1;
                (rec, stamp.encode())
            };
            let batch = if let Some(fixed) = plan.value_sizes.fixed() {
                let template = self.templates[p as usize]
                    .get_or_insert_with(|| Template::build(plan, &self.payload, self.region, fixed as usize));
                template.batch(count, ts_ms, |i, key, value| {
                    let (rec, stamp) = next(i);
                    if let Some(keys) = keys {
                        key.copy_from_slice(keys.key(rec));
                    }
                    if value.len() >= STAMP_LEN {
                        value[..STAMP_LEN].copy_from_slice(&stamp);
                    }
                })
            } else {
                self.writer.begin(ts_ms);
                for i in 0..count {
                    let (rec, stamp) = next(i);
                    let size = self.sizes.size(rec);
                    // Values too short for the stamp (produce only) are payload alone.
                    let head = if size >= STAMP_LEN { &stamp[..] } else { &[][..] };
                    let start = self.cursor;
                    self.cursor = (start + size) % self.region;
                    let rest = &self.payload[start + head.len()..start + size];
                    self.writer.push_value_parts(ts_ms, keys.as_ref().map(|keys| keys.key(rec)), &[head, rest]);
                }
                self.writer.finish();
                self.writer.take()
            };
            let batch = match plan.compression {
                Compression::None => batch,
                codec => Bytes::from(batch::compressed(&batch, codec)),
            };
            batches.push((p, batch));
            from += count;
        }
        batches
    }
}

/// A RecordBatch of one partition's largest batch (the records that fit `batch_bytes`, one at
/// least), encoded once with the payload in every value. A request's batch for the partition is
/// its first n records with the header, the keys and the stamps patched and the CRC recomputed:
/// no record value is copied per request. The buffer goes back and forth between this and the
/// request (as [`Bytes`]), without copying, once the request has dropped its slice.
struct Template {
    /// The encoded batch while no request holds it ...
    owned: Option<BytesMut>,
    /// ... and while one may (the request's batch is a slice of it).
    lent: Option<Bytes>,
    /// Per record: where its key and value start, and where the record ends.
    key_at: Vec<usize>,
    value_at: Vec<usize>,
    end_at: Vec<usize>,
    key_bytes: usize,
    record_bytes: usize,
}

impl Template {
    fn build(plan: &ProducerPlan, payload: &[u8], region: usize, record_bytes: usize) -> Template {
        let key = vec![0u8; plan.keys.key_bytes];
        let key = (plan.keys.key_bytes > 0).then_some(&key[..]);
        let mut writer = BatchWriter::new();
        writer.begin(0);
        loop {
            let i = writer.records();
            // Back to back: no two values of a batch overlap (`region` holds a whole batch).
            let start = (i * record_bytes) % region;
            let record = BatchWriter::record_bytes(0, i, key.map(<[u8]>::len), Some(record_bytes));
            if i > 0 && writer.open_bytes() + record > plan.batch_bytes {
                break;
            }
            writer.push_value_parts(0, key, &[&payload[start..start + record_bytes]]);
        }
        writer.finish();
        let bytes = writer.take();
        let view = BatchView::parse(&bytes).expect("a batch BatchWriter encoded parses");
        let base = bytes.as_ptr() as usize;
        let (mut key_at, mut value_at, mut end_at) = (Vec::new(), Vec::new(), Vec::new());
        for record in view.records().expect("records of a batch BatchWriter encoded") {
            let record = record.expect("a record BatchWriter encoded");
            let value = record.value.expect("a value").as_ptr() as usize - base;
            key_at.push(record.key.map_or(value, |k| k.as_ptr() as usize - base));
            value_at.push(value);
            // The value, then the header count (0: one byte).
            end_at.push(value + record_bytes + 1);
        }
        assert_eq!(end_at.last(), Some(&bytes.len()), "the template's record layout");
        Template {
            owned: Some(BytesMut::from(&bytes[..])),
            lent: None,
            key_at,
            value_at,
            end_at,
            key_bytes: plan.keys.key_bytes,
            record_bytes,
        }
    }

    /// Records the template holds.
    fn capacity(&self) -> usize {
        self.end_at.len()
    }

    /// The batch of the first `n` records, timestamped `ts_ms`; `patch(i, key, value)` fills in
    /// record i's key and value (they hold the previous request's bytes).
    fn batch(&mut self, n: usize, ts_ms: i64, mut patch: impl FnMut(usize, &mut [u8], &mut [u8])) -> Bytes {
        assert!(n > 0 && n <= self.capacity(), "{n} records for a template of {}", self.capacity());
        let mut buf = match (self.owned.take(), self.lent.take()) {
            (Some(owned), _) => owned,
            // Unique again once the previous request dropped its slice: no copy.
            (None, Some(lent)) => lent.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..])),
            (None, None) => unreachable!("a template always holds its buffer"),
        };
        let end = self.end_at[n - 1];
        // Header fields (see keel_storage::batch): batchLength, lastOffsetDelta, baseTimestamp,
        // maxTimestamp, recordsCount. Every record's timestamp delta is 0.
        buf[8..12].copy_from_slice(&((end - LOG_OVERHEAD) as i32).to_be_bytes());
        buf[23..27].copy_from_slice(&((n - 1) as i32).to_be_bytes());
        buf[27..35].copy_from_slice(&ts_ms.to_be_bytes());
        buf[35..43].copy_from_slice(&ts_ms.to_be_bytes());
        buf[57..61].copy_from_slice(&(n as i32).to_be_bytes());
        for i in 0..n {
            let (k, v) = (self.key_at[i], self.value_at[i]);
            let (head, tail) = buf.split_at_mut(v);
            patch(i, &mut head[k..k + self.key_bytes], &mut tail[..self.record_bytes]);
        }
        let crc = BatchView::parse_unchecked_crc(&buf[..end]).expect("the template's header").computed_crc();
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        let whole = buf.freeze();
        let batch = whole.slice(..end);
        self.lent = Some(whole);
        batch
    }
}

/// Record k's key from the pool (`None` for keyless records).
fn key_len(plan: &ProducerPlan) -> Option<usize> {
    (plan.keys.key_bytes > 0).then_some(plan.keys.key_bytes)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Sleeps until `t` (no spinning; the timer slack is tightened per thread).
pub(super) fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use keel_storage::batch::BatchView;

    use super::*;

    fn plan(partitions: u32, key_bytes: usize) -> ProducerPlan {
        ProducerPlan {
            id: 3,
            target: Target { protocol: super::super::args::Protocol::Keel, addr: "127.0.0.1:1".into() },
            topics: Topics::new("t", 1, partitions),
            acks: Acks::Leader,
            batch_bytes: 4096,
            max_request_bytes: 10_000,
            linger: Duration::ZERO,
            kafka_wire: false,
            value_sizes: SizeDistribution::Fixed(100),
            value_compressibility: 0.5,
            compression: Compression::None,
            keys: KeySpec {
                key_bytes,
                count: 4096,
                distribution: super::super::keys::KeyDistribution::RoundRobin,
                zipf_exponent: 1.0,
            },
            rate: None,
            share: 0.0,
            rate_parts: Vec::new(),
            run_id: 42,
            stop_after_bytes: None,
            own_partitions: None,
        }
    }

    #[test]
    fn requests_respect_the_limits_and_keep_per_partition_order() {
        let variable = SizeDistribution::Uniform { min: 28, max: 700 };
        for (key_bytes, sizes, codec) in [
            (0, SizeDistribution::Fixed(100), Compression::None),
            (16, SizeDistribution::Fixed(100), Compression::None),
            (0, variable, Compression::None),
            (16, variable, Compression::None),
            (16, SizeDistribution::Fixed(100), Compression::Zstd),
            (0, variable, Compression::Lz4),
            (16, variable, Compression::Gzip),
            (16, variable, Compression::Snappy),
        ] {
            let what = format!("{key_bytes} B keys, {sizes}, {codec}");
            let plan = ProducerPlan { value_sizes: sizes, compression: codec, ..plan(3, key_bytes) };
            let mut g = Generator::new(&plan);
            let mut k = 0;
            let mut seqs = [0u64; 3];
            for round in 0..5 {
                let limit = if round == 2 { 5 } else { u64::MAX };
                let n = g.plan_request(k, limit, &plan);
                assert!(n > 0 && n <= limit);
                let batches = g.encode(k, n, &plan, |j| j * 10);
                let mut records = 0;
                let (mut request_bytes, mut payload_bytes) = (0, 0);
                for (p, bytes) in &batches {
                    // keel_storage's parser, as the broker and the consumers read them.
                    let view = BatchView::parse(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(view.total_len(), bytes.len(), "one batch per partition");
                    assert_eq!(view.compression(), codec, "{what}");
                    let section = view.decompressed_records().unwrap();
                    assert_eq!(section.is_decompressed(), codec != Compression::None);
                    let uncompressed = HEADER_LEN + section.as_bytes().len();
                    assert!(uncompressed <= plan.batch_bytes, "{what}: {uncompressed}");
                    request_bytes += uncompressed;
                    for r in section.records() {
                        let r = r.unwrap();
                        let value = r.value.unwrap();
                        assert_eq!(r.key.map(<[u8]>::len), key_len(&plan));
                        let s = Stamp::decode(value).unwrap();
                        assert_eq!((s.run_id, s.producer), (42, 3));
                        assert_eq!(s.seq, seqs[*p as usize], "sequence numbers are dense per partition");
                        seqs[*p as usize] += 1;
                        let rec = s.intended_ns / 10;
                        assert!(rec >= k && rec < k + n);
                        assert_eq!(g.partition(rec), *p);
                        assert_eq!(value.len(), g.size(rec), "{what}: record {rec}'s drawn size");
                        if let (Some(fixed), Some(key)) = (plan.value_sizes.fixed(), r.key) {
                            assert_eq!(value.len() as u64, fixed);
                            assert_eq!(Some(key), g.key(rec));
                        }
                        payload_bytes += value.len() + r.key.map_or(0, <[u8]>::len);
                        records += 1;
                    }
                }
                assert!(request_bytes <= plan.max_request_bytes, "{what}: {request_bytes}");
                assert_eq!(records, n);
                assert_eq!(g.planned_bytes, payload_bytes as u64, "{what}: bytes counted are the bytes sent");
                drop(batches);
                k += n;
            }
            if plan.value_sizes.fixed().is_none() {
                assert!((0..k).any(|j| g.size(j) != g.size(0)), "{what}: sizes vary");
            }
        }
    }

    #[test]
    fn compressed_batches_shrink_as_the_payload_does_and_decode_to_the_same_records() {
        for sizes in [SizeDistribution::Fixed(1000), SizeDistribution::Uniform { min: 28, max: 4000 }] {
            // A 64 KiB batch of values with half their bytes repeated: about half the size, not
            // the tenth it would be if values overlapped in the payload.
            let plan =
                ProducerPlan { value_sizes: sizes, batch_bytes: 64 << 10, max_request_bytes: 64 << 10, ..plan(1, 8) };
            let mut g = Generator::new(&plan);
            let n = g.plan_request(0, u64::MAX, &plan);
            let _warm = g.encode(0, n, &plan, |j| j);
            let n2 = g.plan_request(n, u64::MAX, &plan);
            let plain = g.encode(n, n2, &plan, |j| j).remove(0).1;
            for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
                let packed = batch::compressed(&plain, codec);
                let ratio = packed.len() as f64 / plain.len() as f64;
                assert!((0.4..0.75).contains(&ratio), "{sizes}, {codec}: compressed to {ratio:.2}");
                let (a, b) = (BatchView::parse(&plain).unwrap(), BatchView::parse(&packed).unwrap());
                assert_eq!(a.records_count(), b.records_count());
                assert_eq!(a.max_timestamp(), b.max_timestamp());
                let unpacked = b.decompressed_records().unwrap();
                assert_eq!(unpacked.as_bytes(), &plain[HEADER_LEN..], "{codec}: the same records");
            }
        }
    }

    #[test]
    fn templates_are_reused_without_copying() {
        let plan = plan(2, 8);
        let mut g = Generator::new(&plan);
        let mut k = 0;
        let mut buffers = std::collections::HashSet::new();
        for round in 0..4u64 {
            let n = g.plan_request(k, 3 + round, &plan);
            let batches = g.encode(k, n, &plan, |j| j);
            for (_, b) in &batches {
                buffers.insert(b.as_ptr());
                let view = BatchView::parse(b).unwrap();
                assert_eq!(view.records().unwrap().count() as i32, view.records_count());
            }
            drop(batches);
            k += n;
        }
        assert_eq!(buffers.len(), 2, "one buffer per partition, reused");
    }

    #[test]
    fn keyless_records_go_round_robin() {
        let plan = plan(4, 0);
        let g = Generator::new(&plan);
        let ps: Vec<u32> = (0..8).map(|k| g.partition(k)).collect();
        let first = ps[0];
        assert_eq!(ps, (0..8).map(|k| (first + k) % 4).collect::<Vec<_>>());
    }

    #[test]
    fn keyless_records_go_round_robin_over_the_own_partitions_only() {
        let plan = ProducerPlan { own_partitions: Some(vec![1, 3, 5]), ..plan(8, 0) };
        let g = Generator::new(&plan);
        let ps: Vec<u32> = (0..9).map(|k| g.partition(k)).collect();
        let at = [1, 3, 5].iter().position(|&p| p == ps[0]).expect("an own partition");
        assert_eq!(ps, (0..9).map(|k| [1, 3, 5][(at + k) % 3]).collect::<Vec<_>>());
    }
}
