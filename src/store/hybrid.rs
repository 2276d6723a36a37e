//! The store the Worker uses: the subject's lease, the deny cache, then Upstash behind a
//! circuit breaker, then the policy's `store.on_failure` when Upstash fails or the breaker is
//! open. A store failure never reaches the client as an error, and every answer names the
//! backend that decided.
//!
//! ```text
//! check ─► its lease covers it? ───────────────────────► allowed, no store call
//!       ─► deny cache hit? ────────────────────────────► denied, no store call
//!       ─► breaker open? ──────────────────────────────► on_failure, no store call
//!       ─► Upstash (one EVALSHA: the check, which may take a lease, and any unused leased
//!          units handed back) ─ ok ────────────────────► its decision (denials cached)
//!                               └ failure ─────────────► on_failure (memory / open / closed)
//! ```

use std::cell::{Cell, RefCell};

use super::breaker::{Admission, Breaker, BreakerState, Transition};
use super::coalesce::{Carried, Coalescer, Parked};
use super::deny_cache::DenyCache;
use super::lease::{Grant, LeaseBook, Unused};
use super::memory::MemoryStore;
use super::script::{Answer, Op};
use super::{Backend, CheckRequest, Store, StoreError};
use crate::core::algorithm::{Algorithm, Decision, LimitStatus, Millis, Refund};
use crate::core::policy::{FailMode, StoreSettings};

/// A line for the Worker's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// An event's stable name (for structured logs) and its message.
    Error(&'static str, String),
    Info(&'static str, String),
}

/// What the hybrid could say about one check.
#[derive(Debug)]
pub struct Verdict {
    /// `Err` only under `on_failure: closed` while Upstash is failing.
    pub decision: Result<Decision, StoreError>,
    pub backend: Backend,
    /// What is worth logging about this check: at most a few lines per outage, never one
    /// per request.
    pub notes: Vec<Note>,
}

/// Counters since the isolate started, for the dashboard and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub store_calls: u64,
    pub store_failures: u64,
    /// Checks decided without calling Upstash because the breaker was open.
    pub skipped: u64,
    /// Checks decided from a lease, with no store call.
    pub leased: u64,
    /// Leases' unused units handed back (in units).
    pub returned: u64,
    /// Store calls made only to hand leased units back, for an isolate that had no next check.
    pub hand_backs: u64,
}

/// What handing a lease back needs: its keys in the store and its limits.
#[derive(Clone, Debug)]
pub struct Refundable {
    keys: Vec<String>,
    limits: Vec<Algorithm>,
}

/// One request's part of a store call: its check and the leased units it hands back, owned,
/// so that another request may carry it (`store::coalesce`).
pub struct Work {
    keys: Vec<String>,
    ops: Vec<OwnedOp>,
}

impl Work {
    /// Adds the operations that hand `returns` back.
    fn hand_back(&mut self, returns: &[Unused<Refundable>]) {
        for u in returns {
            self.keys.extend(u.payload.keys.iter().cloned());
            let (limits, units, granted_at) = (u.payload.limits.clone(), u.units, u.granted_at);
            self.ops.push(OwnedOp::Refund { limits, units, granted_at });
        }
    }
}

enum OwnedOp {
    Check { limits: Vec<Algorithm>, cost: u64, want: u64 },
    Refund { limits: Vec<Algorithm>, units: u64, granted_at: Millis },
}

impl OwnedOp {
    fn as_op(&self) -> Op<'_, Algorithm> {
        match self {
            OwnedOp::Check { limits, cost, want } => Op::Check { limits, cost: *cost, want: *want },
            OwnedOp::Refund { limits, units, granted_at } => {
                Op::Refund { limits, units: *units, granted_at: *granted_at }
            }
        }
    }
}

/// Checks carried in one batched call, at most.
const BATCH_MAX: usize = 16;
/// Batched calls in flight at once: a check queues only when this many are, and then waits
/// for the first of them back, not for the one it just missed.
const FLIGHTS: usize = 2;

/// Unused leased units handed back per store call, at most; the rest wait for the next.
const RETURNS_PER_CALL: usize = 8;
/// Unused leased units waiting to be handed back, at most (past it the oldest are dropped:
/// units lost to the store until their limit refills, never units admitted twice).
const RETURNS_WAITING: usize = 64;

