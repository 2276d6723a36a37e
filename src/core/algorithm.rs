//! The bucket arithmetic: pure functions `(limit, state, now, cost) -> (next state, status)`
//! on integer milliseconds, and the all-or-nothing check of several limits at once.
//!
//! The Lua script in `src/store/check.lua` is this module's twin; `tests/vectors.json` holds
//! the cases both must agree on. Change one, change the other.
//!
//! A stored state is read as the record of the limit's own parameters (the store keys carry
//! them: `store::keys::state_key`), but it is never trusted beyond what those parameters
//! and a clock that steps back could produce ([`Algorithm::honour`]). A state whose time lies
//! ahead of `now` (a writer whose clock runs ahead, or a clock that stepped back) is honoured
//! by standing still at that time, as far as one span ([`Algorithm::window_ms`]) ahead and no
//! further: a time further ahead is read as `now + span` (a sliding window's newest slot as
//! the slot holding `now + span`, a fixed window's start as the next window), its recorded
//! use kept. Pulling the time back to the edge of what is honoured, rather than to `now` or
//! to an empty record, keeps the reading monotonic: a state further ahead is never treated
//! more leniently than one just inside the edge, and no recorded use is dropped. A bucket
//! level above full (a larger capacity wrote it) reads as full, what an empty record gives.
//!
//! The bound this buys, for every state whatever wrote it: the wait reported
//! (`retry_after_ms`) and the time until whole (`reset_ms`, the store's key TTL) are at most
//! span + lead <= 2 x span, the lead being how far the honoured state's time is ahead of `now`;
//! with no lead (one clock, any state from the past) both are at most one span. A request that
//! is not admitted consumes nothing, but a state that had to be clamped is stored as clamped:
//! left as it was, it would be clamped afresh, one span ahead, at every reading, and the wait
//! reported would never come due.

use super::rate::{Rate, MAX_EXACT};

/// Milliseconds since the Unix epoch, or a span of them.
pub type Millis = u64;

/// The most limits one tier (or route) may apply together.
pub const MAX_LIMITS: usize = 8;

/// A sliding window is kept as this many sub-windows ("slots"); see [`SlidingWindow`].
pub const SLIDING_SLOTS: u64 = 10;
/// Slots a sliding window can overlap at once: the full ones plus the partial oldest.
pub const SLIDING_RING: usize = SLIDING_SLOTS as usize + 1;

/// A token bucket: holds up to `capacity` units and regains them at `refill`.
///
/// The level is stored multiplied by the refill period, so that refilling for `e` ms adds
/// exactly `e × amount`: "0.1/s" and "3/s" refill without any rounding, ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u64,
    refill: Rate,
}

/// At most `limit` units in each aligned window of `window_ms` (windows start at multiples
/// of `window_ms` since the epoch, the same for every caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedWindow {
    limit: u64,
    window_ms: u64,
}

/// At most `limit` units in *any* span of `window_ms`, so no burst at window edges.
///
/// Units are counted in [`SLIDING_SLOTS`] sub-windows. A request is admitted only if the
/// units in every slot that overlaps the last `window_ms` (the oldest counted whole) leave
/// room, which guarantees the limit for every span exactly; the price is that a unit is
/// released up to one slot (a tenth of the window) late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    limit: u64,
    window_ms: u64,
}

/// One kind of limit. Built only through the checked constructors, so it is always valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    TokenBucket(TokenBucket),
    FixedWindow(FixedWindow),
    SlidingWindow(SlidingWindow),
}

impl Algorithm {
    pub fn token_bucket(capacity: u64, refill: Rate) -> Result<Algorithm, String> {
        if capacity == 0 {
            return Err("the capacity must be at least 1".into());
        }
        if capacity.checked_mul(refill.period_ms).is_none_or(|v| v > MAX_EXACT) {
            return Err(format!(
                "capacity {capacity} with refill {refill} is too large to count exactly; lower the capacity or write the refill with a smaller period"
            ));
        }
        Ok(Algorithm::TokenBucket(TokenBucket { capacity, refill }))
    }

    pub fn fixed_window(limit: u64, window_ms: u64) -> Result<Algorithm, String> {
        check_window(limit, window_ms)?;
        Ok(Algorithm::FixedWindow(FixedWindow { limit, window_ms }))
    }

    pub fn sliding_window(limit: u64, window_ms: u64) -> Result<Algorithm, String> {
        check_window(limit, window_ms)?;
        Ok(Algorithm::SlidingWindow(SlidingWindow { limit, window_ms }))
    }

    /// The most units this limit can ever admit at once.
    pub fn capacity(&self) -> u64 {
        match self {
            Algorithm::TokenBucket(b) => b.capacity,
            Algorithm::FixedWindow(w) => w.limit,
            Algorithm::SlidingWindow(w) => w.limit,
        }
    }

    /// The span the quota is measured over: the window, or for a bucket the time to refill
    /// from empty. Also the longest a stored state can matter: a state's time is honoured at
    /// most this far ahead of the clock (see the module doc), so no reported wait or reset,
    /// and no key TTL, exceeds twice this.
    pub fn window_ms(&self) -> Millis {
        match self {
            Algorithm::TokenBucket(b) => b.refill.ms_for(b.capacity),
            Algorithm::FixedWindow(w) => w.window_ms,
            // A unit stays counted for up to a window plus one slot.
            Algorithm::SlidingWindow(w) => w.window_ms + w.slot_ms(),
        }
    }

    /// The window as the policy wrote it (for a sliding window, without the extra slot
    /// [`Algorithm::window_ms`] counts).
    pub fn written_window_ms(&self) -> Millis {
        match self {
            Algorithm::SlidingWindow(w) => w.window_ms,
            other => other.window_ms(),
        }
    }

    /// The refill rate of a bucket (None for windows).
    pub fn refill(&self) -> Option<Rate> {
        match self {
            Algorithm::TokenBucket(b) => Some(b.refill),
            _ => None,
        }
    }

    /// Milliseconds until a limit whose check left it at `status` can next have more units
    /// available: 0 when it cannot (a full bucket), a bucket's next whole unit, a fixed
    /// window's end. A sliding window's counts per slot are not in the status, so its answer
    /// is when the window is whole again, or the retry time when that is sooner: an upper
    /// bound, never after the units a denied request waits for are back.
    pub fn grows_in_ms(&self, status: &LimitStatus) -> Millis {
        match self {
            Algorithm::TokenBucket(b) => {
                let missing = b.capacity.saturating_sub(status.remaining);
                if missing == 0 {
                    return 0;
                }
                // `reset_ms` brings all `missing` units; the last `missing - 1` take a unit's
                // time each.
                let later = (missing - 1).saturating_mul(b.refill.period_ms) / b.refill.amount.max(1);
                status.reset_ms.saturating_sub(later)
            }
            Algorithm::FixedWindow(_) => status.reset_ms,
            Algorithm::SlidingWindow(_) => match status.retry_after_ms {
                0 => status.reset_ms,
                retry => retry.min(status.reset_ms),
            },
        }
    }

