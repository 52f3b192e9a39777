//! The `kafka://` target: the same workloads over the Kafka protocol, through librdkafka (the
//! `rdkafka` crate, built from source), against any Kafka-protocol broker — Keel's Kafka
//! listener, Apache Kafka, Redpanda.
//!
//! - Topic: looked up in the cluster's metadata and created with Kafka's CreateTopics (AdminClient,
//!   replication factor -1 = the broker's default) if missing; an existing topic must have
//!   `--partitions` partitions and the `--topic-config` values (DescribeConfigs).
//! - Producer: one `ThreadedProducer` per producer thread, records sent one by one to an explicit
//!   partition (the same round-robin or murmur2 choice as the native producer), with the same value
//!   layout (the 28-byte stamp, then the payload) and value sizes. librdkafka batches (and
//!   with `--compression`, compresses: `compression.type`) them itself:
//!   `--batch-bytes` → `batch.size`, `--max-request-bytes` → `message.max.bytes`, `--linger` →
//!   `linger.ms`, `--acks` → `acks`; idempotence is off; one request in flight per connection
//!   (`max.in.flight.requests.per.connection=1`), as natively. `KEEL_BENCH_KAFKA_CONFIG` adds or
//!   overrides librdkafka properties. Latency = the delivery report (taken on
//!   librdkafka's poll thread as it arrives) minus the intended (open loop) or actual (closed loop)
//!   send. Closed loop: up to `--max-request-bytes` of records unacknowledged per producer (what
//!   one native request carries), a new record as soon as one is acknowledged.
//! - Consumer: one `BaseConsumer` per consumer thread, `assign`ed its partitions (a group.id is
//!   set, as librdkafka requires, but no group is joined and nothing committed) at
//!   offsets resolved before the clock starts (low or high watermark), reading with
//!   `fetch.wait.max.ms` = 100 and `fetch.max.bytes` = `--fetch-max-bytes`. With `--group NAME`
//!   they `subscribe` as members of group NAME instead (librdkafka's assignment and rebalances,
//!   offsets auto-committed every second), after the topic's high watermarks were committed to
//!   the group, so that it starts at the end.

use std::{
    sync::{atomic::Ordering, Arc, Condvar, Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use futures_lite::future::block_on;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::Message,
    producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig, ThreadedProducer},
    ClientContext, Offset, TopicPartitionList,
};

use super::{
    args::{CommonArgs, Target, Topics},
    consumer::Rec,
    producer::{Generator, ProducerPlan, ProducerTally},
    shared::{Clock, Shared, Stamp, DRAIN_LIMIT, STAMP_LEN},
};
use crate::report;

/// Metadata, admin and watermark requests.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest sleep of the open loop between sends.
const OPEN_LOOP_TICK: Duration = Duration::from_micros(200);
/// Longest a group consumer may take to be assigned its first partitions.
const GROUP_JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most records taken from the consumer's queue per poll.
const POLL_BATCH: usize = 10_000;

/// librdkafka properties set on every client after keel-bench's own, from
/// `KEEL_BENCH_KAFKA_CONFIG="key=value,key=value"` (e.g. `debug=protocol`, or
/// `max.in.flight.requests.per.connection=1`).
pub const EXTRA_CONFIG_ENV: &str = "KEEL_BENCH_KAFKA_CONFIG";

fn client_config(target: &Target, client_id: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &target.addr).set("client.id", client_id).set("socket.timeout.ms", "10000");
    cfg
}

/// `cfg` with the properties of [`EXTRA_CONFIG_ENV`] added.
fn with_extra(mut cfg: ClientConfig) -> ClientConfig {
    if let Ok(extra) = std::env::var(EXTRA_CONFIG_ENV) {
        for kv in extra.split(',').filter(|kv| !kv.trim().is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                cfg.set(k.trim(), v.trim());
            }
        }
    }
    cfg
}

fn admin(c: &CommonArgs) -> Result<AdminClient<DefaultClientContext>, String> {
    with_extra(client_config(&c.target, "keel-bench-admin"))
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client for {}: {e}", c.target))
}

