//! Workload files: one benchmark described once (TOML) and run unchanged against any target.
//!
//! A workload says what load to apply — topics, records, keys, producers, consumers, duration —
//! and nothing about where: `keel-bench run FILE --target URL ...` applies it to each target in
//! turn. The format is documented in `bench/workloads/README.md`, with the standard workloads
//! beside it. Unknown keys are errors (a typo must not silently run a different benchmark), and
//! so are features the load generator does not have yet, by name.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::broker::{
    args::{AcksArg, CommonArgs, CompressionArg, KafkaProducerArg, Phase, ProducerArgs, Target},
    KeyDistribution, SizeDistribution,
};
use crate::{parse_duration, parse_size};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Short name: results and topics are named after it.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// How long to measure (after the warmup): "60s", "2m" (default 60s). With phases, their
    /// sum instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default = "default_warmup")]
    pub warmup: String,
    /// `[topics]` (`[topic]` is accepted too: files written before there could be several).
    #[serde(default, alias = "topic")]
    pub topics: TopicSpec,
    #[serde(default)]
    pub records: RecordSpec,
    #[serde(default)]
    pub producers: ProducerSpec,
    #[serde(default)]
    pub consumers: ConsumerSpec,
    /// Optional: the run as a sequence of phases, each with its own rate and consumer state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseSpec>,
}

/// `[[phases]]`: one stretch of the run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// Shown in the results (default "phase N").
    #[serde(default)]
    pub name: Option<String>,
    /// Whole seconds: "20s", "1m".
    pub duration: String,
    /// Records/s of every producer together in this phase (open-loop workloads only; 0 = the
    /// producers pause). Default: `producers.rate`.
    #[serde(default)]
    pub rate: Option<f64>,
    /// "reading" (default) or "paused": paused consumers read nothing during the phase.
    #[serde(default)]
    pub consumers: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// How many topics alike: the load is spread over every partition of every topic.
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Partitions of each topic.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Topic configs (Kafka's names, plus Keel's `fsync.policy`), set when the topic is created.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Bytes of each value: a number or "1KiB", or a distribution
    /// (`{ distribution = "uniform", min = 100, max = 2000 }`).
    #[serde(default = "default_value_bytes")]
    pub value_bytes: ValueBytes,
    /// Fraction of each value (after the stamp) that repeats earlier bytes, 0 to 1.
    #[serde(default = "default_compressibility")]
    pub value_compressibility: f64,
    #[serde(default = "zero_size")]
    pub key_bytes: Size,
    /// "none" (keyless, round-robin over partitions), "round-robin", "uniform" or "zipf".
    #[serde(default = "default_keys")]
    pub keys: String,
    #[serde(default = "default_key_count")]
    pub key_count: usize,
    #[serde(default = "default_zipf")]
    pub zipf_exponent: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSpec {
    #[serde(default = "one")]
    pub count: usize,
    /// Records per second in total: open loop with coordinated-omission correction. Absent:
    /// closed loop (as fast as acknowledgements come back).
    pub rate: Option<f64>,
    /// "0", "1" or "all".
    #[serde(default = "default_acks")]
    pub acks: String,
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: Size,
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: Size,
    #[serde(default = "default_linger")]
    pub linger: String,
    /// "none", "gzip", "snappy", "lz4" or "zstd".
    #[serde(default = "default_compression")]
    pub compression: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Consumer threads tailing the topic (0: produce only). Each reads its share of the
    /// partitions; every record acknowledged is checked to be read exactly once, in order.
    #[serde(default)]
    pub count: usize,
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: Size,
    /// The catch-up read: consumers read nothing until this long after the load starts ("20s",
    /// warmup included), then catch up with the backlog while the producers go on.
    #[serde(default)]
    pub paused_for: Option<String>,
    /// Consume as this consumer group (see `keel-bench e2e --help`, `--group`).
    #[serde(default)]
    pub group: Option<String>,
}

/// A value size: one for every record, or a distribution's name and parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ValueBytes {
    Fixed(Size),
    Distribution(BTreeMap<String, toml::Value>),
}

