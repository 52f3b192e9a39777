//! Background work each shard does on its own partitions, away from the request path:
//!
//! - **Interval syncs** (`fsync.policy=interval`): every [`SYNC_TICK`], each such log that
//!   appends left unsynced fdatasyncs if its `fsync.interval.ms` has passed, so data written just
//!   before producers go quiet does not stay unsynced until the next append.
//! - **Retention and compaction**: every `maintenance_interval_ms`, closed segments past
//!   `retention.ms` / `retention.bytes` are deleted (cleanup policy `delete`), and logs of
//!   compacted topics that closed a segment since their last compaction are compacted.
//!
//! - **Syncs after `acks=1` appends** under `fsync.policy=always`: such an append returns once
//!   written; its fdatasync (which makes it durable and readable) starts here right away.
//!
//! - **Zeroed runways** under `fsync.policy=always` (`--runway-bytes`, 8 MiB by default;
//!   `keel_storage::runway`): when an append leaves a log's runway low
//!   ([`ShardState::runway_soon`]), zeros are written ahead of its end here, one log at a time,
//!   while appends go on.
//!
//! - **Consumer group timer**: session and rebalance timeouts of the groups this shard
//!   coordinates (`coordinator::GroupService::run_timer`; asleep while there are none).
//!
//! - **Metrics snapshots**: every [`SNAPSHOT_INTERVAL`], the shard publishes its partitions'
//!   offsets and its groups' committed offsets for the admin thread (see `metrics`).
//!
//! Retention and compaction run in their own glommio task queue with a tenth of the request
//! path's CPU shares, one partition at a time, so a shard busy with requests gives them little
//! time and an idle shard gives them all of it. Each log's own maintenance lock keeps them from
//! overlapping a truncation.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    rc::Rc,
    sync::atomic::Ordering::Relaxed,
    time::Duration,
};

use futures_lite::future;
use glommio::{Latency, Shares};
use tracing::{debug, warn};

use crate::{
    broker::ShardState,
    metrics::{CommittedFigure, PartitionFigures, ShardSnapshot, SNAPSHOT_INTERVAL},
    partitions::{PartitionKey, PartitionLog},
};

/// How often interval-synced logs are checked; bounds how late an interval sync can be.
pub const SYNC_TICK: Duration = Duration::from_millis(10);

/// CPU shares of the maintenance queue; the default queue (requests) has 1000.
const MAINTENANCE_SHARES: usize = 100;

/// Starts this shard's background tasks; they end when the shard stops.
pub fn start(state: &Rc<ShardState>) -> Vec<glommio::task::JoinHandle<()>> {
    let queue =
        glommio::executor().create_task_queue(Shares::Static(MAINTENANCE_SHARES), Latency::NotImportant, "maintenance");
    let cleaner = glommio::spawn_local_into(clean_loop(state.clone()), queue)
        .expect("the maintenance queue was just created on this executor")
        .detach();
    let syncer = glommio::spawn_local(sync_loop(state.clone())).detach();
    let durability = glommio::spawn_local(durability_loop(state.clone())).detach();
    let runways = glommio::spawn_local(runway_loop(state.clone())).detach();
    let publisher = glommio::spawn_local(publish_loop(state.clone())).detach();
    let group_timer = glommio::spawn_local({
        let state = state.clone();
        async move { state.groups.run_timer(&state).await }
    })
    .detach();
    vec![cleaner, syncer, durability, runways, publisher, group_timer]
}

/// Sleeps for `period`; false if the shard began stopping first.
async fn sleep_unless_stopped(state: &ShardState, period: Duration) -> bool {
    future::or(
        async {
            glommio::timer::sleep(period).await;
            true
        },
        async {
            state.shard.stopping().await;
            false
        },
    )
    .await
}

async fn publish_loop(state: Rc<ShardState>) {
    while !state.shard.is_stopping() {
        publish_snapshot(&state);
        if !sleep_unless_stopped(&state, SNAPSHOT_INTERVAL).await {
            return;
        }
    }
}

