//! Settings of `keel serve`: defaults, then a TOML file (`--config`), then `KEEL_*` environment
//! variables, then flags — each later source wins for the settings it names.
//!
//! The flags are declared as `Option`s without clap defaults, so "not given" is visible and the
//! file can fill it in; the defaults live in [`ServeConfig::default`] and are shown by `--help`.

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The resolved settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// Root of all data: topic metadata and one directory per partition log.
    pub data_dir: PathBuf,
    /// Native protocol listener.
    pub listen: SocketAddr,
    /// Admin HTTP listener: Prometheus metrics on `GET /metrics`.
    pub admin_listen: SocketAddr,
    /// Kafka wire protocol listener (`src/kafka/`); `None` = off.
    pub kafka_listen: Option<SocketAddr>,
    /// The address Kafka clients are told to connect to (Kafka's `advertised.listeners`);
    /// `None` = the listener's own.
    pub kafka_advertise: Option<HostPort>,
    /// Shards (one per core, pinned); `None` = every online CPU.
    pub cores: Option<usize>,
    /// Memory budget of the whole broker in bytes, split evenly between shards (caches and data
    /// in flight).
    pub memory_bytes: u64,
    /// Largest request frame accepted, in bytes; a larger length prefix closes the connection
    /// before anything is allocated. A connection is served one request at a time, so this is
    /// also the most request memory one connection holds.
    pub max_frame_bytes: u32,
    /// Open connections per shard; further connections are closed at once.
    pub max_connections_per_shard: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests get to finish, in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// How often each shard applies retention and compaction to its partitions, in milliseconds.
    pub maintenance_interval_ms: u64,
    /// Fetch reads of history (from disk, below the partitions' caches of recent appends) run at
    /// once per shard; more wait their turn, so consumers catching up cannot queue so much disk
    /// I/O in front of appends that producers stall.
    pub history_reads_per_shard: usize,
    /// Most memory a compaction's map of keys takes (Kafka's `log.cleaner.dedupe.buffer.size`):
    /// a shard compacts one partition at a time, and a compaction whose keys do not fit covers
    /// what did and leaves the rest to the next round.
    pub compaction_map_bytes: u64,
    /// Disk space reserved ahead of each active segment's end (fallocate), at most this many
    /// bytes ahead, so a full disk is found before anything is written; 0 = off.
    pub preallocate_bytes: u64,
    /// Zeros kept written ahead of each fsync=always partition's end (`keel_storage::runway`);
    /// 0 = off. On by default: its zero writes are paced between the appends' fdatasyncs.
    pub runway_bytes: u64,
    /// Kafka's `auto.create.topics.enable`, on the Kafka listener only: a Metadata request naming
    /// a topic that does not exist (and allowing auto-creation) creates it.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of a Kafka CreateTopics asking for −1 (Kafka's
    /// `num.partitions`).
    pub default_partitions: u32,
    /// How long a consumer group formed from empty waits for more members before its first
    /// generation (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    pub log_format: LogFormat,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from("keel-data"),
            listen: "127.0.0.1:9400".parse().expect("valid"),
            admin_listen: "127.0.0.1:9401".parse().expect("valid"),
            kafka_listen: Some("127.0.0.1:9092".parse().expect("valid")),
            kafka_advertise: None,
            cores: None,
            memory_bytes: 1 << 30,
            max_frame_bytes: 8 << 20,
            max_connections_per_shard: 1024,
            shutdown_timeout_ms: 10_000,
            maintenance_interval_ms: 30_000,
            history_reads_per_shard: 1,
            compaction_map_bytes: 32 << 20,
            preallocate_bytes: 32 << 20,
            runway_bytes: 8 << 20,
            auto_create_topics: true,
            default_partitions: 1,
            group_initial_rebalance_delay_ms: 3_000,
            log_format: LogFormat::Human,
        }
    }
}