    /// A short name for logs, keys and the dashboard.
    pub fn kind(&self) -> &'static str {
        match self {
            Algorithm::TokenBucket(_) => "token_bucket",
            Algorithm::FixedWindow(_) => "fixed_window",
            Algorithm::SlidingWindow(_) => "sliding_window",
        }
    }

    /// What these parameters make of a stored state at `now` (module doc): the state itself
    /// when they and a clock within one span of the writer's could have produced it, else
    /// the state clamped to that; `Empty` when it records nothing that still counts (another
    /// kind's state, a fixed window that is over).
    pub fn honour(&self, state: &State, now: Millis) -> State {
        // No time past now + span is honoured; capped at MAX_EXACT so that the Lua twin,
        // counting in doubles, computes the same instant.
        let horizon = (now + self.window_ms()).min(MAX_EXACT);
        match (self, *state) {
            (Algorithm::TokenBucket(b), State::Bucket { level, at }) => {
                State::Bucket { level: level.min(b.capacity * b.refill.period_ms), at: at.min(horizon) }
            }
            (Algorithm::FixedWindow(w), State::Window { start, count }) => {
                // The window of these parameters that the recorded start falls in: another
                // window size may have written an unaligned start, and its use is kept.
                let window = start - start % w.window_ms;
                let aligned = now - now % w.window_ms;
                if window < aligned {
                    State::Empty
                } else {
                    // A clock that stepped back into an earlier window stays in the later one,
                    // the next window at the furthest.
                    State::Window { start: window.min(aligned + w.window_ms), count }
                }
            }
            (Algorithm::SlidingWindow(w), State::Sliding { newest, counts }) => {
                // A state written with a shorter slot has slot numbers far ahead: its counts
                // land in the slot holding now + span.
                State::Sliding { newest: newest.min(horizon / w.slot_ms()), counts }
            }
            _ => State::Empty,
        }
    }

    /// Evaluates one request of `cost` units at `now` against `state`, as honoured.
    pub fn evaluate(&self, state: &State, now: Millis, cost: u64) -> Evaluation {
        let state = &self.honour(state, now);
        match self {
            Algorithm::TokenBucket(b) => b.evaluate(state, now, cost),
            Algorithm::FixedWindow(w) => w.evaluate(state, now, cost),
            Algorithm::SlidingWindow(w) => w.evaluate(state, now, cost),
        }
    }
}

fn check_window(limit: u64, window_ms: u64) -> Result<(), String> {
    if limit == 0 {
        return Err("the limit must be at least 1".into());
    }
    if limit > MAX_EXACT {
        return Err(format!("the limit must be at most {MAX_EXACT}"));
    }
    if window_ms == 0 {
        return Err("the window must be at least 1 ms".into());
    }
    Ok(())
}

/// What a store keeps for one limit of one subject. `Empty` is "no record": a full bucket,
/// an unused window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Empty,
    /// `level` is units × refill period (see [`TokenBucket`]), as of `at`.
    Bucket { level: u64, at: Millis },
    /// `count` units used in the window starting at `start`.
    Window { start: Millis, count: u64 },
    /// `counts[k]` units in slot number `newest - k`.
    Sliding { newest: u64, counts: [u64; SLIDING_RING] },
}

/// How one limit judged one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Not now; `retry_after_ms` says when.
    Denied,
    /// The cost is larger than the limit's capacity: no wait will ever let it through.
    Never,
}

/// One limit's view after a check: what is left and when things change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    pub outcome: Outcome,
    /// Whole units still available (after this request's cost, if it was consumed).
    pub remaining: u64,
    /// Milliseconds until the limit is whole again (bucket full, window over).
    pub reset_ms: Millis,
    /// Milliseconds until this request's cost would pass; 0 unless `Denied`.
    pub retry_after_ms: Millis,
}

/// The result of [`Algorithm::evaluate`]: the status and the state to store if the request
/// goes ahead. For denials and zero-cost peeks `next` is the state passed in, as honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub status: LimitStatus,
    pub next: State,
}

impl TokenBucket {
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn evaluate(&self, state: &State, now: Millis, cost: u64) -> Evaluation {
        let Rate { amount, period_ms } = self.refill;
        let full = self.capacity * period_ms;
        let (stored, at) = match *state {
            State::Bucket { level, at } => (level, at),
            _ => (full, now),
        };
        // A clock that stepped back is treated as standing still at the latest time seen.
        let t = now.max(at);
        let lag = t - now;
        let deficit = full - stored;
        let elapsed = t - at;
        // Refill without overflow: years of idleness just mean "full".
        let gained = if elapsed >= deficit.div_ceil(amount) { deficit } else { elapsed * amount };
        let level = stored + gained;
        let reset_at = |lvl: u64| lag + (full - lvl).div_ceil(amount);
        let status = |outcome, lvl: u64, retry_after_ms| LimitStatus {
            outcome,
            remaining: lvl / period_ms,
            reset_ms: reset_at(lvl),
            retry_after_ms,
        };
        if cost > self.capacity {
            return Evaluation { status: status(Outcome::Never, level, 0), next: *state };
        }
        let need = cost * period_ms;
        if level < need {
            let retry = lag + (need - level).div_ceil(amount);
            return Evaluation { status: status(Outcome::Denied, level, retry), next: *state };
        }
        if cost == 0 {
            return Evaluation { status: status(Outcome::Allowed, level, 0), next: *state };
        }
        let left = level - need;
        Evaluation { status: status(Outcome::Allowed, left, 0), next: State::Bucket { level: left, at: t } }
    }
}

impl FixedWindow {
    fn evaluate(&self, state: &State, now: Millis, cost: u64) -> Evaluation {
        let (start, used) = match *state {
            // Honoured: the current window, or the next for a clock behind the writer's.
            State::Window { start, count } => (start, count),
            _ => (now - now % self.window_ms, 0),
        };
        let until_end = start + self.window_ms - now;
        let left = self.limit.saturating_sub(used);
        let status = |outcome, remaining, retry_after_ms| LimitStatus {
            outcome,
            remaining,
            reset_ms: until_end,
            retry_after_ms,
        };
        if cost > self.limit {
            return Evaluation { status: status(Outcome::Never, left, 0), next: *state };
        }
        if cost > left {
            return Evaluation { status: status(Outcome::Denied, left, until_end), next: *state };
        }
        let next = if cost == 0 { *state } else { State::Window { start, count: used + cost } };
        Evaluation { status: status(Outcome::Allowed, left - cost, 0), next }
    }
}