/// Publishes this shard's partition offsets and committed offsets for the admin thread.
fn publish_snapshot(state: &ShardState) {
    let metadata = state.metadata();
    let names: HashMap<_, &str> = metadata.topics().map(|t| (t.id, t.name.as_str())).collect();
    let logs = state.partitions.all();
    state.stats().partitions.store(logs.len() as u64, Relaxed);
    // The caches of recent appends share half of the shard's memory budget.
    let limit = cache_limit_per_log(state.config.memory_per_shard(state.shard.all().count()) / 2, logs.len());
    let mut cached = 0;
    for (_, log) in &logs {
        log.set_cache_limit(limit);
        cached += log.cache_bytes() as u64;
    }
    state.stats().cache_bytes.store(cached, Relaxed);
    let partitions = logs
        .iter()
        .filter_map(|(key, log)| {
            let offsets = log.offsets();
            Some(PartitionFigures {
                topic: names.get(&key.topic)?.to_string(),
                partition: key.partition,
                log_start: offsets.log_start,
                log_end: offsets.readable_end,
                size_bytes: log.size_bytes(),
                syncs: log.syncs(),
            })
        })
        .collect();
    let committed = state
        .offsets
        .borrow()
        .all()
        .map(|(key, value)| CommittedFigure {
            group: key.group.clone(),
            topic: key.topic.clone(),
            partition: key.partition,
            offset: value.offset,
        })
        .collect();
    state.metrics.publish(state.id().0 as usize, ShardSnapshot { partitions, committed });
}

/// Ticks, every [`SYNC_TICK`], the `fsync=interval` logs holding data not yet synced: the ones
/// appends named ([`ShardState::interval_sync_soon`]; a log opens with nothing unsynced, see
/// `Log::interval_sync_pending`). A log leaves the set once synced (or failed), so idle
/// partitions cost nothing; visiting every partition each tick took 15 % of a CPU with 10,000
/// idle ones (docs/benchmarks.md).
async fn sync_loop(state: Rc<ShardState>) {
    let mut pending: HashSet<PartitionKey> = HashSet::new();
    loop {
        if pending.is_empty() {
            let Some(keys) = state.next_interval_unsynced().await else { return };
            pending.extend(keys);
            continue;
        }
        if !sleep_unless_stopped(&state, SYNC_TICK).await {
            return;
        }
        pending.extend(state.interval_unsynced_now());
        let keys: Vec<PartitionKey> = pending.iter().copied().collect();
        for key in keys {
            let Some(log) = state.partitions.get(key) else {
                pending.remove(&key);
                continue;
            };
            if let Err(e) = log.tick().await {
                warn!(topic = %key.topic, partition = key.partition, error = %e, "interval sync failed");
            }
            // A failed log fails every later sync; its next append (if any succeeds) adds it back.
            if !log.interval_sync_pending() {
                pending.remove(&key);
            }
        }
    }
}

/// Runs the fdatasyncs that `acks=1` producers under `fsync=always` did not wait for, as soon as
/// they are asked for ([`ShardState::sync_soon`]), all logs at once; a log's appends meanwhile
/// share the sync (group commit). At shutdown the logs' clean close syncs what is left.
async fn durability_loop(state: Rc<ShardState>) {
    while let Some(keys) = state.next_unsynced().await {
        let syncs = keys.into_iter().filter_map(|key| state.partitions.get(key).map(|log| (key, log))).map(
            |(key, log)| async move {
                if let Err(e) = log.flush().await {
                    warn!(topic = %key.topic, partition = key.partition, error = %e, "sync after acks=1 appends failed");
                }
            },
        );
        keel_storage::io::join_all(syncs.collect()).await;
    }
}

/// Longest pause between two zero writes of a paced runway refill: the log's next fdatasync
/// normally ends it sooner (`Log::extend_runway_paced`); this bounds a refill's time when
/// appends stop.
const RUNWAY_PAUSE: Duration = Duration::from_millis(2);

/// Refills the zeroed runways that appends left low ([`ShardState::runway_soon`]), one log at a
/// time (each refill is a few MiB of writes; they need not compete with one another), each
/// zero write after one of the log's fdatasyncs.
async fn runway_loop(state: Rc<ShardState>) {
    while let Some(keys) = state.next_runways().await {
        for key in keys {
            let Some(log) = state.partitions.get(key) else { continue };
            if let Err(e) = log.extend_runway_paced(|| glommio::timer::sleep(RUNWAY_PAUSE)).await {
                // Appends go on without one (a failed fdatasync has failed the log, which says so).
                warn!(topic = %key.topic, partition = key.partition, error = %e, "zeroing ahead of the log failed");
            }
        }
    }
}