pub struct Hybrid<P> {
    primary: Option<P>,
    memory: MemoryStore,
    on_failure: FailMode,
    breaker: Breaker,
    denials: Option<DenyCache>,
    counts: Cell<Counts>,
    /// Failure classes already logged in the current outage (bit per class).
    logged: Cell<u8>,
    /// The last failure: when, its class, and what was seen.
    last_failure: RefCell<Option<(Millis, StoreError)>>,
    leases: LeaseBook<Refundable>,
    /// Ended leases whose unused units are still to be handed back.
    returns: RefCell<Vec<Unused<Refundable>>>,
    /// With `store.batch`: concurrent checks in one call.
    batches: Option<Coalescer<Work, Answered, Parked>>,
    /// The latest lease end a hand-back is already scheduled for.
    scheduled: Cell<Millis>,
}

fn class_bit(e: &StoreError) -> u8 {
    1 << match e {
        StoreError::Unauthorized => 0,
        StoreError::Server { .. } => 1,
        StoreError::Timeout { .. } => 2,
        StoreError::Network(_) => 3,
        StoreError::Malformed(_) => 4,
        StoreError::ScriptMissing => 5,
        StoreError::Command(_) => 6,
    }
}

impl<P: Store> Hybrid<P> {
    pub fn new(primary: Option<P>, settings: &StoreSettings) -> Hybrid<P> {
        Hybrid {
            primary,
            memory: MemoryStore::new(settings.memory_max_keys),
            on_failure: settings.on_failure,
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown_ms),
            denials: settings.deny_cache.then(|| DenyCache::new(settings.memory_max_keys)),
            counts: Cell::new(Counts::default()),
            logged: Cell::new(0),
            last_failure: RefCell::new(None),
            leases: LeaseBook::new(settings.memory_max_keys),
            returns: RefCell::new(Vec::new()),
            batches: settings.batch.then(|| Coalescer::new(Parked {}, settings.timeout_ms, BATCH_MAX, FLIGHTS)),
            scheduled: Cell::new(0),
        }
    }

    /// When the Worker should hand back what leases leave unused, if no store call does it
    /// first: the end of the earliest lease no hand-back is scheduled for yet. Each end is
    /// said once.
    pub fn hand_back_due(&self) -> Option<Millis> {
        let end = self.leases.first_end()?;
        if end <= self.scheduled.get() {
            return None;
        }
        self.scheduled.set(end);
        Some(end)
    }

    /// Hands back the unused units of leases that are over, in one store call (none if there
    /// are none): what the isolate's next check would have carried, for an isolate that gets
    /// no next check soon.
    pub async fn hand_back(&self, now: Millis) {
        let Some(primary) = &self.primary else { return };
        let returns = self.returns_due(now, Vec::new());
        if returns.is_empty() || self.breaker.admit(now) == Admission::Skip {
            self.keep_returns(returns);
            return;
        }
        let mut work = Work { keys: Vec::new(), ops: Vec::new() };
        work.hand_back(&returns);
        self.count(|c| {
            c.store_calls += 1;
            c.hand_backs += 1;
        });
        if send(primary, now, vec![work]).await.is_ok() {
            let units: u64 = returns.iter().map(|u| u.units).sum();
            self.count(|c| c.returned += units);
        } else {
            self.keep_returns(returns);
        }
    }

    /// Batched calls and the checks they carried, with `store.batch`.
    pub fn batched(&self) -> Option<Carried> {
        self.batches.as_ref().map(Coalescer::carried)
    }

    /// Leases held in this isolate now.
    pub fn leases_held(&self) -> usize {
        self.leases.held()
    }

    /// The shared store, when there is one.
    pub fn primary(&self) -> Option<&P> {
        self.primary.as_ref()
    }

    pub fn has_primary(&self) -> bool {
        self.primary.is_some()
    }

    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn deny_cache(&self) -> Option<&DenyCache> {
        self.denials.as_ref()
    }

    /// When Upstash last failed, and how.
    pub fn last_failure(&self) -> Option<(Millis, StoreError)> {
        self.last_failure.borrow().clone()
    }

    pub fn counts(&self) -> Counts {
        self.counts.get()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    pub async fn check(&self, r: &CheckRequest<'_>) -> Verdict {
        let Some(primary) = &self.primary else {
            let decision = Ok(self.memory.check_now(r));
            return Verdict { decision, backend: Backend::Memory, notes: Vec::new() };
        };
        let key = r.subject_key();
        let leasing = r.tier.lease;
        if let Some(decision) = self.leases.take(&key, r.now, r.cost, leasing) {
            self.count(|c| c.leased += 1);
            return Verdict { decision: Ok(decision), backend: Backend::Lease, notes: Vec::new() };
        }
        if let Some(cache) = &self.denials {
            if let Some(decision) = cache.lookup(&key, r.now, r.cost) {
                return Verdict { decision: Ok(decision), backend: Backend::DenyCache, notes: Vec::new() };
            }
        }
        if self.breaker.admit(r.now) == Admission::Skip {
            self.count(|c| c.skipped += 1);
            return self.on_failure(r, None, Vec::new());
        }
        // A lease that could not cover this request is over: its rest goes back in this call.
        let returns = self.returns_for_this_call(&key, r.now);
        // Another check of this subject is asking for a lease: its answer may well cover this
        // one's next, so this one shares a call rather than take a flight of its own.
        let patient = self.leases.asking(&key);
        let want = self.leases.want(&key, r.cost, leasing);
        let (keys, limits) = (primary.keys(r), r.limits().iter().map(|l| l.algorithm).collect::<Vec<_>>());
        // What a lease granted here would need to be handed back: kept only when one may be.
        let own = (want > r.cost).then(|| Refundable { keys: keys.clone(), limits: limits.clone() });
        let mut work = Work { keys, ops: vec![OwnedOp::Check { limits, cost: r.cost, want }] };
        work.hand_back(&returns);
        self.count(|c| c.store_calls += 1);
        let answers = match &self.batches {
            Some(batches) => batches.run(work, r.now, patient, |works| send(primary, r.now, works)).await,
            None => send(primary, r.now, vec![work])
                .await
                .and_then(|mut a| a.pop().ok_or(StoreError::Malformed("no answer".into()))),
        };
        if want > r.cost {
            self.leases.asked(&key);
        }
        let answer = match answers {
            Ok((decided_at, answers)) => match answers.first() {
                Some(Answer::Lease(lease)) => Ok((decided_at, *lease)),
                other => Err(StoreError::Malformed(format!("a check answered {other:?}"))),
            },
            Err(e) => Err(e),
        };
        if answer.is_ok() {
            let units: u64 = returns.iter().map(|u| u.units).sum();
            self.count(|c| c.returned += units);
        } else {
            self.keep_returns(returns);
        }
        match answer {
            Ok((decided_at, lease)) => {
                let mut decision = lease.decision;
                // A grant of more than the cost was asked for (`want > cost`), so `own` is there.
                if let (true, Some(own)) = (decision.allowed() && lease.spare() > 0, own) {
                    let grant = Grant { decision, granted: lease.granted, until: lease.until };
                    if let Some(rest) = self.leases.hold(&key, decided_at, r.cost, &grant, leasing, own) {
                        self.keep_returns(vec![rest]);
                    }
                    decision = with_spare(&decision, lease.spare());
                }
                let mut notes = Vec::new();
                if let Some(Transition::Recovered { since }) = self.breaker.record_success() {
                    self.logged.set(0);
                    let down = r.now.saturating_sub(since);
                    notes.push(Note::Info(
                        "breaker_closed",
                        format!("Upstash answers again after {down} ms of failures; circuit closed"),
                    ));
                }
                if let Some(cache) = &self.denials {
                    cache.remember(&key, r.now, &decision);
                }
                Verdict { decision: Ok(decision), backend: Backend::Upstash, notes }
            }
            Err(error) => {
                self.count(|c| c.store_failures += 1);
                *self.last_failure.borrow_mut() = Some((r.now, error.clone()));
                let mut notes = Vec::new();
                if self.logged.get() & class_bit(&error) == 0 {
                    self.logged.set(self.logged.get() | class_bit(&error));
                    let kind = if error == StoreError::Unauthorized { "configuration error" } else { "store failure" };
                    let event = if error == StoreError::Unauthorized { "config_error" } else { "store_failure" };
                    notes.push(Note::Error(event, format!("{kind} ({}): {error}", error.class())));
                }
                if let Some(Transition::Tripped { failures }) = self.breaker.record_failure(r.now) {
                    notes.push(Note::Error(
                        "breaker_open",
                        format!(
                        "circuit open after {failures} failures in a row: no Upstash calls for {} ms, then one probe; \
                         meanwhile on_failure decides ({})",
                        self.breaker.cooldown_ms(),
                            self.fallback_backend().as_str()
                        ),
                    ));
                }
                self.on_failure(r, Some(error), notes)
            }
        }
    }

    /// Takes the request's units at `r.now + wait`, when a check at `r.now` found them due:
    /// the reservation of a request that is then held until they are (a route's
    /// `max_delay`). Evaluated at that later time, the units are consumed now and later
    /// checks see them taken (a state ahead of the clock is read as the clock standing
    /// still at it). Straight to the store that decides, past leases, the deny cache and
    /// batching, whose calls carry one time for all their checks.
    pub async fn reserve(&self, r: &CheckRequest<'_>, wait: Millis) -> Verdict {
        let at = CheckRequest { now: r.now.saturating_add(wait), ..*r };
        let Some(primary) = &self.primary else {
            return Verdict { decision: Ok(self.memory.check_now(&at)), backend: Backend::Memory, notes: Vec::new() };
        };
        if !matches!(self.breaker.state(), BreakerState::Closed { .. }) {
            return self.on_failure(&at, None, Vec::new());
        }
        self.count(|c| c.store_calls += 1);
        match primary.check(&at).await {
            Ok(decision) => Verdict { decision: Ok(decision), backend: Backend::Upstash, notes: Vec::new() },
            Err(e) => {
                self.count(|c| c.store_failures += 1);
                *self.last_failure.borrow_mut() = Some((r.now, e.clone()));
                self.on_failure(&at, Some(e), Vec::new())
            }
        }
    }

    /// A subject's state without consuming anything (a check of cost 0), from the store that
    /// holds it: Upstash while it answers, else this isolate's memory.
    pub async fn inspect(&self, r: &CheckRequest<'_>) -> (Decision, Backend) {
        let peek = CheckRequest { cost: 0, ..*r };
        match &self.primary {
            Some(primary) if matches!(self.breaker.state(), BreakerState::Closed { .. }) => {
                match primary.check(&peek).await {
                    Ok(decision) => (decision, Backend::Upstash),
                    Err(_) => (self.memory.check_now(&peek), Backend::Fallback),
                }
            }
            Some(_) => (self.memory.check_now(&peek), Backend::Fallback),
            None => (self.memory.check_now(&peek), Backend::Memory),
        }
    }

    /// Gives back `units` taken at `granted_at` (the decision API's refund of an estimate that
    /// was too high), where the check most likely took them: Upstash while it answers, else
    /// this isolate's memory. Per limit, the whole units regained; a cached denial of the
    /// subject is forgotten, since it may no longer hold.
    pub async fn refund(
        &self,
        r: &CheckRequest<'_>,
        units: u64,
        granted_at: Millis,
    ) -> (Result<Refund, StoreError>, Backend) {
        if let Some(cache) = &self.denials {
            cache.forget(&r.subject_key());
        }
        let limits: Vec<Algorithm> = r.limits().iter().map(|l| l.algorithm).collect();
        let in_memory = |backend| (Ok(self.memory.refund_now(r, units, granted_at)), backend);
        match &self.primary {
            Some(primary) if matches!(self.breaker.state(), BreakerState::Closed { .. }) => {
                let op = Op::Refund { limits: &limits, units, granted_at };
                self.count(|c| c.store_calls += 1);
                match primary.run(&primary.keys(r), r.now, &[op]).await {
                    Ok(answers) => match answers.first() {
                        Some(Answer::Refund(refund)) => (Ok(*refund), Backend::Upstash),
                        other => (Err(StoreError::Malformed(format!("a refund answered {other:?}"))), Backend::Upstash),
                    },
                    Err(e) => {
                        self.count(|c| c.store_failures += 1);
                        *self.last_failure.borrow_mut() = Some((r.now, e.clone()));
                        in_memory(Backend::Fallback)
                    }
                }
            }
            Some(_) => in_memory(Backend::Fallback),
            None => in_memory(Backend::Memory),
        }
    }

    /// Makes a subject's buckets full again everywhere this isolate can reach: Upstash, its
    /// memory buckets and its deny cache. Other isolates' memory and deny caches are not
    /// reached; they matter only while Upstash is failing or until the cached retry time.
    pub async fn reset(&self, r: &CheckRequest<'_>) -> Result<(), StoreError> {
        self.memory.reset_now(r);
        // Its buckets are full again: the lease's units need no handing back.
        self.leases.end(&r.subject_key());
        if let Some(cache) = &self.denials {
            cache.forget(&r.subject_key());
        }
        match &self.primary {
            Some(primary) => primary.reset(r).await,
            None => Ok(()),
        }
    }

    /// The unused units to hand back with this call: the subject's own lease, which could
    /// not cover its request, then leases that are over, then those waiting since a failure.
    fn returns_for_this_call(&self, key: &str, now: Millis) -> Vec<Unused<Refundable>> {
        self.returns_due(now, self.leases.end(key).into_iter().collect())
    }

    /// `out`, then leases that are over, then those waiting since a failure: at most
    /// [`RETURNS_PER_CALL`] in all.
    fn returns_due(&self, now: Millis, mut out: Vec<Unused<Refundable>>) -> Vec<Unused<Refundable>> {
        out.extend(self.leases.expired(now, RETURNS_PER_CALL.saturating_sub(out.len())));
        let mut waiting = self.returns.borrow_mut();
        let room = RETURNS_PER_CALL.saturating_sub(out.len()).min(waiting.len());
        out.extend(waiting.drain(..room));
        out
    }

    fn keep_returns(&self, returns: Vec<Unused<Refundable>>) {
        let mut waiting = self.returns.borrow_mut();
        waiting.extend(returns);
        let over = waiting.len().saturating_sub(RETURNS_WAITING);
        waiting.drain(..over);
    }

    fn fallback_backend(&self) -> Backend {
        match self.on_failure {
            FailMode::Memory => Backend::Fallback,
            FailMode::Open => Backend::FailOpen,
            FailMode::Closed => Backend::FailClosed,
        }
    }

    fn on_failure(&self, r: &CheckRequest<'_>, error: Option<StoreError>, notes: Vec<Note>) -> Verdict {
        let backend = self.fallback_backend();
        let decision = match self.on_failure {
            FailMode::Memory => Ok(self.memory.check_now(r)),
            FailMode::Open => Ok(Decision::unlimited(r.cost)),
            FailMode::Closed => Err(error.unwrap_or(StoreError::Network("circuit open".into()))),
        };
        Verdict { decision, backend, notes }
    }
}

