//! `keel-bench run WORKLOAD --target URL [--target URL ...]`: one workload against several
//! brokers, one after another on this machine, with the physical limits measured in the same run,
//! written to a results directory a person can open.
//!
//! Order: `baseline net` (loopback TCP), `baseline disk` (with `--disk-dir`, which should be on the
//! broker's disk), then each target in the order given, each on its own new topic or topics
//! (deleted afterwards unless `--keep-topics`). A target that fails (unreachable, an error mid-run, a
//! failed verification) is reported as such and the others still run; the exit code is 1 if any
//! failed.
//!
//! Results (`--out`, default `results/<UTC time>-<workload>/`):
//! - `result.json`: the machine (host, kernel, CPU, cores, memory), keel-bench's version, the
//!   workload as parsed, the baselines, and per target what the broker says it is (Keel: its
//!   version; a Kafka-protocol broker: its API version ranges and finalized features, the
//!   protocol having no version) and every figure of the `produce`/`e2e` JSON — latency
//!   summaries and percentile curves, the per-second series, the verification;
//! - `report.md`: the summary table, baseline fractions, and the plots:
//!   `latency.svg` (produce-ack percentile curves of every target on one chart), `e2e-latency.svg`
//!   (with consumers), `throughput.svg` and `p99.svg` (per second over the run).
//!
//! `keel-bench compare A.json B.json` reads two `result.json` files (see [`crate::compare`]).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    baseline::{self, DiskArgs},
    baseline_net::{self, NetArgs},
    broker::{
        self,
        args::{parse_target, KafkaProducerArg, Target, Topics},
        E2eArgs, ProduceArgs,
    },
    plot::{self, Series},
    report,
    workload::Workload,
};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The workload file (TOML; the format and the standard workloads are in bench/workloads/).
    pub workload: PathBuf,
    /// A broker to run the workload against: keel://HOST:PORT (native protocol) or
    /// kafka://HOST:PORT (any Kafka-protocol broker: Keel's Kafka listener, Apache Kafka,
    /// Redpanda). Repeat for several; they run one after another and are reported side by side.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// Measure for this long instead of the workload's `duration`.
    #[arg(long, value_parser = crate::parse_duration)]
    pub duration: Option<Duration>,
    /// Results directory [default: results/<UTC time>-<workload name>].
    #[allow(rustdoc::invalid_html_tags)] // the text is --help's, not HTML
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure the disk baseline in this directory — put it on the disk the brokers write to.
    /// Without it the disk baseline is skipped (and said so).
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
    /// Seconds of sequential writing for the disk baseline.
    #[arg(long, default_value_t = 8.0)]
    pub disk_secs: f64,
    /// Skip both baselines.
    #[arg(long)]
    pub no_baselines: bool,
    /// kafka:// targets: the producers' client (librdkafka, or keel-bench's `wire` producer: the
    /// native producer's requests over Kafka's protocol; see `produce --help`).
    #[arg(long, value_enum, default_value_t = KafkaProducerArg::Librdkafka)]
    pub kafka_producer: KafkaProducerArg,
    /// Keep each target's topic after its run (default: deleted).
    #[arg(long)]
    pub keep_topics: bool,
    /// No progress lines; only the summary and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One target's outcome.
#[derive(Debug, Serialize)]
struct TargetOutcome {
    target: String,
    topic: String,
    ok: bool,
    /// What the broker said it is (see [`broker::describe_broker`]); absent if it could not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The `produce` (no consumers) or `e2e` result object.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
}