/// `keel serve` flags; each also reads a `KEEL_*` variable.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. `data_dir = "/var/lib/keel"`,
    /// `memory_bytes = 4294967296`). Flags and KEEL_* variables override it.
    #[arg(long, env = "KEEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (topic metadata and partition logs) [default: ./keel-data]
    #[arg(long, env = "KEEL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Native protocol listener [default: 127.0.0.1:9400]
    #[arg(long, env = "KEEL_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listener: Prometheus metrics on GET /metrics (its own thread, not a shard)
    /// [default: 127.0.0.1:9401]
    #[arg(long, env = "KEEL_ADMIN_LISTEN", value_name = "HOST:PORT")]
    pub admin_listen: Option<SocketAddr>,
    /// Kafka wire protocol listener, served by the same shards and logs; `off` disables it
    /// [default: 127.0.0.1:9092]
    #[arg(long, env = "KEEL_KAFKA_LISTEN", value_name = "HOST:PORT", value_parser = parse_listen)]
    pub kafka_listen: Option<Listen>,
    /// The address Metadata gives Kafka clients for this broker, when they cannot reach it at
    /// --kafka-listen's (a container's port mapping, NAT, a load balancer or a host name);
    /// Kafka's advertised.listeners. A host name or an IP address, and a port [default: the
    /// Kafka listener's address, or the address the client reached if it listens on 0.0.0.0]
    #[arg(long, env = "KEEL_KAFKA_ADVERTISE", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub kafka_advertise: Option<HostPort>,
    /// Number of shards, one pinned to each of the first N CPUs [default: every online CPU]
    #[arg(long, env = "KEEL_CORES", value_name = "N")]
    pub cores: Option<usize>,
    /// Memory budget of the broker, split evenly between shards; each shard gives half of its
    /// share to request/response bytes in flight (a connection waits, not reading its socket,
    /// when it is used up) and half to the partitions' caches of recent appends; bytes, or with
    /// a suffix KiB/MiB/GiB [default: 1GiB]
    #[arg(long, env = "KEEL_MEMORY", value_name = "BYTES", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Largest request frame, bytes or KiB/MiB [default: 8MiB]
    #[arg(long, env = "KEEL_MAX_FRAME_BYTES", value_name = "BYTES", value_parser = parse_size)]
    pub max_frame_bytes: Option<u64>,
    /// Open connections per shard [default: 1024]
    #[arg(long, env = "KEEL_MAX_CONNECTIONS_PER_SHARD", value_name = "N")]
    pub max_connections_per_shard: Option<usize>,
    /// Grace period for in-flight requests on SIGTERM/SIGINT, in milliseconds [default: 10000]
    #[arg(long, env = "KEEL_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// How often each shard deletes segments past retention and compacts compacted topics, in
    /// milliseconds; the work runs in the background at a lower priority than requests
    /// [default: 30000]
    #[arg(long, env = "KEEL_MAINTENANCE_INTERVAL_MS", value_name = "MS")]
    pub maintenance_interval_ms: Option<u64>,
    /// Fetch reads of history (partition data older than the caches of recent appends, read from
    /// disk) that run at once on each shard; further ones wait their turn, so consumers catching
    /// up on a backlog share the disk with appends instead of queueing so much I/O in front of
    /// them that producers stall. Reads served from memory are never held [default: 1]
    #[arg(long, env = "KEEL_HISTORY_READS_PER_SHARD", value_name = "N")]
    pub history_reads_per_shard: Option<usize>,
    /// Memory for a compaction's map of keys (each shard compacts one partition at a time, so
    /// this much per shard at most, taken from --memory's share); when a compacted topic's new
    /// keys do not fit, a compaction covers the records whose keys did and the next one goes on
    /// (Kafka's log.cleaner.dedupe.buffer.size). Bytes or KiB/MiB; at least 1MiB and at most a
    /// quarter of the memory per shard [default: 32MiB]
    #[arg(long, env = "KEEL_COMPACTION_MAP_BYTES", value_name = "BYTES", value_parser = parse_size)]
    pub compaction_map_bytes: Option<u64>,
    /// Disk space reserved (fallocate) ahead of each partition's active segment, so an append
    /// meets a full disk before it writes anything and the file's blocks stay contiguous: ahead
    /// by as much as the segment holds (at least 64 KiB), at most this much. The file's size
    /// covers the reserved space (zeros past the data, trimmed when the segment is sealed), so
    /// appends do not extend it, which ext4 would do synchronously. 0 turns it off, for
    /// filesystems where reserving is slow and buys nothing, such as tmpfs, which allocates and
    /// zeroes the memory at once. Bytes or KiB/MiB; a multiple of 4096 [default: 32MiB]
    #[arg(long, env = "KEEL_PREALLOCATE_BYTES", value_name = "BYTES", value_parser = parse_size)]
    pub preallocate_bytes: Option<u64>,
    /// Partitions with fsync.policy=always keep up to this much of zeros written ahead of their
    /// data (once the active segment holds 1 MiB; at most as far ahead as it holds), so appends
    /// overwrite written blocks: on ext4 their fdatasyncs then commit no file-system metadata.
    /// The zeros are written in 128 KiB pieces between the appends' fdatasyncs. At 50 MB/s of
    /// acks=all appends it lowered the broker's CPU per request (by 11-56 %) and the median
    /// latency in each of 12 measured pairs, and p99 in 11 (docs/benchmarks.md, "The runway on
    /// by default"); the price is writing those partitions' bytes twice. Other fsync policies never zero. 0 turns it off
    /// (for tmpfs, where zeros only take memory). Bytes or KiB/MiB; a multiple of 4096
    /// [default: 8MiB]
    #[arg(long, env = "KEEL_RUNWAY_BYTES", value_name = "BYTES", value_parser = parse_size)]
    pub runway_bytes: Option<u64>,
    /// Kafka listener only: a Metadata request naming a topic that does not exist creates it with
    /// --default-partitions partitions and default configs, as Kafka's auto.create.topics.enable
    /// [default: true]
    #[arg(long, env = "KEEL_AUTO_CREATE_TOPICS", value_name = "true|false", action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of a topic created by --auto-create-topics, or by a Kafka CreateTopics asking
    /// for -1 (the broker's default, Kafka's num.partitions) [default: 1]
    #[arg(long, env = "KEEL_DEFAULT_PARTITIONS", value_name = "N")]
    pub default_partitions: Option<u32>,
    /// How long a consumer group that forms from empty waits for more members before handing out
    /// its first assignment, so consumers started together get one rebalance, not one each
    /// (Kafka's group.initial.rebalance.delay.ms; extended while members keep arriving, up to
    /// the members' rebalance timeout) [default: 3000]
    #[arg(long, env = "KEEL_GROUP_INITIAL_REBALANCE_DELAY_MS", value_name = "MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Log format [default: human]
    #[arg(long, env = "KEEL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// A listener address that can be switched off: `HOST:PORT` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Listen(pub Option<SocketAddr>);

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        parse_listen(&s)
    }
}

