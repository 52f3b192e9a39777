//! The partition logs one shard owns: opened at start-up for every partition the placement
//! table puts on this shard, created with a topic, closed cleanly at shutdown.
//!
//! Layout under the data directory: `logs/<topic>-<topic id>/<partition>/` holds one partition's
//! segments. The topic id in the name keeps a deleted topic's files apart from a new topic of the
//! same name.

use std::{
    cell::RefCell,
    collections::HashMap,
    path::{Path, PathBuf},
    rc::Rc,
};

use keel_storage::{
    io::{dma::DmaDir, SystemClock},
    Log, LogConfig, StorageError,
};
use tracing::{debug, info, warn};

use crate::metadata::{Topic, TopicId};

pub type PartitionLog = Log<DmaDir, SystemClock>;

/// Attempts, and the pause between them, at removing a deleted partition's directory while a
/// last holder of its log still adds files to it.
const REMOVE_RETRIES: u32 = 50;
const REMOVE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// A partition of a topic, by topic id (stable across renames and re-creations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicId,
    pub partition: u32,
}

/// The logs of one shard.
pub struct Partitions {
    root: PathBuf,
    /// What topic configs do not control (write sizes, cache sizes).
    base: LogConfig,
    logs: RefCell<HashMap<PartitionKey, Rc<PartitionLog>>>,
}

impl Partitions {
    /// Creates `<data_dir>/logs` if missing.
    pub fn new(data_dir: &Path, base: LogConfig) -> std::io::Result<Self> {
        let root = data_dir.join("logs");
        std::fs::create_dir_all(&root)?;
        Ok(Partitions { root, base, logs: RefCell::new(HashMap::new()) })
    }

    /// Directory of one partition's log.
    pub fn dir_of(&self, topic: &Topic, partition: u32) -> PathBuf {
        self.root.join(topic_dir_name(topic)).join(partition.to_string())
    }

