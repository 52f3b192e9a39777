//! Per-topic settings under Kafka's names (`retention.ms`, `cleanup.policy`, ...) plus Keel's
//! `fsync.policy` / `fsync.interval.ms`, validated from text and turned into a [`LogConfig`].
//!
//! A topic stores only the keys set explicitly; everything else takes its default, so changing
//! a default in a later release changes topics that never set the key (as in Kafka).

use std::{collections::BTreeMap, fmt};

use keel_storage::{CleanupPolicy, FsyncPolicy, LogConfig};

/// How a key's value is parsed and checked.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Milliseconds; `-1` = unlimited where `unlimited` is allowed.
    Millis {
        unlimited: bool,
    },
    /// Bytes in `[min, max]`; `-1` = unlimited where `unlimited` is allowed.
    Bytes {
        min: i64,
        max: i64,
        unlimited: bool,
    },
    Cleanup,
    Fsync,
}

/// One topic config key: its name, default (as text, exactly as `describe` shows it) and meaning.
#[derive(Clone, Copy, Debug)]
pub struct ConfigKey {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
    kind: Kind,
}

/// Every topic config key Keel understands. Unknown keys are rejected (a typo must not be
/// silently ignored).
pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        default: "delete",
        doc: "delete (retention removes old segments), compact (keep the latest record per key) or compact,delete",
        kind: Kind::Cleanup,
    },
    ConfigKey {
        name: "retention.ms",
        default: "604800000",
        doc: "delete closed segments whose newest record is older than this many ms; -1 = keep forever",
        kind: Kind::Millis { unlimited: true },
    },
    ConfigKey {
        name: "retention.bytes",
        default: "-1",
        doc: "delete the oldest closed segments while a partition is larger than this many bytes; -1 = no limit",
        kind: Kind::Bytes { min: 0, max: i64::MAX, unlimited: true },
    },
    ConfigKey {
        name: "segment.bytes",
        default: "1073741824",
        doc: "roll to a new segment file before one grows past this many bytes (1 MiB..4 GiB)",
        kind: Kind::Bytes { min: 1 << 20, max: u32::MAX as i64, unlimited: false },
    },
    ConfigKey {
        name: "segment.ms",
        default: "604800000",
        doc: "roll to a new segment once the active one is this many ms old; -1 = only by size",
        kind: Kind::Millis { unlimited: true },
    },
    ConfigKey {
        name: "delete.retention.ms",
        default: "86400000",
        doc: "compaction keeps a tombstone (null value) this many ms before removing it",
        kind: Kind::Millis { unlimited: false },
    },
    ConfigKey {
        name: "max.message.bytes",
        default: "1048576",
        doc: "largest record batch a producer may send to this topic, in bytes (1 KiB..64 MiB)",
        kind: Kind::Bytes { min: 1 << 10, max: 64 << 20, unlimited: false },
    },
    ConfigKey {
        name: "fsync.policy",
        default: "always",
        doc: "always (acknowledge after fdatasync; concurrent appends share one), interval (every fsync.interval.ms) or never",
        kind: Kind::Fsync,
    },
    ConfigKey {
        name: "fsync.interval.ms",
        default: "1000",
        doc: "with fsync.policy=interval: fdatasync at least this often, in ms",
        kind: Kind::Millis { unlimited: false },
    },
];

/// A rejected key or value, with what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    UnknownKey(String),
    InvalidValue { key: String, value: String, reason: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(key) => {
                let known: Vec<_> = KEYS.iter().map(|k| k.name).collect();
                write!(f, "unknown topic config '{key}' (known: {})", known.join(", "))
            }
            ConfigError::InvalidValue { key, value, reason } => {
                write!(f, "invalid value '{value}' for {key}: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The explicitly set configs of one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    set: BTreeMap<String, String>,
}

/// One row of [`TopicConfig::describe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigValue {
    pub key: &'static str,
    pub value: String,
    pub is_default: bool,
}

impl TopicConfig {
    /// Validates `key=value` pairs (later pairs win).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut config = TopicConfig::default();
        for (key, value) in pairs {
            config.set(key, value)?;
        }
        Ok(config)
    }

    /// Sets one key after validating it; the value is stored normalised (trimmed, lower case
    /// for enumerations).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let spec = lookup(key)?;
        let normalised = parse(spec, value)?;
        self.set.insert(spec.name.to_string(), normalised);
        Ok(())
    }

    /// Back to the default for `key`.
    pub fn remove(&mut self, key: &str) -> Result<(), ConfigError> {
        let spec = lookup(key)?;
        self.set.remove(spec.name);
        Ok(())
    }

    /// The explicitly set pairs (what is persisted).
    pub fn explicit(&self) -> impl Iterator<Item = (&str, &str)> {
        self.set.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every key with its effective value.
    pub fn describe(&self) -> Vec<ConfigValue> {
        KEYS.iter()
            .map(|k| match self.set.get(k.name) {
                Some(v) => ConfigValue { key: k.name, value: v.clone(), is_default: false },
                None => ConfigValue { key: k.name, value: k.default.to_string(), is_default: true },
            })
            .collect()
    }

    fn value(&self, key: &str) -> &str {
        match self.set.get(key) {
            Some(v) => v,
            None => lookup(key).expect("known key").default,
        }
    }

    fn number(&self, key: &str) -> i64 {
        self.value(key).parse().expect("validated when set")
    }

    /// The partition log settings of this topic; `base` supplies what topics do not control
    /// (write sizes, cache sizes).
    pub fn log_config(&self, base: &LogConfig) -> LogConfig {
        let optional = |v: i64| (v >= 0).then_some(v);
        let fsync = match self.value("fsync.policy") {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            _ => FsyncPolicy::Interval { ms: Some(self.number("fsync.interval.ms") as u64), bytes: None },
        };
        let cleanup_policy = match self.value("cleanup.policy") {
            "compact" => CleanupPolicy::Compact,
            "compact,delete" => CleanupPolicy::CompactDelete,
            _ => CleanupPolicy::Delete,
        };
        LogConfig {
            segment_bytes: self.number("segment.bytes") as u64,
            segment_ms: optional(self.number("segment.ms")),
            fsync,
            retention_ms: optional(self.number("retention.ms")),
            retention_bytes: optional(self.number("retention.bytes")).map(|b| b as u64),
            cleanup_policy,
            delete_retention_ms: self.number("delete.retention.ms"),
            max_batch_bytes: self.number("max.message.bytes") as usize,
            ..base.clone()
        }
    }
}

