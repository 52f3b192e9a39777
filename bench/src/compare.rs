//! `keel-bench compare A.json B.json`: how result B differs from result A, figure by figure.
//!
//! Both are `result.json` files of `keel-bench run`. Targets are paired by URL when both runs
//! have it, otherwise by position (the same workload against a broker on another port, say).
//! For every figure both have: A, B and B / A. Throughput is also compared as a share of each
//! run's own baselines, the only comparison that means something across machines or days.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The reference result (result.json of `keel-bench run`).
    pub a: PathBuf,
    /// The result compared with it.
    pub b: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// (label, path in a target's result object, higher is better).
const FIGURES: [(&str, &[&str], bool); 10] = [
    ("MB/s", &["mb_per_s"], true),
    ("records/s", &["records_per_s"], true),
    ("ack p50 µs", &["latency_us", "p50"], false),
    ("ack p99 µs", &["latency_us", "p99"], false),
    ("ack p99.9 µs", &["latency_us", "p999"], false),
    ("ack p99.99 µs", &["latency_us", "p9999"], false),
    ("e2e p50 µs", &["e2e_latency_us", "p50"], false),
    ("e2e p99 µs", &["e2e_latency_us", "p99"], false),
    ("e2e p99.99 µs", &["e2e_latency_us", "p9999"], false),
    ("consumed MB/s", &["consume_mb_per_s"], true),
];

pub fn run(args: &CompareArgs) -> Result<(), String> {
    let load = |p: &PathBuf| -> Result<Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", p.display()))?;
        if v["kind"] != "run" {
            return Err(format!("{} is not a `keel-bench run` result.json", p.display()));
        }
        Ok(v)
    };
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    let rows = compare(&a, &b)?;
    if args.json {
        crate::report::print_json(&json!({ "kind": "compare", "a": args.a, "b": args.b, "rows": rows }))
    } else {
        println!("A = {}\nB = {}\n", args.a.display(), args.b.display());
        println!("| A target | B target | figure | A | B | B / A |");
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            let ratio = r["ratio"].as_f64().map_or("–".into(), |x| format!("{x:.3}"));
            let better = match r["better"].as_bool() {
                Some(true) => " (better)",
                Some(false) => " (worse)",
                None => "",
            };
            println!(
                "| {} | {} | {} | {} | {} | {ratio}{better} |",
                r["a_target"].as_str().unwrap_or(""),
                r["b_target"].as_str().unwrap_or(""),
                r["figure"].as_str().unwrap_or(""),
                fmt(&r["a"]),
                fmt(&r["b"]),
            );
        }
        Ok(())
    }
}

fn fmt(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    }
}

/// A target's URL and its result object.
type Outcome = (String, Value);

fn targets(run: &Value) -> Vec<Outcome> {
    run["targets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    Some((t["target"].as_str()?.to_owned(), t.get("result").filter(|r| !r.is_null())?.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rows of the comparison: one per (target pair, figure both have).
pub fn compare(a: &Value, b: &Value) -> Result<Vec<Value>, String> {
    let (ta, tb) = (targets(a), targets(b));
    if ta.is_empty() || tb.is_empty() {
        return Err("a result has no successful target to compare".into());
    }
    let by_url = ta.iter().all(|(u, _)| tb.iter().any(|(v, _)| u == v));
    let pairs: Vec<(&Outcome, &Outcome)> = if by_url {
        ta.iter().filter_map(|x| Some((x, tb.iter().find(|y| y.0 == x.0)?))).collect()
    } else {
        ta.iter().zip(tb.iter()).collect()
    };
    let mut rows = Vec::new();
    for ((ua, ra), (ub, rb)) in pairs {
        let mut row = |figure: &str, x: Option<f64>, y: Option<f64>, higher_better: bool| {
            if let (Some(x), Some(y)) = (x, y) {
                let ratio = (x != 0.0).then(|| y / x);
                let better = ratio.filter(|r| (r - 1.0).abs() > 1e-9).map(|r| (r > 1.0) == higher_better);
                rows.push(json!({
                    "a_target": ua, "b_target": ub, "figure": figure,
                    "a": x, "b": y, "ratio": ratio, "better": better,
                }));
            }
        };
        for (label, path, higher) in FIGURES {
            row(label, get(ra, path), get(rb, path), higher);
        }
        for base in ["disk", "net"] {
            let share =
                |run: &Value, r: &Value| Some(get(r, &["mb_per_s"])? / get(&run["baselines"], &[base, "mb_per_s"])?);
            row(&format!("MB/s as a share of the {base} baseline"), share(a, ra), share(b, rb), true);
        }
    }
    Ok(rows)
}

fn get(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(targets: &[(&str, f64, u64)], disk: f64) -> Value {
        json!({
            "kind": "run",
            "baselines": { "disk": { "mb_per_s": disk } },
            "targets": targets.iter().map(|(url, mb, p99)| json!({
                "target": url, "ok": true,
                "result": { "mb_per_s": mb, "records_per_s": mb * 1000.0, "latency_us": { "p50": 100, "p99": p99 } }
            })).collect::<Vec<_>>(),
        })
    }

    fn find<'a>(rows: &'a [Value], target: &str, figure: &str) -> &'a Value {
        rows.iter().find(|r| r["a_target"] == target && r["figure"] == figure).unwrap()
    }

    #[test]
    fn ratios_by_url_with_direction() {
        let a = run(&[("keel://h:1", 100.0, 2000), ("kafka://h:2", 50.0, 4000)], 1000.0);
        let b = run(&[("kafka://h:2", 75.0, 2000), ("keel://h:1", 80.0, 3000)], 500.0);
        let rows = compare(&a, &b).unwrap();
        let r = find(&rows, "keel://h:1", "MB/s");
        assert_eq!(
            (r["b_target"].as_str(), r["ratio"].as_f64(), r["better"].as_bool()),
            (Some("keel://h:1"), Some(0.8), Some(false))
        );
        let r = find(&rows, "kafka://h:2", "ack p99 µs");
        assert_eq!((r["ratio"].as_f64(), r["better"].as_bool()), (Some(0.5), Some(true)), "lower latency is better");
        // Against each run's own disk: 100/1000 = 0.1 vs 80/500 = 0.16.
        let r = find(&rows, "keel://h:1", "MB/s as a share of the disk baseline");
        assert!((r["ratio"].as_f64().unwrap() - 1.6).abs() < 1e-9, "{r}");
        // Figures neither has are left out (no e2e here, no net baseline).
        assert!(rows.iter().all(|r| !r["figure"].as_str().unwrap().starts_with("e2e")));
        assert!(rows.iter().all(|r| r["figure"] != "MB/s as a share of the net baseline"));
    }

    #[test]
    fn other_urls_pair_by_position_and_empty_runs_are_refused() {
        let a = run(&[("keel://h:1", 100.0, 2000)], 1000.0);
        let b = run(&[("keel://other:9", 110.0, 2000)], 1000.0);
        let rows = compare(&a, &b).unwrap();
        let r = find(&rows, "keel://h:1", "MB/s");
        assert_eq!(r["b_target"], "keel://other:9");
        assert!((r["ratio"].as_f64().unwrap() - 1.1).abs() < 1e-9);
        let r = find(&rows, "keel://h:1", "ack p50 µs");
        assert_eq!((r["ratio"].as_f64(), r["better"].as_bool()), (Some(1.0), None), "equal is neither");
        assert!(compare(&a, &run(&[], 1.0)).is_err());
    }
}
