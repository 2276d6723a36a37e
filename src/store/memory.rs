//! Per-isolate buckets: the fallback when Upstash is away, and the whole store when it is
//! not configured. Bounded in keys: an entry is dropped once all its limits are whole again,
//! and when the map is full the least recently used tenth is evicted in one sweep, so a
//! flood of distinct subjects costs amortised O(1) per request and never grows memory.

use std::cell::RefCell;
use std::collections::HashMap;

use super::script::{Answer, Op};
use super::{CheckRequest, Store, StoreError};
use crate::core::algorithm::{check, lease, refund, Algorithm, Decision, Millis, Refund, State, MAX_LIMITS};

struct Entry {
    states: [State; MAX_LIMITS],
    /// When every limit is whole again; past it the entry is as good as empty.
    expires_at: Millis,
    last_used: u64,
}

pub struct MemoryStore {
    entries: RefCell<HashMap<String, Entry>>,
    max_keys: usize,
    uses: RefCell<u64>,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> MemoryStore {
        MemoryStore { entries: RefCell::new(HashMap::new()), max_keys: max_keys.max(1), uses: RefCell::new(0) }
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets one subject of one tier.
    pub fn reset_now(&self, r: &CheckRequest) {
        self.entries.borrow_mut().remove(&r.subject_key());
    }

    /// Checks and consumes, synchronously: nothing else runs in the isolate meanwhile.
    pub fn check_now(&self, r: &CheckRequest) -> Decision {
        // Keyed by tier and subject, states by limit position: one isolate has one policy,
        // so a position always holds the same limit's state (the Upstash keys, shared by
        // every deployment, name the parameters instead). Were it ever otherwise, the engine
        // still clamps a state its parameters could not have written.
        self.with_states(r.subject_key(), r.now, r.limits().len(), |states| {
            let decision = check(r.limits(), states, r.now, r.cost);
            (decision, decision.limits().iter().map(|s| s.reset_ms).max().unwrap_or(0))
        })
    }

    /// Gives back up to `units` taken at `granted_at` from one subject of one tier.
    pub fn refund_now(&self, r: &CheckRequest, units: u64, granted_at: Millis) -> Refund {
        self.with_states(r.subject_key(), r.now, r.limits().len(), |states| {
            let returned = refund(r.limits(), states, r.now, units, granted_at);
            let whole_in = r.limits().iter().map(|l| l.algorithm.window_ms()).max().unwrap_or(0);
            (returned, whole_in)
        })
    }

    /// Runs operations as the Upstash script does, each on the states named by its keys:
    /// the stand-in for a shared store where one is needed without Redis (the tests).
    pub fn batch_now(&self, keys: &[String], now: Millis, ops: &[Op<'_, Algorithm>]) -> Vec<Answer> {
        let mut at = 0;
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            let n = op.limits().len();
            let key = keys.get(at..at + n).unwrap_or_default().join(" ");
            at += n;
            let answer = self.with_states(key, now, n, |states| match *op {
                Op::Check { limits, cost, want } => {
                    let l = lease(limits, states, now, cost, want);
                    (Answer::Lease(l), l.decision.limits().iter().map(|s| s.reset_ms).max().unwrap_or(0))
                }
                Op::Refund { limits, units, granted_at } => {
                    let whole_in = limits.iter().map(|l| l.window_ms()).max().unwrap_or(0);
                    (Answer::Refund(refund(limits, states, now, units, granted_at)), whole_in)
                }
            });
            answers.push(answer);
        }
        answers
    }

    /// The first `n` states of entry `key` (empty once expired), for `f`, which answers
    /// and says in how long they are whole again.
    fn with_states<T>(&self, key: String, now: Millis, n: usize, f: impl FnOnce(&mut [State]) -> (T, Millis)) -> T {
        let use_no = {
            let mut uses = self.uses.borrow_mut();
            *uses += 1;
            *uses
        };
        let mut entries = self.entries.borrow_mut();
        if !entries.contains_key(&key) && entries.len() >= self.max_keys {
            evict(&mut entries, now, self.max_keys);
        }
        let entry =
            entries.entry(key).or_insert(Entry { states: [State::Empty; MAX_LIMITS], expires_at: 0, last_used: 0 });
        if entry.expires_at <= now {
            entry.states = [State::Empty; MAX_LIMITS];
        }
        let states = entry.states.get_mut(..n.min(MAX_LIMITS)).unwrap_or_default();
        let (answer, whole_in) = f(states);
        entry.expires_at = now.saturating_add(whole_in);
        entry.last_used = use_no;
        answer
    }
}

/// Drops expired entries; if that frees too little, the least recently used tenth too.
fn evict(entries: &mut HashMap<String, Entry>, now: Millis, max_keys: usize) {
    entries.retain(|_, e| e.expires_at > now);
    if entries.len() < max_keys {
        return;
    }
    let drop = (max_keys / 10).max(1);
    let mut ages: Vec<u64> = entries.values().map(|e| e.last_used).collect();
    let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
    let cutoff = *cutoff;
    entries.retain(|_, e| e.last_used > cutoff);
}

impl Store for MemoryStore {
    async fn check(&self, request: &CheckRequest<'_>) -> Result<Decision, StoreError> {
        Ok(self.check_now(request))
    }