/// `HOST:PORT` (an IP address and a port) or `off`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    match s.trim() {
        "off" => Ok(Listen(None)),
        addr => addr.parse().map(|a| Listen(Some(a))).map_err(|_| format!("'{s}' is neither HOST:PORT nor off")),
    }
}

/// A host (a name or an IP address) and a port, as a client is told to connect.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort {
    /// A host name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        parse_host_port(&s)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `HOST:PORT` with HOST a name (`kafka.example.com`), an IPv4 address or a bracketed IPv6
/// address (`[::1]:9092`), and a port from 1 to 65535.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let s = s.trim();
    let bad = |why: &str| format!("'{s}' is not HOST:PORT: {why}");
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(|| bad("an unclosed '['"))?,
        None if host.contains(':') => return Err(bad("an IPv6 address needs brackets, as in [::1]:9092")),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !name_ok {
        return Err(bad("the host is not a name or an IP address"));
    }
    Ok(HostPort { host: host.to_string(), port })
}

/// The TOML file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    kafka_listen: Option<Listen>,
    kafka_advertise: Option<HostPort>,
    cores: Option<usize>,
    memory_bytes: Option<u64>,
    max_frame_bytes: Option<u64>,
    max_connections_per_shard: Option<usize>,
    shutdown_timeout_ms: Option<u64>,
    maintenance_interval_ms: Option<u64>,
    history_reads_per_shard: Option<usize>,
    compaction_map_bytes: Option<u64>,
    preallocate_bytes: Option<u64>,
    runway_bytes: Option<u64>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<u32>,
    group_initial_rebalance_delay_ms: Option<u64>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Smallest memory budget per shard: room for a few partitions' caches and one large request.
pub const MIN_MEMORY_PER_SHARD: u64 = 64 << 20;

