//! The deny cache: once the store has said a subject is denied until T, later requests from
//! it in this isolate are denied until T without asking the store again (the idea of the
//! ephemeral cache of `@upstash/ratelimit`). Under attack, a subject hammering past its limit
//! then costs no store calls at all.
//!
//! Exact, not a guess: the engine's retry time is the instant the same request could first
//! pass, so a request of the same or a larger cost is denied until then whatever any other
//! isolate does (others can only consume more). A smaller cost might pass sooner, so it is
//! not answered from here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::core::algorithm::{Decision, Millis, Outcome};

struct Denial {
    decision: Decision,
    at: Millis,
    until: Millis,
}

pub struct DenyCache {
    entries: RefCell<HashMap<String, Denial>>,
    max_keys: usize,
    hits: Cell<u64>,
}

impl DenyCache {
    pub fn new(max_keys: usize) -> DenyCache {
        DenyCache { entries: RefCell::new(HashMap::new()), max_keys: max_keys.max(1), hits: Cell::new(0) }
    }

    /// Requests answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The remembered denial, aged to `now`, if it still holds for a request of this cost.
    pub fn lookup(&self, key: &str, now: Millis, cost: u64) -> Option<Decision> {
        let mut entries = self.entries.borrow_mut();
        let denial = entries.get(key)?;
        if now >= denial.until {
            entries.remove(key);
            return None;
        }
        if cost < denial.decision.cost || now < denial.at {
            return None;
        }
        self.hits.set(self.hits.get() + 1);
        Some(denial.decision.aged(now - denial.at))
    }

    /// Remembers a denial by the store. Bounded: when full, expired entries go first, and if
    /// that frees nothing, all of them (the cache only ever saves store calls).
    pub fn remember(&self, key: &str, now: Millis, decision: &Decision) {
        let retry = decision.retry_after_ms();
        if decision.outcome != Outcome::Denied || retry == 0 {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.max_keys && !entries.contains_key(key) {
            entries.retain(|_, d| d.until > now);
            if entries.len() >= self.max_keys {
                entries.clear();
            }
        }
        entries.insert(key.to_string(), Denial { decision: *decision, at: now, until: now.saturating_add(retry) });
    }

    /// Drops what is known of one subject (after an administrative reset).
    pub fn forget(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::{check, Algorithm, State};

    fn denied(cost: u64) -> Decision {
        let limits = [Algorithm::fixed_window(3, 1_000).unwrap()];
        let mut states = [State::Empty];
        check(&limits, &mut states, 0, 3);
        let d = check(&limits, &mut states, 200, cost);
        assert_eq!((d.outcome, d.retry_after_ms()), (Outcome::Denied, 800));
        d
    }

    #[test]
    fn holds_until_the_retry_time_and_ages_the_answer() {
        let cache = DenyCache::new(10);
        cache.remember("k", 200, &denied(1));
        let d = cache.lookup("k", 500, 1).unwrap();
        assert_eq!((d.outcome, d.retry_after_ms(), d.reset_ms()), (Outcome::Denied, 500, 500));
        assert_eq!(cache.lookup("k", 999, 2).map(|d| d.retry_after_ms()), Some(1), "a larger cost too");
        assert_eq!(cache.lookup("k", 1_000, 1), None, "expired at the retry time");
        assert!(cache.is_empty());
        assert_eq!(cache.hits(), 2);
    }

    #[test]
    fn a_smaller_cost_asks_the_store() {
        let cache = DenyCache::new(10);
        cache.remember("k", 200, &denied(2));
        assert!(cache.lookup("k", 300, 1).is_none());
        assert!(cache.lookup("k", 300, 2).is_some());
        assert!(cache.lookup("other", 300, 2).is_none());
    }

    #[test]
    fn only_denials_with_a_retry_time_are_kept_and_the_size_is_bounded() {
        let cache = DenyCache::new(3);
        let limits = [Algorithm::fixed_window(3, 1_000).unwrap()];
        let allowed = check(&limits, &mut [State::Empty], 0, 1);
        cache.remember("a", 0, &allowed);
        let never = check(&limits, &mut [State::Empty], 0, 4);
        assert_eq!(never.outcome, Outcome::Never);
        cache.remember("n", 0, &never);
        assert!(cache.is_empty());
        for i in 0..10 {
            cache.remember(&format!("k{i}"), 200, &denied(1));
            assert!(cache.len() <= 3);
        }
        cache.forget("k9");
        assert!(cache.lookup("k9", 300, 1).is_none());
    }
}
