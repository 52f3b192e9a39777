//! `keel serve`: starts one shard per core, opens the partitions each shard owns, accepts
//! connections on every shard (SO_REUSEPORT; the native listener and, unless off, the Kafka one)
//! and answers the requests that other shards route to this one. Shard 0 is the controller: it changes topic metadata, persists it and tells every
//! shard.
//!
//! Shutdown (SIGTERM/SIGINT): shards stop accepting, give connections `shutdown_timeout_ms` to
//! finish their request, then close every log cleanly (flushed, clean-shutdown marker written).

use std::{
    cell::{Cell, RefCell},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{FromRawFd, IntoRawFd},
    path::PathBuf,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use keel_protocol::ErrorCode;
use keel_shards::{RuntimeConfig, Shard, ShardId};
use keel_storage::{batch::BatchView, io::join_all, AppendWait, FsyncPolicy, LogConfig};
use tracing::{error, info, warn};

use crate::{
    connection, kafka, maintenance,
    metadata::{self, Metadata, Topic, TopicId},
    metrics::{self as broker_metrics, BrokerMetrics, ShardMetrics},
    offsets::{self, partition_for_group, CommitKey, Committed, OffsetStore, OFFSETS_PARTITIONS, OFFSETS_TOPIC},
    partitions::{PartitionKey, Partitions},
    routing::{CommittedEntry, Failure, FetchPart, PartitionOffsets, ShardRequest, ShardResponse},
    serve_config::ServeConfig,
    topic_config::TopicConfig,
};

pub type BrokerShard = Shard<ShardRequest, ShardResponse>;

/// The Raft term stamped on appended batches (`partitionLeaderEpoch`) until replication exists:
/// one node, one term that never changes.
pub const SINGLE_NODE_TERM: u32 = 0;

/// Everything one shard owns. Lives on the shard's thread only.
pub struct ShardState {
    pub shard: BrokerShard,
    pub config: Arc<ServeConfig>,
    pub partitions: Partitions,
    /// This shard's copy of the controller's metadata (routing table).
    pub metadata: RefCell<Arc<Metadata>>,
    pub connections: Cell<usize>,
    /// The CPU each shard is pinned to (index = shard), for status.
    pub cores: Arc<Vec<usize>>,
    /// Latest committed offsets of the `__consumer_offsets` partitions this shard owns.
    pub offsets: RefCell<OffsetStore>,
    /// The controller's (shard 0) next idempotent producer id and the end of its reserved block.
    producer_ids: Cell<(i64, i64)>,
    /// Membership of the consumer groups whose offsets partition this shard owns.
    pub groups: crate::coordinator::GroupService,
    /// This shard's budget for request and response bytes held by its connections: half of its
    /// share of `--memory` (the other half is for the partitions' caches). A connection that
    /// cannot get its frame's bytes stops reading its socket until others give theirs back.
    pub request_memory: Rc<glommio::sync::Semaphore>,
    /// Every shard's metrics; this shard writes only its own entry.
    pub metrics: Arc<BrokerMetrics>,
    /// Serialises metadata changes on the controller: each reads the metadata, awaits the
    /// shards, then publishes, so two at once would lose one's change.
    controller: glommio::sync::Semaphore,
    /// Slots for fetch reads that go to the disk (`--history-reads-per-shard`): appends' writes
    /// queue behind at most this many history reads on the device.
    history_reads: glommio::sync::Semaphore,
    /// Partitions holding `acks=1` appends under `fsync=always` that are written but not yet
    /// fdatasync'ed (see [`ShardState::sync_soon`]).
    unsynced: PartitionsToVisit,
    /// Partitions whose zeroed runway is low (see [`ShardState::runway_soon`]).
    runways: PartitionsToVisit,
    /// Partitions under `fsync=interval` that appends left unsynced (see
    /// [`ShardState::interval_sync_soon`]).
    interval_unsynced: PartitionsToVisit,
    /// This shard's budget of warnings about bad client input (`client_warn!`).
    pub client_warnings: RefCell<crate::client_warnings::ClientWarnings>,
}

/// Partitions a background task of the shard should visit soon: each at most once however often
/// it is asked for, and a bell that wakes the task.
struct PartitionsToVisit {
    keys: RefCell<std::collections::HashSet<PartitionKey>>,
    /// Rung when `keys` gains an entry; one pending ring is enough (capacity 1).
    bell: (glommio::channels::local_channel::LocalSender<()>, glommio::channels::local_channel::LocalReceiver<()>),
}

impl PartitionsToVisit {
    fn new() -> Self {
        PartitionsToVisit { keys: RefCell::default(), bell: glommio::channels::local_channel::new_bounded(1) }
    }

    fn add(&self, key: PartitionKey) {
        if self.keys.borrow_mut().insert(key) {
            let _ = self.bell.0.try_send(()); // full: a ring is already pending
        }
    }

    /// Waits until some partition was added (None if the shard stops first), then takes them.
    async fn take(&self, shard: &BrokerShard) -> Option<Vec<PartitionKey>> {
        let rung = future::or(async { self.bell.1.recv().await.is_some() }, async {
            shard.stopping().await;
            false
        })
        .await;
        rung.then(|| self.take_now())
    }

    /// Takes the partitions added so far, without waiting.
    fn take_now(&self) -> Vec<PartitionKey> {
        self.keys.borrow_mut().drain().collect()
    }
}

impl ShardState {
    pub fn id(&self) -> ShardId {
        self.shard.id()
    }

    /// This shard's live metrics.
    pub fn stats(&self) -> &ShardMetrics {
        &self.metrics.shards[self.id().0 as usize]
    }

    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// Has the shard's sync task fdatasync `key`'s log soon: an `acks=1` append under
    /// `fsync=always` returns once written, and is readable only once durable, so someone must
    /// run the fdatasync the producer did not wait for.
    pub fn sync_soon(&self, key: PartitionKey) {
        self.unsynced.add(key);
    }

    /// Waits until some partition needs a sync (None if the shard stops first), then takes them.
    pub async fn next_unsynced(&self) -> Option<Vec<PartitionKey>> {
        self.unsynced.take(&self.shard).await
    }

    /// Has the shard's runway task refill `key`'s zeroed runway soon (`keel_storage::runway`):
    /// appends ask when they leave it low, and the zero writes run beside them.
    pub fn runway_soon(&self, key: PartitionKey) {
        self.runways.add(key);
    }

    /// Has the shard's interval-sync task watch `key`'s log: an append under `fsync=interval`
    /// left data that the log's interval must sync even if no append follows. Only such logs are
    /// visited; idle partitions cost the task nothing.
    pub fn interval_sync_soon(&self, key: PartitionKey) {
        self.interval_unsynced.add(key);
    }

    /// Waits until some `fsync=interval` log was appended to (None if the shard stops first),
    /// then takes them.
    pub async fn next_interval_unsynced(&self) -> Option<Vec<PartitionKey>> {
        self.interval_unsynced.take(&self.shard).await
    }

    /// The `fsync=interval` logs appended to since the last take, without waiting.
    pub fn interval_unsynced_now(&self) -> Vec<PartitionKey> {
        self.interval_unsynced.take_now()
    }

    /// Waits until some partition's runway is low (None if the shard stops first), then takes them.
    pub async fn next_runways(&self) -> Option<Vec<PartitionKey>> {
        self.runways.take(&self.shard).await
    }

    /// The owning shard of a partition, if the topic and partition exist.
    pub fn route(&self, topic: &str, partition: u32) -> Option<(PartitionKey, ShardId)> {
        let metadata = self.metadata.borrow();
        let t = metadata.topic(topic)?;
        let p = t.partitions.get(partition as usize)?;
        Some((PartitionKey { topic: t.id, partition }, ShardId(p.shard)))
    }
}

/// Fails if something keeps accepting connections on `addr` for 3 s. The shards bind it with
/// SO_REUSEPORT, which would let a second broker (or anything else binding it with SO_REUSEPORT
/// as the same user) share the port silently, each taking some of the connections. A connect
/// tells, where a plain bind would not: connections of a previous run that are still closing hold
/// the port (without SO_REUSEADDR) and would make a bind fail after every restart. The retries
/// are for a broker that was just killed: its io_uring keeps the listening socket open (and
/// accepting) for a moment after the process is gone.
fn check_free(addr: std::net::SocketAddr, what: &str) -> Result<(), String> {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    // Refused (or unreachable): nobody listens; a real problem shows at bind.
    while std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)).is_ok() {
        if std::time::Instant::now() >= deadline {
            return Err(format!("cannot listen on {addr}{what}: something already accepts connections there"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn metadata_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("metadata.json")
}

/// Runs the broker until SIGTERM/SIGINT. Errors are for the operator (printed, exit code 1).
pub fn serve(mut config: ServeConfig) -> Result<(), String> {
    check_free(config.listen, "")?;
    if let Some(addr) = config.kafka_listen {
        check_free(addr, " (Kafka; --kafka-listen HOST:PORT moves it, --kafka-listen off disables it)")?;
    }
    let online = online_cpus()?;
    let shards = config.shard_count(online.len());
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    // Absolute from here on: glommio's directory handles fail on relative paths (EBADF on fsync).
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve data directory {}: {e}", config.data_dir.display()))?;
    let path = metadata_path(&config.data_dir);
    let metadata = match metadata::store::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))? {
        Some(bytes) => Metadata::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Metadata::new(),
    };
    let placed_beyond = metadata.topics().flat_map(|t| &t.partitions).find(|p| p.shard as usize >= shards);
    if let Some(p) = placed_beyond {
        return Err(format!(
            "partitions are placed on shard {} but only {shards} shards are configured (--cores); \
             start with at least {} cores",
            p.shard,
            p.shard + 1
        ));
    }
    let cores: Vec<usize> = online.iter().copied().take(shards).collect();
    let runtime_config =
        RuntimeConfig { shards, pin: keel_shards::Pinning::Cores(cores.clone()), ..RuntimeConfig::unpinned(shards) };
    let config = Arc::new(config);
    let metadata = Arc::new(metadata);
    assert_eq!(cores.len(), shards, "config validation keeps shards <= online CPUs");
    let cores = Arc::new(cores);
    let open_files = raise_open_file_limit();
    let kafka_listen = config.kafka_listen.map_or_else(|| "off".to_string(), |a| a.to_string());
    info!(shards, data_dir = %config.data_dir.display(), listen = %config.listen, kafka_listen, open_files, "starting");
    let metrics = BrokerMetrics::new(shards);
    let admin = broker_metrics::serve_admin(config.admin_listen, metrics.clone())?;
    let runtime = keel_shards::start(runtime_config, {
        let (config, metadata, cores, metrics) = (config.clone(), metadata.clone(), cores.clone(), metrics.clone());
        move |shard| shard_main(shard, config.clone(), metadata.clone(), cores.clone(), metrics.clone())
    })
    .map_err(|e| format!("cannot start the shards: {e}"))?;
    let stop = runtime.stop_handle();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("keel-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                info!(signal, "shutting down");
                stop.stop();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let result = runtime.join().map_err(|e| format!("{e}"));
    signal_handle.close();
    admin.stop();
    result
}

/// Raises the soft limit on open files to the hard limit and returns it: every partition keeps
/// its active segment open (one descriptor each) besides connections, so the common soft default
/// of 1024 would cap a broker at about a thousand partitions.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    if limit.rlim_cur < 65536 {
        warn!(
            limit = limit.rlim_cur,
            "the open-file limit is low: each partition holds a file open; raise it (ulimit -n) for many partitions"
        );
    }
    limit.rlim_cur
}

