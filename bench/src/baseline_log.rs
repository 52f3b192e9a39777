//! `keel-bench baseline log`: the latency floor of an ideal log on this disk at a given load,
//! measured the way the broker benchmarks measure Keel, so the two can be compared figure by
//! figure.
//!
//! Records of `--record-bytes` arrive at `--rate` per second in total (open loop: record k is due
//! at `t0 + k / rate`), spread round-robin over `--files` files (the partitions), written by
//! `--threads` writer threads (default one per file; one thread for all of them is a single
//! shard). A writer does what a perfect group-committing log would: it takes its files in turn,
//! and for each takes every record that is due and appends them in one O_DIRECT `pwrite` at the
//! file's end (rewriting the partly filled last page, as Keel does), then `fdatasync`s with
//! `--sync`; when no record of its files is due it sleeps until the next one is. Each record's latency is the end of its write (or fdatasync) minus
//! the time it was due: the coordinated-omission-corrected figure keel-bench reports for Keel,
//! so time spent behind a slow write counts, as it does for a producer behind a slow request.
//! There is no network, no protocol, no CPU beyond the syscalls: what is left is the disk, the
//! kernel and the machine's own stalls (watched by the same watchdog as the broker runs).
//!
//! `--busy-threads N` runs N threads that only spin meanwhile: on a 2-core machine a broker and
//! its load generator keep at least one CPU busy, and the disk's latency depends on it.
//!
//! Files are preallocated (`fallocate`, keeping the size) and unlinked as soon as they are open,
//! so they vanish on every exit; a file wraps to its start at `--file-bytes`. So each write
//! appends to unwritten space: ext4 then changes the file's size and converts the extent, and
//! every fdatasync writes that metadata too (a journal commit, or without a journal the inode's
//! and the extent's blocks). `--zeroed` writes each file full of zeros first (and
//! syncs it), so every write overwrites written blocks inside the file's size and an fdatasync
//! is only the data and a cache flush: the floor of a log that keeps a zeroed runway ahead of
//! its end, as Keel does under `fsync.policy=always`.

use std::{
    fs::File,
    os::{
        fd::AsRawFd,
        unix::fs::{FileExt, OpenOptionsExt},
    },
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    broker::{
        shared::tighten_timer_slack,
        stalls::{CpuTimes, StallSummary, Watchdog},
    },
    report::{self, LatencySummary},
};

const ALIGN: u64 = 4096;
/// How long after the window the writers may take to write what was due in it; records still
/// unwritten then are counted with the latency they had reached (a lower bound).
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Directory on the disk to measure (must exist); scratch files are created in it and removed.
    #[arg(long)]
    pub dir: PathBuf,
    /// Records per second, in total over every file (open loop).
    #[arg(long)]
    pub rate: f64,
    /// Bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: u64,
    /// Files written at once (the partitions).
    #[arg(long, default_value_t = 2)]
    pub files: u32,
    /// Writer threads, each writing its share of the files in turn (default: one per file). One
    /// thread for every file is how a single shard owns its partitions.
    #[arg(long)]
    pub threads: Option<u32>,
    /// fdatasync after every write (an acks=all append under fsync.policy=always); without it a
    /// record is done when its write is (acks=1 under fsync.policy=never).
    #[arg(long)]
    pub sync: bool,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Largest single write, bytes: records due beyond it wait for the next write.
    #[arg(long, default_value = "1MiB", value_parser = crate::parse_size)]
    pub max_write_bytes: u64,
    /// Threads that only spin while the writers run (CPU competition, as from a broker and its
    /// load generator).
    #[arg(long, default_value_t = 0)]
    pub busy_threads: u32,
    /// Size at which a file wraps to its start; preallocated at the start (default: what the run
    /// writes to one file, warm-up and a second more included, at least 4 MiB and at most 1 GiB).
    #[arg(long, value_parser = crate::parse_size)]
    pub file_bytes: Option<u64>,
    /// Write every file full of zeros (and fdatasync it) before the run, so writes overwrite
    /// written blocks instead of appending to preallocated space.
    #[arg(long)]
    pub zeroed: bool,
    /// Print exactly one JSON object on stdout instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
}

