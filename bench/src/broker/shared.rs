//! What the load threads share: the start gate and the run's clock, the stop flag with the first
//! error, progress counters, and what producers tell consumers when they finish. Plus the stamp
//! every record value starts with.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Barrier, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use keel_client::{Client, ClientConfig};

use super::args::Target;

/// How long after the schedule ends producers may still send their backlog, and consumers wait
/// for records still missing after the last producer finished.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Bytes of the stamp at the start of each record value (when the value is long enough):
/// intended send time (ns since the run's t0, u64 LE), run id (u64 LE), producer (u32 LE),
/// sequence number within (producer, partition) (u64 LE).
pub const STAMP_LEN: usize = 28;

/// The run's timeline.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The load starts; stamps count nanoseconds from here.
    pub t0: Instant,
    /// The measurement starts (t0 + warmup).
    pub warm_end: Instant,
    /// The schedule ends (warm_end + duration).
    pub end: Instant,
}

impl Clock {
    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.warm_end && t < self.end
    }
}

pub struct Shared {
    /// Threads that wait at the gate, the main thread included.
    ready: Barrier,
    go: Barrier,
    clock: OnceLock<Clock>,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
    /// Records and value+key bytes acknowledged (sent, with acks=0) so far, by every producer.
    pub produced_records: AtomicU64,
    pub produced_bytes: AtomicU64,
    /// Records and value+key bytes consumed so far, by every consumer.
    pub consumed_records: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Producers that have not finished.
    pub producers_running: AtomicUsize,
    /// Per partition: records sent by the producers that have finished.
    pub sent_per_partition: Vec<AtomicU64>,
    /// When the last producer finished.
    pub producers_done_at: Mutex<Option<Instant>>,
    /// Per second of the run (since t0, by completion time): produce-ack and end-to-end latency
    /// histograms merged over every thread (the time series' p99).
    pub ack_by_second: SecondHistograms,
    pub e2e_by_second: SecondHistograms,
}

/// The open loop's rate limiter: record k is due at `t0 + offset + k / rate`, for every k whose
/// time falls before the schedule's end. Senders ask what is due now and send it all; a sender
/// that falls behind finds many records due at once, each still measured from its own time
/// (coordinated-omission correction).
///
/// A workload with phases changes the rate from phase to phase: the schedule is then a run of
/// parts, each at its own rate (0: nothing sent in it), records numbered on across them.
#[derive(Debug, Clone)]
pub struct Schedule {
    t0: Instant,
    /// In time order; together they cover the run.
    parts: Vec<Part>,
    /// Records in the schedule.
    pub total: u64,
}

/// A stretch of the schedule at one rate.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// Where the part ends, ns after t0 (it starts where the one before ends).
    end_ns: f64,
    /// The part's first record's time, ns after t0 (start plus the sender's offset).
    first_ns: f64,
    interval_ns: f64,
    /// Number of the part's first record, and how many it has.
    first_k: u64,
    count: u64,
}

impl Schedule {
    /// `rate` records/s (> 0), starting `offset` after the clock's t0, ending at its end.
    pub fn new(clock: &Clock, rate: f64, offset: Duration) -> Schedule {
        let end_ns = (clock.end - clock.t0).as_nanos() as f64;
        Schedule::from_parts(clock.t0, [(0.0, end_ns, offset.as_nanos() as f64, rate)])
    }

    /// Consecutive parts from t0: each `(end, rate)` lasts until `end` (after t0) at `rate`
    /// records/s (≥ 0). Within each part the records are `share` of an interval late (a sender's
    /// place among senders of the same rate, 0 to 1, so that they interleave).
    pub fn with_parts(clock: &Clock, parts: &[(Duration, f64)], share: f64) -> Schedule {
        let mut start_ns = 0.0;
        let parts: Vec<_> = parts
            .iter()
            .map(|&(end, rate)| {
                let end_ns = end.as_nanos() as f64;
                let offset_ns = if rate > 0.0 { share * 1e9 / rate } else { 0.0 };
                let part = (start_ns, end_ns, offset_ns, rate);
                start_ns = end_ns;
                part
            })
            .collect();
        Schedule::from_parts(clock.t0, parts)
    }