/// Partition count of `topic` from the cluster's metadata (`None`: no such topic).
fn partition_count(
    admin: &AdminClient<DefaultClientContext>,
    c: &CommonArgs,
    topic: &str,
) -> Result<Option<usize>, String> {
    // The whole cluster's metadata: asking for the topic by name could auto-create it.
    let md = admin
        .inner()
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| format!("cannot reach the broker at {}: {e}", c.target))?;
    Ok(md.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()))
}

/// Makes sure `topic` exists as asked; returns whether it was created.
pub fn ensure_topic(c: &CommonArgs, topic: &str) -> Result<bool, String> {
    let admin = admin(c)?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    match partition_count(&admin, c, topic)? {
        Some(n) => {
            if n != c.partitions as usize {
                return Err(format!(
                    "topic {} already exists with {n} partitions, not --partitions {}: use another --topic or delete it",
                    topic, c.partitions
                ));
            }
            if c.topic_config.is_empty() {
                return Ok(false);
            }
            let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts))
                .map_err(|e| format!("cannot read the configs of {}: {e}", topic))?;
            let resource = results
                .into_iter()
                .next()
                .ok_or_else(|| format!("no configs returned for {}", topic))?
                .map_err(|e| format!("cannot read the configs of {}: {e:?}", topic))?;
            for (key, want) in &c.topic_config {
                match resource.get(key).map(|e| e.value.clone().unwrap_or_default()) {
                    Some(have) if &have == want => {}
                    Some(have) => {
                        return Err(format!(
                            "topic {} already exists with {key}={have}, not {want}: use another --topic or delete it",
                            topic
                        ))
                    }
                    None => return Err(format!("the broker does not know topic config {key:?}")),
                }
            }
            Ok(false)
        }
        None => {
            let mut new_topic = NewTopic::new(topic, c.partitions as i32, TopicReplication::Fixed(-1));
            for (k, v) in &c.topic_config {
                new_topic = new_topic.set(k, v);
            }
            let results = block_on(admin.create_topics([&new_topic], &opts))
                .map_err(|e| format!("cannot create topic {}: {e}", topic))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(format!("cannot create topic {}: {code}", topic)),
                }
            }
            // Until the metadata shows every partition (the leaders may take a moment).
            let deadline = Instant::now() + TIMEOUT;
            while partition_count(&admin, c, topic)? != Some(c.partitions as usize) {
                if Instant::now() > deadline {
                    return Err(format!("topic {} was created but its metadata did not show it in time", topic));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(true)
        }
    }
}

/// A consumer; `group`: a member of that group (it joins on `subscribe`), committing what it
/// read every second.
fn base_consumer(
    target: &Target,
    client_id: &str,
    fetch_max_bytes: u32,
    group: Option<&str>,
) -> Result<BaseConsumer, String> {
    let mut cfg = client_config(target, client_id);
    let fetch_max = fetch_max_bytes.max(1024);
    let member = group.is_some().to_string();
    // librdkafka's assign() wants a group.id; without --group, the group is never joined nor
    // committed to.
    cfg.set("group.id", group.unwrap_or("keel-bench"))
        .set("enable.auto.commit", &member)
        .set("enable.auto.offset.store", &member)
        .set("auto.commit.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        .set("check.crcs", "false")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", fetch_max.to_string())
        .set("max.partition.fetch.bytes", fetch_max.min(1 << 20).to_string())
        .set("receive.message.max.bytes", (fetch_max.max(100_000_000 - 512) + 512).to_string());
    with_extra(cfg).create().map_err(|e| format!("cannot create a Kafka consumer for {target}: {e}"))
}

/// (low, high) watermark of each of `partitions` (global numbers of `layout`).
fn watermarks(consumer: &BaseConsumer, layout: &Topics, partitions: &[u32]) -> Result<Vec<(u64, u64)>, String> {
    partitions
        .iter()
        .map(|&g| {
            let (topic, p) = layout.name_of(g);
            consumer
                .fetch_watermarks(topic, p as i32, TIMEOUT)
                .map(|(lo, hi)| (lo.max(0) as u64, hi.max(0) as u64))
                .map_err(|e| format!("cannot read the watermarks of {topic}/{p}: {e}"))
        })
        .collect()
}