impl ServeArgs {
    /// Defaults, then the file (if any), then flags/environment.
    pub fn resolve(&self, online_cpus: usize) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let d = ServeConfig::default();
        let frame = self.max_frame_bytes.or(file.max_frame_bytes).unwrap_or(d.max_frame_bytes as u64);
        let config = ServeConfig {
            data_dir: self.data_dir.clone().or(file.data_dir).unwrap_or(d.data_dir),
            listen: self.listen.or(file.listen).unwrap_or(d.listen),
            admin_listen: self.admin_listen.or(file.admin_listen).unwrap_or(d.admin_listen),
            kafka_listen: self.kafka_listen.or(file.kafka_listen).map_or(d.kafka_listen, |l| l.0),
            kafka_advertise: self.kafka_advertise.clone().or(file.kafka_advertise),
            cores: self.cores.or(file.cores),
            memory_bytes: self.memory.or(file.memory_bytes).unwrap_or(d.memory_bytes),
            max_frame_bytes: u32::try_from(frame)
                .map_err(|_| ConfigError(format!("max_frame_bytes {frame} is larger than 4 GiB")))?,
            max_connections_per_shard: self
                .max_connections_per_shard
                .or(file.max_connections_per_shard)
                .unwrap_or(d.max_connections_per_shard),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(file.shutdown_timeout_ms).unwrap_or(d.shutdown_timeout_ms),
            maintenance_interval_ms: self
                .maintenance_interval_ms
                .or(file.maintenance_interval_ms)
                .unwrap_or(d.maintenance_interval_ms),
            history_reads_per_shard: self
                .history_reads_per_shard
                .or(file.history_reads_per_shard)
                .unwrap_or(d.history_reads_per_shard),
            compaction_map_bytes: self
                .compaction_map_bytes
                .or(file.compaction_map_bytes)
                .unwrap_or(d.compaction_map_bytes),
            preallocate_bytes: self.preallocate_bytes.or(file.preallocate_bytes).unwrap_or(d.preallocate_bytes),
            runway_bytes: self.runway_bytes.or(file.runway_bytes).unwrap_or(d.runway_bytes),
            auto_create_topics: self.auto_create_topics.or(file.auto_create_topics).unwrap_or(d.auto_create_topics),
            default_partitions: self.default_partitions.or(file.default_partitions).unwrap_or(d.default_partitions),
            group_initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(d.group_initial_rebalance_delay_ms),
            log_format: self.log_format.or(file.log_format).unwrap_or(d.log_format),
        };
        config.validate(online_cpus)?;
        Ok(config)
    }
}

impl ServeConfig {
    /// Shards to run on a machine with `online_cpus` CPUs.
    pub fn shard_count(&self, online_cpus: usize) -> usize {
        self.cores.unwrap_or(online_cpus)
    }

    /// Each shard's share of the memory budget, in bytes.
    pub fn memory_per_shard(&self, shards: usize) -> u64 {
        self.memory_bytes / shards.max(1) as u64
    }