impl ValueBytes {
    fn distribution(&self) -> Result<SizeDistribution, String> {
        let what = "records.value_bytes";
        let fields = match self {
            ValueBytes::Fixed(size) => return Ok(SizeDistribution::Fixed(size.bytes(what)?)),
            ValueBytes::Distribution(fields) => fields,
        };
        let Some(toml::Value::String(name)) = fields.get("distribution") else {
            return Err(format!("{what}: a table needs distribution = \"uniform\", \"normal\" or \"lognormal\""));
        };
        // The same fields, parsed as `--record-bytes-dist` parses them.
        let mut text = Vec::new();
        for (k, v) in fields.iter().filter(|(k, _)| *k != "distribution") {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => return Err(format!("{what}.{k} = {other}: use a number or a size")),
            };
            text.push((k.clone(), v));
        }
        SizeDistribution::from_fields(name, &text).map_err(|e| format!("{what}: {e}"))
    }
}

/// A byte count written as a number or with a unit ("64KiB").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, what: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => parse_size(s).map_err(|e| format!("{what}: {e}")),
        }
    }
}

fn default_warmup() -> String {
    "5s".into()
}
fn default_partitions() -> u32 {
    8
}
fn default_value_bytes() -> ValueBytes {
    ValueBytes::Fixed(Size::Bytes(1024))
}
fn default_compressibility() -> f64 {
    0.5
}
fn zero_size() -> Size {
    Size::Bytes(0)
}
fn default_keys() -> String {
    "none".into()
}
fn default_key_count() -> usize {
    4096
}
fn default_zipf() -> f64 {
    1.0
}
fn one() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_acks() -> String {
    "1".into()
}
fn default_batch_bytes() -> Size {
    Size::Text("64KiB".into())
}
fn default_max_request_bytes() -> Size {
    Size::Text("1MiB".into())
}
fn default_linger() -> String {
    "0ms".into()
}
fn default_compression() -> String {
    "none".into()
}
fn default_fetch_max_bytes() -> Size {
    Size::Text("4MiB".into())
}

impl Default for ConsumerSpec {
    fn default() -> ConsumerSpec {
        ConsumerSpec { count: 0, fetch_max_bytes: default_fetch_max_bytes(), paused_for: None, group: None }
    }
}

impl Default for TopicSpec {
    fn default() -> TopicSpec {
        TopicSpec { count: 1, partitions: default_partitions(), config: BTreeMap::new() }
    }
}

impl Default for RecordSpec {
    fn default() -> RecordSpec {
        RecordSpec {
            value_bytes: default_value_bytes(),
            value_compressibility: default_compressibility(),
            key_bytes: zero_size(),
            keys: default_keys(),
            key_count: default_key_count(),
            zipf_exponent: default_zipf(),
        }
    }
}

impl Default for ProducerSpec {
    fn default() -> ProducerSpec {
        ProducerSpec {
            count: 1,
            rate: None,
            acks: default_acks(),
            batch_bytes: default_batch_bytes(),
            max_request_bytes: default_max_request_bytes(),
            linger: default_linger(),
            compression: default_compression(),
        }
    }
}

/// What one workload asks of one target, as the `produce` / `e2e` subcommands' arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub common: CommonArgs,
    pub producer: ProducerArgs,
    /// 0: `produce`; otherwise `e2e` with this many consumers.
    pub consumers: usize,
    pub fetch_max_bytes: u64,
    pub consumers_paused_for: Duration,
    pub group: Option<String>,
}

