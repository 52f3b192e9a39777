//! `keel serve` as a user runs it: the real binary on loopback, a blocking client speaking the
//! native protocol (docs/protocol.md) over real sockets. Topics with more partitions than cores
//! (so requests cross shards), produce, fetch back byte-identical, restart (SIGTERM, exit 0),
//! everything still there; bad input answered or the connection closed while a well-behaved
//! client keeps being served.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use keel_protocol::{
    decode_frame, decode_response, encode_request,
    messages::{
        Acks, ApiVersionsRequest, CommitOffsetsPartition, CommitOffsetsRequest, CommitOffsetsTopic, CreateTopicRequest,
        DeleteTopicRequest, FetchCommittedRequest, FetchPartition, FetchRequest, FetchTopic, ListOffsetsPartition,
        ListOffsetsRequest, ListOffsetsTopic, MetadataRequest, OffsetQuery, ProducePartition, ProducePartitionResponse,
        ProduceRequest, ProduceTopic,
    },
    ApiKey, ErrorCode, Offset, PartitionId, Request, RequestHeader, Response, TopLevelError,
};
use keel_storage::batch::{BatchBuilder, BatchView};
use keel_testkit::{answers_api_versions, free_port, Broker, BrokerConfig};

/// `keel serve` on `data` (kept for a restart), its native listener on `port`.
fn start_broker(data: &Path, port: u16) -> Broker {
    start_broker_with(data, port, &[])
}

/// The same with further `keel serve` flags.
fn start_broker_with(data: &Path, port: u16, extra_args: &[&str]) -> Broker {
    BrokerConfig::new(PathBuf::from(env!("CARGO_BIN_EXE_keel")), data).port(port).args(extra_args).start()
}

struct Client {
    stream: TcpStream,
    next_id: u32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { stream, next_id: 1 }
    }

    fn send(&mut self, request: &Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader {
            api_key: request.api_key().code(),
            api_version: 1,
            correlation_id: id,
            client_id: "serve-test".into(),
        };
        let mut out = Vec::new();
        encode_request(&header, request, &mut out);
        self.stream.write_all(&out).unwrap();
        id
    }

    fn read_frame(&mut self) -> Option<Bytes> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(frame) = decode_frame(&buf, u32::MAX).unwrap() {
                assert_eq!(frame.consumed, buf.len(), "one response at a time");
                return Some(Bytes::from(buf).slice(frame.payload));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn call(&mut self, request: Request) -> Result<Response, TopLevelError> {
        let api = request.api_key();
        let id = self.send(&request);
        let payload = self.read_frame().expect("a response");
        let (correlation, response) = decode_response(api, 1, &payload).unwrap();
        assert_eq!(correlation, id);
        response
    }
}

fn batch(partition: u32, i: u32) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for r in 0..3u32 {
        let key = format!("p{partition}-k{i}-{r}");
        let value = format!("value {partition}/{i}/{r} {}", "x".repeat((i % 7) as usize * 100));
        b.push(1_700_000_000_000 + i64::from(i), Some(key.as_bytes()), Some(value.as_bytes()), &[]);
    }
    b.last_offset_delta(2).build()
}

fn create(client: &mut Client, name: &str, partitions: u32) -> ErrorCode {
    match client.call(Request::CreateTopic(CreateTopicRequest { name: name.into(), partitions, configs: vec![] })) {
        Ok(Response::CreateTopic(r)) => r.error_code,
        other => panic!("{other:?}"),
    }
}

fn produce(client: &mut Client, topic: &str, partition: u32, records: Vec<u8>) -> (ErrorCode, Option<Offset>) {
    let p = produce_with(client, topic, partition, records, Acks::All, 10_000);
    (p.error_code, p.base_offset)
}

/// One partition's batches in one Produce request with `acks` and `timeout_ms`; its answer.
fn produce_with(
    client: &mut Client,
    topic: &str,
    partition: u32,
    records: Vec<u8>,
    acks: Acks,
    timeout_ms: u32,
) -> ProducePartitionResponse {
    let req = ProduceRequest {
        acks,
        timeout_ms,
        topics: vec![ProduceTopic {
            name: topic.into(),
            partitions: vec![ProducePartition { partition: PartitionId(partition), records: Bytes::from(records) }],
        }],
    };
    match client.call(Request::Produce(req)) {
        Ok(Response::Produce(mut r)) => r.topics.remove(0).partitions.remove(0),
        other => panic!("{other:?}"),
    }
}

/// A Fetch of partitions `0..partitions` of `topic` from offset 0, at most 1 MiB from each.
fn fetch_from_start(topic: &str, partitions: u32, max_wait_ms: u32, min_bytes: u32, max_bytes: u32) -> FetchRequest {
    FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: (0..partitions)
                .map(|p| FetchPartition {
                    partition: PartitionId(p),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 1 << 20,
                })
                .collect(),
        }],
    }
}

/// Every batch of a partition from offset 0, following the fetch protocol.
fn fetch_all(client: &mut Client, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let req = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: topic.into(),
                partitions: vec![FetchPartition {
                    partition: PartitionId(partition),
                    fetch_offset: Offset(offset),
                    partition_max_bytes: 64 << 10,
                }],
            }],
        };
        let Ok(Response::Fetch(r)) = client.call(Request::Fetch(req)) else { panic!("fetch failed") };
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, ErrorCode::None);
        if p.records.is_empty() {
            return out;
        }
        let mut rest = &p.records[..];
        while !rest.is_empty() {
            let view = BatchView::parse(rest).expect("a valid stored batch");
            let len = view.total_len();
            offset = view.base_offset() as u64 + view.last_offset_delta() as u64 + 1;
            out.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
    }
}