/// The result of `baseline log`, also the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct LogBaseline {
    pub kind: &'static str,
    pub dir: String,
    pub files: u32,
    pub threads: u32,
    pub record_bytes: u64,
    pub rate: f64,
    pub offered_mb_per_s: f64,
    pub sync: bool,
    /// Files were written full of zeros first (writes overwrite; see `--zeroed`).
    pub zeroed: bool,
    pub busy_threads: u32,
    /// Where each file wraps to its start.
    pub file_bytes: u64,
    pub duration_s: f64,
    /// Record bytes written in the window, 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Writes issued, warm-up and drain included, and their mean size in record bytes.
    pub writes: u64,
    pub mean_write_bytes: f64,
    /// Records due in the window that were still unwritten `DRAIN_LIMIT` after it.
    pub records_not_written: u64,
    /// Per record: end of its write (+ fdatasync) minus the time it was due.
    pub latency_us: LatencySummary,
    pub machine_stalls: StallSummary,
}

pub fn run_log(args: &LogArgs) -> Result<(), String> {
    report::print_result(&measure_log(args)?, args.json, print_human)
}

fn validate(args: &LogArgs) -> Result<(), String> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(format!("--rate must be a positive number of records per second, not {}", args.rate));
    }
    if args.files == 0 || args.record_bytes == 0 {
        return Err("--files and --record-bytes must be positive".into());
    }
    if args.max_write_bytes < args.record_bytes || !args.max_write_bytes.is_multiple_of(ALIGN) {
        return Err(format!("--max-write-bytes must be a multiple of {ALIGN} and hold one record"));
    }
    if file_bytes(args) < 2 * args.max_write_bytes + ALIGN {
        return Err("--file-bytes must hold at least two of the largest writes".into());
    }
    if !(args.duration_secs > 0.0 && args.warmup_secs >= 0.0) {
        return Err("--duration-secs must be positive and --warmup-secs not negative".into());
    }
    if !args.dir.is_dir() {
        return Err(format!("{} is not a directory", args.dir.display()));
    }
    Ok(())
}

/// `--file-bytes`, or enough for what the run writes to one file (bounded).
fn file_bytes(args: &LogArgs) -> u64 {
    args.file_bytes.unwrap_or_else(|| {
        let secs = args.warmup_secs + args.duration_secs + 1.0;
        let per_file = args.rate * args.record_bytes as f64 * secs / f64::from(args.files.max(1));
        let per_file = if per_file.is_finite() { per_file as u64 } else { u64::MAX };
        (per_file.saturating_add(2 * args.max_write_bytes)).clamp(4 << 20, 1 << 30).div_ceil(ALIGN) * ALIGN
    })
}

/// When record `k` is due, and which records are due by a given time.
#[derive(Clone, Copy)]
struct Schedule {
    t0: Instant,
    rate: f64,
}

impl Schedule {
    fn due(&self, k: u64) -> Instant {
        self.t0 + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// One past the last record due at `now`.
    fn due_end(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.t0).as_secs_f64() * self.rate).floor() as u64 + 1
    }
}

struct WriterResult {
    latency: Histogram<u64>,
    writes: u64,
    /// Record bytes of every write, warm-up and drain included (for the mean write size).
    written_bytes: u64,
    window_bytes: u64,
    not_written: u64,
}

