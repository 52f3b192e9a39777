//! The client commands of the `keel` binary: `topic`, `produce`, `consume`, `cluster`, all over
//! the native protocol through `keel-client`.
//!
//! Exit codes: 0 success; 1 the broker refused or failed the operation (its error code and
//! message are printed); 2 bad usage or the broker could not be reached.

use std::{
    io::{BufRead, Write},
    time::{Duration, Instant},
};

use clap::{Args, Subcommand, ValueEnum};
use keel_client::{Acks, Client, ClientError, ConsumedRecord, Consumer, Producer, ProducerConfig, StartAt};

/// Where the broker is; every client command takes it.
#[derive(Clone, Debug, Args)]
pub struct Bootstrap {
    /// The broker's native protocol address.
    #[arg(long, env = "KEEL_BOOTSTRAP", default_value = "127.0.0.1:9400", value_name = "HOST:PORT", global = true)]
    pub bootstrap: String,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic: keel topic create NAME --partitions N --config retention.ms=3600000
    Create {
        name: String,
        /// Number of partitions, spread over the broker's shards.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Topic config KEY=VALUE (repeatable); see `keel topic describe` for the keys.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
        configs: Vec<(String, String)>,
    },
    /// List topics with their partition counts.
    List,
    /// Partitions (shard, log start, high watermark) and every config with its value.
    Describe { name: String },
    /// Delete a topic and all its data.
    Delete { name: String },
    /// Change configs: --set KEY=VALUE (repeatable), --delete KEY (back to the default).
    AlterConfig {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_pair)]
        set: Vec<(String, String)>,
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AcksArg {
    /// Do not wait for the broker.
    #[value(name = "0")]
    None,
    /// Wait until the partition appended it.
    #[value(name = "1")]
    Leader,
    /// Wait until it is durable under the topic's fsync policy.
    All,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line into key and value at the first occurrence of this string; lines without
    /// it get no key.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long)]
    pub partition: Option<u32>,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// The value only.
    Value,
    /// partition, offset, timestamp, key, value separated by tabs.
    Detailed,
    /// One JSON object per record (key and value as UTF-8, lossy).
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the oldest record kept (default: only records produced from now on).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub from_beginning: bool,
    /// Start at this offset (with --partition, or on every partition).
    #[arg(long)]
    pub offset: Option<u64>,
    /// Start at the first record with a timestamp >= this (ms since the epoch).
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Consume as this group: start where the group's committed offsets say (partitions without
    /// one start per --from-beginning/--offset/--timestamp/latest) and commit after each batch
    /// of printed records.
    #[arg(long)]
    pub group: Option<String>,
    /// Exit after this many records (default: run until interrupted, or until --idle-exit-ms).
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit when no record arrived for this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub idle_exit_ms: Option<u64>,
    #[arg(long, value_enum, default_value = "value")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Every group with committed offsets.
    List,
    /// A group's committed offsets with the partitions' high watermarks and the lag.
    Offsets {
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Move a group's committed offsets on every partition of a topic.
    Reset {
        group: String,
        #[arg(long)]
        topic: String,
        /// To the oldest record kept.
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"], required_unless_present_any = ["to_latest", "to_offset"])]
        to_earliest: bool,
        /// To the end (only records produced from now on).
        #[arg(long, conflicts_with = "to_offset")]
        to_latest: bool,
        /// To this offset (clamped into each partition's range).
        #[arg(long)]
        to_offset: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Broker version, data directory, and per shard: core, partitions, log bytes.
    Status,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// A failed command: exit code and message.
pub struct Failure(pub u8, pub String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match e {
            ClientError::Io(_) | ClientError::Timeout | ClientError::InvalidArgument(_) => 2,
            _ => 1,
        };
        Failure(code, e.to_string())
    }
}

fn connect(bootstrap: &Bootstrap) -> Result<Client, Failure> {
    Client::connect(&bootstrap.bootstrap, "keel-cli")
        .map_err(|e| Failure(2, format!("cannot reach the broker at {}: {e}", bootstrap.bootstrap)))
}

pub fn topic(bootstrap: &Bootstrap, command: TopicCommand) -> Result<(), Failure> {
    let mut client = connect(bootstrap)?;
    let out = &mut std::io::stdout().lock();
    match command {
        TopicCommand::Create { name, partitions, configs } => {
            client.create_topic(&name, partitions, &configs)?;
            let _ = writeln!(out, "created topic {name} with {partitions} partitions");
        }
        TopicCommand::List => {
            for t in client.metadata(None)? {
                let _ = writeln!(out, "{}\t{} partitions", t.name, t.partitions.len());
            }
        }
        TopicCommand::Describe { name } => {
            let t = client.topic(&name)?;
            let _ = writeln!(out, "topic {} (id {})", t.name, hex(&t.id.0));
            let _ = writeln!(out, "partition\tshard\tlog_start\thigh_watermark");
            for p in &t.partitions {
                let _ = writeln!(out, "{}\t{}\t{}\t{}", p.partition, p.shard, p.log_start_offset, p.high_watermark);
            }
            let _ = writeln!(out, "configs:");
            for (key, value, is_default) in client.describe_configs(&name)? {
                let _ = writeln!(out, "  {key}={value}{}", if is_default { " (default)" } else { "" });
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name)?;
            let _ = writeln!(out, "deleted topic {name}");
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                return Err(Failure(2, "nothing to change: give --set KEY=VALUE and/or --delete KEY".into()));
            }
            client.alter_configs(&name, &set, &delete)?;
            let _ = writeln!(
                out,
                "altered configs of {name} (fsync.policy and fsync.interval.ms apply at the partitions' next start, \
                 the others at once)"
            );
        }
    }
    Ok(())
}

pub fn produce(bootstrap: &Bootstrap, args: ProduceArgs) -> Result<(), Failure> {
    let client = connect(bootstrap)?;
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    let mut producer = Producer::new(client, &args.topic, ProducerConfig { acks, ..ProducerConfig::default() })?;
    let mut sent = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Failure(2, format!("reading stdin: {e}")))?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                None => (None, line.as_bytes()),
            },
            None => (None, line.as_bytes()),
        };
        match args.partition {
            Some(p) => producer.send_to(p, key, Some(value), &[], None)?,
            None => producer.send(key, Some(value), &[], None)?,
        }
        sent += 1;
    }
    producer.close()?;
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}