async fn clean_loop(state: Rc<ShardState>) {
    let interval = Duration::from_millis(state.config.maintenance_interval_ms);
    let compacted: RefCell<HashMap<PartitionKey, u64>> = RefCell::default();
    loop {
        if !sleep_unless_stopped(&state, interval).await {
            return;
        }
        for (key, log) in state.partitions.all() {
            if state.shard.is_stopping() {
                return;
            }
            // Deleted since the round began: its files are gone.
            if state.partitions.get(key).is_none() {
                continue;
            }
            clean_one(&state, key, &log, &compacted).await;
        }
        // Forget logs that were removed (deleted topics).
        compacted.borrow_mut().retain(|key, _| state.partitions.get(*key).is_some());
    }
}

/// Retention, then compaction if the log closed a segment since it was last compacted.
async fn clean_one(
    state: &ShardState,
    key: PartitionKey,
    log: &PartitionLog,
    compacted: &RefCell<HashMap<PartitionKey, u64>>,
) {
    // A topic deleted while its partition is cleaned takes the files away mid-way: the errors
    // that follow are expected, not worth a warning.
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        if state.partitions.get(key).is_some() {
            warn!(topic = %key.topic, partition = key.partition, error = %e, "{what} failed");
        } else {
            debug!(topic = %key.topic, partition = key.partition, error = %e, "{what} of a deleted partition stopped");
        }
    };
    // The storage engine logs what it deleted and compacted, with the log's directory.
    if let Err(e) = log.enforce_retention().await {
        failed("retention", &e);
    }
    let active = log.active_segment_base();
    if !needs_compaction(
        log.config().cleanup_policy.compacts(),
        log.segment_bases().len(),
        active,
        compacted.borrow().get(&key).copied(),
    ) {
        return;
    }
    match log.compact().await {
        Ok(outcome) => {
            debug!(topic = %key.topic, partition = key.partition, ?outcome, "compacted");
            // A compaction whose key map filled up left records to map: the next round goes on.
            if outcome.complete {
                compacted.borrow_mut().insert(key, active);
            }
        }
        Err(e) => failed("compaction", &e),
    }
}

/// Smallest cache a log with data keeps: one chunk of its tail (see keel_storage's tail).
const MIN_CACHE_PER_LOG: usize = 256 << 10;
/// Largest: the storage engine's default (enough to serve tailing consumers from memory).
const MAX_CACHE_PER_LOG: usize = 4 << 20;

/// Each log's share of a shard's cache budget, between one chunk and the default.
fn cache_limit_per_log(budget: u64, logs: usize) -> usize {
    let share = usize::try_from(budget / logs.max(1) as u64).unwrap_or(usize::MAX);
    share.clamp(MIN_CACHE_PER_LOG, MAX_CACHE_PER_LOG)
}

/// Whether a log should be compacted now: its topic compacts, it has a closed segment, and a
/// segment closed since the last compaction (the active segment then had another base).
fn needs_compaction(compacts: bool, segments: usize, active_base: u64, compacted_at_active: Option<u64>) -> bool {
    compacts && segments > 1 && compacted_at_active != Some(active_base)
}

#[cfg(test)]
mod tests {
    use super::{cache_limit_per_log, needs_compaction};

    #[test]
    fn cache_budget_is_shared_between_logs() {
        assert_eq!(cache_limit_per_log(256 << 20, 16), 4 << 20, "few logs: the default");
        assert_eq!(cache_limit_per_log(256 << 20, 128), 2 << 20);
        assert_eq!(cache_limit_per_log(256 << 20, 5000), 256 << 10, "many logs: one chunk each");
        assert_eq!(cache_limit_per_log(256 << 20, 0), 4 << 20);
    }

    #[test]
    fn compaction_runs_once_per_closed_segment() {
        assert!(!needs_compaction(false, 5, 100, None), "delete-only topics are never compacted");
        assert!(!needs_compaction(true, 1, 0, None), "nothing closed yet");
        assert!(needs_compaction(true, 2, 100, None), "never compacted since start-up");
        assert!(!needs_compaction(true, 2, 100, Some(100)), "no segment closed since");
        assert!(needs_compaction(true, 3, 250, Some(100)), "a segment closed since");
    }
}
