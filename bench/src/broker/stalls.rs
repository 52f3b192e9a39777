//! The machine's own stalls during a run: stretches in which it ran nothing of keel-bench.
//!
//! A watchdog thread sleeps [`NAP`] at a time and records every wake-up that comes more than
//! [`THRESHOLD`] late. It runs at real-time priority (`SCHED_FIFO`) when the system allows it,
//! so the load's own threads cannot hold it up: a late wake-up then means the machine did not
//! run it at all. Otherwise it runs at normal priority and the result says so (a late wake-up may
//! then also be a full run queue).
//!
//! Why: a virtual machine whose host throttles it stops as a whole. On the machine Keel's figures
//! were measured on, the guest freezes for 7–27 ms every 100 ms whenever disk writes coincide
//! with CPU load (the host charges its disk emulation to the guest's CPU quota; see
//! docs/benchmarks.md). Every record produced or read in such a stretch waits for it, so once the
//! stalled share of the window passes 1 %, the p99 measures the machine, not the broker. The
//! per-second CPU steal share (from `/proc/stat`) says the same from the kernel's side.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

/// The watchdog's sleep.
pub const NAP: Duration = Duration::from_millis(1);
/// A wake-up later than this (beyond the nap) is a stall: well above timer slack and a
/// scheduler tick, well below the stalls that move a p99.
pub const THRESHOLD: Duration = Duration::from_millis(4);

/// One stall: the watchdog should have woken at `from` and woke at `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    pub from: Instant,
    pub to: Instant,
}

/// The watchdog thread; [`Watchdog::finish`] stops it and returns what it saw.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Vec<Stall>, bool)>>,
    /// Stalled microseconds so far, for the progress lines.
    stalled_us: Arc<AtomicU64>,
}

impl Watchdog {
    /// Starts the watchdog (no watchdog if the thread cannot start: the run goes on without
    /// stall figures).
    pub fn start() -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let stalled_us = Arc::new(AtomicU64::new(0));
        let (flag, total) = (stop.clone(), stalled_us.clone());
        let handle = std::thread::Builder::new().name("stall-watchdog".into()).spawn(move || watch(&flag, &total)).ok();
        Watchdog { stop, handle, stalled_us }
    }

    /// Stalled time so far (0 if the watchdog could not start).
    pub fn stalled(&self) -> Duration {
        Duration::from_micros(self.stalled_us.load(Ordering::Relaxed))
    }

    /// Stops the watchdog; returns its stalls and whether it ran at real-time priority.
    pub fn finish(mut self) -> Option<(Vec<Stall>, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take()?.join().ok()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(stop: &AtomicBool, stalled_us: &AtomicU64) -> (Vec<Stall>, bool) {
    let realtime = make_realtime();
    let mut stalls = Vec::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(NAP);
        let now = Instant::now();
        let due = last + NAP;
        let late = now.saturating_duration_since(due);
        if late > THRESHOLD {
            stalls.push(Stall { from: due, to: now });
            stalled_us.fetch_add(late.as_micros() as u64, Ordering::Relaxed);
        }
        last = now;
    }
    (stalls, realtime)
}

/// Moves this thread to `SCHED_FIFO` at the lowest real-time priority; false if not allowed
/// (no CAP_SYS_NICE and no RLIMIT_RTPRIO). It sleeps almost all the time: about a thousand
/// wake-ups a second of a few microseconds each.
fn make_realtime() -> bool {
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid sched_param.
    unsafe {
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
}

/// What the watchdog saw in the measurement window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StallSummary {
    /// A wake-up this much later than due counts as a stall, ms.
    pub threshold_ms: f64,
    /// The watchdog ran at real-time priority: its stalls are the machine's, not a full run queue.
    pub realtime: bool,
    /// Stalls that overlap the window.
    pub count: u64,
    /// Their time inside the window, ms.
    pub stalled_ms: f64,
    /// `stalled_ms` over the window's length.
    pub share: f64,
    /// The longest stall, ms (its whole length, even if it began before the window).
    pub longest_ms: f64,
    /// CPU steal time over all CPU time in the window (`/proc/stat`), if the system reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steal_share: Option<f64>,
}

impl StallSummary {
    /// The stalls' figures for the window `[from, to)`.
    pub fn of(stalls: &[Stall], from: Instant, to: Instant, realtime: bool, steal_share: Option<f64>) -> StallSummary {
        let window = to.saturating_duration_since(from);
        let inside: Vec<(&Stall, Duration)> =
            stalls.iter().map(|s| (s, overlap(s, from, to))).filter(|(_, d)| !d.is_zero()).collect();
        let stalled: Duration = inside.iter().map(|(_, d)| *d).sum();
        let longest = inside.iter().map(|(s, _)| s.to - s.from).max().unwrap_or_default();
        StallSummary {
            threshold_ms: ms(THRESHOLD),
            realtime,
            count: inside.len() as u64,
            stalled_ms: ms(stalled),
            share: if window.is_zero() { 0.0 } else { stalled.as_secs_f64() / window.as_secs_f64() },
            longest_ms: ms(longest),
            steal_share,
        }
    }