#[test]
fn produce_fetch_restart_and_bad_input() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);

    let Ok(Response::ApiVersions(v)) = client.call(Request::ApiVersions(ApiVersionsRequest {})) else { panic!() };
    assert!(v.apis.iter().any(|a| a.api_key == ApiKey::Produce.code()));

    const PARTITIONS: u32 = 5; // more than the cores of a CI machine: requests cross shards
    const BATCHES: u32 = 30;
    assert_eq!(create(&mut client, "events", PARTITIONS), ErrorCode::None);
    assert_eq!(create(&mut client, "events", 1), ErrorCode::TopicAlreadyExists);
    assert_eq!(create(&mut client, "bad name!", 1), ErrorCode::InvalidTopicName);

    let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PARTITIONS as usize];
    for i in 0..BATCHES {
        for p in 0..PARTITIONS {
            let b = batch(p, i);
            let (code, base) = produce(&mut client, "events", p, b.clone());
            assert_eq!(code, ErrorCode::None);
            assert_eq!(base, Some(Offset(u64::from(i) * 3)), "offsets are dense per partition");
            sent[p as usize].push(b);
        }
    }
    let (code, _) = produce(&mut client, "nope", 0, batch(0, 0));
    assert_eq!(code, ErrorCode::UnknownTopicOrPartition);
    let mut corrupt = batch(0, 0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    let (code, _) = produce(&mut client, "events", 0, corrupt);
    assert_eq!(code, ErrorCode::CorruptMessage, "bad CRC is refused");

    let check = |client: &mut Client, sent: &Vec<Vec<Vec<u8>>>| {
        for p in 0..PARTITIONS {
            let got = fetch_all(client, "events", p);
            assert_eq!(got.len(), sent[p as usize].len(), "partition {p}");
            for (i, (got, want)) in got.iter().zip(&sent[p as usize]).enumerate() {
                // Stored bytes = sent bytes except baseOffset (0..8) and partitionLeaderEpoch (12..16).
                assert_eq!(&got[8..12], &want[8..12], "p{p} batch {i}");
                assert_eq!(&got[16..], &want[16..], "p{p} batch {i}");
                assert_eq!(i64::from_be_bytes(got[..8].try_into().unwrap()), i as i64 * 3);
            }
        }
    };
    check(&mut client, &sent);

    // Bad input on other connections; the good client keeps working in between.
    let mut garbage = TcpStream::connect(broker.addr).unwrap();
    garbage.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]).unwrap(); // 4 GiB length prefix
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(garbage.read(&mut buf), Ok(0) | Err(_)), "an oversize frame closes the connection");
    let mut unknown = Client::connect(broker.addr);
    let mut frame = Vec::new();
    frame.extend_from_slice(&14u32.to_be_bytes());
    frame.extend_from_slice(&999u16.to_be_bytes()); // api key
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(&77u32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&4u16.to_be_bytes());
    frame.extend_from_slice(b"test");
    unknown.stream.write_all(&frame).unwrap();
    let payload = unknown.read_frame().expect("an error response for an unknown API");
    let (header, _) = keel_protocol::decode_response_header(&payload).unwrap();
    assert_eq!((header.correlation_id, header.error_code), (77, ErrorCode::UnknownApi));
    let Ok(Response::Metadata(m)) = client.call(Request::Metadata(MetadataRequest { topics: None })) else { panic!() };
    let events: Vec<_> = m.topics.iter().filter(|t| t.name == "events").collect();
    assert_eq!(m.topics.len(), 2, "events and the internal __consumer_offsets");
    assert_eq!(events[0].partitions.len(), PARTITIONS as usize);
    assert!(events[0].partitions.iter().all(|p| p.high_watermark == Offset(u64::from(BATCHES) * 3)));

    // Long poll: a fetch at the end waits for the next append instead of returning empty.
    let end = u64::from(BATCHES) * 3;
    let producer = {
        let addr = broker.addr;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut c = Client::connect(addr);
            produce(&mut c, "events", 2, batch(2, BATCHES))
        })
    };
    let started = Instant::now();
    let req = FetchRequest {
        max_wait_ms: 10_000,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: "events".into(),
            partitions: vec![FetchPartition {
                partition: PartitionId(2),
                fetch_offset: Offset(end),
                partition_max_bytes: 1 << 20,
            }],
        }],
    };
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(req)) else { panic!("long poll failed") };
    assert!(!r.topics[0].partitions[0].records.is_empty(), "the long poll returns the new batch");
    assert!(started.elapsed() < Duration::from_secs(9), "woken by the append, not by the timeout");
    assert_eq!(producer.join().unwrap(), (ErrorCode::None, Some(Offset(end))));
    sent[2].push(batch(2, BATCHES));

    // A large request (~900 KiB batch, read from the socket in many pieces) goes through whole.
    let mut big = BatchBuilder::new();
    for r in 0..90u32 {
        big.push(1_700_000_000_000, Some(format!("big-{r}").as_bytes()), Some(&vec![b'b'; 10_000]), &[]);
    }
    let big = big.last_offset_delta(89).build();
    assert!(big.len() > 900_000);
    assert_eq!(produce(&mut client, "events", 0, big.clone()), (ErrorCode::None, Some(Offset(end))));
    sent[0].push(big);

    let status = broker.stop();
    assert!(status.success(), "keel serve exits 0 on SIGTERM: {status}");

    // Restart: metadata and every record are still there.
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    check(&mut client, &sent);
    let req = ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: "events".into(),
            partitions: vec![
                ListOffsetsPartition { partition: PartitionId(1), timestamp: OffsetQuery::Earliest },
                ListOffsetsPartition { partition: PartitionId(1), timestamp: OffsetQuery::Latest },
                ListOffsetsPartition {
                    partition: PartitionId(1),
                    timestamp: OffsetQuery::Timestamp(1_700_000_000_010),
                },
                ListOffsetsPartition {
                    partition: PartitionId(1),
                    timestamp: OffsetQuery::Timestamp(1_800_000_000_000),
                },
            ],
        }],
    };
    let Ok(Response::ListOffsets(r)) = client.call(Request::ListOffsets(req)) else { panic!() };
    let offsets: Vec<_> = r.topics[0].partitions.iter().map(|p| (p.offset, p.timestamp)).collect();
    // By time: the first record at or after it, with that record's own timestamp; none after
    // the newest record.
    assert_eq!(
        offsets,
        vec![
            (Some(Offset(0)), -1),
            (Some(Offset(u64::from(BATCHES) * 3)), -1),
            (Some(Offset(30)), 1_700_000_000_010),
            (None, -1)
        ]
    );
    assert!(broker.stop().success());
}

/// docs/protocol.md is enough to write a client from: `tests/native/doc_client.py`, written from
/// the document alone (Python's standard library, its own CRC-32C and RecordBatch code), runs
/// its scenario against the broker — every API, the limits, the errors, bad input — and ends by
/// checking the documented shutdown (SIGTERM during a long poll). Any answer that differs from
/// the document fails it.
#[test]
fn a_client_written_from_the_protocol_document_works() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = start_broker(tmp.path(), free_port());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/native/doc_client.py");
    let out = Command::new("python3")
        .args([script, &broker.addr.to_string(), "--shutdown", &broker.pid().to_string()])
        .output()
        .expect("this test needs python3 (standard library only)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "doc_client.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().is_some_and(|l| l.starts_with("doc client: ") && l.contains("checks passed")));
    assert!(broker.stop().success(), "the broker exits 0 after the script's SIGTERM");
}

/// Topic names up to Kafka's limit of 249 characters work end to end (the partition directory
/// name, NAME-ID, must still fit in a file name), across a restart; 250 is refused.
#[test]
fn longest_topic_names_are_served() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    let longest = "n".repeat(249);
    assert_eq!(create(&mut client, &longest, 3), ErrorCode::None);
    assert_eq!(create(&mut client, &"n".repeat(250), 1), ErrorCode::InvalidTopicName);
    let stored = batch(2, 0);
    assert_eq!(produce(&mut client, &longest, 2, stored.clone()), (ErrorCode::None, Some(Offset(0))));
    assert!(broker.stop().success());
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    let req = FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: longest.clone(),
            partitions: vec![FetchPartition {
                partition: PartitionId(2),
                fetch_offset: Offset(0),
                partition_max_bytes: 1 << 20,
            }],
        }],
    };
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(req)) else { panic!("fetch failed") };
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::None);
    assert_eq!(p.records.len(), stored.len(), "the batch survived the restart");
    assert!(broker.stop().success());
}

