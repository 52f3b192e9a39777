//! `RuntimeConfig`: how many shards, where they run, and the bounds of cross-shard traffic.

use std::collections::HashSet;

use glommio::{CpuSet, Placement};

use crate::error::ConfigError;
use crate::id::ShardId;

/// Upper bound on shards per runtime. Every pair of shards gets its own request and response
/// queues, so memory grows with the square of this number.
pub const MAX_SHARDS: usize = 256;

/// Upper bound on [`RuntimeConfig::queue_capacity`], in messages.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 16;

/// Default [`RuntimeConfig::queue_capacity`], in messages.
pub const DEFAULT_QUEUE_CAPACITY: usize = 128;

/// Default [`RuntimeConfig::max_concurrent_requests`], in requests.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// Where shard threads run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Shard `i` runs pinned to CPU `cores[i]` (CPU ids as the kernel numbers them, see
    /// `/sys/devices/system/cpu/online`). One entry per shard, no CPU twice.
    Cores(Vec<usize>),
    /// Shard threads are not pinned and the scheduler moves them at will: for tests and for
    /// machines shared with other work. More shards than CPUs is allowed.
    None,
}

/// Everything `start` needs to know. Build it with [`RuntimeConfig::per_online_cpu`] (production)
/// or [`RuntimeConfig::unpinned`] (tests), then adjust fields; `start` validates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Number of shards (threads, executors), `1..=MAX_SHARDS`.
    pub shards: usize,
    /// Where each shard's thread runs.
    pub pin: Pinning,
    /// Requests that may wait in one (from, to) queue, in messages; a power of two in
    /// `1..=MAX_QUEUE_CAPACITY` (glommio's ring buffers are powers of two, and a rounded-up bound
    /// would be a lie). A caller whose queue is full waits. The target additionally holds at most
    /// one request per queue that it has taken off the queue and that waits for a serving slot.
    /// The same capacity bounds each (to, from) response queue.
    pub queue_capacity: usize,
    /// Requests one shard serves at once (handler tasks alive), `>= 1`. When every slot is busy
    /// the shard stops taking requests off its queues, so back-pressure reaches the callers.
    pub max_concurrent_requests: usize,
    /// Prefix of the shard threads' names: shard `i` runs on thread `"{thread_name}-{i}"`.
    /// Non-empty, no NUL byte. Linux shows the first 15 bytes in `top`/`ps`.
    pub thread_name: String,
}

impl RuntimeConfig {
    /// One shard per online CPU, shard `i` pinned to the `i`-th online CPU (ascending ids).
    pub fn per_online_cpu() -> Result<Self, ConfigError> {
        let cores = online_cpus()?;
        Ok(RuntimeConfig { shards: cores.len(), pin: Pinning::Cores(cores), ..Self::unpinned(1) })
    }

    /// `shards` unpinned shards with default bounds.
    pub fn unpinned(shards: usize) -> Self {
        RuntimeConfig {
            shards,
            pin: Pinning::None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            thread_name: "keel-shard".to_string(),
        }
    }

    /// Checks every field; for pinned configurations also that the cores exist (are online).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.pin {
            Pinning::None => self.validate_against(&[]),
            Pinning::Cores(_) => self.validate_against(&online_cpus()?),
        }
    }

    /// `validate` with the online CPU ids given, so the rules can be tested on any machine.
    pub(crate) fn validate_against(&self, online: &[usize]) -> Result<(), ConfigError> {
        if self.shards == 0 {
            return Err(ConfigError::NoShards);
        }
        if self.shards > MAX_SHARDS {
            return Err(ConfigError::TooManyShards { shards: self.shards, max: MAX_SHARDS });
        }
        if let Pinning::Cores(cores) = &self.pin {
            validate_cores(self.shards, cores, online)?;
        }
        let capacity = self.queue_capacity;
        if capacity == 0 || !capacity.is_power_of_two() || capacity > MAX_QUEUE_CAPACITY {
            return Err(ConfigError::QueueCapacity(capacity));
        }
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        if self.thread_name.is_empty() || self.thread_name.contains('\0') {
            return Err(ConfigError::ThreadName(self.thread_name.clone()));
        }
        Ok(())
    }

    /// Where `shard` runs. Only for validated configurations.
    pub(crate) fn placement(&self, shard: ShardId) -> Placement {
        match &self.pin {
            Pinning::None => Placement::Unbound,
            Pinning::Cores(cores) => Placement::Fixed(cores[shard.index()]),
        }
    }
}

