//! `keel-bench`: Keel's benchmark tool.
//!
//! It measures the disk and the storage engine, each on one glommio `LocalExecutor` pinned to one
//! CPU — the same thread-per-core shape the broker runs in — and a running broker:
//!
//! - `baseline disk`: the physical limit of the disk under a directory, through the I/O path the
//!   storage engine itself uses (glommio `DmaFile`, O_DIRECT, io_uring): sustained sequential write
//!   throughput with several large aligned writes in flight, and the latency of one durable small
//!   append (a 4 KiB write followed by `fdatasync`).
//! - `storage`: Keel's partition log (`keel_storage::Log`) under a closed-loop append load from
//!   concurrent tasks: append throughput and latency percentiles, sequential read-back throughput,
//!   and the time to recover a log after the process writing it was killed with SIGKILL.
//! - `produce`, `consume`, `e2e`: a running `keel serve` driven over the native protocol by
//!   producer and consumer threads (blocking `keel-client` connections, or librdkafka clients over
//!   the Kafka protocol with `--target kafka://`): throughput, produce-ack
//!   latency (open loop with coordinated-omission correction, or closed loop), end-to-end latency,
//!   and a check that every acknowledged record is read back exactly once, in order. See
//!   `broker`.
//! - `baseline net`: loopback TCP stream throughput and round-trip latency, the ceiling of
//!   every broker figure measured on one host.
//! - `run WORKLOAD --target URL...`: the benchmark rig. A workload file (`workload`) run against
//!   several brokers one after another with both baselines, into a results directory with the raw
//!   JSON, a Markdown report and SVG plots (`run`, `plot`); `compare` prints the ratios of two
//!   such results.
//!
//! Why ratios: absolute figures say as much about the machine as about Keel. The same code gives
//! 2.4 GB/s on one virtual disk and 400 MB/s on another, and even on one machine they drift from
//! run to run (host caches, noisy neighbours, thermal state). What is Keel's own is how close it
//! gets to what the hardware allows, so a comparison is made against a baseline measured with the
//! same tool in the same run, on the same disk, moments apart; figures from different runs or
//! machines are not compared directly. `storage --baseline` measures `baseline disk` first, in the
//! same process, and reports `mb_per_s_ratio`.
//!
//! Units: MB/s with MB = 10^6 bytes; latencies in microseconds, from HDR histograms (3 significant
//! digits). With `--json` a subcommand prints exactly one JSON object on stdout; notes and
//! warnings go to stderr. A failed measurement (I/O error, missing directory, ...) is printed to
//! stderr and the exit code is 1; a malformed command line exits with 2 (clap's convention).
//! An unreachable broker, or records lost, duplicated or reordered by it, also exit with 1 (the
//! result is still printed in the last case).

mod baseline;
mod baseline_log;
mod baseline_net;
mod broker;
mod compare;
mod plot;
mod report;
mod run;
mod storage;
mod workload;

use std::{future::Future, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use glommio::{LocalExecutorBuilder, Placement};

#[derive(Debug, Parser)]
#[command(
    name = "keel-bench",
    version,
    about = "Keel's benchmark tool: disk baseline, storage-engine and broker figures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The physical limits Keel's figures are compared with.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Keel's partition log: append throughput and latency, read-back throughput, recovery time
    /// after SIGKILL.
    Storage(storage::StorageArgs),
    /// A running broker under producer load: throughput and produce-ack latency (open loop with
    /// --rate, closed loop without).
    Produce(broker::ProduceArgs),
    /// A running broker under consumer load: read throughput from the start (or end) of a topic.
    Consume(broker::ConsumeArgs),
    /// Producers and consumers at once: produce-ack and end-to-end latency, and a check that every
    /// acknowledged record is read exactly once, in order.
    E2e(broker::E2eArgs),
    /// A workload file against one or more brokers, one after another, with the baselines, into
    /// a results directory (result.json, report.md, SVG plots).
    Run(run::RunArgs),
    /// Ratios between two `run` results (result.json files): B / A for every figure of every
    /// target they share.
    Compare(compare::CompareArgs),
    /// Internal: the process `storage` kills to measure recovery.
    #[command(hide = true)]
    StorageWriter(storage::WriterArgs),
}

#[derive(Debug, Subcommand)]
enum BaselineCommand {
    /// Sequential O_DIRECT write throughput and 4 KiB write + fdatasync latency of the disk under --dir.
    Disk(baseline::DiskArgs),
    /// Loopback TCP: stream throughput and 64-byte round-trip latency.
    Net(baseline_net::NetArgs),
    /// The latency floor of an ideal log on the disk under --dir at a given load (records due
    /// on a schedule, group-committed per file, latency from the due time, as for Keel).
    Log(baseline_log::LogArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // As the broker does: buffers freed are reused, not faulted in again, so that the load
    // generator's own page faults do not take CPU from the broker it shares the machine with.
    keel_storage::io::heap::retain_freed_memory();
    let result = match &cli.command {
        Command::Baseline(BaselineCommand::Disk(args)) => baseline::run_disk(args),
        Command::Baseline(BaselineCommand::Net(args)) => baseline_net::run_net(args),
        Command::Baseline(BaselineCommand::Log(args)) => baseline_log::run_log(args),
        Command::Run(args) => run::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Storage(args) => storage::run(args),
        Command::StorageWriter(args) => storage::run_writer(args),
        Command::Produce(args) => broker::run_produce(args),
        Command::Consume(args) => broker::run_consume(args),
        Command::E2e(args) => broker::run_e2e(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-bench: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `fut` to completion on a new glommio executor pinned to `cpu`, on this thread.
pub(crate) fn run_pinned<T>(cpu: usize, fut: impl Future<Output = T>) -> Result<T, String> {
    let ex = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("keel-bench")
        .make()
        .map_err(|e| format!("cannot start a glommio executor pinned to CPU {cpu}: {}", std::io::Error::from(e)))?;
    Ok(ex.run(fut))
}

/// Parses a byte count: `1024`, `4KiB`, `256MiB`, `1GiB` (binary), `1KB`, `1MB`, `1GB` (decimal);
/// `K`, `M`, `G` alone are binary; a space before the unit and any letter case are accepted.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 =
        num.replace('_', "").parse().map_err(|_| format!("not a size: {s:?} (e.g. 1024, 64KiB, 256MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("unknown size unit in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    num.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: `10s`, `500ms`, `2m`, `1h`, `250us`, `1.5s`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("not a duration: {s:?} (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => num,
        "ms" => num / 1e3,
        "us" | "µs" => num / 1e6,
        "m" | "min" | "mins" => num * 60.0,
        "h" => num * 3600.0,
        _ => return Err(format!("unknown duration unit in {s:?} (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