/// A deleted topic's committed offsets go with it (as in Kafka): a topic created again under the
/// same name starts with none, also after a restart; other topics' commits stay.
#[test]
fn deleting_a_topic_deletes_its_committed_offsets() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    for topic in ["gone", "kept"] {
        assert_eq!(create(&mut client, topic, 3), ErrorCode::None);
    }
    for group in ["g1", "g2"] {
        let commit = |name: &str| CommitOffsetsTopic {
            name: name.into(),
            partitions: (0..3)
                .map(|p| CommitOffsetsPartition { partition: PartitionId(p), offset: Offset(0), metadata: None })
                .collect(),
        };
        let req = CommitOffsetsRequest { group: group.into(), topics: vec![commit("gone"), commit("kept")] };
        let Ok(Response::CommitOffsets(r)) = client.call(Request::CommitOffsets(req)) else { panic!("commit") };
        assert!(r.topics.iter().flat_map(|t| &t.partitions).all(|p| p.error_code == ErrorCode::None), "{r:?}");
    }
    let committed_topics = |client: &mut Client, group: &str| {
        let req = FetchCommittedRequest { group: group.into(), topics: None };
        let Ok(Response::FetchCommitted(r)) = client.call(Request::FetchCommitted(req)) else { panic!("fetch") };
        let mut names: Vec<(String, usize)> = r.topics.iter().map(|t| (t.name.clone(), t.partitions.len())).collect();
        names.sort();
        names
    };
    let both = vec![("gone".to_string(), 3), ("kept".to_string(), 3)];
    assert_eq!(committed_topics(&mut client, "g1"), both);
    // An offset past Kafka's i64 is not an offset: INVALID_REQUEST, nothing stored (a fuzzer's
    // find: stored, it made the next FetchCommitted panic the shard).
    let huge = CommitOffsetsRequest {
        group: "g1".into(),
        topics: vec![CommitOffsetsTopic {
            name: "kept".into(),
            partitions: vec![CommitOffsetsPartition {
                partition: PartitionId(0),
                offset: Offset(1 << 63),
                metadata: None,
            }],
        }],
    };
    match client.call(Request::CommitOffsets(huge)) {
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidRequest, "{e:?}"),
        other => panic!("a commit of offset 2^63 was not refused: {other:?}"),
    }
    assert_eq!(committed_topics(&mut client, "g1"), both);
    let Ok(Response::DeleteTopic(r)) = client.call(Request::DeleteTopic(DeleteTopicRequest { name: "gone".into() }))
    else {
        panic!("delete")
    };
    assert_eq!(r.error_code, ErrorCode::None);
    assert_eq!(create(&mut client, "gone", 3), ErrorCode::None);
    let kept = vec![("kept".to_string(), 3)];
    for group in ["g1", "g2"] {
        assert_eq!(committed_topics(&mut client, group), kept, "{group}");
    }
    assert!(broker.stop().success());
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    for group in ["g1", "g2"] {
        assert_eq!(committed_topics(&mut client, group), kept, "{group} after a restart");
    }
    assert!(broker.stop().success());
}

/// SIGTERM while a consumer's long poll waits on every partition: the poll ends at once, the
/// broker exits 0 well before the poll's max wait, and every partition log is closed cleanly
/// (its clean-shutdown marker written), so the next start does not have to recover it.
#[test]
fn shutdown_ends_long_polls_and_closes_every_log_cleanly() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = start_broker(tmp.path(), free_port());
    let mut client = Client::connect(broker.addr);
    const PARTITIONS: u32 = 4;
    assert_eq!(create(&mut client, "polled", PARTITIONS), ErrorCode::None);
    assert_eq!(produce(&mut client, "polled", 0, batch(0, 0)), (ErrorCode::None, Some(Offset(0))));
    let addr = broker.addr;
    let poll = std::thread::spawn(move || {
        let mut consumer = Client::connect(addr);
        let partitions = (0..PARTITIONS)
            .map(|p| FetchPartition {
                partition: PartitionId(p),
                fetch_offset: Offset(u64::from(p == 0) * 3),
                partition_max_bytes: 1 << 20,
            })
            .collect();
        let req = FetchRequest {
            max_wait_ms: 25_000,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic { name: "polled".into(), partitions }],
        };
        // Answered empty or refused (the broker is shutting down), or the connection closed.
        let _ = consumer.call(Request::Fetch(req));
    });
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    assert!(broker.stop().success(), "keel serve exits 0 on SIGTERM");
    assert!(stopping.elapsed() < Duration::from_secs(10), "the long poll held the shutdown: {:?}", stopping.elapsed());
    poll.join().unwrap();
    let logs = tmp.path().join("logs");
    let mut partition_dirs = 0;
    for topic in std::fs::read_dir(&logs).unwrap() {
        let topic = topic.unwrap().path();
        if !topic.file_name().unwrap().to_str().unwrap().starts_with("polled-") {
            continue;
        }
        for partition in std::fs::read_dir(&topic).unwrap() {
            let partition = partition.unwrap().path();
            partition_dirs += 1;
            assert!(partition.join("clean.shutdown").is_file(), "{} was not closed cleanly", partition.display());
        }
    }
    assert_eq!(partition_dirs, PARTITIONS);
}

/// acks=all with fsync=always through the network: a producer keeps sending while the broker is
/// SIGKILLed at random moments; after each restart every acknowledged batch is there, at its
/// offset, byte-identical (I4 on one node). Every other broker keeps a (small) zeroed runway,
/// so kills also land during zero writes and restarts find zeros after the data.
/// `keel serve` flags of the SIGKILL test's brokers, by cycle parity: no runway, then a 16 KiB
/// one (it starts once a partition's segment holds 16 KiB, well within a cycle's appends).
const RUNWAY_EVERY_OTHER: [&[&str]; 2] = [&["--runway-bytes", "0"], &["--runway-bytes", "16384"]];

