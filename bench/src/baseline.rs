//! `keel-bench baseline disk`: the physical limits of the disk under a directory, measured with the
//! same I/O path the storage engine uses (glommio `DmaFile`, O_DIRECT, io_uring, one pinned core).
//!
//! Three figures:
//! - sustained sequential write throughput: aligned writes of `--block-bytes`, `--in-flight` of
//!   them outstanding at once, for `--duration-secs`, plus one closing `fdatasync` inside the
//!   timed interval;
//! - the latency of one durable small append: a 4 KiB aligned write at the next position followed
//!   by `fdatasync`, `--fsync-samples` times;
//! - the latency of one 64 KiB write at the next position without `fdatasync`, as many times:
//!   the floor of an append acknowledged once written (`acks=1`, `fsync.policy=never`).
//!
//! The scratch files are O_TMPFILE files where the filesystem supports it (unnamed, so they vanish
//! even if the process is killed); elsewhere a named `.keel-bench-*` file that is truncated and
//! removed on every exit path, errors included.

use std::{
    cell::Cell,
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use clap::Args;
use glommio::io::{DmaFile, OpenOptions};
use serde::Serialize;

use crate::report::{self, LatencySummary};

/// Size of the write-only latency samples: a typical append of a few dozen 1 KiB records.
const WRITE_LATENCY_BYTES: u64 = 64 << 10;

/// Alignment of every write: the page size, a multiple of any logical block size.
const ALIGN: u64 = 4096;
/// The largest single DMA write issued when the device's limit cannot be read.
const FALLBACK_MAX_IO: u64 = 128 << 10;
/// Never let the throughput file grow past this share of the free space; wrap around instead.
const FREE_SPACE_SHARE: u64 = 2;

#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// Directory on the disk to measure (must exist); a scratch file is created in it and removed.
    #[arg(long)]
    pub dir: PathBuf,
    /// How long to write sequentially, in seconds (at least 5 s so device caches do not flatter it).
    #[arg(long, default_value_t = 8.0)]
    pub duration_secs: f64,
    /// Size of each sequential write, in bytes; a multiple of 4096. Capped at the device's
    /// max_sectors_kb (larger DMA writes can hang glommio on some kernels).
    #[arg(long, default_value_t = 1 << 20)]
    pub block_bytes: u64,
    /// Number of sequential writes kept in flight at once.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Number of 4 KiB write + fdatasync samples.
    #[arg(long, default_value_t = 2000)]
    pub fsync_samples: u64,
    /// Size of the second write + fdatasync latency measurement (`group_fsync_latency_us`): the
    /// bytes one group commit writes when N appenders each append one batch (default: 8 × 64 KiB),
    /// the floor of a group commit of that size on this disk. 0 skips it.
    #[arg(long, default_value = "512KiB", value_parser = crate::parse_size)]
    pub group_bytes: u64,
    /// Largest size the throughput file may reach before writes wrap to its start (bytes); also
    /// capped at half the free space of the filesystem.
    #[arg(long, default_value_t = 32 << 30)]
    pub max_file_bytes: u64,
    /// CPU the glommio executor is pinned to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Print exactly one JSON object on stdout instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
}

/// The result of `baseline disk`, also the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct DiskBaseline {
    pub kind: &'static str,
    pub dir: String,
    /// Sequential write throughput, 10^6 bytes per second, closing fdatasync included.
    pub mb_per_s: f64,
    /// Size of each write actually issued.
    pub write_block_bytes: u64,
    pub in_flight: usize,
    /// Seconds from the first write to the end of the closing fdatasync.
    pub duration_s: f64,
    pub bytes_written: u64,
    /// The file size at which writes wrapped to offset 0 (0: they never wrapped).
    pub wrapped_at_bytes: u64,
    pub fsync_latency_us: LatencySummary,
    /// One `write_latency_bytes` O_DIRECT write at the next position, no fdatasync: the floor of
    /// an append that waits only for its write (`acks=1` under `fsync.policy=never`), and so of
    /// the end-to-end latency of records a consumer may read only once they are written.
    pub write_latency_us: LatencySummary,
    pub write_latency_bytes: u64,
    /// Write of `group_bytes` + fdatasync, each at the next position of a growing file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_fsync_latency_us: Option<LatencySummary>,
    pub group_bytes: u64,
}

