//! Prometheus metrics on the admin listener (`GET /metrics`, OpenMetrics text, which Prometheus
//! scrapes natively).
//!
//! The data path never takes a lock for metrics: each shard owns one [`ShardMetrics`] of plain
//! atomics that only its thread writes (relaxed stores; nothing else orders on them). The admin
//! server runs on its own thread, outside the shards, and reads them at scrape time through
//! [`BrokerCollector`], a `prometheus-client` collector.
//!
//! Per-partition figures (log start/end, committed offsets per group and the lag between the two)
//! would cost an atomic per partition and per group on every append; instead each shard publishes
//! a [`ShardSnapshot`] of them once per [`SNAPSHOT_INTERVAL`], and a scrape reads the latest
//! snapshots. Those figures are up to one interval old; the counters and histograms are live.

use std::{
    collections::HashMap,
    fmt,
    io::Read,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use keel_protocol::ApiKey;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use tracing::{info, warn};

/// How often shards publish per-partition and per-group figures.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// Upper bounds of the request latency buckets, in microseconds (the last bucket is +Inf).
const LATENCY_BUCKETS_US: [u64; 16] =
    [50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 25_000, 100_000, 500_000, 2_000_000];

/// APIs counted, by wire key (index = key).
const APIS: usize = keel_protocol::api::SUPPORTED.len();

/// A fixed-bucket latency histogram written by one thread and read by another.
#[derive(Default)]
pub struct LatencyHistogram {
    /// Count of observations at or below each bound of [`LATENCY_BUCKETS_US`] but above the
    /// previous bound; the extra last slot counts those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// `(upper bound in seconds, count in that bucket alone)` pairs, +Inf last (the encoder
    /// makes them cumulative); sum in seconds; count.
    fn buckets(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(LATENCY_BUCKETS_US.len() + 1);
        for (i, slot) in self.buckets.iter().enumerate() {
            let n = slot.load(Relaxed);
            total += n;
            let bound = LATENCY_BUCKETS_US.get(i).map_or(f64::INFINITY, |&us| us as f64 / 1e6);
            out.push((bound, n));
        }
        // The count is the buckets' total, so `_count` always equals the `+Inf` bucket even when
        // a request lands mid-scrape.
        (out, self.sum_us.load(Relaxed) as f64 / 1e6, total)
    }
}

/// Live figures of one shard; written only by that shard's thread.
#[derive(Default)]
pub struct ShardMetrics {
    requests: [AtomicU64; APIS],
    request_errors: [AtomicU64; APIS],
    latency: [LatencyHistogram; APIS],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections: AtomicU64,
    /// Request and response bytes held by this shard's connections right now.
    pub in_flight_bytes: AtomicU64,
    pub partitions: AtomicU64,
    /// Bytes the partitions' caches of recent appends hold (published once a second).
    pub cache_bytes: AtomicU64,
    /// Fetch reads that went to the disk, and those of them that waited for a slot
    /// (`--history-reads-per-shard`).
    pub history_reads: AtomicU64,
    pub history_read_waits: AtomicU64,
    /// Calls this shard served (from itself or another shard): one per shard a client request
    /// touches, not one per partition, plus the node's own work (metadata, controller).
    pub shard_calls: AtomicU64,
}

impl ShardMetrics {
    /// One request served (errors: it was answered with a top-level error).
    pub fn request_done(&self, api: ApiKey, elapsed: Duration, failed: bool) {
        let i = api as usize;
        self.requests[i].fetch_add(1, Relaxed);
        if failed {
            self.request_errors[i].fetch_add(1, Relaxed);
        }
        self.latency[i].observe(elapsed);
    }
}

/// One partition's offsets as last published by its shard.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionFigures {
    pub topic: String,
    pub partition: u32,
    pub log_start: u64,
    pub log_end: u64,
    pub size_bytes: u64,
    /// fdatasyncs of appended data since the partition was opened.
    pub syncs: u64,
}

/// One group's committed offset for one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedFigure {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// What a shard publishes every [`SNAPSHOT_INTERVAL`].
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    pub partitions: Vec<PartitionFigures>,
    pub committed: Vec<CommittedFigure>,
}

/// Every shard's metrics; shared by the shards and the admin thread.
pub struct BrokerMetrics {
    pub shards: Vec<ShardMetrics>,
    snapshots: Vec<Mutex<Arc<ShardSnapshot>>>,
}

