//! Command lines of `produce`, `consume` and `e2e`, and the parsers of their values.

use std::{fmt, time::Duration};

use clap::{Args, ValueEnum};
use keel_client::{Acks, StartAt};
use keel_storage::batch::Compression;

use super::{
    keys::{KeyDistribution, KeySpec},
    sizes::SizeDistribution,
};

/// Flags every broker benchmark takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The broker to drive: keel://HOST:PORT (Keel's native protocol, keel-client) or
    /// kafka://HOST:PORT (the Kafka protocol through librdkafka: Keel's --kafka-listen, Apache
    /// Kafka, Redpanda, ...). The same workload and figures either way; the flags below say how
    /// they map to librdkafka settings. --bootstrap is an alias.
    #[arg(long, alias = "bootstrap", default_value = "keel://127.0.0.1:9400", value_parser = parse_target)]
    pub target: Target,
    /// Topic to use. Created with --partitions and --topic-config if it does not exist; if it
    /// exists with another partition count, or another value for a --topic-config key, the run
    /// fails (pick another name or delete it: `keel topic delete NAME`).
    #[arg(long, default_value = "keel-bench")]
    pub topic: String,
    /// How many topics to spread the load over, each with --partitions partitions and the same
    /// --topic-config: with more than one they are named TOPIC-0, TOPIC-1, ... Records go
    /// round-robin over every partition of every topic (keyless), or a key picks a topic (key
    /// number mod the topic count) and its partition in it (murmur2). A producer's request and a
    /// consumer's Fetch carry every topic they touch.
    #[arg(long, default_value_t = 1)]
    pub topics: u32,
    /// Partitions of each topic (spread by the broker over its shards).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Topic config KEY=VALUE for creating the topic (repeatable), e.g. fsync.policy=never,
    /// segment.bytes=1073741824; `keel topic describe` lists the keys.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub topic_config: Vec<(String, String)>,
    /// Bytes of each record's value (KiB/MiB and KB/MB suffixes accepted). MB/s counts value +
    /// key bytes, not record or batch framing. Values start with a 28-byte stamp (intended send
    /// time, run id, producer, sequence number) when they are at least that long; e2e needs it.
    /// --record-bytes-dist draws sizes instead.
    #[arg(long, default_value = "1024", value_parser = crate::parse_size)]
    pub record_bytes: u64,
    /// Instead of --record-bytes: draw each record's value size from a distribution, the same
    /// sizes in every run (seeded per producer). NAME:KEY=VALUE,... with sizes in bytes or with
    /// units: uniform:min=100,max=2000 (every size equally likely);
    /// normal:mean=1024,stddev=256,min=64,max=4096 (rounded and clamped to min..max);
    /// lognormal:median=1KiB,sigma=0.5,min=28,max=64KiB (a long tail of large values);
    /// fixed:bytes=N. MB/s then counts the bytes actually sent; e2e needs min ≥ 28 (the stamp).
    #[arg(long, value_name = "NAME:KEY=VALUE,...", value_parser = SizeDistribution::parse, conflicts_with = "record_bytes")]
    pub record_bytes_dist: Option<SizeDistribution>,
    /// How compressible record values are, 0 to 1: after the stamp, a value is pseudo-random
    /// bytes in which about this fraction repeats bytes a little earlier in the payload (copies
    /// of 16 to 64 bytes), so LZ-style codecs shrink it to roughly 1 − this (text or JSON is
    /// about 0.5 to 0.8). 0 = incompressible. Only matters with --compression.
    #[arg(long, default_value_t = 0.5)]
    pub value_compressibility: f64,
    /// Bytes of each record's key; 0 = keyless records, spread round-robin over the partitions
    /// record by record. With keys, each record carries one of --key-count distinct random keys
    /// (chosen by --key-distribution) and goes to its key's partition (Kafka's murmur2
    /// partitioner).
    #[arg(long, default_value = "0", value_parser = crate::parse_size)]
    pub key_bytes: u64,
    /// With --key-bytes: how a record picks its key. round-robin = each key in turn; uniform =
    /// at random; zipf = a few hot keys and a long tail (P(key i) ∝ 1/(i+1)^--zipf-exponent), so
    /// partitions are loaded unevenly too.
    #[arg(long, value_enum, default_value_t = KeyDistribution::RoundRobin)]
    pub key_distribution: KeyDistribution,
    /// With --key-bytes: distinct keys.
    #[arg(long, default_value_t = 4096)]
    pub key_count: usize,
    /// With --key-distribution zipf: the exponent s (> 0; 1 = key 0 twice as frequent as key 1).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// How long to measure, after --warmup: `60s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Load applied before the measurement starts and left out of every figure (connections,
    /// segment preallocation and caches settle).
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    pub warmup: Duration,
    /// Print a progress line (throughput over the last interval) to stderr this often; 0 = never.
    #[arg(long, default_value = "0s", value_parser = crate::parse_duration)]
    pub report_interval: Duration,
    /// Print exactly one JSON object on stdout instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
    /// A workload file's phases (`[[phases]]`; no flag): `duration` is then their sum.
    #[arg(skip)]
    pub phases: Vec<Phase>,
}