/// The online CPUs, in the shard runtime's own view (the ids it will pin to).
pub fn online_cpus() -> Result<Vec<usize>, String> {
    match RuntimeConfig::per_online_cpu().map_err(|e| format!("cannot read the CPU topology: {e}"))?.pin {
        keel_shards::Pinning::Cores(cores) => Ok(cores),
        keel_shards::Pinning::None => Err("the shard runtime reported no CPUs to pin to".into()),
    }
}

async fn shard_main(
    shard: BrokerShard,
    config: Arc<ServeConfig>,
    metadata: Arc<Metadata>,
    cores: Arc<Vec<usize>>,
    metrics: Arc<BrokerMetrics>,
) -> Result<(), String> {
    let base = LogConfig {
        compaction_map_bytes: usize::try_from(config.compaction_map_bytes).unwrap_or(usize::MAX),
        preallocate_bytes: config.preallocate_bytes,
        runway_bytes: config.runway_bytes,
        ..LogConfig::default()
    };
    let partitions =
        Partitions::new(&config.data_dir, base).map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let state = Rc::new(ShardState {
        shard: shard.clone(),
        config: config.clone(),
        partitions,
        metadata: RefCell::new(metadata.clone()),
        connections: Cell::new(0),
        cores,
        offsets: RefCell::new(OffsetStore::default()),
        // Ids reserved by an earlier run may have been handed out: start after them.
        producer_ids: Cell::new((metadata.producer_ids_reserved(), metadata.producer_ids_reserved())),
        groups: crate::coordinator::GroupService::new(
            crate::groups::GroupConfig {
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms.min(i64::MAX as u64) as i64,
                ..crate::groups::GroupConfig::default()
            },
            // Unique per start and shard: a member id from before a restart is never reissued.
            format!("{:x}{}", now_ms(), shard.id().0),
        ),
        request_memory: Rc::new(glommio::sync::Semaphore::new(config.memory_per_shard(shard.all().count()) / 2)),
        metrics,
        controller: glommio::sync::Semaphore::new(1),
        history_reads: glommio::sync::Semaphore::new(config.history_reads_per_shard as u64),
        unsynced: PartitionsToVisit::new(),
        runways: PartitionsToVisit::new(),
        interval_unsynced: PartitionsToVisit::new(),
        client_warnings: RefCell::new(crate::client_warnings::ClientWarnings::new(std::time::Instant::now())),
    });
    for topic in metadata.topics() {
        let mine: Vec<u32> = topic.partitions.iter().filter(|p| p.shard == shard.id().0).map(|p| p.partition).collect();
        if !mine.is_empty() {
            open_partitions(&state, topic, &mine).await.map_err(|f| format!("topic {}: {}", topic.name, f.message))?;
        }
    }
    info!(shard = %shard.id(), partitions = state.partitions.count(), "shard ready");
    shard.serve({
        let state = state.clone();
        move |_from, request| {
            let state = state.clone();
            async move { handle_shard_request(&state, request).await }
        }
    });
    if shard.id() == ShardId(0) && metadata.topic(OFFSETS_TOPIC).is_none() {
        let configs = [("cleanup.policy".to_string(), "compact".to_string())];
        create_topic(&state, OFFSETS_TOPIC, OFFSETS_PARTITIONS, &configs)
            .await
            .map_err(|f| format!("cannot create {OFFSETS_TOPIC}: {}", f.message))?;
    }
    let background = maintenance::start(&state);
    let listener = TcpListener::bind(config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let kafka_listener = match config.kafka_listen {
        Some(addr) => Some(TcpListener::bind(addr).map_err(|e| format!("cannot listen (Kafka) on {addr}: {e}"))?),
        None => None,
    };
    let mut accepts = vec![glommio::spawn_local(accept_loop(listener, state.clone(), Protocol::Native)).detach()];
    if let Some(listener) = kafka_listener {
        accepts.push(glommio::spawn_local(accept_loop(listener, state.clone(), Protocol::Kafka)).detach());
    }
    shard.stopping().await;
    for accept in accepts {
        accept.cancel();
    }
    // Parked JoinGroup/SyncGroup calls answer now (NOT_COORDINATOR) rather than at the deadline.
    state.groups.shutdown();
    let deadline = std::time::Instant::now() + Duration::from_millis(config.shutdown_timeout_ms);
    while state.connections.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if state.connections.get() > 0 {
        warn!(shard = %shard.id(), connections = state.connections.get(), "closing connections still busy at the deadline");
    }
    // Background tasks see the stop and end after the partition they are on; one that is
    // still compacting at the deadline is dropped (compaction is restartable: recovery
    // removes its unfinished files).
    for mut task in background {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(100));
        let finished = future::or(async { (&mut task).await.is_some() }, async {
            glommio::timer::sleep(remaining).await;
            false
        })
        .await;
        if !finished {
            task.cancel();
            future::yield_now().await; // let the executor drop it and its log handles
        }
    }
    state.partitions.close_all().await;
    info!(shard = %shard.id(), "shard stopped");
    Ok(())
}