pub fn run(args: &RunArgs) -> Result<(), String> {
    let workload = Workload::load(&args.workload)?;
    for t in &args.targets {
        // Every target's arguments are checked before anything runs.
        workload.plan(t, "check", args.duration)?;
    }
    let started = SystemTime::now();
    let stamp = utc_stamp(started);
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/{stamp}-{}", workload.name)));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let say = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    say(format!("keel-bench run {} -> {}", workload.name, out.display()));

    let mut baselines = serde_json::Map::new();
    if !args.no_baselines {
        say("== baseline net (loopback TCP)".into());
        let net = baseline_net::measure_net(&NetArgs { duration_secs: 3.0, samples: 20_000, json: true })?;
        say(format!("   {:.0} MB/s; 64-byte round trip {}", net.mb_per_s, net.round_trip_us.human()));
        baselines.insert("net".into(), serde_json::to_value(&net).map_err(|e| e.to_string())?);
        match &args.disk_dir {
            Some(dir) => {
                say(format!("== baseline disk ({})", dir.display()));
                // On a thread of its own: its executor pins the thread it runs on to one CPU, and
                // the load threads started later from this one would inherit that.
                let disk_args = disk_args(dir, args.disk_secs);
                let disk = std::thread::spawn(move || baseline::measure_disk(&disk_args))
                    .join()
                    .map_err(|_| "the disk baseline panicked".to_string())??;
                say(format!("   {:.0} MB/s; 4 KiB write+fdatasync {}", disk.mb_per_s, disk.fsync_latency_us.human()));
                baselines.insert("disk".into(), serde_json::to_value(&disk).map_err(|e| e.to_string())?);
            }
            None => say("   (no --disk-dir: the disk baseline is skipped)".into()),
        }
    }

    let mut outcomes = Vec::new();
    for (i, target) in args.targets.iter().enumerate() {
        let topic = format!("bench-{}-{stamp}-{i}", workload.name).to_ascii_lowercase();
        say(format!("== {target} (topic {topic})"));
        let outcome = run_target(&workload, target, &topic, args);
        if let Some(e) = &outcome.error {
            eprintln!("keel-bench: {target}: {e}");
        } else if let Some(r) = &outcome.result {
            say(format!("   {}", one_line(r)));
        }
        if !args.keep_topics && outcome.result.is_some() {
            let layout = Topics::new(&topic, workload.topics.count, workload.topics.partitions);
            for topic in layout.names() {
                if let Err(e) = broker::delete_topic(target, topic) {
                    eprintln!("keel-bench: warning: could not delete topic {topic} on {target}: {e}");
                }
            }
        }
        outcomes.push(outcome);
    }

    let result = json!({
        "kind": "run",
        "workload": workload,
        "workload_file": args.workload.display().to_string(),
        "started_at": stamp,
        "machine": machine(),
        "keel_bench_version": env!("CARGO_PKG_VERSION"),
        "baselines": baselines,
        "targets": outcomes,
    });
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    write(&out.join("result.json"), &text)?;
    let report = write_report(&out, &result)?;
    println!("{report}");
    println!("results: {}", out.display());
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.ok).map(|o| o.target.as_str()).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {} targets failed: {}", failed.len(), outcomes.len(), failed.join(", ")))
    }
}

fn run_target(workload: &Workload, target: &Target, topic: &str, args: &RunArgs) -> TargetOutcome {
    let broker = broker::describe_broker(target)
        .map_err(|e| eprintln!("keel-bench: warning: {target} did not say what it is: {e}"))
        .ok();
    let mut outcome = TargetOutcome {
        target: target.to_string(),
        topic: topic.to_owned(),
        ok: false,
        broker,
        error: None,
        result: None,
    };
    let mut plan = match workload.plan(target, topic, args.duration) {
        Ok(plan) => plan,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    plan.common.report_interval = if args.quiet { Duration::ZERO } else { Duration::from_secs(5) };
    plan.producer.kafka_producer = args.kafka_producer;
    let measured = if plan.consumers == 0 {
        broker::measure_produce(&ProduceArgs { common: plan.common, producer: plan.producer }).map(|r| (r, None))
    } else {
        broker::measure_e2e(&E2eArgs {
            common: plan.common,
            producer: plan.producer,
            consumers: plan.consumers,
            fetch_max_bytes: plan.fetch_max_bytes,
            consumers_paused_for: plan.consumers_paused_for,
            group: plan.group,
        })
    };
    match measured {
        Ok((result, failed)) => {
            outcome.ok = failed.is_none();
            outcome.error = failed.map(|why| format!("verification failed: {why}"));
            outcome.result = serde_json::to_value(&result).ok();
        }
        Err(e) => outcome.error = Some(e),
    }
    outcome
}

fn disk_args(dir: &Path, secs: f64) -> DiskArgs {
    DiskArgs {
        dir: dir.to_owned(),
        duration_secs: secs,
        block_bytes: 1 << 20,
        in_flight: 4,
        fsync_samples: 2000,
        group_bytes: 512 << 10,
        max_file_bytes: 32 << 30,
        cpu: 0,
        json: true,
    }
}

/// `20261128T231558Z`.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// What the results say about where they were measured.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({
        "hostname": read("/proc/sys/kernel/hostname").trim(),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": read("/proc/sys/kernel/ostype").trim(),
        "cpu_model": cpu_model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_bytes": mem_kib * 1024,
    })
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `keel 0.1.0`, or for a Kafka-protocol broker its `metadata.version` and Produce/Fetch ranges.
fn describe_broker(b: &Value) -> String {
    if let Some(version) = b["version"].as_str() {
        return format!("{} {version}", b["software"].as_str().unwrap_or("?"));
    }
    if b["protocol"] == "kafka" {
        let range = |api: &str| match b["api_versions"][api].as_array().map(Vec::as_slice) {
            Some([min, max]) => format!("{api} v{min}–v{max}"),
            _ => format!("no {api}"),
        };
        let level = b["finalized_features"]["metadata.version"].as_i64();
        let features = level.map_or("no finalized metadata.version".into(), |l| format!("metadata.version {l}"));
        return format!("a Kafka-protocol broker ({features}; {}, {})", range("Produce"), range("Fetch"));
    }
    "broker not identified".into()
}