impl Workload {
    /// The phases, checked; `duration_overridden`: `--duration` was given (it cannot apply).
    fn phases(&self, duration_overridden: bool) -> Result<Vec<Phase>, String> {
        if self.phases.is_empty() {
            return Ok(Vec::new());
        }
        if self.duration.is_some() {
            return Err("duration: a workload with phases lasts as long as its phases; leave duration out".into());
        }
        if duration_overridden {
            return Err("--duration does not apply to a workload with phases (it lasts as long as they do)".into());
        }
        let last = self.phases.len() - 1;
        self.phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let what = format!("phases[{i}]");
                let duration = parse_duration(&p.duration).map_err(|e| format!("{what}.duration: {e}"))?;
                if duration.is_zero() || duration.subsec_nanos() != 0 {
                    return Err(format!(
                        "{what}.duration = {:?}: a positive whole number of seconds (per-phase figures are per second)",
                        p.duration
                    ));
                }
                if let Some(rate) = p.rate {
                    if !(rate.is_finite() && rate >= 0.0) {
                        return Err(format!("{what}.rate = {rate}: records/s, 0 or more"));
                    }
                }
                let consumers_paused = match p.consumers.as_deref() {
                    None | Some("reading") => false,
                    Some("paused") if i == last => {
                        return Err(format!(
                            "{what}.consumers = \"paused\": the last phase must let the consumers read (the run \
                             ends when they have caught up)"
                        ))
                    }
                    Some("paused") => true,
                    Some(other) => return Err(format!("{what}.consumers = {other:?}: use \"reading\" or \"paused\"")),
                };
                let name = p.name.clone().unwrap_or_else(|| format!("phase {}", i + 1));
                Ok(Phase { name, duration, rate: p.rate, consumers_paused })
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Workload::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Workload, String> {
        let w: Workload = toml::from_str(text).map_err(|e| e.to_string())?;
        // Checks every field once, against a placeholder target.
        let target = Target { protocol: crate::broker::args::Protocol::Keel, addr: "127.0.0.1:9400".into() };
        w.plan(&target, "check", None)?;
        Ok(w)
    }

    /// The run against `target`, on `topic` (or topics named after it: see
    /// [`crate::broker::args::Topics`]); `duration` overrides the file's.
    pub fn plan(&self, target: &Target, topic: &str, duration: Option<Duration>) -> Result<Plan, String> {
        if self.name.trim().is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("name {:?} must be non-empty letters, digits, '-', '_' or '.'", self.name));
        }
        let r = &self.records;
        let key_bytes = r.key_bytes.bytes("records.key_bytes")?;
        let key_distribution = match (r.keys.as_str(), key_bytes) {
            ("none", 0) => KeyDistribution::RoundRobin,
            ("none", _) => return Err("records.keys = \"none\" but records.key_bytes is not 0".into()),
            (_, 0) => return Err(format!("records.keys = {:?} needs records.key_bytes > 0", r.keys)),
            ("round-robin", _) => KeyDistribution::RoundRobin,
            ("uniform", _) => KeyDistribution::Uniform,
            ("zipf", _) => KeyDistribution::Zipf,
            (other, _) => {
                return Err(format!("records.keys = {other:?}: use \"none\", \"round-robin\", \"uniform\" or \"zipf\""))
            }
        };
        let p = &self.producers;
        let compression = match p.compression.as_str() {
            "none" => CompressionArg::None,
            "gzip" => CompressionArg::Gzip,
            "snappy" => CompressionArg::Snappy,
            "lz4" => CompressionArg::Lz4,
            "zstd" => CompressionArg::Zstd,
            other => {
                return Err(format!(
                    "producers.compression = {other:?}: use \"none\", \"gzip\", \"snappy\", \"lz4\" or \"zstd\""
                ))
            }
        };
        let sizes = r.value_bytes.distribution()?;
        let acks = match p.acks.as_str() {
            "0" => AcksArg::Zero,
            "1" => AcksArg::One,
            "all" | "-1" => AcksArg::All,
            other => return Err(format!("producers.acks = {other:?}: use \"0\", \"1\" or \"all\"")),
        };
        let field = |name: &str, s: &str| parse_duration(s).map_err(|e| format!("{name}: {e}"));
        let phases = self.phases(duration.is_some())?;
        let duration = match (duration, &self.duration) {
            _ if !phases.is_empty() => phases.iter().map(|p| p.duration).sum(),
            (Some(d), _) => d,
            (None, Some(d)) => field("duration", d)?,
            (None, None) => Duration::from_secs(60),
        };
        let common = CommonArgs {
            target: target.clone(),
            topic: topic.to_owned(),
            topics: self.topics.count,
            partitions: self.topics.partitions,
            topic_config: self.topics.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // A fixed size stays --record-bytes: the result reads as the command line would.
            record_bytes: sizes.fixed().unwrap_or(0),
            record_bytes_dist: sizes.fixed().is_none().then_some(sizes),
            value_compressibility: r.value_compressibility,
            key_bytes,
            key_distribution,
            key_count: r.key_count,
            zipf_exponent: r.zipf_exponent,
            duration,
            warmup: field("warmup", &self.warmup)?,
            report_interval: Duration::ZERO,
            json: true,
            phases,
        };
        let producer = ProducerArgs {
            producers: p.count,
            rate: p.rate,
            acks,
            batch_bytes: p.batch_bytes.bytes("producers.batch_bytes")?,
            max_request_bytes: p.max_request_bytes.bytes("producers.max_request_bytes")?,
            linger: field("producers.linger", &p.linger)?,
            kafka_producer: KafkaProducerArg::Librdkafka,
            compression,
            producer_partitions: crate::broker::args::ProducerPartitionsArg::All,
        };
        let consumers_paused_for = match &self.consumers.paused_for {
            Some(d) => field("consumers.paused_for", d)?,
            None => Duration::ZERO,
        };
        if self.consumers.group.is_some() && self.consumers.count == 0 {
            return Err("consumers.group needs consumers (consumers.count > 0)".into());
        }
        if !consumers_paused_for.is_zero() && self.consumers.count == 0 {
            return Err("consumers.paused_for needs consumers (consumers.count > 0)".into());
        }
        if consumers_paused_for >= common.warmup + common.duration {
            return Err(format!(
                "consumers.paused_for ({consumers_paused_for:?}) must end before the run does (warmup + duration)"
            ));
        }
        if !common.phases.is_empty() {
            if !consumers_paused_for.is_zero() {
                return Err("consumers.paused_for and phases do not go together: use a phase with \
                            consumers = \"paused\""
                    .into());
            }
            if common.warmup.subsec_nanos() != 0 {
                return Err("warmup: with phases, whole seconds (per-phase figures are per second)".into());
            }
            let paused = common.phases.iter().any(|p| p.consumers_paused);
            if paused && self.consumers.count == 0 {
                return Err("a phase with consumers = \"paused\" needs consumers (consumers.count > 0)".into());
            }
            if paused && self.consumers.group.is_some() {
                return Err("consumers.group and phases that pause the consumers do not go together (yet)".into());
            }
            if common.phases.iter().any(|p| p.rate.is_some()) && self.producers.rate.is_none() {
                return Err("phases[].rate needs an open loop: set producers.rate".into());
            }
        }
        let plan = Plan {
            common,
            producer,
            consumers: self.consumers.count,
            fetch_max_bytes: self.consumers.fetch_max_bytes.bytes("consumers.fetch_max_bytes")?,
            consumers_paused_for,
            group: self.consumers.group.clone(),
        };
        crate::broker::validate(&plan.common, &plan.producer, plan.consumers)?;
        crate::broker::validate_group(plan.group.as_deref(), plan.consumers_paused_for)?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "keyed-zipf"
description = "hot keys"
duration = "30s"
warmup = "1s"

[topic]
partitions = 12
config = { "fsync.policy" = "never", "retention.bytes" = "1073741824" }

[records]
value_bytes = "1KiB"
key_bytes = 16
keys = "zipf"
key_count = 1000
zipf_exponent = 1.2

[producers]
count = 3
rate = 50000
acks = "all"
batch_bytes = 32768
linger = "2ms"

[consumers]
count = 2
paused_for = "10s"
"#;