/// The protocol a listener speaks. Both kinds of connection count against the same
/// per-shard limit and draw on the same memory budget.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Native,
    Kafka,
}

async fn accept_loop(listener: TcpListener, state: Rc<ShardState>, protocol: Protocol) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if state.connections.get() >= state.config.max_connections_per_shard {
            warn!(shard = %state.id(), "connection limit reached; closing a new connection");
            drop(stream);
            continue;
        }
        serve_connection(&state, stream, protocol, BytesMut::new());
    }
}

/// Serves a client connection on this shard, counted in its connections until it closes;
/// `leftover`: bytes already read from it (by the shard it moved from).
fn serve_connection(state: &Rc<ShardState>, stream: TcpStream, protocol: Protocol, leftover: BytesMut) {
    state.connections.set(state.connections.get() + 1);
    state.stats().connections.store(state.connections.get() as u64, Relaxed);
    let state = state.clone();
    glommio::spawn_local(async move {
        match protocol {
            Protocol::Native => connection::run(stream, &state, leftover).await,
            Protocol::Kafka => kafka::run(stream, &state).await,
        }
        state.connections.set(state.connections.get() - 1);
        state.stats().connections.store(state.connections.get() as u64, Relaxed);
    })
    .detach();
}

/// Serves one request routed to this shard.
async fn handle_shard_request(state: &Rc<ShardState>, request: ShardRequest) -> ShardResponse {
    state.stats().shard_calls.fetch_add(1, Relaxed);
    match request {
        ShardRequest::AdoptConnection { socket, leftover } => {
            if state.shard.is_stopping() {
                return ShardResponse::Done(Err(Failure::new(ErrorCode::BrokerShuttingDown, "shard stopping")));
            }
            // SAFETY: `socket` is a connected TCP socket this process owns; the stream takes it over.
            let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
            serve_connection(state, stream, Protocol::Native, leftover);
            ShardResponse::Done(Ok(()))
        }
        ShardRequest::Produce { parts, term, wait } => {
            let appends = parts.into_iter().map(|(key, records)| produce(state, key, records, term, wait));
            ShardResponse::Produced(join_all(appends.collect()).await)
        }
        ShardRequest::Fetch { parts } => {
            let reads = parts.into_iter().map(|FetchPart { key, offset, max_bytes }| async move {
                match fetch(state, key, offset, max_bytes, 0).await {
                    Ok((bytes, offsets)) => (Ok(bytes), Some(offsets)),
                    Err(f) => (Err(f), state.partitions.get(key).map(|log| offsets_of(&log))),
                }
            });
            ShardResponse::Fetched(join_all(reads.collect()).await)
        }
        ShardRequest::AwaitData { parts, max_wait_ms } => {
            let waits = parts.into_iter().map(|(key, from)| async move {
                fetch(state, key, from, 1, max_wait_ms).await.is_ok_and(|(bytes, _)| !bytes.is_empty())
            });
            ShardResponse::DataArrived(connection::first_true(waits.collect()).await)
        }
        ShardRequest::ListOffset { key, timestamp } => ShardResponse::Offset(list_offset(state, key, timestamp).await),
        ShardRequest::DeleteRecords { key, offset } => {
            ShardResponse::RecordsDeleted(delete_records(state, key, offset).await)
        }
        ShardRequest::Offsets { keys } => ShardResponse::Offsets(
            keys.into_iter()
                .map(|key| state.partitions.get(key).map(|log| offsets_of(&log)).ok_or(Failure::unknown_partition(key)))
                .collect(),
        ),
        ShardRequest::OpenPartitions { topic, partitions } => {
            ShardResponse::Done(open_partitions(state, &topic, &partitions).await)
        }
        ShardRequest::ReconfigurePartitions { topic, partitions } => {
            state.partitions.reconfigure(&topic, &partitions);
            ShardResponse::Done(Ok(()))
        }
        ShardRequest::RemovePartitions { topic, partitions } => {
            ShardResponse::Done(state.partitions.remove(&topic, &partitions).await.map_err(Failure::from))
        }
        ShardRequest::CommitOffsets { group, commits, member } => {
            ShardResponse::Done(commit_offsets(state, group, commits, member).await)
        }
        ShardRequest::Group(op) => ShardResponse::Group(crate::coordinator::handle(state, op).await),
        ShardRequest::FetchCommitted { group, filter } => {
            ShardResponse::Committed(fetch_committed(state, &group, filter))
        }
        ShardRequest::ListGroups => ShardResponse::Groups(list_groups(state)),
        ShardRequest::ForgetTopicOffsets { topic } => ShardResponse::Done(forget_topic_offsets(state, &topic).await),
        ShardRequest::MetadataChanged(metadata) => {
            *state.metadata.borrow_mut() = metadata;
            ShardResponse::Done(Ok(()))
        }
        ShardRequest::CreateTopic { name, partitions, configs } => {
            ShardResponse::Done(create_topic(state, &name, partitions, &configs).await)
        }
        ShardRequest::DeleteTopic { name } => ShardResponse::Done(delete_topic(state, &name).await),
        ShardRequest::AlterConfigs { topic, set, remove } => {
            ShardResponse::Done(alter_configs(state, &topic, &set, &remove).await)
        }
        ShardRequest::AllocateProducerId => ShardResponse::ProducerId(allocate_producer_id(state).await),
        ShardRequest::Status => ShardResponse::Status {
            partitions: state.partitions.count() as u32,
            log_bytes: state.partitions.log_bytes(),
        },
    }
}

