//! The crate's errors, one type per operation: configuring, starting, calling, joining.

use std::{fmt, io};

use crate::id::ShardId;

/// A [`RuntimeConfig`](crate::RuntimeConfig) that cannot be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `shards` is 0.
    NoShards,
    /// `shards` is above [`MAX_SHARDS`](crate::MAX_SHARDS).
    TooManyShards { shards: usize, max: usize },
    /// More cores are listed than the machine has online.
    MoreCoresThanOnline { cores: usize, online: usize },
    /// `Pinning::Cores` does not list exactly one core per shard.
    CoreCountMismatch { shards: usize, cores: usize },
    /// A core is listed twice: two shards would share it.
    DuplicateCore(usize),
    /// A listed core is not online on this machine.
    CoreNotOnline(usize),
    /// `queue_capacity` is 0, not a power of two, or above [`MAX_QUEUE_CAPACITY`](crate::MAX_QUEUE_CAPACITY).
    QueueCapacity(usize),
    /// `max_concurrent_requests` is 0: no request could ever be served.
    NoConcurrency,
    /// `thread_name` is empty or contains a NUL byte.
    ThreadName(String),
    /// The machine's CPU topology could not be read.
    Topology(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoShards => write!(f, "a runtime needs at least one shard"),
            ConfigError::TooManyShards { shards, max } => write!(f, "{shards} shards requested, at most {max}"),
            ConfigError::MoreCoresThanOnline { cores, online } => {
                write!(f, "{cores} cores listed but only {online} are online")
            }
            ConfigError::CoreCountMismatch { shards, cores } => {
                write!(f, "{shards} shards but {cores} cores listed: list one core per shard")
            }
            ConfigError::DuplicateCore(core) => write!(f, "core {core} is listed twice"),
            ConfigError::CoreNotOnline(core) => write!(f, "core {core} is not online"),
            ConfigError::QueueCapacity(capacity) => {
                write!(
                    f,
                    "queue capacity {capacity} must be a power of two between 1 and {}",
                    crate::MAX_QUEUE_CAPACITY
                )
            }
            ConfigError::NoConcurrency => write!(f, "max_concurrent_requests must be at least 1"),
            ConfigError::ThreadName(name) => write!(f, "thread name {name:?} must be non-empty without NUL bytes"),
            ConfigError::Topology(reason) => write!(f, "cannot read the CPU topology: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why [`start`](crate::start) returned no runtime. The shard threads it had started were told to
/// give up and have been joined; none of them ran `shard_main` (a shard runs it only once its
/// queues to every other shard are connected, that is once every executor is up).
#[derive(Debug)]
pub enum StartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// The OS refused to create a shard's thread.
    Spawn { shard: ShardId, error: io::Error },
    /// A shard's glommio executor could not be created (io_uring set-up, pinning, memory lock).
    Executor { shard: ShardId, reason: String },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(error) => write!(f, "invalid runtime configuration: {error}"),
            StartError::Spawn { shard, error } => write!(f, "cannot start the thread of {shard}: {error}"),
            StartError::Executor { shard, reason } => write!(f, "cannot create the executor of {shard}: {reason}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Config(error) => Some(error),
            StartError::Spawn { error, .. } => Some(error),
            StartError::Executor { .. } => None,
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(error: ConfigError) -> Self {
        StartError::Config(error)
    }
}

/// Why a [`Shard::call`](crate::Shard::call) got no response. The request may or may not have
/// been handled: callers that must know, make their requests idempotent or ask again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The target shard has stopped (its `shard_main` returned or failed) before answering.
    ShardStopped(ShardId),
    /// The calling shard is shutting down: its `shard_main` has returned and its queues are closed.
    Stopping,
    /// The target's handler panicked while serving this request; `reason` is the panic message.
    HandlerFailed { shard: ShardId, reason: String },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::ShardStopped(shard) => write!(f, "{shard} has stopped"),
            RouteError::Stopping => write!(f, "this shard is shutting down"),
            RouteError::HandlerFailed { shard, reason } => write!(f, "the handler on {shard} panicked: {reason}"),
        }
    }
}

impl std::error::Error for RouteError {}

/// How one shard ended badly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// `shard_main` returned this error.
    Returned(String),
    /// `shard_main`, or a task the shard spawned itself, panicked with this message.
    Panicked(String),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Returned(message) => write!(f, "failed: {message}"),
            FailureReason::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Shards that ended badly, as reported by [`Runtime::join`](crate::Runtime::join); in the order
/// they failed (the cause usually first), never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFailure {
    pub failures: Vec<(ShardId, FailureReason)>,
}

impl fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, (shard, reason)) in self.failures.iter().enumerate() {
            if position > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{shard} {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ShardFailure {}

/// The message of a caught panic, for reports and logs.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
