//! keel-client against the real `keel serve` binary on loopback: admin calls, 2000 keyed
//! records through a Producer and back through a Consumer (exactly once, in offset order, each
//! key on its murmur2 partition), Latest / Offset / Timestamp starts, out-of-range reset, and
//! typed errors for unknown topics.
//!
//! The binary is `$KEEL_BIN`, else `$CARGO_TARGET_DIR/debug/keel`, else `keel` next to this
//! test's `deps/` directory. Build it first: `cargo build -p keel --bin keel`.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use keel_client::{
    partition_for_key, Acks, Client, ClientError, ConsumedRecord, Consumer, ConsumerConfig, ErrorCode, Producer,
    ProducerConfig, StartAt,
};
use keel_storage::batch::BatchBuilder;
use keel_testkit::{Broker, BrokerConfig};

/// `keel serve` on a scratch data directory under the target directory.
fn start_broker() -> Broker {
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("keel-client-broker-{}", std::process::id()));
    BrokerConfig::scratch(keel_testkit::keel_bin(None), data).start()
}

/// Polls until `n` records have arrived (fails after 20 s).
fn consume_n<C: std::borrow::BorrowMut<Client>>(consumer: &mut Consumer<C>, n: usize) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records arrived", out.len());
        out.extend(consumer.poll(Duration::from_millis(500)).unwrap());
    }
    assert_eq!(out.len(), n, "no more than {n} records");
    out
}

const TOPIC: &str = "events";
const PARTITIONS: u32 = 4;
const RECORDS: usize = 2000;
const KEYS: usize = 150;

fn key(i: usize) -> String {
    format!("key-{}", i % KEYS)
}

#[test]
fn client_against_the_real_broker() {
    let broker = start_broker();
    let addr = broker.addr.to_string();
    let mut client = Client::connect(&addr, "client-test").unwrap();
    assert!(!client.broker_version().is_empty());

    admin(&mut client);
    let timestamps = produce_keyed(&mut client);
    consume_everything(&mut client, &timestamps);
    latest_offset_and_timestamp_starts(&mut client, &addr);
    out_of_range_is_typed_and_resettable(&mut client);
    configs(&mut client);
    several_topics_in_one_request(&mut client);
    unknown_topics_are_typed(&mut client);

    client.delete_topic(TOPIC).unwrap();
    assert!(client.metadata(None).unwrap().iter().all(|t| t.name != TOPIC));
    assert!(matches!(client.delete_topic(TOPIC), Err(ClientError::UnknownTopic(t)) if t == TOPIC));

    drop(client);
    let status = broker.stop();
    assert!(status.success(), "keel serve exits 0 on SIGTERM: {status}");
}

fn admin(client: &mut Client) {
    client.create_topic(TOPIC, PARTITIONS, &[]).unwrap();
    let e = client.create_topic(TOPIC, 1, &[]).unwrap_err();
    assert!(matches!(e, ClientError::Broker { code: ErrorCode::TopicAlreadyExists, .. }), "{e}");
    let e = client.create_topic("bad name!", 1, &[]).unwrap_err();
    assert!(matches!(e, ClientError::Broker { code: ErrorCode::InvalidTopicName, .. }), "{e}");

    let topics = client.metadata(Some(&[TOPIC.to_owned()])).unwrap();
    assert_eq!(topics.len(), 1);
    let t = &topics[0];
    assert_eq!(t.name, TOPIC);
    assert_ne!(t.id.0, [0; 16]);
    assert_eq!(t.partitions.len(), PARTITIONS as usize);
    for (i, p) in t.partitions.iter().enumerate() {
        assert_eq!((p.partition as usize, p.log_start_offset, p.high_watermark), (i, 0, 0));
    }

    let status = client.broker_status().unwrap();
    assert!(!status.shards.is_empty());
    assert!(status.shards.iter().map(|s| s.partitions).sum::<u32>() >= PARTITIONS);
}

/// Produces RECORDS keyed records and returns each value's timestamp.
fn produce_keyed(client: &mut Client) -> Vec<i64> {
    let config = ProducerConfig { acks: Acks::All, batch_max_bytes: 16 << 10, ..ProducerConfig::default() };
    let mut producer = Producer::new(&mut *client, TOPIC, config).unwrap();
    assert_eq!(producer.partitions(), PARTITIONS);
    let mut timestamps = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let value = format!("value-{i:05}-{}", "x".repeat(i % 50));
        let ts = 1_700_000_000_000 + i as i64;
        let index = (i as u32).to_be_bytes();
        producer.send(Some(key(i).as_bytes()), Some(value.as_bytes()), &[(b"i", Some(&index))], Some(ts)).unwrap();
        timestamps.push(ts);
    }
    let flushed = producer.flush().unwrap();
    assert!(!flushed.is_empty() && flushed.len() <= PARTITIONS as usize, "{flushed:?}");
    assert_eq!(producer.buffered(), 0);
    timestamps
}

