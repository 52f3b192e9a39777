//! `keel-bench produce | consume | e2e`: a running `keel serve` broker driven over the native
//! protocol through `keel-client`, from threads of this process (one blocking connection each);
//! or, with `--target kafka://HOST:PORT`, any Kafka-protocol broker through librdkafka (see
//! [`kafka`]), with the same workloads, stamps, checks and figures.
//!
//! - `produce`: `--producers` threads, closed loop (as fast as acknowledgements come back) or
//!   open loop at `--rate` records/s in total with coordinated-omission correction (see
//!   [`producer`]). Figures: acknowledged throughput and the acknowledgement latency of every
//!   record.
//! - `consume`: `--consumers` threads reading the topic from its start (or its end): throughput.
//! - `e2e`: both at once, consumers tailing from the end; adds the end-to-end latency of every
//!   record (read time minus intended send time, from the stamp in its value) and checks that
//!   every acknowledged record was read exactly once, in order (see [`consumer`]).
//!
//! What is counted: MB/s is 10^6 bytes per second of record **values + keys** (not record or
//! batch framing, not protocol overhead), uncompressed even when batches are compressed
//! (`--compression`), each record counted with its own size when sizes are drawn from a
//! distribution (`--record-bytes-dist`); records/s is records per second; both over the
//! measurement window only (`--duration` after `--warmup`). `produce` counts records whose
//! acknowledgement arrived in the window (with acks=0: written to the socket in the window);
//! `consume` counts records received in the window. Latencies (µs, HDR histograms) are those of
//! records whose intended (open loop) or actual (closed loop) send time is in the window.
//!
//! The topic is created with `--partitions` and `--topic-config` if missing; an existing topic
//! with another partition count or config value is an error rather than a silently different
//! benchmark. With `--topics N` the same goes for each of N topics (`TOPIC-0` … `TOPIC-{N-1}`),
//! and the threads number partitions across them ([`args::Topics`]): the tallies and checks
//! below are per global partition, and only the connections translate to (topic, partition).

pub mod args;
mod consumer;
mod kafka;
mod kafka_wire;
mod keys;
mod payload;
mod producer;
pub(crate) mod shared;
mod sizes;
pub(crate) mod stalls;

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use keel_client::{Acks, ClientError, StartAt};
use serde::Serialize;

use args::{CommonArgs, ProducerArgs};
pub use args::{ConsumeArgs, E2eArgs, ProduceArgs};
use consumer::{ConsumerPlan, ConsumerTally, Mode, SeenPair};
pub use keys::KeyDistribution;
use producer::{ProducerPlan, ProducerTally};
use shared::{Clock, Shared, STAMP_LEN};
pub use sizes::SizeDistribution;
use stalls::{CpuTimes, StallSummary};

use crate::report::{self, LatencySummary};

/// Most producer or consumer threads (the machine they share with the broker is small).
const MAX_THREADS: usize = 64;
/// What `mb_per_s` counts, in the JSON.
const COUNTED_ACKED: &str = "record value+key bytes acknowledged within the measurement window, 10^6 bytes/s";
const COUNTED_SENT: &str =
    "record value+key bytes written to the socket within the measurement window (acks=0: nothing is acknowledged), 10^6 bytes/s";
const COUNTED_CONSUMED: &str =
    "record value+key bytes received by consumers within the measurement window, 10^6 bytes/s";

pub fn run_produce(args: &ProduceArgs) -> Result<(), String> {
    emit(&measure_produce(args)?, args.common.json)
}

/// `produce`'s measurement, not printed.
pub fn measure_produce(args: &ProduceArgs) -> Result<BrokerResult, String> {
    let cpu0 = own_cpu_seconds();
    let c = &args.common;
    validate_common(c, false)?;
    validate_producer(&args.producer, c)?;
    let created = ensure_topic(c)?;
    let run_id = shared::new_run_id();
    let plans = producer_plans(c, &args.producer, run_id, None)?;
    let load = Load::run(c, Some(&args.producer), plans, Vec::new(), c.warmup, c.duration)?;
    let p = &args.producer;
    let produced = ProducedFigures::new(&load.producers, &load.clock, p);
    let mut result = BrokerResult::new("broker_produce", config(c, Some(p), 0, None), created);
    result.fill_produced(&produced, p, c);
    result.fill_over_time(load.series, load.phases, load.stalls);
    result.client_cpu_s = own_cpu_seconds() - cpu0;
    Ok(result)
}

pub fn run_e2e(args: &E2eArgs) -> Result<(), String> {
    let (result, failed) = measure_e2e(args)?;
    emit(&result, args.common.json)?;
    match failed {
        Some(why) => Err(format!("verification failed: {why}")),
        None => Ok(()),
    }
}

/// `e2e`'s measurement, not printed, and why the verification failed (if it did).
pub fn measure_e2e(args: &E2eArgs) -> Result<(BrokerResult, Option<String>), String> {
    let cpu0 = own_cpu_seconds();
    let c = &args.common;
    validate_common(c, true)?;
    validate_producer(&args.producer, c)?;
    validate_consumers(args.consumers, c)?;
    validate_group(args.group.as_deref(), args.consumers_paused_for)?;
    let created = ensure_topic(c)?;
    if let Some(group) = &args.group {
        start_group_at_end(c, group)?;
    }
    let run_id = shared::new_run_id();
    let p = &args.producer;
    let plans = producer_plans(c, p, run_id, None)?;
    let mode = || Mode::Verify { run_id, producers: p.producers as u32 };
    let mut consumers =
        consumer_plans(c, args.consumers, StartAt::Latest, args.fetch_max_bytes, args.consumers_paused_for, mode);
    for plan in &mut consumers {
        plan.group = args.group.clone();
        if c.target.is_kafka() && args.group.is_some() {
            // The group assigns them: any consumer may read any partition.
            plan.partitions = (0..c.layout().total()).collect();
        }
    }
    if args.consumers_paused_for >= c.warmup + c.duration {
        return Err("--consumers-paused-for must end before the run does (--warmup + --duration)".into());
    }
    let load = Load::run(c, Some(p), plans, consumers, c.warmup, c.duration)?;
    let produced = ProducedFigures::new(&load.producers, &load.clock, p);
    let extra = ConsumeExtra {
        from: None,
        prefill: None,
        fetch_max_bytes: args.fetch_max_bytes,
        paused_for: args.consumers_paused_for,
        group: args.group.clone(),
    };
    let mut result = BrokerResult::new("broker_e2e", config(c, Some(p), args.consumers, Some(extra)), created);
    result.fill_produced(&produced, p, c);
    let window = load.clock.end - load.clock.warm_end;
    let (bytes, records) = consumed_in_window(&load.consumers);
    result.consume_mb_per_s = Some(report::mb_per_s(bytes, window.as_secs_f64()));
    result.consume_records_per_s = Some(records as f64 / window.as_secs_f64());
    let mut e2e = report::latency_histogram();
    for t in &load.consumers {
        e2e.add(&t.e2e_latency).map_err(|e| format!("merging histograms: {e:?}"))?;
    }
    result.e2e_latency_us = Some(LatencySummary::with_p9999(&e2e));
    result.e2e_latency_curve_us = report::percentile_curve(&e2e);
    result.records_consumed = Some(load.consumers.iter().map(|t| t.run_records).sum());
    let verification = verify(&load.producers, &load.consumers, p.acks.acks(), c.layout().total());
    let failed = verification.failure();
    if verification.foreign_records > 0 {
        result.warnings.push(format!(
            "{} records in the topic were not written by this run (another writer?): the checks cover this run's records only",
            verification.foreign_records
        ));
    }
    result.verification = Some(verification);
    result.fill_over_time(load.series, load.phases, load.stalls);
    result.client_cpu_s = own_cpu_seconds() - cpu0;
    Ok((result, failed))
}