/// Opens partitions of `topic` on this shard; for the offsets topic, also replays their logs
/// into the in-memory store of latest commits.
async fn open_partitions(state: &ShardState, topic: &Topic, partitions: &[u32]) -> Result<(), Failure> {
    state.partitions.open(topic, partitions).await?;
    if topic.name != OFFSETS_TOPIC {
        return Ok(());
    }
    for &partition in partitions {
        let key = PartitionKey { topic: topic.id, partition };
        let log = state.partitions.get(key).ok_or(Failure::unknown_partition(key))?;
        let mut offset = log.offsets().log_start;
        loop {
            let read = log.read(offset, 1 << 20).await?;
            if read.bytes.is_empty() {
                break;
            }
            let skipped = state.offsets.borrow_mut().apply(partition, &read.bytes);
            if skipped > 0 {
                warn!(partition, skipped, "undecodable records in {OFFSETS_TOPIC} skipped");
            }
            offset = read.next_offset;
        }
    }
    Ok(())
}

/// Deletes a partition's records below `offset` (−1: all readable ones) by moving its log start,
/// as Kafka's DeleteRecords: only where the cleanup policy includes `delete`, never on the
/// internal offsets topic.
async fn delete_records(state: &ShardState, key: PartitionKey, offset: i64) -> Result<u64, Failure> {
    let log = state.partitions.get(key).ok_or(Failure::unknown_partition(key))?;
    let internal = state.metadata().topic(OFFSETS_TOPIC).is_some_and(|t| t.id == key.topic);
    if internal || log.config().cleanup_policy == keel_storage::CleanupPolicy::Compact {
        return Err(Failure::new(
            ErrorCode::PolicyViolation,
            "records can be deleted only from topics whose cleanup.policy includes delete",
        ));
    }
    let offsets = offsets_of(&log);
    let target = match offset {
        -1 => offsets.high_watermark,
        o if o >= 0 && (o as u64) <= offsets.high_watermark => o as u64,
        o => {
            return Err(Failure::new(
                ErrorCode::OffsetOutOfRange,
                format!("offset {o} is not between 0 and the high watermark {}", offsets.high_watermark),
            ))
        }
    };
    log.advance_log_start(target).await?;
    Ok(log.offsets().log_start)
}