fn consume_everything(client: &mut Client, timestamps: &[i64]) {
    let mut consumer = Consumer::new(&mut *client, TOPIC, None, StartAt::Earliest).unwrap();
    let records = consume_n(&mut consumer, RECORDS);
    assert!(consumer.poll(Duration::from_millis(100)).unwrap().is_empty(), "nothing more");

    let mut seen = vec![false; RECORDS];
    let mut next_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut key_partition: HashMap<Bytes, u32> = HashMap::new();
    let mut last_sent: HashMap<u32, usize> = HashMap::new();
    for r in &records {
        let value = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap();
        let i: usize = value[6..11].parse().unwrap();
        assert!(!std::mem::replace(&mut seen[i], true), "record {i} arrived twice");
        if let Some(before) = last_sent.insert(r.partition, i) {
            assert!(before < i, "partition {}: record {i} after record {before}: send order kept", r.partition);
        }
        let expected_offset = next_offset.entry(r.partition).or_insert(0);
        assert_eq!(r.offset, *expected_offset, "partition {}: offsets are dense and increasing", r.partition);
        *expected_offset += 1;
        let k = r.key.clone().unwrap();
        assert_eq!(k, key(i).as_bytes());
        assert_eq!(r.partition, partition_for_key(&k, PARTITIONS), "key {k:?} is on its murmur2 partition");
        assert_eq!(*key_partition.entry(k).or_insert(r.partition), r.partition);
        assert_eq!(r.timestamp_ms, timestamps[i]);
        assert_eq!(r.headers, [(Bytes::from_static(b"i"), Some(Bytes::copy_from_slice(&(i as u32).to_be_bytes())))]);
    }
    assert!(seen.iter().all(|&s| s), "every record arrived");
    assert_eq!(key_partition.len(), KEYS);
    assert!(next_offset.len() > 1, "keys spread over partitions: {next_offset:?}");

    let first_positions = {
        let mut p = consumer.positions().to_vec();
        p.sort_unstable();
        p
    };
    drop(consumer);

    // Again in small fetches: many polls, each resuming where the last one stopped.
    let small = ConsumerConfig { max_bytes: 8 << 10, partition_max_bytes: 4 << 10 };
    let mut again = Consumer::with_config(&mut *client, TOPIC, None, StartAt::Earliest, small).unwrap();
    let mut polls = 0;
    let mut records_again = Vec::new();
    while records_again.len() < RECORDS {
        assert!(polls < 10_000, "small fetches make progress");
        records_again.extend(again.poll(Duration::from_millis(500)).unwrap());
        polls += 1;
    }
    assert!(polls > 2, "several polls: {polls}");
    let by_position = |rs: &[ConsumedRecord]| {
        let mut v: Vec<_> = rs.iter().map(|r| (r.partition, r.offset, r.value.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(by_position(&records_again), by_position(&records));

    let positions = first_positions;
    let metadata = client.topic(TOPIC).unwrap();
    for (p, info) in metadata.partitions.iter().enumerate() {
        let consumed = next_offset.get(&(p as u32)).copied().unwrap_or(0);
        assert_eq!(info.high_watermark, consumed, "partition {p}");
        assert_eq!(positions[p], (p as u32, consumed));
    }
}

fn latest_offset_and_timestamp_starts(client: &mut Client, addr: &str) {
    let mut latest = Consumer::new(&mut *client, TOPIC, None, StartAt::Latest).unwrap();
    assert!(latest.poll(Duration::from_millis(300)).unwrap().is_empty(), "Latest sees nothing old");
    let before: Vec<(u32, u64)> = latest.positions().to_vec();

    // New records, through a second connection.
    let mut other = Client::connect(addr, "client-test-2").unwrap();
    let mut producer = Producer::new(&mut other, TOPIC, ProducerConfig::default()).unwrap();
    for i in 0..10 {
        producer.send(None, Some(format!("new-{i}").as_bytes()), &[], None).unwrap();
    }
    producer.flush().unwrap();
    let records = consume_n(&mut latest, 10);
    let mut values: Vec<String> =
        records.iter().map(|r| String::from_utf8(r.value.as_deref().unwrap().to_vec()).unwrap()).collect();
    values.sort();
    assert_eq!(values, (0..10).map(|i| format!("new-{i}")).collect::<Vec<_>>());
    for r in &records {
        let start = before.iter().find(|p| p.0 == r.partition).unwrap().1;
        assert!(r.offset >= start, "only new records");
        assert!(r.key.is_none());
    }
    let mut per_partition = [0; PARTITIONS as usize];
    records.iter().for_each(|r| per_partition[r.partition as usize] += 1);
    assert!(per_partition.iter().all(|&n| n >= 2), "keyless records round-robin: {per_partition:?}");

    // A raw batch through Client::produce gets the next offset.
    let hw = other.topic(TOPIC).unwrap().partitions[1].high_watermark;
    let mut b = BatchBuilder::new();
    b.push(1, None, Some(b"raw-0"), &[]).push(1, None, Some(b"raw-1"), &[]);
    let base = other.produce(TOPIC, 1, Bytes::from(b.last_offset_delta(1).build()), Acks::Leader).unwrap();
    assert_eq!(base, hw);
    assert!(matches!(other.produce(TOPIC, 1, Bytes::new(), Acks::None), Err(ClientError::InvalidArgument(_))));

    // Offset start in the middle of a batch: records below it are skipped.
    let mut at = Consumer::new(&mut other, TOPIC, Some(vec![1]), StartAt::Offset(hw + 1)).unwrap();
    let got = consume_n(&mut at, 1);
    assert_eq!((got[0].offset, got[0].value.as_deref()), (hw + 1, Some(&b"raw-1"[..])));
    assert_eq!(at.positions(), [(1, hw + 2)]);

    // Timestamp start: partition 0's first batch holds the oldest keyed records
    // (1_700_000_000_000 + i); a time after every record starts at the end.
    let mut by_time = Consumer::new(&mut other, TOPIC, Some(vec![0]), StartAt::Timestamp(1_700_000_000_000)).unwrap();
    assert_eq!(by_time.positions(), [(0, 0)]);
    by_time.seek(0, StartAt::Timestamp(i64::MAX / 2)).unwrap();
    let end = other_hw(by_time.client(), 0);
    assert_eq!(by_time.positions(), [(0, end)]);
}

fn other_hw(client: &mut Client, partition: usize) -> u64 {
    client.topic(TOPIC).unwrap().partitions[partition].high_watermark
}

fn out_of_range_is_typed_and_resettable(client: &mut Client) {
    let hw = other_hw(client, 2);
    let mut consumer = Consumer::new(&mut *client, TOPIC, Some(vec![2, 3]), StartAt::Offset(hw + 100)).unwrap();
    match consumer.poll(Duration::from_millis(100)) {
        Err(ClientError::OffsetOutOfRange { topic, partition, offset, log_start_offset, high_watermark }) => {
            assert_eq!((topic.as_str(), partition, offset), (TOPIC, 2, hw + 100));
            assert_eq!((log_start_offset, high_watermark), (0, hw));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(consumer.positions(), [(2, hw + 100), (3, hw + 100)], "no position moved");
    consumer.seek(2, StartAt::Latest).unwrap();
    consumer.seek(3, StartAt::Latest).unwrap();
    assert!(consumer.poll(Duration::from_millis(100)).unwrap().is_empty());
    assert!(matches!(consumer.seek(0, StartAt::Earliest), Err(ClientError::InvalidArgument(_))));
}

fn configs(client: &mut Client) {
    let described = client.describe_configs(TOPIC).unwrap();
    let retention = described.iter().find(|c| c.0 == "retention.ms").expect("retention.ms is described");
    assert!(retention.2, "default before any override");
    client.alter_configs(TOPIC, &[("retention.ms".into(), "123456789".into())], &[]).unwrap();
    let described = client.describe_configs(TOPIC).unwrap();
    let retention = described.iter().find(|c| c.0 == "retention.ms").unwrap();
    assert_eq!((retention.1.as_str(), retention.2), ("123456789", false));
    client.alter_configs(TOPIC, &[], &["retention.ms".into()]).unwrap();
    assert!(client.describe_configs(TOPIC).unwrap().iter().find(|c| c.0 == "retention.ms").unwrap().2);
    let e = client.alter_configs(TOPIC, &[("no.such.config".into(), "1".into())], &[]).unwrap_err();
    assert!(matches!(e, ClientError::Broker { code: ErrorCode::InvalidConfig, .. }), "{e}");
}

/// One Produce request and one Fetch carry several topics; records say which topic they are of.
fn several_topics_in_one_request(client: &mut Client) {
    client.create_topic("other", 2, &[]).unwrap();
    let hw = |client: &mut Client, topic: &str, p: usize| client.topic(topic).unwrap().partitions[p].high_watermark;
    let (events_1, other_0) = (hw(client, TOPIC, 1), hw(client, "other", 0));
    let request = vec![
        (TOPIC.to_owned(), vec![(1, one_record())]),
        ("other".to_owned(), vec![(0, one_record()), (1, one_record())]),
    ];
    let answered = client.produce_topics(request, Acks::All).unwrap();
    assert_eq!(answered, [vec![(1, events_1)], vec![(0, other_0), (1, 0)]]);
    // A refused partition of any topic fails the call, naming it.
    let bad = vec![(TOPIC.to_owned(), vec![(0, one_record())]), ("other".to_owned(), vec![(2, one_record())])];
    let e = client.produce_topics(bad, Acks::All).unwrap_err();
    assert!(matches!(&e, ClientError::UnknownTopic(t) if t == "other"), "{e}");

    let topics = vec![("other".to_owned(), None), (TOPIC.to_owned(), Some(vec![1]))];
    let config = ConsumerConfig::default();
    let mut consumer = Consumer::with_topics(&mut *client, topics, StartAt::Offset(0), config.clone()).unwrap();
    let records = consume_n(&mut consumer, 2 + events_1 as usize + 1);
    let mut read: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for r in &records {
        *read.entry((r.topic.to_string(), r.partition)).or_default() += 1;
    }
    let want: BTreeMap<(String, u32), u64> =
        [(("events".into(), 1), events_1 + 1), (("other".into(), 0), 1), (("other".into(), 1), 1)].into();
    assert_eq!(read, want);
    let by_topic: Vec<(&str, Vec<(u32, u64)>)> = consumer.topic_positions().map(|(t, p)| (t, p.to_vec())).collect();
    assert_eq!(by_topic, [("other", vec![(0, 1), (1, 1)]), (TOPIC, vec![(1, events_1 + 1)])]);
    assert_eq!(consumer.positions(), [(0, 1), (1, 1), (1, events_1 + 1)], "topic by topic");
    // Which topic's partition 1? seek cannot tell; seek_in can.
    assert!(matches!(consumer.seek(1, StartAt::Earliest), Err(ClientError::InvalidArgument(_))));
    consumer.seek_in("other", 1, StartAt::Earliest).unwrap();
    let again = consume_n(&mut consumer, 1);
    assert_eq!((&*again[0].topic, again[0].partition, again[0].offset), ("other", 1, 0));
    drop(consumer);
    let twice = vec![("other".to_owned(), None), ("other".to_owned(), Some(vec![0]))];
    let e = Consumer::with_topics(&mut *client, twice, StartAt::Earliest, config.clone()).map(drop).unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e}");
    let e = Consumer::with_topics(&mut *client, Vec::new(), StartAt::Earliest, config).map(drop).unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e}");
    client.delete_topic("other").unwrap();
}

fn one_record() -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    Bytes::from(b.build())
}

fn unknown_topics_are_typed(client: &mut Client) {
    let is_unknown = |r: Result<(), ClientError>| matches!(r, Err(ClientError::UnknownTopic(t)) if t == "nope");
    assert!(is_unknown(client.metadata(Some(&["nope".to_owned()])).map(drop)));
    assert!(is_unknown(client.describe_configs("nope").map(drop)));
    assert!(is_unknown(client.alter_configs("nope", &[("retention.ms".into(), "1".into())], &[])));
    assert!(is_unknown(client.delete_topic("nope")));
    assert!(is_unknown(client.produce("nope", 0, one_record(), Acks::All).map(drop)));
    assert!(is_unknown(client.list_offsets("nope", &[(0, keel_client::OffsetQuery::Latest)]).map(drop)));
    assert!(is_unknown(Producer::new(&mut *client, "nope", ProducerConfig::default()).map(drop)));
    assert!(is_unknown(Consumer::new(&mut *client, "nope", None, StartAt::Earliest).map(drop)));
    // A partition beyond the topic's count.
    let e = client.produce(TOPIC, PARTITIONS, one_record(), Acks::All).unwrap_err();
    assert!(matches!(&e, ClientError::UnknownTopic(t) if t == TOPIC), "{e}");
    assert!(matches!(
        Consumer::new(&mut *client, TOPIC, Some(vec![PARTITIONS]), StartAt::Earliest),
        Err(ClientError::InvalidArgument(_))
    ));
}