pub fn run_disk(args: &DiskArgs) -> Result<(), String> {
    report::print_result(&measure_disk(args)?, args.json, print_human)
}

/// Runs both measurements on a pinned executor.
pub fn measure_disk(args: &DiskArgs) -> Result<DiskBaseline, String> {
    validate(args)?;
    let args = args.clone();
    crate::run_pinned(args.cpu, async move { measure_disk_here(&args).await })?
}

/// Runs both measurements on the current glommio executor (`args` already validated).
pub async fn measure_disk_here(args: &DiskArgs) -> Result<DiskBaseline, String> {
    let dir = &args.dir;
    prime_iopoll_probe(dir).await?;
    let probe = ScratchFile::create(dir).await?;
    let max_io = max_io_bytes(&probe.file);
    probe.discard().await;
    let io_bytes = args.block_bytes.min(max_io);
    if io_bytes < args.block_bytes {
        eprintln!(
            "note: --block-bytes {} is larger than the device's max_sectors_kb; writing {} at a time",
            args.block_bytes, io_bytes
        );
    }
    let wrap_at = wrap_limit(dir, args.max_file_bytes, io_bytes)?;

    let seq =
        sequential_write(dir, io_bytes, args.in_flight, Duration::from_secs_f64(args.duration_secs), wrap_at).await?;
    let fsync = append_latency(dir, ALIGN, args.fsync_samples, true).await?;
    let write = append_latency(dir, WRITE_LATENCY_BYTES.min(max_io), args.fsync_samples, false).await?;
    let group = if args.group_bytes > 0 {
        let samples = (args.fsync_samples / 4).max(1);
        Some(append_latency(dir, args.group_bytes.min(max_io), samples, true).await?)
    } else {
        None
    };
    Ok(DiskBaseline {
        kind: "baseline_disk",
        dir: dir.display().to_string(),
        mb_per_s: report::mb_per_s(seq.bytes, seq.elapsed.as_secs_f64()),
        write_block_bytes: io_bytes,
        in_flight: args.in_flight,
        duration_s: seq.elapsed.as_secs_f64(),
        bytes_written: seq.bytes,
        wrapped_at_bytes: if seq.wrapped { wrap_at } else { 0 },
        fsync_latency_us: fsync,
        write_latency_us: write,
        write_latency_bytes: WRITE_LATENCY_BYTES.min(max_io),
        group_fsync_latency_us: group,
        group_bytes: args.group_bytes.min(max_io),
    })
}

pub fn validate(args: &DiskArgs) -> Result<(), String> {
    match std::fs::metadata(&args.dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", args.dir.display())),
        Err(e) => return Err(format!("cannot use directory {}: {e}", args.dir.display())),
    }
    if !(args.duration_secs > 0.0 && args.duration_secs.is_finite()) {
        return Err("--duration-secs must be a positive number of seconds".into());
    }
    if args.duration_secs < 5.0 {
        eprintln!("warning: --duration-secs below 5 s lets device and host caches flatter the figure");
    }
    if args.block_bytes == 0 || args.block_bytes & (ALIGN - 1) != 0 {
        return Err(format!("--block-bytes must be a positive multiple of {ALIGN}, not {}", args.block_bytes));
    }
    if args.in_flight == 0 {
        return Err("--in-flight must be at least 1".into());
    }
    if args.group_bytes & (ALIGN - 1) != 0 {
        return Err(format!("--group-bytes must be a multiple of {ALIGN}, not {}", args.group_bytes));
    }
    if args.fsync_samples == 0 {
        return Err("--fsync-samples must be at least 1".into());
    }
    Ok(())
}

