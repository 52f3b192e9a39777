//! The Keel broker: what sits between the shard runtime (`keel-shards`), the partition logs
//! (`keel-storage`) and the protocols.
//!
//! Map:
//! - [`broker`]: `keel serve` — shards, listeners, the controller on shard 0, shutdown.
//! - [`cli`]: the client commands of the `keel` binary (`topic`, `produce`, `consume`, `cluster`).
//! - [`connection`]: one client connection: frames in, requests split by partition, answers out.
//! - `gather` (private): Fetch answers sent with their records spliced in from where they are
//!   (vectored sends), not copied into the frame.
//! - [`client_warnings`]: warnings about bad client input, a few per second per shard.
//! - [`kafka`]: the Kafka wire protocol listener, translating Kafka requests into native ones.
//! - [`routing`]: what shards ask each other (Send-only data; batches travel as `Bytes`): one
//!   call per shard a request touches, carrying all of that shard's partitions.
//! - [`topic_config`]: per-topic settings under Kafka's names, validated, mapped to a log config.
//! - [`metadata`]: topics, topic ids and the persisted placement of partitions on shards.
//! - [`offsets`]: committed consumer offsets in the internal compacted topic `__consumer_offsets`.
//! - [`groups`]: consumer group membership (Kafka's classic protocol) as a pure state machine.
//! - [`coordinator`]: runs `groups` on the shard owning each group's offsets partition (parked
//!   joins and syncs, the session/rebalance timer).
//! - [`partitions`]: the partition logs one shard owns, opened, created, removed, closed.
//! - [`serve_config`]: the settings of `keel serve` (defaults, TOML file, `KEEL_*`, flags).
//!
//! The `keel` binary (`src/main.rs`) is the command line on top.

pub mod broker;
pub mod cli;
pub mod client_warnings;
pub mod connection;
pub mod coordinator;
mod gather;
pub mod groups;
pub mod kafka;
pub mod maintenance;
pub mod metadata;
pub mod metrics;
pub mod offsets;
pub mod partitions;
pub mod routing;
pub mod serve_config;
pub mod topic_config;