pub fn run_consume(args: &ConsumeArgs) -> Result<(), String> {
    let cpu0 = own_cpu_seconds();
    let c = &args.common;
    validate_common(c, false)?;
    validate_consumers(args.consumers, c)?;
    let created = ensure_topic(c)?;
    let mut warnings = Vec::new();
    if args.prefill > 0 {
        prefill(c, args.prefill)?;
    }
    if args.from == args::FromArg::Earliest {
        let available = records_available(c)?;
        if available == 0 {
            let what = if c.topics == 1 { format!("topic {}", c.topic) } else { format!("the {} topics", c.topics) };
            return Err(format!(
                "{what} empty: nothing to consume from the earliest offset; write into it first \
                 (keel-bench produce --topic {} ...) or pass --prefill BYTES",
                c.topic
            ));
        }
    }
    let stop_when_caught_up = args.from == args::FromArg::Earliest;
    let mode = || Mode::Throughput { stop_when_caught_up };
    let consumers = consumer_plans(c, args.consumers, args.from.start(), args.fetch_max_bytes, Duration::ZERO, mode);
    let load = Load::run(c, None, Vec::new(), consumers, c.warmup, c.duration)?;
    let clock = load.clock;
    let caught_up = load.consumers.iter().all(|t| t.caught_up_at.is_some());
    let window_end = if caught_up {
        load.consumers.iter().filter_map(|t| t.caught_up_at).max().unwrap_or(clock.end).min(clock.end)
    } else {
        clock.end
    };
    if window_end <= clock.warm_end {
        let read: u64 = load.consumers.iter().map(|t| t.bytes).sum();
        return Err(format!(
            "every record was read during the {:?} warmup ({} in all): nothing left to measure; \
             write more first (--prefill) or shorten --warmup",
            c.warmup,
            report::fmt_bytes(read)
        ));
    }
    let window = (window_end - clock.warm_end).as_secs_f64();
    let (bytes, records) = consumed_in_window(&load.consumers);
    let extra = ConsumeExtra {
        from: Some(args.from.name()),
        prefill: Some(args.prefill),
        fetch_max_bytes: args.fetch_max_bytes,
        paused_for: Duration::ZERO,
        group: None,
    };
    let mut result = BrokerResult::new("broker_consume", config(c, None, args.consumers, Some(extra)), created);
    result.counted = COUNTED_CONSUMED;
    result.elapsed_s = window;
    result.mb_per_s = report::mb_per_s(bytes, window);
    result.records_per_s = records as f64 / window;
    result.records_consumed = Some(load.consumers.iter().map(|t| t.records).sum());
    result.caught_up = Some(caught_up);
    let gaps: u64 = load.consumers.iter().map(|t| t.offset_gaps).sum();
    result.offset_gaps = Some(gaps);
    if gaps > 0 {
        warnings.push(format!("{gaps} records were not at the offset after the previous one of their partition"));
    }
    if records == 0 {
        warnings.push("no record was received in the measurement window".into());
    }
    result.warnings.extend(warnings);
    result.fill_over_time(load.series, load.phases, load.stalls);
    result.client_cpu_s = own_cpu_seconds() - cpu0;
    emit(&result, c.json)
}

/// Checks a `produce` (no consumers) or `e2e` run's arguments.
pub fn validate(c: &CommonArgs, p: &ProducerArgs, consumers: usize) -> Result<(), String> {
    validate_common(c, consumers > 0)?;
    validate_producer(p, c)?;
    if consumers > 0 {
        validate_consumers(consumers, c)?;
    }
    Ok(())
}

fn validate_common(c: &CommonArgs, e2e: bool) -> Result<(), String> {
    if c.topic.is_empty() {
        return Err("--topic must not be empty".into());
    }
    if c.partitions == 0 || c.partitions > 100_000 {
        return Err("--partitions must be between 1 and 100000".into());
    }
    if c.topics == 0 || u64::from(c.topics) * u64::from(c.partitions) > 100_000 {
        return Err(
            "--topics must be at least 1, with at most 100000 partitions in all (--topics × --partitions)".into()
        );
    }
    let min = if e2e { STAMP_LEN as u64 } else { 1 };
    let sizes = c.value_sizes();
    if sizes.min() < min || sizes.max() > (16 << 20) {
        let flag = if c.record_bytes_dist.is_some() { "--record-bytes-dist's sizes" } else { "--record-bytes" };
        return Err(format!(
            "{flag} must be between {min} and 16 MiB{}",
            if e2e { " (e2e values carry a 28-byte stamp)" } else { "" }
        ));
    }
    if !(0.0..=1.0).contains(&c.value_compressibility) {
        return Err("--value-compressibility must be between 0 and 1".into());
    }
    if c.key_bytes > (64 << 10) {
        return Err("--key-bytes must be at most 64 KiB".into());
    }
    if c.key_count == 0 || c.key_count > 10_000_000 {
        return Err("--key-count must be between 1 and 10000000".into());
    }
    if !(c.zipf_exponent.is_finite() && c.zipf_exponent > 0.0) {
        return Err("--zipf-exponent must be a positive number".into());
    }
    if c.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    Ok(())
}

fn validate_producer(p: &ProducerArgs, c: &CommonArgs) -> Result<(), String> {
    if p.producers == 0 || p.producers > MAX_THREADS {
        return Err(format!("--producers must be between 1 and {MAX_THREADS}"));
    }
    if let Some(rate) = p.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err("--rate must be a positive number of records per second".into());
        }
    }
    let largest = c.value_sizes().max() as usize;
    let record = keel_client::BatchWriter::record_bytes(0, 0, Some(c.key_bytes as usize), Some(largest))
        + keel_storage::batch::HEADER_LEN;
    if (p.max_request_bytes as usize) < record {
        return Err(format!(
            "--max-request-bytes {} cannot hold the largest record ({record} bytes in a batch)",
            p.max_request_bytes
        ));
    }
    if p.batch_bytes == 0 {
        return Err("--batch-bytes must be positive".into());
    }
    if p.producer_partitions == args::ProducerPartitionsArg::ByShard && (c.target.is_kafka() || c.key_bytes > 0) {
        return Err("--producer-partitions by-shard needs a keel:// target and keyless records (--key-bytes 0)".into());
    }
    if !p.linger.is_zero() && p.rate.is_none() && !c.target.is_kafka() {
        eprintln!("note: --linger only applies to the open loop (--rate); closed-loop requests are always full");
    }
    Ok(())
}

/// Checks `--group` (and a workload's `consumers.group`).
pub fn validate_group(group: Option<&str>, paused_for: Duration) -> Result<(), String> {
    let Some(group) = group else { return Ok(()) };
    if group.trim().is_empty() || group.len() > 255 {
        return Err("--group must be a name of 1 to 255 characters".into());
    }
    if !paused_for.is_zero() {
        // Pausing acts on the partitions assigned at the time; a group assigns them later.
        return Err("--group and --consumers-paused-for do not go together (yet)".into());
    }
    Ok(())
}

/// Commits the topic's high watermarks to `group` before anyone consumes, so the group's
/// consumers start at the end like group-less ones (and a member that takes over a partition no
/// one has read yet starts there, not at the topic's start or wherever it happens to be then).
fn start_group_at_end(c: &CommonArgs, group: &str) -> Result<(), String> {
    if c.target.is_kafka() {
        return kafka::commit_high_watermarks(c, group);
    }
    let mut client = shared::connect(&c.target, "keel-bench-admin")?;
    for topic in c.layout().names() {
        let info = client.topic(topic).map_err(|e| format!("cannot look up topic {topic}: {e}"))?;
        let ends: Vec<(u32, u64)> = info.partitions.iter().map(|p| (p.partition, p.high_watermark)).collect();
        client.commit_offsets(group, topic, &ends).map_err(|e| format!("cannot commit to group {group}: {e}"))?;
    }
    Ok(())
}

fn validate_consumers(m: usize, c: &CommonArgs) -> Result<(), String> {
    if m == 0 || m > MAX_THREADS {
        return Err(format!("--consumers must be between 1 and {MAX_THREADS}"));
    }
    let partitions = c.layout().total();
    if m > partitions as usize {
        return Err(format!("--consumers {m} is more than the {partitions} partitions: some would read nothing"));
    }
    Ok(())
}