    fn target() -> Target {
        Target { protocol: crate::broker::args::Protocol::Kafka, addr: "127.0.0.1:9092".into() }
    }

    #[test]
    fn a_full_file_maps_onto_the_arguments() {
        let w = Workload::parse(FULL).unwrap();
        let plan = w.plan(&target(), "t1", None).unwrap();
        let c = &plan.common;
        assert_eq!((c.topic.as_str(), c.partitions, c.record_bytes, c.key_bytes), ("t1", 12, 1024, 16));
        assert_eq!((c.key_distribution, c.key_count, c.zipf_exponent), (KeyDistribution::Zipf, 1000, 1.2));
        assert_eq!((c.duration, c.warmup), (Duration::from_secs(30), Duration::from_secs(1)));
        assert!(c.topic_config.contains(&("fsync.policy".into(), "never".into())));
        assert_eq!(c.topic_config.len(), 2);
        assert!(c.target.is_kafka());
        let p = &plan.producer;
        assert_eq!((p.producers, p.rate, p.acks), (3, Some(50000.0), AcksArg::All));
        assert_eq!((p.batch_bytes, p.max_request_bytes, p.linger), (32768, 1 << 20, Duration::from_millis(2)));
        assert_eq!((plan.consumers, plan.fetch_max_bytes), (2, 4 << 20));
        assert_eq!((plan.consumers_paused_for, plan.group), (Duration::from_secs(10), None));
        let grouped = Workload::parse("name = \"g\"\n[consumers]\ncount = 2\ngroup = \"readers\"").unwrap();
        assert_eq!(grouped.plan(&target(), "t", None).unwrap().group.as_deref(), Some("readers"));
        // --duration overrides the file.
        let short = w.plan(&target(), "t1", Some(Duration::from_secs(12))).unwrap();
        assert_eq!(short.common.duration, Duration::from_secs(12));
        // ... and the consumers' pause must still end within it.
        assert!(w.plan(&target(), "t1", Some(Duration::from_secs(3))).unwrap_err().contains("paused_for"));
    }

