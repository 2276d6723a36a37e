//! The circuit breaker in front of Upstash. After `threshold` consecutive failures it opens:
//! for `cooldown` no request calls Upstash (so none pays its latency); then one request probes
//! it. A successful probe closes the breaker, a failed one opens it for another cool-down.
//! Pure and clock-free: the caller passes the time, so the tests drive it directly.

use std::cell::Cell;

use crate::core::algorithm::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calling the store; `failures` in a row so far.
    Closed { failures: u32 },
    /// Not calling the store until `until`.
    Open { until: Millis },
    /// One probe is out. Should it never come back (its request cancelled), another is let
    /// through at `stale_at`.
    HalfOpen { stale_at: Millis },
}

/// What to do with the store for this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Call,
    /// Call it, as the one probe of a half-open breaker.
    Probe,
    /// Do not call it: decide by `on_failure` at once.
    Skip,
}

/// A change worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed to open: `failures` in a row reached the threshold.
    Tripped { failures: u32 },
    /// A probe failed: open again for another cool-down.
    Reopened,
    /// A probe succeeded (or a call did while counting failures): closed again, after an
    /// outage that began at `since`.
    Recovered { since: Millis },
}

pub struct Breaker {
    threshold: u32,
    cooldown_ms: Millis,
    state: Cell<BreakerState>,
    /// When the current run of failures began (for the recovery log line).
    since: Cell<Option<Millis>>,
    trips: Cell<u64>,
}

impl Breaker {
    /// `threshold` 0 is taken as 1: a breaker that can never open is not one.
    pub fn new(threshold: u32, cooldown_ms: Millis) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown_ms,
            state: Cell::new(BreakerState::Closed { failures: 0 }),
            since: Cell::new(None),
            trips: Cell::new(0),
        }
    }

    pub fn cooldown_ms(&self) -> Millis {
        self.cooldown_ms
    }

    pub fn state(&self) -> BreakerState {
        self.state.get()
    }

    /// Times the breaker has gone from closed to open in this isolate.
    pub fn trips(&self) -> u64 {
        self.trips.get()
    }

    pub fn admit(&self, now: Millis) -> Admission {
        match self.state.get() {
            BreakerState::Closed { .. } => Admission::Call,
            BreakerState::Open { until } | BreakerState::HalfOpen { stale_at: until } if now >= until => {
                self.state.set(BreakerState::HalfOpen { stale_at: now.saturating_add(self.cooldown_ms) });
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => Admission::Skip,
        }
    }

    pub fn record_success(&self) -> Option<Transition> {
        self.state.set(BreakerState::Closed { failures: 0 });
        self.since.take().map(|since| Transition::Recovered { since })
    }

    pub fn record_failure(&self, now: Millis) -> Option<Transition> {
        if self.since.get().is_none() {
            self.since.set(Some(now));
        }
        let open = BreakerState::Open { until: now.saturating_add(self.cooldown_ms) };
        match self.state.get() {
            BreakerState::Closed { failures } if failures + 1 >= self.threshold => {
                self.state.set(open);
                self.trips.set(self.trips.get() + 1);
                Some(Transition::Tripped { failures: failures + 1 })
            }
            BreakerState::Closed { failures } => {
                self.state.set(BreakerState::Closed { failures: failures + 1 });
                None
            }
            BreakerState::HalfOpen { .. } | BreakerState::Open { .. } => {
                self.state.set(open);
                Some(Transition::Reopened)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_skips_during_the_cooldown() {
        let b = Breaker::new(3, 1_000);
        assert_eq!(b.admit(0), Admission::Call);
        assert_eq!(b.record_failure(0), None);
        assert_eq!(b.record_failure(1), None);
        assert_eq!(b.record_failure(2), Some(Transition::Tripped { failures: 3 }));
        assert_eq!(b.trips(), 1);
        for t in [3, 500, 1_001] {
            assert_eq!(b.admit(t), Admission::Skip, "at {t}");
        }
        assert_eq!(b.admit(1_002), Admission::Probe);
        assert_eq!(b.admit(1_003), Admission::Skip, "one probe at a time");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(3, 1_000);
        b.record_failure(0);
        b.record_failure(1);
        assert_eq!(b.record_success(), Some(Transition::Recovered { since: 0 }));
        assert_eq!(b.record_failure(2), None, "counting starts again");
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
    }

    #[test]
    fn a_failed_probe_reopens_and_a_good_one_closes() {
        let b = Breaker::new(1, 100);
        assert_eq!(b.record_failure(0), Some(Transition::Tripped { failures: 1 }));
        assert_eq!(b.admit(100), Admission::Probe);
        assert_eq!(b.record_failure(150), Some(Transition::Reopened));
        assert_eq!(b.admit(200), Admission::Skip);
        assert_eq!(b.admit(250), Admission::Probe);
        assert_eq!(b.record_success(), Some(Transition::Recovered { since: 0 }));
        assert_eq!(b.admit(251), Admission::Call);
        assert_eq!(b.trips(), 1, "a reopening is the same trip");
    }

    #[test]
    fn a_lost_probe_is_replaced_after_a_cooldown() {
        let b = Breaker::new(1, 100);
        b.record_failure(0);
        assert_eq!(b.admit(100), Admission::Probe);
        assert_eq!(b.admit(199), Admission::Skip);
        assert_eq!(b.admit(200), Admission::Probe, "the first probe never reported back");
    }

    #[test]
    fn threshold_zero_means_one() {
        let b = Breaker::new(0, 10);
        assert!(matches!(b.record_failure(0), Some(Transition::Tripped { failures: 1 })));
    }
}