/// Makes sure every topic of the run exists as asked; returns whether any was created.
fn ensure_topic(c: &CommonArgs) -> Result<bool, String> {
    let mut created = false;
    for topic in c.layout().names() {
        created |= ensure_one_topic(c, topic)?;
    }
    Ok(created)
}

/// Makes sure `topic` exists as asked; returns whether it was created.
fn ensure_one_topic(c: &CommonArgs, topic: &str) -> Result<bool, String> {
    if c.target.is_kafka() {
        return kafka::ensure_topic(c, topic);
    }
    let mut client = shared::connect(&c.target, "keel-bench-admin")?;
    match client.topic(topic) {
        Ok(info) => {
            if info.partitions.len() != c.partitions as usize {
                return Err(format!(
                    "topic {} already exists with {} partitions, not --partitions {}: use another --topic or delete it \
                     (keel topic delete {})",
                    topic,
                    info.partitions.len(),
                    c.partitions,
                    topic
                ));
            }
            let configs =
                client.describe_configs(topic).map_err(|e| format!("cannot read the configs of {}: {e}", topic))?;
            for (key, want) in &c.topic_config {
                match configs.iter().find(|(k, _, _)| k == key) {
                    Some((_, have, _)) if have == want => {}
                    Some((_, have, _)) => {
                        return Err(format!(
                            "topic {} already exists with {key}={have}, not {want}: use another --topic, delete it \
                             (keel topic delete {}) or change it (keel topic alter-config)",
                            topic, topic
                        ))
                    }
                    None => return Err(format!("the broker does not know topic config {key:?}")),
                }
            }
            Ok(false)
        }
        Err(ClientError::UnknownTopic(_)) => {
            client
                .create_topic(topic, c.partitions, &c.topic_config)
                .map_err(|e| format!("cannot create topic {}: {e}", topic))?;
            Ok(true)
        }
        Err(e) => Err(format!("cannot look up topic {}: {e}", topic)),
    }
}

/// Deletes `topic` (a benchmark's own, after its run).
/// What the broker at `target` says it is, for the record of a run: keel:// its software version
/// (native ApiVersions); kafka:// see [`kafka_wire::KafkaWire::describe`].
pub fn describe_broker(target: &args::Target) -> Result<serde_json::Value, String> {
    if target.is_kafka() {
        return kafka_wire::KafkaWire::describe(target);
    }
    let client = shared::connect(target, "keel-bench-describe")?;
    Ok(serde_json::json!({ "protocol": "keel", "software": "keel", "version": client.broker_version() }))
}

pub fn delete_topic(target: &args::Target, topic: &str) -> Result<(), String> {
    if target.is_kafka() {
        return kafka::delete_topic(target, topic);
    }
    let mut client = shared::connect(target, "keel-bench-admin")?;
    client.delete_topic(topic).map_err(|e| e.to_string())
}

/// Records between the log start and the high watermark, over every partition.
fn records_available(c: &CommonArgs) -> Result<u64, String> {
    if c.target.is_kafka() {
        return kafka::records_available(c);
    }
    let mut client = shared::connect(&c.target, "keel-bench-admin")?;
    let mut records = 0;
    for topic in c.layout().names() {
        let info = client.topic(topic).map_err(|e| format!("cannot look up topic {topic}: {e}"))?;
        records += info.partitions.iter().map(|p| p.high_watermark.saturating_sub(p.log_start_offset)).sum::<u64>();
    }
    Ok(records)
}

fn producer_plans(
    c: &CommonArgs,
    p: &ProducerArgs,
    run_id: u64,
    stop_after_bytes: Option<u64>,
) -> Result<Vec<ProducerPlan>, String> {
    let n = p.producers;
    let own_partitions: Vec<Option<Vec<u32>>> = match p.producer_partitions {
        args::ProducerPartitionsArg::All => vec![None; n],
        args::ProducerPartitionsArg::ByShard => {
            let shards = partitions_by_shard(c)?;
            if !n.is_multiple_of(shards.len()) {
                return Err(format!(
                    "--producer-partitions by-shard: --producers {n} is not a multiple of the {} shards owning the partitions",
                    shards.len()
                ));
            }
            (0..n).map(|i| Some(shards[i % shards.len()].clone())).collect()
        }
    };
    let per_producer = p.rate.map(|r| r / n as f64);
    // With phases, each producer's rate phase by phase (the first phase's rate in the warmup).
    let rate_parts: Vec<(Duration, f64)> = match p.rate {
        Some(base) => c
            .phase_spans()
            .iter()
            .zip(&c.phases)
            .map(|(&(_, end), phase)| (end, phase.rate.unwrap_or(base) / n as f64))
            .collect(),
        None => Vec::new(),
    };
    Ok((0..n)
        .map(|i| ProducerPlan {
            id: i as u32,
            target: c.target.clone(),
            topics: c.layout(),
            acks: p.acks.acks(),
            batch_bytes: p.batch_bytes as usize,
            max_request_bytes: p.max_request_bytes as usize,
            linger: p.linger,
            kafka_wire: c.target.is_kafka() && p.kafka_producer == args::KafkaProducerArg::Wire,
            value_sizes: c.value_sizes(),
            value_compressibility: c.value_compressibility,
            compression: p.compression.codec(),
            keys: c.key_spec(),
            rate: per_producer,
            // Producer i starts i/n of an interval after producer 0: the n schedules interleave.
            share: i as f64 / n as f64,
            rate_parts: rate_parts.clone(),
            run_id,
            stop_after_bytes,
            own_partitions: own_partitions[i].clone(),
        })
        .collect())
}

/// The topics' partitions (global numbers) grouped by the shard that owns them, shard by shard
/// (shards owning none left out), from the native target's Metadata.
fn partitions_by_shard(c: &CommonArgs) -> Result<Vec<Vec<u32>>, String> {
    let layout = c.layout();
    let mut client = shared::connect(&c.target, "keel-bench-admin")?;
    let mut by_shard: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
    for (t, name) in layout.names().iter().enumerate() {
        let info = client.topic(name).map_err(|e| format!("cannot look up topic {name}: {e}"))?;
        for p in &info.partitions {
            by_shard.entry(p.shard).or_default().push(layout.global(t, p.partition));
        }
    }
    Ok(by_shard.into_values().collect())
}

fn consumer_plans(
    c: &CommonArgs,
    m: usize,
    start: StartAt,
    fetch_max_bytes: u64,
    paused_for: Duration,
    mode: impl Fn() -> Mode,
) -> Vec<ConsumerPlan> {
    // When the consumers read nothing: the catch-up read's pause, and the phases that pause them.
    let mut pauses: Vec<(Duration, Duration)> = Vec::new();
    if !paused_for.is_zero() {
        pauses.push((Duration::ZERO, paused_for));
    }
    pauses.extend(c.phase_spans().into_iter().zip(&c.phases).filter(|(_, p)| p.consumers_paused).map(|(s, _)| s));
    let layout = c.layout();
    (0..m)
        .map(|j| ConsumerPlan {
            id: j as u32,
            target: c.target.clone(),
            topics: layout.clone(),
            partitions: (0..layout.total()).filter(|p| *p as usize % m == j).collect(),
            start,
            fetch_max_bytes: u32::try_from(fetch_max_bytes).unwrap_or(u32::MAX),
            mode: mode(),
            pauses: pauses.clone(),
            group: None,
        })
        .collect()
}

