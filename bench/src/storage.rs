//! `keel-bench storage`: Keel's partition log (`keel_storage::Log`) on the glommio O_DIRECT disk,
//! on one pinned executor.
//!
//! Three phases, each on its own log directory under `--dir`:
//! 1. append: `--appenders` tasks each append one pre-built RecordBatch v2 (`--batch-records`
//!    records of `--record-bytes` random bytes) in a closed loop for `--duration`; every append's
//!    latency goes into that task's HDR histogram, merged at the end. Throughput counts the bytes
//!    of acknowledged batches (written; also fdatasync'ed under `--fsync always`).
//! 2. read: the whole log read back sequentially, `read(offset, 1 MiB)` from its start.
//! 3. recovery: a child process (`keel-bench storage-writer`, hidden) appends `--recovery-bytes`
//!    with fsync=never into a fresh log, says so on stdout and keeps appending; it is then killed
//!    with SIGKILL and `Log::open` on its directory is timed.
//!
//! Directories are `keel-bench-<pid>-append` and `keel-bench-<pid>-recovery` under `--dir`,
//! removed at the end (errors included) unless `--keep`.

use std::{
    cell::Cell,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    rc::Rc,
    sync::mpsc,
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use keel_storage::{
    batch::BatchBuilder,
    io::{dma::DmaDir, SystemClock},
    FsyncPolicy, Log, LogConfig,
};
use serde::Serialize;

use crate::{
    baseline,
    report::{self, LatencySummary},
};

type DmaLog = Log<DmaDir, SystemClock>;

/// Size of each `read` during the read-back phase.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Raft term stamped on every appended batch.
const TERM: u32 = 1;
/// Concurrent appenders in the recovery child (it only has to produce bytes quickly).
const WRITER_APPENDERS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncArg {
    /// Appends complete once written; no fdatasync on the append path.
    Never,
    /// Appends complete once fdatasync'ed (concurrent appends share one: group commit).
    Always,
}

impl FsyncArg {
    fn name(self) -> &'static str {
        match self {
            FsyncArg::Never => "never",
            FsyncArg::Always => "always",
        }
    }

    fn policy(self) -> FsyncPolicy {
        match self {
            FsyncArg::Never => FsyncPolicy::Never,
            FsyncArg::Always => FsyncPolicy::Always,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Parent directory for the logs (created if missing); each phase uses its own subdirectory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Bytes of each record's value (suffixes KiB/MiB/GiB and KB/MB/GB accepted).
    #[arg(long, default_value = "1024", value_parser = crate::parse_size)]
    pub record_bytes: u64,
    /// Records in each appended batch.
    #[arg(long, default_value_t = 64)]
    pub batch_records: u32,
    /// When appends are made durable.
    #[arg(long, value_enum, default_value_t = FsyncArg::Never)]
    pub fsync: FsyncArg,
    /// Concurrent appender tasks on the one executor.
    #[arg(long, default_value_t = 4)]
    pub appenders: usize,
    /// How long to append: `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Segment size of the logs (`segment.bytes`).
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    pub segment_bytes: u64,
    /// Bytes the killed child appends before the recovery measurement (0 skips recovery).
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    pub recovery_bytes: u64,
    /// Keep the log directories instead of deleting them.
    #[arg(long)]
    pub keep: bool,
    /// Also measure the disk baseline (`baseline disk`, 8 s) under --dir first, in the same run,
    /// and report the append throughput as a ratio to it.
    #[arg(long)]
    pub baseline: bool,
    /// CPU the glommio executor (and the recovery child's) is pinned to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Print exactly one JSON object on stdout instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
}

/// The hidden child of the recovery phase.
#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Print `written <bytes> <log_end>` once this many batch bytes are acknowledged.
    #[arg(long, value_parser = crate::parse_size)]
    pub bytes: u64,
    #[arg(long, default_value = "1024", value_parser = crate::parse_size)]
    pub record_bytes: u64,
    #[arg(long, default_value_t = 64)]
    pub batch_records: u32,
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    pub segment_bytes: u64,
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
}

/// The result of `storage`, also the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct StorageResult {
    pub kind: &'static str,
    pub dir: String,
    pub fsync: FsyncArg,
    pub appenders: usize,
    pub record_bytes: u64,
    pub batch_records: u32,
    pub batch_bytes: u64,
    pub segment_bytes: u64,
    /// Seconds from the first append to the last acknowledgement.
    pub duration_s: f64,
    pub bytes_appended: u64,
    pub records_appended: u64,
    /// Acknowledged batch bytes per second, 10^6 bytes.
    pub mb_per_s: f64,
    pub records_per_s: f64,
    pub latency_us: LatencySummary,
    pub read_bytes: u64,
    pub read_mb_per_s: f64,
    /// Time of `Log::open` after SIGKILL, in milliseconds (absent with `--recovery-bytes 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<f64>,
    /// Bytes of the recovered log (all segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_bytes: Option<u64>,
    /// The recovered log's end offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_log_end: Option<u64>,
    /// Bytes recovery scanned (segments without a clean seal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_scanned_bytes: Option<u64>,
    /// Batch bytes the child had acknowledged when it reported (it went on until killed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_acked_bytes: Option<u64>,
    /// `baseline disk` sequential write MB/s measured in the same run (`--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_mb_per_s: Option<f64>,
    /// `baseline disk` 4 KiB write + fdatasync p50, µs (`--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_fsync_p50_us: Option<u64>,
    /// `mb_per_s / baseline_mb_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_s_ratio: Option<f64>,
    #[serde(skip)]
    pub recovery_report: Option<String>,
    #[serde(skip)]
    pub kept_dirs: Vec<PathBuf>,
}

