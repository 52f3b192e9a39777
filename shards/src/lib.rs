//! Keel's thread-per-core runtime: one shard per core, and bounded request/response routing
//! between shards.
//!
//! # Why
//!
//! A shard is a thread pinned to one CPU running one glommio `LocalExecutor`. It owns its data
//! (partitions, connections, caches) outright, so the data path takes no lock and shares no cache
//! line: work that belongs to another shard is *sent* there, as a message, and the answer comes back
//! as a message. This crate is that plumbing and nothing more: it does not know what a request
//! means (the broker decides), only who sends it to whom.
//!
//! Every queue is bounded. A caller whose (from, to) queue is full waits; a shard whose serving
//! slots (`max_concurrent_requests`) are all busy stops taking requests off its queues, so its
//! queues fill and its callers wait in turn. Overload therefore travels back to whoever produces
//! the work (ultimately a socket the broker stops reading) instead of growing memory.
//!
//! Failures are bounded too: a call never waits forever for a shard that died. When a shard stops
//! (its `shard_main` returned or failed) it closes its queues on its own executor, which wakes the
//! peers; their calls to it fail with [`RouteError::ShardStopped`]. If its thread dies another way
//! (a panic in a task it spawned unwinds the thread), a per-shard "ended" latch set on the way out
//! has the peers give up on it all the same. A shard that fails requests a stop of the whole
//! runtime, so the other shards' [`Shard::stopping`] completes.
//!
//! # Use
//!
//! ```
//! use keel_shards::{start, RuntimeConfig, ShardId};
//!
//! let runtime = start(RuntimeConfig::unpinned(2), |shard| async move {
//!     shard.serve(|_from: ShardId, n: u64| async move { n * 2 });
//!     if shard.id() == ShardId(0) {
//!         let doubled = shard.call(ShardId(1), 21).await.map_err(|e| e.to_string())?;
//!         assert_eq!(doubled, 42);
//!         shard.stop_handle().stop(); // any thread may stop the runtime, e.g. on SIGTERM
//!     }
//!     shard.stopping().await;
//!     Ok(())
//! })?;
//! runtime.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Map
//!
//! - [`id`](ShardId): `ShardId`, a shard's number (not a CPU id, not glommio's executor id).
//! - `config`: [`RuntimeConfig`] and [`Pinning`]: shard count, CPU placement, queue and
//!   concurrency bounds, and their validation.
//! - `runtime`: [`start`] and [`Runtime`]: shard threads, all-or-nothing start-up, joining and
//!   failure reports.
//! - `router`: [`Shard`], a shard's handle: `call`, `serve`, `stopping`; intake of requests under the
//!   concurrency bound, handler tasks, response collection, shutdown of a shard's queues.
//! - `mesh`: the full mesh of bounded glommio shared channels, one request and one response queue per
//!   ordered pair of shards, indexed by `ShardId` by construction.
//! - `pending`: a shard's calls in flight, matched with their responses, failed when their target stops.
//! - `stop`: [`StopHandle`], the stop latch any thread can set and every shard can await (the
//!   same latch also announces start-up aborts and shard threads' ends).
//! - `error`: every error type, one per operation.

mod config;
mod error;
mod id;
mod mesh;
mod pending;
mod router;
mod runtime;
mod stop;

pub use config::{
    Pinning, RuntimeConfig, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_QUEUE_CAPACITY, MAX_QUEUE_CAPACITY, MAX_SHARDS,
};
pub use error::{ConfigError, FailureReason, RouteError, ShardFailure, StartError};
pub use id::ShardId;
pub use router::Shard;
pub use runtime::{start, Runtime};
pub use stop::StopHandle;