/// `consume --prefill`: two closed-loop producers with acks=1 until `bytes` of values + keys are
/// acknowledged.
fn prefill(c: &CommonArgs, bytes: u64) -> Result<(), String> {
    let p = ProducerArgs {
        producers: 2,
        rate: None,
        acks: args::AcksArg::One,
        batch_bytes: 64 << 10,
        max_request_bytes: 1 << 20,
        linger: Duration::ZERO,
        kafka_producer: args::KafkaProducerArg::Librdkafka,
        compression: args::CompressionArg::None,
        producer_partitions: args::ProducerPartitionsArg::All,
    };
    let plans = producer_plans(c, &p, shared::new_run_id(), Some(bytes))?;
    let quiet = CommonArgs { report_interval: Duration::ZERO, ..c.clone() };
    let t0 = Instant::now();
    let load = Load::run(&quiet, None, plans, Vec::new(), Duration::ZERO, Duration::from_secs(86_400))?;
    let acked: u64 = load.producers.iter().map(|t| t.acked).sum();
    let secs = t0.elapsed().as_secs_f64();
    let written: u64 = load.producers.iter().map(|t| t.bytes).sum();
    eprintln!(
        "prefill: {acked} records ({}) written to {} in {secs:.1} s ({:.1} MB/s); not part of the figures",
        report::fmt_bytes(written),
        c.topic,
        report::mb_per_s(written, secs)
    );
    Ok(())
}

/// A run of producer and consumer threads, finished.
struct Load {
    clock: Clock,
    producers: Vec<ProducerTally>,
    consumers: Vec<ConsumerTally>,
    /// One sample per second of the run (warmup and drain included).
    series: Vec<SecondSample>,
    /// A workload with phases: the figures of each.
    phases: Vec<PhaseFigures>,
    /// The machine's stalls in the measurement window (`None`: the watchdog could not run).
    stalls: Option<StallSummary>,
}

/// One phase's figures, from the per-second samples and histograms of the seconds it covers.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    pub name: String,
    /// The seconds after t0 the figures cover (the first phase's are after the warmup).
    pub from_s: u64,
    pub to_s: u64,
    /// Records/s the open loop offered in the phase (absent: closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_records_per_s: Option<f64>,
    /// "reading" or "paused".
    pub consumers: &'static str,
    /// Mean over the phase's seconds (value + key bytes, 10^6 bytes/s).
    pub produced_mb_per_s: f64,
    pub produced_records_per_s: f64,
    pub consumed_mb_per_s: f64,
    pub consumed_records_per_s: f64,
    /// Of the records acknowledged (read) during the phase, µs, 2 significant digits. Absent if
    /// none were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_latency_us: Option<LatencySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_latency_us: Option<LatencySummary>,
}

/// The figures of each of `c`'s phases.
fn phase_figures(
    c: &CommonArgs,
    p: Option<&ProducerArgs>,
    series: &[SecondSample],
    acks: &BTreeMap<u64, hdrhistogram::Histogram<u64>>,
    e2e: &BTreeMap<u64, hdrhistogram::Histogram<u64>>,
) -> Vec<PhaseFigures> {
    let merged = |by_second: &BTreeMap<u64, hdrhistogram::Histogram<u64>>, from: u64, to: u64| {
        let mut h = shared::second_histogram();
        for (_, s) in by_second.range(from..to) {
            // Same bounds and precision: adding cannot fail.
            let _ = h.add(s);
        }
        (!h.is_empty()).then(|| LatencySummary::with_p9999(&h))
    };
    let warmup_s = c.warmup.as_secs();
    c.phase_spans()
        .iter()
        .zip(&c.phases)
        .enumerate()
        .map(|(i, (&(start, end), phase))| {
            let from_s = if i == 0 { warmup_s } else { start.as_secs() };
            let to_s = end.as_secs();
            // Sample t covers second t - 1.
            let seconds: Vec<&SecondSample> = series.iter().filter(|s| (from_s + 1..=to_s).contains(&s.t_s)).collect();
            let mean = |f: fn(&SecondSample) -> f64| {
                seconds.iter().fold(0.0, |sum, s| sum + f(s)) / seconds.len().max(1) as f64
            };
            PhaseFigures {
                name: phase.name.clone(),
                from_s,
                to_s,
                offered_records_per_s: p.and_then(|p| phase.rate.or(p.rate)),
                consumers: if phase.consumers_paused { "paused" } else { "reading" },
                produced_mb_per_s: mean(|s| s.produced_mb_per_s),
                produced_records_per_s: mean(|s| s.produced_records_per_s),
                consumed_mb_per_s: mean(|s| s.consumed_mb_per_s),
                consumed_records_per_s: mean(|s| s.consumed_records_per_s),
                ack_latency_us: merged(acks, from_s, to_s),
                e2e_latency_us: merged(e2e, from_s, to_s),
            }
        })
        .collect()
}

/// One second of the run: what was acknowledged and consumed in it, and the p99 latencies of
/// what completed in it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SecondSample {
    /// Seconds since the load started (the sample covers [t_s - 1, t_s)).
    pub t_s: u64,
    /// Whether the second is inside the measurement window.
    pub measured: bool,
    pub produced_mb_per_s: f64,
    pub produced_records_per_s: f64,
    pub consumed_mb_per_s: f64,
    pub consumed_records_per_s: f64,
    /// p99 of produce-ack latency of the records acknowledged in this second, µs.
    pub ack_p99_us: Option<u64>,
    /// p99 of end-to-end latency of the records read in this second, µs.
    pub e2e_p99_us: Option<u64>,
    /// Milliseconds of this second in which the machine ran nothing of keel-bench (see
    /// [`stalls`]); `None` without the watchdog.
    pub stalled_ms: Option<f64>,
    /// Share of all CPU time in this second that the hypervisor stole (`/proc/stat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steal_share: Option<f64>,
}

