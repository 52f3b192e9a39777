//! [`Producer`]: record-at-a-time producing into one topic, batched per partition.
//!
//! There is no background thread: batches are sent from [`Producer::send`] (when one is full or
//! has lingered) and from [`Producer::flush`]. A batch that lingers while the caller does not
//! call either stays buffered, so call [`Producer::flush`] when done (and before dropping the
//! producer: records still buffered are dropped with it).

use std::{
    borrow::BorrowMut,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use keel_protocol::messages::Acks;

use crate::{
    accumulator::{Accumulator, RecordRef},
    partitioner::Partitioner,
    Client, ClientError,
};

/// How a [`Producer`] batches and acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// When the broker answers: [`Acks::All`] once committed (the default), [`Acks::Leader`]
    /// once appended, [`Acks::None`] never (then [`Producer::flush`] learns no offsets and no
    /// errors).
    pub acks: Acks,
    /// A partition's batch is sent once it reaches this many bytes (a record that would take it
    /// past starts a new batch; a record alone larger than this is sent in a batch of its own).
    pub batch_max_bytes: usize,
    /// A partition's batch is sent once its first record has waited this long. Checked on each
    /// [`Producer::send`]: a blocking producer has no timer.
    pub linger: Duration,
    /// Bound on the record bytes of one Produce request; due batches beyond it go in further
    /// requests. Keep it below the broker's `max_frame_bytes` (8 MiB by default).
    pub max_request_bytes: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_max_bytes: 64 << 10,
            linger: Duration::from_millis(5),
            max_request_bytes: 1 << 20,
        }
    }
}

/// Produces records to one topic: partitions them (Kafka's murmur2 partitioner for keyed
/// records, round-robin for keyless ones; see [`partition_for_key`](crate::partition_for_key)),
/// batches them per partition into RecordBatch v2 and sends due batches of several partitions
/// in one Produce request.
///
/// `C` is [`Client`] or `&mut Client`: a producer can own its connection or borrow one.
///
/// Errors: a failed request fails the [`send`](Producer::send) or [`flush`](Producer::flush)
/// that sent it, and its batches are dropped, not retried (they may or may not have been
/// appended: see [`ClientError::is_retriable`]).
pub struct Producer<C: BorrowMut<Client> = Client> {
    client: C,
    topic: String,
    acks: Acks,
    max_request_bytes: usize,
    partitioner: Partitioner,
    batches: Accumulator,
}

impl<C: BorrowMut<Client>> Producer<C> {
    /// A producer for `topic`, which must exist ([`ClientError::UnknownTopic`] otherwise).
    pub fn new(mut client: C, topic: &str, config: ProducerConfig) -> Result<Producer<C>, ClientError> {
        if config.batch_max_bytes == 0 || config.max_request_bytes == 0 {
            return Err(ClientError::InvalidArgument("batch_max_bytes and max_request_bytes must be positive".into()));
        }
        let info = client.borrow_mut().topic(topic)?;
        let partitions = u32::try_from(info.partitions.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ClientError::Protocol(format!("topic {topic} has {} partitions", info.partitions.len())))?;
        Ok(Producer {
            client,
            topic: topic.to_owned(),
            acks: config.acks,
            max_request_bytes: config.max_request_bytes,
            partitioner: Partitioner::new(partitions),
            batches: Accumulator::new(partitions, config.batch_max_bytes, config.linger),
        })
    }

    /// The topic's partition count, as Metadata gave it when the producer was created.
    pub fn partitions(&self) -> u32 {
        self.partitioner.partitions()
    }

    /// Buffers a record for the partition its key chooses (round-robin if `key` is `None`),
    /// then sends every batch that is full or has lingered. `timestamp_ms` defaults to now.
    pub fn send(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        timestamp_ms: Option<i64>,
    ) -> Result<(), ClientError> {
        let partition = self.partitioner.partition(key);
        self.send_to(partition, key, value, headers, timestamp_ms)
    }

    /// Like [`Producer::send`], to the given partition.
    pub fn send_to(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        timestamp_ms: Option<i64>,
    ) -> Result<(), ClientError> {
        if partition >= self.partitions() {
            return Err(ClientError::InvalidArgument(format!(
                "partition {partition} of topic {} (it has {})",
                self.topic,
                self.partitions()
            )));
        }
        let timestamp_ms = timestamp_ms.unwrap_or_else(now_ms);
        let now = Instant::now();
        self.batches.append(partition, RecordRef { timestamp_ms, key, value, headers }, now);
        if self.batches.has_due(now) {
            let due = self.batches.drain_due(now);
            self.send_batches(due)?;
        }
        Ok(())
    }

    /// Sends every buffered record and returns `(partition, base offset)` of each batch sent by
    /// this call (empty with [`Acks::None`]). Batches sent earlier by [`Producer::send`] are
    /// not included.
    pub fn flush(&mut self) -> Result<Vec<(u32, u64)>, ClientError> {
        let all = self.batches.drain_all();
        self.send_batches(all)
    }

    /// Records buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.batches.open_records()
    }

    /// The client, e.g. for admin calls between sends.
    pub fn client(&mut self) -> &mut Client {
        self.client.borrow_mut()
    }

    /// Flushes, then gives the client back.
    pub fn close(mut self) -> Result<C, ClientError> {
        self.flush()?;
        Ok(self.client)
    }

    /// Sends `batches` (one entry per partition) in as few Produce requests as
    /// `max_request_bytes` allows.
    fn send_batches(&mut self, batches: Vec<(u32, Bytes)>) -> Result<Vec<(u32, u64)>, ClientError> {
        let mut offsets = Vec::with_capacity(batches.len());
        for request in split_requests(batches, self.max_request_bytes) {
            offsets.extend(self.client.borrow_mut().produce_many(&self.topic, request, self.acks)?);
        }
        Ok(offsets)
    }
}

/// Groups `batches` into requests of at most `max_request_bytes` record bytes each (a single
/// larger entry gets a request of its own), keeping their order.
fn split_requests(batches: Vec<(u32, Bytes)>, max_request_bytes: usize) -> Vec<Vec<(u32, Bytes)>> {
    let mut requests: Vec<Vec<(u32, Bytes)>> = Vec::new();
    let mut bytes = 0;
    for batch in batches {
        match requests.last_mut() {
            Some(request) if bytes + batch.1.len() <= max_request_bytes => {
                bytes += batch.1.len();
                request.push(batch);
            }
            _ => {
                bytes = batch.1.len();
                requests.push(vec![batch]);
            }
        }
    }
    requests
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_bounded() {
        let batch = |p: u32, n: usize| (p, Bytes::from(vec![0u8; n]));
        let requests =
            split_requests(vec![batch(0, 400), batch(1, 500), batch(2, 200), batch(3, 2000), batch(4, 1)], 1000);
        let shape: Vec<Vec<u32>> = requests.iter().map(|r| r.iter().map(|b| b.0).collect()).collect();
        assert_eq!(shape, [vec![0, 1], vec![2], vec![3], vec![4]]);
        assert!(split_requests(Vec::new(), 1000).is_empty());
    }
}
