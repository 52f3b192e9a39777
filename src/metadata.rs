//! Cluster metadata of one node: topics, their ids and configs, and the placement of every
//! partition on a shard.
//!
//! Placement is data, decided once when a partition is created (the least loaded shard) and
//! persisted, never a hash recomputed at run time: restarting with the same shards finds every
//! partition where its log is, and a later rebalancer can move partitions by editing the table.
//!
//! The state is a plain value with pure operations; [`Metadata::encode`] / [`Metadata::decode`]
//! give the bytes that [`store`] writes atomically (temp file, fsync, rename, fsync directory).

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::topic_config::{ConfigError, TopicConfig};

/// Format version of the persisted metadata; bumped on incompatible changes.
const FORMAT_VERSION: u32 = 1;
/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;
/// Upper bound on partitions per topic: keeps a typo from creating millions of logs.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 100_000;

/// A 128-bit topic id, stable for the topic's life (Kafka's topic UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 16]);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Where one partition lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlacement {
    pub partition: u32,
    /// Index of the owning shard on this node.
    pub shard: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub id: TopicId,
    /// One entry per partition, in partition order (`partitions[i].partition == i`).
    pub partitions: Vec<PartitionPlacement>,
    /// Explicitly set configs (everything else is the default).
    pub configs: BTreeMap<String, String>,
    pub created_ms: i64,
}

impl Topic {
    pub fn config(&self) -> TopicConfig {
        TopicConfig::from_pairs(self.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("persisted configs were validated when set")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    TopicExists(String),
    UnknownTopic(String),
    InvalidTopicName {
        name: String,
        reason: String,
    },
    InvalidPartitions {
        partitions: u32,
        reason: String,
    },
    Config(ConfigError),
    /// The persisted file could not be understood.
    Corrupt(String),
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::TopicExists(name) => write!(f, "topic '{name}' already exists"),
            MetadataError::UnknownTopic(name) => write!(f, "unknown topic '{name}'"),
            MetadataError::InvalidTopicName { name, reason } => write!(f, "invalid topic name '{name}': {reason}"),
            MetadataError::InvalidPartitions { partitions, reason } => {
                write!(f, "invalid partition count {partitions}: {reason}")
            }
            MetadataError::Config(e) => write!(f, "{e}"),
            MetadataError::Corrupt(reason) => write!(f, "metadata file is corrupt: {reason}"),
        }
    }
}

impl std::error::Error for MetadataError {}

impl From<ConfigError> for MetadataError {
    fn from(e: ConfigError) -> Self {
        MetadataError::Config(e)
    }
}

/// Every topic of the node and where its partitions live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    version: u32,
    topics: BTreeMap<String, Topic>,
    /// Idempotent producer ids below this were (or may have been) handed out: the controller
    /// reserves them in blocks, persisting each block's end before giving out its first id, so
    /// no id is ever given twice, across restarts too. (Absent in older files: 0.)
    #[serde(default)]
    producer_ids_reserved: i64,
}

impl Metadata {
    pub fn new() -> Self {
        Metadata { version: FORMAT_VERSION, topics: BTreeMap::new(), producer_ids_reserved: 0 }
    }

    /// The end (exclusive) of the producer ids reserved so far.
    pub fn producer_ids_reserved(&self) -> i64 {
        self.producer_ids_reserved
    }

    /// Reserves `count` more producer ids; the new end.
    pub fn reserve_producer_ids(&mut self, count: i64) -> i64 {
        self.producer_ids_reserved += count;
        self.producer_ids_reserved
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Partitions placed on each of `shards` shards (index = shard).
    pub fn partitions_per_shard(&self, shards: u16) -> Vec<u32> {
        let mut load = vec![0u32; shards as usize];
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            if let Some(slot) = load.get_mut(p.shard as usize) {
                *slot += 1;
            }
        }
        load
    }