impl Load {
    /// Starts every thread, lets them set up, starts the clock, prints progress every
    /// `--report-interval`, and collects what they did. The first error of any thread fails the
    /// run.
    fn run(
        c: &CommonArgs,
        producer_args: Option<&ProducerArgs>,
        producers: Vec<ProducerPlan>,
        consumers: Vec<ConsumerPlan>,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Load, String> {
        let partitions = c.layout().total();
        let shared = Arc::new(Shared::new(producers.len() + consumers.len(), producers.len(), partitions));
        let spawn_err = |e: std::io::Error| format!("cannot start a thread: {e}");
        let mut p_handles: Vec<JoinHandle<ProducerTally>> = Vec::new();
        let mut c_handles: Vec<JoinHandle<ConsumerTally>> = Vec::new();
        // Consumers first: in e2e they must be positioned before anything is produced (the start
        // gate also guarantees it).
        for plan in consumers {
            let s = shared.clone();
            let name = format!("consumer-{}", plan.id);
            c_handles
                .push(std::thread::Builder::new().name(name).spawn(move || consumer::run(plan, s)).map_err(spawn_err)?);
        }
        for plan in producers {
            let s = shared.clone();
            let name = format!("producer-{}", plan.id);
            p_handles
                .push(std::thread::Builder::new().name(name).spawn(move || producer::run(plan, s)).map_err(spawn_err)?);
        }
        let watchdog = stalls::Watchdog::start();
        let started = shared.start(warmup, duration);
        let mut series = Vec::new();
        if let Ok(clock) = &started {
            series = monitor(&shared, clock, c.report_interval, &watchdog, || {
                p_handles.iter().all(|h| h.is_finished()) && c_handles.iter().all(|h| h.is_finished())
            });
        }
        let watched = watchdog.finish();
        let panicked = || "a load thread panicked".to_string();
        let producers =
            p_handles.into_iter().map(|h| h.join().map_err(|_| panicked())).collect::<Result<Vec<_>, _>>()?;
        let consumers =
            c_handles.into_iter().map(|h| h.join().map_err(|_| panicked())).collect::<Result<Vec<_>, _>>()?;
        let clock = started?;
        if let Some(e) = shared.first_error() {
            return Err(e);
        }
        let (acks, e2e) = (shared.ack_by_second.take(), shared.e2e_by_second.take());
        let p99 = |h: Option<&hdrhistogram::Histogram<u64>>| h.map(|h| h.value_at_quantile(0.99));
        for sample in &mut series {
            // Sample t covers second t - 1 of the histograms (seconds counted from 0).
            let second = sample.t_s.saturating_sub(1);
            sample.ack_p99_us = p99(acks.get(&second));
            sample.e2e_p99_us = p99(e2e.get(&second));
        }
        let mut stalls = None;
        if let Some((seen, realtime)) = watched {
            for sample in &mut series {
                let end = clock.t0 + Duration::from_secs(sample.t_s);
                sample.stalled_ms = Some(stalls::stalled_ms_in_second(&seen, end));
            }
            stalls = Some(StallSummary::of(&seen, clock.warm_end, clock.end, realtime, window_steal(&series)));
        }
        let phases = phase_figures(c, producer_args, &series, &acks, &e2e);
        Ok(Load { clock, producers, consumers, series, phases, stalls })
    }
}

/// Waits until `finished()`, printing a progress line to stderr every `interval` (if not zero),
/// and samples the progress counters and the CPU times at every whole second since t0 (the time
/// series).
fn monitor(
    shared: &Shared,
    clock: &Clock,
    interval: Duration,
    watchdog: &stalls::Watchdog,
    finished: impl Fn() -> bool,
) -> Vec<SecondSample> {
    let tick = Duration::from_millis(50);
    // The progress counters (records, bytes produced; records, bytes consumed) at the last
    // progress line and at the last whole second.
    let mut last_line = Snapshot { at: Instant::now(), counters: [0; 4], cpu: None };
    let mut stalled_at_last_line = watchdog.stalled();
    let mut last_second = Snapshot { at: clock.t0, counters: [0; 4], cpu: CpuTimes::read() };
    let mut series = Vec::new();
    while !finished() {
        // Wake at the next whole second (or sooner, to notice the end): a sample's counters are
        // read as close to its second's end as the scheduler allows.
        let next = clock.t0 + Duration::from_secs(series.len() as u64 + 1);
        let now = Instant::now();
        std::thread::sleep(next.saturating_duration_since(now).min(tick).max(Duration::from_micros(100)));
        let mut now = Snapshot::take(shared);
        let mut next_second = next;
        if now.at >= next_second {
            now.cpu = CpuTimes::read();
            // Every whole second since the last sample gets one, labelled by the second it
            // covers: when this thread was held up for longer than a second (a loaded machine),
            // those seconds share the mean rate of the stretch rather than shift the ones after.
            let rate = |i: usize| now.rate(&last_second, i);
            let steal_share = match (now.cpu, last_second.cpu) {
                (Some(now), Some(then)) => now.steal_share_since(&then),
                _ => None,
            };
            while now.at >= next_second {
                series.push(SecondSample {
                    t_s: series.len() as u64 + 1,
                    measured: next_second > clock.warm_end && next_second <= clock.end,
                    produced_mb_per_s: rate(1) / 1e6,
                    produced_records_per_s: rate(0),
                    consumed_mb_per_s: rate(3) / 1e6,
                    consumed_records_per_s: rate(2),
                    ack_p99_us: None,
                    e2e_p99_us: None,
                    stalled_ms: None,
                    steal_share,
                });
                next_second += Duration::from_secs(1);
            }
            last_second = now;
        }
        if interval.is_zero() || now.at - last_line.at < interval {
            continue;
        }
        let phase = if now.at < clock.warm_end {
            "warmup"
        } else if now.at < clock.end {
            "measuring"
        } else {
            "draining"
        };
        let elapsed = now.at.saturating_duration_since(clock.t0);
        let second = elapsed.as_secs().saturating_sub(1);
        let p99 = |h: &shared::SecondHistograms, what: &str| {
            h.p99(second).map(|us| format!("; {what} p99 {}", report::fmt_us(us))).unwrap_or_default()
        };
        let rate = |i: usize| now.rate(&last_line, i);
        let stalled = watchdog.stalled();
        let stalled_now = stalled.saturating_sub(stalled_at_last_line);
        stalled_at_last_line = stalled;
        eprintln!(
            "[{:>6.1} s {phase}] produced {:.1} MB/s, {:.0} records/s; consumed {:.1} MB/s, {:.0} records/s{}{}{}",
            elapsed.as_secs_f64(),
            rate(1) / 1e6,
            rate(0),
            rate(3) / 1e6,
            rate(2),
            p99(&shared.ack_by_second, "ack"),
            p99(&shared.e2e_by_second, "e2e"),
            if stalled_now.is_zero() {
                String::new()
            } else {
                format!("; machine stalled {} ms", stalled_now.as_millis())
            },
        );
        last_line = now;
    }
    series
}

/// The CPU steal share of the measurement window: the mean over its seconds (each second's
/// share is of the same CPU time, so the mean is the window's share).
fn window_steal(series: &[SecondSample]) -> Option<f64> {
    let shares: Vec<f64> = series.iter().filter(|s| s.measured).filter_map(|s| s.steal_share).collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
}

/// The shared progress counters at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    /// Records and bytes produced, records and bytes consumed.
    counters: [u64; 4],
    /// The machine's CPU times (read at whole seconds only).
    cpu: Option<CpuTimes>,
}

impl Snapshot {
    fn take(shared: &Shared) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            counters: [
                shared.produced_records.load(Ordering::Relaxed),
                shared.produced_bytes.load(Ordering::Relaxed),
                shared.consumed_records.load(Ordering::Relaxed),
                shared.consumed_bytes.load(Ordering::Relaxed),
            ],
            cpu: None,
        }
    }

    /// Counter `i` per second since `earlier`.
    fn rate(&self, earlier: &Snapshot, i: usize) -> f64 {
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-9);
        (self.counters[i] - earlier.counters[i]) as f64 / secs
    }
}

fn consumed_in_window(consumers: &[ConsumerTally]) -> (u64, u64) {
    (consumers.iter().map(|t| t.window_bytes).sum(), consumers.iter().map(|t| t.window_records).sum())
}

/// The producers' figures, merged.
struct ProducedFigures {
    window_s: f64,
    window_bytes: u64,
    window_records: u64,
    ack_latency: Option<LatencySummary>,
    ack_curve: Vec<(f64, u64)>,
    send_delay: Option<LatencySummary>,
    sent: u64,
    acked: u64,
    not_sent: u64,
    requests: u64,
    batches: u64,
}

impl ProducedFigures {
    fn new(tallies: &[ProducerTally], clock: &Clock, p: &ProducerArgs) -> ProducedFigures {
        let mut ack = report::latency_histogram();
        let mut delay = report::latency_histogram();
        for t in tallies {
            // Same bounds and precision: adding cannot fail.
            let _ = ack.add(&t.ack_latency);
            let _ = delay.add(&t.send_delay);
        }
        let sum = |f: fn(&ProducerTally) -> u64| tallies.iter().map(f).sum::<u64>();
        ProducedFigures {
            window_s: (clock.end - clock.warm_end).as_secs_f64(),
            window_bytes: sum(|t| t.window_bytes),
            window_records: sum(|t| t.window_records),
            ack_latency: (p.acks != args::AcksArg::Zero).then(|| LatencySummary::with_p9999(&ack)),
            ack_curve: report::percentile_curve(&ack),
            send_delay: p.rate.is_some().then(|| LatencySummary::with_p9999(&delay)),
            sent: sum(|t| t.sent),
            acked: sum(|t| t.acked),
            not_sent: sum(|t| t.not_sent),
            requests: sum(|t| t.requests),
            batches: sum(|t| t.batches),
        }
    }
}

/// The e2e checks, over every (producer, partition).
#[derive(Debug, Clone, Serialize)]
struct Verification {
    /// "acked" (records the broker acknowledged) or "sent" (acks=0: records written).
    checked_against: &'static str,
    /// Records that had to be read: acknowledged (or sent, with acks=0).
    expected: u64,
    /// Of those, how many were read (once or more).
    read: u64,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Records whose offset was not one past the previous record read from the partition.
    offset_gaps: u64,
    /// (producer, partition) pairs whose records were read at other offsets than acknowledged.
    offset_mismatches: u64,
    /// Acknowledged base offsets not above the same producer's previous batch in the partition.
    offset_regressions: u64,
    /// Records read that were sent but never acknowledged (a failed request).
    read_unacknowledged: u64,
    /// `--group` on kafka://: records read again, by another consumer or the same one, after a
    /// rebalance moved their partition (from the last committed offset). Not an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    redelivered: Option<u64>,
    /// Records in the topic not written by this run.
    foreign_records: u64,
    ok: bool,
}