    /// A warning for the result when the stalls are enough to move a p99 (1 % of the window).
    pub fn warning(&self) -> Option<String> {
        if self.share < 0.01 {
            return None;
        }
        let steal = self.steal_share.map(|s| format!("; CPU steal {:.1} %", 100.0 * s)).unwrap_or_default();
        let who = if self.realtime {
            "a real-time watchdog thread was not run"
        } else {
            "a watchdog thread (normal priority: a full run queue counts too) woke late"
        };
        Some(format!(
            "the machine stalled {:.1} % of the measured window ({} stall{} over {} ms, longest {:.0} ms{steal}: {who}); \
             latency percentiles above p{:.1} include these stalls",
            100.0 * self.share,
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.threshold_ms,
            self.longest_ms,
            100.0 * (1.0 - self.share),
        ))
    }
}

/// Stalled milliseconds inside the second ending at `end` (that is, `[end - 1 s, end)`).
pub fn stalled_ms_in_second(stalls: &[Stall], end: Instant) -> f64 {
    let from = end.checked_sub(Duration::from_secs(1)).unwrap_or(end);
    ms(stalls.iter().map(|s| overlap(s, from, end)).sum())
}

fn overlap(s: &Stall, from: Instant, to: Instant) -> Duration {
    s.to.min(to).saturating_duration_since(s.from.max(from))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Cumulative CPU time of every CPU (`/proc/stat`'s first line): all of it and the stolen part,
/// in clock ticks. `None` where there is no such file or no steal column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    pub total: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The `cpu` line: user nice system idle iowait irq softirq steal (guest time is already in
    /// user and nice, so it is not added again).
    fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> =
            line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
        (fields.len() == 8).then(|| CpuTimes { total: fields.iter().sum(), steal: fields[7] })
    }

    /// The stolen share of CPU time from `earlier` to `self`.
    pub fn steal_share_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|t| *t > 0)?;
        Some(self.steal.saturating_sub(earlier.steal) as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(t0: Instant, from_ms: u64, len_ms: u64) -> Stall {
        let from = t0 + Duration::from_millis(from_ms);
        Stall { from, to: from + Duration::from_millis(len_ms) }
    }

    #[test]
    fn stalls_are_clipped_to_the_window_and_summed() {
        let t0 = Instant::now();
        // Window [1000, 2000) ms: one stall straddles its start, one is inside, one after it.
        let stalls = [stall(t0, 990, 30), stall(t0, 1500, 10), stall(t0, 2100, 50)];
        let s = StallSummary::of(&stalls, t0 + Duration::from_secs(1), t0 + Duration::from_secs(2), true, Some(0.1));
        assert_eq!(s.count, 2);
        assert!((s.stalled_ms - 30.0).abs() < 1e-6, "{s:?}");
        assert!((s.share - 0.03).abs() < 1e-9, "{s:?}");
        assert!((s.longest_ms - 30.0).abs() < 1e-6, "{s:?}");
        let w = s.warning().expect("3 % is worth a warning");
        assert!(
            w.contains("3.0 %") && w.contains("2 stalls") && w.contains("p97.0") && w.contains("steal 10.0 %"),
            "{w}"
        );
        // Below 1 %: no warning.
        let quiet = [stall(t0, 1500, 5)];
        let quiet = StallSummary::of(&quiet, t0 + Duration::from_secs(1), t0 + Duration::from_secs(2), true, None);
        assert_eq!(quiet.warning(), None);
        // Per second: the second ending at 2 s holds 20 + 10 ms, the one ending at 3 s holds 50.
        assert!((stalled_ms_in_second(&stalls, t0 + Duration::from_secs(2)) - 30.0).abs() < 1e-6);
        assert!((stalled_ms_in_second(&stalls, t0 + Duration::from_secs(3)) - 50.0).abs() < 1e-6);
    }

    #[test]
    fn steal_comes_from_the_cpu_line() {
        let a = CpuTimes::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        assert_eq!(a, CpuTimes { total: 1000, steal: 35 });
        let b = CpuTimes::parse("cpu  150 0 80 850 10 0 5 65 7 0\n").unwrap();
        assert_eq!(b.steal_share_since(&a), Some(30.0 / 160.0));
        assert_eq!(a.steal_share_since(&a), None, "no time passed");
        assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None, "no steal column");
    }
}