/// A work's answers, and the time the store decided them at (the carrier's clock): a lease
/// granted then is handed back from then.
type Answered = (Millis, Vec<Answer>);

/// One store call for the works of one or more requests, answered per work in order.
async fn send<P: Store>(primary: &P, now: Millis, mut works: Vec<Work>) -> Result<Vec<Answered>, StoreError> {
    let keys: Vec<String> = works.iter_mut().flat_map(|w| std::mem::take(&mut w.keys)).collect();
    let ops: Vec<Op<'_, Algorithm>> = works.iter().flat_map(|w| w.ops.iter().map(OwnedOp::as_op)).collect();
    let mut answers = primary.run(&keys, now, &ops).await?.into_iter();
    Ok(works.iter().map(|w| (now, answers.by_ref().take(w.ops.len()).collect())).collect())
}

/// The granting answer tells what the caller can get at that instant: what the store has
/// left after the whole grant, and the spare units the lease holds for it.
fn with_spare(decision: &Decision, spare: u64) -> Decision {
    let statuses: Vec<LimitStatus> =
        decision.limits().iter().map(|s| LimitStatus { remaining: s.remaining.saturating_add(spare), ..*s }).collect();
    Decision::from_parts(decision.outcome, decision.binding, decision.cost, &statuses).unwrap_or(*decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::{Algorithm, Outcome};
    use crate::core::policy::Tier;
    use crate::core::subject::SubjectDigest;
    use crate::store::run_ready as run;
    use std::cell::RefCell;

    /// A primary whose health the test switches; when healthy it is a real engine (a memory
    /// store of its own), so its answers are real decisions. The Upstash path itself is tested
    /// end to end against local-upstash and redis-server.
    struct Switchable {
        engine: MemoryStore,
        failing: RefCell<Option<StoreError>>,
        calls: Cell<u32>,
    }

    impl Switchable {
        fn new() -> Switchable {
            Switchable { engine: MemoryStore::new(100), failing: RefCell::new(None), calls: Cell::new(0) }
        }
    }

    impl Store for &Switchable {
        async fn check(&self, r: &CheckRequest<'_>) -> Result<Decision, StoreError> {
            self.calls.set(self.calls.get() + 1);
            match self.failing.borrow().clone() {
                Some(e) => Err(e),
                None => Ok(self.engine.check_now(r)),
            }
        }

        async fn reset(&self, r: &CheckRequest<'_>) -> Result<(), StoreError> {
            self.engine.reset_now(r);
            Ok(())
        }

        fn keys(&self, r: &CheckRequest<'_>) -> Vec<String> {
            vec![r.subject_key()]
        }

        async fn run(
            &self,
            keys: &[String],
            now: Millis,
            ops: &[Op<'_, Algorithm>],
        ) -> Result<Vec<Answer>, StoreError> {
            self.calls.set(self.calls.get() + 1);
            match self.failing.borrow().clone() {
                Some(e) => Err(e),
                None => Ok(self.engine.batch_now(keys, now, ops)),
            }
        }
    }

    fn settings(on_failure: FailMode, deny_cache: bool) -> StoreSettings {
        StoreSettings {
            on_failure,
            timeout_ms: 100,
            breaker_failures: 3,
            breaker_cooldown_ms: 1_000,
            memory_max_keys: 100,
            deny_cache,
            batch: false,
            controls_refresh_ms: 10_000,
            fleet: true,
        }
    }

    struct Rig {
        tier: Tier,
        subjects: [SubjectDigest; 4],
    }

    impl Rig {
        fn new() -> Rig {
            let tier = crate::store::test_tier("t", "m", Algorithm::fixed_window(2, 60_000).unwrap());
            Rig { tier, subjects: ["s", "a", "b", "c"].map(SubjectDigest::raw) }
        }
        fn req(&self, subject: &'static str, now: u64) -> CheckRequest<'_> {
            let at = ["s", "a", "b", "c"].iter().position(|s| *s == subject).unwrap();
            CheckRequest::new(&self.tier, &self.subjects[at], now, 1)
        }
    }

    #[test]
    fn memory_fallback_still_limits_and_the_breaker_stops_the_calls() {
        let primary = Switchable::new();
        *primary.failing.borrow_mut() = Some(StoreError::Timeout { after_ms: 100 });
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, true));
        let rig = Rig::new();
        let verdicts: Vec<Verdict> = (0..10).map(|i| run(hybrid.check(&rig.req("s", i)))).collect();
        let allowed: Vec<bool> = verdicts.iter().map(|v| v.decision.as_ref().unwrap().allowed()).collect();
        assert_eq!(allowed, [true, true, false, false, false, false, false, false, false, false]);
        assert!(verdicts.iter().all(|v| v.backend == Backend::Fallback));
        assert_eq!(primary.calls.get(), 3, "three failures, then the breaker is open");
        assert_eq!(hybrid.counts(), Counts { store_calls: 3, store_failures: 3, skipped: 7, ..Counts::default() });
        let notes: Vec<&Note> = verdicts.iter().flat_map(|v| &v.notes).collect();
        assert_eq!(notes.len(), 2, "the failure once, the trip once: {notes:?}");
        assert!(matches!(notes[0], Note::Error("store_failure", m) if m.contains("timeout")));
        assert!(matches!(notes[1], Note::Error("breaker_open", m) if m.contains("circuit open after 3")));
    }

    /// A reservation takes the units at the time they are due: later checks see them taken,
    /// so holding requests never admits more than the limit over any window.
    #[test]
    fn a_reservation_takes_the_units_when_they_are_due() {
        let bucket = Algorithm::token_bucket(2, crate::core::rate::Rate::parse("1/s").unwrap()).unwrap();
        let tier = crate::store::test_tier("t", "b", bucket);
        let subject = SubjectDigest::raw("s");
        let at = |now| CheckRequest::new(&tier, &subject, now, 1);
        for shared in [false, true] {
            let primary = Switchable::new();
            let hybrid = Hybrid::new(shared.then_some(&primary), &settings(FailMode::Memory, false));
            assert!(run(hybrid.check(&at(0))).decision.unwrap().allowed());
            assert!(run(hybrid.check(&at(0))).decision.unwrap().allowed());
            let denied = run(hybrid.check(&at(0))).decision.unwrap();
            assert_eq!(denied.retry_after_ms(), 1_000);
            let reserved = run(hybrid.reserve(&at(0), 1_000));
            assert!(reserved.decision.unwrap().allowed(), "due in 1 s: reserved");
            let backend = if shared { Backend::Upstash } else { Backend::Memory };
            assert_eq!(reserved.backend, backend);
            // The unit of t = 1 s is taken: the next is due at 2 s, not 1 s.
            assert_eq!(run(hybrid.check(&at(10))).decision.unwrap().retry_after_ms(), 1_990);
            assert!(!run(hybrid.check(&at(1_500))).decision.unwrap().allowed());
            assert!(run(hybrid.check(&at(2_000))).decision.unwrap().allowed());
        }
    }

    #[test]
    fn one_probe_after_the_cooldown_and_recovery_is_logged_once() {
        let primary = Switchable::new();
        *primary.failing.borrow_mut() = Some(StoreError::Server { status: 500, message: "x".into() });
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, false));
        let rig = Rig::new();
        for i in 0..3 {
            run(hybrid.check(&rig.req("a", i)));
        }
        // Still failing at the first probe: open again, and no new log line for the same class.
        let v = run(hybrid.check(&rig.req("b", 1_002)));
        assert_eq!((v.backend, v.notes.len(), primary.calls.get()), (Backend::Fallback, 0, 4));
        assert_eq!(run(hybrid.check(&rig.req("b", 1_500))).backend, Backend::Fallback);
        assert_eq!(primary.calls.get(), 4);
        *primary.failing.borrow_mut() = None;
        let v = run(hybrid.check(&rig.req("c", 2_002)));
        assert_eq!(v.backend, Backend::Upstash);
        assert!(
            matches!(&v.notes[..], [Note::Info("breaker_closed", m)] if m.contains("after 2002 ms")),
            "{:?}",
            v.notes
        );
        assert_eq!(run(hybrid.check(&rig.req("c", 2_003))).notes, vec![]);
        assert_eq!(hybrid.breaker().trips(), 1);
    }

    #[test]
    fn unauthorized_is_logged_as_a_configuration_error() {
        let primary = Switchable::new();
        *primary.failing.borrow_mut() = Some(StoreError::Unauthorized);
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, false));
        let v = run(hybrid.check(&Rig::new().req("a", 0)));
        assert!(
            matches!(&v.notes[..], [Note::Error("config_error", m)] if m.starts_with("configuration error (unauthorized)"))
        );
    }

    #[test]
    fn denials_are_served_from_the_deny_cache_without_store_calls() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, true));
        let rig = Rig::new();
        let backends: Vec<Backend> = (0..50).map(|i| run(hybrid.check(&rig.req("s", i))).backend).collect();
        assert_eq!(backends[..3], [Backend::Upstash; 3], "two allowed, one denied by the store");
        assert!(backends[3..].iter().all(|b| *b == Backend::DenyCache));
        assert_eq!(primary.calls.get(), 3);
        assert_eq!(hybrid.deny_cache().unwrap().hits(), 47);
        let cached = run(hybrid.check(&rig.req("s", 30_000))).decision.unwrap();
        assert_eq!((cached.outcome, cached.retry_after_ms()), (Outcome::Denied, 30_000), "aged");
        // Past the retry time the store is asked again.
        assert_eq!(run(hybrid.check(&rig.req("s", 60_000))).backend, Backend::Upstash);
    }

    #[test]
    fn inspect_consumes_nothing_and_reset_clears_store_and_deny_cache() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, true));
        let rig = Rig::new();
        for i in 0..3 {
            run(hybrid.check(&rig.req("s", i)));
        }
        for _ in 0..3 {
            let (d, backend) = run(hybrid.inspect(&rig.req("s", 10)));
            assert_eq!((d.remaining(), backend), (0, Backend::Upstash));
        }
        assert_eq!(run(hybrid.check(&rig.req("s", 11))).backend, Backend::DenyCache);
        run(hybrid.reset(&rig.req("s", 12))).unwrap();
        let v = run(hybrid.check(&rig.req("s", 13)));
        assert_eq!((v.backend, v.decision.unwrap().allowed()), (Backend::Upstash, true));
        assert_eq!(run(hybrid.inspect(&rig.req("s", 14))).0.remaining(), 1);
    }

    #[test]
    fn open_lets_through_and_closed_refuses() {
        for (mode, backend) in [(FailMode::Open, Backend::FailOpen), (FailMode::Closed, Backend::FailClosed)] {
            let primary = Switchable::new();
            *primary.failing.borrow_mut() = Some(StoreError::Malformed("x".into()));
            let hybrid = Hybrid::new(Some(&primary), &settings(mode, true));
            let rig = Rig::new();
            for i in 0..6 {
                let v = run(hybrid.check(&rig.req("s", i)));
                assert_eq!(v.backend, backend);
                assert_eq!(v.decision.is_ok(), mode == FailMode::Open, "{mode:?}");
            }
        }
    }

    #[test]
    fn no_primary_is_plain_memory() {
        let hybrid: Hybrid<&Switchable> = Hybrid::new(None, &settings(FailMode::Closed, true));
        let v = run(hybrid.check(&Rig::new().req("s", 0)));
        assert_eq!((v.backend, v.notes.len()), (Backend::Memory, 0));
    }

    fn leasing_tier(capacity: u64) -> Tier {
        let mut tier = crate::store::test_tier("t", "q", Algorithm::fixed_window(capacity, 60_000).unwrap());
        tier.lease = crate::core::policy::Leasing { max: 16, ttl_ms: 1_000 };
        tier
    }

    #[test]
    fn a_busy_subject_is_served_from_leases_and_never_past_its_limit() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, true));
        let tier = leasing_tier(100);
        let subject = SubjectDigest::raw("hot");
        let mut allowed = 0;
        let mut backends = std::collections::BTreeMap::new();
        for i in 0..300u64 {
            let v = run(hybrid.check(&CheckRequest::new(&tier, &subject, i, 1)));
            let d = v.decision.unwrap();
            allowed += u64::from(d.allowed());
            *backends.entry(v.backend.as_str()).or_insert(0) += 1;
        }
        assert_eq!(allowed, 100, "every unit used, none twice: {backends:?}");
        assert!(primary.calls.get() < 40, "{} store calls for 300 requests: {backends:?}", primary.calls.get());
        assert!(backends["lease"] > 60, "{backends:?}");
    }

    #[test]
    fn what_a_lease_holds_is_never_reported_as_more_and_its_rest_is_handed_back() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, false));
        let tier = leasing_tier(1_000);
        let (hot, other) = (SubjectDigest::raw("hot"), SubjectDigest::raw("other"));
        for i in 0..20u64 {
            run(hybrid.check(&CheckRequest::new(&tier, &hot, i, 1)));
        }
        let v = run(hybrid.check(&CheckRequest::new(&tier, &hot, 20, 1)));
        if v.backend == Backend::Lease {
            assert!(v.decision.unwrap().remaining() <= 16, "only what the lease holds");
        }
        assert!(hybrid.leases_held() == 1);
        // The lease period passes: the next store call, for anyone, hands the rest back.
        run(hybrid.check(&CheckRequest::new(&tier, &other, 5_000, 1)));
        assert_eq!(hybrid.leases_held(), 0);
        assert!(hybrid.counts().returned > 0, "{:?}", hybrid.counts());
        let peek = run(hybrid.inspect(&CheckRequest::new(&tier, &hot, 5_001, 0))).0;
        assert_eq!(peek.remaining(), 1_000 - 21, "the store holds back only what was used");
    }

    #[test]
    fn a_lease_held_when_the_store_fails_is_used_then_memory_decides() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, false));
        let tier = leasing_tier(1_000);
        let hot = SubjectDigest::raw("hot");
        for i in 0..20u64 {
            run(hybrid.check(&CheckRequest::new(&tier, &hot, i, 1)));
        }
        assert_eq!(hybrid.leases_held(), 1);
        *primary.failing.borrow_mut() = Some(StoreError::Timeout { after_ms: 100 });
        let backends: Vec<Backend> =
            (20..60u64).map(|i| run(hybrid.check(&CheckRequest::new(&tier, &hot, i, 1))).backend).collect();
        let first_fallback = backends.iter().position(|b| *b == Backend::Fallback).unwrap();
        assert!(first_fallback > 0 && backends[..first_fallback].iter().all(|b| *b == Backend::Lease), "{backends:?}");
        assert!(backends[first_fallback..].iter().all(|b| *b == Backend::Fallback), "{backends:?}");
    }

    #[test]
    fn with_batching_on_a_check_that_finds_nothing_in_flight_goes_alone_and_at_once() {
        let primary = Switchable::new();
        let mut batched = settings(FailMode::Memory, false);
        batched.batch = true;
        let hybrid = Hybrid::new(Some(&primary), &batched);
        let rig = Rig::new();
        let allowed: Vec<bool> =
            (0..4).map(|i| run(hybrid.check(&rig.req("s", i))).decision.unwrap().allowed()).collect();
        assert_eq!(allowed, [true, true, false, false]);
        assert_eq!(primary.calls.get(), 4);
        assert_eq!(hybrid.batched(), Some(Carried { calls: 4, ops: 4 }));
    }

    #[test]
    fn an_idle_isolate_hands_its_lease_back_when_told_to() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, false));
        let tier = leasing_tier(1_000);
        let hot = SubjectDigest::raw("hot");
        assert_eq!(hybrid.hand_back_due(), None, "no lease, nothing to schedule");
        for i in 0..20u64 {
            run(hybrid.check(&CheckRequest::new(&tier, &hot, i, 1)));
        }
        let due = hybrid.hand_back_due().expect("a lease ends");
        assert_eq!(hybrid.hand_back_due(), None, "said once");
        let calls = primary.calls.get();
        run(hybrid.hand_back(due - 1));
        assert_eq!(primary.calls.get(), calls, "not over yet: no call");
        run(hybrid.hand_back(due));
        assert_eq!(primary.calls.get(), calls + 1, "one call hands it back");
        let peek = run(hybrid.inspect(&CheckRequest::new(&tier, &hot, due + 1, 0))).0;
        assert_eq!(peek.remaining(), 1_000 - 20, "only what was used is gone");
    }

    #[test]
    fn a_reset_ends_the_subjects_lease_and_its_units_are_not_handed_back_twice() {
        let primary = Switchable::new();
        let hybrid = Hybrid::new(Some(&primary), &settings(FailMode::Memory, false));
        let tier = leasing_tier(100);
        let hot = SubjectDigest::raw("hot");
        for i in 0..20u64 {
            run(hybrid.check(&CheckRequest::new(&tier, &hot, i, 1)));
        }
        assert_eq!(hybrid.leases_held(), 1);
        run(hybrid.reset(&CheckRequest::new(&tier, &hot, 20, 0))).unwrap();
        assert_eq!(hybrid.leases_held(), 0, "the lease is gone with the state");
        let v = run(hybrid.check(&CheckRequest::new(&tier, &hot, 21, 1)));
        assert_ne!(v.backend, Backend::Lease, "no answer from a lease the reset ended");
        run(hybrid.hand_back(10_000));
        let peek = run(hybrid.inspect(&CheckRequest::new(&tier, &hot, 10_001, 0))).0;
        assert!(peek.remaining() <= 99, "nothing handed back into the fresh bucket: {}", peek.remaining());
    }
}