/// One phase of a workload: for how long, at what rate, whether the consumers read. The phases
/// follow each other after the warmup, which runs with the first phase's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    /// Records/s of every producer together (open loop); `None`: the run's `--rate`.
    pub rate: Option<f64>,
    /// The consumers read nothing during the phase (a backlog builds up, read once it ends).
    pub consumers_paused: bool,
}

/// Flags of the load generator (`produce`, `e2e`).
#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// Producer threads, each with its own connection and one request in flight at a time
    /// (kafka://: each its own librdkafka producer, with up to --max-request-bytes of records
    /// unacknowledged in the closed loop).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Records per second offered in total (split evenly over the producers): OPEN LOOP, each
    /// record has an intended send time on a fixed schedule and its latency is measured from
    /// that time, so a stall counts against every record that should have been sent during it
    /// (coordinated-omission correction). Without --rate: CLOSED LOOP, as fast as acknowledgements
    /// come back, latency measured from the actual send.
    #[arg(long)]
    pub rate: Option<f64>,
    /// When the broker answers: 0 = never (no acknowledgements, so no latency figures and
    /// throughput counts bytes sent), 1 = once the leader appended, all = once committed.
    #[arg(long, value_enum, default_value_t = AcksArg::One)]
    pub acks: AcksArg,
    /// Largest RecordBatch per partition in one request, bytes. Within a producer, every record
    /// due is sent at the next request, one batch per partition, up to this and --max-request-bytes.
    /// kafka://: librdkafka's batch.size.
    #[arg(long, default_value = "64KiB", value_parser = crate::parse_size)]
    pub batch_bytes: u64,
    /// Largest record data of one Produce request (all partitions), bytes; keep it below the
    /// broker's --max-frame-bytes (8 MiB by default). kafka://: librdkafka's message.max.bytes.
    #[arg(long, default_value = "1MiB", value_parser = crate::parse_size)]
    pub max_request_bytes: u64,
    /// Open loop only: hold the due records until the oldest has waited this long or a request
    /// is full, for bigger batches at the cost of latency. 0 = send whatever is due at once.
    /// kafka://: librdkafka's linger.ms (closed loop too).
    #[arg(long, default_value = "0ms", value_parser = crate::parse_duration)]
    pub linger: Duration,
    /// kafka:// only: the Kafka client the producers use. librdkafka = the standard client (one
    /// partition per Produce request, its own batching). wire = keel-bench's own connection
    /// sending exactly the native producer's requests (same batches, every partition in one
    /// Produce, one in flight) encoded with the kafka-protocol crate, so native and Kafka
    /// listeners compare on the same request shape without librdkafka's CPU cost; single-broker
    /// clusters only.
    #[arg(long, value_enum, default_value_t = KafkaProducerArg::Librdkafka)]
    pub kafka_producer: KafkaProducerArg,
    /// Codec of the producers' batches (Kafka's codecs, byte-compatible with its clients): each
    /// partition's batch is compressed as a whole. keel:// (and --kafka-producer wire):
    /// keel-bench compresses the records section of every batch itself, so the compression
    /// CPU is the client's; --batch-bytes and --max-request-bytes still bound the uncompressed
    /// bytes. kafka:// with librdkafka: its compression.type. Throughput still counts
    /// uncompressed value + key bytes.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Which partitions each producer sends to. all: every partition (keyless records round-robin,
    /// record by record; keyed ones by key). by-shard (keel:// and keyless only): producer i sends
    /// only to the partitions of the i-th shard that owns some (mod their number; Metadata says
    /// which), round-robin, so each of its requests goes to one shard, and the broker moves its
    /// connection to that shard. --producers must be a multiple of that number of shards, so
    /// every partition gets the same rate.
    #[arg(long, value_enum, default_value_t = ProducerPartitionsArg::All)]
    pub producer_partitions: ProducerPartitionsArg,
}

/// The codec of `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `--producer-partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProducerPartitionsArg {
    All,
    ByShard,
}

impl ProducerPartitionsArg {
    pub fn name(self) -> &'static str {
        match self {
            ProducerPartitionsArg::All => "all",
            ProducerPartitionsArg::ByShard => "by-shard",
        }
    }
}

/// The client of `--kafka-producer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaProducerArg {
    Librdkafka,
    Wire,
}

/// `produce`: the producers alone.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
}