pub fn run(args: &StorageArgs) -> Result<(), String> {
    validate(args)?;
    let args2 = args.clone();
    let result = crate::run_pinned(args.cpu, async move { measure(&args2).await })??;
    report::print_result(&result, args.json, print_human)
}

fn validate(args: &StorageArgs) -> Result<(), String> {
    if args.record_bytes == 0 || args.record_bytes > (64 << 20) {
        return Err("--record-bytes must be between 1 and 64 MiB".into());
    }
    if args.batch_records == 0 {
        return Err("--batch-records must be at least 1".into());
    }
    if args.appenders == 0 {
        return Err("--appenders must be at least 1".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    validate_segment(args.segment_bytes, args.record_bytes, args.batch_records)
}

fn validate_segment(segment_bytes: u64, record_bytes: u64, batch_records: u32) -> Result<(), String> {
    if !(4096..=u32::MAX as u64).contains(&segment_bytes) {
        return Err("--segment-bytes must be between 4 KiB and 4 GiB - 1".into());
    }
    // Records carry a few bytes of framing on top of the value; a batch has a 61-byte header.
    let approx_batch = (record_bytes + 32) * batch_records as u64 + 61;
    if approx_batch > segment_bytes {
        return Err(format!(
            "a batch of {batch_records} × {record_bytes}-byte records does not fit a {segment_bytes}-byte segment"
        ));
    }
    Ok(())
}

fn log_config(segment_bytes: u64, fsync: FsyncPolicy, batch_bytes: usize) -> LogConfig {
    let mut config = LogConfig { segment_bytes, fsync, ..LogConfig::default() };
    // Experiment knobs for tuning the write path (not part of the documented interface).
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(v) = env("KEEL_WRITE_BYTES") {
        config.write_bytes = v as usize;
    }
    if let Some(v) = env("KEEL_WRITES_IN_FLIGHT") {
        config.writes_in_flight = v as usize;
    }
    if let Some(v) = env("KEEL_PREALLOCATE_BYTES") {
        config.preallocate_bytes = v;
    }
    config.max_batch_bytes = config.max_batch_bytes.max(batch_bytes);
    config
}

/// One RecordBatch v2 of `records` records, each with a distinct random value of `value_bytes`.
fn build_batch(value_bytes: u64, records: u32, seed: u64) -> Vec<u8> {
    let ts =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut value = vec![0u8; value_bytes as usize];
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        report::fill_pseudo_random(&mut value, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1));
        builder.push(ts, None, Some(&value), &[]);
    }
    builder.build()
}

/// Removes the log directories on drop unless asked to keep them, and `--dir` itself if this run
/// created it and it is empty.
struct DataDirs {
    paths: Vec<PathBuf>,
    created_parent: Option<PathBuf>,
    keep: bool,
}

impl Drop for DataDirs {
    fn drop(&mut self) {
        if !self.keep {
            for p in &self.paths {
                let _ = std::fs::remove_dir_all(p);
            }
            if let Some(parent) = &self.created_parent {
                let _ = std::fs::remove_dir(parent); // fails, harmlessly, unless empty
            }
        }
    }
}