/// Deletes `topic` with Kafka's DeleteTopics.
pub fn delete_topic(target: &Target, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = with_extra(client_config(target, "keel-bench-admin"))
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client for {target}: {e}"))?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    for r in block_on(admin.delete_topics(&[topic], &opts)).map_err(|e| e.to_string())? {
        r.map_err(|(_, code)| code.to_string())?;
    }
    Ok(())
}

/// Records between the log start and the high watermark, over every partition.
pub fn records_available(c: &CommonArgs) -> Result<u64, String> {
    let consumer = base_consumer(&c.target, "keel-bench-admin", 1 << 20, None)?;
    let layout = c.layout();
    let all: Vec<u32> = (0..layout.total()).collect();
    Ok(watermarks(&consumer, &layout, &all)?.iter().map(|(lo, hi)| hi.saturating_sub(*lo)).sum())
}

/// Commits every partition's high watermark to `group`, as a consumer outside the group (Kafka
/// and Keel accept that while the group has no members).
pub fn commit_high_watermarks(c: &CommonArgs, group: &str) -> Result<(), String> {
    let consumer = base_consumer(&c.target, "keel-bench-admin", 1 << 20, Some(group))?;
    let layout = c.layout();
    let all: Vec<u32> = (0..layout.total()).collect();
    let mut list = TopicPartitionList::new();
    for (&g, &(_, hi)) in all.iter().zip(&watermarks(&consumer, &layout, &all)?) {
        let (topic, p) = layout.name_of(g);
        list.add_partition_offset(topic, p as i32, Offset::Offset(hi as i64))
            .map_err(|e| format!("cannot commit {topic}/{p}: {e}"))?;
    }
    consumer.commit(&list, CommitMode::Sync).map_err(|e| format!("cannot commit to group {group}: {e}"))
}

/// A consumer over its partitions, positioned before the clock starts.
pub struct KafkaSource {
    consumer: BaseConsumer,
    layout: Topics,
    /// (global partition, next offset to read), in the plan's partition order.
    positions: Vec<(u32, u64)>,
    /// Global partition → index in `positions`.
    local: Vec<u32>,
    /// The topic of the last record polled and its index in `layout` (records come in runs of
    /// one topic: most need no lookup by name).
    last_topic: Option<(String, usize)>,
}

impl KafkaSource {
    /// Assigns `partitions` at their low (`earliest`) or high watermark; also returns the high
    /// watermarks.
    pub fn open(
        target: &Target,
        client_id: &str,
        layout: &Topics,
        partitions: &[u32],
        earliest: bool,
        fetch_max_bytes: u32,
    ) -> Result<(KafkaSource, Vec<u64>), String> {
        let consumer = base_consumer(target, client_id, fetch_max_bytes, None)?;
        let marks = watermarks(&consumer, layout, partitions)?;
        let mut list = TopicPartitionList::new();
        let mut positions = Vec::with_capacity(partitions.len());
        let mut local = vec![u32::MAX; layout.total() as usize];
        for (i, (&g, &(lo, hi))) in partitions.iter().zip(&marks).enumerate() {
            let start = if earliest { lo } else { hi };
            let (topic, p) = layout.name_of(g);
            list.add_partition_offset(topic, p as i32, Offset::Offset(start as i64))
                .map_err(|e| format!("cannot assign {topic}/{p}: {e}"))?;
            positions.push((g, start));
            local[g as usize] = i as u32;
        }
        consumer.assign(&list).map_err(|e| format!("cannot assign the partitions to read: {e}"))?;
        let source = KafkaSource { consumer, layout: layout.clone(), positions, local, last_topic: None };
        Ok((source, marks.iter().map(|m| m.1).collect()))
    }