#[test]
fn sigkill_during_produce_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let mut broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "durable", 3), ErrorCode::None);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("sigkill test: seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // acked[p] = batches acknowledged on partition p, in offset order.
    let mut acked: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    let mut i = 0u32;
    for cycle in 0..5 {
        // The broker now running was started for this cycle (the first with defaults).
        let addr = broker.addr;
        let kill_after = Duration::from_millis(50 + next() % 250);
        let producer = std::thread::spawn(move || {
            let mut got = Vec::new();
            let Ok(stream) = TcpStream::connect(addr) else { return got };
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut c = Client { stream, next_id: 1 };
            for n in 0.. {
                let p = (i + n) % 3;
                let b = batch(p, i + n);
                let req = ProduceRequest {
                    acks: Acks::All,
                    timeout_ms: 10_000,
                    topics: vec![ProduceTopic {
                        name: "durable".into(),
                        partitions: vec![ProducePartition {
                            partition: PartitionId(p),
                            records: Bytes::from(b.clone()),
                        }],
                    }],
                };
                let id = c.send(&Request::Produce(req));
                let Some(payload) = c.read_frame() else { break };
                let Ok((cid, Ok(Response::Produce(r)))) = decode_response(ApiKey::Produce, 1, &payload) else { break };
                assert_eq!(cid, id);
                let part = &r.topics[0].partitions[0];
                assert_eq!(part.error_code, ErrorCode::None);
                got.push((p, part.base_offset.unwrap().0, b));
            }
            got
        });
        std::thread::sleep(kill_after);
        broker.kill();
        let got = producer.join().unwrap();
        i += got.len() as u32 + 1;
        for (p, base, b) in got {
            assert_eq!(base, acked[p as usize].len() as u64 * 3, "cycle {cycle}: dense offsets on p{p}");
            acked[p as usize].push(b);
        }
        broker = start_broker_with(tmp.path(), port, RUNWAY_EVERY_OTHER[(cycle + 1) % 2]);
        let mut client = Client::connect(broker.addr);
        for p in 0..3u32 {
            let got = fetch_all(&mut client, "durable", p);
            assert!(
                got.len() >= acked[p as usize].len(),
                "cycle {cycle} p{p}: {} stored < {} acked",
                got.len(),
                acked[p as usize].len()
            );
            // Unacknowledged batches that did reach the disk stay (the producer would retry them);
            // the acknowledged ones must be exactly there.
            for (k, want) in acked[p as usize].iter().enumerate() {
                assert_eq!(&got[k][16..], &want[16..], "cycle {cycle} p{p} batch {k}");
            }
            acked[p as usize] = got; // what is stored is what later offsets build on
        }
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    println!("sigkill test: 5 kills, {total} batches stored, every acknowledged one verified");
    assert!(total > 0, "the producer got acknowledgements");
    assert!(broker.stop().success());
}

/// The operator's path: the CLI against a running broker, exit codes included.
#[test]
fn cli_create_produce_consume_describe_delete() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = start_broker(tmp.path(), free_port());
    let bootstrap = broker.addr.to_string();
    let keel = |args: &[&str], stdin: Option<&str>| -> (i32, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .env("KEEL_BOOTSTRAP", &bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) =
        keel(&["topic", "create", "orders", "--partitions", "3", "--config", "retention.ms=3600000"], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = keel(&["topic", "create", "orders", "--partitions", "3"], None);
    assert_eq!(code, 1, "an existing topic is a broker refusal: {err}");
    assert!(err.contains("TOPIC_ALREADY_EXISTS") || err.contains("already exists"), "{err}");
    let (code, _, err) = keel(&["topic", "create", "x", "--config", "retention.msec=1"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("retention.msec"), "the unknown key is named: {err}");

    let lines: String = (0..30).map(|i| format!("user{}:order {i}\n", i % 5)).collect();
    let (code, _, err) = keel(&["produce", "orders", "--key-separator", ":"], Some(&lines));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        keel(&["consume", "orders", "--from-beginning", "--count", "30", "--format", "detailed"], None);
    assert_eq!(code, 0, "{err}");
    let records: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(records.len(), 30, "{out}");
    let mut values: Vec<&str> = records.iter().map(|r| r[4]).collect();
    values.sort_by_key(|v| v[6..].parse::<u32>().unwrap());
    assert_eq!(values, (0..30).map(|i| format!("order {i}")).collect::<Vec<_>>());
    for key in 0..5 {
        let parts: std::collections::BTreeSet<&str> =
            records.iter().filter(|r| r[3] == format!("user{key}")).map(|r| r[0]).collect();
        assert_eq!(parts.len(), 1, "one key, one partition");
    }

    let (code, out, _) = keel(&["topic", "describe", "orders"], None);
    assert_eq!(code, 0);
    assert!(out.contains("retention.ms=3600000") && out.contains("fsync.policy=always (default)"), "{out}");
    let (code, out, _) = keel(&["topic", "list"], None);
    assert_eq!((code, out.trim()), (0, "__consumer_offsets\t16 partitions\norders\t3 partitions"));

    // A group reads part of the topic, commits, and goes on where it stopped.
    let group_values = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["consume", "orders", "--group", "billing", "--from-beginning", "--format", "detailed"];
        all.extend_from_slice(args);
        let (code, out, err) = keel(&all, None);
        assert_eq!(code, 0, "{err}");
        out.lines().map(|l| l.split('\t').nth(4).unwrap().to_string()).collect()
    };
    let first = group_values(&["--count", "12"]);
    let rest = group_values(&["--idle-exit-ms", "1500"]);
    assert_eq!(first.len() + rest.len(), 30, "every record once across the two runs: {first:?} {rest:?}");
    let mut all: Vec<String> = first.iter().chain(&rest).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 30);
    let (code, out, err) = keel(&["group", "offsets", "billing"], None);
    assert_eq!(code, 0, "{err}");
    let lag: u64 = out.lines().skip(1).map(|l| l.split('\t').nth(4).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(lag, 0, "{out}");
    let (code, out, _) = keel(&["group", "list"], None);
    assert_eq!((code, out.trim()), (0, "billing"));
    let (code, _, err) = keel(&["group", "reset", "billing", "--topic", "orders", "--to-earliest"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(group_values(&["--idle-exit-ms", "1500"]).len(), 30, "after a reset to earliest: all again");
    let (code, _, err) = keel(&["topic", "delete", "__consumer_offsets"], None);
    assert_eq!(code, 1, "internal topic: {err}");
    let (code, out, _) = keel(&["cluster", "status"], None);
    assert_eq!(code, 0);
    assert!(out.contains("shard\tcore\tpartitions"), "{out}");
    let (code, _, _) = keel(&["topic", "delete", "orders"], None);
    assert_eq!(code, 0);
    let (code, _, err) = keel(&["topic", "describe", "orders"], None);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = keel(&["topic", "list", "--bootstrap", "127.0.0.1:1"], None);
    assert_eq!(code, 2, "unreachable broker: {err}");
    assert!(broker.stop().success());
}

/// `keel serve` with its defaults, as the README's quick start runs it: a relative data
/// directory under the current directory.
#[test]
fn default_relative_data_dir_works() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--listen", &addr.to_string(), "--memory", "256MiB", "--kafka-listen", "off"])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers_api_versions(addr) {
        assert!(Instant::now() < deadline, "keel serve did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = Client::connect(addr);
    assert_eq!(create(&mut client, "rel", 2), ErrorCode::None);
    assert_eq!(produce(&mut client, "rel", 1, batch(1, 0)).0, ErrorCode::None);
    assert!(tmp.path().join("keel-data/metadata.json").is_file());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// Many connections at once, each producing to every partition (most owned by another shard than
/// the one that accepted the connection): every batch is stored once, and each connection's
/// batches keep their order within every partition.
#[test]
fn concurrent_connections_across_shards() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = start_broker(tmp.path(), free_port());
    let mut admin = Client::connect(broker.addr);
    const PARTITIONS: u32 = 6;
    const CONNECTIONS: u32 = 16;
    const ROUNDS: u32 = 20;
    assert_eq!(create(&mut admin, "busy", PARTITIONS), ErrorCode::None);
    let producers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = broker.addr;
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for round in 0..ROUNDS {
                    for p in 0..PARTITIONS {
                        // The connection and round are in the batch's first record key.
                        let mut b = BatchBuilder::new();
                        b.push(0, Some(format!("{c:02}-{round:03}").as_bytes()), Some(&[b'x'; 200]), &[]);
                        let (code, _) = produce(&mut client, "busy", p, b.build());
                        assert_eq!(code, ErrorCode::None);
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for p in 0..PARTITIONS {
        let batches = fetch_all(&mut admin, "busy", p);
        assert_eq!(batches.len() as u32, CONNECTIONS * ROUNDS, "partition {p}");
        let mut last_round = vec![-1i32; CONNECTIONS as usize];
        for b in &batches {
            let view = BatchView::parse(b).unwrap();
            let record = view.records().unwrap().next().unwrap().unwrap();
            let key = std::str::from_utf8(record.key.unwrap()).unwrap().to_string();
            let (c, round) = key.split_once('-').unwrap();
            let (c, round): (usize, i32) = (c.parse().unwrap(), round.parse().unwrap());
            assert_eq!(round, last_round[c] + 1, "partition {p}: connection {c} out of order");
            last_round[c] = round;
        }
    }
    assert!(broker.stop().success());
}

/// Retention and compaction run in the background on each shard: segments past `retention.ms`
/// disappear (the log start moves past them) and a compacted topic keeps only the latest value
/// of each key in its closed segments, offsets unchanged.
#[test]
fn background_retention_and_compaction() {
    use keel_client::{Consumer, Producer, ProducerConfig, StartAt};
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), free_port(), &["--maintenance-interval-ms", "100"]);
    let mut client = keel_client::Client::connect(&broker.addr.to_string(), "maintenance-test").unwrap();
    let cfg = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    // Each append after 50 ms rolls the segment; closed segments older than 300 ms are deleted.
    client.create_topic("expiring", 1, &cfg(&[("segment.ms", "50"), ("retention.ms", "300")])).unwrap();
    client.create_topic("latest", 1, &cfg(&[("cleanup.policy", "compact"), ("segment.ms", "50")])).unwrap();
    let send = |client: &mut keel_client::Client, topic: &str, key: &str, value: &str| -> u64 {
        let config = ProducerConfig { linger: Duration::from_secs(60), ..ProducerConfig::default() }; // sent by flush
        let mut producer = Producer::new(&mut *client, topic, config).unwrap();
        producer.send_to(0, Some(key.as_bytes()), Some(value.as_bytes()), &[], None).unwrap();
        producer.flush().unwrap()[0].1
    };
    let first = send(&mut client, "expiring", "a", "old");
    send(&mut client, "latest", "k1", "v1");
    send(&mut client, "latest", "k2", "v1");
    std::thread::sleep(Duration::from_millis(100));
    send(&mut client, "latest", "k1", "v2");
    std::thread::sleep(Duration::from_millis(100));
    let second = send(&mut client, "expiring", "b", "new"); // rolls: "old" is now in a closed segment
    send(&mut client, "latest", "k3", "v1"); // rolls: k1=v2 is now in a closed segment
    assert_eq!((first, second), (0, 1));

    let earliest = |client: &mut keel_client::Client| {
        client.list_offsets("expiring", &[(0, keel_protocol::messages::OffsetQuery::Earliest)]).unwrap()[0].1
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while earliest(&mut client) != Some(1) {
        assert!(
            Instant::now() < deadline,
            "retention never deleted the expired segment: log start {:?}",
            earliest(&mut client)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let read_all = |client: &mut keel_client::Client| -> Vec<(u64, String, String)> {
        let mut consumer = Consumer::new(&mut *client, "latest", None, StartAt::Earliest).unwrap();
        let mut out = Vec::new();
        loop {
            let records = consumer.poll(Duration::from_millis(100)).unwrap();
            if records.is_empty() {
                return out;
            }
            for r in records {
                let text = |b: Option<bytes::Bytes>| String::from_utf8(b.unwrap().to_vec()).unwrap();
                out.push((r.offset, text(r.key), text(r.value)));
            }
        }
    };
    let compacted = |s: &str| (0u64, "k1".to_string(), s.to_string());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = read_all(&mut client);
        if !records.contains(&compacted("v1")) {
            let expected: Vec<(u64, String, String)> = [(1, "k2", "v1"), (2, "k1", "v2"), (3, "k3", "v1")]
                .iter()
                .map(|(o, k, v)| (*o, k.to_string(), v.to_string()))
                .collect();
            assert_eq!(records, expected, "compaction keeps the latest value per key at its offset");
            break;
        }
        assert!(Instant::now() < deadline, "compaction never removed the overwritten k1=v1: {records:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Altered configs apply to open partitions at once, without a restart: retention set on a
    // topic that had none deletes its closed segment, and a smaller max.message.bytes refuses
    // the next batch over it.
    client.create_topic("altered", 1, &cfg(&[("segment.ms", "50")])).unwrap();
    send(&mut client, "altered", "a", "old");
    std::thread::sleep(Duration::from_millis(100));
    send(&mut client, "altered", "b", "new"); // rolls: "old" is now in a closed segment
    std::thread::sleep(Duration::from_millis(400)); // rounds that had no retention to apply
    let earliest_altered = |client: &mut keel_client::Client| {
        client.list_offsets("altered", &[(0, keel_protocol::messages::OffsetQuery::Earliest)]).unwrap()[0].1
    };
    assert_eq!(earliest_altered(&mut client), Some(0));
    client.alter_configs("altered", &cfg(&[("retention.ms", "1"), ("max.message.bytes", "1024")]), &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while earliest_altered(&mut client) != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the altered retention.ms was not applied: {:?}",
            earliest_altered(&mut client)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut big = BatchBuilder::new();
    big.push(0, None, Some(&[b'x'; 2000]), &[]);
    let refused = client.produce("altered", 0, Bytes::from(big.build()), keel_protocol::messages::Acks::Leader);
    assert!(
        matches!(&refused, Err(keel_client::ClientError::Broker { code: ErrorCode::MessageTooLarge, .. })),
        "{refused:?}"
    );
    drop(client);
    assert!(broker.stop().success(), "clean exit after background work");
}

/// `GET path` on the admin listener: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("an HTTP status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every sample line that starts with `prefix` (e.g. a name and some of its labels).
fn sample_total(metrics: &str, prefix: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Prometheus metrics on --admin-listen: request counts and latency per shard and API, bytes
/// in/out, partitions per shard, log end offsets, committed offsets and lag per group.
#[test]
fn metrics_on_the_admin_listener() {
    use keel_client::{Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), free_port());
    let mut client = keel_client::Client::connect(&broker.addr.to_string(), "metrics-test").unwrap();
    client.create_topic("watched", 3, &[]).unwrap();
    let mut producer = Producer::new(&mut client, "watched", ProducerConfig::default()).unwrap();
    for i in 0..30u32 {
        producer.send_to(i % 3, None, Some(format!("record {i}").as_bytes()), &[], None).unwrap();
    }
    producer.flush().unwrap();
    drop(producer);
    client.commit_offsets("readers", "watched", &[(0, 4), (1, 10)]).unwrap();

    // Per-partition figures are published once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = http_get(broker.admin, "/metrics");
        assert_eq!(status, 200);
        if sample(&text, "keel_group_lag{group=\"readers\",topic=\"watched\",partition=\"0\"}").is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "no lag published:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = |prefix: &str| sample_total(&text, prefix);
    assert!(
        total("keel_requests_total{shard=\"0\",api=\"Produce\"}")
            + total("keel_requests_total{shard=\"1\",api=\"Produce\"}")
            >= 1.0
    );
    assert!(total("keel_request_duration_seconds_count") >= 4.0, "create, metadata, produce, commit timed");
    assert!(total("keel_network_received_bytes_total") > 300.0, "30 records came in");
    assert_eq!(total("keel_partitions{"), 16.0 + 3.0, "offsets topic + watched");
    for p in 0..3 {
        assert_eq!(
            sample(&text, &format!("keel_partition_log_end_offset{{topic=\"watched\",partition=\"{p}\"}}")),
            Some(10.0)
        );
    }
    assert_eq!(
        sample(&text, "keel_group_committed_offset{group=\"readers\",topic=\"watched\",partition=\"1\"}"),
        Some(10.0)
    );
    assert_eq!(sample(&text, "keel_group_lag{group=\"readers\",topic=\"watched\",partition=\"0\"}"), Some(6.0));
    assert_eq!(sample(&text, "keel_group_lag{group=\"readers\",topic=\"watched\",partition=\"1\"}"), Some(0.0));
    assert_eq!(http_get(broker.admin, "/nowhere").0, 404);
    drop(client);
    assert!(broker.stop().success());
}

/// `fsync.policy=interval`: a partition that appends left unsynced is synced once its interval
/// passes, with no append after (`keel_partition_syncs_total`), and nothing is synced where
/// nothing waits: the idle partitions, and the synced one afterwards.
#[test]
fn interval_partitions_are_synced_after_their_appends_stop() {
    use keel_client::{Acks, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), free_port());
    let mut client = keel_client::Client::connect(&broker.addr.to_string(), "interval-test").unwrap();
    let configs = [("fsync.policy", "interval"), ("fsync.interval.ms", "200")].map(|(k, v)| (k.into(), v.into()));
    client.create_topic("lazy", 4, &configs).unwrap();
    let config = ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() };
    let mut producer = Producer::new(&mut client, "lazy", config).unwrap();
    for i in 0..10u32 {
        producer.send_to(0, None, Some(format!("record {i}").as_bytes()), &[], None).unwrap();
    }
    producer.flush().unwrap();
    drop(producer);

    // None until the partition figures are first published (once a second).
    let syncs = |p: u32| -> Option<f64> {
        let (status, text) = http_get(broker.admin, "/metrics");
        assert_eq!(status, 200);
        sample(&text, &format!("keel_partition_syncs_total{{topic=\"lazy\",partition=\"{p}\"}}"))
    };
    // The interval (200 ms), a tick (10 ms) and the once-a-second publication.
    let deadline = Instant::now() + Duration::from_secs(10);
    while syncs(0).is_none_or(|n| n < 1.0) {
        assert!(Instant::now() < deadline, "lazy/0 was never synced after its appends");
        std::thread::sleep(Duration::from_millis(100));
    }
    let synced = syncs(0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(syncs(0), synced, "synced again with nothing left to sync");
    for p in 1..4 {
        assert_eq!(syncs(p), Some(0.0), "lazy/{p} had no appends");
    }
    drop(client);
    assert!(broker.stop().success());
}

/// A request over many partitions makes one call to each shard that owns some of them, not one
/// per partition (`keel_shard_calls_total`): a Produce and a Fetch of 8 partitions on 2 shards
/// make 2 each, and a long poll that times out makes 2 reads and 2 waits.
#[test]
fn a_request_makes_one_call_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), free_port(), &["--cores", "2"]);
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "wide", 8), ErrorCode::None);
    let calls = || -> f64 {
        let (status, text) = http_get(broker.admin, "/metrics");
        assert_eq!(status, 200);
        sample_total(&text, "keel_shard_calls_total{")
    };
    // The count before a step, once the node's own work has settled: at start the controller
    // may still be creating __consumer_offsets (its calls to each shard), which would count too.
    let settled = || -> f64 {
        let mut last = calls();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            match calls() {
                now if now == last => return now,
                now => last = now,
            }
        }
    };
    let before = settled();
    let partitions =
        (0..8).map(|p| ProducePartition { partition: PartitionId(p), records: Bytes::from(batch(p, 0)) }).collect();
    let req = ProduceRequest {
        acks: Acks::All,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic { name: "wide".into(), partitions }],
    };
    let Ok(Response::Produce(r)) = client.call(Request::Produce(req)) else { panic!("produce failed") };
    for p in &r.topics[0].partitions {
        assert_eq!((p.error_code, p.base_offset), (ErrorCode::None, Some(Offset(0))), "{p:?}");
    }
    assert_eq!(calls() - before, 2.0, "a Produce of 8 partitions on 2 shards");

    let before = settled();
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(fetch_from_start("wide", 8, 0, 1, 8 << 20))) else {
        panic!("fetch failed")
    };
    for (p, answer) in r.topics[0].partitions.iter().enumerate() {
        // The same batch (its base offset and leader epoch are the broker's to stamp).
        assert_eq!(answer.records.len(), batch(p as u32, 0).len(), "partition {p}");
    }
    assert_eq!(calls() - before, 2.0, "a Fetch of 8 partitions on 2 shards");

    let before = settled();
    let mut req = fetch_from_start("wide", 8, 200, 1, 8 << 20);
    for p in &mut req.topics[0].partitions {
        p.fetch_offset = Offset(3); // the end: nothing to read, so the fetch waits
    }
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(req)) else { panic!("long poll failed") };
    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == ErrorCode::None && p.records.is_empty()));
    assert_eq!(calls() - before, 4.0, "a read and a wait on each shard");
    drop(client);
    assert!(broker.stop().success());
}