impl SlidingWindow {
    /// Slot width: the window split in [`SLIDING_SLOTS`], rounded up to whole ms.
    fn slot_ms(&self) -> Millis {
        self.window_ms.div_ceil(SLIDING_SLOTS)
    }

    /// Slot `cur - k` still overlaps the window (t - W, t] until it ends W ms later.
    fn leaves_at(&self, cur: u64, k: usize) -> Millis {
        (cur - k as u64 + 1) * self.slot_ms() + self.window_ms
    }

    /// The honoured state as seen at `now`: the slot counted in (the newest seen, for a
    /// clock that stepped back), and the counts shifted so that `counts[k]` is slot
    /// `cur - k`, the slots that no longer overlap the window zeroed.
    fn counts_at(&self, state: &State, now: Millis) -> (u64, [u64; SLIDING_RING]) {
        let slot = self.slot_ms();
        let (mut cur, mut counts) = (now / slot, [0u64; SLIDING_RING]);
        if let State::Sliding { newest, counts: stored } = *state {
            // A clock that stepped back keeps counting in the newest slot seen.
            let shift = cur.saturating_sub(newest);
            cur = cur.max(newest);
            for (k, count) in stored.iter().enumerate() {
                if let Some(dst) = k.checked_add(shift as usize).filter(|d| *d < SLIDING_RING) {
                    counts[dst] = *count;
                }
            }
        }
        let t = now.max(cur * slot);
        for (k, count) in counts.iter_mut().enumerate() {
            if k as u64 > cur || self.leaves_at(cur, k) <= t {
                *count = 0;
            }
        }
        (cur, counts)
    }

    fn evaluate(&self, state: &State, now: Millis, cost: u64) -> Evaluation {
        let (cur, mut counts) = self.counts_at(state, now);
        let leaves_at = |k: usize| self.leaves_at(cur, k);
        let used: u64 = counts.iter().sum();
        let left = self.limit.saturating_sub(used);
        let reset_for =
            |counts: &[u64; SLIDING_RING]| counts.iter().position(|c| *c > 0).map_or(0, |k| leaves_at(k) - now);
        let status =
            |outcome, remaining, reset_ms, retry_after_ms| LimitStatus { outcome, remaining, reset_ms, retry_after_ms };
        if cost > self.limit {
            let s = status(Outcome::Never, left, reset_for(&counts), 0);
            return Evaluation { status: s, next: *state };
        }
        if cost > left {
            let mut to_free = used + cost - self.limit;
            let mut retry = 0;
            for k in (0..SLIDING_RING).rev() {
                if counts[k] >= to_free {
                    retry = leaves_at(k) - now;
                    break;
                }
                to_free -= counts[k];
            }
            let s = status(Outcome::Denied, left, reset_for(&counts), retry);
            return Evaluation { status: s, next: *state };
        }
        if cost == 0 {
            let s = status(Outcome::Allowed, left, reset_for(&counts), 0);
            return Evaluation { status: s, next: *state };
        }
        counts[0] += cost;
        Evaluation {
            status: status(Outcome::Allowed, left - cost, reset_for(&counts), 0),
            next: State::Sliding { newest: cur, counts },
        }
    }
}

/// The outcome of checking one request against all limits of a tier together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Index of the binding limit: the one that denied (latest retry), or, when allowed,
    /// the one with the least remaining.
    pub binding: usize,
    pub cost: u64,
    statuses: [LimitStatus; MAX_LIMITS],
    len: u8,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    /// Every limit's status, in the tier's order.
    pub fn limits(&self) -> &[LimitStatus] {
        &self.statuses[..self.len as usize]
    }

    pub fn binding_status(&self) -> &LimitStatus {
        &self.statuses[self.binding]
    }

    pub fn remaining(&self) -> u64 {
        self.binding_status().remaining
    }

    pub fn reset_ms(&self) -> Millis {
        self.binding_status().reset_ms
    }

    /// Milliseconds until the same request could pass; 0 when allowed or never.
    pub fn retry_after_ms(&self) -> Millis {
        self.binding_status().retry_after_ms
    }

    /// Reassembles a decision computed elsewhere (the Lua twin in Redis). `None` when the
    /// parts cannot describe a decision: no limits, too many, or a binding index out of range.
    pub fn from_parts(outcome: Outcome, binding: usize, cost: u64, statuses: &[LimitStatus]) -> Option<Decision> {
        if statuses.is_empty() || statuses.len() > MAX_LIMITS || binding >= statuses.len() {
            return None;
        }
        let mut d = Decision::unlimited(cost);
        d.outcome = outcome;
        d.binding = binding;
        d.len = statuses.len() as u8;
        d.statuses[..statuses.len()].copy_from_slice(statuses);
        Some(d)
    }

    /// The same decision seen `elapsed` ms later, without a new check: reset and retry
    /// times shortened by it. Used by the deny cache, which answers a subject it knows to be
    /// denied until some instant without asking the store.
    pub fn aged(&self, elapsed: Millis) -> Decision {
        let mut d = *self;
        for s in &mut d.statuses[..d.len as usize] {
            s.reset_ms = s.reset_ms.saturating_sub(elapsed);
            s.retry_after_ms = s.retry_after_ms.saturating_sub(elapsed);
        }
        d
    }

    /// A decision for a request no limit applies to (an exempt route).
    pub fn unlimited(cost: u64) -> Decision {
        Decision { outcome: Outcome::Allowed, binding: 0, cost, statuses: [EMPTY_STATUS; MAX_LIMITS], len: 0 }
    }
}

impl Algorithm {
    /// The limit as the Lua twin takes it: a kind number and three parameters.
    pub fn script_params(&self) -> [u64; 4] {
        match self {
            Algorithm::TokenBucket(b) => [1, b.capacity, b.refill.amount, b.refill.period_ms],
            Algorithm::FixedWindow(w) => [2, w.limit, w.window_ms, 0],
            Algorithm::SlidingWindow(w) => [3, w.limit, w.window_ms, 0],
        }
    }
}

impl AsRef<Algorithm> for Algorithm {
    fn as_ref(&self) -> &Algorithm {
        self
    }
}

const EMPTY_STATUS: LimitStatus =
    LimitStatus { outcome: Outcome::Allowed, remaining: 0, reset_ms: 0, retry_after_ms: 0 };