    fn validate(&self, online_cpus: usize) -> Result<(), ConfigError> {
        let shards = self.shard_count(online_cpus);
        if shards == 0 || shards > online_cpus {
            return Err(ConfigError(format!(
                "cores must be between 1 and {online_cpus} (the online CPUs), not {shards}"
            )));
        }
        if shards > u16::MAX as usize {
            return Err(ConfigError(format!("at most {} shards", u16::MAX)));
        }
        let per_shard = self.memory_per_shard(shards);
        if per_shard < MIN_MEMORY_PER_SHARD {
            return Err(ConfigError(format!(
                "memory {} bytes gives {per_shard} bytes per shard; at least {MIN_MEMORY_PER_SHARD} per shard are needed",
                self.memory_bytes
            )));
        }
        if self.max_frame_bytes < 64 << 10 {
            return Err(ConfigError("max_frame_bytes must be at least 64 KiB".into()));
        }
        if self.max_frame_bytes as u64 > per_shard / 4 {
            return Err(ConfigError(format!(
                "max_frame_bytes ({}) must be at most a quarter of the memory per shard ({per_shard})",
                self.max_frame_bytes
            )));
        }
        if self.maintenance_interval_ms == 0 {
            return Err(ConfigError("maintenance_interval_ms must be at least 1".into()));
        }
        if self.history_reads_per_shard == 0 {
            return Err(ConfigError("history_reads_per_shard must be at least 1".into()));
        }
        if self.compaction_map_bytes < 1 << 20 || self.compaction_map_bytes > per_shard / 4 {
            return Err(ConfigError(format!(
                "compaction_map_bytes ({}) must be at least 1 MiB and at most a quarter of the memory per shard \
                 ({per_shard})",
                self.compaction_map_bytes
            )));
        }
        for (name, value, what) in [
            ("preallocate_bytes", self.preallocate_bytes, "preallocation"),
            ("runway_bytes", self.runway_bytes, "the zeroed runway"),
        ] {
            if !value.is_multiple_of(4096) {
                return Err(ConfigError(format!("{name} ({value}) must be a multiple of 4096 (0 turns {what} off)")));
            }
        }
        // Every shard binds the listeners' address (SO_REUSEPORT): port 0 would give each shard
        // its own port.
        for (name, addr) in [("listen", Some(self.listen)), ("kafka_listen", self.kafka_listen)] {
            if addr.is_some_and(|a| a.port() == 0) {
                return Err(ConfigError(format!("{name} needs a port: 0 (any free port) is not supported")));
            }
        }
        if self.kafka_listen == Some(self.listen) {
            return Err(ConfigError(format!("listen and kafka_listen are both {}", self.listen)));
        }
        if self.kafka_listen.is_none() {
            if let Some(advertised) = &self.kafka_advertise {
                return Err(ConfigError(format!(
                    "kafka_advertise is {advertised} but the Kafka listener is off (kafka_listen = off)"
                )));
            }
        }
        if self.max_connections_per_shard == 0 {
            return Err(ConfigError("max_connections_per_shard must be at least 1".into()));
        }
        if self.default_partitions == 0 {
            return Err(ConfigError("default_partitions must be at least 1".into()));
        }
        Ok(())
    }
}