async fn measure(args: &StorageArgs) -> Result<StorageResult, String> {
    let created_parent = (!args.dir.exists()).then(|| args.dir.clone());
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let pid = std::process::id();
    let append_dir = args.dir.join(format!("keel-bench-{pid}-append"));
    let recovery_dir = args.dir.join(format!("keel-bench-{pid}-recovery"));
    let dirs = DataDirs { paths: vec![append_dir.clone(), recovery_dir.clone()], created_parent, keep: args.keep };
    // Without this, a fresh log's first (empty) file makes glommio route reads to the poll ring,
    // where they fail with EOPNOTSUPP; see `baseline::prime_iopoll_probe`.
    baseline::prime_iopoll_probe(&args.dir).await?;

    let base = if args.baseline {
        let b = baseline::DiskArgs {
            dir: args.dir.clone(),
            duration_secs: 8.0,
            block_bytes: 1 << 20,
            in_flight: 4,
            fsync_samples: 2000,
            group_bytes: 0,
            max_file_bytes: 32 << 30,
            cpu: args.cpu,
            json: false,
        };
        Some(baseline::measure_disk_here(&b).await?)
    } else {
        None
    };

    let batch_len = build_batch(args.record_bytes, args.batch_records, 0).len();
    let config = log_config(args.segment_bytes, args.fsync.policy(), batch_len);

    // Phase 1: append.
    let dir = DmaDir::create(&append_dir)
        .await
        .map_err(|e| format!("cannot create log directory {}: {e}", append_dir.display()))?;
    let (log, _) = Log::open(dir, SystemClock, config.clone())
        .await
        .map_err(|e| format!("cannot open a log in {}: {e}", append_dir.display()))?;
    let log = Rc::new(log);
    let appended = append_phase(&log, args).await?;

    // Phase 2: read back.
    let (read_bytes, read_secs) = read_phase(&log).await?;
    let log =
        Rc::try_unwrap(log).map_err(|_| "internal: the log is still shared after the append phase".to_string())?;
    log.close().await.map_err(|e| format!("closing the log: {e}"))?;

    // Phase 3: recovery after SIGKILL.
    let recovery =
        if args.recovery_bytes > 0 { Some(recovery_phase(args, &recovery_dir, &config).await?) } else { None };

    let secs = appended.elapsed.as_secs_f64();
    let mb_per_s = report::mb_per_s(appended.bytes, secs);
    let result = StorageResult {
        kind: "storage",
        dir: args.dir.display().to_string(),
        fsync: args.fsync,
        appenders: args.appenders,
        record_bytes: args.record_bytes,
        batch_records: args.batch_records,
        batch_bytes: batch_len as u64,
        segment_bytes: args.segment_bytes,
        duration_s: secs,
        bytes_appended: appended.bytes,
        records_appended: appended.records,
        mb_per_s,
        records_per_s: if secs > 0.0 { appended.records as f64 / secs } else { 0.0 },
        latency_us: appended.latency,
        read_bytes,
        read_mb_per_s: report::mb_per_s(read_bytes, read_secs),
        recovery_ms: recovery.as_ref().map(|r| r.elapsed.as_secs_f64() * 1e3),
        recovery_bytes: recovery.as_ref().map(|r| r.bytes),
        recovery_log_end: recovery.as_ref().map(|r| r.log_end),
        recovery_scanned_bytes: recovery.as_ref().map(|r| r.scanned_bytes),
        recovery_acked_bytes: recovery.as_ref().map(|r| r.acked_bytes),
        baseline_mb_per_s: base.as_ref().map(|b| b.mb_per_s),
        baseline_fsync_p50_us: base.as_ref().map(|b| b.fsync_latency_us.p50),
        mb_per_s_ratio: base.as_ref().filter(|b| b.mb_per_s > 0.0).map(|b| mb_per_s / b.mb_per_s),
        recovery_report: recovery.map(|r| r.report),
        kept_dirs: if args.keep { dirs.paths.clone() } else { Vec::new() },
    };
    drop(dirs);
    Ok(result)
}

struct Appended {
    bytes: u64,
    records: u64,
    elapsed: Duration,
    latency: LatencySummary,
}