fn lat(v: &Value, key: &str, p: &str) -> String {
    v.get(key).and_then(|l| l.get(p)).and_then(Value::as_u64).map_or("–".into(), report::fmt_us)
}

/// Table cells ("a | b | c") of the percentiles `ps` of latency summary `key`.
fn lat_cells(v: &Value, key: &str, ps: &[&str]) -> String {
    ps.iter().map(|p| lat(v, key, p)).collect::<Vec<_>>().join(" | ")
}

fn one_line(r: &Value) -> String {
    let mut line =
        format!("{:.1} MB/s, {:.0} records/s", f(r, "mb_per_s").unwrap_or(0.0), f(r, "records_per_s").unwrap_or(0.0));
    if r.get("latency_us").is_some_and(|l| !l.is_null()) {
        let _ = write!(line, "; ack p50 {} p99 {}", lat(r, "latency_us", "p50"), lat(r, "latency_us", "p99"));
    }
    if r.get("e2e_latency_us").is_some() {
        let _ = write!(line, "; e2e p99 {}", lat(r, "e2e_latency_us", "p99"));
    }
    line
}

/// Writes report.md and the plots; returns the summary table (Markdown) for the terminal.
fn write_report(out: &Path, result: &Value) -> Result<String, String> {
    let targets = result["targets"].as_array().cloned().unwrap_or_default();
    let disk = result["baselines"].get("disk").and_then(|d| f(d, "mb_per_s"));
    let net = result["baselines"].get("net").and_then(|d| f(d, "mb_per_s"));
    let w = &result["workload"];
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| target | MB/s | records/s | of disk | of net | ack p50 | ack p99 | ack p99.9 | ack p99.99 | e2e p50 | e2e p99 | e2e p99.99 | verified | machine stalled |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for t in &targets {
        let name = t["target"].as_str().unwrap_or("?");
        let Some(r) = t.get("result").filter(|r| !r.is_null()) else {
            let _ = writeln!(table, "| {name} | failed: {} ||||||||||||", t["error"].as_str().unwrap_or("?"));
            continue;
        };
        let mb = f(r, "mb_per_s").unwrap_or(0.0);
        let share = |base: Option<f64>| base.map_or("–".into(), |b| format!("{:.1} %", 100.0 * mb / b));
        let verified = match r.get("verification") {
            Some(v) if v["ok"] == true => "yes".to_string(),
            Some(_) => format!("**NO**: {}", t["error"].as_str().unwrap_or("")),
            None => "–".into(),
        };
        // The share of the window the machine itself stood still (a frozen virtual machine).
        let stalled = r
            .get("machine_stalls")
            .and_then(|m| Some((f(m, "share")?, f(m, "longest_ms")?)))
            .map_or("–".to_string(), |(share, longest)| format!("{:.1} % (longest {longest:.0} ms)", 100.0 * share));
        let _ = writeln!(
            table,
            "| {name} | {mb:.1} | {:.0} | {} | {} | {} | {} | {verified} | {stalled} |",
            f(r, "records_per_s").unwrap_or(0.0),
            share(disk),
            share(net),
            lat_cells(r, "latency_us", &["p50", "p99", "p999", "p9999"]),
            lat_cells(r, "e2e_latency_us", &["p50", "p99", "p9999"]),
        );
    }

    let results: Vec<(&str, &Value)> = targets
        .iter()
        .filter_map(|t| Some((t["target"].as_str()?, t.get("result").filter(|r| !r.is_null())?)))
        .collect();
    let curve = |key: &str| -> Vec<Series> {
        results
            .iter()
            .filter_map(|(name, r)| {
                let points: Vec<(f64, f64)> = r
                    .get(key)?
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                    .collect();
                (!points.is_empty()).then(|| Series { label: name.to_string(), points })
            })
            .collect()
    };
    let over_time = |key: &str, scale: f64| -> Vec<Series> {
        results
            .iter()
            .map(|(name, r)| Series {
                label: name.to_string(),
                points: r["series"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|p| Some((p.get("t_s")?.as_f64()?, p.get(key)?.as_f64()? * scale)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    };
    let mut plots = Vec::new();
    let ack = curve("latency_curve_us");
    if !ack.is_empty() {
        plot::latency_percentiles_svg(&out.join("latency.svg"), "Produce-ack latency by percentile", &ack)?;
        plots.push(("latency.svg", "produce-ack latency by percentile, every target"));
    }
    let e2e = curve("e2e_latency_curve_us");
    if !e2e.is_empty() {
        plot::latency_percentiles_svg(&out.join("e2e-latency.svg"), "End-to-end latency by percentile", &e2e)?;
        plots.push(("e2e-latency.svg", "end-to-end latency by percentile"));
    }
    if !results.is_empty() {
        let produced = over_time("produced_mb_per_s", 1.0);
        plot::time_series_svg(
            &out.join("throughput.svg"),
            "Produced (acknowledged) MB/s per second",
            "MB/s",
            &produced,
            false,
        )?;
        plots.push(("throughput.svg", "acknowledged MB/s, second by second"));
        let p99 = over_time("ack_p99_us", 1e-3);
        if p99.iter().any(|s| !s.points.is_empty()) {
            plot::time_series_svg(&out.join("p99.svg"), "Produce-ack p99 per second", "ms", &p99, true)?;
            plots.push(("p99.svg", "produce-ack p99, second by second"));
        }
        let e2e_p99 = over_time("e2e_p99_us", 1e-3);
        if e2e_p99.iter().any(|s| !s.points.is_empty()) {
            plot::time_series_svg(&out.join("e2e-p99.svg"), "End-to-end p99 per second", "ms", &e2e_p99, true)?;
            plots.push(("e2e-p99.svg", "end-to-end p99, second by second"));
        }
    }

    let mut md = String::new();
    let _ = writeln!(md, "# keel-bench run: {}\n", w["name"].as_str().unwrap_or("?"));
    if let Some(d) = w["description"].as_str().filter(|d| !d.is_empty()) {
        let _ = writeln!(md, "{d}\n");
    }
    let rate = match w["producers"]["rate"].as_f64() {
        Some(r) => format!("open loop at {r:.0} records/s"),
        None => "closed loop".into(),
    };
    let _ = writeln!(
        md,
        "Load: {} topic(s) × {} partitions; {} producers, {rate}, acks={}; {} consumers.\n",
        w["topics"]["count"],
        w["topics"]["partitions"],
        w["producers"]["count"],
        w["producers"]["acks"].as_str().unwrap_or("?"),
        w["consumers"]["count"],
    );
    let m = &result["machine"];
    let _ = writeln!(
        md,
        "Started {} on {} ({}, {} CPUs, {} GiB, Linux {}); keel-bench {}. Workload file `{}`; every figure \
         in `result.json`.\n",
        result["started_at"].as_str().unwrap_or("?"),
        m["hostname"].as_str().unwrap_or("?"),
        m["cpu_model"].as_str().unwrap_or("?"),
        m["cpus"],
        m["memory_bytes"].as_u64().unwrap_or(0) >> 30,
        m["kernel"].as_str().unwrap_or("?"),
        result["keel_bench_version"].as_str().unwrap_or("?"),
        result["workload_file"].as_str().unwrap_or("?"),
    );
    for t in result["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "- {}: {}", t["target"].as_str().unwrap_or("?"), describe_broker(&t["broker"]));
    }
    md.push('\n');
    let _ = writeln!(md, "## Baselines (same run)\n");
    match result["baselines"].get("net") {
        Some(n) => {
            let _ = writeln!(
                md,
                "- loopback TCP: {:.0} MB/s; 64-byte round trip p50 {}, p99 {}",
                f(n, "mb_per_s").unwrap_or(0.0),
                lat(n, "round_trip_us", "p50"),
                lat(n, "round_trip_us", "p99")
            );
        }
        None => md.push_str("- loopback TCP: not measured\n"),
    }
    match result["baselines"].get("disk") {
        Some(d) => {
            let _ = writeln!(
                md,
                "- disk ({}): {:.0} MB/s sequential O_DIRECT; 4 KiB write + fdatasync p50 {}, p99 {}; \
                 64 KiB write alone p50 {}, p99 {}",
                d["dir"].as_str().unwrap_or("?"),
                f(d, "mb_per_s").unwrap_or(0.0),
                lat(d, "fsync_latency_us", "p50"),
                lat(d, "fsync_latency_us", "p99"),
                lat(d, "write_latency_us", "p50"),
                lat(d, "write_latency_us", "p99")
            );
        }
        None => md.push_str("- disk: not measured (no `--disk-dir`)\n"),
    }
    let _ = writeln!(
        md,
        "\n## Results\n\nMB/s = 10^6 bytes of record values + keys per second, acknowledged in the measurement \
         window; \"of disk\" / \"of net\" = that as a share of the baseline. Latencies are per record, open loop \
         with coordinated-omission correction when the workload has a rate. \"machine stalled\" = the share of \
         the window in which the machine ran nothing of keel-bench (a watchdog thread, at real-time priority where \
         allowed, woke more than 4 ms late: a virtual machine frozen by its host); latency percentiles above 100 % minus that share measure the \
         machine, not the target.\n"
    );
    md.push_str(&table);
    let phased: Vec<(&str, &Vec<Value>)> =
        targets.iter().filter_map(|t| Some((t["target"].as_str()?, t["result"]["phases"].as_array()?))).collect();
    if !phased.is_empty() {
        let _ = writeln!(
            md,
            "\n## Phases\n\nEach phase's seconds after the start of the load (the first phase's warmup left \
             out); MB/s is the mean of those seconds; latencies are of the records acknowledged (read) in them.\n\n\
             | target | phase | seconds | offered records/s | consumers | produced MB/s | consumed MB/s | ack p50 | \
             ack p99 | ack p99.9 | e2e p50 | e2e p99 | e2e p99.9 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for (target, phases) in phased {
            for ph in phases {
                let _ = writeln!(
                    md,
                    "| {target} | {} | {}–{} | {} | {} | {:.1} | {:.1} | {} | {} |",
                    ph["name"].as_str().unwrap_or("?"),
                    ph["from_s"],
                    ph["to_s"],
                    f(ph, "offered_records_per_s").map_or("closed loop".into(), |r| format!("{r:.0}")),
                    ph["consumers"].as_str().unwrap_or("?"),
                    f(ph, "produced_mb_per_s").unwrap_or(0.0),
                    f(ph, "consumed_mb_per_s").unwrap_or(0.0),
                    lat_cells(ph, "ack_latency_us", &["p50", "p99", "p999"]),
                    lat_cells(ph, "e2e_latency_us", &["p50", "p99", "p999"]),
                );
            }
        }
    }
    if !plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for (file, what) in &plots {
            let _ = writeln!(md, "- {what}: [{file}]({file})\n\n  ![{what}]({file})\n");
        }
    }
    write(&out.join("report.md"), &md)?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        // 2026-11-28 23:15:58 UTC.
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_907_758)), "20261128T231558Z");
        // A leap day.
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229T000000Z");
    }
}
