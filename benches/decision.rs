#![allow(clippy::unwrap_used)] // a benchmark harness, not a request path
//! Native benchmark of one limiting decision: what `check` costs per request with one and
//! with three limits, next to governor's GCRA doing the same single-limit job, and what a
//! `lease` costs on the three. A plain
//! `Instant` harness (no criterion) keeps the dev-dependencies lean; the median of several
//! runs is enough to see the order of magnitude and catch regressions.
//!
//! Run: `cargo bench --bench decision`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use edge_limiter::core::algorithm::{check, lease, Algorithm, Millis, State};
use edge_limiter::core::rate::Rate;
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};

const RUNS: usize = 7;
const ITERS: u64 = 1_500_000;
/// An ordinary present-day timestamp, so window alignment does real divisions.
const T0: Millis = 1_700_000_000_000;

struct Result {
    /// Median over the runs, nanoseconds per decision.
    median_ns: f64,
    min_ns: f64,
    /// Share of decisions that allowed (the same in every run: the runs are deterministic).
    allowed: f64,
}

/// Times `RUNS` fresh runs of `ITERS` decisions each; `run` returns how many were allowed.
fn measure(mut run: impl FnMut() -> u64) -> Result {
    run(); // warm caches and branch predictors, and fault in the code
    let mut per_call = Vec::with_capacity(RUNS);
    let mut allowed = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        allowed = run();
        per_call.push(start.elapsed().as_nanos() as f64 / ITERS as f64);
    }
    per_call.sort_by(f64::total_cmp);
    Result { median_ns: per_call[RUNS / 2], min_ns: per_call[0], allowed: allowed as f64 / ITERS as f64 }
}

fn ours(limits: &[Algorithm]) -> Result {
    measure(|| {
        let mut states = [State::Empty; 3];
        let states = &mut states[..limits.len()];
        let mut allowed = 0;
        for i in 0..ITERS {
            // black_box on the inputs keeps the compiler from specialising the loop on the
            // known limits or a predictable clock.
            let d = check(black_box(limits), states, black_box(T0 + i), black_box(1));
            allowed += black_box(d).allowed() as u64;
        }
        allowed
    })
}

/// The same traffic through `lease` (cost 1, want 8): what one store call costs the engine
/// when it also leases spare units (the isolate then serves those without a call).
fn ours_lease(limits: &[Algorithm]) -> Result {
    measure(|| {
        let mut states = [State::Empty; 3];
        let states = &mut states[..limits.len()];
        let mut allowed = 0;
        for i in 0..ITERS {
            let l = lease(black_box(limits), states, black_box(T0 + i), black_box(1), black_box(8));
            allowed += black_box(l).decision.allowed() as u64;
        }
        allowed
    })
}

fn governor_direct() -> Result {
    measure(|| {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(10).unwrap());
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        let mut allowed = 0;
        for _ in 0..ITERS {
            clock.advance(Duration::from_millis(1));
            allowed += black_box(limiter.check()).is_ok() as u64;
        }
        allowed
    })
}

fn main() {
    let bucket = Algorithm::token_bucket(10, Rate::parse("10/s").unwrap()).unwrap();
    let three = [
        bucket,
        Algorithm::fixed_window(1000, 86_400_000).unwrap(),
        Algorithm::sliding_window(300, 3_600_000).unwrap(),
    ];

    let a = ours(&[bucket]);
    let b = ours(&three);
    let c = governor_direct();
    let d = ours_lease(&three);

    println!("{RUNS} runs x {ITERS} decisions, fake clock +1 ms per decision");
    println!();
    println!("{:<44} {:>12} {:>10} {:>9}", "case", "median ns", "min ns", "allowed");
    for (name, r) in [
        ("a) check: token bucket 10/s, burst 10", &a),
        ("b) check: bucket + 1000/day + 300/h sliding", &b),
        ("c) governor 0.10 direct, per_second(10)", &c),
        ("d) lease (want 8): the three limits of b)", &d),
    ] {
        println!("{:<44} {:>12.2} {:>10.2} {:>8.3}%", name, r.median_ns, r.min_ns, r.allowed * 100.0);
    }
    println!();
    println!("{:<44} {:>12.2}", "a/c (ours vs governor, one limit)", a.median_ns / c.median_ns);
    println!("{:<44} {:>12.2}", "b/a (three limits vs one)", b.median_ns / a.median_ns);
}