    #[test]
    fn defaults_make_a_closed_loop_keyless_produce() {
        let w = Workload::parse("name = \"min\"").unwrap();
        let plan = w.plan(&target(), "t", None).unwrap();
        assert_eq!((plan.common.partitions, plan.common.record_bytes, plan.common.key_bytes), (8, 1024, 0));
        assert_eq!((plan.producer.producers, plan.producer.rate, plan.producer.acks), (1, None, AcksArg::One));
        assert_eq!((plan.common.duration, plan.common.warmup), (Duration::from_secs(60), Duration::from_secs(5)));
        assert_eq!(plan.consumers, 0);
    }

    #[test]
    fn mistakes_are_refused_by_name() {
        let err = |text: &str| Workload::parse(text).unwrap_err();
        assert!(err("name = \"x\"\nduratoin = \"1s\"").contains("duratoin"), "typo'd key");
        assert!(err("name = \"x\"\n[records]\nkeys = \"zipf\"").contains("key_bytes > 0"));
        assert!(err("name = \"x\"\n[records]\nkey_bytes = 8\nkeys = \"gauss\"").contains("gauss"));
        assert!(err("name = \"x\"\n[producers]\nacks = \"2\"").contains("producers.acks"));
        assert!(err("name = \"x\"\n[producers]\ncompression = \"brotli\"").contains("producers.compression"));
        let dist = |table: &str| err(&format!("name = \"x\"\n[records]\nvalue_bytes = {table}"));
        assert!(dist("{ min = 1, max = 2 }").contains("needs distribution"));
        assert!(dist("{ distribution = \"pareto\", min = 1, max = 2 }").contains("pareto"));
        assert!(dist("{ distribution = \"uniform\", min = 100 }").contains("max is missing"));
        assert!(dist("{ distribution = \"uniform\", min = 100, max = 200, mean = 150 }").contains("mean"));
        assert!(dist("{ distribution = \"uniform\", min = 300, max = 200 }").contains("above max"));
        assert!(dist("{ distribution = \"uniform\", min = 100, max = \"4GiB\" }").contains("16 MiB"));
        // e2e values carry the stamp: the smallest size must hold it.
        let short = "name = \"x\"\n[records]\nvalue_bytes = { distribution = \"uniform\", min = 10, max = 200 }";
        assert!(err(&format!("{short}\n[consumers]\ncount = 1")).contains("28-byte stamp"));
        assert!(Workload::parse(short).is_ok(), "produce alone sends values shorter than the stamp");
        assert!(err("name = \"x\"\n[records]\nvalue_compressibility = 1.5").contains("compressibility"));
        assert!(err("name = \"x\"\n[producers]\nbatch_bytes = \"64 parsecs\"").contains("producers.batch_bytes"));
        assert!(err("name = \"x\"\nduration = \"soon\"").contains("duration"));
        assert!(err("name = \"a b\"").contains("name"));
        assert!(err("name = \"x\"\n[producers]\ncount = 0").contains("--producers"));
        assert!(err("name = \"x\"\n[topic]\npartitions = 2\n[consumers]\ncount = 3").contains("--consumers"));
        assert!(err("name = \"x\"\n[[phases]]\nduratoin = \"1s\"").contains("duratoin"));
        assert!(err("name = \"x\"\n[consumers]\npaused_for = \"1s\"").contains("needs consumers"));
        assert!(err("name = \"x\"\n[consumers]\ngroup = \"g\"").contains("needs consumers"));
        assert!(err("name = \"x\"\n[consumers]\ncount = 1\ngroup = \"\"").contains("--group"));
        let paused = "name = \"x\"\n[consumers]\ncount = 1\ngroup = \"g\"\npaused_for = \"1s\"";
        assert!(err(paused).contains("do not go together"));
        let late = "name = \"x\"\nduration = \"10s\"\nwarmup = \"1s\"\n[consumers]\ncount = 1\npaused_for = \"11s\"";
        assert!(err(late).contains("must end before"));
    }