impl BrokerMetrics {
    pub fn new(shards: usize) -> Arc<BrokerMetrics> {
        Arc::new(BrokerMetrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            snapshots: (0..shards).map(|_| Mutex::new(Arc::default())).collect(),
        })
    }

    /// Replaces shard `shard`'s snapshot (called once per interval, not on the data path).
    pub fn publish(&self, shard: usize, snapshot: ShardSnapshot) {
        *self.snapshots[shard].lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    fn snapshots(&self) -> Vec<Arc<ShardSnapshot>> {
        self.snapshots.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }

    /// The whole exposition, as served on `/metrics`.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("keel");
        registry.register_collector(Box::new(BrokerCollector(self.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// Reads [`BrokerMetrics`] at scrape time.
pub struct BrokerCollector(pub Arc<BrokerMetrics>);

impl fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerCollector")
    }
}

fn shard_label(shard: usize) -> Vec<(&'static str, String)> {
    vec![("shard", shard.to_string())]
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, i64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = &self.0;
        let shards = || m.shards.iter().enumerate();
        let per_api = |pick: fn(&ShardMetrics, usize) -> u64| {
            shards().flat_map(move |(s, sm)| {
                keel_protocol::api::SUPPORTED.iter().map(move |(api, _, _)| {
                    let mut labels = shard_label(s);
                    labels.push(("api", format!("{api:?}")));
                    (labels, pick(sm, *api as usize))
                })
            })
        };
        counter(
            &mut encoder,
            "requests",
            "Requests served, by shard and API",
            per_api(|sm, i| sm.requests[i].load(Relaxed)),
        )?;
        counter(
            &mut encoder,
            "request_errors",
            "Requests answered with a top-level error, by shard and API",
            per_api(|sm, i| sm.request_errors[i].load(Relaxed)),
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "request_duration_seconds",
                "Time from a request's decoding to its response being ready, by shard and API",
                None,
                MetricType::Histogram,
            )?;
            for (s, sm) in shards() {
                for (api, _, _) in keel_protocol::api::SUPPORTED {
                    let (buckets, sum, count) = sm.latency[*api as usize].buckets();
                    if count == 0 {
                        continue;
                    }
                    let mut labels = shard_label(s);
                    labels.push(("api", format!("{api:?}")));
                    metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }
        counter(
            &mut encoder,
            "network_received_bytes",
            "Bytes read from client connections",
            shards().map(|(s, sm)| (shard_label(s), sm.bytes_in.load(Relaxed))),
        )?;
        counter(
            &mut encoder,
            "network_sent_bytes",
            "Bytes written to client connections",
            shards().map(|(s, sm)| (shard_label(s), sm.bytes_out.load(Relaxed))),
        )?;
        counter(
            &mut encoder,
            "history_reads",
            "Fetch reads of history (from disk, not the caches of recent appends)",
            shards().map(|(s, sm)| (shard_label(s), sm.history_reads.load(Relaxed))),
        )?;
        counter(
            &mut encoder,
            "history_read_waits",
            "History reads that waited for a slot (--history-reads-per-shard all taken)",
            shards().map(|(s, sm)| (shard_label(s), sm.history_read_waits.load(Relaxed))),
        )?;
        counter(
            &mut encoder,
            "shard_calls",
            "Calls served, from this shard or another (a client request makes one to each shard owning some of its partitions)",
            shards().map(|(s, sm)| (shard_label(s), sm.shard_calls.load(Relaxed))),
        )?;
        gauge(
            &mut encoder,
            "connections",
            "Open client connections",
            shards().map(|(s, sm)| (shard_label(s), sm.connections.load(Relaxed) as i64)),
        )?;
        gauge(
            &mut encoder,
            "in_flight_bytes",
            "Request and response bytes held by client connections",
            shards().map(|(s, sm)| (shard_label(s), sm.in_flight_bytes.load(Relaxed) as i64)),
        )?;
        gauge(
            &mut encoder,
            "cache_bytes",
            "Memory the partitions' caches of recent appends hold (published once a second)",
            shards().map(|(s, sm)| (shard_label(s), sm.cache_bytes.load(Relaxed) as i64)),
        )?;
        gauge(
            &mut encoder,
            "partitions",
            "Partitions owned",
            shards().map(|(s, sm)| (shard_label(s), sm.partitions.load(Relaxed) as i64)),
        )?;

        let snapshots = m.snapshots();
        let partition_labels =
            |p: &PartitionFigures| vec![("topic", p.topic.clone()), ("partition", p.partition.to_string())];
        let all_partitions = || snapshots.iter().flat_map(|s| s.partitions.iter());
        gauge(
            &mut encoder,
            "partition_log_start_offset",
            "First offset still kept (published once a second)",
            all_partitions().map(|p| (partition_labels(p), p.log_start as i64)),
        )?;
        gauge(
            &mut encoder,
            "partition_log_end_offset",
            "Offset the next record gets (published once a second)",
            all_partitions().map(|p| (partition_labels(p), p.log_end as i64)),
        )?;
        gauge(
            &mut encoder,
            "partition_size_bytes",
            "Bytes of the partition's segments (published once a second)",
            all_partitions().map(|p| (partition_labels(p), p.size_bytes as i64)),
        )?;
        counter(
            &mut encoder,
            "partition_syncs",
            "fdatasyncs of appended data since the partition was opened (published once a second)",
            all_partitions().map(|p| (partition_labels(p), p.syncs)),
        )?;
        let ends: HashMap<(&str, u32), u64> =
            all_partitions().map(|p| ((p.topic.as_str(), p.partition), p.log_end)).collect();
        let committed = || snapshots.iter().flat_map(|s| s.committed.iter());
        let group_labels = |c: &CommittedFigure| {
            vec![("group", c.group.clone()), ("topic", c.topic.clone()), ("partition", c.partition.to_string())]
        };
        gauge(
            &mut encoder,
            "group_committed_offset",
            "A consumer group's committed offset (published once a second)",
            committed().map(|c| (group_labels(c), c.offset as i64)),
        )?;
        gauge(
            &mut encoder,
            "group_lag",
            "Records between a group's committed offset and the partition's log end (published once a second)",
            committed().filter_map(|c| {
                let end = *ends.get(&(c.topic.as_str(), c.partition))?;
                Some((group_labels(c), end.saturating_sub(c.offset) as i64))
            }),
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own, outside the shards. Returns once the
/// listener is bound (so a bad address fails start-up) with a handle that stops it.
pub fn serve_admin(addr: SocketAddr, metrics: Arc<BrokerMetrics>) -> Result<AdminServer, String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?;
    let server = Arc::new(server);
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    info!(admin_listen = %bound, "serving metrics on http://{bound}/metrics");
    let thread = std::thread::Builder::new()
        .name("keel-admin".into())
        .spawn({
            let server = server.clone();
            move || {
                for mut request in server.incoming_requests() {
                    // Bodies are not used; read a little so a client that sent one is not reset.
                    let _ = request.as_reader().take(64 << 10).read_to_end(&mut Vec::new());
                    let response = match (request.method(), request.url().split('?').next().unwrap_or("")) {
                        (tiny_http::Method::Get, "/metrics") => {
                            let header = tiny_http::Header::from_bytes(
                                "Content-Type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .expect("static header");
                            tiny_http::Response::from_string(metrics.render()).with_header(header)
                        }
                        (tiny_http::Method::Get, "/") => tiny_http::Response::from_string("keel admin: GET /metrics\n"),
                        (tiny_http::Method::Get, _) => {
                            tiny_http::Response::from_string("not found; try /metrics\n").with_status_code(404)
                        }
                        _ => tiny_http::Response::from_string("only GET\n").with_status_code(405),
                    };
                    if let Err(e) = request.respond(response) {
                        warn!(error = %e, "admin response failed");
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    Ok(AdminServer { server, thread: Some(thread), addr: bound })
}

/// The running admin server; [`AdminServer::stop`] ends it.
pub struct AdminServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl AdminServer {
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_exposed() {
        let metrics = BrokerMetrics::new(2);
        metrics.shards[1].request_done(ApiKey::Produce, Duration::from_micros(80), false);
        metrics.shards[1].request_done(ApiKey::Produce, Duration::from_micros(900), false);
        metrics.shards[1].request_done(ApiKey::Produce, Duration::from_secs(10), true);
        metrics.shards[0].bytes_in.fetch_add(1234, Relaxed);
        metrics.publish(
            0,
            ShardSnapshot {
                partitions: vec![PartitionFigures {
                    topic: "t".into(),
                    partition: 3,
                    log_start: 0,
                    log_end: 100,
                    size_bytes: 4096,
                    syncs: 7,
                }],
                committed: vec![],
            },
        );
        metrics.publish(
            1,
            ShardSnapshot {
                partitions: vec![],
                committed: vec![CommittedFigure { group: "g".into(), topic: "t".into(), partition: 3, offset: 40 }],
            },
        );
        let text = metrics.render();
        let line = |needle: &str| {
            text.lines().find(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle} in\n{text}"))
        };
        assert!(line("keel_requests_total{shard=\"1\",api=\"Produce\"}").ends_with(" 3"));
        assert!(line("keel_request_errors_total{shard=\"1\",api=\"Produce\"}").ends_with(" 1"));
        assert!(line("keel_request_duration_seconds_bucket{le=\"0.0001\",shard=\"1\",api=\"Produce\"}").ends_with(" 1"));
        assert!(line("keel_request_duration_seconds_bucket{le=\"0.001\",shard=\"1\",api=\"Produce\"}").ends_with(" 2"));
        assert!(line("keel_request_duration_seconds_bucket{le=\"+Inf\",shard=\"1\",api=\"Produce\"}").ends_with(" 3"));
        assert!(line("keel_request_duration_seconds_count{shard=\"1\",api=\"Produce\"}").ends_with(" 3"));
        assert!(line("keel_network_received_bytes_total{shard=\"0\"}").ends_with(" 1234"));
        assert!(line("keel_partition_log_end_offset{topic=\"t\",partition=\"3\"}").ends_with(" 100"));
        assert!(line("keel_partition_syncs_total{topic=\"t\",partition=\"3\"}").ends_with(" 7"));
        assert!(line("keel_group_committed_offset{group=\"g\",topic=\"t\",partition=\"3\"}").ends_with(" 40"));
        assert!(line("keel_group_lag{group=\"g\",topic=\"t\",partition=\"3\"}").ends_with(" 60"));
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
