//! `keel-bench produce | consume | e2e` against the real `keel serve` binary on loopback: each
//! subcommand runs briefly at small rates with `--json`, and the JSON object it prints is checked
//! (configuration echoed, records acknowledged, every acknowledged record consumed exactly once
//! and in order in e2e, latency percentiles present and ordered), over the native protocol
//! (keel://) and over the broker's Kafka listener (kafka://, through librdkafka). Also the exit
//! codes: 2 for a bad target, 1 for an unreachable broker.
//!
//! The broker binary is `$KEEL_BIN`, else `keel` next to `keel-bench` in the same target
//! directory (built by `cargo test --workspace`; alone: `cargo build --bin keel`).

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use keel_testkit::{free_port, Broker, BrokerConfig};
use serde_json::Value;

/// `keel serve` on a scratch data directory under the target directory; with `kafka`, its
/// Kafka listener on too. The binary is `keel` next to `keel-bench` unless `KEEL_BIN` says
/// otherwise.
fn start_broker(kafka: bool) -> Broker {
    let bin = keel_testkit::keel_bin(Some(&PathBuf::from(env!("CARGO_BIN_EXE_keel-bench")).with_file_name("keel")));
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "keel-bench-broker-{}-{}",
        std::process::id(),
        keel_testkit::free_port()
    ));
    let config = BrokerConfig::scratch(bin, data);
    if kafka { config.kafka() } else { config }.start()
}

fn target(broker: &Broker) -> String {
    format!("keel://{}", broker.addr)
}

fn kafka_target(broker: &Broker) -> String {
    format!("kafka://{}", broker.kafka_addr())
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel-bench")).args(args).output().expect("run keel-bench")
}