    #[test]
    fn phases_set_rates_and_pauses_and_the_duration() {
        let text = r#"
name = "phased"
warmup = "2s"
[producers]
count = 2
rate = 1000
[consumers]
count = 1
[[phases]]
duration = "10s"
[[phases]]
name = "burst"
duration = "5s"
rate = 5000
consumers = "paused"
[[phases]]
name = "drain"
duration = "1m"
rate = 0
"#;
        let plan = Workload::parse(text).unwrap().plan(&target(), "t", None).unwrap();
        let c = &plan.common;
        assert_eq!(c.duration, Duration::from_secs(75), "the phases' sum");
        let want = [
            Phase { name: "phase 1".into(), duration: Duration::from_secs(10), rate: None, consumers_paused: false },
            Phase {
                name: "burst".into(),
                duration: Duration::from_secs(5),
                rate: Some(5000.0),
                consumers_paused: true,
            },
            Phase { name: "drain".into(), duration: Duration::from_secs(60), rate: Some(0.0), consumers_paused: false },
        ];
        assert_eq!(c.phases, want);
        let s = |secs: u64| Duration::from_secs(secs);
        assert_eq!(c.phase_spans(), [(s(0), s(12)), (s(12), s(17)), (s(17), s(77))], "the warmup runs as phase 1");

        let err = |text: &str| Workload::parse(text).unwrap_err();
        let with = |extra: &str| format!("name = \"x\"\n{extra}");
        let phase = "[producers]\nrate = 100\n[consumers]\ncount = 1\n[[phases]]\nduration = \"1s\"\n";
        assert!(Workload::parse(&with(&format!("{phase}[[phases]]\nduration = \"2s\""))).is_ok());
        assert!(err(&with(&format!("duration = \"5s\"\n{phase}"))).contains("leave duration out"));
        assert!(err(&with(&phase.replace("\"1s\"", "\"1500ms\""))).contains("whole number of seconds"));
        assert!(err(&with(&phase.replace("\"1s\"", "\"0s\""))).contains("positive"));
        assert!(err(&with(&format!("warmup = \"500ms\"\n{phase}"))).contains("warmup"));
        assert!(err(&with(&format!("{phase}rate = -1"))).contains("phases[0].rate"));
        assert!(err(&with(&format!("{phase}consumers = \"asleep\""))).contains("asleep"));
        let paused_last = format!("{phase}consumers = \"paused\"");
        assert!(err(&with(&paused_last)).contains("last phase"));
        let paused = format!("{phase}consumers = \"paused\"\n[[phases]]\nduration = \"1s\"");
        assert!(Workload::parse(&with(&paused)).is_ok());
        assert!(err(&with(&paused.replace("count = 1", "count = 0"))).contains("needs consumers"));
        assert!(err(&with(&paused.replace("count = 1", "count = 1\ngroup = \"g\""))).contains("group"));
        let closed = "[[phases]]\nduration = \"1s\"\nrate = 10";
        assert!(err(&with(closed)).contains("open loop"));
        let both = phase.replace("count = 1", "count = 1\npaused_for = \"1s\"");
        assert!(err(&with(&both)).contains("paused_for and phases"));
        // The run lasts as long as the phases: --duration cannot apply.
        let w = Workload::parse(&with(phase)).unwrap();
        assert!(w.plan(&target(), "t", Some(Duration::from_secs(3))).unwrap_err().contains("--duration"));
    }

