//! The Kafka wire protocol listener: Kafka clients (librdkafka, the Java client, kafka-python)
//! produce to and fetch from the same shards and the same partition logs as native clients.
//!
//! **Translate, don't reimplement.** A Kafka request is decoded with the `kafka-protocol` crate's
//! generated codecs (no hand-written message codec), turned into the native
//! [`keel_protocol::Request`] that means the same, and served by the native listener's own
//! `connection::handle` — the same routing to shards, long poll, validation and metrics. The
//! native [`keel_protocol::Response`] is then turned back into the Kafka body of the request's
//! version. What the native protocol cannot express (acks = 2, a message format older than
//! RecordBatch v2, a topic named only by id, a fetch session) is answered in the translation and
//! never reaches a log.
//!
//! Record data is never re-encoded: a produced partition's records are the `Bytes` slice of the
//! request frame, appended as sent (the log validates it); a fetch returns the stored RecordBatch
//! v2 bytes.
//!
//! To Kafka clients the broker is one node, id 0, at the Kafka listener's address, leader and
//! only replica of every partition.
//!
//! Map:
//! - `connection`: the per-connection frame loop: length prefix, request header by API
//!   version, one request at a time, the shard's memory budget.
//! - `guard`: a bounds check of each request body before the crate's decoder sees it (the
//!   decoder would reserve memory for any array count it reads).
//! - `groups`: consumer group membership (JoinGroup … DeleteGroups), sent to the shard that
//!   coordinates the group (`crate::coordinator`).
//! - `translate`: the APIs served (`translate::SERVED`), Kafka ↔ native for each, and the
//!   mapping of native error codes to Kafka's.

mod connection;
mod groups;
mod guard;
mod translate;

pub use connection::run;
