//! [`Consumer`]: reads records from a set of partitions of one topic (or of several), from
//! positions it keeps itself (Keel has no group membership; committing positions is up to the
//! caller).

use std::{borrow::BorrowMut, ops::Range, sync::Arc, time::Duration};

use bytes::Bytes;
use keel_protocol::{
    messages::{FetchPartition, FetchRequest, FetchTopic, OffsetQuery},
    ErrorCode, Offset, PartitionId,
};
use keel_storage::batch::{BatchView, DecodeError};

use crate::{
    client::{check_partition_code, check_partitions, the_topics},
    Client, ClientError,
};

/// Where a consumer starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The log start offset: the oldest record still kept.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This offset (a Fetch outside `[log_start_offset, high_watermark]` fails with
    /// [`ClientError::OffsetOutOfRange`]).
    Offset(u64),
    /// The first record whose timestamp is at or after this time (ms since the epoch); the
    /// high watermark if no record is that recent.
    Timestamp(i64),
}

/// Fetch sizes of a [`Consumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Soft limit on the record bytes of one Fetch response (all partitions).
    pub max_bytes: u32,
    /// Soft limit on the record bytes of one partition in a Fetch response. The broker returns
    /// at least one whole batch when one is available, even above these limits.
    pub partition_max_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig { max_bytes: 4 << 20, partition_max_bytes: 1 << 20 }
    }
}

/// A record as a consumer returns it. `key`, `value` and header bytes share the memory of the
/// Fetch response (no copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The topic's name, shared by every record of the topic.
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    /// The record's CreateTime, or the broker's append time for a LogAppendTime batch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// `(key, value)` pairs in record order; a header value may be null.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Reads one topic's partitions (or several topics'): each [`poll`](Consumer::poll) sends one
/// Fetch for all of them and advances each partition's position past what it returns.
///
/// `C` is [`Client`] or `&mut Client`.
pub struct Consumer<C: BorrowMut<Client> = Client> {
    client: C,
    /// The topics read, in the order given at creation, each with its span of `positions`.
    topics: Vec<(Arc<str>, Range<usize>)>,
    config: ConsumerConfig,
    /// `(partition, next offset to fetch)`, topic by topic, in the order given at creation. A
    /// position only grows, except through [`Consumer::seek`].
    positions: Vec<(u32, u64)>,
}

impl<C: BorrowMut<Client>> Consumer<C> {
    /// A consumer of `partitions` of `topic` (`None` = every partition) starting at `start`,
    /// with the default [`ConsumerConfig`].
    pub fn new(
        client: C,
        topic: &str,
        partitions: Option<Vec<u32>>,
        start: StartAt,
    ) -> Result<Consumer<C>, ClientError> {
        Consumer::with_config(client, topic, partitions, start, ConsumerConfig::default())
    }

    /// Like [`Consumer::new`], with explicit fetch sizes.
    pub fn with_config(
        client: C,
        topic: &str,
        partitions: Option<Vec<u32>>,
        start: StartAt,
        config: ConsumerConfig,
    ) -> Result<Consumer<C>, ClientError> {
        Consumer::with_topics(client, vec![(topic.to_owned(), partitions)], start, config)
    }