    pub fn get(&self, key: PartitionKey) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(&key).cloned()
    }

    /// Every log of this shard (a snapshot: logs opened or removed later are not in it).
    pub fn all(&self) -> Vec<(PartitionKey, Rc<PartitionLog>)> {
        self.logs.borrow().iter().map(|(k, l)| (*k, l.clone())).collect()
    }

    pub fn count(&self) -> usize {
        self.logs.borrow().len()
    }

    /// Bytes of every log of this shard.
    pub fn log_bytes(&self) -> u64 {
        self.logs.borrow().values().map(|l| l.size_bytes()).sum()
    }

    /// Applies `topic`'s configs (as altered) to its open partitions among `partitions`: what a
    /// log can change live ([`Log::reconfigure`]) at once, the rest at the next open.
    pub fn reconfigure(&self, topic: &Topic, partitions: &[u32]) {
        let config = topic.config().log_config(&self.base);
        for &partition in partitions {
            if let Some(log) = self.get(PartitionKey { topic: topic.id, partition }) {
                log.reconfigure(&config);
            }
        }
    }

    /// Opens (creating if new, recovering if unclean) the given partitions of `topic`, several
    /// at a time: each open waits mostly on directory and file syncs, so overlapping them makes
    /// a 10,000-partition topic or start-up take seconds instead of tens of seconds.
    pub async fn open(&self, topic: &Topic, partitions: &[u32]) -> Result<(), StorageError> {
        const OPENS_IN_FLIGHT: usize = 32;
        let config = topic.config().log_config(&self.base);
        keel_storage::io::dma::prime_poll_probe(&self.root)
            .await
            .map_err(|e| StorageError::io("probing", self.root.display().to_string(), e))?;
        let missing: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|&p| !self.logs.borrow().contains_key(&PartitionKey { topic: topic.id, partition: p }))
            .collect();
        for group in missing.chunks(OPENS_IN_FLIGHT) {
            let opens = group.iter().map(|&partition| self.open_one(topic, partition, config.clone())).collect();
            let mut first_error = None;
            for opened in keel_storage::io::join_all(opens).await {
                match opened {
                    Ok((partition, log)) => {
                        self.logs.borrow_mut().insert(PartitionKey { topic: topic.id, partition }, Rc::new(log));
                    }
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn open_one(
        &self,
        topic: &Topic,
        partition: u32,
        config: LogConfig,
    ) -> Result<(u32, PartitionLog), StorageError> {
        let path = self.dir_of(topic, partition);
        let dir =
            DmaDir::create(&path).await.map_err(|e| StorageError::io("creating", path.display().to_string(), e))?;
        let (log, report) = Log::open(dir, SystemClock, config).await?;
        if report.scanned_segments > 0 || !report.damaged.is_empty() || report.truncated_bytes > 0 {
            info!(topic = %topic.name, partition, ?report, "recovered partition log");
        }
        Ok((partition, log))
    }

    /// Closes and deletes the given partitions of `topic` (a deleted topic).
    pub async fn remove(&self, topic: &Topic, partitions: &[u32]) -> Result<(), StorageError> {
        for &partition in partitions {
            let key = PartitionKey { topic: topic.id, partition };
            let log = self.logs.borrow_mut().remove(&key);
            if let Some(log) = log {
                match Rc::try_unwrap(log) {
                    Ok(log) => {
                        if let Err(e) = log.close().await {
                            debug!(topic = %topic.name, partition, error = %e, "closing a deleted partition's log failed");
                        }
                    }
                    // A request or the maintenance round still holds it: its files go now, and
                    // it must not add any (a roll, a checkpoint) while they do.
                    Err(log) => {
                        log.refuse_writes("its topic was deleted");
                        debug!(topic = %topic.name, partition, "a deleted partition's log is still in use");
                    }
                }
            }
            let path = self.dir_of(topic, partition);
            let mut retries = 0;
            loop {
                // Unlinking a partition's segments can take long (a large file's extents are freed
                // synchronously), so it runs on glommio's blocking thread, not on the shard.
                let removing = path.clone();
                match glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(removing)).await {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // Whoever still held the log (an append that rolled a segment, a retention
                    // round already under way) created a file after the listing: go again.
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && retries < REMOVE_RETRIES => {
                        retries += 1;
                        glommio::timer::sleep(REMOVE_RETRY_PAUSE).await;
                    }
                    Err(e) => return Err(StorageError::io("removing", path.display().to_string(), e)),
                }
            }
        }
        let topic_dir = self.root.join(topic_dir_name(topic));
        // Only if empty: other shards may still hold partitions.
        let _ = glommio::executor().spawn_blocking(move || std::fs::remove_dir(topic_dir)).await;
        Ok(())
    }

    /// Clean shutdown of every log: flushed, sealed, clean-shutdown markers written.
    pub async fn close_all(&self) {
        let logs: Vec<_> = self.logs.borrow_mut().drain().map(|(_, log)| log).collect();
        // Requests and background tasks still under way let go of their logs within a step.
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while logs.iter().any(|log| Rc::strong_count(log) > 1) && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        for log in logs {
            close(log).await;
        }
    }
}

/// Longest file name most file systems take (ext4, XFS, btrfs: 255 bytes).
const MAX_FILE_NAME: usize = 255;

/// The directory of a topic's partitions: `NAME-ID`, the topic id (32 hex digits) keeping two
/// topics of one name apart. A name too long for that to fit in a file name (Kafka allows 249
/// characters) is cut: the id alone tells topics apart. Topic names are ASCII.
fn topic_dir_name(topic: &Topic) -> String {
    let id = topic.id.to_string();
    let room = MAX_FILE_NAME - 1 - id.len();
    let name = topic.name.get(..room).unwrap_or(&topic.name);
    format!("{name}-{id}")
}

/// How long closing the logs at shutdown waits for their other holders (a request or a
/// background task finishing its step) to let go of them.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn close(log: Rc<PartitionLog>) {
    match Rc::try_unwrap(log) {
        Ok(log) => {
            if let Err(e) = log.close().await {
                warn!(error = %e, "closing a partition log failed; the next start recovers it");
            }
        }
        Err(_) => warn!("a partition log is still in use at close; the next start recovers it"),
    }
}