/// Groups on this shard: live ones as they are, the others known by their commits as Empty
/// consumer groups.
fn list_groups(state: &ShardState) -> Vec<(String, crate::groups::GroupState, String)> {
    let mut groups = state.groups.list();
    for name in state.offsets.borrow().groups() {
        if !groups.iter().any(|(g, _, _)| *g == name) {
            groups.push((name, crate::groups::GroupState::Empty, "consumer".into()));
        }
    }
    groups.sort();
    groups
}

/// Appends a group's commits as one batch to its offsets partition, then makes them visible —
/// if the group's coordinator accepts `member`'s commit.
async fn commit_offsets(
    state: &ShardState,
    group: String,
    commits: Vec<(String, u32, u64, Option<String>)>,
    member: crate::routing::CommitMember,
) -> Result<(), Failure> {
    if let Err(e) = state.groups.validate_commit(&group, &member.member_id, member.generation, member.has_instance_id) {
        use crate::groups::GroupError as G;
        let (code, message) = match e {
            G::IllegalGeneration => (ErrorCode::IllegalGeneration, "not the group's current generation; rejoin"),
            G::RebalanceInProgress => (ErrorCode::RebalanceInProgress, "the group is rebalancing; rejoin, then commit"),
            _ => (ErrorCode::UnknownMemberId, "the group has members and this commit is not from one of them"),
        };
        return Err(Failure::new(code, message));
    }
    let partition = partition_for_group(&group);
    let commits: Vec<(CommitKey, Committed)> = commits
        .into_iter()
        .map(|(topic, p, offset, metadata)| {
            (CommitKey { group: group.clone(), topic, partition: p }, Committed { offset, metadata })
        })
        .collect();
    if commits.is_empty() {
        return Ok(());
    }
    append_offsets(state, partition, &offsets::commit_batch(&commits, now_ms())).await
}