    /// A consumer of several topics at once, each `(topic, partitions)` as in
    /// [`Consumer::new`]: one Fetch reads them all.
    pub fn with_topics(
        mut client: C,
        topics: Vec<(String, Option<Vec<u32>>)>,
        start: StartAt,
        config: ConsumerConfig,
    ) -> Result<Consumer<C>, ClientError> {
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument("no topics to consume".into()));
        }
        let mut spans = Vec::with_capacity(topics.len());
        let mut positions = Vec::new();
        for (i, (topic, partitions)) in topics.iter().enumerate() {
            if topics[..i].iter().any(|t| t.0 == *topic) {
                return Err(ClientError::InvalidArgument(format!("topic {topic} is listed twice")));
            }
            let count = client.borrow_mut().topic(topic)?.partitions.len();
            let partitions = match partitions {
                None => (0..count as u32).collect(),
                Some(list) => check_partition_list(list.clone(), count)?,
            };
            let offsets = resolve(client.borrow_mut(), topic, &partitions, start)?;
            let from = positions.len();
            positions.extend(partitions.into_iter().zip(offsets));
            spans.push((Arc::from(topic.as_str()), from..positions.len()));
        }
        Ok(Consumer { client, topics: spans, config, positions })
    }

    /// Fetches from every partition at once, waiting up to `max_wait` for at least one record,
    /// and returns the records from each partition's position on (records of the first batch
    /// below the position are skipped), in offset order per partition. Empty if nothing arrived
    /// in time.
    ///
    /// All or nothing: if any partition answers with an error, no position moves and the error
    /// is returned ([`ClientError::OffsetOutOfRange`] names the partition to reset).
    pub fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        let request = self.fetch_request(max_wait);
        let response = self.client.borrow_mut().fetch(request, max_wait)?;
        let names = self.topics.iter().map(|t| &*t.0);
        let answered = the_topics(response.topics.into_iter().map(|t| (t.name, t.partitions)), names, "Fetch")?;
        for (t, partitions) in answered.iter().enumerate() {
            let (topic, span) = &self.topics[t];
            let positions = &self.positions[span.clone()];
            check_partitions(partitions.iter().map(|p| p.partition.0), positions.iter().map(|p| p.0), "Fetch")?;
            for (p, &(partition, offset)) in partitions.iter().zip(positions) {
                if p.error_code == ErrorCode::OffsetOutOfRange {
                    return Err(self.out_of_range(t, partition, offset));
                }
                check_partition_code(p.error_code, topic, partition, None)?;
            }
        }
        let mut records = Vec::new();
        let mut next = Vec::with_capacity(self.positions.len());
        for (partitions, (topic, span)) in answered.iter().zip(&self.topics) {
            for (p, &(partition, offset)) in partitions.iter().zip(&self.positions[span.clone()]) {
                next.push(decode_records(topic, partition, &p.records, offset, &mut records)?);
            }
        }
        for (position, next) in self.positions.iter_mut().zip(next) {
            position.1 = next;
        }
        Ok(records)
    }

    /// `(partition, next offset to fetch)` for every partition, in the order given at creation
    /// (topic by topic when there are several; see [`Consumer::topic_positions`]).
    pub fn positions(&self) -> &[(u32, u64)] {
        &self.positions
    }

    /// Each topic with its partitions' positions, in the order given at creation.
    pub fn topic_positions(&self) -> impl Iterator<Item = (&str, &[(u32, u64)])> {
        self.topics.iter().map(|(topic, span)| (&**topic, &self.positions[span.clone()]))
    }

    /// Moves `partition`'s position to `start` (e.g. after [`ClientError::OffsetOutOfRange`]).
    /// A consumer of several topics needs [`Consumer::seek_in`].
    pub fn seek(&mut self, partition: u32, start: StartAt) -> Result<(), ClientError> {
        if self.topics.len() > 1 {
            return Err(ClientError::InvalidArgument("this consumer reads several topics: use seek_in".into()));
        }
        let topic = self.topics[0].0.clone();
        self.seek_in(&topic, partition, start)
    }

    /// Moves the position of `partition` of `topic` to `start`.
    pub fn seek_in(&mut self, topic: &str, partition: u32, start: StartAt) -> Result<(), ClientError> {
        let Some((_, span)) = self.topics.iter().find(|t| &*t.0 == topic) else {
            return Err(ClientError::InvalidArgument(format!("this consumer does not read topic {topic}")));
        };
        let span = span.clone();
        let Some(at) = self.positions[span.clone()].iter().position(|p| p.0 == partition) else {
            return Err(ClientError::InvalidArgument(format!("this consumer does not read partition {partition}")));
        };
        let offset = resolve(self.client.borrow_mut(), topic, &[partition], start)?[0];
        self.positions[span.start + at].1 = offset;
        Ok(())
    }

    /// The client, e.g. for admin calls between polls.
    pub fn client(&mut self) -> &mut Client {
        self.client.borrow_mut()
    }

    /// Gives the client back.
    pub fn into_client(self) -> C {
        self.client
    }

    /// The error for a Fetch of `partition` of the `t`-th topic at `offset` answered with
    /// `OFFSET_OUT_OF_RANGE`, with the partition's current range. The broker does not fill in
    /// the offsets of a partition it answers with an error, so they are looked up with
    /// ListOffsets (whose own failure is returned instead, if it fails).
    fn out_of_range(&mut self, t: usize, partition: u32, offset: u64) -> ClientError {
        let topic = self.topics[t].0.clone();
        let queries = [(partition, OffsetQuery::Earliest), (partition, OffsetQuery::Latest)];
        let range = match self.client.borrow_mut().list_offsets(&topic, &queries) {
            Ok(range) => range,
            // The lookup's failure (e.g. the connection) is the more pressing error.
            Err(e) => return e,
        };
        match range[..] {
            [(_, Some(log_start_offset)), (_, Some(high_watermark))] => ClientError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                log_start_offset,
                high_watermark,
            },
            _ => ClientError::Protocol(format!("ListOffsets gave no range for partition {partition}")),
        }
    }

    fn fetch_request(&self, max_wait: Duration) -> FetchRequest {
        let topics = self
            .topics
            .iter()
            .map(|(topic, span)| FetchTopic {
                name: topic.to_string(),
                partitions: self.positions[span.clone()]
                    .iter()
                    .map(|&(p, offset)| FetchPartition {
                        partition: PartitionId(p),
                        fetch_offset: Offset(offset),
                        partition_max_bytes: self.config.partition_max_bytes,
                    })
                    .collect(),
            })
            .collect();
        FetchRequest {
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
            min_bytes: 1,
            max_bytes: self.config.max_bytes,
            topics,
        }
    }
}