pub fn measure_log(args: &LogArgs) -> Result<LogBaseline, String> {
    validate(args)?;
    let files = (0..args.files).map(|i| open_scratch(args, i)).collect::<Result<Vec<File>, _>>()?;
    let busy = BusyThreads::start(args.busy_threads);
    let watchdog = Watchdog::start();
    let t0 = Instant::now() + Duration::from_millis(50);
    let from = t0 + Duration::from_secs_f64(args.warmup_secs);
    let to = from + Duration::from_secs_f64(args.duration_secs);
    let schedule = Schedule { t0, rate: args.rate };
    let cpu_at_start = std::thread::spawn(move || {
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        CpuTimes::read()
    });
    let threads = args.threads.unwrap_or(args.files).clamp(1, args.files);
    let results: Vec<Result<WriterResult, String>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..threads as usize)
            .map(|t| {
                // Thread t writes files t, t + threads, t + 2 threads, ...
                let mine: Vec<(u64, &File)> =
                    files.iter().enumerate().skip(t).step_by(threads as usize).map(|(i, f)| (i as u64, f)).collect();
                std::thread::Builder::new()
                    .name(format!("log-writer-{t}"))
                    .spawn_scoped(scope, move || write_files(mine, args, schedule, (from, to)))
            })
            .collect();
        writers
            .into_iter()
            .map(|w| match w {
                Ok(writer) => writer.join().unwrap_or_else(|_| Err("a writer thread panicked".into())),
                Err(e) => Err(format!("cannot start a writer thread: {e}")),
            })
            .collect()
    });
    let cpu_at_end = CpuTimes::read();
    drop(busy);
    let (stalls, realtime) = watchdog.finish().unwrap_or_default();
    drop(files);
    let mut latency = report::latency_histogram();
    let (mut writes, mut written, mut bytes, mut not_written) = (0, 0, 0, 0);
    for r in results {
        let r = r?;
        latency.add(&r.latency).map_err(|e| format!("cannot merge latency histograms: {e}"))?;
        writes += r.writes;
        written += r.written_bytes;
        bytes += r.window_bytes;
        not_written += r.not_written;
    }
    let steal = match (cpu_at_start.join().ok().flatten(), cpu_at_end) {
        (Some(a), Some(b)) => b.steal_share_since(&a),
        _ => None,
    };
    Ok(LogBaseline {
        kind: "baseline-log",
        dir: args.dir.display().to_string(),
        files: args.files,
        threads,
        record_bytes: args.record_bytes,
        rate: args.rate,
        offered_mb_per_s: args.rate * args.record_bytes as f64 / 1e6,
        sync: args.sync,
        zeroed: args.zeroed,
        busy_threads: args.busy_threads,
        file_bytes: file_bytes(args),
        duration_s: args.duration_secs,
        mb_per_s: report::mb_per_s(bytes, args.duration_secs),
        writes,
        mean_write_bytes: if writes == 0 { 0.0 } else { written as f64 / writes as f64 },
        records_not_written: not_written,
        latency_us: LatencySummary::with_p9999(&latency),
        machine_stalls: StallSummary::of(&stalls, from, to, realtime, steal),
    })
}

/// Opens scratch file `i` under the directory with O_DIRECT, unlinks it, preallocates it.
fn open_scratch(args: &LogArgs, i: u32) -> Result<File, String> {
    let path = args.dir.join(format!(".keel-bench-log-{}-{i}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("cannot open {} with O_DIRECT: {e}", path.display()))?;
    // Unlinked at once, so it vanishes however the run ends; the open descriptor keeps it.
    let _ = std::fs::remove_file(&path);
    // As Keel reserves its segments' space; a file system without fallocate writes without.
    let bytes = file_bytes(args);
    // SAFETY: fallocate on the descriptor `file` owns, with integer arguments.
    if unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, bytes as libc::off_t) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(format!("cannot preallocate {bytes} bytes under {}: {e}", args.dir.display()));
        }
    }
    if args.zeroed {
        write_zeros(&file, bytes).map_err(|e| format!("cannot write zeros to {}: {e}", path.display()))?;
    }
    Ok(file)
}

/// The page-aligned region of `len` bytes inside `raw` (which must hold `len + ALIGN`): O_DIRECT
/// needs aligned memory.
fn aligned(raw: &mut [u8], len: usize) -> &mut [u8] {
    let at = (raw.as_ptr() as usize).next_multiple_of(ALIGN as usize) - raw.as_ptr() as usize;
    &mut raw[at..at + len]
}

/// Fills `[0, bytes)` of an O_DIRECT file with zeros and makes them durable.
fn write_zeros(file: &File, bytes: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut backing = vec![0u8; CHUNK + ALIGN as usize];
    let zeros = aligned(&mut backing, CHUNK);
    let mut pos = 0;
    while pos < bytes {
        let len = (bytes - pos).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..len], pos)?;
        pos += len as u64;
    }
    file.sync_data()
}

/// `--busy-threads`: threads that only spin, until dropped (on every return path).
struct BusyThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BusyThreads {
    fn start(n: u32) -> BusyThreads {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyThreads { stop, threads }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.drain(..).for_each(|t| drop(t.join()));
    }
}

/// One file of a writer thread: records i, i + files, i + 2 files, ...
struct FileState<'a> {
    file: &'a File,
    i: u64,
    /// Logical end of the file; the next write starts at the page holding it.
    end: u64,
    /// The file's next record is `i + next * files`.
    next: u64,
    done: bool,
}