/// `consume`: the consumers alone, over data already in the topic (or written by --prefill).
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Consumer threads; partition p is read by consumer p mod M (each its own connection).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Where each partition is read from: earliest (the records already there; the run ends
    /// early once every consumer has caught up with the high watermark seen at the start) or
    /// latest (only records produced during the run, by someone else). kafka://: the partitions
    /// are assigned (no consumer group) at the low or high watermark read before the run starts.
    #[arg(long, value_enum, default_value_t = FromArg::Earliest)]
    pub from: FromArg,
    /// First write this many bytes of record values + keys into the topic (2 closed-loop
    /// producers, acks=1; not part of the figures). Without it an empty topic is an error.
    #[arg(long, default_value = "0", value_parser = crate::parse_size)]
    pub prefill: u64,
    /// Soft limit on the record bytes of one Fetch response (all of a consumer's partitions).
    #[arg(long, default_value = "4MiB", value_parser = crate::parse_size)]
    pub fetch_max_bytes: u64,
}

/// `e2e`: producers and consumers at once.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Consumer threads tailing the topic from its end; partition p is read by consumer p mod M.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Soft limit on the record bytes of one Fetch response (all of a consumer's partitions).
    #[arg(long, default_value = "4MiB", value_parser = crate::parse_size)]
    pub fetch_max_bytes: u64,
    /// Consumers read nothing until this long after the load starts (warmup included), then
    /// catch up with the backlog while the producers go on: the catch-up read. Their positions
    /// are still taken before anything is produced, so every record is checked; end-to-end
    /// latency then includes the time records waited in the backlog.
    #[arg(long, default_value = "0s", value_parser = crate::parse_duration)]
    pub consumers_paused_for: Duration,
    /// Consume as consumer group NAME, its offsets committed as the consumers go (the group
    /// starts at the topic's end). kafka://: the consumers subscribe with group.id NAME
    /// (librdkafka's group membership, rebalances and auto-commit every second) instead of
    /// being assigned partitions; a record read again after a rebalance counts as redelivered,
    /// not as a duplicate, and offset gaps are not checked (partitions move between consumers);
    /// loss and reordering still fail the run. keel://: the native protocol has no group
    /// membership, so partitions are divided as without a group and each consumer commits its
    /// positions to NAME every second.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// No response: fire and forget.
    #[value(name = "0")]
    Zero,
    /// The leader appended the records.
    #[value(name = "1")]
    One,
    /// The records are committed (with fsync.policy=always: on disk).
    #[value(name = "all", alias = "-1")]
    All,
}

impl AcksArg {
    pub fn name(self) -> &'static str {
        match self {
            AcksArg::Zero => "0",
            AcksArg::One => "1",
            AcksArg::All => "all",
        }
    }

    pub fn acks(self) -> Acks {
        match self {
            AcksArg::Zero => Acks::None,
            AcksArg::One => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FromArg {
    Earliest,
    Latest,
}

impl FromArg {
    pub fn name(self) -> &'static str {
        match self {
            FromArg::Earliest => "earliest",
            FromArg::Latest => "latest",
        }
    }

    pub fn start(self) -> StartAt {
        match self {
            FromArg::Earliest => StartAt::Earliest,
            FromArg::Latest => StartAt::Latest,
        }
    }
}

/// The wire protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Keel's native protocol (`keel-client`).
    Keel,
    /// The Kafka protocol (librdkafka through `rdkafka`): Keel's Kafka listener, Apache Kafka,
    /// Redpanda, ...
    Kafka,
}

/// Where the broker is: the protocol and `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub protocol: Protocol,
    /// `HOST:PORT` as given.
    pub addr: String,
}

impl CommonArgs {
    /// Each phase's start and end after t0 (the first starts at t0: the warmup runs with its
    /// settings). Empty without phases.
    pub fn phase_spans(&self) -> Vec<(Duration, Duration)> {
        let mut end = self.warmup;
        self.phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let start = if i == 0 { Duration::ZERO } else { end };
                end += p.duration;
                (start, end)
            })
            .collect()
    }

    /// The topics of the run.
    pub fn layout(&self) -> Topics {
        Topics::new(&self.topic, self.topics, self.partitions)
    }

    /// Value sizes: --record-bytes-dist, or every value --record-bytes long.
    pub fn value_sizes(&self) -> SizeDistribution {
        self.record_bytes_dist.unwrap_or(SizeDistribution::Fixed(self.record_bytes))
    }

    pub fn key_spec(&self) -> KeySpec {
        KeySpec {
            key_bytes: self.key_bytes as usize,
            count: self.key_count,
            distribution: self.key_distribution,
            zipf_exponent: self.zipf_exponent,
        }
    }
}

/// The topics of a run and how the load's threads number their partitions: partitions are
/// numbered across topics ("global" numbers), topic by topic, so per-partition tallies and
/// checks need not know that there are several topics. Global partition g is partition
/// `g % partitions` of topic `g / partitions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    names: Vec<String>,
    partitions: u32,
}