/// Checks `cost` units against every limit at once. Either every limit admits the request
/// and all of `states` are advanced, or none is consumed from: a denial only stores a state
/// it had to clamp as clamped ([`Algorithm::honour`]).
///
/// `states[i]` belongs to `limits[i]`; both slices must have the same length, at most
/// [`MAX_LIMITS`] (the policy guarantees it). A limit is anything that holds an algorithm:
/// the engine's own values, or a tier's named limits.
pub fn check<L: AsRef<Algorithm>>(limits: &[L], states: &mut [State], now: Millis, cost: u64) -> Decision {
    debug_assert_eq!(limits.len(), states.len());
    let n = limits.len().min(states.len()).min(MAX_LIMITS);
    // Times past 2^53 ms (year 287,000) are treated as that instant, so that no sum below
    // can overflow and the Lua twin, which counts in doubles, stays exact.
    let now = now.min(MAX_EXACT);
    let mut decision = Decision::unlimited(cost);
    decision.len = n as u8;
    // Judge first, write after: no buffer of next states (a sliding window's state is ~100
    // bytes), and the common case under attack, a denial, never computes one. An admission
    // evaluates each limit a second time to get its next state, which is cheaper than
    // initialising MAX_LIMITS states on every call.
    for i in 0..n {
        decision.statuses[i] = limits[i].as_ref().evaluate(&states[i], now, cost).status;
    }
    let statuses = &decision.statuses[..n];
    if let Some(i) = statuses.iter().position(|s| s.outcome == Outcome::Never) {
        decision.outcome = Outcome::Never;
        decision.binding = i;
    } else if statuses.iter().any(|s| s.outcome == Outcome::Denied) {
        decision.outcome = Outcome::Denied;
        decision.binding = (0..n)
            .filter(|i| statuses[*i].outcome == Outcome::Denied)
            .max_by_key(|i| (statuses[*i].retry_after_ms, std::cmp::Reverse(*i)))
            .unwrap_or(0);
    } else {
        decision.binding =
            (0..n).min_by_key(|i| (statuses[*i].remaining, std::cmp::Reverse(statuses[*i].reset_ms))).unwrap_or(0);
        if cost > 0 {
            for i in 0..n {
                states[i] = limits[i].as_ref().evaluate(&states[i], now, cost).next;
            }
        }
        return decision;
    }
    // Nothing was consumed: the limits that would have admitted report what they hold. A
    // state that had to be clamped is kept as clamped (module doc), so its wait comes due.
    for i in 0..n {
        if decision.statuses[i].outcome == Outcome::Allowed {
            decision.statuses[i] = limits[i].as_ref().evaluate(&states[i], now, 0).status;
        }
        let honoured = limits[i].as_ref().honour(&states[i], now);
        if honoured != State::Empty {
            states[i] = honoured;
        }
    }
    decision
}

/// No end: the `until` of a lease that no window bounds (token buckets only). The isolate
/// side applies its own short lifetime to every lease. `MAX_EXACT`, so the Lua twin
/// reports the same number.
pub const NO_END: Millis = MAX_EXACT;

/// What [`lease`] granted: the request's decision, and the units taken from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The decision on the request's own `cost`, exactly [`check`]'s when denied. When
    /// allowed, its statuses report the store after the whole grant: `remaining` is what is
    /// left for everyone once these `granted` units are taken. `decision.cost` is `cost`.
    pub decision: Decision,
    /// Units consumed from every limit: 0 when denied, else `cost` plus the units leased
    /// for the caller's next requests (`granted - cost`), at most `max(cost, want)`.
    pub granted: u64,
    /// The instant from which the leased units must no longer be used: the end of the
    /// current fixed window, or of the sliding window's current slot (a unit used later
    /// than the slot it was counted in could break the limit over some span), the
    /// earliest over the tier's limits; [`NO_END`] when only token buckets apply. `now`
    /// when denied.
    pub until: Millis,
}

impl Lease {
    /// Units leased beyond the request's own cost.
    pub fn spare(&self) -> u64 {
        self.granted.saturating_sub(self.decision.cost)
    }
}

/// What [`refund`] gave back: per limit, the whole units it regained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refund {
    returned: [u64; MAX_LIMITS],
    len: u8,
}

impl Refund {
    /// Units each limit regained, in the tier's order. A token bucket may also regain a
    /// fraction of a unit, which this rounds down; 0 where nothing could be given back.
    pub fn limits(&self) -> &[u64] {
        &self.returned[..self.len as usize]
    }

    /// Reassembles a refund computed elsewhere (the Lua twin). `None` for too many limits.
    pub fn from_parts(returned: &[u64]) -> Option<Refund> {
        if returned.len() > MAX_LIMITS {
            return None;
        }
        let mut r = Refund { returned: [0; MAX_LIMITS], len: returned.len() as u8 };
        r.returned[..returned.len()].copy_from_slice(returned);
        Some(r)
    }
}

impl Algorithm {
    /// When units granted at `now` against `state` must stop being used, and whether the
    /// state's time is ahead of the clock in a way that would count the units in a later
    /// window or slot than the one holding `now` (then a lease takes only the cost, so
    /// that every leased unit sits where [`refund`] can find it from `granted_at`).
    fn lease_end(&self, state: &State, now: Millis) -> (Millis, bool) {
        match self {
            // A bucket has no edge: its units may be used at any later time, the bound
            // holding with each unit placed at its grant (docs/engine.md).
            Algorithm::TokenBucket(_) => (NO_END, false),
            Algorithm::FixedWindow(w) => {
                let aligned = now - now % w.window_ms;
                let start = match self.honour(state, now) {
                    State::Window { start, .. } => start,
                    _ => aligned,
                };
                ((start + w.window_ms).min(MAX_EXACT), start > aligned)
            }
            Algorithm::SlidingWindow(w) => {
                let slot = w.slot_ms();
                let cur = match self.honour(state, now) {
                    State::Sliding { newest, .. } => newest.max(now / slot),
                    _ => now / slot,
                };
                (((cur + 1) * slot).min(MAX_EXACT), cur > now / slot)
            }
        }
    }

