//! Property tests of the bucket engine against small reference models written from the
//! definitions, not from the engine: a GCRA in scaled integer time for the token bucket,
//! plain per-window tallies for the windows, and brute-force interval sums for the bounds.
//! The unit tests in `algorithm.rs` pin chosen cases; these look for the cases nobody chose.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::algorithm::{check, lease, refund, Algorithm, LimitStatus, Millis, Outcome, State, NO_END, SLIDING_SLOTS};
use super::rate::Rate;

// No regression files: a failure prints its minimal input, which is what goes in a unit test.
fn config() -> Config {
    Config { cases: 384, failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Refill rates, biased towards the ones that broke naive implementations elsewhere:
/// slower than 1/s and rates whose interval is not a whole number of ms.
fn rate() -> impl Strategy<Value = Rate> {
    prop_oneof![
        Just((1, 10_000)),
        Just((3, 1_000)),
        Just((1, 100)),
        Just((7, 60_000)),
        Just((1000, 1)),
        (1..=9u64, 1..=20_000u64),
    ]
    .prop_map(|(amount, period)| Rate::new(amount, period).unwrap())
}

fn window_ms() -> impl Strategy<Value = u64> {
    // Windows that are not multiples of SLIDING_SLOTS make the slot width round up.
    prop_oneof![Just(1u64), 1..=40u64, Just(1_001), 1..=5_000u64, Just(60_000)]
}

/// Gaps between requests: bursts at one instant, gaps around a slot, gaps of whole windows.
fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..=3u64, 3 => 0..=400u64, 2 => 0..=20_000u64, 1 => 0..=200_000u64]
}

/// Costs up to one past the capacity, so `Never` turns up too, with unit costs most common.
fn cost(capacity: u64) -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(1u64), 3 => 0..=capacity, 1 => Just(capacity + 1)]
}

fn start() -> impl Strategy<Value = Millis> {
    prop_oneof![Just(0u64), 0..=2_000_000_000_000u64]
}

fn steps(capacity: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((delta(), cost(capacity)), 1..80)
}

/// A limit of any kind, with its window (0 for a bucket): `Algorithm` does not expose the
/// window of a sliding one, and the models need it.
fn any_limit() -> impl Strategy<Value = (Algorithm, u64)> {
    prop_oneof![
        (1..=12u64, rate()).prop_map(|(c, r)| (Algorithm::token_bucket(c, r).unwrap(), 0)),
        (1..=12u64, window_ms()).prop_map(|(n, w)| (Algorithm::fixed_window(n, w).unwrap(), w)),
        (1..=12u64, window_ms()).prop_map(|(n, w)| (Algorithm::sliding_window(n, w).unwrap(), w)),
    ]
}

/// Any state a store could hand back: times anywhere from the epoch to far past now (as
/// written by a clock far ahead, or by a limit with a shorter sliding slot), levels and
/// counts from none to absurd.
fn any_state() -> impl Strategy<Value = State> {
    let time = prop_oneof![0..=2_000_000_000_000u64, 1_999_000_000_000..=2_001_000_000_000u64, 0..=(1u64 << 53)];
    let amount = prop_oneof![0..=20u64, 0..=2_000_000u64, 0..=(1u64 << 53)];
    prop_oneof![
        Just(State::Empty),
        (amount.clone(), time.clone()).prop_map(|(level, at)| State::Bucket { level, at }),
        (time.clone(), amount.clone()).prop_map(|(start, count)| State::Window { start, count }),
        (time, prop::array::uniform11(prop_oneof![Just(0u64), 0..=20u64, 0..=(1u64 << 40)]))
            .prop_map(|(newest, counts)| State::Sliding { newest: newest / 1_000, counts }),
    ]
}