/// Bytes with an optional binary suffix: `4096`, `64KiB`, `8MiB`, `2GiB` (also KB/MB/GB as
/// powers of ten).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size (e.g. 4096, 64KiB, 8MiB, 2GiB)"))?;
    let unit: u64 = match suffix.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size suffix '{other}' (use KiB, MiB, GiB, KB, MB or GB)")),
    };
    n.checked_mul(unit).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(&file, "data_dir = \"/srv/keel\"\nlisten = \"0.0.0.0:9500\"\nmemory_bytes = 4294967296\n")
            .unwrap();
        let defaults = ServeArgs::default().resolve(2).unwrap();
        assert_eq!(defaults, ServeConfig::default());
        assert_eq!(defaults.shard_count(2), 2);
        let args = ServeArgs {
            config: Some(file),
            listen: Some("127.0.0.1:9600".parse().unwrap()),
            cores: Some(1),
            ..ServeArgs::default()
        };
        let c = args.resolve(2).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/keel"), "from the file");
        assert_eq!(c.listen, "127.0.0.1:9600".parse().unwrap(), "the flag wins over the file");
        assert_eq!(c.memory_bytes, 4 << 30);
        assert_eq!(c.shard_count(2), 1);
        assert_eq!(c.admin_listen, ServeConfig::default().admin_listen, "default");
        assert_eq!(c.kafka_listen, Some("127.0.0.1:9092".parse().unwrap()), "default");
    }

    #[test]
    fn kafka_listener_can_be_moved_or_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(&file, "kafka_listen = \"off\"\n").unwrap();
        let from_file = ServeArgs { config: Some(file.clone()), ..ServeArgs::default() };
        assert_eq!(from_file.resolve(2).unwrap().kafka_listen, None);
        let flag = ServeArgs {
            config: Some(file),
            kafka_listen: Some(parse_listen("0.0.0.0:19092").unwrap()),
            ..ServeArgs::default()
        };
        assert_eq!(flag.resolve(2).unwrap().kafka_listen, Some("0.0.0.0:19092".parse().unwrap()), "the flag wins");
        assert_eq!(parse_listen("off"), Ok(Listen(None)));
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn kafka_advertised_address_takes_names_addresses_and_bracketed_ipv6() {
        let hp = |host: &str, port| HostPort { host: host.to_string(), port };
        assert_eq!(parse_host_port("kafka-1.example.com:19092"), Ok(hp("kafka-1.example.com", 19092)));
        assert_eq!(parse_host_port("10.0.0.7:9092"), Ok(hp("10.0.0.7", 9092)));
        assert_eq!(parse_host_port("[::1]:9092"), Ok(hp("::1", 9092)));
        assert_eq!(hp("::1", 9092).to_string(), "[::1]:9092");
        for bad in ["kafka", "kafka:", "kafka:0", "kafka:70000", ":9092", "::1:9092", "[::1:9092", "a b:1", "host/x:1"]
        {
            assert!(parse_host_port(bad).is_err(), "{bad} accepted");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(&file, "kafka_advertise = \"broker.internal:29092\"\n").unwrap();
        let from_file = ServeArgs { config: Some(file.clone()), ..ServeArgs::default() };
        assert_eq!(from_file.resolve(2).unwrap().kafka_advertise, Some(hp("broker.internal", 29092)));
        let flag =
            ServeArgs { config: Some(file), kafka_advertise: Some(hp("10.1.2.3", 9093)), ..ServeArgs::default() };
        assert_eq!(flag.resolve(2).unwrap().kafka_advertise, Some(hp("10.1.2.3", 9093)), "the flag wins");
        let off = ServeArgs {
            kafka_listen: Some(Listen(None)),
            kafka_advertise: Some(hp("10.1.2.3", 9093)),
            ..ServeArgs::default()
        };
        let err = off.resolve(2).unwrap_err().0;
        assert!(err.contains("Kafka listener is off"), "{err}");
    }

    #[test]
    fn topic_auto_creation_settings() {
        let defaults = ServeArgs::default().resolve(2).unwrap();
        assert!(defaults.auto_create_topics);
        assert_eq!(defaults.default_partitions, 1);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(&file, "auto_create_topics = false\ndefault_partitions = 3\n").unwrap();
        let from_file = ServeArgs { config: Some(file.clone()), ..ServeArgs::default() }.resolve(2).unwrap();
        assert!(!from_file.auto_create_topics);
        assert_eq!(from_file.default_partitions, 3);
        let flags = ServeArgs {
            config: Some(file),
            auto_create_topics: Some(true),
            default_partitions: Some(6),
            ..ServeArgs::default()
        };
        let c = flags.resolve(2).unwrap();
        assert!(c.auto_create_topics, "the flag wins");
        assert_eq!(c.default_partitions, 6);
        let err = ServeArgs { default_partitions: Some(0), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("default_partitions"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(&file, "listen_addr = \"x\"\n").unwrap();
        let err = ServeArgs { config: Some(file), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("listen_addr"), "{err}");
        let err = ServeArgs { cores: Some(3), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("cores"), "{err}");
        let err = ServeArgs { memory: Some(1 << 20), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("per shard"), "{err}");
        let err = ServeArgs { max_frame_bytes: Some(5 << 30), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("max_frame_bytes"), "{err}");
        let err = ServeArgs { history_reads_per_shard: Some(0), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("history_reads_per_shard"), "{err}");
        for bytes in [1 << 19, 1 << 30] {
            let err = ServeArgs { compaction_map_bytes: Some(bytes), ..ServeArgs::default() }.resolve(2).unwrap_err();
            assert!(err.0.contains("compaction_map_bytes"), "{bytes}: {err}");
        }
        let c = ServeArgs { compaction_map_bytes: Some(4 << 20), ..ServeArgs::default() }.resolve(2).unwrap();
        assert_eq!(c.compaction_map_bytes, 4 << 20);
        let err = ServeArgs { preallocate_bytes: Some(5000), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("preallocate_bytes"), "{err}");
        let c = ServeArgs { preallocate_bytes: Some(0), ..ServeArgs::default() }.resolve(2).unwrap();
        assert_eq!(c.preallocate_bytes, 0);
        let err = ServeArgs { runway_bytes: Some(5000), ..ServeArgs::default() }.resolve(2).unwrap_err();
        assert!(err.0.contains("runway_bytes (5000) must be a multiple of 4096"), "{err}");
        assert_eq!(ServeArgs::default().resolve(2).unwrap().runway_bytes, 8 << 20);
        assert_eq!(
            ServeArgs { runway_bytes: Some(8 << 20), ..ServeArgs::default() }.resolve(2).unwrap().runway_bytes,
            8 << 20
        );
        let missing = ServeArgs { config: Some("/nonexistent/keel.toml".into()), ..ServeArgs::default() };
        assert!(missing.resolve(2).unwrap_err().0.contains("cannot read"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