    #[test]
    fn several_topics_share_the_load() {
        let text = "name = \"many\"\n[topics]\ncount = 4\npartitions = 3\n[consumers]\ncount = 12";
        let plan = Workload::parse(text).unwrap().plan(&target(), "t", None).unwrap();
        assert_eq!((plan.common.topics, plan.common.partitions), (4, 3));
        let layout = plan.common.layout();
        assert_eq!(layout.names(), ["t-0", "t-1", "t-2", "t-3"]);
        assert_eq!((layout.total(), layout.name_of(7)), (12, ("t-2", 1)));
        // One consumer per partition of every topic at most; none without a topic.
        let err = |text: &str| Workload::parse(text).unwrap_err();
        assert!(err(&text.replace("count = 12", "count = 13")).contains("more than the 12 partitions"));
        assert!(err("name = \"x\"\n[topics]\ncount = 0").contains("--topics"));
        assert!(err("name = \"x\"\n[topics]\ncount = 1000\npartitions = 1000").contains("--topics"));
        // `[topic]`, from before there could be several, means the same; both at once is a mistake.
        let old = Workload::parse("name = \"old\"\n[topic]\npartitions = 5").unwrap();
        assert_eq!((old.topics.count, old.topics.partitions), (1, 5));
        assert_eq!(old.plan(&target(), "t", None).unwrap().common.layout().names(), ["t"]);
        assert!(err("name = \"x\"\n[topic]\npartitions = 5\n[topics]\ncount = 2").contains("duplicate"));
    }

    #[test]
    fn size_distributions_and_compression_map_onto_the_arguments() {
        let text = r#"
name = "mixed"
[records]
value_bytes = { distribution = "normal", mean = "1KiB", stddev = 256, min = 64, max = 4096 }
value_compressibility = 0.7
[producers]
compression = "zstd"
"#;
        let w = Workload::parse(text).unwrap();
        let keel = Target { protocol: crate::broker::args::Protocol::Keel, addr: "127.0.0.1:9400".into() };
        let plan = w.plan(&keel, "t", None).unwrap();
        // The same file for a kafka:// target: librdkafka compresses with the same codec.
        let kafka = w.plan(&target(), "t", None).unwrap();
        assert_eq!(kafka.producer.compression, plan.producer.compression);
        let want = SizeDistribution::Normal { mean: 1024.0, stddev: 256.0, min: 64, max: 4096 };
        assert_eq!(plan.common.record_bytes_dist, Some(want));
        assert_eq!(plan.common.value_sizes(), want);
        assert_eq!(plan.common.value_compressibility, 0.7);
        assert_eq!(plan.producer.compression, CompressionArg::Zstd);
        let uniform =
            "name = \"u\"\n[records]\nvalue_bytes = { distribution = \"uniform\", min = 100, max = \"2KiB\" }";
        let plan = Workload::parse(uniform).unwrap().plan(&target(), "t", None).unwrap();
        assert_eq!(plan.common.value_sizes(), SizeDistribution::Uniform { min: 100, max: 2048 });
        // A plain number stays one fixed size.
        let plan = Workload::parse("name = \"f\"\n[records]\nvalue_bytes = 512").unwrap().plan(&target(), "t", None);
        let plan = plan.unwrap();
        assert_eq!((plan.common.record_bytes, plan.common.record_bytes_dist), (512, None));
        assert_eq!(plan.producer.compression, CompressionArg::None);
    }

    #[test]
    fn the_shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let parse_all = |dir: &Path| {
            let mut n = 0;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let w = Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(path.file_stem().unwrap().to_str().unwrap(), w.name, "file named after the workload");
                    n += 1;
                }
            }
            n
        };
        let n = parse_all(&dir);
        assert!(n >= 4, "the standard workloads are there ({n})");
        assert!(parse_all(&dir.join("examples")) >= 1, "the examples are there");
    }
}