/// Appends `batch` (commits or tombstones) to offsets partition `partition`, owned by this shard,
/// then applies it to the shard's latest commits.
async fn append_offsets(state: &ShardState, partition: u32, batch: &[u8]) -> Result<(), Failure> {
    let (key, _) = state
        .route(OFFSETS_TOPIC, partition)
        .ok_or_else(|| Failure::new(ErrorCode::UnknownTopicOrPartition, format!("{OFFSETS_TOPIC} is not ready")))?;
    let log = state.partitions.get(key).ok_or(Failure::unknown_partition(key))?;
    log.append(batch, SINGLE_NODE_TERM).await?;
    schedule_sync(state, key, &log, AppendWait::Durable);
    state.offsets.borrow_mut().apply(partition, batch);
    Ok(())
}

/// Deletes every commit of `group` (one batch of tombstones); the number deleted.
pub(crate) async fn delete_group_offsets(state: &ShardState, group: &str) -> Result<usize, Failure> {
    let partition = partition_for_group(group);
    let keys: Vec<CommitKey> = state.offsets.borrow().group(partition, group).into_iter().map(|(k, _)| k).collect();
    if keys.is_empty() {
        return Ok(0);
    }
    append_offsets(state, partition, &offsets::tombstone_batch(&keys, now_ms())).await?;
    Ok(keys.len())
}

/// Deletes every commit for `topic` on the offsets partitions this shard owns (the only ones
/// its store holds): one batch of tombstones per offsets partition that has some.
async fn forget_topic_offsets(state: &ShardState, topic: &str) -> Result<(), Failure> {
    let by_partition = state.offsets.borrow().topic_keys(topic);
    for (partition, keys) in by_partition {
        append_offsets(state, partition, &offsets::tombstone_batch(&keys, now_ms())).await?;
    }
    Ok(())
}

fn fetch_committed(state: &ShardState, group: &str, filter: Option<Vec<(String, Vec<u32>)>>) -> Vec<CommittedEntry> {
    let partition = partition_for_group(group);
    let store = state.offsets.borrow();
    match filter {
        None => store
            .group(partition, group)
            .into_iter()
            .map(|(k, v)| (k.topic, k.partition, Some(v.offset), v.metadata))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .flat_map(|(topic, partitions)| partitions.into_iter().map(move |p| (topic.clone(), p)))
            .map(|(topic, p)| {
                let key = CommitKey { group: group.to_string(), topic, partition: p };
                let committed = store.get(partition, &key);
                (key.topic.clone(), p, committed.map(|c| c.offset), committed.and_then(|c| c.metadata.clone()))
            })
            .collect(),
    }
}

fn offsets_of(log: &crate::partitions::PartitionLog) -> PartitionOffsets {
    let o = log.offsets();
    PartitionOffsets { log_start: o.log_start, high_watermark: o.readable_end }
}

/// Appends every batch in `records` (one or more concatenated RecordBatch v2) in order. All are
/// validated before the first is appended, so a bad batch appends nothing.
async fn produce(
    state: &ShardState,
    key: PartitionKey,
    records: Bytes,
    term: u32,
    wait: AppendWait,
) -> Result<(u64, PartitionOffsets), Failure> {
    let log = state.partitions.get(key).ok_or(Failure::unknown_partition(key))?;
    let mut batches = Vec::new();
    let mut rest = &records[..];
    while !rest.is_empty() {
        let view = BatchView::parse(rest).and_then(|view| view.check_as_produced().map(|()| view)).map_err(|e| {
            Failure::new(ErrorCode::CorruptMessage, format!("batch {} of the request: {e}", batches.len()))
        })?;
        let len = view.total_len();
        batches.push(&rest[..len]);
        rest = &rest[len..];
    }
    if batches.is_empty() {
        return Err(Failure::new(ErrorCode::CorruptMessage, "no record batch in the request"));
    }
    // Every batch's size before the first is appended, so a batch too large appends nothing.
    let max = log.config().max_batch_bytes;
    if let Some((i, batch)) = batches.iter().enumerate().find(|(_, b)| b.len() > max) {
        let e = keel_storage::StorageError::BatchTooLarge { bytes: batch.len(), max };
        let Failure { code, message } = Failure::from(e);
        return Err(Failure::new(code, format!("batch {i} of the request: {message}")));
    }
    let mut base = None;
    for batch in batches {
        let info = log.append_until(batch, term, wait).await?;
        base.get_or_insert(info.base_offset);
    }
    schedule_sync(state, key, &log, wait);
    if log.wants_runway() {
        state.runway_soon(key);
    }
    Ok((base.expect("at least one batch"), offsets_of(&log)))
}