    /// Gives back up to `units` granted at `granted_at`, if this limit can tell they are
    /// still counted: the next state and the whole units regained, or `None` to leave the
    /// state as it is. See [`refund`].
    fn give_back(&self, state: &State, now: Millis, units: u64, granted_at: Millis) -> Option<(State, u64)> {
        match self {
            Algorithm::TokenBucket(b) => {
                let Rate { amount, period_ms } = b.refill;
                let full = b.capacity * period_ms;
                // An empty record is a full bucket: nothing to give back.
                let State::Bucket { level: stored, at } = self.honour(state, now) else { return None };
                let t = now.max(at);
                // A grant later than the bucket's own time was not made on this record.
                if granted_at > t {
                    return None;
                }
                let deficit = full - stored;
                let gained = if t - at >= deficit.div_ceil(amount) { deficit } else { (t - at) * amount };
                let level = stored + gained;
                // What the bucket refilled since the grant may have been lost to the cap
                // had the units never been taken: only the rest comes back.
                let back = units.min(b.capacity) * period_ms;
                let elapsed = t - granted_at;
                let lost = if elapsed >= back.div_ceil(amount) { back } else { elapsed * amount };
                let add = (back - lost).min(full - level);
                (add > 0).then_some((State::Bucket { level: level + add, at: t }, add / period_ms))
            }
            Algorithm::FixedWindow(w) => {
                let window = granted_at - granted_at % w.window_ms;
                if now - now % w.window_ms != window {
                    return None;
                }
                // The record of the grant's window: with `now` in that window, any later
                // record (a lease never counts in one, see `lease_end`) would read as a
                // later start.
                let State::Window { start, count } = self.honour(state, now) else { return None };
                let back = units.min(count);
                (start == window && back > 0).then_some((State::Window { start, count: count - back }, back))
            }
            Algorithm::SlidingWindow(w) => {
                // A lease's spare units were counted in the slot holding `granted_at` (it
                // leases none when its clock is behind the record, see `lease_end`).
                let slot = granted_at / w.slot_ms();
                if !matches!(state, State::Sliding { .. }) || self.honour(state, now) != *state {
                    return None;
                }
                let (cur, mut counts) = w.counts_at(state, now);
                let k = cur.checked_sub(slot).and_then(|k| usize::try_from(k).ok()).filter(|k| *k < SLIDING_RING)?;
                let back = units.min(counts[k]);
                if back == 0 {
                    return None;
                }
                counts[k] -= back;
                Some((State::Sliding { newest: cur, counts }, back))
            }
        }
    }
}

/// A check that also leases units for the caller's next requests, in the same atomic step.
///
/// If any limit cannot admit `cost`, this is exactly [`check`]'s denial: nothing consumed,
/// `granted` 0. Otherwise it takes `granted` units from every limit at once, `cost <=
/// granted <= max(cost, want)`, the spare units (`granted - cost`) capped by each limit at
/// half of what it would have left after `cost` (rounded down): as a bucket nears empty
/// the grant shrinks to `cost` and checks are exact again. A clock behind a window's
/// record (its units would count in a later window or slot than `now`'s) also gets
/// `cost` only. With `want <= cost` this is [`check`].
///
/// `granted` units are consumed at `now` as one request of that cost would be; the
/// caller uses the spare ones before `until` and hands back what it did not use with
/// [`refund`].
pub fn lease<L: AsRef<Algorithm>>(limits: &[L], states: &mut [State], now: Millis, cost: u64, want: u64) -> Lease {
    let n = limits.len().min(states.len()).min(MAX_LIMITS);
    let now = now.min(MAX_EXACT);
    let mut spare = want.saturating_sub(cost);
    let mut until = NO_END;
    for i in 0..n {
        let limit = limits[i].as_ref();
        let status = limit.evaluate(&states[i], now, cost).status;
        if status.outcome != Outcome::Allowed {
            return Lease { decision: check(limits, states, now, cost), granted: 0, until: now };
        }
        let (end, ahead) = limit.lease_end(&states[i], now);
        spare = if ahead { 0 } else { spare.min(status.remaining / 2) };
        until = until.min(end);
    }
    if n == 0 {
        spare = 0;
    }
    let granted = cost + spare;
    let mut decision = check(limits, states, now, granted);
    decision.cost = cost;
    let granted = if decision.allowed() { granted } else { 0 };
    Lease { decision, granted, until }
}