    /// A member of `group` subscribed to every topic of `layout`: the group decides which
    /// partitions it reads.
    pub fn subscribe(
        target: &Target,
        client_id: &str,
        layout: &Topics,
        group: &str,
        fetch_max_bytes: u32,
    ) -> Result<KafkaSource, String> {
        let consumer = base_consumer(target, client_id, fetch_max_bytes, Some(group))?;
        let topics: Vec<&str> = layout.names().iter().map(String::as_str).collect();
        let topic = topics.join(", ");
        consumer.subscribe(&topics).map_err(|e| format!("cannot subscribe to {topic} in group {group}: {e}"))?;
        // Join before the clock starts (a join takes seconds: the coordinator waits for more
        // members), so that it is not in the latency figures; later joins rebalance during the
        // run. Nothing of this run is produced yet, so what a poll returns here is not ours.
        let deadline = Instant::now() + GROUP_JOIN_TIMEOUT;
        while consumer.assignment().map_or(0, |a| a.count()) == 0 {
            if Instant::now() > deadline {
                return Err(format!("no partition of {topic} assigned in group {group} within {GROUP_JOIN_TIMEOUT:?}"));
            }
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                return Err(format!("joining group {group}: {e}"));
            }
        }
        let positions = (0..layout.total()).map(|g| (g, 0)).collect();
        let local = (0..layout.total()).collect();
        Ok(KafkaSource { consumer, layout: layout.clone(), positions, local, last_topic: None })
    }

    /// Waits up to `wait` for records, then takes what else is queued (up to a bound).
    pub fn poll(&mut self, wait: Duration, out: &mut Vec<Rec>) -> Result<(), String> {
        let mut timeout = wait;
        while out.len() < POLL_BATCH {
            let Some(m) = self.consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            let m = m.map_err(|e| format!("Fetch failed: {e}"))?;
            let t = match &self.last_topic {
                Some((name, t)) if name == m.topic() => *t,
                _ => {
                    let t = self.layout.index_of(m.topic()).ok_or_else(|| {
                        format!("Fetch returned a record of topic {:?}, which was not asked for", m.topic())
                    })?;
                    self.last_topic = Some((m.topic().to_owned(), t));
                    t
                }
            };
            if m.partition() < 0 || m.partition() as u32 >= self.layout.partitions() {
                return Err(format!("Fetch returned a record of partition {}/{}", m.topic(), m.partition()));
            }
            let (partition, offset) = (self.layout.global(t, m.partition() as u32), m.offset() as u64);
            let value = m.payload();
            out.push(Rec {
                partition,
                offset,
                bytes: (value.map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)) as u64,
                stamp: value.and_then(Stamp::decode),
            });
            if let Some(&i) = self.local.get(partition as usize) {
                if let Some(pos) = self.positions.get_mut(i as usize) {
                    pos.1 = offset + 1;
                }
            }
        }
        Ok(())
    }

    pub fn positions(&self) -> &[(u32, u64)] {
        &self.positions
    }

    /// Pauses or resumes fetching of every assigned partition (librdkafka fetches ahead in the
    /// background otherwise).
    pub fn set_fetching(&mut self, on: bool) -> Result<(), String> {
        let assignment = self.consumer.assignment().map_err(|e| format!("cannot read the assignment: {e}"))?;
        let r = if on { self.consumer.resume(&assignment) } else { self.consumer.pause(&assignment) };
        r.map_err(|e| format!("cannot {} fetching: {e}", if on { "resume" } else { "pause" }))
    }
}

/// What a record carries to its delivery report.
pub struct Sent {
    partition: u32,
    sent_at: Instant,
    /// Open loop: the record's intended send time.
    intended: Option<Instant>,
    /// Value + key bytes.
    bytes: u64,
}

struct State {
    tally: ProducerTally,
    delivered: u64,
    /// Per partition: records purged from librdkafka's queue unsent at the drain limit.
    purged: Vec<u64>,
    /// The producer thread waits until `delivered` reaches this (`u64::MAX`: nobody waits); the
    /// delivery callback wakes it then and not at every record, which would cost a futex wake
    /// and a thread switch per record.
    wake_at: u64,
    error: Option<String>,
}

/// Receives the delivery reports on librdkafka's poll thread and accounts for them.
struct Context {
    state: Mutex<State>,
    delivered: Condvar,
    clock: OnceLock<Clock>,
    shared: Arc<Shared>,
    acked: bool,
}