/// A native connection whose requests all go to one other shard moves there after 8 of them
/// (`connection::MOVE_AFTER`), whichever shard accepted it, and goes on as before: requests
/// written before the answers to earlier ones were read (so some are read by the shard it moves
/// from) are answered in order on the new shard, and every append lands once.
#[test]
fn a_connection_moves_to_the_shard_of_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), free_port(), &["--cores", "2"]);
    let mut admin = Client::connect(broker.addr);
    assert_eq!(create(&mut admin, "moving", 2), ErrorCode::None);
    let Ok(Response::Metadata(m)) =
        admin.call(Request::Metadata(MetadataRequest { topics: Some(vec!["moving".into()]) }))
    else {
        panic!("metadata failed")
    };
    let shards: Vec<u32> = m.topics[0].partitions.iter().map(|p| p.shard.0).collect();
    assert_eq!(shards.len(), 2);
    assert_ne!(shards[0], shards[1], "one partition per shard: {shards:?}");
    let produced_on = |shard: u32| -> f64 {
        let (_, text) = http_get(broker.admin, "/metrics");
        sample(&text, &format!("keel_requests_total{{shard=\"{shard}\",api=\"Produce\"}}")).unwrap_or(0.0)
    };
    for partition in 0..2u32 {
        let owner = shards[partition as usize];
        let other = shards[1 - partition as usize];
        // A connection the other shard accepted (its first request is counted there); they land
        // on either at random.
        let mut next = 0u64;
        let mut tries = 0;
        let (mut client, before) = loop {
            let mut client = Client::connect(broker.addr);
            let (owner_before, other_before) = (produced_on(owner), produced_on(other));
            let first = produce(&mut client, "moving", partition, batch(partition, 0));
            assert_eq!(first, (ErrorCode::None, Some(Offset(next))));
            next += 3;
            if produced_on(other) > other_before {
                break (client, owner_before);
            }
            tries += 1;
            assert!(tries < 40, "40 connections in a row landed on shard {owner}");
        };
        for i in 1..5 {
            let answer = produce(&mut client, "moving", partition, batch(partition, i));
            assert_eq!(answer, (ErrorCode::None, Some(Offset(next))));
            next += 3;
        }
        // Requests 6 to 17 written at once, then their answers read: the connection moves after
        // answering the 8th, when the shard it leaves has read some of the rest already.
        let ids: Vec<u32> = (5..17)
            .map(|i| {
                let req = ProduceRequest {
                    acks: Acks::All,
                    timeout_ms: 10_000,
                    topics: vec![ProduceTopic {
                        name: "moving".into(),
                        partitions: vec![ProducePartition {
                            partition: PartitionId(partition),
                            records: Bytes::from(batch(partition, i)),
                        }],
                    }],
                };
                client.send(&Request::Produce(req))
            })
            .collect();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        for id in ids {
            let payload = loop {
                if let Some(frame) = decode_frame(&buf, u32::MAX).unwrap() {
                    let payload = Bytes::copy_from_slice(&buf[frame.payload.clone()]);
                    buf.drain(..frame.consumed);
                    break payload;
                }
                let n = client.stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the connection closed after request {id}");
                buf.extend_from_slice(&chunk[..n]);
            };
            let (correlation, response) = decode_response(ApiKey::Produce, 1, &payload).unwrap();
            assert_eq!(correlation, id, "answers in request order");
            let Ok(Response::Produce(r)) = response else { panic!("{response:?}") };
            let answer = &r.topics[0].partitions[0];
            assert_eq!((answer.error_code, answer.base_offset), (ErrorCode::None, Some(Offset(next))), "{answer:?}");
            next += 3;
        }
        for i in 17..32 {
            let answer = produce(&mut client, "moving", partition, batch(partition, i));
            assert_eq!(answer, (ErrorCode::None, Some(Offset(next))));
            next += 3;
        }
        assert_eq!(fetch_all(&mut client, "moving", partition).len(), (next / 3) as usize);
        // Each answer above was counted on the shard that served it: the first 8 on the other
        // shard, the remaining 24 on the owner.
        let served_by_owner = produced_on(owner) - before;
        assert_eq!(served_by_owner, 24.0, "partition {partition}: answers from its shard {owner}");
    }
    drop(admin);
    assert!(broker.stop().success());
}