impl Topics {
    /// `count` topics of `partitions` partitions: `base` alone, or `base-0` … `base-{count-1}`.
    pub fn new(base: &str, count: u32, partitions: u32) -> Topics {
        let names = match count {
            1 => vec![base.to_owned()],
            n => (0..n).map(|i| format!("{base}-{i}")).collect(),
        };
        Topics { names, partitions }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Partitions of each topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Partitions of every topic together.
    pub fn total(&self) -> u32 {
        self.names.len() as u32 * self.partitions
    }

    /// Global partition `g` as (topic index, partition of that topic).
    pub fn locate(&self, g: u32) -> (usize, u32) {
        debug_assert!(g < self.total(), "global partition {g} of {} in all", self.total());
        ((g / self.partitions) as usize, g % self.partitions)
    }

    /// Partition `p` of the `t`-th topic, numbered globally.
    pub fn global(&self, t: usize, p: u32) -> u32 {
        t as u32 * self.partitions + p
    }

    /// Global partition `g`'s topic name and partition.
    pub fn name_of(&self, g: u32) -> (&str, u32) {
        let (t, p) = self.locate(g);
        (&self.names[t], p)
    }

    /// The index of topic `name`, if it is one of these.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// `(global partition, item)` pairs grouped by topic, as requests carry them: (topic
    /// index, [(partition of that topic, item)]), topics in the order they first appear, items
    /// in the order given.
    pub fn group<T>(&self, items: impl IntoIterator<Item = (u32, T)>) -> Vec<(usize, Vec<(u32, T)>)> {
        let mut out: Vec<(usize, Vec<(u32, T)>)> = Vec::new();
        for (g, item) in items {
            let (t, p) = self.locate(g);
            // Requests list partitions in order: the last group is almost always the one.
            let group = match out.iter().rposition(|group| group.0 == t) {
                Some(i) => &mut out[i],
                None => {
                    out.push((t, Vec::new()));
                    out.last_mut().expect("just pushed")
                }
            };
            group.1.push((p, item));
        }
        out
    }
}

impl Target {
    pub fn is_kafka(&self) -> bool {
        self.protocol == Protocol::Kafka
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.protocol {
            Protocol::Keel => "keel",
            Protocol::Kafka => "kafka",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// `keel://HOST:PORT` or `kafka://HOST:PORT` → the target; any other scheme is refused with a
/// reason.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("{s:?} has no scheme: use keel://HOST:PORT or kafka://HOST:PORT"));
    };
    let protocol = match scheme.to_ascii_lowercase().as_str() {
        "keel" => Protocol::Keel,
        "kafka" => Protocol::Kafka,
        other => return Err(format!("unknown scheme {other}:// (use keel://HOST:PORT or kafka://HOST:PORT)")),
    };
    let bad = || format!("{s:?} is not {}://HOST:PORT", scheme.to_ascii_lowercase());
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(Target { protocol, addr: rest.to_owned() })
}

/// `KEY=VALUE` → the pair.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_grouped_by_topic_as_requests_carry_them() {
        let layout = Topics::new("t", 3, 4);
        // Global partitions 0..12: topic g / 4, partition g % 4.
        let groups = layout.group([(9, 'a'), (1, 'b'), (10, 'c'), (2, 'd'), (5, 'e')]);
        assert_eq!(groups, [(2, vec![(1, 'a'), (2, 'c')]), (0, vec![(1, 'b'), (2, 'd')]), (1, vec![(1, 'e')])]);
        for (t, items) in &groups {
            for &(p, _) in items {
                assert_eq!(layout.locate(layout.global(*t, p)), (*t, p));
            }
        }
        assert!(layout.group(Vec::<(u32, ())>::new()).is_empty());
    }

    #[test]
    fn targets() {
        assert_eq!(parse_target("keel://127.0.0.1:9400").unwrap().addr, "127.0.0.1:9400");
        assert_eq!(parse_target("KEEL://localhost:1").unwrap().to_string(), "keel://localhost:1");
        assert_eq!(parse_target("keel://[::1]:9400").unwrap().addr, "[::1]:9400");
        let k = parse_target("kafka://127.0.0.1:9092").unwrap();
        assert_eq!(
            (k.protocol, k.addr.as_str(), k.to_string().as_str()),
            (Protocol::Kafka, "127.0.0.1:9092", "kafka://127.0.0.1:9092")
        );
        assert!(parse_target("http://x:1").unwrap_err().contains("unknown scheme"));
        assert!(parse_target("127.0.0.1:9400").unwrap_err().contains("no scheme"));
        for bad in
            ["keel://", "keel://host", "keel://:9400", "keel://h:99999", "keel://h:0", "keel://h/x:1", "kafka://h"]
        {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("fsync.policy=never").unwrap(), ("fsync.policy".into(), "never".into()));
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
