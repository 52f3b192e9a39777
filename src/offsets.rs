//! Committed consumer offsets, kept like Kafka's `__consumer_offsets`: an internal compacted topic
//! whose records say "group G, topic T, partition P is at offset O". A group's commits all go to
//! one partition of it (murmur2 of the group id), so one shard owns each group and its commits
//! are ordered; that shard keeps the latest commit per key in memory, rebuilt from the log when
//! the partition opens. Compaction keeps the log at one record per key.
//!
//! Record layout (big-endian, version 1):
//! - key:   `u16 version, string group, string topic, u32 partition`
//! - value: `u16 version, u64 offset, nullable string metadata, i64 commit time (ms)`
//!
//! where `string` is a u16 length + UTF-8 bytes and a null metadata has length -1 (i16).

use std::collections::{BTreeMap, HashMap};

use keel_storage::{
    batch::{BatchBuilder, BatchView},
    be_reader::BeReader,
};

/// Name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partition count, fixed at creation (a group's partition must never change).
pub const OFFSETS_PARTITIONS: u32 = 16;
/// Longest group id, in bytes.
pub const MAX_GROUP_ID_BYTES: usize = 255;
const VERSION: u16 = 1;

/// The partition of the offsets topic that holds `group`'s commits.
pub fn partition_for_group(group: &str) -> u32 {
    keel_client::partition_for_key(group.as_bytes(), OFFSETS_PARTITIONS)
}