/// Fetch reads of history (here: everything, after a restart emptied the caches of recent
/// appends) take one of `--history-reads-per-shard` slots: with one slot, a fetch of four
/// partitions on one shard runs its four disk reads one after another (the later ones counted as
/// waits); with eight, none waits. Either way every batch comes back as produced.
#[test]
fn history_reads_take_turns_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let slots = |n: &str| ["--cores", "1", "--history-reads-per-shard", n].map(String::from);
    let port = free_port();
    let start = |n: &str| start_broker_with(dir.path(), port, &slots(n).each_ref().map(String::as_str));
    let broker = start("1");
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "history", 4), ErrorCode::None);
    let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    // ~20 KiB per partition: after the restart only the partial last page is cached.
    for i in 0..20 {
        for (p, batches) in sent.iter_mut().enumerate() {
            let b = batch(p as u32, i);
            assert_eq!(produce(&mut client, "history", p as u32, b.clone()).0, ErrorCode::None);
            batches.push(b);
        }
    }
    drop(client);
    assert!(broker.stop().success());

    let fetch_everything = |addr| {
        let mut client = Client::connect(addr);
        let req = fetch_from_start("history", 4, 0, 0, 8 << 20);
        let Ok(Response::Fetch(r)) = client.call(Request::Fetch(req)) else { panic!("fetch failed") };
        r.topics[0].partitions.iter().map(|p| (p.error_code, p.records.len())).collect::<Vec<_>>()
    };
    let counters = |broker: &Broker| {
        let (status, text) = http_get(broker.admin, "/metrics");
        assert_eq!(status, 200);
        let reads = sample(&text, "keel_history_reads_total{shard=\"0\"}").expect("history reads counted");
        let waits = sample(&text, "keel_history_read_waits_total{shard=\"0\"}").expect("waits counted");
        (reads, waits)
    };
    let stored_len = |p: usize| sent[p].iter().map(Vec::len).sum::<usize>();
    for (n, waited) in [("1", true), ("8", false)] {
        let broker = start(n);
        let answers = fetch_everything(broker.addr);
        for (p, (code, len)) in answers.iter().enumerate() {
            assert_eq!(*code, ErrorCode::None, "slots {n}, partition {p}");
            assert_eq!(*len, stored_len(p), "slots {n}, partition {p}: all twenty batches");
        }
        let (reads, waits) = counters(&broker);
        assert_eq!(reads, 4.0, "slots {n}: one disk read per partition");
        if waited {
            assert!(waits >= 1.0, "one slot, four reads at once: some waited ({waits})");
        } else {
            assert_eq!(waits, 0.0, "eight slots, four reads: none waited");
        }
        let mut client = Client::connect(broker.addr);
        for p in 0..4u32 {
            // Stored batches differ from the sent ones only in base offset and leader epoch
            // (the first 16 bytes); from the magic byte on (CRC included) they are the same.
            let tails = |batches: &[Vec<u8>]| batches.iter().map(|b| b[16..].to_vec()).collect::<Vec<_>>();
            let fetched = fetch_all(&mut client, "history", p);
            assert_eq!(tails(&fetched), tails(&sent[p as usize]), "slots {n}, partition {p}");
        }
        drop(client);
        assert!(broker.stop().success());
    }
}