pub fn print_human(r: &DiskBaseline) {
    println!("baseline disk: {}", r.dir);
    println!(
        "  sequential O_DIRECT write: {:.1} MB/s (MB = 10^6 bytes): {} in {:.2} s, {} writes, {} in flight, closing fdatasync included",
        r.mb_per_s,
        report::fmt_bytes(r.bytes_written),
        r.duration_s,
        report::fmt_bytes(r.write_block_bytes),
        r.in_flight
    );
    if r.wrapped_at_bytes > 0 {
        println!(
            "  (the file was capped at {} and writes wrapped to its start)",
            report::fmt_bytes(r.wrapped_at_bytes)
        );
    }
    println!("  4 KiB write + fdatasync latency: {}", r.fsync_latency_us.human());
    println!(
        "  {} write latency (no fdatasync): {}",
        report::fmt_bytes(r.write_latency_bytes),
        r.write_latency_us.human()
    );
    if let Some(group) = &r.group_fsync_latency_us {
        println!("  {} write + fdatasync latency: {}", report::fmt_bytes(r.group_bytes), group.human());
    }
}

/// See [`keel_storage::io::dma::prime_poll_probe`]: glommio must probe polled-I/O support on a
/// non-empty file, or every later read on the device fails.
pub async fn prime_iopoll_probe(dir: &Path) -> Result<(), String> {
    keel_storage::io::dma::prime_poll_probe(dir).await.map_err(|e| format!("cannot probe {}: {e}", dir.display()))
}

/// A scratch file in the measured directory, removed whatever happens.
struct ScratchFile {
    file: Rc<DmaFile>,
    /// `Some` for a named file (no O_TMPFILE support): removed on drop.
    named: Option<NamedGuard>,
}

struct NamedGuard(PathBuf);

impl Drop for NamedGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ScratchFile {
    async fn create(dir: &Path) -> Result<Self, String> {
        let tmp = OpenOptions::new().read(true).write(true).tmpfile(true).dma_open(dir).await;
        match tmp {
            Ok(file) => return Ok(Self { file: Rc::new(file), named: None }),
            Err(e) => {
                let io: std::io::Error = e.into();
                // EOPNOTSUPP / EISDIR / EINVAL: no O_TMPFILE here; anything else is a real error.
                let unsupported =
                    matches!(io.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL));
                if !unsupported {
                    return Err(format!("cannot create a scratch file in {}: {io}", dir.display()));
                }
            }
        }
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = dir.join(format!(".keel-bench-{}-{nanos}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| format!("cannot create scratch file {}: {}", path.display(), std::io::Error::from(e)))?;
        Ok(Self { file: Rc::new(file), named: Some(NamedGuard(path)) })
    }

    /// Frees the file's blocks, closes and removes it; errors are ignored (the guard still removes
    /// a named file, and an unnamed one vanishes when closed).
    async fn discard(self) {
        let _ = self.file.truncate(0).await;
        if let Ok(file) = Rc::try_unwrap(self.file) {
            let _ = file.close().await;
        }
        drop(self.named);
    }
}

/// The largest write the device accepts in one request (its max_sectors_kb), read from sysfs.
fn max_io_bytes(file: &DmaFile) -> u64 {
    let dev = format!("/sys/dev/block/{}:{}", file.dev_major(), file.dev_minor());
    // A partition has no queue/ of its own: its parent disk's applies.
    for candidate in [format!("{dev}/queue/max_sectors_kb"), format!("{dev}/../queue/max_sectors_kb")] {
        if let Ok(s) = std::fs::read_to_string(&candidate) {
            if let Ok(kb) = s.trim().parse::<u64>() {
                if kb > 0 {
                    return (kb << 10) / ALIGN * ALIGN;
                }
            }
        }
    }
    FALLBACK_MAX_IO
}

/// Where sequential writes wrap back to offset 0: `max_file_bytes`, or half the free space if that
/// is smaller, rounded down to whole writes.
fn wrap_limit(dir: &Path, max_file_bytes: u64, io_bytes: u64) -> Result<u64, String> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    let limit = if rc == 0 {
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        max_file_bytes.min(free / FREE_SPACE_SHARE)
    } else {
        max_file_bytes
    };
    let limit = limit / io_bytes * io_bytes;
    if limit < io_bytes.saturating_mul(16) {
        return Err(format!(
            "not enough free space in {} for a meaningful write test (limit {})",
            dir.display(),
            report::fmt_bytes(limit)
        ));
    }
    Ok(limit)
}

struct SeqResult {
    bytes: u64,
    elapsed: Duration,
    wrapped: bool,
}

