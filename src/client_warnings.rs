//! Warnings about bad client input, at most a few per second per shard.
//!
//! Every malformed frame, unreadable header or unsupported API is worth a warning (an operator
//! wants to know a client misbehaves), but one broken or hostile client can send thousands a
//! second: logged one by one they would flood the log and spend the shard's CPU on formatting.
//! So each shard logs the first [`PER_SECOND`] of each second and counts the rest, and says how
//! many it left out when the next second begins.

use std::time::{Duration, Instant};

/// Warnings about client input a shard logs per second; the rest are counted.
pub const PER_SECOND: u32 = 10;

/// The budget of one shard (a plain struct: the shard keeps it in a `RefCell`).
#[derive(Debug)]
pub struct ClientWarnings {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// What to do with one warning.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Log this warning.
    pub log: bool,
    /// Warnings left out in the previous window(s), to report now (0: none).
    pub suppressed_before: u64,
}

impl ClientWarnings {
    pub fn new(now: Instant) -> Self {
        ClientWarnings { window_start: now, logged: 0, suppressed: 0 }
    }

    /// One warning at `now`.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        let mut suppressed_before = 0;
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            suppressed_before = std::mem::take(&mut self.suppressed);
            self.window_start = now;
            self.logged = 0;
        }
        let log = self.logged < PER_SECOND;
        if log {
            self.logged += 1;
        } else {
            self.suppressed += 1;
        }
        Verdict { log, suppressed_before }
    }
}

/// Logs a warning about client input through `state`'s budget: `tracing::warn!` with the same
/// arguments when the budget allows, and a count of those left out once a second.
#[macro_export]
macro_rules! client_warn {
    ($state:expr, $($arg:tt)+) => {{
        let verdict = $state.client_warnings.borrow_mut().admit(std::time::Instant::now());
        if verdict.suppressed_before > 0 {
            tracing::warn!(
                suppressed = verdict.suppressed_before,
                per_second = $crate::client_warnings::PER_SECOND,
                "more warnings about client input than the per-second budget; these were not logged"
            );
        }
        if verdict.log {
            tracing::warn!($($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_of_each_second_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut w = ClientWarnings::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..PER_SECOND {
            assert_eq!(w.admit(at(u64::from(i))), Verdict { log: true, suppressed_before: 0 });
        }
        for i in 0..25 {
            assert_eq!(w.admit(at(500 + i)), Verdict { log: false, suppressed_before: 0 });
        }
        // The next second: logged again, and the 25 left out are reported once.
        assert_eq!(w.admit(at(1_000)), Verdict { log: true, suppressed_before: 25 });
        assert_eq!(w.admit(at(1_001)), Verdict { log: true, suppressed_before: 0 });
        // A quiet gap: nothing to report.
        assert_eq!(w.admit(at(10_000)), Verdict { log: true, suppressed_before: 0 });
    }
}