/// A writer thread: its files in turn, each time writing every record due for a file, until the
/// window's records are written (or `DRAIN_LIMIT` after it).
fn write_files(
    files_of_thread: Vec<(u64, &File)>,
    args: &LogArgs,
    schedule: Schedule,
    (from, to): (Instant, Instant),
) -> Result<WriterResult, String> {
    tighten_timer_slack();
    let files = u64::from(args.files);
    let per_write = (args.max_write_bytes / args.record_bytes).max(1);
    let file_size = file_bytes(args);
    // A page-aligned region of a vector (O_DIRECT needs aligned memory): the largest write plus
    // the partly filled page it may start with.
    let buf_len = (args.max_write_bytes + ALIGN) as usize;
    let mut raw = vec![0u8; buf_len + ALIGN as usize];
    let buf = aligned(&mut raw, buf_len);
    report::fill_pseudo_random(buf, buf_len as u64);
    let buf = &*buf;
    let mut out = WriterResult {
        latency: report::latency_histogram(),
        writes: 0,
        written_bytes: 0,
        window_bytes: 0,
        not_written: 0,
    };
    let mut states: Vec<FileState> =
        files_of_thread.into_iter().map(|(i, file)| FileState { file, i, end: 0, next: 0, done: false }).collect();
    let last_in_window = schedule.due_end(to).saturating_sub(1);
    while states.iter().any(|f| !f.done) {
        let mut wrote = false;
        let mut earliest: Option<Instant> = None;
        for f in states.iter_mut().filter(|f| !f.done) {
            let k = f.i + f.next * files;
            let now = Instant::now();
            if k > last_in_window && schedule.due(k) >= to {
                f.done = true;
                continue;
            }
            if now >= to + DRAIN_LIMIT {
                // Still unwritten: count them with the latency they reached.
                let mut j = k;
                while schedule.due(j) < to {
                    if schedule.due(j) >= from {
                        report::record_us(&mut out.latency, now - schedule.due(j));
                        out.not_written += 1;
                    }
                    j += files;
                }
                f.done = true;
                continue;
            }
            let due_end = schedule.due_end(now);
            if k >= due_end {
                let due = schedule.due(k);
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
                continue;
            }
            // Records k, k + files, ... below due_end are due: at most per_write of them.
            let n = ((due_end - 1 - k) / files + 1).min(per_write);
            let bytes = n * args.record_bytes;
            if f.end + bytes + ALIGN > file_size {
                f.end = 0;
            }
            // validate() keeps two of the largest writes within a file, so one fits after a wrap.
            debug_assert!(f.end + bytes + ALIGN <= file_size);
            let start = f.end / ALIGN * ALIGN;
            let len = ((f.end + bytes).div_ceil(ALIGN) * ALIGN - start) as usize;
            match f.file.write_at(&buf[..len], start) {
                Ok(n) if n == len => {}
                Ok(n) => return Err(format!("short O_DIRECT write at {start}: {n} of {len} bytes")),
                Err(e) => return Err(format!("O_DIRECT write of {len} bytes failed: {e}")),
            }
            if args.sync {
                f.file.sync_data().map_err(|e| format!("fdatasync failed: {e}"))?;
            }
            let done = Instant::now();
            for j in 0..n {
                let due = schedule.due(k + j * files);
                if due >= from && due < to {
                    report::record_us(&mut out.latency, done - due);
                    out.window_bytes += args.record_bytes;
                }
            }
            out.writes += 1;
            out.written_bytes += bytes;
            f.end += bytes;
            f.next += n;
            wrote = true;
        }
        if !wrote {
            if let Some(due) = earliest {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
    }
    Ok(out)
}

fn print_human(r: &LogBaseline) {
    println!(
        "ideal log on {}: {} file(s) written by {} thread(s), {}-byte records at {:.0}/s ({:.1} MB/s offered), {}{}{}",
        r.dir,
        r.files,
        r.threads,
        r.record_bytes,
        r.rate,
        r.offered_mb_per_s,
        if r.sync { "write + fdatasync" } else { "write only" },
        if r.zeroed { " over zeroed files" } else { "" },
        if r.busy_threads > 0 { format!(", beside {} busy thread(s)", r.busy_threads) } else { String::new() },
    );
    println!(
        "  written {:.1} MB/s in {} writes of {} on average; {} records not written",
        r.mb_per_s,
        r.writes,
        report::fmt_bytes(r.mean_write_bytes as u64),
        r.records_not_written
    );
    println!("  latency from due time: {}", r.latency_us.human());
    println!(
        "  machine stalled {:.1} % of the window (longest {:.0} ms)",
        100.0 * r.machine_stalls.share,
        r.machine_stalls.longest_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_due_on_the_schedule() {
        let t0 = Instant::now();
        let s = Schedule { t0, rate: 1000.0 };
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(1500), t0 + Duration::from_millis(1500));
        // At t0 only record 0 is due; 2 ms later, records 0..=2.
        assert_eq!(s.due_end(t0), 1);
        assert_eq!(s.due_end(t0 + Duration::from_millis(2)), 3);
        assert_eq!(s.due_end(t0 - Duration::from_millis(5)), 1);
    }

    #[test]
    fn files_hold_what_the_run_writes_within_bounds() {
        let args = |rate: f64, file_bytes: Option<u64>| LogArgs {
            dir: PathBuf::from("."),
            rate,
            record_bytes: 1024,
            files: 2,
            threads: None,
            sync: true,
            duration_secs: 10.0,
            warmup_secs: 2.0,
            max_write_bytes: 1 << 20,
            busy_threads: 0,
            file_bytes,
            zeroed: false,
            json: false,
        };
        // 48,828 records/s of 1 KiB for 13 s over 2 files, plus two largest writes, page-rounded.
        let b = file_bytes(&args(48_828.125, None));
        assert_eq!(b, (325_000_000u64 + (2 << 20)).div_ceil(4096) * 4096);
        assert_eq!(file_bytes(&args(1.0, None)), 4 << 20);
        assert_eq!(file_bytes(&args(1e9, None)), 1 << 30);
        assert_eq!(file_bytes(&args(1e9, Some(8 << 20))), 8 << 20);
    }

    #[test]
    fn an_ideal_log_writes_everything_due_and_measures_from_the_due_time() {
        let dir = std::env::temp_dir().join(format!("keel-bench-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = LogArgs {
            dir: dir.clone(),
            rate: 20_000.0,
            record_bytes: 1000,
            files: 2,
            threads: Some(1),
            sync: false,
            duration_secs: 0.5,
            warmup_secs: 0.1,
            max_write_bytes: 64 << 10,
            busy_threads: 0,
            file_bytes: Some(1 << 20),
            zeroed: false,
            json: true,
        };
        let r = match measure_log(&args) {
            Ok(r) => r,
            // tmpfs before Linux 6.6 refuses O_DIRECT: nothing to measure there.
            Err(e) if e.contains("O_DIRECT") => return,
            Err(e) => panic!("{e}"),
        };
        std::fs::remove_dir_all(&dir).unwrap();
        // Every record due in the window was written once: 20,000/s for 0.5 s, 1000 bytes each
        // (the 1 MiB files wrapped several times).
        assert_eq!(r.records_not_written, 0);
        assert!(r.latency_us.samples.abs_diff(10_000) <= 1, "{r:?}");
        assert!((r.mb_per_s - 20.0).abs() < 0.1, "{r:?}");
        assert!(r.writes > 0 && r.mean_write_bytes >= 1000.0, "{r:?}");
        // Latency is measured from the due time, so it is never below zero and is at most the
        // run's length.
        assert!(r.latency_us.max < 2_000_000, "{r:?}");
        assert!(validate(&LogArgs { rate: 0.0, ..args.clone() }).is_err());
        assert!(validate(&LogArgs { max_write_bytes: 1000, ..args }).is_err());
    }

    #[test]
    fn zeroed_files_are_written_full_of_zeros() {
        let path = std::env::temp_dir().join(format!("keel-bench-zeros-test-{}", std::process::id()));
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => f,
            // tmpfs before Linux 6.6 refuses O_DIRECT: nothing to measure there.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        };
        // Not a whole number of chunks, and over bytes that were not zero.
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let bytes = (1 << 20) + 3 * ALIGN;
        write_zeros(&file, bytes).unwrap();
        let content = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(content.len() as u64, bytes);
        assert!(content.iter().all(|&b| b == 0));
    }
}