/// `in_flight` tasks each loop "claim the next position, write one block there" until the
/// deadline; then one fdatasync. Time runs from the first write to the end of the fdatasync.
async fn sequential_write(
    dir: &Path,
    io_bytes: u64,
    in_flight: usize,
    duration: Duration,
    wrap_at: u64,
) -> Result<SeqResult, String> {
    let scratch = ScratchFile::create(dir).await?;
    let result = sequential_write_into(&scratch.file, io_bytes, in_flight, duration, wrap_at).await;
    scratch.discard().await;
    result
}

async fn sequential_write_into(
    file: &Rc<DmaFile>,
    io_bytes: u64,
    in_flight: usize,
    duration: Duration,
    wrap_at: u64,
) -> Result<SeqResult, String> {
    let mut buf = file.alloc_dma_buffer(io_bytes as usize);
    report::fill_pseudo_random(buf.as_bytes_mut(), 0x9E37_79B9_7F4A_7C15);
    let buf = Rc::new(buf);

    let next_pos = Rc::new(Cell::new(0u64));
    let written = Rc::new(Cell::new(0u64));
    let wrapped = Rc::new(Cell::new(false));
    let stop = Rc::new(Cell::new(false));

    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (file, buf) = (file.clone(), buf.clone());
            let (next_pos, written, wrapped, stop) = (next_pos.clone(), written.clone(), wrapped.clone(), stop.clone());
            glommio::spawn_local(async move {
                while !stop.get() && Instant::now() < deadline {
                    let mut pos = next_pos.get();
                    if pos + io_bytes > wrap_at {
                        pos = 0;
                        wrapped.set(true);
                    }
                    next_pos.set(pos + io_bytes);
                    match file.write_rc_at(buf.clone(), pos).await {
                        Ok(n) if n as u64 == io_bytes => written.set(written.get() + io_bytes),
                        Ok(n) => {
                            stop.set(true);
                            return Err(format!("short O_DIRECT write at {pos}: {n} of {io_bytes} bytes"));
                        }
                        Err(e) => {
                            stop.set(true);
                            return Err(format!("O_DIRECT write at {pos} failed: {}", std::io::Error::from(e)));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    file.fdatasync()
        .await
        .map_err(|e| format!("fdatasync after the sequential writes failed: {}", std::io::Error::from(e)))?;
    Ok(SeqResult { bytes: written.get(), elapsed: start.elapsed(), wrapped: wrapped.get() })
}

/// `samples` times: write one `bytes` block at the next position, then fdatasync; each pair timed.
/// Latency of a `bytes` write at the next position of a growing file, each followed by an
/// fdatasync when `sync` (a durable append) or not (what an `acks=1` append waits for).
async fn append_latency(dir: &Path, bytes: u64, samples: u64, sync: bool) -> Result<LatencySummary, String> {
    let scratch = ScratchFile::create(dir).await?;
    let result = append_latency_into(&scratch.file, bytes, samples, sync).await;
    scratch.discard().await;
    result
}

async fn append_latency_into(
    file: &Rc<DmaFile>,
    bytes: u64,
    samples: u64,
    sync: bool,
) -> Result<LatencySummary, String> {
    let mut buf = file.alloc_dma_buffer(bytes as usize);
    report::fill_pseudo_random(buf.as_bytes_mut(), 0x2545_F491_4F6C_DD1D);
    let buf = Rc::new(buf);
    let mut hist = report::latency_histogram();
    for i in 0..samples {
        let pos = i * bytes;
        let t0 = Instant::now();
        let n = file
            .write_rc_at(buf.clone(), pos)
            .await
            .map_err(|e| format!("{bytes}-byte O_DIRECT write at {pos} failed: {}", std::io::Error::from(e)))?;
        if n as u64 != bytes {
            return Err(format!("short {bytes}-byte write at {pos}: {n} bytes"));
        }
        if sync {
            file.fdatasync().await.map_err(|e| {
                format!("fdatasync after the {bytes}-byte write at {pos} failed: {}", std::io::Error::from(e))
            })?;
        }
        report::record_us(&mut hist, t0.elapsed());
    }
    Ok(LatencySummary::from_histogram(&hist))
}