/// Group ids are 1 to 255 bytes.
pub fn valid_group(group: &str) -> bool {
    !group.is_empty() && group.len() <= MAX_GROUP_ID_BYTES
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub metadata: Option<String>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn string(r: &mut BeReader) -> Option<String> {
    let len = r.u16()? as usize;
    String::from_utf8(r.take(len)?.to_vec()).ok()
}

/// A u16 length, negative (0xFFFF) for null, then that many UTF-8 bytes.
fn nullable_string(r: &mut BeReader) -> Option<Option<String>> {
    let len = r.u16()? as i16;
    if len < 0 {
        return Some(None);
    }
    String::from_utf8(r.take(len as usize)?.to_vec()).ok().map(Some)
}

pub fn encode_key(key: &CommitKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.group.len() + key.topic.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    put_str(&mut out, &key.group);
    put_str(&mut out, &key.topic);
    out.extend_from_slice(&key.partition.to_be_bytes());
    out
}

pub fn encode_value(value: &Committed, now_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&value.offset.to_be_bytes());
    match &value.metadata {
        Some(m) => put_str(&mut out, m),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
    out.extend_from_slice(&now_ms.to_be_bytes());
    out
}

pub fn decode_key(bytes: &[u8]) -> Option<CommitKey> {
    let mut r = BeReader(bytes);
    (r.u16()? == VERSION).then_some(())?;
    let key = CommitKey { group: string(&mut r)?, topic: string(&mut r)?, partition: r.u32()? };
    r.rest().is_empty().then_some(key)
}

pub fn decode_value(bytes: &[u8]) -> Option<Committed> {
    let mut r = BeReader(bytes);
    (r.u16()? == VERSION).then_some(())?;
    // An offset past i64 (stored before the protocol refused them) cannot be answered: unreadable.
    let value = Committed { offset: r.u64().filter(|&o| o <= i64::MAX as u64)?, metadata: nullable_string(&mut r)? };
    r.u64()?; // commit time
    r.rest().is_empty().then_some(value)
}

/// One batch holding every commit of one CommitOffsets request (appended atomically).
pub fn commit_batch(commits: &[(CommitKey, Committed)], now_ms: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for (key, value) in commits {
        b.push(now_ms, Some(&encode_key(key)), Some(&encode_value(value, now_ms)), &[]);
    }
    b.last_offset_delta(commits.len() as i32 - 1).build()
}

/// One batch of tombstones (null values): the commits of `keys` are deleted, and compaction
/// removes them from the log.
pub fn tombstone_batch(keys: &[CommitKey], now_ms: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for key in keys {
        b.push(now_ms, Some(&encode_key(key)), None, &[]);
    }
    b.last_offset_delta(keys.len() as i32 - 1).build()
}

/// The latest commit per key of the offsets partitions one shard owns.
#[derive(Debug, Default)]
pub struct OffsetStore {
    /// offsets partition -> key -> latest commit.
    partitions: HashMap<u32, BTreeMap<CommitKey, Committed>>,
}

impl OffsetStore {
    /// Applies the records of stored batches (a replay at open, or a commit just appended).
    /// Records that do not decode are skipped with a count (never invented).
    pub fn apply(&mut self, partition: u32, batches: &[u8]) -> usize {
        let map = self.partitions.entry(partition).or_default();
        let mut skipped = 0;
        let mut rest = batches;
        while !rest.is_empty() {
            let Ok(view) = BatchView::parse(rest) else { break };
            rest = &rest[view.total_len()..];
            let Ok(records) = view.records() else {
                skipped += 1;
                continue;
            };
            for record in records {
                let Ok(record) = record else {
                    skipped += 1;
                    continue;
                };
                match (record.key.and_then(decode_key), record.value) {
                    (Some(key), Some(value)) => match decode_value(value) {
                        Some(v) => {
                            map.insert(key, v);
                        }
                        None => skipped += 1,
                    },
                    (Some(key), None) => {
                        map.remove(&key); // tombstone
                    }
                    (None, _) => skipped += 1,
                }
            }
        }
        skipped
    }

    pub fn get(&self, partition: u32, key: &CommitKey) -> Option<&Committed> {
        self.partitions.get(&partition)?.get(key)
    }

    /// Every commit of `group` (in topic, partition order).
    pub fn group(&self, partition: u32, group: &str) -> Vec<(CommitKey, Committed)> {
        let Some(map) = self.partitions.get(&partition) else { return Vec::new() };
        map.iter().filter(|(k, _)| k.group == group).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Every commit key for `topic`, by offsets partition.
    pub fn topic_keys(&self, topic: &str) -> Vec<(u32, Vec<CommitKey>)> {
        self.partitions
            .iter()
            .map(|(&partition, map)| (partition, map.keys().filter(|k| k.topic == topic).cloned().collect::<Vec<_>>()))
            .filter(|(_, keys)| !keys.is_empty())
            .collect()
    }

    /// Every group with a commit on this shard.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> =
            self.partitions.values().flat_map(|m| m.keys().map(|k| k.group.clone())).collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Every latest commit on this shard (for metrics).
    pub fn all(&self) -> impl Iterator<Item = (&CommitKey, &Committed)> {
        self.partitions.values().flat_map(|m| m.iter())
    }

    pub fn forget(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, topic: &str, partition: u32) -> CommitKey {
        CommitKey { group: group.into(), topic: topic.into(), partition }
    }

    #[test]
    fn records_round_trip_and_the_latest_commit_wins() {
        let k = key("g", "orders", 3);
        assert_eq!(decode_key(&encode_key(&k)), Some(k.clone()));
        let v = Committed { offset: 42, metadata: Some("m".into()) };
        assert_eq!(decode_value(&encode_value(&v, 7)), Some(v.clone()));
        let none = Committed { offset: 1, metadata: None };
        assert_eq!(decode_value(&encode_value(&none, 7)), Some(none));
        assert_eq!(decode_key(&[0, 2, 0]), None, "unknown version or truncated");

        let mut store = OffsetStore::default();
        let first = commit_batch(&[(k.clone(), v.clone()), (key("g", "orders", 4), v.clone())], 1);
        let second = commit_batch(&[(k.clone(), Committed { offset: 50, metadata: None })], 2);
        let mut both = first.clone();
        both.extend_from_slice(&second);
        assert_eq!(store.apply(9, &both), 0);
        assert_eq!(store.get(9, &k).unwrap().offset, 50);
        assert_eq!(store.group(9, "g").len(), 2);
        assert_eq!(store.groups(), vec!["g".to_string()]);
        assert!(store.group(9, "other").is_empty());

        let gone = tombstone_batch(std::slice::from_ref(&k), 3);
        assert_eq!(store.apply(9, &gone), 0);
        assert_eq!(store.get(9, &k), None, "a tombstone deletes the commit");
        assert_eq!(store.group(9, "g").len(), 1);
    }

    #[test]
    fn groups_map_to_a_fixed_partition() {
        assert!(partition_for_group("g") < OFFSETS_PARTITIONS);
        assert_eq!(partition_for_group("payments"), partition_for_group("payments"));
        assert!(!valid_group("") && !valid_group(&"x".repeat(256)) && valid_group("g"));
    }
}