async fn append_phase(log: &Rc<DmaLog>, args: &StorageArgs) -> Result<Appended, String> {
    let stop = Rc::new(Cell::new(false));
    let start = Instant::now();
    let deadline = start + args.duration;
    let tasks: Vec<_> = (0..args.appenders)
        .map(|i| {
            let (log, stop) = (log.clone(), stop.clone());
            let batch = build_batch(args.record_bytes, args.batch_records, i as u64 + 1);
            let records_per_batch = args.batch_records as u64;
            glommio::spawn_local(async move {
                let mut hist = report::latency_histogram();
                let (mut bytes, mut records) = (0u64, 0u64);
                while !stop.get() && Instant::now() < deadline {
                    let t0 = Instant::now();
                    if let Err(e) = log.append(&batch, TERM).await {
                        stop.set(true);
                        return Err(format!("append failed: {e}"));
                    }
                    report::record_us(&mut hist, t0.elapsed());
                    bytes += batch.len() as u64;
                    records += records_per_batch;
                }
                Ok((hist, bytes, records))
            })
        })
        .collect();
    let mut merged = report::latency_histogram();
    let (mut bytes, mut records) = (0u64, 0u64);
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok((h, b, r)) => {
                merged.add(&h).map_err(|e| format!("merging histograms: {e:?}"))?;
                bytes += b;
                records += r;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(Appended { bytes, records, elapsed, latency: LatencySummary::from_histogram(&merged) })
}

/// Reads the whole log from its start, 1 MiB at a time; returns (bytes, seconds).
async fn read_phase(log: &DmaLog) -> Result<(u64, f64), String> {
    let offsets = log.offsets();
    let mut at = offsets.log_start;
    let mut bytes = 0u64;
    let t0 = Instant::now();
    while at < offsets.written_end {
        let out = log.read(at, READ_CHUNK_BYTES).await.map_err(|e| format!("reading at offset {at}: {e}"))?;
        if out.bytes.is_empty() || out.next_offset <= at {
            return Err(format!("read at offset {at} made no progress (log written end {})", offsets.written_end));
        }
        bytes += out.bytes.len() as u64;
        at = out.next_offset;
    }
    Ok((bytes, t0.elapsed().as_secs_f64()))
}

struct Recovered {
    elapsed: Duration,
    bytes: u64,
    log_end: u64,
    scanned_bytes: u64,
    acked_bytes: u64,
    report: String,
}

/// Kills the child on drop if it is still running (an early error return).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn recovery_phase(args: &StorageArgs, dir: &Path, config: &LogConfig) -> Result<Recovered, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the keel-bench executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("storage-writer")
        .arg("--dir")
        .arg(dir)
        .args(["--bytes", &args.recovery_bytes.to_string()])
        .args(["--record-bytes", &args.record_bytes.to_string()])
        .args(["--batch-records", &args.batch_records.to_string()])
        // One segment large enough for everything the child writes: recovery then scans the
        // whole log (the worst case), not just a small active segment after a roll.
        .args([
            "--segment-bytes",
            &(args.recovery_bytes * 2).clamp(args.segment_bytes, u32::MAX as u64 & !4095).to_string(),
        ])
        .args(["--cpu", &args.cpu.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the recovery writer: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut guard = ChildGuard(Some(child));

    // Read the child's line on a thread so a silent child cannot hang us forever.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    let timeout = Duration::from_secs(120 + args.recovery_bytes / (10 << 20));
    let line = match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(Ok(_)) | Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = guard.0.as_mut().and_then(|c| c.wait().ok());
            guard.0 = None;
            return Err(format!(
                "the recovery writer ended before writing {} bytes ({})",
                args.recovery_bytes,
                status.map_or("unknown status".into(), |s| s.to_string())
            ));
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(format!("the recovery writer did not report within {} s", timeout.as_secs()));
        }
    };
    let acked_bytes =
        parse_written_line(&line).ok_or_else(|| format!("unexpected line from the recovery writer: {line:?}"))?;

    // The real crash: SIGKILL while appends are in flight.
    let mut child = guard.0.take().expect("child present");
    // SAFETY: plain syscall on the pid of a child we have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = child.wait();
        return Err(format!("cannot SIGKILL the recovery writer: {e}"));
    }
    child.wait().map_err(|e| format!("waiting for the killed recovery writer: {e}"))?;

    let t0 = Instant::now();
    let dmadir = DmaDir::create(dir).await.map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let (log, report) = Log::open(dmadir, SystemClock, config.clone())
        .await
        .map_err(|e| format!("recovering the log in {} failed: {e}", dir.display()))?;
    let elapsed = t0.elapsed();
    let recovered = Recovered {
        elapsed,
        bytes: log.size_bytes(),
        log_end: log.offsets().log_end,
        scanned_bytes: report.scanned_bytes,
        acked_bytes,
        report: format!("{report:#?}"),
    };
    log.close().await.map_err(|e| format!("closing the recovered log: {e}"))?;
    Ok(recovered)
}

/// `written <bytes> <log_end>` → bytes.
fn parse_written_line(line: &str) -> Option<u64> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "written" {
        return None;
    }
    parts.next()?.parse().ok()
}