    /// Adds a topic, placing each partition on the least loaded of `shards` shards (ties: the
    /// lowest shard), so partitions spread evenly over every core.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: &TopicConfig,
        shards: u16,
        id: TopicId,
        now_ms: i64,
    ) -> Result<&Topic, MetadataError> {
        assert!(shards > 0, "a node has at least one shard");
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions {
                partitions,
                reason: format!("must be between 1 and {MAX_PARTITIONS_PER_TOPIC}"),
            });
        }
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        let mut load = self.partitions_per_shard(shards);
        let placements = (0..partitions)
            .map(|partition| {
                let (shard, _) = load.iter().enumerate().min_by_key(|&(i, n)| (*n, i)).expect("shards > 0");
                load[shard] += 1;
                PartitionPlacement { partition, shard: shard as u16 }
            })
            .collect();
        let configs = config.explicit().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let topic = Topic { name: name.to_string(), id, partitions: placements, configs, created_ms: now_ms };
        Ok(self.topics.entry(name.to_string()).or_insert(topic))
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<Topic, MetadataError> {
        self.topics.remove(name).ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    /// Sets and removes config keys of a topic, all or nothing.
    pub fn alter_config(
        &mut self,
        name: &str,
        set: &[(String, String)],
        remove: &[String],
    ) -> Result<(), MetadataError> {
        let topic = self.topics.get_mut(name).ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        let mut config = topic.config();
        for key in remove {
            config.remove(key)?;
        }
        for (key, value) in set {
            config.set(key, value)?;
        }
        topic.configs = config.explicit().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("metadata serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        let m: Metadata = serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        if m.version != FORMAT_VERSION {
            return Err(MetadataError::Corrupt(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                m.version
            )));
        }
        for topic in m.topics.values() {
            topic.config(); // configs must still be valid
            if topic.partitions.iter().enumerate().any(|(i, p)| p.partition as usize != i) {
                return Err(MetadataError::Corrupt(format!("topic '{}': partitions out of order", topic.name)));
            }
        }
        Ok(m)
    }
}

/// Kafka's rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason: &str| MetadataError::InvalidTopicName { name: name.to_string(), reason: reason.to_string() };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(invalid("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(invalid("only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Atomic, durable replacement of a small file: write a temp file, fsync it, rename it over
/// `path`, fsync the directory. Blocking: run it off the shard's executor.
pub mod store {
    use std::{
        fs,
        io::{self, Write},
        path::Path,
    };

    pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().ok_or_else(|| io::Error::other("metadata path has no directory"))?;
        let tmp = path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    }

    /// The file's bytes, or `None` if it does not exist.
    pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TopicId {
        TopicId([n; 16])
    }

    #[test]
    fn partitions_spread_over_shards_and_stay_balanced_across_topics() {
        let mut m = Metadata::new();
        let t = m.create_topic("a", 5, &TopicConfig::default(), 2, id(1), 0).unwrap();
        let shards: Vec<u16> = t.partitions.iter().map(|p| p.shard).collect();
        assert_eq!(shards, vec![0, 1, 0, 1, 0]);
        m.create_topic("b", 3, &TopicConfig::default(), 2, id(2), 0).unwrap();
        assert_eq!(m.partitions_per_shard(2), vec![4, 4]);
        let b: Vec<u16> = m.topic("b").unwrap().partitions.iter().map(|p| p.shard).collect();
        assert_eq!(b, vec![1, 0, 1], "the less loaded shard first");
    }

    #[test]
    fn create_delete_alter_and_round_trip() {
        let mut m = Metadata::new();
        let config = TopicConfig::from_pairs([("cleanup.policy", "compact")]).unwrap();
        m.create_topic("orders.v1", 3, &config, 2, id(7), 42).unwrap();
        assert_eq!(
            m.create_topic("orders.v1", 1, &config, 2, id(8), 0).unwrap_err(),
            MetadataError::TopicExists("orders.v1".into())
        );
        m.alter_config("orders.v1", &[("retention.ms".into(), "1000".into())], &["cleanup.policy".into()]).unwrap();
        let err = m.alter_config("orders.v1", &[("retention.ms".into(), "x".into())], &[]).unwrap_err();
        assert!(matches!(err, MetadataError::Config(_)));
        assert_eq!(m.topic("orders.v1").unwrap().configs.get("retention.ms").map(String::as_str), Some("1000"));
        assert!(!m.topic("orders.v1").unwrap().configs.contains_key("cleanup.policy"));
        let back = Metadata::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        m.delete_topic("orders.v1").unwrap();
        assert!(matches!(m.delete_topic("orders.v1"), Err(MetadataError::UnknownTopic(_))));
    }

    #[test]
    fn names_and_counts_are_checked() {
        let mut m = Metadata::new();
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(matches!(
                m.create_topic(bad, 1, &TopicConfig::default(), 1, id(1), 0),
                Err(MetadataError::InvalidTopicName { .. })
            ));
        }
        for bad in [0, MAX_PARTITIONS_PER_TOPIC + 1] {
            assert!(matches!(
                m.create_topic("t", bad, &TopicConfig::default(), 1, id(1), 0),
                Err(MetadataError::InvalidPartitions { .. })
            ));
        }
        assert!(matches!(Metadata::decode(b"{not json"), Err(MetadataError::Corrupt(_))));
    }

    #[test]
    fn store_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        assert_eq!(store::read(&path).unwrap(), None);
        store::replace(&path, b"one").unwrap();
        store::replace(&path, b"two").unwrap();
        assert_eq!(store::read(&path).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!path.with_extension("tmp").exists());
    }
}