impl Context {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let now = Instant::now();
        let Some(clock) = self.clock.get() else { return };
        let mut st = self.lock();
        st.delivered += 1;
        match result {
            Ok(m) => {
                let t = &mut st.tally;
                if self.acked {
                    let offset = m.offset().max(0) as u64;
                    let pt = &mut t.per_partition[sent.partition as usize];
                    if offset < pt.next_offset {
                        t.offset_regressions += 1;
                    }
                    pt.next_offset = offset + 1;
                    pt.acked += 1;
                    pt.offset_sum = pt.offset_sum.wrapping_add(offset);
                    t.acked += 1;
                    let from = sent.intended.unwrap_or(sent.sent_at);
                    let latency = now.saturating_duration_since(from);
                    if clock.in_window(from) {
                        report::record_us(&mut t.ack_latency, latency);
                    }
                    t.seconds.record(&self.shared.ack_by_second, clock.t0, now, latency, 1);
                }
                t.bytes += sent.bytes;
                if clock.in_window(now) {
                    t.window_records += 1;
                    t.window_bytes += sent.bytes;
                }
                self.shared.produced_records.fetch_add(1, Ordering::Relaxed);
                self.shared.produced_bytes.fetch_add(sent.bytes, Ordering::Relaxed);
            }
            // Purged at the drain limit, never sent: abandoned like the native producer's unsent
            // records, with the latency it had reached.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue), _)) => {
                st.purged[sent.partition as usize] += 1;
                st.tally.not_sent += 1;
                let from = sent.intended.unwrap_or(sent.sent_at);
                if self.acked && clock.in_window(from) {
                    report::record_us(&mut st.tally.ack_latency, now.saturating_duration_since(from));
                }
            }
            Err((e, _)) => {
                st.error
                    .get_or_insert_with(|| format!("delivery of a record to partition {} failed: {e}", sent.partition));
                st.wake_at = 0;
            }
        }
        let wake = st.delivered >= st.wake_at;
        drop(st);
        if wake {
            self.delivered.notify_all();
        }
    }
}

/// Runs one Kafka producer to the end of the schedule (or an error, recorded in `shared`).
pub fn run_producer(plan: ProducerPlan, shared: Arc<Shared>) -> ProducerTally {
    let ctx = Context {
        state: Mutex::new(State {
            tally: ProducerTally::new(plan.topics.total()),
            delivered: 0,
            purged: vec![0; plan.topics.total() as usize],
            wake_at: u64::MAX,
            error: None,
        }),
        delivered: Condvar::new(),
        clock: OnceLock::new(),
        shared: shared.clone(),
        acked: plan.acks != keel_client::Acks::None,
    };
    let producer = match create_producer(&plan, ctx) {
        Ok(p) => Some(p),
        Err(e) => {
            shared.fail(e);
            None
        }
    };
    let clock = shared.wait_start();
    let mut sent = vec![0u64; plan.topics.total() as usize];
    let mut not_sent = 0;
    if let (Some(producer), Some(clock)) = (&producer, clock) {
        let _ = producer.context().clock.set(clock);
        let mut p =
            KafkaProducer { plan: &plan, shared: &shared, producer, gen: Generator::new(&plan), clock, sent: 0 };
        // Room for the largest value; each record uses its own size's prefix.
        let mut value = vec![0u8; plan.value_sizes.max() as usize];
        let result = match plan.rate {
            Some(rate) => p.open_loop(rate, &mut value, &mut sent, &mut not_sent),
            None => p.closed_loop(&mut value, &mut sent),
        }
        .and_then(|()| p.drain());
        if let Err(e) = result {
            shared.fail(format!("producer {}: {e}", plan.id));
        }
    }
    let mut tally = match producer {
        Some(p) => {
            let mut st = p.context().lock();
            // Purged records were never sent: consumers must not wait for them.
            for (n, purged) in sent.iter_mut().zip(&st.purged) {
                assert!(purged <= n, "purged {purged} of {n} records sent to a partition");
                *n -= purged;
            }
            std::mem::replace(&mut st.tally, ProducerTally::new(plan.topics.total()))
        }
        None => ProducerTally::new(plan.topics.total()),
    };
    tally.seconds.flush(&shared.ack_by_second);
    tally.sent = sent.iter().sum();
    tally.not_sent += not_sent;
    for (pt, n) in tally.per_partition.iter_mut().zip(&sent) {
        pt.sent = *n;
    }
    shared.producer_finished(&sent);
    tally
}