/// `list` if every partition exists and none is listed twice.
fn check_partition_list(list: Vec<u32>, count: usize) -> Result<Vec<u32>, ClientError> {
    if list.is_empty() {
        return Err(ClientError::InvalidArgument("no partitions to consume".into()));
    }
    for (i, &p) in list.iter().enumerate() {
        if p as usize >= count {
            return Err(ClientError::InvalidArgument(format!("partition {p} does not exist (the topic has {count})")));
        }
        if list[..i].contains(&p) {
            return Err(ClientError::InvalidArgument(format!("partition {p} is listed twice")));
        }
    }
    Ok(list)
}

/// The offset each partition starts at, via ListOffsets (no request for [`StartAt::Offset`]).
fn resolve(client: &mut Client, topic: &str, partitions: &[u32], start: StartAt) -> Result<Vec<u64>, ClientError> {
    let query = match start {
        StartAt::Offset(o) => return Ok(vec![o; partitions.len()]),
        StartAt::Earliest => OffsetQuery::Earliest,
        StartAt::Latest => OffsetQuery::Latest,
        StartAt::Timestamp(ms) => OffsetQuery::Timestamp(ms),
    };
    let queries: Vec<_> = partitions.iter().map(|&p| (p, query)).collect();
    let found = client.list_offsets(topic, &queries)?;
    let missing: Vec<_> = found.iter().filter(|f| f.1.is_none()).map(|f| (f.0, OffsetQuery::Latest)).collect();
    // No batch at or after the time asked: start at the end.
    let latest = if missing.is_empty() { Vec::new() } else { client.list_offsets(topic, &missing)? };
    found
        .iter()
        .map(|&(p, offset)| {
            offset.or_else(|| latest.iter().find(|l| l.0 == p).and_then(|l| l.1)).ok_or_else(|| {
                ClientError::Protocol(format!("ListOffsets gave no offset for partition {p} of {topic}"))
            })
        })
        .collect()
}

/// Appends the records of `data` (whole batches, as a Fetch returns them) at or above `from`
/// to `out` and returns the partition's next position: one past the last batch, or `from` if
/// there was none. A trailing partial batch is left for the next fetch.
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: u32,
    data: &Bytes,
    from: u64,
    out: &mut Vec<ConsumedRecord>,
) -> Result<u64, ClientError> {
    let invalid =
        |e: &dyn std::fmt::Display| ClientError::Protocol(format!("fetched {topic} partition {partition}: {e}"));
    let mut next = from;
    let mut rest = &data[..];
    let mut batches = 0;
    while !rest.is_empty() {
        let view = match BatchView::parse(rest) {
            Ok(view) => view,
            Err(DecodeError::Incomplete { .. }) if batches > 0 => break,
            Err(e) => return Err(invalid(&e)),
        };
        let last = u64::try_from(view.last_offset()).map_err(|_| invalid(&"negative batch offset"))?;
        if !view.is_control() {
            decode_batch(topic, partition, data, &view, from, out).map_err(|e| invalid(&e))?;
        }
        next = next.max(last + 1);
        rest = &rest[view.total_len()..];
        batches += 1;
    }
    Ok(next)
}