/// The hidden `storage-writer` subcommand: appends until `--bytes` are acknowledged, prints
/// `written <bytes> <log_end>`, then keeps appending until it is killed.
pub fn run_writer(args: &WriterArgs) -> Result<(), String> {
    // Die with the parent, whatever happens to it.
    // SAFETY: prctl with an integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    validate_segment(args.segment_bytes, args.record_bytes, args.batch_records)?;
    let args = args.clone();
    crate::run_pinned(args.cpu, async move { writer(&args).await })?
}

async fn writer(args: &WriterArgs) -> Result<(), String> {
    let batch_len = build_batch(args.record_bytes, args.batch_records, 0).len();
    let config = log_config(args.segment_bytes, FsyncPolicy::Never, batch_len);
    if let Some(parent) = args.dir.parent().filter(|p| p.is_dir()) {
        baseline::prime_iopoll_probe(parent).await?;
    }
    let dir = DmaDir::create(&args.dir).await.map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let (log, _) = Log::open(dir, SystemClock, config).await.map_err(|e| format!("cannot open the log: {e}"))?;
    let log = Rc::new(log);
    let acked = Rc::new(Cell::new(0u64));
    let reported = Rc::new(Cell::new(false));
    let failed = Rc::new(Cell::new(false));
    // Past this the child stops appending and waits to be killed, so a stuck parent cannot make it
    // fill the disk.
    let cap = args.bytes.saturating_mul(2).saturating_add(1 << 30);
    let target = args.bytes;
    let tasks: Vec<_> = (0..WRITER_APPENDERS)
        .map(|i| {
            let (log, acked, reported, failed) = (log.clone(), acked.clone(), reported.clone(), failed.clone());
            let batch = build_batch(args.record_bytes, args.batch_records, i as u64 + 1);
            glommio::spawn_local(async move {
                // Ends only on an error (any appender's): the parent kills this process.
                while !failed.get() {
                    if acked.get() >= cap {
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    if let Err(e) = log.append(&batch, TERM).await {
                        failed.set(true);
                        return Err(format!("append failed: {e}"));
                    }
                    acked.set(acked.get() + batch.len() as u64);
                    if !reported.get() && acked.get() >= target {
                        reported.set(true);
                        let mut out = std::io::stdout().lock();
                        let said = writeln!(out, "written {} {}", acked.get(), log.offsets().log_end)
                            .and_then(|_| out.flush());
                        if let Err(e) = said {
                            failed.set(true);
                            return Err(format!("cannot report to the parent: {e}"));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for t in tasks {
        let r: Result<(), String> = t.await;
        result = result.and(r);
    }
    result
}

pub fn print_human(r: &StorageResult) {
    println!(
        "storage: {} — fsync {}, {} appender(s), batches of {} × {} B records ({} per batch), segments of {}",
        r.dir,
        r.fsync.name(),
        r.appenders,
        r.batch_records,
        r.record_bytes,
        report::fmt_bytes(r.batch_bytes),
        report::fmt_bytes(r.segment_bytes)
    );
    println!(
        "  append: {:.1} MB/s (MB = 10^6 bytes), {:.0} records/s: {} in {:.2} s",
        r.mb_per_s,
        r.records_per_s,
        report::fmt_bytes(r.bytes_appended),
        r.duration_s
    );
    println!("  append latency: {}", r.latency_us.human());
    println!(
        "  read back (1 MiB reads from offset 0): {:.1} MB/s, {}",
        r.read_mb_per_s,
        report::fmt_bytes(r.read_bytes)
    );
    if let (Some(ms), Some(bytes), Some(end)) = (r.recovery_ms, r.recovery_bytes, r.recovery_log_end) {
        println!(
            "  recovery after SIGKILL: {ms:.1} ms to open a log of {} (end offset {end}, scanned {}; the writer had {} acknowledged when killed)",
            report::fmt_bytes(bytes),
            report::fmt_bytes(r.recovery_scanned_bytes.unwrap_or(0)),
            report::fmt_bytes(r.recovery_acked_bytes.unwrap_or(0))
        );
    }
    if let Some(rep) = &r.recovery_report {
        for line in rep.lines() {
            println!("    {line}");
        }
    }
    if let (Some(b), Some(ratio)) = (r.baseline_mb_per_s, r.mb_per_s_ratio) {
        println!(
            "  baseline (same run): disk {b:.1} MB/s, 4 KiB write + fdatasync p50 {} µs → append throughput is {:.1}% of the disk",
            r.baseline_fsync_p50_us.unwrap_or(0),
            ratio * 100.0
        );
    }
    for d in &r.kept_dirs {
        println!("  kept {}", d.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_line() {
        assert_eq!(parse_written_line("written 1073741824 1048576\n"), Some(1073741824));
        assert_eq!(parse_written_line("error"), None);
    }
}