/// Fetch `min_bytes`: the answer waits until the partitions together hold that much (or
/// `max_wait_ms` passes, then it returns what there is).
/// A Fetch answer of about 6 MiB, whose records the broker sends from where they are, spliced
/// between the pieces of the encoded answer (src/gather.rs), reaches a reader that leaves it in
/// the socket for a while (its receive buffer shrunk to 32 KiB, so the broker finds its send
/// buffer full and must wait for room midway) whole: every batch produced, in order, byte for
/// byte but for the offset and leader epoch the broker assigns. The next answer on the same
/// connection follows it intact.
#[test]
fn a_large_fetch_answer_reaches_a_slow_reader_intact() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), free_port());
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "big", 2), ErrorCode::None);
    let big_batch = |partition: u32, i: u32| {
        let mut b = BatchBuilder::new();
        for r in 0..16u32 {
            let value: Vec<u8> = (0..4000u32).map(|j| (j * 31 + r * 7 + i * 3 + partition) as u8).collect();
            b.push(
                1_700_000_000_000 + i64::from(i),
                Some(format!("p{partition}-{i}-{r}").as_bytes()),
                Some(&value),
                &[],
            );
        }
        b.last_offset_delta(15).build()
    };
    let mut produced: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
    for partition in 0..2 {
        for i in 0..48 {
            let batch = big_batch(partition, i);
            assert_eq!(produce(&mut client, "big", partition, batch.clone()).0, ErrorCode::None);
            produced[partition as usize].push(batch);
        }
    }

    let mut slow = Client::connect(broker.addr);
    let small: libc::c_int = 32 << 10;
    // SAFETY: setsockopt reads an int from a valid pointer; the descriptor is the stream's.
    let set = unsafe {
        libc::setsockopt(
            slow.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    let mut request = fetch_from_start("big", 2, 0, 0, 8 << 20);
    for p in &mut request.topics[0].partitions {
        p.partition_max_bytes = 4 << 20;
    }
    let id = slow.send(&Request::Fetch(request));
    std::thread::sleep(Duration::from_millis(500)); // the answer piles up in the sockets
    let payload = slow.read_frame().expect("the fetch answer");
    let (correlation, response) = decode_response(ApiKey::Fetch, 1, &payload).unwrap();
    assert_eq!(correlation, id);
    let Ok(Response::Fetch(r)) = response else { panic!("{response:?}") };
    let mut answered = 0;
    for p in &r.topics[0].partitions {
        assert_eq!(p.error_code, ErrorCode::None);
        let mut rest = &p.records[..];
        let mut expected = produced[p.partition.0 as usize].iter();
        let mut next_offset = 0u64;
        while !rest.is_empty() {
            let view = BatchView::parse(rest).expect("a whole, valid batch");
            let len = view.total_len();
            assert_eq!(view.base_offset() as u64, next_offset, "partition {}", p.partition.0);
            let batch = expected.next().expect("no more batches than produced");
            // Bytes 0..8 hold the base offset and 12..16 the leader epoch, which the broker sets.
            assert_eq!(len, batch.len());
            assert_eq!(rest[8..12], batch[8..12]);
            assert_eq!(rest[16..len], batch[16..], "partition {} batch at offset {next_offset}", p.partition.0);
            next_offset += 16;
            answered += len;
            rest = &rest[len..];
        }
        assert!(expected.next().is_none(), "partition {}: every batch in the answer", p.partition.0);
    }
    assert!(answered > 5 << 20, "the answer carried {answered} bytes of records");
    // The connection goes on: the next answer starts where this one ended.
    let Ok(Response::Fetch(r)) = slow.call(Request::Fetch(fetch_from_start("big", 2, 0, 0, 1 << 10))) else {
        panic!("second fetch")
    };
    assert!(r.topics[0].partitions.iter().any(|p| !p.records.is_empty()), "at least one batch even over max_bytes");
    drop((client, slow));
    assert!(broker.stop().success());
}

#[test]
fn fetch_waits_for_min_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), free_port());
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "mb", 2), ErrorCode::None);
    let request = |min_bytes: u32, max_wait_ms: u32| fetch_from_start("mb", 2, max_wait_ms, min_bytes, 1 << 20);
    let one = batch(0, 1).len() as u32;
    let producer = {
        let addr = broker.addr;
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(produce(&mut c, "mb", 0, batch(0, 1)).0, ErrorCode::None);
            std::thread::sleep(Duration::from_millis(400));
            assert_eq!(produce(&mut c, "mb", 1, batch(1, 1)).0, ErrorCode::None);
        })
    };
    let started = Instant::now();
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(request(one + 1, 10_000))) else { panic!("fetch failed") };
    let waited = started.elapsed();
    producer.join().unwrap();
    let sizes: Vec<usize> = r.topics[0].partitions.iter().map(|p| p.records.len()).collect();
    assert!(sizes.iter().all(|&n| n > 0), "both appends are in the answer: {sizes:?}");
    assert!(waited >= Duration::from_millis(550), "one batch was not min_bytes: it waited for the second ({waited:?})");
    assert!(waited < Duration::from_secs(5), "answered when min_bytes was reached, not at max_wait ({waited:?})");

    // More than there is: the answer comes at max_wait with what there is.
    let started = Instant::now();
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(request(1 << 20, 500))) else { panic!("fetch failed") };
    let waited = started.elapsed();
    assert!(r.topics[0].partitions.iter().all(|p| !p.records.is_empty()));
    assert!(waited >= Duration::from_millis(450) && waited < Duration::from_secs(5), "{waited:?}");
    drop(client);
    assert!(broker.stop().success());
}