/// The records of one data batch at or above `from`. A compressed batch (as Kafka clients
/// send them) is decompressed into a buffer of its own that its records then share.
fn decode_batch(
    topic: &Arc<str>,
    partition: u32,
    data: &Bytes,
    view: &BatchView<'_>,
    from: u64,
    out: &mut Vec<ConsumedRecord>,
) -> Result<(), DecodeError> {
    let section = view.decompressed_records()?;
    let (owner, base) = if section.is_decompressed() {
        (Bytes::copy_from_slice(section.as_bytes()), section.as_bytes().as_ptr() as usize)
    } else {
        (data.clone(), data.as_ptr() as usize)
    };
    // `b` borrows from `section`; the same bytes of `owner`.
    let share = |b: &[u8]| {
        let at = b.as_ptr() as usize - base;
        owner.slice(at..at + b.len())
    };
    for record in section.records() {
        let record = record?;
        let Ok(offset) = u64::try_from(record.offset(view.base_offset())) else { continue };
        if offset < from {
            continue;
        }
        let timestamp_ms =
            if view.is_log_append_time() { view.max_timestamp() } else { record.timestamp(view.base_timestamp()) };
        out.push(ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset,
            timestamp_ms,
            key: record.key.map(share),
            value: record.value.map(share),
            headers: record.headers.iter().map(|h| (share(h.key), h.value.map(share))).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_storage::batch::{set_base_offset, BatchBuilder, Compression};

    use super::*;

    fn batch(base: i64, values: &[&str]) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for v in values {
            b.push(1_000, Some(b"k"), Some(v.as_bytes()), &[(b"h", None)]);
        }
        let mut out = b.build();
        set_base_offset(&mut out, base);
        out
    }

    fn t() -> Arc<str> {
        Arc::from("t")
    }

    fn values(records: &[ConsumedRecord]) -> Vec<(u64, String)> {
        records.iter().map(|r| (r.offset, String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())).collect()
    }

    #[test]
    fn records_below_the_position_are_skipped() {
        let data: Bytes = [batch(10, &["a", "b", "c"]), batch(13, &["d"])].concat().into();
        let mut out = Vec::new();
        assert_eq!(decode_records(&t(), 2, &data, 11, &mut out).unwrap(), 14);
        assert_eq!(values(&out), [(11, "b".into()), (12, "c".into()), (13, "d".into())]);
        assert!(out.iter().all(|r| &*r.topic == "t"
            && r.partition == 2
            && r.timestamp_ms == 1_000
            && r.key.as_deref() == Some(b"k")));
        assert_eq!(out[0].headers, [(Bytes::from_static(b"h"), None)]);
    }

    #[test]
    fn compressed_batches_are_decompressed() {
        let plain = batch(20, &["x"]);
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut b = BatchBuilder::new().compression(codec);
            for v in ["e", "f", "g"] {
                b.push(1_000, Some(b"k"), Some(v.as_bytes()), &[(b"h", None)]);
            }
            let mut packed = b.build();
            set_base_offset(&mut packed, 21);
            let data: Bytes = [plain.as_slice(), &packed].concat().into();
            let mut out = Vec::new();
            assert_eq!(decode_records(&t(), 1, &data, 20, &mut out).unwrap(), 24, "{codec}");
            let want: Vec<(u64, String)> = vec![(20, "x".into()), (21, "e".into()), (22, "f".into()), (23, "g".into())];
            assert_eq!(values(&out), want, "{codec}");
            assert!(out.iter().all(|r| r.key.as_deref() == Some(b"k") && r.headers.len() == 1), "{codec}");
        }
    }

    #[test]
    fn nothing_fetched_keeps_the_position() {
        let mut out = Vec::new();
        assert_eq!(decode_records(&t(), 0, &Bytes::new(), 7, &mut out).unwrap(), 7);
        assert!(out.is_empty());
    }

    #[test]
    fn a_trailing_partial_batch_is_left_for_later_but_a_lone_one_is_an_error() {
        let whole = batch(0, &["a"]);
        let next = batch(1, &["b"]);
        let data: Bytes = [&whole[..], &next[..next.len() - 3]].concat().into();
        let mut out = Vec::new();
        assert_eq!(decode_records(&t(), 0, &data, 0, &mut out).unwrap(), 1);
        assert_eq!(values(&out), [(0, "a".into())]);
        let lone = Bytes::copy_from_slice(&next[..next.len() - 3]);
        assert!(matches!(decode_records(&t(), 0, &lone, 1, &mut Vec::new()), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn corrupt_batches_are_protocol_errors() {
        let mut bad = batch(0, &["a"]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let e = decode_records(&t(), 4, &Bytes::from(bad), 0, &mut Vec::new()).unwrap_err();
        assert!(matches!(&e, ClientError::Protocol(m) if m.starts_with("fetched t partition 4")), "{e}");
    }

    #[test]
    fn partition_lists_are_checked() {
        assert_eq!(check_partition_list(vec![2, 0], 3).unwrap(), [2, 0]);
        assert!(matches!(check_partition_list(vec![3], 3), Err(ClientError::InvalidArgument(_))));
        assert!(matches!(check_partition_list(vec![1, 1], 3), Err(ClientError::InvalidArgument(_))));
        assert!(matches!(check_partition_list(vec![], 3), Err(ClientError::InvalidArgument(_))));
    }
}