    async fn reset(&self, request: &CheckRequest<'_>) -> Result<(), StoreError> {
        self.reset_now(request);
        Ok(())
    }

    fn keys(&self, request: &CheckRequest<'_>) -> Vec<String> {
        vec![request.subject_key()]
    }

    async fn run(&self, keys: &[String], now: Millis, ops: &[Op<'_, Algorithm>]) -> Result<Vec<Answer>, StoreError> {
        Ok(self.batch_now(keys, now, ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::Algorithm;
    use crate::core::policy::Tier;
    use crate::core::rate::Rate;
    use crate::core::subject::SubjectDigest;

    fn limits() -> Tier {
        crate::store::test_tier("anonymous", "b", Algorithm::token_bucket(2, Rate::parse("1/s").unwrap()).unwrap())
    }

    fn check(s: &MemoryStore, tier: &Tier, subject: &str, now: Millis) -> Decision {
        s.check_now(&CheckRequest::new(tier, &SubjectDigest::raw(subject), now, 1))
    }

    #[test]
    fn subjects_have_their_own_buckets() {
        let s = MemoryStore::new(100);
        let l = limits();
        assert!(check(&s, &l, "a", 0).allowed());
        assert!(check(&s, &l, "a", 0).allowed());
        assert!(!check(&s, &l, "a", 0).allowed());
        assert!(check(&s, &l, "b", 0).allowed());
        assert!(check(&s, &l, "a", 1_000).allowed());
    }

    #[test]
    fn a_flood_of_subjects_stays_within_the_bound_and_evicts_the_oldest() {
        let s = MemoryStore::new(1_000);
        let l = limits();
        // The first subject is used up and then kept busy; it must survive the flood.
        check(&s, &l, "victim", 0);
        check(&s, &l, "victim", 0);
        for i in 0..50_000u64 {
            check(&s, &l, &format!("flood-{i}"), 10);
            if i % 100 == 0 {
                assert!(!check(&s, &l, "victim", 10).allowed(), "victim state lost at {i}");
            }
            assert!(s.len() <= 1_000);
        }
        assert!(s.len() >= 900, "evicts a tenth at a time, not everything: {}", s.len());
    }

    #[test]
    fn entries_whole_again_are_dropped() {
        let s = MemoryStore::new(10);
        let l = limits();
        for i in 0..10 {
            check(&s, &l, &format!("s{i}"), 0);
        }
        assert_eq!(s.len(), 10);
        // A second later every bucket is full again: the next new key sweeps them all.
        check(&s, &l, "late", 1_000);
        assert_eq!(s.len(), 1);
    }
}