fn split(limits: Vec<(Algorithm, u64)>) -> (Vec<Algorithm>, Vec<u64>) {
    limits.into_iter().unzip()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Runs one limit over requests at the given times; returns each request's status.
fn run(limit: Algorithm, requests: &[(Millis, u64)]) -> Vec<LimitStatus> {
    let limits = [limit];
    let mut states = [State::Empty];
    requests.iter().map(|&(t, c)| check(&limits, &mut states, t, c).limits()[0]).collect()
}

fn times(t0: Millis, steps: &[(u64, u64)]) -> Vec<(Millis, u64)> {
    let mut t = t0;
    steps
        .iter()
        .map(|&(d, c)| {
            t += d;
            (t, c)
        })
        .collect()
}

fn admitted(requests: &[(Millis, u64)], statuses: &[LimitStatus]) -> Vec<(Millis, u64)> {
    requests.iter().zip(statuses).filter(|(_, s)| s.outcome == Outcome::Allowed).map(|(r, _)| *r).collect()
}

/// Total cost of `admitted` with time in `[lo, hi]`, by brute force so it cannot share a
/// bug with anything clever.
fn cost_within(admitted: &[(Millis, u64)], lo: i128, hi: i128) -> u128 {
    admitted.iter().filter(|(t, _)| (lo..=hi).contains(&(*t as i128))).map(|(_, c)| *c as u128).sum()
}

/// The token-bucket bound: between any two admitted requests, no more than a full bucket
/// plus what accrued in between (requests may arrive in any time order; only the admitted
/// ones' times matter).
fn assert_bucket_bound(capacity: u64, rate: Rate, admitted: &[(Millis, u64)]) -> Result<(), TestCaseError> {
    for &(ti, _) in admitted {
        for &(tj, _) in admitted.iter().filter(|(tj, _)| *tj >= ti) {
            let used = cost_within(admitted, ti as i128, tj as i128);
            let bound = capacity as u128 + (rate.amount as u128 * (tj - ti) as u128) / rate.period_ms as u128;
            prop_assert!(used <= bound, "{used} units admitted in [{ti}, {tj}], bound {bound}");
        }
    }
    Ok(())
}

fn assert_fixed_bound(limit: u64, window: u64, admitted: &[(Millis, u64)]) -> Result<(), TestCaseError> {
    let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
    for &(t, c) in admitted {
        *per_window.entry(t / window).or_default() += c;
    }
    for (k, used) in per_window {
        prop_assert!(used <= limit, "{used} units admitted in window #{k} of {window} ms");
    }
    Ok(())
}

fn assert_sliding_bound(limit: u64, window: u64, admitted: &[(Millis, u64)]) -> Result<(), TestCaseError> {
    // The busiest span of `window` ms always ends at an admitted request.
    for &(t, _) in admitted {
        let used = cost_within(admitted, t as i128 - window as i128 + 1, t as i128);
        prop_assert!(used <= limit as u128, "{used} units in the {window} ms ending at {t}");
    }
    Ok(())
}

/// The time a state is "as of": a clock reading behind it should act as if it read this.
/// `window` is the limit's window (unused for buckets).
fn state_time(state: &State, window: u64) -> Millis {
    match *state {
        State::Bucket { at, .. } => at,
        State::Window { start, .. } => start,
        State::Sliding { newest, .. } => newest * window.div_ceil(SLIDING_SLOTS),
        State::Empty => 0,
    }
}

// ---------------------------------------------------------------------------------------
// The GCRA reference for the token bucket
// ---------------------------------------------------------------------------------------

/// Generic cell rate algorithm in scaled time: one scaled unit is 1/amount ms, so a token
/// (one `period_ms / amount` ms) is exactly `period_ms` scaled units and nothing rounds.
/// The state is the theoretical arrival time: when the bucket would be full again.
struct Gcra {
    capacity: u128,
    amount: u128,
    /// Emission interval: scaled time per unit.
    t: u128,
    tat: u128,
}

impl Gcra {
    fn new(capacity: u64, rate: Rate) -> Gcra {
        Gcra { capacity: capacity as u128, amount: rate.amount as u128, t: rate.period_ms as u128, tat: 0 }
    }

    /// Returns (outcome, remaining, retry_after_ms, reset_ms).
    fn request(&mut self, now_ms: Millis, cost: u64) -> (Outcome, u64, u64, u64) {
        let now = now_ms as u128 * self.amount;
        let cost = cost as u128;
        let tau = self.capacity * self.t;
        // The bucket is short of full by (tat - now) scaled units of level.
        let level = |tat: u128| tau - tat.saturating_sub(now);
        let ms = |scaled: u128| scaled.div_ceil(self.amount) as u64;
        let base = self.tat.max(now);
        if cost > self.capacity {
            let l = level(self.tat);
            return (Outcome::Never, (l / self.t) as u64, 0, ms(self.tat.saturating_sub(now)));
        }
        let new_tat = base + cost * self.t;
        if new_tat - now > tau {
            let l = level(self.tat);
            return (Outcome::Denied, (l / self.t) as u64, ms(new_tat - now - tau), ms(self.tat.saturating_sub(now)));
        }
        if cost > 0 {
            self.tat = new_tat;
        }
        (Outcome::Allowed, (level(new_tat) / self.t) as u64, 0, ms(new_tat - now))
    }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// 1. Between any two admitted requests, at most a full bucket plus what accrued.
    #[test]
    fn token_bucket_never_exceeds_capacity_plus_accrual(
        (capacity, rate, t0, steps) in (1..=20u64, rate(), start())
            .prop_flat_map(|(c, r, t0)| (Just(c), Just(r), Just(t0), steps(c)))
    ) {
        let limit = Algorithm::token_bucket(capacity, rate).unwrap();
        let requests = times(t0, &steps);
        let statuses = run(limit, &requests);
        assert_bucket_bound(capacity, rate, &admitted(&requests, &statuses))?;
    }

    /// 2. The bucket is exactly a GCRA: same decision, remaining, retry and reset, every time.
    #[test]
    fn token_bucket_matches_gcra_exactly(
        (capacity, rate, t0, steps) in (1..=20u64, rate(), start())
            .prop_flat_map(|(c, r, t0)| (Just(c), Just(r), Just(t0), steps(c)))
    ) {
        let limit = Algorithm::token_bucket(capacity, rate).unwrap();
        let requests = times(t0, &steps);
        let statuses = run(limit, &requests);
        let mut model = Gcra::new(capacity, rate);
        for (i, (&(t, c), s)) in requests.iter().zip(&statuses).enumerate() {
            let (outcome, remaining, retry, reset) = model.request(t, c);
            let got = (s.outcome, s.remaining, s.retry_after_ms, s.reset_ms);
            prop_assert_eq!(got, (outcome, remaining, retry, reset), "request #{} (t={}, cost={})", i, t, c);
        }
    }

    /// 3. A fixed window never admits more than its limit per aligned window, and denies only
    ///    what the limit really leaves no room for.
    #[test]
    fn fixed_window_is_exact(
        (limit, window, t0, steps) in (1..=20u64, window_ms(), start())
            .prop_flat_map(|(n, w, t0)| (Just(n), Just(w), Just(t0), steps(n)))
    ) {
        let requests = times(t0, &steps);
        let statuses = run(Algorithm::fixed_window(limit, window).unwrap(), &requests);
        let mut used = std::collections::HashMap::<u64, u64>::new();
        for (&(t, c), s) in requests.iter().zip(&statuses) {
            let here = used.entry(t / window).or_default();
            match s.outcome {
                Outcome::Never => prop_assert!(c > limit),
                Outcome::Denied => prop_assert!(c <= limit && *here + c > limit, "denied {} at {} with {} used", c, t, here),
                Outcome::Allowed => *here += c,
            }
        }
        assert_fixed_bound(limit, window, &admitted(&requests, &statuses))?;
    }

    /// 4. A sliding window holds the limit over every span of its length, and releases a
    ///    unit at most one slot (a tenth of the window, rounded up) late.
    #[test]
    fn sliding_window_bounds_every_span(
        (limit, window, t0, steps) in (1..=20u64, window_ms(), start())
            .prop_flat_map(|(n, w, t0)| (Just(n), Just(w), Just(t0), steps(n)))
    ) {
        let requests = times(t0, &steps);
        let statuses = run(Algorithm::sliding_window(limit, window).unwrap(), &requests);
        let slot = window.div_ceil(SLIDING_SLOTS) as i128;
        for (i, (&(t, c), s)) in requests.iter().zip(&statuses).enumerate() {
            let so_far = admitted(&requests[..i], &statuses[..i]);
            let t = t as i128;
            let recent = cost_within(&so_far, t - window as i128 - slot + 1, t);
            match s.outcome {
                Outcome::Never => prop_assert!(c > limit),
                Outcome::Denied => prop_assert!(
                    recent + c as u128 > limit as u128,
                    "denied {} at {} with only {} in the last window and a slot", c, t, recent
                ),
                Outcome::Allowed => {}
            }
        }
        assert_sliding_bound(limit, window, &admitted(&requests, &statuses))?;
    }

    /// 5. Several limits act as one: all admit or nothing changes, the slowest denial sets
    ///    the retry, and retrying after it works.
    #[test]
    fn multi_limit_is_all_or_nothing(
        limits in prop::collection::vec(any_limit(), 1..=4),
        t0 in start(),
        steps in prop::collection::vec((delta(), cost(12)), 1..60),
    ) {
        let (limits, _) = split(limits);
        let mut states = vec![State::Empty; limits.len()];
        for (t, c) in times(t0, &steps) {
            let before = states.clone();
            let alone: Vec<_> = limits.iter().zip(&before).map(|(l, s)| {
                let mut s = [*s];
                let d = check(&[*l], &mut s, t, c);
                (d.limits()[0], s[0])
            }).collect();
            let d = check(&limits, &mut states, t, c);
            let all_admit = alone.iter().all(|(s, _)| s.outcome == Outcome::Allowed);
            if all_admit {
                prop_assert_eq!(d.outcome, Outcome::Allowed);
                let each: Vec<State> = alone.iter().map(|(_, s)| *s).collect();
                prop_assert_eq!(&states, &each, "an admission advances each limit as if alone");
                let statuses: Vec<LimitStatus> = alone.iter().map(|(s, _)| *s).collect();
                prop_assert_eq!(d.limits(), statuses.as_slice());
                continue;
            }
            prop_assert_eq!(&states, &before, "a denial touched the state");
            if alone.iter().any(|(s, _)| s.outcome == Outcome::Never) {
                prop_assert_eq!(d.outcome, Outcome::Never);
                prop_assert_eq!(d.retry_after_ms(), 0);
                continue;
            }
            prop_assert_eq!(d.outcome, Outcome::Denied);
            let slowest = alone.iter()
                .filter(|(s, _)| s.outcome == Outcome::Denied)
                .map(|(s, _)| s.retry_after_ms)
                .max()
                .unwrap();
            prop_assert_eq!(d.retry_after_ms(), slowest);
            prop_assert!(slowest > 0, "a denial must ask for a wait");
            let mut later = before.clone();
            let retry = check(&limits, &mut later, t + slowest, c);
            prop_assert!(retry.allowed(), "still denied {} ms later: {:?}", slowest, retry);
        }
    }

    /// 6a. A clock behind the state, by up to one span, acts exactly as if it read the
    ///     state's own time, so a step back can neither refill a bucket nor open an older
    ///     window. Further behind, the state is honoured one span ahead only (see 7): the
    ///     decision and what remains are still those at the state's time; only the time
    ///     written next differs. And a zero-cost peek, at any time, changes nothing.
    #[test]
    fn a_clock_behind_the_state_stands_still(
        limits in prop::collection::vec(any_limit(), 1..=3),
        t0 in 300_000..=2_000_000_000_000u64,
        steps in prop::collection::vec((any::<bool>(), delta(), cost(12)), 1..60),
    ) {
        let (limits, windows) = split(limits);
        let mut states = vec![State::Empty; limits.len()];
        let mut t = t0;
        for (back, d, c) in steps {
            t = if back { t.saturating_sub(d) } else { t + d };
            for ((l, s), w) in limits.iter().zip(&states).zip(&windows) {
                let at = state_time(s, *w);
                if t < at {
                    let early = l.evaluate(s, t, c);
                    let pinned = l.evaluate(s, at, c);
                    prop_assert_eq!(early.status.outcome, pinned.status.outcome, "{:?} {:?} at {} < {}", l, s, t, at);
                    prop_assert_eq!(early.status.remaining, pinned.status.remaining);
                    if at - t <= l.window_ms() {
                        prop_assert_eq!(early.next, pinned.next);
                    }
                }
            }
            let before = states.clone();
            let peek = check(&limits, &mut states, t, 0);
            prop_assert!(peek.allowed());
            prop_assert_eq!(&states, &before, "a zero-cost peek changed the state");
            check(&limits, &mut states, t, c);
        }
    }

    /// 6b. Under a clock that jumps back and forth, by up to one span behind the latest
    ///     reading, the admitted requests, each placed at the time the engine acted on (its
    ///     own reading or the latest admitted one, if later), still satisfy the bound of a
    ///     monotonic clock. (Further back, see 6d.)
    #[test]
    fn a_clock_stepping_back_keeps_every_bound(
        (limit, window) in any_limit(),
        t0 in 300_000..=2_000_000_000_000u64,
        steps in prop::collection::vec((any::<bool>(), delta(), cost(12)), 1..80),
    ) {
        let limits = [limit];
        let mut states = [State::Empty];
        let mut t = t0;
        let mut effective: Vec<(Millis, u64)> = Vec::new();
        let (mut latest, mut max_seen): (Millis, Millis) = (0, 0);
        for (back, d, c) in steps {
            t = if back { t.saturating_sub(d).max(max_seen.saturating_sub(limit.window_ms())) } else { t + d };
            max_seen = max_seen.max(t);
            if check(&limits, &mut states, t, c).allowed() && c > 0 {
                latest = latest.max(t);
                effective.push((latest, c));
            }
        }
        match limit {
            Algorithm::TokenBucket(b) => assert_bucket_bound(b.capacity(), limit.refill().unwrap(), &effective)?,
            Algorithm::FixedWindow(_) => assert_fixed_bound(limit.capacity(), window, &effective)?,
            Algorithm::SlidingWindow(_) => assert_sliding_bound(limit.capacity(), window, &effective)?,
        }
    }

    /// 6c. With unit costs a clock stepping back admits no more in total than the same
    ///     requests with the clock held at its running maximum. Unit costs only: with mixed
    ///     costs any greedy limiter can lose this, and a store that keeps no trace of denials
    ///     cannot see the maximum anyway. Bucket 6 at 1/100ms, drained at 0: requests
    ///     (600, cost 0), (400, 5), (600, 3), (600, 3) admit 6 while the clamped clock admits
    ///     5 (it spends the bucket on the 5 that the early reading denied). Steps back of up
    ///     to one span, as in 6b.
    #[test]
    fn a_clock_stepping_back_admits_no_more_than_a_monotonic_one(
        (limit, _) in any_limit(),
        t0 in 300_000..=2_000_000_000_000u64,
        steps in prop::collection::vec((any::<bool>(), delta()), 1..80),
    ) {
        let mut t = t0;
        let mut max: Millis = 0;
        let (mut raw, mut clamped) = (Vec::new(), Vec::new());
        for (back, d) in steps {
            t = if back { t.saturating_sub(d).max(max.saturating_sub(limit.window_ms())) } else { t + d };
            max = max.max(t);
            raw.push((t, 1));
            clamped.push((max, 1));
        }
        let count = |r: &[(Millis, u64)]| run(limit, r).iter().filter(|s| s.outcome == Outcome::Allowed).count();
        prop_assert!(count(&raw) <= count(&clamped), "raw {} > clamped {}", count(&raw), count(&clamped));
    }
    /// 6d. A clock stepping back by any amount, in real time: a step back takes no real
    ///     time, a step forward its length. However far back the clock goes, the engine
    ///     never believes a state older than it is, so a bucket keeps its bound, and a
    ///     sliding window its limit over every span, in real time. (Fixed windows shift
    ///     their edges with the clock, by definition; 6b covers them.)
    #[test]
    fn a_clock_stepping_back_any_amount_keeps_real_time_bounds(
        (limit, window) in any_limit(),
        t0 in 300_000..=2_000_000_000_000u64,
        steps in prop::collection::vec((any::<bool>(), delta(), cost(12)), 1..80),
    ) {
        let limits = [limit];
        let mut states = [State::Empty];
        let (mut t, mut real) = (t0, t0);
        let mut admitted: Vec<(Millis, u64)> = Vec::new();
        for (back, d, c) in steps {
            if back {
                t = t.saturating_sub(d);
            } else {
                t += d;
                real += d;
            }
            if check(&limits, &mut states, t, c).allowed() && c > 0 {
                admitted.push((real, c));
            }
        }
        match limit {
            Algorithm::TokenBucket(b) => assert_bucket_bound(b.capacity(), limit.refill().unwrap(), &admitted)?,
            Algorithm::FixedWindow(_) => {}
            Algorithm::SlidingWindow(_) => assert_sliding_bound(limit.capacity(), window, &admitted)?,
        }
    }

    /// 7. Whatever a store hands back (a state written under other parameters, by a clock
    ///    far ahead, or plain garbage), the wait and the reset reported, and so the TTL of
    ///    what is written, stay within span + lead, where the lead is how far the state's
    ///    time is ahead of now, counted up to one span: at most two spans, and one span
    ///    for any state not ahead of now. What is written is a state honoured as it is.
    #[test]
    fn any_stored_state_gives_bounded_waits_and_ttls(
        (limit, window) in any_limit(),
        now in 0..=2_000_000_000_000u64,
        state in any_state(),
        c in cost(12),
    ) {
        let span = limit.window_ms();
        let lead = state_time(&state, window).saturating_sub(now).min(span);
        let e = limit.evaluate(&state, now, c);
        let s = e.status;
        prop_assert!(s.retry_after_ms <= span + lead, "retry {} > {} + {}: {:?} {:?}", s.retry_after_ms, span, lead, limit, state);
        prop_assert!(s.reset_ms <= span + lead, "reset {} > {} + {}: {:?} {:?}", s.reset_ms, span, lead, limit, state);
        if s.outcome == Outcome::Allowed && c > 0 {
            prop_assert!(state_time(&e.next, window) <= now + span, "wrote {:?}", e.next);
            let again = limit.evaluate(&e.next, now, 0).status;
            prop_assert_eq!(again.reset_ms, s.reset_ms, "the state written is read back as it was meant");
        }
    }

    /// 8. A policy change under one key (what the parameter tag in the store keys now
    ///    prevents, and what this guards against all the same): traffic under one limit,
    ///    then under another of any kind on the same states; every answer of the new limit
    ///    stays within two of its spans, and a denial always asks for a wait.
    #[test]
    fn state_written_under_other_parameters_is_never_trusted(
        (before, _) in any_limit(),
        (after, _) in any_limit(),
        t0 in start(),
        first in steps(12),
        then in steps(12),
    ) {
        let mut state = [State::Empty];
        let requests = times(t0, &first);
        for &(t, c) in &requests {
            check(&[before], &mut state, t, c);
        }
        let t1 = requests.last().map_or(t0, |r| r.0);
        let span = after.window_ms();
        for (t, c) in times(t1, &then) {
            let s = check(&[after], &mut state, t, c).limits()[0];
            prop_assert!(s.retry_after_ms <= 2 * span && s.reset_ms <= 2 * span, "{:?} after {:?}: {:?}", after, before, s);
            if s.outcome == Outcome::Denied {
                prop_assert!(s.retry_after_ms > 0);
            }
        }
    }
    /// 9. The wait reported is the wait, whatever was stored: a denied request asked again
    ///    after its retry time passes. (A clamped state is stored as clamped; left as it was
    ///    it would be clamped afresh at every reading and the retry time would never come.)
    #[test]
    fn the_wait_reported_is_the_wait_for_any_stored_state(
        limits in prop::collection::vec((any_limit(), any_state()), 1..=3),
        now in 0..=2_000_000_000_000u64,
        c in 1..=12u64,
    ) {
        let (limits, mut states): (Vec<Algorithm>, Vec<State>) = limits.into_iter().map(|((l, _), s)| (l, s)).unzip();
        let d = check(&limits, &mut states, now, c);
        if d.outcome == Outcome::Denied {
            let again = check(&limits, &mut states, now + d.retry_after_ms(), c);
            prop_assert!(again.allowed(), "denied {:?} at {}, then {:?}", d, now, again);
        }
    }

    /// 10. A lease that wants no more than its cost is a check, for any stored state: the
    ///     same decision, the same states written, and `granted` the cost when allowed.
    #[test]
    fn a_lease_wanting_only_its_cost_is_a_check(
        limits in prop::collection::vec((any_limit(), any_state()), 1..=3),
        now in 0..=2_000_000_000_000u64,
        c in cost(12),
        short in 0..=12u64,
    ) {
        let (limits, states): (Vec<Algorithm>, Vec<State>) = limits.into_iter().map(|((l, _), s)| (l, s)).unzip();
        let (mut a, mut b) = (states.clone(), states);
        let l = lease(&limits, &mut a, now, c, c.saturating_sub(short));
        let d = check(&limits, &mut b, now, c);
        prop_assert_eq!(l.decision, d);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(l.granted, if d.allowed() { c } else { 0 });
    }

    /// 11. Any lease, from any stored state: a denial is exactly the check's; an admission
    ///     takes `cost <= granted <= max(cost, want)`, its spare units at most half of what
    ///     each limit has left after the cost, and is exactly a check of `granted` units
    ///     (same states, same statuses: `remaining` is what is left after the whole grant).
    ///     Its end is later than now and no later than the end of the fixed window holding
    ///     now, or of the sliding window's slot holding now, whichever comes first.
    #[test]
    fn a_lease_is_a_check_of_what_it_grants(
        limits in prop::collection::vec((any_limit(), any_state()), 1..=3),
        now in 0..=2_000_000_000_000u64,
        c in cost(12),
        want in prop_oneof![0..=30u64, Just(u64::MAX)],
    ) {
        let (limits, states): (Vec<(Algorithm, u64)>, Vec<State>) = limits.into_iter().unzip();
        let (limits, windows) = split(limits);
        let mut leased = states.clone();
        let l = lease(&limits, &mut leased, now, c, want);
        let mut checked = states.clone();
        let d = check(&limits, &mut checked, now, c);
        if !d.allowed() {
            prop_assert_eq!(l.decision, d);
            prop_assert_eq!(&leased, &checked);
            prop_assert_eq!((l.granted, l.until), (0, now));
            return Ok(());
        }
        prop_assert!(c <= l.granted && l.granted <= c.max(want), "granted {} for cost {} want {}", l.granted, c, want);
        for (limit, state) in limits.iter().zip(&states) {
            let left = limit.evaluate(state, now, c).status.remaining;
            prop_assert!(l.granted - c <= left / 2, "{:?}: {} spare of {} left", limit, l.granted - c, left);
        }
        let mut whole = states.clone();
        let mut d = check(&limits, &mut whole, now, l.granted);
        d.cost = c;
        prop_assert_eq!(l.decision, d);
        prop_assert_eq!(&leased, &whole);
        prop_assert!(l.until > now);
        for (limit, w) in limits.iter().zip(&windows) {
            match limit {
                Algorithm::TokenBucket(_) => {}
                Algorithm::FixedWindow(_) if l.granted > c => prop_assert!(l.until <= now - now % w + w),
                Algorithm::SlidingWindow(_) if l.granted > c => {
                    let slot = w.div_ceil(SLIDING_SLOTS);
                    prop_assert!(l.until <= (now / slot + 1) * slot);
                }
                _ => {}
            }
        }
        if limits.iter().all(|l| matches!(l, Algorithm::TokenBucket(_))) {
            prop_assert_eq!(l.until, NO_END);
        }
    }

    /// 12. Any interleaving of checks, leases, the use of leased units and refunds of what
    ///     a lease did not use keeps every limit: the units actually used never exceed a
    ///     fixed window's limit in any window, nor a sliding window's in any span of its
    ///     length (each unit placed at the time it was used, always before its lease's
    ///     end), nor a bucket's capacity plus accrual (each unit placed at its grant); and
    ///     no bucket level ever exceeds its capacity.
    #[test]
    fn leases_and_refunds_keep_every_limit(
        limits in prop::collection::vec(any_limit(), 1..=3),
        t0 in start(),
        ops in prop::collection::vec((delta(), 0..5u8, cost(12), 0..=12u64, any::<prop::sample::Index>()), 1..120),
    ) {
        let (limits, windows) = split(limits);
        let mut states = vec![State::Empty; limits.len()];
        // Open leases: (granted at, spare units not yet used, until).
        let mut open: Vec<(Millis, u64, Millis)> = Vec::new();
        let (mut at_use, mut at_grant) = (Vec::new(), Vec::new());
        let mut t = t0;
        for (d, kind, c, want, pick) in ops {
            t += d;
            match kind {
                0 if check(&limits, &mut states, t, c).allowed() && c > 0 => {
                    at_use.push((t, c));
                    at_grant.push((t, c));
                }
                1 | 2 => {
                    let l = lease(&limits, &mut states, t, c, c + want);
                    if l.decision.allowed() {
                        if c > 0 {
                            at_use.push((t, c));
                            at_grant.push((t, c));
                        }
                        if l.spare() > 0 {
                            open.push((t, l.spare(), l.until));
                        }
                    }
                }
                3 if !open.is_empty() => {
                    // One request served from a lease, while it may still be used.
                    let i = pick.index(open.len());
                    let (granted_at, spare, until) = &mut open[i];
                    if t < *until && *spare > 0 {
                        *spare -= 1;
                        at_use.push((t, 1));
                        at_grant.push((*granted_at, 1));
                    }
                }
                4 if !open.is_empty() => {
                    // A lease ends: what it did not use goes back.
                    let (granted_at, spare, _) = open.swap_remove(pick.index(open.len()));
                    refund(&limits, &mut states, t, spare, granted_at);
                }
                _ => {}
            }
            for (limit, state) in limits.iter().zip(&states) {
                if let (Algorithm::TokenBucket(b), State::Bucket { level, .. }) = (limit, state) {
                    prop_assert!(*level <= b.capacity() * limit.refill().unwrap().period_ms, "{:?} {:?}", limit, state);
                }
            }
        }
        at_grant.sort();
        for (limit, window) in limits.iter().zip(&windows) {
            match limit {
                Algorithm::TokenBucket(b) => assert_bucket_bound(b.capacity(), limit.refill().unwrap(), &at_grant)?,
                Algorithm::FixedWindow(_) => assert_fixed_bound(limit.capacity(), *window, &at_use)?,
                Algorithm::SlidingWindow(_) => assert_sliding_bound(limit.capacity(), *window, &at_use)?,
            }
        }
    }

    /// 13. A refund never leaves a limit more lenient than if the units had never been
    ///     granted: lease at `g`, hand back `u` of the spare units at a later time, and the
    ///     limit admits no more than after a check of `granted - u` at `g`. With nothing in
    ///     between, a fixed window and a sliding window whose slot is still the newest take
    ///     all of them back; a bucket all but what it refilled since.
    #[test]
    fn a_refund_gives_back_no_more_than_was_never_used(
        (limit, _) in any_limit(),
        state in any_state(),
        g in 0..=2_000_000_000_000u64,
        c in cost(12),
        want in 0..=12u64,
        d in delta(),
        unused in any::<prop::sample::Index>(),
    ) {
        let limits = [limit];
        // Both start from the state as honoured at g (what the lease writes is honoured; a
        // peek would leave a far-ahead state unclamped, to be clamped later and stricter).
        let state = match limit.honour(&state, g) { State::Empty => state, s => s };
        let mut actual = [state];
        let l = lease(&limits, &mut actual, g, c, c + want);
        prop_assume!(l.decision.allowed());
        let u = unused.index(l.spare() as usize + 1) as u64;
        let r = refund(&limits, &mut actual, g + d, u, g);
        prop_assert!(r.limits()[0] <= u);
        let mut never = [state];
        prop_assert!(check(&limits, &mut never, g, l.granted - u).allowed());
        let now = g + d;
        let a = limit.evaluate(&actual[0], now, 0).status.remaining;
        let n = limit.evaluate(&never[0], now, 0).status.remaining;
        prop_assert!(a <= n, "{:?}: {} left after the refund of {} at +{}, {} had they never been granted", limit, a, u, d, n);
    }

    /// 14. A refund from any stored state, at any time, for any grant time and any number of
    ///     units: no overflow, a bucket written never above full, a window never below empty
    ///     or credited with more than it counted, and a window's state untouched unless it
    ///     gives something back (a bucket may regain a fraction of a unit).
    #[test]
    fn a_refund_from_any_state_stays_sane(
        (limit, _) in any_limit(),
        state in any_state(),
        now in 0..=2_000_000_000_000u64,
        granted_at in prop_oneof![0..=2_000_000_000_000u64, Just(u64::MAX)],
        units in prop_oneof![0..=30u64, Just(u64::MAX)],
    ) {
        let mut s = [state];
        let before = limit.evaluate(&state, now, 0).status.remaining;
        let r = refund(&[limit], &mut s, now, units, granted_at);
        let after = limit.evaluate(&s[0], now, 0).status.remaining;
        let back = r.limits()[0];
        prop_assert!(back <= units && after <= limit.capacity());
        prop_assert!(after >= before && after - before <= back + 1, "{} -> {} for {} back", before, after, back);
        match limit {
            Algorithm::TokenBucket(b) => {
                // What it writes is full at most (a state it leaves alone is clamped on reading).
                if let (true, State::Bucket { level, .. }) = (s[0] != state, s[0]) {
                    prop_assert!(level <= b.capacity() * limit.refill().unwrap().period_ms);
                }
            }
            _ => {
                prop_assert_eq!(back == 0, s[0] == state, "{:?} -> {:?}", state, s[0]);
                if back > 0 {
                    prop_assert_eq!(after, before + back);
                }
            }
        }
    }
}