impl Verification {
    fn failure(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        Some(format!(
            "{} missing, {} duplicates, {} out of order, {} offset gaps, {} offset mismatches, {} offset regressions \
             (of {} records {})",
            self.missing,
            self.duplicates,
            self.out_of_order,
            self.offset_gaps,
            self.offset_mismatches,
            self.offset_regressions,
            self.expected,
            self.checked_against
        ))
    }
}

fn verify(producers: &[ProducerTally], consumers: &[ConsumerTally], acks: Acks, partitions: u32) -> Verification {
    let acked = acks != Acks::None;
    // Partition → (consumer, index among its partitions) of every consumer that may read it: one,
    // unless a consumer group moves partitions between them.
    let mut owners = vec![Vec::new(); partitions as usize];
    for (ci, t) in consumers.iter().enumerate() {
        for (li, &p) in t.partitions.iter().enumerate() {
            owners[p as usize].push((ci, li));
        }
    }
    let grouped = owners.iter().any(|o| o.len() > 1);
    let mut v = Verification {
        checked_against: if acked { "acked" } else { "sent" },
        expected: 0,
        read: 0,
        missing: 0,
        duplicates: consumers.iter().map(|t| t.duplicates).sum(),
        out_of_order: consumers.iter().map(|t| t.out_of_order).sum(),
        offset_gaps: consumers.iter().map(|t| t.offset_gaps).sum(),
        offset_mismatches: 0,
        offset_regressions: producers.iter().map(|t| t.offset_regressions).sum(),
        read_unacknowledged: 0,
        redelivered: grouped.then(|| consumers.iter().map(|t| t.redelivered).sum()),
        foreign_records: consumers.iter().map(|t| t.foreign).sum(),
        ok: false,
    };
    for (pi, t) in producers.iter().enumerate() {
        for (p, pt) in t.per_partition.iter().enumerate() {
            let expected = if acked { pt.acked } else { pt.sent };
            let pairs: Vec<&SeenPair> = owners[p]
                .iter()
                .map(|&(ci, li)| &consumers[ci].seen[pi * consumers[ci].partitions.len() + li])
                .collect();
            let merged;
            let pair = match pairs[..] {
                [] => {
                    v.expected += expected;
                    v.missing += expected;
                    continue;
                }
                [one] => one,
                _ => {
                    // Read by several consumers: each record counts once, at its first reading.
                    merged = SeenPair::merge(&pairs);
                    let readings: u64 = pairs.iter().map(|s| s.distinct).sum();
                    *v.redelivered.get_or_insert(0) += readings - merged.distinct;
                    &merged
                }
            };
            let read = pair.count_below(expected);
            v.expected += expected;
            v.read += read;
            v.missing += expected - read;
            v.read_unacknowledged += pair.distinct - read;
            // (A merged pair's offset sum is not meaningful when a record was read twice.)
            let comparable = pairs.len() == 1 || pairs.iter().filter(|s| s.distinct > 0).count() <= 1;
            if acked && comparable && read == expected && pair.distinct == expected && pair.offset_sum != pt.offset_sum
            {
                v.offset_mismatches += 1;
            }
        }
    }
    v.ok = v.missing == 0
        && v.duplicates == 0
        && v.out_of_order == 0
        && v.offset_gaps == 0
        && v.offset_mismatches == 0
        && v.offset_regressions == 0;
    v
}

/// The command configuration, in every result.
#[derive(Debug, Clone, Serialize)]
struct RunConfig {
    target: String,
    /// The topic, or with `topics` > 1 the stem of their names (`topic-0`, `topic-1`, ...).
    topic: String,
    topics: u32,
    /// Partitions of each topic.
    partitions: u32,
    topic_config: BTreeMap<String, String>,
    producers: usize,
    consumers: usize,
    /// Every value's size; null when sizes follow `value_sizes`.
    record_bytes: Option<u64>,
    /// Value size distribution (`--record-bytes-dist` syntax), if not one fixed size.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_sizes: Option<String>,
    /// Fraction of a value's bytes (after the stamp) repeating earlier ones (`--value-compressibility`).
    value_compressibility: f64,
    key_bytes: u64,
    /// With keys: round-robin, uniform or zipf over `key_count` keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_distribution: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zipf_exponent: Option<f64>,
    /// Records/s offered in total (open loop); null = closed loop.
    rate: Option<f64>,
    /// "0", "1" or "all"; null for `consume`.
    acks: Option<&'static str>,
    /// Seconds measured, after `warmup` seconds.
    duration: f64,
    warmup: f64,
    /// "open" or "closed"; null for `consume`.
    #[serde(rename = "loop")]
    load_loop: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_request_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    linger_ms: Option<f64>,
    /// Producers' batch codec: "none", "gzip", "snappy", "lz4" or "zstd".
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<&'static str>,
    /// `--producer-partitions`: "all" or "by-shard".
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_partitions: Option<&'static str>,
    /// kafka:// producers: "librdkafka" or "wire" (`--kafka-producer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_producer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefill: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fetch_max_bytes: Option<u64>,
    /// e2e: seconds the consumers waited before reading (the catch-up read).
    #[serde(skip_serializing_if = "Option::is_none")]
    consumers_paused_s: Option<f64>,
    /// e2e `--group`: the consumer group.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

struct ConsumeExtra {
    from: Option<&'static str>,
    prefill: Option<u64>,
    fetch_max_bytes: u64,
    paused_for: Duration,
    group: Option<String>,
}

fn config(c: &CommonArgs, p: Option<&ProducerArgs>, consumers: usize, extra: Option<ConsumeExtra>) -> RunConfig {
    RunConfig {
        target: c.target.to_string(),
        topic: c.topic.clone(),
        topics: c.topics,
        partitions: c.partitions,
        topic_config: c.topic_config.iter().cloned().collect(),
        producers: p.map_or(0, |p| p.producers),
        consumers,
        record_bytes: c.value_sizes().fixed(),
        value_sizes: c.record_bytes_dist.filter(|d| d.fixed().is_none()).map(|d| d.to_string()),
        value_compressibility: c.value_compressibility,
        key_bytes: c.key_bytes,
        key_distribution: (c.key_bytes > 0).then(|| c.key_distribution.name()),
        key_count: (c.key_bytes > 0).then_some(c.key_count),
        zipf_exponent: (c.key_bytes > 0 && c.key_distribution == keys::KeyDistribution::Zipf)
            .then_some(c.zipf_exponent),
        rate: p.and_then(|p| p.rate),
        acks: p.map(|p| p.acks.name()),
        duration: c.duration.as_secs_f64(),
        warmup: c.warmup.as_secs_f64(),
        load_loop: p.map(|p| if p.rate.is_some() { "open" } else { "closed" }),
        batch_bytes: p.map(|p| p.batch_bytes),
        max_request_bytes: p.map(|p| p.max_request_bytes),
        linger_ms: p.map(|p| p.linger.as_secs_f64() * 1e3),
        compression: p.map(|p| p.compression.codec().name()),
        producer_partitions: p.map(|p| p.producer_partitions.name()),
        kafka_producer: p.filter(|_| c.target.is_kafka()).map(|p| match p.kafka_producer {
            args::KafkaProducerArg::Librdkafka => "librdkafka",
            args::KafkaProducerArg::Wire => "wire",
        }),
        from: extra.as_ref().and_then(|e| e.from),
        prefill: extra.as_ref().and_then(|e| e.prefill),
        fetch_max_bytes: extra.as_ref().map(|e| e.fetch_max_bytes),
        consumers_paused_s: extra.as_ref().filter(|e| !e.paused_for.is_zero()).map(|e| e.paused_for.as_secs_f64()),
        group: extra.and_then(|e| e.group),
    }
}

/// The result of `produce`, `consume` or `e2e`, also the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerResult {
    /// "broker_produce", "broker_consume" or "broker_e2e".
    kind: &'static str,
    #[serde(flatten)]
    config: RunConfig,
    /// The topic did not exist and this run created it.
    topic_created: bool,
    /// What `mb_per_s` and `records_per_s` count.
    counted: &'static str,
    /// Seconds of the measurement window.
    elapsed_s: f64,
    mb_per_s: f64,
    records_per_s: f64,
    /// Open loop: what the schedule offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_records_per_s: Option<f64>,
    /// Produce-acknowledgement latency per record, µs; null with acks=0 and for `consume`.
    latency_us: Option<LatencySummary>,
    /// Open loop: actual minus intended send time per record, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    send_delay_us: Option<LatencySummary>,
    /// e2e: read time minus intended send time per record, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    e2e_latency_us: Option<LatencySummary>,
    /// (percentile, µs) points of the produce-ack latency distribution, for plots.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    latency_curve_us: Vec<(f64, u64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    e2e_latency_curve_us: Vec<(f64, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consume_mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consume_records_per_s: Option<f64>,
    /// Whole run, warmup and drain included.
    #[serde(skip_serializing_if = "Option::is_none")]
    records_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records_acked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records_consumed: Option<u64>,
    /// Open loop: records scheduled but not sent by the drain limit (recorded with the latency
    /// they had reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    records_not_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records_per_request: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions_per_request: Option<f64>,
    /// `consume --from earliest`: every consumer reached the high watermarks seen at the start
    /// before the duration was over (the window then ends there).
    #[serde(skip_serializing_if = "Option::is_none")]
    caught_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset_gaps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<Verification>,
    /// Per second of the run (warmup and drain included): throughput and p99 latencies.
    series: Vec<SecondSample>,
    /// A workload with phases: each phase's figures (see [`PhaseFigures`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    phases: Vec<PhaseFigures>,
    /// CPU time (user + system) keel-bench used for this measurement (setup, load and drain),
    /// seconds: on a machine the client shares with the broker, what the client took from it.
    client_cpu_s: f64,
    /// Stretches of the measurement window in which the machine ran nothing of keel-bench (a
    /// virtual machine frozen by its host): see [`stalls`].
    #[serde(skip_serializing_if = "Option::is_none")]
    machine_stalls: Option<StallSummary>,
    warnings: Vec<String>,
}