fn create_producer(plan: &ProducerPlan, ctx: Context) -> Result<ThreadedProducer<Context>, String> {
    let mut cfg = client_config(&plan.target, &format!("keel-bench-producer-{}", plan.id));
    let acks = match plan.acks {
        keel_client::Acks::None => "0",
        keel_client::Acks::Leader => "1",
        keel_client::Acks::All => "all",
    };
    cfg.set("acks", acks)
        .set("enable.idempotence", "false")
        // One Produce request in flight per connection, like the native producer (and no
        // reordering on a retry).
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", format!("{}", plan.linger.as_secs_f64() * 1e3))
        .set("batch.size", plan.batch_bytes.to_string())
        .set("message.max.bytes", plan.max_request_bytes.max(1000).to_string())
        .set("compression.type", plan.compression.name())
        // Never give up on a record by itself: when a broker does not keep up with an open loop's
        // rate, the run's own drain limit purges what is still queued (counted as not sent, with
        // the latency it reached), and librdkafka's timeout would instead fail the run or drop
        // records that may still be in flight.
        .set("delivery.timeout.ms", "3600000")
        .set("queue.buffering.max.messages", "1000000");
    let producer: ThreadedProducer<Context> = with_extra(cfg)
        .create_with_context(ctx)
        .map_err(|e| format!("cannot create a Kafka producer for {}: {e}", plan.target))?;
    // Fail at setup, like the native producer's connect, if the broker is not there.
    producer
        .client()
        .fetch_metadata(Some(&plan.topics.names()[0]), TIMEOUT)
        .map_err(|e| format!("cannot reach the broker at {}: {e}", plan.target))?;
    Ok(producer)
}

struct KafkaProducer<'a> {
    plan: &'a ProducerPlan,
    shared: &'a Shared,
    producer: &'a ThreadedProducer<Context>,
    gen: Generator,
    clock: Clock,
    /// Records handed to librdkafka.
    sent: u64,
}