    /// Parts as (start, end, offset of the first record from the start, rate).
    fn from_parts(t0: Instant, parts: impl IntoIterator<Item = (f64, f64, f64, f64)>) -> Schedule {
        let mut total = 0;
        let parts = parts
            .into_iter()
            .map(|(start_ns, end_ns, offset_ns, rate)| {
                let interval_ns = if rate > 0.0 { 1e9 / rate } else { f64::INFINITY };
                let first_ns = start_ns + offset_ns;
                let count =
                    if rate > 0.0 && end_ns > first_ns { ((end_ns - first_ns) / interval_ns).ceil() as u64 } else { 0 };
                let part = Part { end_ns, first_ns, interval_ns, first_k: total, count };
                total += count;
                part
            })
            .collect();
        Schedule { t0, parts, total }
    }

    /// Record k's intended send time, ns after t0 (what its stamp carries).
    pub fn intended_ns(&self, k: u64) -> u64 {
        // The last part with records that starts at or before k (a handful of parts at most).
        let part = self.parts.iter().rev().find(|p| p.count > 0 && p.first_k <= k).unwrap_or(&self.parts[0]);
        (part.first_ns + (k - part.first_k) as f64 * part.interval_ns) as u64
    }

    pub fn intended(&self, k: u64) -> Instant {
        self.t0 + Duration::from_nanos(self.intended_ns(k))
    }

    /// One past the last record due at `now` (records `0..due_end(now)` are due).
    pub fn due_end(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.t0).as_nanos() as f64;
        let Some(part) = self.parts.iter().find(|p| since < p.end_ns) else { return self.total };
        if since < part.first_ns {
            return part.first_k;
        }
        let due = (((since - part.first_ns) / part.interval_ns) as u64).saturating_add(1).min(part.count);
        part.first_k + due
    }
}

/// Latency histograms per second of the run, merged from every thread's [`SecondRecorder`].
#[derive(Default)]
pub struct SecondHistograms(Mutex<BTreeMap<u64, Histogram<u64>>>);

impl SecondHistograms {
    fn merge(&self, second: u64, h: &Histogram<u64>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(second).or_insert_with(second_histogram);
        // Same bounds and precision: adding cannot fail.
        let _ = entry.add(h);
    }

    /// p99 of what was recorded for `second` so far (threads hand a second over when their next
    /// one starts, so the previous second is complete but for idle threads).
    pub fn p99(&self, second: u64) -> Option<u64> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&second).filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(0.99))
    }

    /// (second, histogram) in order.
    pub fn take(&self) -> BTreeMap<u64, Histogram<u64>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// 2 significant digits are plenty for a per-second p99 and keep each histogram ~20 KiB.
pub(super) fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, crate::report::MAX_TRACKABLE_US, 2).expect("static histogram bounds are valid")
}

/// One thread's latencies of the current second, handed over to a [`SecondHistograms`] when the
/// second changes (one lock per thread per second, not per record).
pub struct SecondRecorder {
    second: u64,
    hist: Histogram<u64>,
}

impl Default for SecondRecorder {
    fn default() -> SecondRecorder {
        SecondRecorder { second: 0, hist: second_histogram() }
    }
}

impl SecondRecorder {
    /// Records `n` latencies of `latency` completed at `at` (seconds counted from `t0`).
    pub fn record(&mut self, to: &SecondHistograms, t0: Instant, at: Instant, latency: Duration, n: u64) {
        let second = at.saturating_duration_since(t0).as_secs();
        if second != self.second {
            self.flush(to);
            self.second = second;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record_n(us, n);
    }

    pub fn flush(&mut self, to: &SecondHistograms) {
        if !self.hist.is_empty() {
            to.merge(self.second, &self.hist);
            self.hist.reset();
        }
    }
}

impl Shared {
    /// For `threads` load threads (plus the main thread) over `partitions` partitions, of which
    /// `producers` are producers.
    pub fn new(threads: usize, producers: usize, partitions: u32) -> Shared {
        Shared {
            ready: Barrier::new(threads + 1),
            go: Barrier::new(threads + 1),
            clock: OnceLock::new(),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            produced_records: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            consumed_records: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            producers_running: AtomicUsize::new(producers),
            sent_per_partition: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            producers_done_at: Mutex::new(None),
            ack_by_second: SecondHistograms::default(),
            e2e_by_second: SecondHistograms::default(),
        }
    }

    /// A load thread, set up (or failed to: it called [`Shared::fail`]): waits for every other
    /// thread, then for the main thread to start the clock. `None` if the run was stopped.
    pub fn wait_start(&self) -> Option<Clock> {
        self.ready.wait();
        self.go.wait();
        if self.stopped() {
            None
        } else {
            self.clock.get().copied()
        }
    }

