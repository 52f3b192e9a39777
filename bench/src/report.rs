//! Output shared by every subcommand: latency summaries built from HDR histograms, the single JSON
//! object printed with `--json`, and the formatting of human-readable lines.
//!
//! Units, everywhere: throughput in MB/s with MB = 10^6 bytes; latencies in microseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram can hold, in microseconds (one hour); larger values are clamped.
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// A histogram for latencies in microseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3).expect("static histogram bounds are valid")
}

/// Records one latency; values below 1 µs count as 1 µs, above the bound as the bound.
pub fn record_us(hist: &mut Histogram<u64>, elapsed: std::time::Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    hist.saturating_record(us);
}

/// Percentiles of a latency histogram, in microseconds. `p9999` (the 99.99th percentile) is
/// only computed, and only serialized, where a subcommand reports it (the broker benchmarks).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LatencySummary {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p9999: Option<u64>,
    pub max: u64,
    pub samples: u64,
}

impl LatencySummary {
    pub fn from_histogram(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self { p50: 0, p99: 0, p999: 0, p9999: None, max: 0, samples: 0 };
        }
        Self {
            p50: hist.value_at_quantile(0.50),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            p9999: None,
            max: hist.max(),
            samples: hist.len(),
        }
    }

    /// [`LatencySummary::from_histogram`] plus the 99.99th percentile.
    pub fn with_p9999(hist: &Histogram<u64>) -> Self {
        let p9999 = if hist.is_empty() { 0 } else { hist.value_at_quantile(0.9999) };
        Self { p9999: Some(p9999), ..Self::from_histogram(hist) }
    }

    /// `p50 145 µs, p99 210 µs, p999 480 µs, max 1.2 ms (2000 samples)` (with `p9999` after
    /// `p999` when it was computed).
    pub fn human(&self) -> String {
        let p9999 = self.p9999.map(|v| format!(", p9999 {}", fmt_us(v))).unwrap_or_default();
        format!(
            "p50 {}, p99 {}, p999 {}{p9999}, max {} ({} samples)",
            fmt_us(self.p50),
            fmt_us(self.p99),
            fmt_us(self.p999),
            fmt_us(self.max),
            self.samples
        )
    }
}

/// Percentiles at which latency curves are sampled (the last is the maximum).
const CURVE_PERCENTILES: [f64; 22] = [
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 97.0, 99.0, 99.5, 99.9, 99.95, 99.99,
    99.995, 99.999, 100.0,
];

/// (percentile, latency µs) points of a latency histogram for a percentile plot, up to the
/// highest percentile its sample count can tell apart from the maximum (a p99.99 needs 10,000
/// samples), then the maximum itself at 100.
pub fn percentile_curve(hist: &Histogram<u64>) -> Vec<(f64, u64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    let resolvable = 100.0 * (1.0 - 1.0 / hist.len() as f64);
    CURVE_PERCENTILES
        .iter()
        .filter(|&&p| p <= resolvable || p == 100.0)
        .map(|&p| (p, if p == 100.0 { hist.max() } else { hist.value_at_percentile(p) }))
        .collect()
}

/// Prints `value` as exactly one JSON object on one line of stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), String> {
    let line = serde_json::to_string(value).map_err(|e| format!("cannot encode the result as JSON: {e}"))?;
    println!("{line}");
    Ok(())
}

/// Prints a subcommand's result: one JSON object with `--json`, `human` lines otherwise.
pub fn print_result<T: Serialize>(value: &T, json: bool, human: impl FnOnce(&T)) -> Result<(), String> {
    if json {
        print_json(value)
    } else {
        human(value);
        Ok(())
    }
}

/// MB/s with MB = 10^6 bytes; 0 for an empty interval.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    }
}

/// A microsecond figure with a unit that keeps it short: `145 µs`, `12.3 ms`, `1.20 s`.
pub fn fmt_us(us: u64) -> String {
    if us < 10_000 {
        format!("{us} µs")
    } else if us < 10_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A byte count in binary units: `4 KiB`, `1.00 GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size {
            return if bytes & (size - 1) == 0 {
                format!("{} {name}", bytes / size)
            } else {
                format!("{:.2} {name}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// Fills a buffer with non-repeating bytes so no layer can compress or deduplicate them.
pub fn fill_pseudo_random(buf: &mut [u8], mut seed: u64) {
    if seed == 0 {
        seed = 0x9E37_79B9_7F4A_7C15; // xorshift stays at 0 from 0
    }
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let bytes = seed.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_values() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.samples, 1000);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert_eq!(s.max, 1000);
        assert_eq!(s.p9999, None);
        assert_eq!(LatencySummary::from_histogram(&latency_histogram()).samples, 0);
        let s = LatencySummary::with_p9999(&h);
        assert_eq!((s.p999, s.p9999, s.max), (999, Some(1000), 1000));
        let json = serde_json::to_string(&LatencySummary::from_histogram(&h)).unwrap();
        assert!(!json.contains("p9999"), "the storage benchmark's JSON keeps its keys: {json}");
    }

    #[test]
    fn percentile_curves_stop_where_the_samples_do() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let curve = percentile_curve(&h);
        // 1000 samples resolve p99.9 but not p99.95 and beyond; the maximum closes the curve.
        let ps: Vec<f64> = curve.iter().map(|c| c.0).collect();
        assert!(ps.contains(&99.9) && !ps.contains(&99.95) && !ps.contains(&99.99), "{ps:?}");
        assert_eq!(curve.last(), Some(&(100.0, 1000)));
        assert!(curve.contains(&(50.0, 500)) && curve.contains(&(99.0, 990)), "{curve:?}");
        assert!(curve.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "monotonic: {curve:?}");
        // Merging histograms (what workers' figures go through) gives the curve of the union.
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        for v in 1..=1000u64 {
            if v % 2 == 0 {
                a.record(v).unwrap()
            } else {
                b.record(v).unwrap()
            }
        }
        a.add(&b).unwrap();
        assert_eq!(percentile_curve(&a), curve);
        assert!(percentile_curve(&latency_histogram()).is_empty());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_bytes(4096), "4 KiB");
        assert_eq!(fmt_bytes(1 << 30), "1 GiB");
        assert_eq!(fmt_bytes(1536), "1.50 KiB");
        assert_eq!(fmt_us(145), "145 µs");
        assert_eq!(fmt_us(12_345), "12.3 ms");
        assert_eq!(mb_per_s(2_000_000, 2.0), 1.0);
    }

    #[test]
    fn pseudo_random_fill_does_not_repeat_words() {
        let mut b = vec![0u8; 4096];
        fill_pseudo_random(&mut b, 1);
        let words: std::collections::HashSet<_> = b.chunks(8).collect();
        assert_eq!(words.len(), 512);
    }
}