/// acks=1 under the default fsync.policy=always: the producer is answered once the batches are
/// written; the broker runs the fdatasync itself right away, so they become readable (committed)
/// without any acks=all append or flush to drive it.
#[test]
fn acks_leader_under_fsync_always_becomes_readable_without_an_acks_all_append() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), free_port());
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "a1", 2), ErrorCode::None);
    let mut sent = [Vec::new(), Vec::new()];
    for i in 0..10u32 {
        let p = i % 2;
        let records = batch(p, i);
        let answer = produce_with(&mut client, "a1", p, records.clone(), Acks::Leader, 10_000);
        assert_eq!(answer.error_code, ErrorCode::None);
        sent[p as usize].push(records);
    }
    let total: usize = sent.iter().flatten().map(Vec::len).sum();
    let started = Instant::now();
    let req = fetch_from_start("a1", 2, 10_000, total as u32, 1 << 20);
    let Ok(Response::Fetch(r)) = client.call(Request::Fetch(req)) else { panic!("fetch failed") };
    assert!(started.elapsed() < Duration::from_secs(5), "synced at once, not at max_wait: {:?}", started.elapsed());
    for (p, part) in r.topics[0].partitions.iter().enumerate() {
        assert_eq!(part.high_watermark, Offset(15), "partition {p}: 5 batches of 3 records committed");
        assert_eq!(part.records.len(), sent[p].iter().map(Vec::len).sum::<usize>(), "partition {p}");
    }
    drop(client);
    assert!(broker.stop().success());
}

/// A Produce whose partition is not appended within `timeout_ms` is answered REQUEST_TIMED_OUT
/// for it (the append goes on and may still land), and the connection keeps working. 6 batches of
/// ~1 MB with acks=all under fsync=always take 6 MB of O_DIRECT writes and 6 fdatasyncs: far
/// more than 1 ms on any disk.
#[test]
fn produce_times_out_per_partition_and_the_append_may_still_land() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), free_port());
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "slow", 1), ErrorCode::None);
    let big = |i: u8| {
        let mut b = BatchBuilder::new();
        b.push(1_700_000_000_000, None, Some(&vec![i; 1_000_000]), &[]);
        b.build()
    };
    let records: Vec<u8> = (0..6).flat_map(big).collect();
    let answer = produce_with(&mut client, "slow", 0, records, Acks::All, 1);
    assert_eq!(answer.error_code, ErrorCode::RequestTimedOut, "{answer:?}");
    assert_eq!(answer.base_offset, None);
    // The append was not cancelled: all six batches arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetch_all(&mut client, "slow", 0).len() < 6 {
        assert!(Instant::now() < deadline, "the timed-out append never landed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(produce(&mut client, "slow", 0, batch(0, 1)), (ErrorCode::None, Some(Offset(6))));
    drop(client);
    assert!(broker.stop().success());
}

/// A port something already listens on is refused with a clear error at start, for the native
/// and the Kafka listener: the shards bind with SO_REUSEPORT, which would otherwise let a second
/// broker share the port silently.
#[test]
fn a_port_in_use_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let native = free_port().to_string();
    for (listen, kafka) in
        [(taken_addr.clone(), "off".to_string()), (format!("127.0.0.1:{native}"), taken_addr.clone())]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--listen", &listen, "--kafka-listen", &kafka])
            .args(["--admin-listen", "127.0.0.1:0", "--memory", "256MiB"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started on a taken port: {stderr}");
        assert!(stderr.contains(&format!("cannot listen on {taken_addr}")), "{stderr}");
    }
    drop(taken);
}

/// `--preallocate-bytes`: by default the active segment's file has disk reserved ahead of its
/// data (64 KiB after one small batch); with 0 it holds only the block its data was written to.
#[test]
fn preallocation_reserves_disk_ahead_unless_turned_off() {
    use std::os::unix::fs::MetadataExt;
    for (extra, reserved_at_least, reserved_below) in
        [(&[][..], 64u64 << 10, u64::MAX), (&["--preallocate-bytes", "0"][..], 0, 8 << 10)]
    {
        let dir = tempfile::tempdir().unwrap();
        let broker = start_broker_with(dir.path(), free_port(), extra);
        let mut client = Client::connect(broker.addr);
        assert_eq!(create(&mut client, "pre", 1), ErrorCode::None);
        let answer = produce_with(&mut client, "pre", 0, batch(0, 1), Acks::All, 10_000);
        assert_eq!(answer.error_code, ErrorCode::None);
        let logs = dir.path().join("logs");
        let topic_dir = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("pre-"))
            .expect("the topic's directory");
        let segment = topic_dir.join("0").join(format!("{:020}.log", 0));
        let allocated = std::fs::metadata(&segment).unwrap().blocks() * 512;
        assert!(
            allocated >= reserved_at_least && allocated < reserved_below,
            "{extra:?}: {allocated} bytes allocated to {}",
            segment.display()
        );
        drop(client);
        assert!(broker.stop().success());
    }
}

/// Deleting a topic while producers append to it (rolling a segment every 20 ms) and retention
/// deletes its old segments: the deletion succeeds, no file of it is left, and the broker goes
/// on serving. (A last holder of a partition's log used to add a file after the directory was
/// listed for removal, and the deletion failed with "Directory not empty".)
#[test]
fn deleting_a_topic_under_load_removes_it_whole() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(dir.path(), free_port(), &["--maintenance-interval-ms", "10"]);
    let addr = broker.addr.to_string();
    let mut admin = keel_client::Client::connect(&addr, "admin").unwrap();
    let config = vec![("segment.ms".to_string(), "20".to_string()), ("retention.ms".to_string(), "40".to_string())];
    for round in 0..8 {
        let topic = format!("busy-{round}");
        admin.create_topic(&topic, 4, &config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..2)
            .map(|i| {
                let (addr, topic, stop) = (addr.clone(), topic.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut client = keel_client::Client::connect(&addr, &format!("producer-{i}")).unwrap();
                    let mut appended = 0u32;
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let p = n % 4;
                        // Refused once the topic is gone; the loop ends when told to.
                        if client.produce(&topic, p, Bytes::from(batch(p, n)), keel_client::Acks::Leader).is_ok() {
                            appended += 1;
                        }
                    }
                    appended
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        admin.delete_topic(&topic).unwrap_or_else(|e| panic!("round {round}: deleting {topic} under load: {e}"));
        stop.store(true, Ordering::Relaxed);
        let appended: u32 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        assert!(appended > 20, "round {round}: only {appended} appends before the deletion");
        let left: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&format!("{topic}-")))
            .collect();
        assert!(left.is_empty(), "round {round}: {left:?} left after deleting {topic}");
    }
    let topics: Vec<String> = admin.metadata(None).unwrap().into_iter().map(|t| t.name).collect();
    assert!(!topics.iter().any(|t| t.starts_with("busy-")), "every topic was deleted: {topics:?}");
    drop(admin);
    assert!(broker.stop().success());
}

/// A port that something else served a moment ago still has its connections closing
/// (TIME_WAIT) for a minute; the broker's listeners bind it anyway, as std's and most servers'
/// do (SO_REUSEADDR). Without it `keel serve` failed with "Address already in use".
#[test]
fn a_port_with_connections_still_closing_is_listened_on() {
    let port = free_port();
    {
        // A plain listener (SO_REUSEADDR, no SO_REUSEPORT) that closes its side of a
        // connection first: that side stays in TIME_WAIT on `port`.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(served);
        std::thread::sleep(Duration::from_millis(100));
        drop(client);
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = start_broker(tmp.path(), port);
    let mut client = Client::connect(broker.addr);
    assert_eq!(create(&mut client, "after-time-wait", 2), ErrorCode::None);
}