/// Runs keel-bench, expects success and exactly one JSON object on stdout.
fn bench_json(args: &[&str]) -> Value {
    let out = bench(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keel-bench {args:?} failed ({}):\n{stderr}\n{stdout}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line of JSON on stdout, got:\n{stdout}");
    let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert!(v.is_object());
    v
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

/// p50 ≤ p99 ≤ p999 (≤ p9999) ≤ max, with samples.
fn check_latency(v: &Value, key: &str) {
    let l = &v[key];
    let get = |k: &str| l[k].as_u64().unwrap_or_else(|| panic!("{key}.{k} missing in {v}"));
    let (p50, p99, p999, p9999, max) = (get("p50"), get("p99"), get("p999"), get("p9999"), get("max"));
    assert!(get("samples") > 0, "{key}: no samples in {v}");
    assert!(p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= p9999 && p9999 <= max, "{key} out of order: {l}");
}

/// The command configuration every result echoes.
fn check_config(v: &Value, kind: &str, topic: &str, partitions: u64) {
    assert_eq!(v["kind"], kind);
    assert_eq!(v["topic"], topic);
    assert_eq!(u(v, "partitions"), partitions);
    for key in ["target", "topic_config", "producers", "consumers", "record_bytes", "rate", "acks", "duration"] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert!(v["mb_per_s"].as_f64().is_some() && v["records_per_s"].as_f64().is_some(), "{v}");
}

/// An e2e run with drawn value sizes and compression: the codec and distribution echoed, every
/// acknowledged record read back exactly once, and MB/s / records/s (the bytes per record
/// counted) near `mean_bytes`, the value + key bytes a record averages.
fn check_sized_compressed(v: &Value, codec: &str, distribution: &str, mean_bytes: f64) {
    assert_eq!((v["compression"].as_str(), v["record_bytes"].is_null()), (Some(codec), true), "{v}");
    assert!(v["value_sizes"].as_str().unwrap().starts_with(distribution), "{v}");
    let acked = u(v, "records_acked");
    assert!(acked > 0 && u(v, "records_consumed") == acked, "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");
    let per_record = v["mb_per_s"].as_f64().unwrap() * 1e6 / v["records_per_s"].as_f64().unwrap();
    assert!(
        (per_record / mean_bytes - 1.0).abs() < 0.1,
        "{per_record:.0} bytes counted per record, not ~{mean_bytes:.0}: {v}"
    );
    let consumed = v["consume_mb_per_s"].as_f64().unwrap() * 1e6 / v["consume_records_per_s"].as_f64().unwrap();
    assert!((consumed / mean_bytes - 1.0).abs() < 0.1, "{consumed:.0} bytes per record consumed: {v}");
}

/// A fresh directory for a `run` test, with `toml` written to `w.toml` in it.
fn workload_file(test: &str, toml: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("keel-bench-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let workload = dir.join("w.toml");
    std::fs::write(&workload, toml).unwrap();
    (dir, workload)
}

const SHORT: [&str; 4] = ["--duration", "2s", "--warmup", "500ms"];

#[test]
fn subcommands_against_a_real_broker() {
    let broker = start_broker(false);
    let target = target(&broker);
    let t = target.as_str();

    // produce, closed loop, acks=1.
    let v = bench_json(
        &[
            &["produce", "--target", t, "--topic", "closed", "--partitions", "4", "--producers", "2"][..],
            &["--topic-config", "fsync.policy=never", "--record-bytes", "512", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    check_config(&v, "broker_produce", "closed", 4);
    assert_eq!(v["topic_config"]["fsync.policy"], "never");
    assert_eq!((v["acks"].as_str(), v["loop"].as_str(), v["rate"].is_null()), (Some("1"), Some("closed"), true));
    assert_eq!(v["topic_created"], true);
    assert!(u(&v, "records_acked") > 0 && u(&v, "records_acked") == u(&v, "records_sent"), "{v}");
    assert!(v["mb_per_s"].as_f64().unwrap() > 0.0, "{v}");
    check_latency(&v, "latency_us");

    // produce, open loop, acks=all, keyed; the topic exists now with the same shape.
    let v = bench_json(
        &[
            &["produce", "--target", t, "--topic", "closed", "--partitions", "4", "--rate", "2000"][..],
            &["--acks", "all", "--key-bytes", "8", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    check_config(&v, "broker_produce", "closed", 4);
    assert_eq!(v["topic_created"], false);
    assert_eq!((v["acks"].as_str(), v["loop"].as_str(), v["rate"].as_f64()), (Some("all"), Some("open"), Some(2000.0)));
    assert_eq!(u(&v, "records_not_sent"), 0, "{v}");
    // The schedule: 2000/s for 2.5 s (warmup included).
    let sent = u(&v, "records_sent");
    assert!((4900..=5100).contains(&sent), "{sent} records sent for 5000 scheduled: {v}");
    assert_eq!(u(&v, "records_acked"), sent);
    check_latency(&v, "latency_us");
    check_latency(&v, "send_delay_us");

    // e2e with each producer keeping to one shard's partitions (4 producers: a multiple of the
    // 1, 2 or 4 shards that can own 4 partitions): every record read once, in order.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "affine", "--partitions", "4", "--producers", "4"][..],
            &["--consumers", "2", "--rate", "4000", "--producer-partitions", "by-shard", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["producer_partitions"], "by-shard", "{v}");
    assert_eq!(u(&v, "records_consumed"), u(&v, "records_acked"), "{v}");
    assert!(u(&v, "records_acked") > 0, "{v}");
    check_latency(&v, "e2e_latency_us");
    let keyed = bench(
        &[
            &["produce", "--target", t, "--topic", "affine", "--partitions", "4", "--producers", "4"][..],
            &["--key-bytes", "8", "--producer-partitions", "by-shard", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert!(!keyed.status.success(), "by-shard with keys must be refused");
    assert!(String::from_utf8_lossy(&keyed.stderr).contains("keyless"), "{keyed:?}");

    // produce, acks=0: no latency figures.
    let v = bench_json(
        &[&["produce", "--target", t, "--topic", "fire", "--partitions", "2", "--acks", "0", "--json"][..], &SHORT]
            .concat(),
    );
    assert!(v["latency_us"].is_null(), "{v}");
    assert!(v.get("records_acked").is_none() && u(&v, "records_sent") > 0, "{v}");
    assert!(v["warnings"].to_string().contains("acks=0"), "{v}");

    // consume from the start, after a prefill.
    let v = bench_json(&[
        "consume",
        "--target",
        t,
        "--topic",
        "prefilled",
        "--partitions",
        "3",
        "--consumers",
        "2",
        "--prefill",
        "20MB",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--json",
    ]);
    check_config(&v, "broker_consume", "prefilled", 3);
    assert_eq!((u(&v, "consumers"), u(&v, "producers")), (2, 0));
    assert!(u(&v, "records_consumed") >= 20_000_000 / 1024, "{v}");
    assert_eq!(u(&v, "offset_gaps"), 0, "{v}");
    assert!(v["mb_per_s"].as_f64().unwrap() > 0.0, "{v}");

    // e2e, open loop: every acknowledged record read exactly once, in order.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "e2e", "--partitions", "3", "--producers", "2", "--consumers", "2"][..],
            &["--rate", "3000", "--record-bytes", "100", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    check_config(&v, "broker_e2e", "e2e", 3);
    let acked = u(&v, "records_acked");
    assert!(acked > 0, "{v}");
    assert_eq!(u(&v, "records_consumed"), acked, "{v}");
    let check = &v["verification"];
    assert_eq!(check["ok"], true, "{v}");
    for key in ["missing", "duplicates", "out_of_order", "offset_gaps", "offset_mismatches"] {
        assert_eq!(u(check, key), 0, "{key}: {v}");
    }
    assert_eq!(u(check, "expected"), acked);
    check_latency(&v, "latency_us");
    check_latency(&v, "e2e_latency_us");

    // e2e, closed loop with keys and acks=all.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "e2e-keyed", "--partitions", "4", "--consumers", "3"][..],
            &["--key-bytes", "12", "--acks", "all", "--batch-bytes", "16KiB", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert!(u(&v, "records_acked") > 0);
    assert_eq!(u(&v, "records_consumed"), u(&v, "records_acked"), "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");

    // e2e with drawn value sizes in zstd-compressed batches: the broker takes them, consumers
    // decompress and check every record, and MB/s counts the sizes actually sent.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "e2e-zstd", "--partitions", "3", "--consumers", "2"][..],
            &["--rate", "3000", "--record-bytes-dist", "lognormal:median=500,sigma=0.8,min=28,max=8KiB"],
            &["--compression", "zstd", "--key-bytes", "8", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    check_sized_compressed(&v, "zstd", "lognormal:", 8.0 + 500.0 * 0.32f64.exp());
    // Closed loop, fixed sizes (the templates) compressed.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "e2e-lz4", "--partitions", "2", "--consumers", "1"][..],
            &["--record-bytes", "300", "--compression", "lz4", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["compression"], "lz4", "{v}");
    assert!(u(&v, "records_acked") > 0 && u(&v, "records_consumed") == u(&v, "records_acked"), "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");

    // keel://: a group divides the partitions statically and commits the consumers' positions.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "e2e-group", "--partitions", "3", "--consumers", "2"][..],
            &["--rate", "3000", "--record-bytes", "100", "--group", "native-readers", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["group"], "native-readers", "{v}");
    assert_eq!(u(&v, "records_consumed"), u(&v, "records_acked"), "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");
    assert!(v["verification"].get("redelivered").is_none(), "no rebalances natively: {v}");

    // A topic that exists with another partition count is refused, not silently used.
    let out = bench(&["produce", "--target", t, "--topic", "e2e", "--partitions", "5", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists with 3 partitions"), "{out:?}");

    let status = broker.stop();
    assert!(status.success(), "keel serve exited with {status} after SIGTERM");
}

#[test]
fn kafka_target_against_a_real_broker() {
    let broker = start_broker(true);
    let target = kafka_target(&broker);
    let t = target.as_str();

    // produce, closed loop, acks=1: the topic is created through Kafka's CreateTopics.
    let v = bench_json(
        &[
            &["produce", "--target", t, "--topic", "k-closed", "--partitions", "4", "--producers", "2"][..],
            &["--topic-config", "fsync.policy=never", "--record-bytes", "512", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    check_config(&v, "broker_produce", "k-closed", 4);
    assert_eq!(v["target"], t);
    assert_eq!((v["acks"].as_str(), v["loop"].as_str()), (Some("1"), Some("closed")));
    assert_eq!(v["topic_created"], true);
    assert!(u(&v, "records_acked") > 0 && u(&v, "records_acked") == u(&v, "records_sent"), "{v}");
    assert!(v["mb_per_s"].as_f64().unwrap() > 0.0, "{v}");
    check_latency(&v, "latency_us");

    // produce, open loop, acks=all, keyed, into the existing topic.
    let v = bench_json(
        &[
            &["produce", "--target", t, "--topic", "k-closed", "--partitions", "4", "--rate", "2000"][..],
            &["--acks", "all", "--key-bytes", "8", "--linger", "1ms", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["topic_created"], false);
    let sent = u(&v, "records_sent");
    assert!((4900..=5100).contains(&sent), "{sent} records sent for 5000 scheduled: {v}");
    assert_eq!(u(&v, "records_acked"), sent, "{v}");
    check_latency(&v, "latency_us");
    check_latency(&v, "send_delay_us");

    // consume from the start, after a prefill over the Kafka protocol.
    let v = bench_json(&[
        "consume",
        "--target",
        t,
        "--topic",
        "k-prefilled",
        "--partitions",
        "3",
        "--consumers",
        "2",
        "--prefill",
        "5MB",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--json",
    ]);
    check_config(&v, "broker_consume", "k-prefilled", 3);
    assert!(u(&v, "records_consumed") >= 5_000_000 / 1024, "{v}");
    assert_eq!(u(&v, "offset_gaps"), 0, "{v}");

    // e2e, open loop: every acknowledged record read exactly once, in order, at its offset.
    let v =
        bench_json(
            &[
                &[
                    "e2e",
                    "--target",
                    t,
                    "--topic",
                    "k-e2e",
                    "--partitions",
                    "3",
                    "--producers",
                    "2",
                    "--consumers",
                    "2",
                ][..],
                &["--rate", "3000", "--record-bytes", "100", "--json"],
                &SHORT,
            ]
            .concat(),
        );
    check_config(&v, "broker_e2e", "k-e2e", 3);
    let acked = u(&v, "records_acked");
    assert!(acked > 0, "{v}");
    assert_eq!(u(&v, "records_consumed"), acked, "{v}");
    assert_eq!(u(&v["verification"], "expected"), acked, "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");
    check_latency(&v, "latency_us");
    check_latency(&v, "e2e_latency_us");

    // --kafka-producer wire: the native producer's requests over Kafka's protocol; what it was
    // acknowledged is read back (by librdkafka) exactly once at the offsets it was given.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "k-wire", "--partitions", "4", "--producers", "2"][..],
            &["--consumers", "2", "--rate", "4000", "--record-bytes", "200", "--kafka-producer", "wire", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["kafka_producer"], "wire", "{v}");
    let acked = u(&v, "records_acked");
    assert!(acked > 0 && u(&v, "records_consumed") == acked, "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");
    assert!(u(&v, "requests") > 0, "the wire producer counts its requests: {v}");
    assert!(v["client_cpu_s"].as_f64().unwrap() > 0.0, "{v}");

    // Drawn sizes compressed by librdkafka (compression.type), then by the wire producer.
    // Every codec through librdkafka (its consumers decompress too), snappy by the wire producer.
    for (topic, producer, codec) in [
        ("k-lz4", "librdkafka", "lz4"),
        ("k-gzip", "librdkafka", "gzip"),
        ("k-zstd", "librdkafka", "zstd"),
        ("k-snappy", "librdkafka", "snappy"),
        ("k-wire-snappy", "wire", "snappy"),
    ] {
        let v = bench_json(
            &[
                &["e2e", "--target", t, "--topic", topic, "--partitions", "3", "--consumers", "2"][..],
                &["--rate", "3000", "--record-bytes-dist", "uniform:min=28,max=2000", "--compression", codec],
                &["--kafka-producer", producer, "--json"],
                &SHORT,
            ]
            .concat(),
        );
        check_sized_compressed(&v, codec, "uniform:", 1014.0);
    }
    // A consumer group: librdkafka members subscribe and are rebalanced as they join; whatever
    // is read again from a committed offset counts as redelivered, and nothing may be missing.
    let v = bench_json(
        &[
            &["e2e", "--target", t, "--topic", "k-group", "--partitions", "4", "--consumers", "2"][..],
            &["--rate", "3000", "--record-bytes", "200", "--group", "bench-readers", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["group"], "bench-readers", "{v}");
    let acked = u(&v, "records_acked");
    assert!(acked > 0 && u(&v["verification"], "expected") == acked, "{v}");
    assert_eq!(v["verification"]["ok"], true, "{v}");
    let redelivered = u(&v["verification"], "redelivered");
    assert_eq!(u(&v, "records_consumed"), acked + redelivered, "{v}");

    // The wire producer sends zstd, which Keel's Kafka listener takes as it is.
    let v = bench_json(
        &[
            &["produce", "--target", t, "--topic", "k-wire-zstd", "--partitions", "3", "--kafka-producer", "wire"][..],
            &["--record-bytes-dist", "normal:mean=600,stddev=100,min=100,max=1100", "--compression", "zstd", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert_eq!(v["compression"], "zstd", "{v}");
    assert!(u(&v, "records_acked") > 0 && u(&v, "records_acked") == u(&v, "records_sent"), "{v}");
    let per_record = v["mb_per_s"].as_f64().unwrap() * 1e6 / v["records_per_s"].as_f64().unwrap();
    assert!((per_record - 600.0).abs() < 30.0, "{per_record:.0} bytes counted per record: {v}");
    // Closed loop: every request carries several partitions (librdkafka's carry one).
    let v = bench_json(
        &[
            &["produce", "--target", t, "--topic", "k-wire", "--partitions", "4", "--kafka-producer", "wire"][..],
            &["--record-bytes", "512", "--json"],
            &SHORT,
        ]
        .concat(),
    );
    assert!(u(&v, "records_acked") > 0 && u(&v, "records_acked") == u(&v, "records_sent"), "{v}");
    assert!(v["partitions_per_request"].as_f64().unwrap() > 1.5, "{v}");

    // Another partition count for an existing topic is refused here too.
    let out = bench(&["produce", "--target", t, "--topic", "k-e2e", "--partitions", "5", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists with 3 partitions"), "{out:?}");

    let status = broker.stop();
    assert!(status.success(), "keel serve exited with {status} after SIGTERM");
}

/// `--topics`: the load spread over several topics on every path (native client, librdkafka,
/// the wire producer, consumer groups on both protocols): every acknowledged record read back
/// once, and every partition of every topic holding exactly what was acknowledged in all.
#[test]
fn several_topics_on_every_path() {
    let broker = start_broker(true);
    let (keel, kafka) = (target(&broker), kafka_target(&broker));
    let mut admin = keel_client::Client::connect(&broker.addr.to_string(), "test-admin").unwrap();
    let runs: [(&str, &str, &[&str]); 5] = [
        ("m-native", &keel, &["--key-bytes", "8", "--key-distribution", "uniform", "--consumers", "4"]),
        ("m-group", &keel, &["--group", "m-readers", "--consumers", "2"]),
        ("m-rdkafka", &kafka, &["--consumers", "2"]),
        ("m-wire", &kafka, &["--kafka-producer", "wire", "--consumers", "2"]),
        ("m-kgroup", &kafka, &["--group", "m-kreaders", "--consumers", "2"]),
    ];
    for (topic, target, extra) in runs {
        let v = bench_json(
            &[
                &["e2e", "--target", target, "--topic", topic, "--topics", "3", "--partitions", "2"][..],
                &["--producers", "2", "--rate", "3000", "--record-bytes", "100", "--json"],
                extra,
                &SHORT,
            ]
            .concat(),
        );
        assert_eq!((v["topic"].as_str(), u(&v, "topics"), u(&v, "partitions")), (Some(topic), 3, 2), "{v}");
        let acked = u(&v, "records_acked");
        assert!(acked > 0 && u(&v["verification"], "expected") == acked, "{topic}: {v}");
        assert_eq!(v["verification"]["ok"], true, "{topic}: {v}");
        let redelivered = v["verification"]["redelivered"].as_u64().unwrap_or(0);
        assert_eq!(u(&v, "records_consumed"), acked + redelivered, "{topic}: {v}");
        // What the broker holds: the three topics, every partition written, nothing else.
        let mut stored = 0;
        for i in 0..3 {
            let name = format!("{topic}-{i}");
            let info = admin.topic(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(info.partitions.len(), 2, "{name}");
            for p in &info.partitions {
                assert!(p.high_watermark > 0, "{name}/{} got no record: {v}", p.partition);
                stored += p.high_watermark;
            }
        }
        assert_eq!(stored, acked, "{topic}: the topics hold what was acknowledged");
        assert!(admin.topic(topic).is_err(), "no topic named {topic} itself");
    }
    // The native group committed its positions in every topic.
    let committed = admin.fetch_committed("m-readers", None).unwrap();
    for i in 0..3 {
        let name = format!("m-group-{i}");
        assert_eq!(committed.iter().filter(|c| c.0 == name).count(), 2, "{name}: {committed:?}");
    }
    // More consumers than partitions in all is refused.
    let out = bench(&["e2e", "--target", &keel, "--topics", "2", "--partitions", "2", "--consumers", "5"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the 4 partitions"), "{out:?}");
    drop(admin);
    let status = broker.stop();
    assert!(status.success(), "keel serve exited with {status} after SIGTERM");
}

/// `keel-bench run` with a workload file against both listeners of one broker, with the
/// baselines, then `compare` of the result with itself: the result files exist and hold
/// non-zero, consistent figures.
#[test]
fn run_a_workload_against_both_listeners_and_compare() {
    let broker = start_broker(true);
    let (dir, workload) = workload_file(
        "run",
        r#"
name = "smoke"
description = "a short keyed e2e run"
duration = "3s"
warmup = "500ms"
[topic]
partitions = 4
config = { "fsync.policy" = "never" }
[records]
value_bytes = 200
key_bytes = 8
keys = "zipf"
key_count = 100
[producers]
count = 2
rate = 4000
[consumers]
count = 2
paused_for = "1500ms"
"#,
    );
    std::fs::create_dir_all(dir.join("disk")).unwrap();
    let out = dir.join("out");
    let (native, kafka) = (target(&broker), kafka_target(&broker));
    let run = bench(&[
        "run",
        workload.to_str().unwrap(),
        "--target",
        &native,
        "--target",
        &kafka,
        "--out",
        out.to_str().unwrap(),
        "--disk-dir",
        dir.join("disk").to_str().unwrap(),
        "--disk-secs",
        "0.5",
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run:?}\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains(&native) && stdout.contains(&kafka), "the summary table names both: {stdout}");

    let result: Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["kind"], "run");
    assert_eq!(result["workload"]["name"], "smoke");
    // All of this machine's CPUs: the disk baseline's pinned executor must not confine the load
    // threads started after it.
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(result["machine"]["cpus"].as_u64(), Some(cpus), "{}", result["machine"]);
    assert!(result["baselines"]["net"]["mb_per_s"].as_f64().unwrap() > 0.0);
    let disk = &result["baselines"]["disk"];
    assert!(disk["mb_per_s"].as_f64().unwrap() > 0.0);
    // Both latency floors, each from its own 2000 samples: durable appends and plain writes.
    for floor in ["fsync_latency_us", "write_latency_us"] {
        assert_eq!(disk[floor]["samples"].as_u64(), Some(2000), "{floor}: {disk}");
        assert!(disk[floor]["p50"].as_u64().unwrap() > 0, "{floor}: {disk}");
    }
    assert_eq!(disk["write_latency_bytes"].as_u64(), Some(65536), "{disk}");
    let targets = result["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    // Each target says what it is: Keel's version natively; over Kafka's protocol (which has no
    // version) the API ranges it serves.
    assert_eq!(targets[0]["broker"]["version"].as_str(), Some(env!("CARGO_PKG_VERSION")), "{}", targets[0]);
    let kafka_apis = &targets[1]["broker"]["api_versions"];
    assert_eq!(kafka_apis["Produce"][0].as_i64(), Some(3), "{}", targets[1]);
    assert!(kafka_apis["Fetch"][1].as_i64().unwrap() >= 4, "{}", targets[1]);
    for (t, url) in targets.iter().zip([&native, &kafka]) {
        assert_eq!(&t["target"], url.as_str());
        assert_eq!(t["ok"], true, "{t}");
        let r = &t["result"];
        assert_eq!(r["kind"], "broker_e2e");
        assert_eq!((r["key_distribution"].as_str(), r["consumers_paused_s"].as_f64()), (Some("zipf"), Some(1.5)));
        // A drained run: every acknowledged record was consumed, exactly once.
        let acked = u(r, "records_acked");
        assert!(acked > 10_000, "{r}");
        assert_eq!(u(r, "records_consumed"), acked, "{r}");
        assert_eq!(r["verification"]["ok"], true, "{r}");
        assert!(r["client_cpu_s"].as_f64().unwrap() > 0.0, "each target's own CPU: {r}");
        check_latency(r, "latency_us");
        check_latency(r, "e2e_latency_us");
        // The catch-up: records sent before the consumers started waited for them.
        assert!(u(&r["e2e_latency_us"], "max") >= 900_000, "{}", r["e2e_latency_us"]);
        let curve = r["latency_curve_us"].as_array().unwrap();
        assert!(curve.len() > 10 && curve.last().unwrap()[0] == 100.0, "{curve:?}");
        let series = r["series"].as_array().unwrap();
        assert!(series.len() >= 3, "{series:?}");
        let measured: Vec<&Value> = series.iter().filter(|s| s["measured"] == true).collect();
        assert!(measured.len() >= 2, "{series:?}");
        // ~4000 records/s offered: each measured second produced about that many.
        for s in &measured {
            let rps = s["produced_records_per_s"].as_f64().unwrap();
            assert!((2000.0..6000.0).contains(&rps), "{s}");
            assert!(s["ack_p99_us"].as_u64().unwrap() > 0, "{s}");
        }
        let consumed: f64 = series.iter().map(|s| s["consumed_records_per_s"].as_f64().unwrap()).sum();
        assert!(consumed > 0.0, "{series:?}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("{native}: keel {}", env!("CARGO_PKG_VERSION"))), "{report}");
    assert!(report.contains(&native) && report.contains(&kafka) && report.contains("of disk"), "{report}");
    for svg in ["latency.svg", "e2e-latency.svg", "throughput.svg", "p99.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(text.starts_with("<svg") || text.starts_with("<?xml"), "{svg}");
        assert!(text.contains(&native) && text.contains(&kafka), "{svg} has a line per target");
        assert!(report.contains(svg), "report.md links {svg}");
    }

    // compare: a result against itself is 1.0 everywhere.
    let path = out.join("result.json");
    let v = bench_json(&["compare", path.to_str().unwrap(), path.to_str().unwrap(), "--json"]);
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.len() >= 2 * 10, "{v}");
    assert!(rows.iter().all(|r| r["ratio"].as_f64().is_none_or(|x| (x - 1.0).abs() < 1e-12)), "{v}");
    assert!(rows.iter().any(|r| r["figure"] == "MB/s as a share of the disk baseline"), "{v}");

    // A target that is not there fails the run (exit 1) but the others are still reported.
    let dead = format!("keel://127.0.0.1:{}", free_port());
    let out2 = dir.join("out2");
    let run = bench(&[
        "run",
        workload.to_str().unwrap(),
        "--target",
        &dead,
        "--target",
        &native,
        "--out",
        out2.to_str().unwrap(),
        "--no-baselines",
        "--duration",
        "2s",
        "--quiet",
    ]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(out2.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["targets"][0]["ok"], false);
    assert!(result["targets"][0]["error"].as_str().unwrap().contains("cannot reach"), "{result}");
    assert_eq!(result["targets"][1]["ok"], true, "{result}");

    let status = broker.stop();
    assert!(status.success(), "keel serve exited with {status} after SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A workload in phases — steady, then a backlog (faster, consumers paused), then a drain (no
/// producing, consumers catching up) — against both listeners: each phase's figures show what
/// it asked for, and every acknowledged record is still read exactly once.
#[test]
fn a_workload_in_phases() {
    let broker = start_broker(true);
    let (dir, workload) = workload_file(
        "phases",
        r#"
name = "phased"
warmup = "1s"
[topics]
count = 2
partitions = 2
[records]
value_bytes = 100
[producers]
count = 2
rate = 1000
[consumers]
count = 2
[[phases]]
name = "steady"
duration = "2s"
[[phases]]
name = "backlog"
duration = "2s"
rate = 2000
consumers = "paused"
[[phases]]
name = "drain"
duration = "2s"
rate = 0
"#,
    );
    let out = dir.join("out");
    let (native, kafka) = (target(&broker), kafka_target(&broker));
    let args = ["run", workload.to_str().unwrap(), "--target", &native, "--target", &kafka];
    let run = bench(&[&args[..], &["--out", out.to_str().unwrap(), "--no-baselines", "--quiet"]].concat());
    assert!(run.status.success(), "{run:?}\n{}", String::from_utf8_lossy(&run.stderr));
    let result: Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    for t in result["targets"].as_array().unwrap() {
        let r = &t["result"];
        assert_eq!(t["ok"], true, "{t}");
        let acked = u(r, "records_acked");
        // 1 s of warmup and 2 s at 1000/s, 2 s at 2000/s, 2 s at 0.
        assert!((6_950..=7_000).contains(&acked), "{acked} records: {r}");
        assert_eq!(u(r, "records_consumed"), acked, "{r}");
        assert_eq!(r["verification"]["ok"], true, "{r}");
        let phases = r["phases"].as_array().unwrap();
        let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["steady", "backlog", "drain"], "{r}");
        let spans: Vec<(u64, u64)> = phases.iter().map(|p| (u(p, "from_s"), u(p, "to_s"))).collect();
        assert_eq!(spans, [(1, 3), (3, 5), (5, 7)], "the warmup is left out of the first phase");
        let (steady, backlog, drain) = (&phases[0], &phases[1], &phases[2]);
        let rate = |p: &Value, key: &str| p[key].as_f64().unwrap();
        assert_eq!((backlog["consumers"].as_str(), rate(backlog, "offered_records_per_s")), (Some("paused"), 2000.0));
        // Records acknowledged and read in each phase (histograms kept by the second they
        // completed in): 2 s at 1000/s, 2 s at 2000/s while the consumers are paused, then none
        // produced while they read the backlog. (Bounds allow for a loaded machine, where
        // acknowledgements and reads run late into the next phase: a stall in the warmup moves
        // up to its 1000 records into the steady phase, one in a phase moves some of its own
        // into the next.)
        let acked = |p: &Value| p["ack_latency_us"]["samples"].as_u64().unwrap_or(0);
        let read = |p: &Value| p["e2e_latency_us"]["samples"].as_u64().unwrap_or(0);
        assert!((1_500..=3_000).contains(&acked(steady)), "{steady}");
        assert!((2_500..=6_000).contains(&acked(backlog)) && acked(backlog) > acked(steady), "{backlog}");
        assert!(acked(drain) < 2_500, "only the backlog's last acknowledgements: {drain}");
        let window = acked(steady) + acked(backlog) + acked(drain);
        assert!((5_500..=7_000).contains(&window), "{window} acknowledged in the phases: {phases:?}");
        assert!(read(backlog) < 200, "paused consumers read (nearly) nothing: {backlog}");
        assert!(read(drain) > 2_000, "the drain reads the backlog: {drain}");
        // The per-second throughput samples are read by a thread as each second ends: on a
        // loaded machine a moment late, so a fast drain may show up in the backlog's last second.
        // Only what is certain is checked: the producers' rate in the steady phase.
        assert!((500.0..1_500.0).contains(&rate(steady, "produced_records_per_s")), "{phases:?}");
        // Records of the backlog waited for the drain (about 1 s at the median); the steady
        // phase's waited less.
        let waited = u(&drain["e2e_latency_us"], "p50");
        assert!(waited > 300_000, "{drain}");
        assert!(u(&steady["e2e_latency_us"], "p50") < waited, "{steady}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Phases") && report.contains("| backlog | 3–5 | 2000 | paused |"), "{report}");
    // --duration cannot shorten a phased workload.
    let out = bench(&[&args[..4], &["--duration", "1s", "--no-baselines"]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration does not apply"), "{out:?}");
    let status = broker.stop();
    assert!(status.success(), "keel serve exited with {status} after SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_targets_and_unreachable_brokers() {
    let out = bench(&["produce", "--target", "amqp://127.0.0.1:5672", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"), "{out:?}");

    let out = bench(&["e2e", "--target", "127.0.0.1:9092"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Nothing listens on a port that was just free (below the ephemeral range).
    let port = free_port();
    let out = bench(&["produce", "--target", &format!("keel://127.0.0.1:{port}"), "--duration", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "no JSON for a failed run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the broker"), "{out:?}");

    // The same over the Kafka protocol.
    let out = bench(&["produce", "--target", &format!("kafka://127.0.0.1:{port}"), "--duration", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "no JSON for a failed run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the broker"), "{out:?}");
}

/// A process the system stops (SIGSTOP, then SIGCONT) does what a virtual machine frozen by its
/// host does to every thread at once: keel-bench's stall watchdog must report the stretch, in the
/// window's figures, in the per-second series and as a warning, and the run must still verify.
#[test]
fn a_stopped_machine_is_reported_as_stalls() {
    use std::io::{BufRead, BufReader};
    let broker = start_broker(false);
    let target = target(&broker);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args(["e2e", "--target", &target, "--topic", "stalls", "--partitions", "2", "--consumers", "1"])
        .args(["--rate", "2000", "--record-bytes", "100", "--warmup", "1s", "--duration", "4s"])
        .args(["--report-interval", "200ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keel-bench");
    let pid = child.id() as libc::pid_t;
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    // The first progress line of the measurement window: stop the whole process there for 400 ms.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let measuring = line.contains(" measuring]");
        seen.push(line);
        if measuring {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains(" measuring]")), "no progress line in the window: {seen:?}");
    const STOPPED: Duration = Duration::from_millis(400);
    // SAFETY: plain syscalls on the pid of a child we have not reaped.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(STOPPED);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Drain stderr beside the wait for stdout, so neither pipe can fill up and block the child.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());
    let out = child.wait_with_output().unwrap();
    let rest = rest.join().unwrap();
    assert!(out.status.success(), "keel-bench failed ({}): {seen:?} {rest:?}", out.status);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    let m = &v["machine_stalls"];
    let ms = |key: &str| m[key].as_f64().unwrap_or_else(|| panic!("machine_stalls.{key} in {m}"));
    // The stop's whole length lies in the window (it began after the window's first progress
    // line, and the window lasts 4 s); timer slack and scheduling add a little.
    let stopped_ms = STOPPED.as_secs_f64() * 1e3;
    assert!(ms("longest_ms") >= stopped_ms * 0.95, "{m}");
    assert!(ms("stalled_ms") >= stopped_ms * 0.95, "{m}");
    assert!(u(m, "count") >= 1, "{m}");
    let share = ms("share");
    assert!((share - ms("stalled_ms") / 4000.0).abs() < 0.01, "share of a 4 s window: {m}");
    let warned = v["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("the machine stalled"));
    assert!(warned, "{}", v["warnings"]);
    // The per-second series holds the same stretch, split over the seconds it spans.
    let series = v["series"].as_array().unwrap();
    let in_series: f64 = series.iter().map(|s| s["stalled_ms"].as_f64().expect("stalled_ms per second")).sum();
    assert!(in_series >= stopped_ms * 0.95, "{in_series} ms in the series");
    assert!(series.iter().all(|s| s["stalled_ms"].as_f64().unwrap() <= 1000.0), "{series:?}");
    // The progress lines after the stop say so too.
    let in_lines: u64 = rest
        .iter()
        .filter_map(|l| l.split("; machine stalled ").nth(1)?.strip_suffix(" ms")?.parse::<u64>().ok())
        .sum();
    assert!(in_lines as f64 >= stopped_ms * 0.95, "{in_lines} ms in the progress lines: {rest:?}");
    // Stopping the client loses nothing.
    assert_eq!(v["verification"]["ok"], true, "{}", v["verification"]);
    drop(broker);
}