impl KafkaProducer<'_> {
    fn ctx(&self) -> &Context {
        self.producer.context()
    }

    /// Records handed to librdkafka and not yet reported; fails on a failed delivery.
    fn outstanding(&self) -> Result<u64, String> {
        let st = self.ctx().lock();
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        Ok(self.sent - st.delivered)
    }

    /// Waits (up to `max`) until fewer than `limit` records are outstanding.
    fn wait_below(&self, limit: u64, max: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + max;
        let mut st = self.ctx().lock();
        loop {
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            if self.sent - st.delivered < limit {
                st.wake_at = u64::MAX;
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline || self.shared.stopped() {
                st.wake_at = u64::MAX;
                return Ok(false);
            }
            // Below `limit` once delivered > sent - limit.
            st.wake_at = self.sent - limit + 1;
            st = self
                .ctx()
                .delivered
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Hands record `k` to librdkafka (waiting while its queue is full).
    fn send(
        &mut self,
        k: u64,
        value: &mut [u8],
        intended: Option<(Instant, u64)>,
        sent: &mut [u64],
    ) -> Result<(), String> {
        let p = self.gen.partition(k);
        let seq = self.gen.next_seq[p as usize];
        self.gen.next_seq[p as usize] += 1;
        let value = &mut value[..self.gen.size(k)];
        self.gen.fill_value(value);
        let sent_at = Instant::now();
        if value.len() >= STAMP_LEN {
            let intended_ns = intended.map_or_else(|| sent_at.duration_since(self.clock.t0).as_nanos() as u64, |i| i.1);
            let stamp = Stamp { intended_ns, run_id: self.plan.run_id, producer: self.plan.id, seq };
            value[..STAMP_LEN].copy_from_slice(&stamp.encode());
        }
        let key = self.gen.key(k);
        let bytes = (value.len() + key.map_or(0, <[u8]>::len)) as u64;
        let mut opaque = Box::new(Sent { partition: p, sent_at, intended: intended.map(|i| i.0), bytes });
        let (topic, partition) = self.plan.topics.name_of(p);
        loop {
            let mut record = BaseRecord::<[u8], [u8], Box<Sent>>::with_opaque_to(topic, opaque)
                .partition(partition as i32)
                .payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    opaque = back.delivery_opaque;
                    self.wait_below(self.sent, Duration::from_millis(100))?;
                    if self.shared.stopped() {
                        return Ok(());
                    }
                }
                Err((e, _)) => return Err(format!("cannot send a record: {e}")),
            }
        }
        self.sent += 1;
        sent[p as usize] += 1;
        Ok(())
    }

    fn closed_loop(&mut self, value: &mut [u8], sent: &mut [u64]) -> Result<(), String> {
        let record = (self.gen.mean_size() as usize + self.plan.keys.key_bytes).max(1);
        let window = (self.plan.max_request_bytes / record).max(1) as u64;
        let mut k = 0u64;
        loop {
            if self.shared.closed_loop_done(self.clock.end, self.plan.stop_after_bytes) {
                return Ok(());
            }
            // A full window refills once half of it is acknowledged, so records reach librdkafka
            // in runs it can batch (one at a time, each delivery report would let one record
            // through and every request would carry only what trickled in meanwhile).
            if self.outstanding()? >= window && !self.wait_below((window / 2).max(1), Duration::from_millis(50))? {
                continue;
            }
            self.send(k, value, None, sent)?;
            k += 1;
        }
    }

    fn open_loop(&mut self, rate: f64, value: &mut [u8], sent: &mut [u64], not_sent: &mut u64) -> Result<(), String> {
        let schedule = self.plan.schedule(&self.clock, rate);
        let total = schedule.total;
        let intended_ns = |k: u64| schedule.intended_ns(k);
        let intended = |k: u64| schedule.intended(k);
        let drain_deadline = self.clock.end + DRAIN_LIMIT;
        let acked = self.ctx().acked;
        let mut k = 0u64;
        while k < total {
            if self.shared.stopped() {
                return Ok(());
            }
            self.outstanding()?;
            let now = Instant::now();
            let due_end = schedule.due_end(now);
            if due_end <= k {
                // Not before OPEN_LOOP_TICK: at tens of thousands of records/s a wake-up per record
                // costs more than librdkafka itself. The delay counts in the latency (from the
                // intended time).
                super::producer::sleep_until(intended(k).max(now + OPEN_LOOP_TICK));
                continue;
            }
            if now >= drain_deadline {
                *not_sent = total - k;
                let mut st = self.ctx().lock();
                for j in k..total {
                    let t = intended(j);
                    if self.clock.in_window(t) && acked {
                        report::record_us(&mut st.tally.ack_latency, now - t);
                    }
                }
                return Ok(());
            }
            for j in k..due_end {
                let t = intended(j);
                self.send(j, value, Some((t, intended_ns(j))), sent)?;
                if self.clock.in_window(t) {
                    let delay = Instant::now().saturating_duration_since(t);
                    report::record_us(&mut self.ctx().lock().tally.send_delay, delay);
                }
            }
            k = due_end;
        }
        // A schedule that ends early (phases at rate 0) still ends with the run.
        self.shared.wait_until(self.clock.end);
        Ok(())
    }

    /// Waits for the delivery reports of every record sent, up to [`DRAIN_LIMIT`] after the end;
    /// then records still in librdkafka's queue (the broker did not keep up with an open loop's
    /// rate) are purged, counted as not sent, and the requests in flight are waited for.
    fn drain(&mut self) -> Result<(), String> {
        let limit = (self.clock.end + DRAIN_LIMIT).saturating_duration_since(Instant::now());
        self.wait_below(1, limit.max(Duration::from_secs(1)))?;
        if self.outstanding()? > 0 && !self.shared.stopped() {
            self.producer.purge(PurgeConfig::default().queue());
            self.wait_below(1, TIMEOUT)?;
        }
        let left = self.outstanding()?;
        if left > 0 && !self.shared.stopped() {
            return Err(format!("{left} records still unacknowledged {} s after the end", DRAIN_LIMIT.as_secs()));
        }
        Ok(())
    }
}