fn lookup(key: &str) -> Result<&'static ConfigKey, ConfigError> {
    KEYS.iter().find(|k| k.name == key.trim()).ok_or_else(|| ConfigError::UnknownKey(key.to_string()))
}

fn parse(spec: &ConfigKey, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let invalid =
        |reason: String| ConfigError::InvalidValue { key: spec.name.to_string(), value: value.to_string(), reason };
    match spec.kind {
        Kind::Millis { unlimited } => {
            let v: i64 = value.parse().map_err(|_| invalid("expected a whole number of milliseconds".into()))?;
            match v {
                -1 if unlimited => Ok(v.to_string()),
                v if v >= 0 => Ok(v.to_string()),
                _ => Err(invalid(if unlimited { "must be >= 0, or -1 for unlimited" } else { "must be >= 0" }.into())),
            }
        }
        Kind::Bytes { min, max, unlimited } => {
            let v: i64 = value.parse().map_err(|_| invalid("expected a whole number of bytes".into()))?;
            match v {
                -1 if unlimited => Ok(v.to_string()),
                v if (min..=max).contains(&v) => Ok(v.to_string()),
                _ => Err(invalid(format!("must be between {min} and {max}{}", if unlimited { ", or -1" } else { "" }))),
            }
        }
        Kind::Cleanup => {
            let mut parts: Vec<String> = value.split(',').map(|p| p.trim().to_ascii_lowercase()).collect();
            parts.sort();
            parts.dedup();
            match parts.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["delete"] => Ok("delete".into()),
                ["compact"] => Ok("compact".into()),
                ["compact", "delete"] => Ok("compact,delete".into()),
                _ => Err(invalid("expected delete, compact or compact,delete".into())),
            }
        }
        Kind::Fsync => match value.to_ascii_lowercase().as_str() {
            v @ ("always" | "interval" | "never") => Ok(v.to_string()),
            _ => Err(invalid("expected always, interval or never".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_storage_defaults_where_they_overlap() {
        let log = TopicConfig::default().log_config(&LogConfig::default());
        let base = LogConfig::default();
        assert_eq!(log.segment_bytes, base.segment_bytes);
        assert_eq!(log.fsync, FsyncPolicy::Always, "a single node is safe by default");
        assert_eq!(log.retention_ms, Some(7 * 24 * 3600 * 1000));
        assert_eq!(log.retention_bytes, None);
        assert_eq!(log.cleanup_policy, CleanupPolicy::Delete);
        assert_eq!(log.max_batch_bytes, 1 << 20);
        log.validate();
    }

    #[test]
    fn kafka_names_map_onto_the_log() {
        let c = TopicConfig::from_pairs([
            ("cleanup.policy", "Delete, compact"),
            ("retention.ms", "-1"),
            ("retention.bytes", "1000000"),
            ("segment.bytes", "1048576"),
            ("segment.ms", "-1"),
            ("fsync.policy", "interval"),
            ("fsync.interval.ms", "250"),
        ])
        .unwrap();
        let log = c.log_config(&LogConfig::default());
        assert_eq!(log.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(log.retention_ms, None);
        assert_eq!(log.retention_bytes, Some(1_000_000));
        assert_eq!(log.segment_bytes, 1 << 20);
        assert_eq!(log.segment_ms, None);
        assert_eq!(log.fsync, FsyncPolicy::Interval { ms: Some(250), bytes: None });
        let described = c.describe();
        let cleanup = described.iter().find(|v| v.key == "cleanup.policy").unwrap();
        assert_eq!((cleanup.value.as_str(), cleanup.is_default), ("compact,delete", false));
        assert!(described.iter().find(|v| v.key == "max.message.bytes").unwrap().is_default);
    }

    #[test]
    fn bad_keys_and_values_are_rejected_with_the_reason() {
        assert!(matches!(TopicConfig::from_pairs([("retention.msec", "1")]), Err(ConfigError::UnknownKey(_))));
        for (key, value) in [
            ("retention.ms", "-2"),
            ("retention.ms", "1h"),
            ("segment.bytes", "100"),
            ("segment.bytes", "-1"),
            ("segment.bytes", "8589934592"),
            ("cleanup.policy", "forever"),
            ("fsync.policy", "sometimes"),
            ("delete.retention.ms", "-1"),
            ("max.message.bytes", "0"),
        ] {
            let err = TopicConfig::from_pairs([(key, value)]).unwrap_err();
            assert!(matches!(err, ConfigError::InvalidValue { .. }), "{key}={value}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
        let mut c = TopicConfig::from_pairs([("retention.ms", "5")]).unwrap();
        c.remove("retention.ms").unwrap();
        assert_eq!(c, TopicConfig::default());
    }
}