/// After appends to `key` that waited for `wait`: has the shard's background tasks sync what the
/// log's policy still owes, an `acks=1` append's fdatasync under `fsync=always`
/// ([`ShardState::sync_soon`]) or the interval's under `fsync=interval`
/// ([`ShardState::interval_sync_soon`]).
fn schedule_sync(state: &ShardState, key: PartitionKey, log: &crate::partitions::PartitionLog, wait: AppendWait) {
    match log.config().fsync {
        FsyncPolicy::Always if wait == AppendWait::Written => state.sync_soon(key),
        FsyncPolicy::Interval { .. } => state.interval_sync_soon(key),
        FsyncPolicy::Always | FsyncPolicy::Never => {}
    }
}

async fn fetch(
    state: &ShardState,
    key: PartitionKey,
    offset: u64,
    max_bytes: u32,
    max_wait_ms: u32,
) -> Result<(Bytes, PartitionOffsets), Failure> {
    let log = state.partitions.get(key).ok_or(Failure::unknown_partition(key))?;
    let o = log.offsets();
    // A fetch may ask for offsets appended but not yet readable (up to log_end): it waits.
    if offset < o.log_start || offset > o.log_end {
        return Err(Failure::new(
            ErrorCode::OffsetOutOfRange,
            format!("offset {offset} is outside [{}, {}]", o.log_start, o.log_end),
        ));
    }
    if offset >= o.readable_end && max_wait_ms > 0 {
        let wait = log.wait_for_readable(offset);
        let timeout = async { glommio::timer::sleep(Duration::from_millis(max_wait_ms as u64)).await };
        // A shutdown ends the long poll at once: it holds the log, which must close cleanly.
        future::or(wait, future::or(timeout, state.shard.stopping())).await;
    }
    // A read of history takes a slot first (see `history_reads`); the tail in memory is free.
    let _slot = if log.read_would_hit_disk(offset) {
        let metrics = state.stats();
        metrics.history_reads.fetch_add(1, Relaxed);
        if state.history_reads.available() == 0 {
            metrics.history_read_waits.fetch_add(1, Relaxed);
        }
        Some(
            state
                .history_reads
                .acquire_permit(1)
                .await
                .map_err(|e| Failure::new(ErrorCode::UnknownServerError, e.to_string()))?,
        )
    } else {
        None
    };
    let read = log.read(offset, max_bytes.max(1) as usize).await?;
    Ok((read.bytes, PartitionOffsets { log_start: read.log_start, high_watermark: read.readable_end }))
}

async fn list_offset(state: &ShardState, key: PartitionKey, timestamp: i64) -> Result<(Option<u64>, i64), Failure> {
    let log = state.partitions.get(key).ok_or(Failure::unknown_partition(key))?;
    let o = offsets_of(&log);
    match timestamp {
        -1 => Ok((Some(o.high_watermark), -1)),
        -2 => Ok((Some(o.log_start), -1)),
        // The found record's own timestamp; −1 with no offset, as for latest and earliest.
        ts => Ok(log.offset_for_timestamp(ts).await?.map_or((None, -1), |(offset, found)| (Some(offset), found))),
    }
}

// ---------------------------------------------------------------------------------------------
// Controller (shard 0)

fn new_topic_id() -> TopicId {
    let mut id = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id)) {
        // Unique enough without randomness: time and a counter.
        warn!(error = %e, "cannot read /dev/urandom for a topic id");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        id.copy_from_slice(&nanos.to_be_bytes());
    }
    TopicId(id)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn metadata_failure(e: metadata::MetadataError) -> Failure {
    use metadata::MetadataError as E;
    let code = match &e {
        E::TopicExists(_) => ErrorCode::TopicAlreadyExists,
        E::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
        E::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
        E::InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
        E::Config(_) => ErrorCode::InvalidConfig,
        E::Corrupt(_) => ErrorCode::UnknownServerError,
    };
    Failure::new(code, e.to_string())
}

/// Waits for the other metadata changes to finish.
async fn controller_turn(state: &ShardState) -> Result<glommio::sync::Permit<'_>, Failure> {
    state.controller.acquire_permit(1).await.map_err(|e| Failure::new(ErrorCode::BrokerShuttingDown, e.to_string()))
}

/// Persists `next`, installs it on every shard, and returns once all have it.
async fn publish(state: &ShardState, next: Metadata) -> Result<(), Failure> {
    let path = metadata_path(&state.config.data_dir);
    let bytes = next.encode();
    metadata::store::replace(&path, &bytes)
        .map_err(|e| Failure::new(ErrorCode::StorageError, format!("cannot write {}: {e}", path.display())))?;
    let next = Arc::new(next);
    for to in state.shard.all() {
        match state.shard.call(to, ShardRequest::MetadataChanged(next.clone())).await {
            Ok(_) => {}
            Err(e) => error!(%to, error = %e, "a shard did not take the new metadata"),
        }
    }
    Ok(())
}