/// Hands back `units` of a lease granted at `granted_at` (what [`lease`] was called with as
/// `now`) that were not used, so that other callers can have them. Each limit takes back
/// only what it can tell is still counted, and never more than the limit would have had if
/// the units had never been granted:
///
/// - a token bucket regains the units less what it refilled since the grant (a bucket that
///   was refilling would, without the grant, have reached full sooner and lost that much),
///   up to full;
/// - a fixed window subtracts them from its count if `now` is still in the window of
///   `granted_at` and its record is that window's;
/// - a sliding window subtracts them from the slot holding `granted_at`, if that slot is
///   still counted.
///
/// A limit that gives nothing back keeps its state untouched. `units` must be spare units
/// of one lease (`granted - cost`, not yet used), refunded once: a lease counts its spare
/// units where `granted_at` says (it leases none to a clock behind a window's record),
/// while a plain check's cost may have been counted in a later slot.
pub fn refund<L: AsRef<Algorithm>>(
    limits: &[L],
    states: &mut [State],
    now: Millis,
    units: u64,
    granted_at: Millis,
) -> Refund {
    let n = limits.len().min(states.len()).min(MAX_LIMITS);
    let (now, granted_at) = (now.min(MAX_EXACT), granted_at.min(MAX_EXACT));
    let mut refund = Refund { returned: [0; MAX_LIMITS], len: n as u8 };
    for i in 0..n {
        if let Some((next, back)) = limits[i].as_ref().give_back(&states[i], now, units, granted_at) {
            states[i] = next;
            refund.returned[i] = back;
        }
    }
    refund
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(capacity: u64, refill: &str) -> Algorithm {
        Algorithm::token_bucket(capacity, Rate::parse(refill).unwrap()).unwrap()
    }

    fn run(limits: &[Algorithm], states: &mut [State], now: Millis, cost: u64) -> Decision {
        check(limits, states, now, cost)
    }

    #[test]
    fn token_bucket_admits_the_burst_then_refills_exactly() {
        // 10 burst, 0.1 per second sustained: one unit every 10 s, exactly.
        let limits = [bucket(10, "0.1/s")];
        let mut s = [State::Empty];
        let t0 = 1_700_000_000_000;
        for i in 0..10 {
            let d = run(&limits, &mut s, t0, 1);
            assert!(d.allowed(), "request {i}");
            assert_eq!(d.remaining(), 9 - i);
        }
        let d = run(&limits, &mut s, t0, 1);
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.retry_after_ms(), 10_000);
        assert_eq!(d.reset_ms(), 100_000);
        assert!(!run(&limits, &mut s, t0 + 9_999, 1).allowed());
        assert!(run(&limits, &mut s, t0 + 10_000, 1).allowed());
        assert!(!run(&limits, &mut s, t0 + 10_001, 1).allowed());
    }

    #[test]
    fn thirds_of_a_second_do_not_drift() {
        let limits = [bucket(3, "3/s")];
        let mut s = [State::Empty];
        let mut admitted = 0;
        // Over 30 s, polling every ms, a 3/s bucket of burst 3 admits 3 + 90 exactly.
        for t in 0..=30_000u64 {
            if run(&limits, &mut s, 5_000_000 + t, 1).allowed() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 93);
        // With burst 1 the fraction regained past a full bucket is lost, as it must be:
        // admissions come every 334 ms, not every 333.3.
        let limits = [bucket(1, "3/s")];
        let mut s = [State::Empty];
        let admitted = (0..=30_000u64).filter(|t| run(&limits, &mut s, 5_000_000 + t, 1).allowed()).count();
        assert_eq!(admitted, 1 + 30_000 / 334);
    }

    #[test]
    fn years_idle_and_huge_timestamps_do_not_overflow() {
        let limits = [bucket(100, "1/day")];
        let mut s = [State::Empty];
        assert!(run(&limits, &mut s, 0, 100).allowed());
        let d = run(&limits, &mut s, u64::MAX - 1, 100);
        assert!(d.allowed());
        assert!(!run(&limits, &mut s, u64::MAX, 1).allowed(), "time is clamped, not wrapped");
        let w = [Algorithm::fixed_window(5, 60_000).unwrap(), Algorithm::sliding_window(5, 60_000).unwrap()];
        let mut s = [State::Empty; 2];
        assert!(run(&w, &mut s, 1, 5).allowed());
        assert!(run(&w, &mut s, MAX_EXACT / 2, 5).allowed());
        assert!(run(&w, &mut s, MAX_EXACT - 1, 5).allowed());
        assert!(!run(&w, &mut s, u64::MAX, 1).allowed(), "time is clamped, not wrapped");
    }

    #[test]
    fn a_clock_stepping_back_grants_nothing() {
        for limit in [
            bucket(5, "1/s"),
            Algorithm::fixed_window(5, 10_000).unwrap(),
            Algorithm::sliding_window(5, 10_000).unwrap(),
        ] {
            let limits = [limit];
            let mut s = [State::Empty];
            let t = 1_000_000_000;
            let span = limit.window_ms();
            assert!(run(&limits, &mut s, t + 9_000, 5).allowed(), "{limit:?}");
            // Jumping back a whole window must not look like a fresh one.
            for back in [1, 5_000, 9_000, 60_000] {
                let d = run(&limits, &mut s, t + 9_000 - back, 1);
                assert_eq!(d.outcome, Outcome::Denied, "{limit:?} back {back}");
                // The retry counts from the latest time seen, honoured up to one span ahead.
                assert!(d.retry_after_ms() >= back.min(span), "{limit:?} back {back}: {d:?}");
                assert!(d.retry_after_ms() <= 2 * span && d.reset_ms() <= 2 * span, "{limit:?} back {back}: {d:?}");
            }
        }
    }

    /// Issue 13: a state written under other parameters (a policy change, a rollback, two
    /// policy versions on one store) or by a clock far ahead is clamped, never trusted.
    #[test]
    fn states_no_parameters_of_ours_could_write_are_clamped() {
        let t = 1_699_920_000_000 + 1_000; // a second after midnight
        let hourly = Algorithm::sliding_window(300, 3_600_000).unwrap();
        let daily = Algorithm::sliding_window(300, 86_400_000).unwrap();
        let bounded = |limit: Algorithm, state: State, now: Millis, cost: u64| {
            let d = run(&[limit], &mut [state], now, cost);
            let span = limit.window_ms();
            assert!(d.retry_after_ms() <= 2 * span && d.reset_ms() <= 2 * span, "{limit:?} {state:?}: {d:?}");
            d
        };

        // 300/h used up, then read as 300/day: its 360 s slot numbers are 24 times the day's.
        let mut s = [State::Empty];
        assert!(run(&[hourly], &mut s, t, 300).allowed());
        let d = bounded(daily, s[0], t + 1_000, 1);
        assert_eq!(d.outcome, Outcome::Denied, "the units are kept, not dropped");
        // Read back as 300/h after that (a rollback): the state is as it was.
        assert_eq!(bounded(hourly, s[0], t + 1_000, 1).outcome, Outcome::Denied);
        // 300/day used up, then read as 300/h: its slots are old under the hour's slot size.
        let mut s = [State::Empty];
        assert!(run(&[daily], &mut s, t, 300).allowed());
        let d = bounded(hourly, s[0], t + 1_000, 1);
        assert!(d.allowed() && d.retry_after_ms() == 0 && d.reset_ms() <= hourly.window_ms());

        // A bucket level above full (a larger capacity wrote it) reads as full, no more.
        let b = bucket(10, "1/s");
        let d = bounded(b, State::Bucket { level: 1_000_000, at: t }, t, 10);
        assert_eq!((d.outcome, d.remaining()), (Outcome::Allowed, 0));
        // A bucket emptied "a century from now": it stands still one span ahead, no more.
        let century = 100 * 366 * 86_400_000;
        let d = bounded(b, State::Bucket { level: 0, at: t + century }, t, 1);
        assert_eq!((d.outcome, d.retry_after_ms(), d.reset_ms()), (Outcome::Denied, 11_000, 20_000));
        // Exactly as if it had been written one span ahead.
        assert_eq!(d, run(&[b], &mut [State::Bucket { level: 0, at: t + 10_000 }], t, 1));
        // The denial stores it so, and the wait it told comes due: left a century ahead, the
        // state would be clamped afresh at every reading and never refill.
        let mut s = [State::Bucket { level: 0, at: t + century }];
        let d = run(&[b], &mut s, t, 1);
        assert_eq!(s[0], State::Bucket { level: 0, at: t + 10_000 });
        assert!(run(&[b], &mut s, t + d.retry_after_ms(), 1).allowed());

        // A fixed window start far ahead reads as the next window; its count is kept.
        let f = Algorithm::fixed_window(5, 60_000).unwrap();
        let aligned = t - t % 60_000;
        let d = bounded(f, State::Window { start: aligned + century, count: 5 }, t, 1);
        assert_eq!((d.outcome, d.retry_after_ms()), (Outcome::Denied, aligned + 120_000 - t));
        // An unaligned start (another window size wrote it) counts in the window it falls in.
        let d = bounded(f, State::Window { start: aligned + 7, count: 4 }, t, 1);
        assert_eq!((d.outcome, d.remaining(), d.reset_ms()), (Outcome::Allowed, 0, aligned + 60_000 - t));
        assert!(
            bounded(f, State::Window { start: aligned - 7, count: 5 }, t, 1).allowed(),
            "an earlier window is over"
        );

        // A sliding window's newest slot far ahead is read as the slot holding now + span.
        let w = Algorithm::sliding_window(5, 60_000).unwrap();
        let far = State::Sliding { newest: u64::MAX, counts: [1; SLIDING_RING] };
        let d = bounded(w, far, t, 1);
        assert_eq!(d.outcome, Outcome::Denied);
        let edge = (t + 66_000) / 6_000;
        assert_eq!(d, run(&[w], &mut [State::Sliding { newest: edge, counts: [1; SLIDING_RING] }], t, 1));
        // And an admission writes a state that is sane again: its TTL within two spans.
        let mut s = [State::Sliding { newest: u64::MAX, counts: [0; SLIDING_RING] }];
        let d = run(&[w], &mut s, t, 1);
        assert!(d.allowed() && d.reset_ms() <= 2 * w.window_ms());
        assert!(matches!(s[0], State::Sliding { newest, .. } if newest == edge));
    }

    #[test]
    fn fixed_window_resets_at_the_boundary() {
        let limits = [Algorithm::fixed_window(3, 60_000).unwrap()];
        let mut s = [State::Empty];
        let t = 120_000 + 59_000; // one second before a boundary
        for _ in 0..3 {
            assert!(run(&limits, &mut s, t, 1).allowed());
        }
        let d = run(&limits, &mut s, t, 1);
        assert_eq!((d.outcome, d.retry_after_ms(), d.remaining()), (Outcome::Denied, 1_000, 0));
        // The fixed window's known weakness: a fresh budget right after the edge.
        for _ in 0..3 {
            assert!(run(&limits, &mut s, t + 1_000, 1).allowed());
        }
    }

    #[test]
    fn sliding_window_has_no_edge_burst() {
        let limits = [Algorithm::sliding_window(3, 60_000).unwrap()];
        let mut s = [State::Empty];
        let t = 120_000 + 59_000;
        for _ in 0..3 {
            assert!(run(&limits, &mut s, t, 1).allowed());
        }
        let d = run(&limits, &mut s, t + 1_000, 1);
        assert_eq!(d.outcome, Outcome::Denied);
        // The three units sit in the slot [174 s, 180 s): counted until 240 s.
        assert_eq!(d.retry_after_ms(), 240_000 - (t + 1_000));
        assert!(!run(&limits, &mut s, 239_999, 1).allowed());
        assert!(run(&limits, &mut s, 240_000, 3).allowed());
    }

    #[test]
    fn cost_beyond_capacity_can_never_pass() {
        let limits = [bucket(10, "1/s"), Algorithm::fixed_window(100, 1_000).unwrap()];
        let mut s = [State::Empty; 2];
        let d = run(&limits, &mut s, 1_000, 11);
        assert_eq!(d.outcome, Outcome::Never);
        assert_eq!(d.binding, 0);
        assert_eq!(d.retry_after_ms(), 0);
        assert_eq!(s, [State::Empty; 2]);
    }

    #[test]
    fn cost_zero_peeks_without_consuming() {
        let limits = [bucket(10, "1/s"), Algorithm::sliding_window(4, 1_000).unwrap()];
        let mut s = [State::Empty; 2];
        assert!(run(&limits, &mut s, 1_000, 3).allowed());
        let before = s;
        let d = run(&limits, &mut s, 1_000, 0);
        assert!(d.allowed());
        assert_eq!(s, before);
        assert_eq!(d.limits()[0].remaining, 7);
        assert_eq!(d.limits()[1].remaining, 1);
        assert_eq!(d.binding, 1);
    }

    #[test]
    fn a_multi_limit_denial_consumes_nothing_and_names_the_binding_limit() {
        // 10/s and 12/day: the daily one binds after 12.
        let limits = [bucket(10, "10/s"), Algorithm::fixed_window(12, 86_400_000).unwrap()];
        let mut s = [State::Empty; 2];
        let day = 86_400_000 * 20_000;
        for _ in 0..10 {
            assert!(run(&limits, &mut s, day, 1).allowed());
        }
        let d = run(&limits, &mut s, day, 1);
        assert_eq!((d.outcome, d.binding, d.retry_after_ms()), (Outcome::Denied, 0, 100));
        let before = s;
        assert!(!run(&limits, &mut s, day + 50, 1).allowed());
        assert_eq!(s, before);
        assert!(run(&limits, &mut s, day + 200, 2).allowed());
        let d = run(&limits, &mut s, day + 10_000, 1);
        assert_eq!(d.outcome, Outcome::Denied);
        assert_eq!(d.binding, 1, "the daily window binds");
        assert_eq!(d.retry_after_ms(), 86_400_000 - 10_000);
        // The bucket that would have admitted reports its level untouched.
        assert_eq!(d.limits()[0].remaining, 10);
        assert_eq!(d.limits()[0].outcome, Outcome::Allowed);
    }

    #[test]
    fn a_lease_takes_at_most_half_of_what_is_left() {
        let limits = [bucket(10, "1/s")];
        let mut s = [State::Empty];
        let t = 1_000_000;
        // 9 left after the request itself: 4 more are leased, 5 stay for everyone else.
        let l = lease(&limits, &mut s, t, 1, 8);
        assert_eq!((l.granted, l.spare(), l.decision.remaining(), l.until), (5, 4, 5, NO_END));
        assert_eq!(l.decision.cost, 1);
        let grants: Vec<u64> = (0..4).map(|_| lease(&limits, &mut s, t, 1, 8).granted).collect();
        // 4 left after the cost: 2; then 1 left: 0, exact checks again near the end.
        assert_eq!(grants, [3, 1, 1, 0]);
        let l = lease(&limits, &mut s, t, 1, 8);
        assert_eq!((l.decision.outcome, l.granted, l.until), (Outcome::Denied, 0, t));
        assert_eq!(l.decision.retry_after_ms(), 1_000);
    }

    #[test]
    fn a_lease_with_want_at_most_cost_is_a_check() {
        let limits = [bucket(10, "1/s"), Algorithm::sliding_window(5, 60_000).unwrap()];
        let (mut a, mut b) = ([State::Empty; 2], [State::Empty; 2]);
        for (t, cost, want) in [(0, 2, 2), (10, 1, 0), (20, 3, 1), (30, 0, 0), (40, 1, 1)] {
            let l = lease(&limits, &mut a, t, cost, want);
            assert_eq!(l.decision, check(&limits, &mut b, t, cost));
            assert_eq!(a, b);
            assert_eq!(l.granted, if l.decision.allowed() { cost } else { 0 });
        }
    }

    #[test]
    fn a_lease_ends_at_the_first_window_edge() {
        let t = 3_600_000 * 10 + 90_500; // 90.5 s into an hour
        let fixed = Algorithm::fixed_window(100, 60_000).unwrap();
        let sliding = Algorithm::sliding_window(100, 60_000).unwrap();
        let b = bucket(100, "10/s");
        let l = lease(&[fixed], &mut [State::Empty], t, 1, 10);
        assert_eq!((l.granted, l.until), (10, t - 30_500 + 60_000));
        // A sliding window's units may be used only within the slot they count in.
        let l = lease(&[b, sliding], &mut [State::Empty; 2], t, 1, 10);
        assert_eq!((l.granted, l.until), (10, t - 500 + 6_000));
        let hourly = Algorithm::sliding_window(100, 3_600_000).unwrap();
        let l = lease(&[b, fixed, hourly], &mut [State::Empty; 3], t, 1, 10);
        assert_eq!(l.until, t - 30_500 + 60_000, "the fixed window's end comes before the 6 min slot's");
        // The binding limit is the one with least left after the whole grant.
        let tight = Algorithm::fixed_window(7, 60_000).unwrap();
        let l = lease(&[b, tight], &mut [State::Empty; 2], t, 1, 10);
        assert_eq!((l.granted, l.decision.binding, l.decision.remaining()), (4, 1, 3));
    }

    #[test]
    fn a_clock_behind_a_window_record_leases_nothing_spare() {
        let w = Algorithm::fixed_window(100, 60_000).unwrap();
        let mut s = [State::Empty];
        assert_eq!(lease(&[w], &mut s, 120_000, 1, 10).granted, 10);
        // Back into the previous window: counted in the later one, so no spare units.
        let l = lease(&[w], &mut s, 119_000, 1, 10);
        assert_eq!((l.granted, l.decision.remaining()), (1, 89));
        let sw = Algorithm::sliding_window(100, 60_000).unwrap();
        let mut s = [State::Empty];
        assert_eq!(lease(&[sw], &mut s, 12_000, 1, 10).granted, 10);
        assert_eq!(lease(&[sw], &mut s, 11_999, 1, 10).granted, 1);
    }

    #[test]
    fn a_fixed_window_takes_back_units_of_its_own_window_only() {
        let w = [Algorithm::fixed_window(10, 60_000).unwrap()];
        let mut s = [State::Empty];
        assert_eq!(lease(&w, &mut s, 61_000, 1, 9).granted, 5);
        let r = refund(&w, &mut s, 70_000, 3, 61_000);
        assert_eq!(r.limits(), [3]);
        assert_eq!(s[0], State::Window { start: 60_000, count: 2 });
        assert_eq!(check(&w, &mut s, 70_000, 0).remaining(), 8);
        // Never more than was counted, and nothing once the window is over.
        assert_eq!(refund(&w, &mut s, 70_000, 50, 61_000).limits(), [2]);
        assert_eq!(s[0], State::Window { start: 60_000, count: 0 });
        assert_eq!(lease(&w, &mut s, 119_000, 4, 4).granted, 4);
        let before = s;
        assert_eq!(refund(&w, &mut s, 120_000, 4, 119_000).limits(), [0]);
        assert_eq!(refund(&w, &mut s, 119_500, 4, 59_000).limits(), [0], "another window's grant");
        assert_eq!(s, before);
    }

    #[test]
    fn a_bucket_takes_back_units_less_what_it_refilled_since() {
        let b = [bucket(10, "1/s")];
        let mut s = [State::Empty];
        let t = 1_000_000;
        assert_eq!(lease(&b, &mut s, t, 1, 9).granted, 5);
        // Straight away: all 4 come back.
        let mut now = s;
        assert_eq!(refund(&b, &mut now, t, 4, t).limits(), [4]);
        assert_eq!(check(&b, &mut now, t, 0).remaining(), 9);
        // 1.5 s later the bucket regained 1.5; of the 4, 2.5 come back (2 whole, 1 half).
        let r = refund(&b, &mut s, t + 1_500, 4, t);
        assert_eq!(r.limits(), [2]);
        assert_eq!(s[0], State::Bucket { level: 9_000, at: t + 1_500 });
        // Never above full, and nothing once the refill has caught up.
        assert_eq!(refund(&b, &mut s, t + 1_500, 10, t + 1_500).limits(), [1]);
        assert_eq!(check(&b, &mut s, t + 1_500, 0).remaining(), 10);
        let mut s = [State::Empty];
        assert_eq!(lease(&b, &mut s, t, 1, 9).granted, 5);
        let before = s;
        assert_eq!(refund(&b, &mut s, t + 4_000, 4, t).limits(), [0]);
        assert_eq!(s, before);
    }

    #[test]
    fn a_sliding_window_takes_back_units_from_their_slot_only() {
        let w = [Algorithm::sliding_window(10, 60_000).unwrap()];
        let mut s = [State::Empty];
        assert_eq!(lease(&w, &mut s, 1_000, 1, 9).granted, 5);
        // Later, still counted, no later slot written: back they come.
        let mut copy = s;
        assert_eq!(refund(&w, &mut copy, 30_000, 4, 1_000).limits(), [4]);
        assert_eq!(check(&w, &mut copy, 30_000, 0).remaining(), 9);
        // Later slots written since: the units still come out of the grant's own slot.
        assert!(check(&w, &mut s, 7_000, 1).allowed());
        assert_eq!(refund(&w, &mut s, 8_000, 4, 1_000).limits(), [4]);
        let State::Sliding { newest: 1, counts } = s[0] else { panic!("{s:?}") };
        assert_eq!(counts[..3], [1, 1, 0]);
        // Never more than the slot holds.
        assert_eq!(refund(&w, &mut s, 8_000, 4, 1_000).limits(), [1]);
        assert_eq!(refund(&w, &mut s, 8_000, 4, 1_000).limits(), [0]);
        // Nor once the slot has left the window.
        let mut s = [State::Empty];
        assert_eq!(lease(&w, &mut s, 1_000, 1, 9).granted, 5);
        assert_eq!(refund(&w, &mut s, 66_000, 4, 1_000).limits(), [0]);
    }

    #[test]
    fn a_refund_reaches_every_limit_it_can() {
        let limits = [bucket(10, "1/s"), Algorithm::fixed_window(10, 60_000).unwrap()];
        let mut s = [State::Empty; 2];
        let l = lease(&limits, &mut s, 59_000, 1, 9);
        assert_eq!((l.granted, l.until), (5, 60_000));
        // Past the window's edge: the bucket takes back what it can, the window nothing.
        assert_eq!(refund(&limits, &mut s, 60_500, 4, 59_000).limits(), [2, 0]);
    }

    #[test]
    fn invalid_limits_cannot_be_built() {
        assert!(Algorithm::token_bucket(0, Rate::parse("1/s").unwrap()).is_err());
        assert!(Algorithm::token_bucket(u64::MAX, Rate::parse("1/s").unwrap()).is_err());
        assert!(Algorithm::fixed_window(0, 1).is_err());
        assert!(Algorithm::sliding_window(1, 0).is_err());
    }
}