impl BrokerResult {
    fn new(kind: &'static str, config: RunConfig, topic_created: bool) -> BrokerResult {
        BrokerResult {
            kind,
            config,
            topic_created,
            counted: COUNTED_ACKED,
            elapsed_s: 0.0,
            mb_per_s: 0.0,
            records_per_s: 0.0,
            offered_mb_per_s: None,
            offered_records_per_s: None,
            latency_us: None,
            send_delay_us: None,
            e2e_latency_us: None,
            latency_curve_us: Vec::new(),
            e2e_latency_curve_us: Vec::new(),
            consume_mb_per_s: None,
            consume_records_per_s: None,
            records_sent: None,
            records_acked: None,
            records_consumed: None,
            records_not_sent: None,
            requests: None,
            records_per_request: None,
            partitions_per_request: None,
            caught_up: None,
            offset_gaps: None,
            verification: None,
            series: Vec::new(),
            phases: Vec::new(),
            client_cpu_s: 0.0,
            machine_stalls: None,
            warnings: Vec::new(),
        }
    }

    /// The figures of the run over time: per second, per phase, and the machine's stalls (with
    /// their warning).
    fn fill_over_time(&mut self, series: Vec<SecondSample>, phases: Vec<PhaseFigures>, stalls: Option<StallSummary>) {
        if let Some(w) = stalls.as_ref().and_then(StallSummary::warning) {
            self.warnings.push(w);
        }
        self.series = series;
        self.phases = phases;
        self.machine_stalls = stalls;
    }

    fn fill_produced(&mut self, f: &ProducedFigures, p: &ProducerArgs, c: &CommonArgs) {
        let acks0 = p.acks == args::AcksArg::Zero;
        self.counted = if acks0 { COUNTED_SENT } else { COUNTED_ACKED };
        self.elapsed_s = f.window_s;
        self.mb_per_s = report::mb_per_s(f.window_bytes, f.window_s);
        self.records_per_s = f.window_records as f64 / f.window_s;
        self.offered_records_per_s = p.rate;
        // A distribution's mean size (of the pool producer 0 draws from): an estimate, as the
        // records of one run draw their sizes.
        let mean_value = sizes::Sizes::new(&c.value_sizes(), 0).mean();
        self.offered_mb_per_s = p.rate.map(|r| r * (mean_value + c.key_bytes as f64) / 1e6);
        self.latency_us = f.ack_latency;
        self.latency_curve_us = f.ack_curve.clone();
        self.send_delay_us = f.send_delay;
        self.records_sent = Some(f.sent);
        self.records_acked = (!acks0).then_some(f.acked);
        self.records_not_sent = p.rate.map(|_| f.not_sent);
        // kafka://: librdkafka forms the requests; they are not counted.
        self.requests = (f.requests > 0 || !c.target.is_kafka()).then_some(f.requests);
        if f.requests > 0 {
            self.records_per_request = Some(f.sent as f64 / f.requests as f64);
            self.partitions_per_request = Some(f.batches as f64 / f.requests as f64);
        }
        if acks0 {
            self.warnings.push("acks=0: nothing is acknowledged, so there are no latency figures".into());
        }
        if f.not_sent > 0 {
            self.warnings.push(format!(
                "{} scheduled records were still unsent {} s after the schedule ended: the broker could not keep up with \
                 --rate (they are in the latency figures with the latency they had reached)",
                f.not_sent,
                shared::DRAIN_LIMIT.as_secs()
            ));
        }
        if let Some(rate) = p.rate {
            let achieved = self.records_per_s;
            if achieved < rate * 0.95 {
                self.warnings.push(format!(
                    "{} {achieved:.0} records/s in the window, below the {rate:.0} offered: the broker (or this \
                     machine) did not keep up",
                    if acks0 { "sent" } else { "acknowledged" }
                ));
            }
        }
        if let Some(l) = &f.ack_latency {
            if l.samples < 10_000 {
                self.warnings.push(format!(
                    "only {} latency samples: p99.99 needs at least 10000 to mean more than the maximum",
                    l.samples
                ));
            }
        }
    }
}

fn emit(r: &BrokerResult, json: bool) -> Result<(), String> {
    if json {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        report::print_json(r)
    } else {
        print_human(r);
        Ok(())
    }
}