async fn on_owning_shards(
    state: &ShardState,
    topic: &Topic,
    make: impl Fn(Topic, Vec<u32>) -> ShardRequest,
) -> Result<(), Failure> {
    for to in state.shard.all() {
        let mine: Vec<u32> = topic.partitions.iter().filter(|p| p.shard == to.0).map(|p| p.partition).collect();
        if mine.is_empty() {
            continue;
        }
        match state.shard.call(to, make(topic.clone(), mine)).await {
            Ok(ShardResponse::Done(result)) => result?,
            Ok(other) => {
                return Err(Failure::new(ErrorCode::UnknownServerError, format!("unexpected answer {other:?}")))
            }
            Err(e) => return Err(Failure::new(ErrorCode::UnknownServerError, format!("{to}: {e}"))),
        }
    }
    Ok(())
}

/// Producer ids reserved (persisted) at a time: one metadata write per this many InitProducerId.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A producer id never handed out before (controller only): from the current block, reserving
/// and persisting the next block first when it is used up.
async fn allocate_producer_id(state: &ShardState) -> Result<i64, Failure> {
    let (next, end) = state.producer_ids.get();
    if next < end {
        state.producer_ids.set((next + 1, end));
        return Ok(next);
    }
    let _change = controller_turn(state).await?;
    let (next, end) = state.producer_ids.get(); // another call may have reserved meanwhile
    if next < end {
        state.producer_ids.set((next + 1, end));
        return Ok(next);
    }
    let mut metadata = (*state.metadata()).clone();
    let start = metadata.producer_ids_reserved().max(next);
    let new_end = metadata.reserve_producer_ids(start - metadata.producer_ids_reserved() + PRODUCER_ID_BLOCK);
    publish(state, metadata).await?;
    state.producer_ids.set((start + 1, new_end));
    Ok(start)
}

async fn create_topic(
    state: &ShardState,
    name: &str,
    partitions: u32,
    configs: &[(String, String)],
) -> Result<(), Failure> {
    let _change = controller_turn(state).await?;
    let config = TopicConfig::from_pairs(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Failure::new(ErrorCode::InvalidConfig, e.to_string()))?;
    let mut next = (*state.metadata()).clone();
    let shards = state.shard.count() as u16;
    let topic = next
        .create_topic(name, partitions, &config, shards, new_topic_id(), now_ms())
        .map_err(metadata_failure)?
        .clone();
    // Logs first, metadata second: a topic is never announced before its partitions exist.
    on_owning_shards(state, &topic, |topic, partitions| ShardRequest::OpenPartitions { topic, partitions }).await?;
    publish(state, next).await?;
    info!(topic = name, partitions, "created topic");
    Ok(())
}

async fn delete_topic(state: &ShardState, name: &str) -> Result<(), Failure> {
    let _change = controller_turn(state).await?;
    if name == OFFSETS_TOPIC {
        return Err(Failure::new(
            ErrorCode::PolicyViolation,
            format!("{OFFSETS_TOPIC} is internal and cannot be deleted"),
        ));
    }
    let mut next = (*state.metadata()).clone();
    let topic = next.delete_topic(name).map_err(metadata_failure)?;
    // Metadata first, logs second: no request is routed to a partition being removed.
    publish(state, next).await?;
    on_owning_shards(state, &topic, |topic, partitions| ShardRequest::RemovePartitions { topic, partitions }).await?;
    // Commits to the topic are refused from here on (it is unknown): delete those made before,
    // so a topic created later under this name does not inherit them.
    for to in state.shard.all() {
        match state.shard.call(to, ShardRequest::ForgetTopicOffsets { topic: name.to_string() }).await {
            Ok(ShardResponse::Done(Ok(()))) => {}
            other => {
                warn!(topic = name, shard = %to, outcome = ?other, "could not delete the deleted topic's committed offsets")
            }
        }
    }
    info!(topic = name, "deleted topic");
    Ok(())
}

async fn alter_configs(
    state: &ShardState,
    name: &str,
    set: &[(String, String)],
    remove: &[String],
) -> Result<(), Failure> {
    if name == OFFSETS_TOPIC {
        return Err(Failure::new(
            ErrorCode::PolicyViolation,
            format!("{OFFSETS_TOPIC} is internal: its configs cannot be altered"),
        ));
    }
    // Each key once: a key set twice, or both set and removed, has no one meaning (Kafka refuses
    // duplicate keys too).
    let mut keys = std::collections::HashSet::new();
    if let Some(key) = set.iter().map(|(k, _)| k).chain(remove).find(|k| !keys.insert(k.as_str())) {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!("config '{key}' is named more than once (set twice, or both set and removed)"),
        ));
    }
    let _change = controller_turn(state).await?;
    let mut next = (*state.metadata()).clone();
    next.alter_config(name, set, remove).map_err(metadata_failure)?;
    let topic = next.topic(name).cloned().expect("altered just now");
    publish(state, next).await?;
    // Retention, cleanup policy, segment size and age and the largest batch apply at once; the
    // fsync policy (and interval) at each partition's next open (Log::reconfigure says why).
    on_owning_shards(state, &topic, |topic, partitions| ShardRequest::ReconfigurePartitions { topic, partitions })
        .await?;
    info!(topic = name, "altered topic config");
    Ok(())
}