fn validate_cores(shards: usize, cores: &[usize], online: &[usize]) -> Result<(), ConfigError> {
    if cores.len() > online.len() {
        return Err(ConfigError::MoreCoresThanOnline { cores: cores.len(), online: online.len() });
    }
    if cores.len() != shards {
        return Err(ConfigError::CoreCountMismatch { shards, cores: cores.len() });
    }
    let mut seen = HashSet::with_capacity(cores.len());
    for &core in cores {
        if !seen.insert(core) {
            return Err(ConfigError::DuplicateCore(core));
        }
        if !online.contains(&core) {
            return Err(ConfigError::CoreNotOnline(core));
        }
    }
    Ok(())
}

/// Online CPU ids, ascending.
fn online_cpus() -> Result<Vec<usize>, ConfigError> {
    let set = CpuSet::online().map_err(|error| ConfigError::Topology(error.to_string()))?;
    let mut cpus: Vec<usize> = set.iter().map(|location| location.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(ConfigError::Topology("no online CPU found".to_string()));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(cores: Vec<usize>) -> RuntimeConfig {
        RuntimeConfig { shards: cores.len(), pin: Pinning::Cores(cores), ..RuntimeConfig::unpinned(1) }
    }

    #[test]
    fn per_online_cpu_is_valid_here() {
        let config = RuntimeConfig::per_online_cpu().expect("this machine reports its CPUs");
        assert!(config.shards >= 1);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_shard_counts() {
        assert_eq!(RuntimeConfig::unpinned(0).validate_against(&[]), Err(ConfigError::NoShards));
        assert_eq!(
            RuntimeConfig::unpinned(MAX_SHARDS + 1).validate_against(&[]),
            Err(ConfigError::TooManyShards { shards: MAX_SHARDS + 1, max: MAX_SHARDS })
        );
        // Unpinned shards may outnumber CPUs.
        assert_eq!(RuntimeConfig::unpinned(8).validate_against(&[0, 1]), Ok(()));
    }

    #[test]
    fn rejects_bad_cores() {
        let online = [0, 1];
        assert_eq!(pinned(vec![0, 1]).validate_against(&online), Ok(()));
        assert_eq!(
            pinned(vec![0, 1, 2]).validate_against(&online),
            Err(ConfigError::MoreCoresThanOnline { cores: 3, online: 2 })
        );
        assert_eq!(pinned(vec![1, 1]).validate_against(&online), Err(ConfigError::DuplicateCore(1)));
        assert_eq!(pinned(vec![0, 5]).validate_against(&online), Err(ConfigError::CoreNotOnline(5)));
        let mismatch = RuntimeConfig { shards: 1, ..pinned(vec![0, 1]) };
        assert_eq!(mismatch.validate_against(&online), Err(ConfigError::CoreCountMismatch { shards: 1, cores: 2 }));
    }

    #[test]
    fn rejects_bad_bounds_and_names() {
        let base = RuntimeConfig::unpinned(2);
        for capacity in [0, 3, MAX_QUEUE_CAPACITY * 2] {
            let config = RuntimeConfig { queue_capacity: capacity, ..base.clone() };
            assert_eq!(config.validate_against(&[]), Err(ConfigError::QueueCapacity(capacity)));
        }
        let config = RuntimeConfig { max_concurrent_requests: 0, ..base.clone() };
        assert_eq!(config.validate_against(&[]), Err(ConfigError::NoConcurrency));
        for name in ["", "a\0b"] {
            let config = RuntimeConfig { thread_name: name.to_string(), ..base.clone() };
            assert_eq!(config.validate_against(&[]), Err(ConfigError::ThreadName(name.to_string())));
        }
    }
}