    /// The main thread: waits until every load thread is set up, then starts the clock (unless a
    /// thread failed to set up) and lets them go. Returns the clock, or the setup error.
    pub fn start(&self, warmup: Duration, duration: Duration) -> Result<Clock, String> {
        self.ready.wait();
        // A little ahead, so that every thread is running when the schedule starts.
        let t0 = Instant::now() + Duration::from_millis(5);
        let clock = Clock { t0, warm_end: t0 + warmup, end: t0 + warmup + duration };
        let _ = self.clock.set(clock);
        self.go.wait();
        match self.first_error() {
            Some(e) => Err(e),
            None => Ok(clock),
        }
    }

    /// Records the first error and stops every thread.
    pub fn fail(&self, error: String) {
        let mut first = self.error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Sleeps until `t`, or until the run is stopped.
    pub fn wait_until(&self, t: Instant) {
        while !self.stopped() {
            let left = t.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether a closed-loop producer is done: the run stopped, its schedule ended, or (prefill)
    /// the producers together have `stop_after_bytes` acknowledged.
    pub fn closed_loop_done(&self, end: Instant, stop_after_bytes: Option<u64>) -> bool {
        self.stopped()
            || Instant::now() >= end
            || stop_after_bytes.is_some_and(|limit| self.produced_bytes.load(Ordering::Relaxed) >= limit)
    }

    pub fn first_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A producer is done; `sent[p]` records went to partition p.
    pub fn producer_finished(&self, sent: &[u64]) {
        for (total, &n) in self.sent_per_partition.iter().zip(sent) {
            total.fetch_add(n, Ordering::SeqCst);
        }
        if self.producers_running.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.producers_done_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// When the last producer finished (`None` while one is running).
    pub fn producers_done(&self) -> Option<Instant> {
        if self.producers_running.load(Ordering::SeqCst) > 0 {
            return None;
        }
        *self.producers_done_at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection to the broker, for a load thread or the setup.
pub fn connect(target: &Target, client_id: &str) -> Result<Client, String> {
    let config = ClientConfig { connect_timeout: Duration::from_secs(5), ..ClientConfig::default() };
    Client::connect_with(&target.addr, client_id, config)
        .map_err(|e| format!("cannot reach the broker at {target}: {e}"))
}

/// The fields of a record's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub intended_ns: u64,
    pub run_id: u64,
    pub producer: u32,
    pub seq: u64,
}

impl Stamp {
    pub fn encode(&self) -> [u8; STAMP_LEN] {
        let mut out = [0u8; STAMP_LEN];
        out[0..8].copy_from_slice(&self.intended_ns.to_le_bytes());
        out[8..16].copy_from_slice(&self.run_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.producer.to_le_bytes());
        out[20..28].copy_from_slice(&self.seq.to_le_bytes());
        out
    }

    /// The stamp at the start of `value`, if it is long enough.
    pub fn decode(value: &[u8]) -> Option<Stamp> {
        let s = value.get(..STAMP_LEN)?;
        let u64_at = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        Some(Stamp {
            intended_ns: u64_at(0),
            run_id: u64_at(8),
            producer: u32::from_le_bytes(s[16..20].try_into().expect("4 bytes")),
            seq: u64_at(20),
        })
    }
}

/// A run id that differs between runs (and processes), to tell this run's records from others'.
pub fn new_run_id() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Lets this thread's sleeps end within a few microseconds of their deadline instead of the
/// default 50 µs timer slack (the open-loop schedule sleeps between sends rather than spinning).
pub fn tighten_timer_slack() {
    // SAFETY: prctl with integer arguments only changes this thread's timer slack.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let s = Stamp { intended_ns: 123_456_789, run_id: new_run_id(), producer: 7, seq: 1 << 40 };
        let mut value = s.encode().to_vec();
        value.extend_from_slice(b"payload");
        assert_eq!(Stamp::decode(&value), Some(s));
        assert_eq!(Stamp::decode(&value[..STAMP_LEN - 1]), None);
    }

    fn clock(secs: u64) -> Clock {
        let t0 = Instant::now();
        Clock { t0, warm_end: t0, end: t0 + Duration::from_secs(secs) }
    }

    #[test]
    fn the_schedule_spaces_records_at_the_rate() {
        let c = clock(2);
        let s = Schedule::new(&c, 1000.0, Duration::ZERO);
        assert_eq!(s.total, 2000, "2 s at 1000/s");
        assert_eq!((s.intended_ns(0), s.intended_ns(1), s.intended_ns(1500)), (0, 1_000_000, 1_500_000_000));
        let at = |ms: u64| c.t0 + Duration::from_millis(ms);
        assert_eq!(s.due_end(c.t0), 1, "record 0 is due at t0");
        assert_eq!(s.due_end(at(10) - Duration::from_nanos(1)), 10);
        assert_eq!(s.due_end(at(10)), 11);
        // A sender that stalled finds everything since due at once, each record still measured
        // from its own intended time...
        assert_eq!(s.due_end(at(500)), 501);
        assert_eq!(s.intended(250), at(250));
        // ...and nothing past the end of the schedule.
        assert_eq!(s.due_end(at(60_000)), 2000);
    }

    #[test]
    fn phases_interleave_producers() {
        let c = clock(1);
        // Two producers at 500/s each, the second half an interval later: 1000/s together.
        let a = Schedule::new(&c, 500.0, Duration::ZERO);
        let b = Schedule::new(&c, 500.0, Duration::from_millis(1));
        assert_eq!((a.total, b.total), (500, 500));
        assert_eq!(b.due_end(c.t0), 0, "not before its phase");
        assert_eq!(b.due_end(c.t0 + Duration::from_millis(1)), 1);
        let mut times: Vec<u64> = (0..500).flat_map(|k| [a.intended_ns(k), b.intended_ns(k)]).collect();
        times.sort_unstable();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 1_000_000), "evenly spaced at 1 ms");
        // A phase past the end: nothing to send.
        assert_eq!(Schedule::new(&c, 10.0, Duration::from_secs(2)).total, 0);
    }

    #[test]
    fn a_schedule_in_parts_changes_rate_part_by_part() {
        let c = clock(6);
        let s = |share| {
            let parts =
                [(Duration::from_secs(2), 100.0), (Duration::from_secs(4), 0.0), (Duration::from_secs(6), 1000.0)];
            Schedule::with_parts(&c, &parts, share)
        };
        let a = s(0.0);
        assert_eq!(a.total, 200 + 2000, "2 s at 100/s, 2 s of nothing, 2 s at 1000/s");
        let ms = |k: u64| a.intended_ns(k) / 1_000_000;
        assert_eq!((ms(0), ms(1), ms(199)), (0, 10, 1990));
        assert_eq!((ms(200), ms(201), ms(2199)), (4000, 4001, 5999), "records go on after the pause");
        let at = |ms: u64| c.t0 + Duration::from_millis(ms);
        assert_eq!(a.due_end(at(1995)), 200);
        assert_eq!(a.due_end(at(3000)), 200, "nothing is due while the rate is 0");
        assert_eq!(a.due_end(at(4000)), 201);
        assert_eq!(a.due_end(at(4500)), 701);
        assert_eq!(a.due_end(at(60_000)), 2200);
        // A sender half an interval behind, in every part.
        let b = s(0.5);
        assert_eq!(b.total, 2200);
        assert_eq!((b.intended_ns(0), b.intended_ns(200)), (5_000_000, 4_000_500_000));
        assert_eq!(b.due_end(at(4000)), 200);
    }

    #[test]
    fn second_recorders_merge_per_second_across_threads() {
        let to = SecondHistograms::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (mut a, mut b) = (SecondRecorder::default(), SecondRecorder::default());
        for i in 0..100 {
            a.record(&to, t0, at(100 + i), Duration::from_micros(1000), 1);
            b.record(&to, t0, at(200 + i), Duration::from_micros(3000), 1);
        }
        // Second 1: a's records only; second 0 is handed over when a moves on.
        a.record(&to, t0, at(1500), Duration::from_micros(50_000), 10);
        assert_eq!(to.p99(0).map(|us| us / 100), Some(10), "only a's second 0 so far (1 ms)");
        a.flush(&to);
        b.flush(&to);
        let map = to.take();
        assert_eq!(map.len(), 2);
        assert_eq!(map[&0].len(), 200, "both threads' second 0 merged");
        assert_eq!(map[&0].value_at_quantile(0.99) / 100, 30, "p99 of the merged second is b's 3 ms");
        assert_eq!(map[&1].len(), 10);
        assert!(to.take().is_empty(), "taken");
    }
}
