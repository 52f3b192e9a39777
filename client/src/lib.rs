//! # keel-client — a blocking client for Keel's native protocol
//!
//! Talks to a Keel broker over one `std::net::TcpStream` per [`Client`], one request at a time:
//! topic administration, producing record batches, reading them back. The CLI uses it; it has
//! no runtime, no background thread and no dependency beyond Keel's own codecs.
//!
//! ## Map
//! - [`client`]: [`Client`] — connecting (timeouts in [`ClientConfig`]), ApiVersions
//!   negotiation, admin calls (create/delete topic, metadata, configs, broker status),
//!   ListOffsets, raw Produce (one topic's partitions, or several topics', in one request).
//! - [`producer`]: [`Producer`] — record-at-a-time producing, batched per partition into
//!   RecordBatch v2, flushed on size or linger.
//! - [`consumer`]: [`Consumer`] — long-poll fetching of several partitions (of one topic or of
//!   several) in one request, positions resolved from [`StartAt`], records decoded into
//!   [`ConsumedRecord`]s.
//! - [`partitioner`]: Kafka's murmur2 key partitioner ([`partition_for_key`]).
//! - [`batch_writer`]: [`BatchWriter`] — RecordBatch v2 encoding in place into a reusable
//!   buffer, for callers that build their own Produce requests ([`Client::produce_many`]) and
//!   care about the cost per record (`keel-bench`).
//! - [`error`]: [`ClientError`], the one error type.
//! - `connection` (private): framed reads and writes on the socket, with deadlines and the
//!   response size bound. `gather` (private): Produce requests whose batches are written from
//!   where they are (a vectored write) instead of being copied into the frame. `accumulator` (private): the producer's per-partition batching.
//!
//! ## Why it is shaped this way
//! - **Blocking and single-connection.** A CLI or a test wants a call that returns an answer;
//!   one outstanding request per connection means a response can only belong to the request
//!   just sent (the correlation id is still checked). After a timeout or an undecodable
//!   response the connection is dropped rather than resynchronised, and the next call
//!   reconnects.
//! - **Versions are decided locally.** The broker's ApiVersions answer is kept, so a call for
//!   an API it does not support fails with [`ClientError::Unsupported`] before anything is sent.
//! - **Keys land where Kafka puts them.** A keyed record goes to
//!   `toPositive(murmur2(key)) % partitions`, as with Kafka's default partitioner, so data
//!   keyed by a Java producer and by this one is co-partitioned. Keyless records go
//!   round-robin.
//! - **No timer, no hidden thread.** The producer checks `linger` when it is called; callers
//!   [`Producer::flush`] when they are done.
//! - **Bounded.** Responses are refused above `max_response_bytes` from their size prefix;
//!   producer buffering is at most one batch per partition; Produce requests are split at
//!   `max_request_bytes`.
//!
//! ## Example
//! ```no_run
//! use std::time::Duration;
//! use keel_client::{Acks, Client, Consumer, Producer, ProducerConfig, StartAt};
//!
//! # fn main() -> Result<(), keel_client::ClientError> {
//! let mut client = Client::connect("127.0.0.1:9092", "example")?;
//! client.create_topic("events", 4, &[("retention.ms".into(), "86400000".into())])?;
//!
//! let mut producer = Producer::new(&mut client, "events", ProducerConfig { acks: Acks::All, ..Default::default() })?;
//! for i in 0..100 {
//!     let key = format!("user-{}", i % 10);
//!     producer.send(Some(key.as_bytes()), Some(b"clicked"), &[], None)?;
//! }
//! producer.flush()?;
//!
//! let mut consumer = Consumer::new(client, "events", None, StartAt::Earliest)?;
//! let mut seen = 0;
//! while seen < 100 {
//!     for record in consumer.poll(Duration::from_secs(1))? {
//!         println!("{}@{}: {:?}", record.partition, record.offset, record.value);
//!         seen += 1;
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod accumulator;
pub mod batch_writer;
pub mod client;
mod connection;
pub mod consumer;
pub mod error;
mod gather;
pub mod partitioner;
pub mod producer;

pub use batch_writer::BatchWriter;
pub use client::{Client, ClientConfig, PartitionInfo, TopicInfo};
pub use connection::write_all_gathered;
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartAt};
pub use error::ClientError;
/// The protocol crate, for the message types some calls return ([`Client::broker_status`]).
pub use keel_protocol as protocol;
pub use keel_protocol::{
    messages::{Acks, BrokerStatusResponse, OffsetQuery},
    ApiKey, ErrorCode, TopicId,
};
pub use partitioner::{murmur2, partition_for_key, to_positive};
pub use producer::{Producer, ProducerConfig};