/// User + system CPU time of this process so far, seconds.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn print_human(r: &BrokerResult) {
    let c = &r.config;
    let configs = if c.topic_config.is_empty() {
        String::new()
    } else {
        format!("; {}", c.topic_config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
    };
    let name = r.kind.trim_start_matches("broker_");
    let topics = match c.topics {
        1 => format!("topic {} ({} partitions", c.topic, c.partitions),
        n => format!("topics {}-0 … {}-{} ({n} × {} partitions", c.topic, c.topic, n - 1, c.partitions),
    };
    println!("{name}: {} {topics}{}{configs})", c.target, if r.topic_created { ", created" } else { "" });
    let keys = match (c.key_bytes, c.key_distribution, c.key_count) {
        (0, _, _) => "keyless (round-robin)".to_string(),
        (b, Some(d), Some(n)) => format!("{b} B keys ({d} over {n})"),
        (b, _, _) => format!("{b} B keys"),
    };
    if let Some(acks) = c.acks {
        let load = match c.rate {
            Some(rate) => format!("open loop at {rate:.0} records/s ({:.1} MB/s)", r.offered_mb_per_s.unwrap_or(0.0)),
            None => "closed loop".to_string(),
        };
        println!(
            "  {} producer(s), {load}, acks={acks}, {} values, {keys}; batches ≤ {}, requests ≤ {}, linger {} ms, \
             compression {}",
            c.producers,
            match (&c.value_sizes, c.record_bytes) {
                (Some(d), _) => d.clone(),
                (None, b) => format!("{} B", b.unwrap_or(0)),
            },
            report::fmt_bytes(c.batch_bytes.unwrap_or(0)),
            report::fmt_bytes(c.max_request_bytes.unwrap_or(0)),
            c.linger_ms.unwrap_or(0.0),
            c.compression.unwrap_or("none")
        );
    }
    if c.consumers > 0 {
        println!(
            "  {} consumer(s) from {}, fetches ≤ {}{}",
            c.consumers,
            c.from.unwrap_or("latest"),
            report::fmt_bytes(c.fetch_max_bytes.unwrap_or(0)),
            c.group.as_ref().map(|g| format!(", group {g}")).unwrap_or_default()
        );
    }
    println!("  measured {:.2} s after a {:.1} s warmup", r.elapsed_s, c.warmup);
    let what = if r.kind == "broker_consume" {
        "consumed"
    } else if c.acks == Some("0") {
        "sent, unacknowledged"
    } else {
        "acknowledged"
    };
    println!(
        "  throughput: {:.1} MB/s, {:.0} records/s ({what}; MB = 10^6 bytes of record values + keys)",
        r.mb_per_s, r.records_per_s
    );
    match (&r.latency_us, c.acks) {
        (Some(l), _) => println!("  produce-ack latency: {}", l.human()),
        (None, Some(_)) => println!("  produce-ack latency: none (acks=0: nothing is acknowledged)"),
        (None, None) => {}
    }
    if let Some(l) = &r.send_delay_us {
        println!("  send delay (actual − intended send time): {}", l.human());
    }
    if let Some(l) = &r.e2e_latency_us {
        println!("  end-to-end latency (read − intended send time): {}", l.human());
    }
    if let (Some(mb), Some(rps)) = (r.consume_mb_per_s, r.consume_records_per_s) {
        println!("  consumed: {mb:.1} MB/s, {rps:.0} records/s");
    }
    if let (Some(req), Some(rpr), Some(ppr)) = (r.requests, r.records_per_request, r.partitions_per_request) {
        println!("  requests: {req}, {rpr:.1} records and {ppr:.1} partitions per request");
    }
    let sent = r.records_sent.or(r.records_consumed).unwrap_or(0);
    if sent > 0 {
        println!(
            "  keel-bench CPU: {:.2} s ({:.2} us per record{})",
            r.client_cpu_s,
            r.client_cpu_s * 1e6 / sent as f64,
            c.kafka_producer.map(|k| format!(", producers: {k}")).unwrap_or_default()
        );
    }
    if let Some(m) = &r.machine_stalls {
        println!(
            "  machine stalls (> {} ms): {}, {:.0} ms in all = {:.2} % of the window, longest {:.0} ms{}{}",
            m.threshold_ms,
            m.count,
            m.stalled_ms,
            100.0 * m.share,
            m.longest_ms,
            m.steal_share.map(|s| format!("; CPU steal {:.1} %", 100.0 * s)).unwrap_or_default(),
            if m.realtime { "" } else { " (watchdog at normal priority)" }
        );
    }
    let mut counts = Vec::new();
    if let Some(n) = r.records_sent {
        counts.push(format!("sent {n}"));
    }
    if let Some(n) = r.records_acked {
        counts.push(format!("acknowledged {n}"));
    }
    if let Some(n) = r.records_consumed {
        counts.push(format!("consumed {n}"));
    }
    if let Some(n) = r.records_not_sent.filter(|n| *n > 0) {
        counts.push(format!("never sent {n}"));
    }
    if !counts.is_empty() {
        println!("  records (whole run): {}", counts.join(", "));
    }
    if let Some(caught_up) = r.caught_up {
        if caught_up {
            println!("  every consumer caught up with the high watermark before the duration ended");
        }
    }
    if let Some(v) = &r.verification {
        match v.failure() {
            None if v.checked_against == "acked" => println!(
                "  verification: every acknowledged record read exactly once, in per-partition order, at its \
                 acknowledged offset ({} records)",
                v.expected
            ),
            None => println!(
                "  verification: every sent record read exactly once, in per-partition order ({} records; acks=0: \
                 no offsets to compare)",
                v.expected
            ),
            Some(why) => println!("  verification FAILED: {why}"),
        }
        if let Some(n) = v.redelivered {
            println!("  redelivered after rebalances (not errors): {n} records");
        }
    }
    for ph in &r.phases {
        let lat = |l: &Option<LatencySummary>| l.as_ref().map_or("–".to_string(), |l| report::fmt_us(l.p99));
        println!(
            "  phase {} (s {}–{}, consumers {}): produced {:.1} MB/s, consumed {:.1} MB/s; ack p99 {}, e2e p99 {}",
            ph.name,
            ph.from_s,
            ph.to_s,
            ph.consumers,
            ph.produced_mb_per_s,
            ph.consumed_mb_per_s,
            lat(&ph.ack_latency_us),
            lat(&ph.e2e_latency_us)
        );
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_steal_share_is_the_mean_of_its_seconds() {
        let second = |t_s, measured, steal_share| SecondSample {
            t_s,
            measured,
            produced_mb_per_s: 0.0,
            produced_records_per_s: 0.0,
            consumed_mb_per_s: 0.0,
            consumed_records_per_s: 0.0,
            ack_p99_us: None,
            e2e_p99_us: None,
            stalled_ms: None,
            steal_share,
        };
        // The warmup second and a second without a reading are left out.
        let series = [
            second(1, false, Some(0.9)),
            second(2, true, Some(0.1)),
            second(3, true, None),
            second(4, true, Some(0.3)),
        ];
        assert!((window_steal(&series).unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(window_steal(&series[..1]), None, "no measured second");
    }

    /// One producer's tally: `acked` records acknowledged per partition, offsets from 0.
    fn produced(acked: &[u64]) -> ProducerTally {
        let mut t = ProducerTally::new(acked.len() as u32);
        for (pt, &n) in t.per_partition.iter_mut().zip(acked) {
            *pt =
                producer::PartitionTally { sent: n, acked: n, offset_sum: n * n.saturating_sub(1) / 2, next_offset: n };
        }
        t
    }

    /// A consumer's tally over `partitions` that read sequence numbers `read[i]` of partition
    /// `partitions[i]` (one producer; offset = sequence number).
    fn consumed(partitions: &[u32], read: &[&[u64]]) -> ConsumerTally {
        let mut seen = vec![SeenPair::default(); partitions.len()];
        for (pair, seqs) in seen.iter_mut().zip(read) {
            for &s in *seqs {
                pair.mark(s, s);
            }
        }
        ConsumerTally { seen, ..ConsumerTally::new(partitions.to_vec(), 1) }
    }

    #[test]
    fn one_reader_per_partition_must_read_each_record_once() {
        let producers = [produced(&[3, 2])];
        let ok = [consumed(&[0], &[&[0, 1, 2]]), consumed(&[1], &[&[0, 1]])];
        let v = verify(&producers, &ok, Acks::Leader, 2);
        assert!(v.ok && v.redelivered.is_none(), "{v:?}");
        let lost = [consumed(&[0], &[&[0, 2]]), consumed(&[1], &[&[0, 1]])];
        let v = verify(&producers, &lost, Acks::Leader, 2);
        assert_eq!((v.ok, v.missing), (false, 1), "{v:?}");
    }

    #[test]
    fn a_group_may_read_a_record_twice_but_not_lose_one() {
        // Partition 0 moved from consumer 0 to consumer 1 after a rebalance, which read records
        // 1 and 2 again from the last committed offset.
        let producers = [produced(&[4, 2])];
        let both = [0, 1];
        let moved = [consumed(&both, &[&[0, 1, 2], &[]]), consumed(&both, &[&[1, 2, 3], &[0, 1]])];
        let v = verify(&producers, &moved, Acks::Leader, 2);
        assert!(v.ok, "{v:?}");
        assert_eq!((v.redelivered, v.duplicates, v.missing, v.read), (Some(2), 0, 0, 6), "{v:?}");
        // Record 3 of partition 0 read by nobody: lost, whatever the redeliveries.
        let lossy = [consumed(&both, &[&[0, 1, 2], &[]]), consumed(&both, &[&[1, 2], &[0, 1]])];
        let v = verify(&producers, &lossy, Acks::Leader, 2);
        assert_eq!((v.ok, v.missing, v.redelivered), (false, 1, Some(2)), "{v:?}");
    }
}