pub fn consume(bootstrap: &Bootstrap, args: ConsumeArgs) -> Result<(), Failure> {
    let client = connect(bootstrap)?;
    let start = match (args.from_beginning, args.offset, args.timestamp) {
        (true, _, _) => StartAt::Earliest,
        (_, Some(offset), _) => StartAt::Offset(offset),
        (_, _, Some(ts)) => StartAt::Timestamp(ts),
        _ => StartAt::Latest,
    };
    let mut consumer = Consumer::new(client, &args.topic, args.partition.map(|p| vec![p]), start)?;
    if let Some(group) = &args.group {
        let committed = consumer.client().fetch_committed(group, Some(&args.topic))?;
        for (_, partition, offset) in committed {
            if args.partition.is_none_or(|p| p == partition) {
                consumer.seek(partition, StartAt::Offset(offset))?;
            }
        }
    }
    // Next offset per partition after the records printed so far: what a group commits.
    let mut printed: std::collections::BTreeMap<u32, u64> = consumer.positions().iter().copied().collect();
    let out = &mut std::io::stdout().lock();
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        if args.idle_exit_ms.is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms)) {
            return Ok(());
        }
        let records = consumer.poll(Duration::from_millis(500))?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut closed = false;
        for record in &records {
            if args.count.is_some_and(|n| seen >= n) {
                break;
            }
            if write_record(out, record, args.format).is_err() {
                closed = true; // stdout closed (e.g. piped into head)
                break;
            }
            printed.insert(record.partition, record.offset + 1);
            seen += 1;
        }
        let _ = out.flush();
        if let (Some(group), false) = (&args.group, records.is_empty()) {
            let positions: Vec<(u32, u64)> = printed.iter().map(|(&p, &o)| (p, o)).collect();
            consumer.client().commit_offsets(group, &args.topic, &positions)?;
        }
        if closed {
            return Ok(());
        }
    }
}

fn write_record(out: &mut impl Write, r: &ConsumedRecord, format: Format) -> std::io::Result<()> {
    let text = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    match format {
        Format::Value => writeln!(out, "{}", text(&r.value).unwrap_or_default()),
        Format::Detailed => writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            r.partition,
            r.offset,
            r.timestamp_ms,
            text(&r.key).unwrap_or_else(|| "(null)".into()),
            text(&r.value).unwrap_or_else(|| "(null)".into())
        ),
        Format::Json => {
            let json = serde_json::json!({
                "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
                "key": text(&r.key), "value": text(&r.value),
            });
            writeln!(out, "{json}")
        }
    }
}

pub fn group(bootstrap: &Bootstrap, command: GroupCommand) -> Result<(), Failure> {
    let mut client = connect(bootstrap)?;
    match command {
        GroupCommand::List => {
            for g in client.list_groups()? {
                println!("{g}");
            }
        }
        GroupCommand::Offsets { group, topic } => {
            let committed = client.fetch_committed(&group, topic.as_deref())?;
            println!("topic\tpartition\tcommitted\thigh_watermark\tlag");
            let mut ends = std::collections::HashMap::new();
            for (topic, partition, offset) in committed {
                if !ends.contains_key(&topic) {
                    let info = client.topic(&topic)?;
                    ends.insert(topic.clone(), info.partitions.iter().map(|p| p.high_watermark).collect::<Vec<_>>());
                }
                let hw = ends[&topic].get(partition as usize).copied().unwrap_or(0);
                println!("{topic}\t{partition}\t{offset}\t{hw}\t{}", hw.saturating_sub(offset));
            }
        }
        GroupCommand::Reset { group, topic, to_earliest, to_latest, to_offset } => {
            let info = client.topic(&topic)?;
            let positions: Vec<(u32, u64)> = info
                .partitions
                .iter()
                .map(|p| {
                    let offset = match (to_earliest, to_latest, to_offset) {
                        (true, _, _) => p.log_start_offset,
                        (_, true, _) => p.high_watermark,
                        (_, _, Some(o)) => o.clamp(p.log_start_offset, p.high_watermark),
                        _ => unreachable!("clap requires one of --to-earliest, --to-latest, --to-offset"),
                    };
                    (p.partition, offset)
                })
                .collect();
            client.commit_offsets(&group, &topic, &positions)?;
            for (p, o) in positions {
                println!("{topic}\t{p}\t{o}");
            }
        }
    }
    Ok(())
}

pub fn cluster(bootstrap: &Bootstrap, command: ClusterCommand) -> Result<(), Failure> {
    let mut client = connect(bootstrap)?;
    match command {
        ClusterCommand::Status => {
            let s = client.broker_status()?;
            println!("keel {} at {}, data directory {}", s.broker_version, bootstrap.bootstrap, s.data_dir);
            println!("shard\tcore\tpartitions\tlog_bytes");
            for shard in &s.shards {
                println!("{}\t{}\t{}\t{}", shard.shard.0, shard.core, shard.partitions, shard.log_bytes);
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
