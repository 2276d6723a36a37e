//! Leases: units a busy subject takes from its shared bucket ahead of use, in the same one
//! script call as its check, so that its next requests in this isolate are decided here with
//! no store call. The units are consumed in the store when granted, so admissions can never
//! exceed the limit; what a lease does not use is handed back when it ends.
//!
//! The book keeps, per subject of a tier, how many units it used in this isolate over the last
//! lease period (its rate here), and the lease it holds. A subject seen once asks for its cost
//! alone, exactly as without leases; one that used ten units in the last period asks for ten.
//! The engine then shrinks the grant as the bucket nears empty and ends it at a fixed window's
//! boundary (`core::algorithm::lease`), and the book ends it after the lease period at the
//! latest.
//!
//! What a lease-decided answer says is only what the lease still holds: other isolates may
//! have taken the rest of the bucket meanwhile, so `remaining` is never more than the caller
//! can still get.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use crate::core::algorithm::{Decision, LimitStatus, Millis, Outcome};
use crate::core::policy::Leasing;

/// What the store granted for a request: the decision (each limit after the whole grant),
/// the units granted (at least the request's cost), and until when they may be used.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub decision: Decision,
    pub granted: u64,
    pub until: Millis,
}

/// Units a lease did not use, to hand back to the store, with what the store needs to find
/// them (`P`: the lease's keys and limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unused<P> {
    pub key: String,
    pub units: u64,
    pub granted_at: Millis,
    pub payload: P,
}

struct Held<P> {
    payload: P,
    left: u64,
    granted_at: Millis,
    until: Millis,
    /// The grant's decision: each limit's status after the whole lease was taken.
    snapshot: Decision,
}

struct Entry<P> {
    /// The current period's start and the units used in it, and the units of the one before.
    period_start: Millis,
    used_now: u64,
    used_before: u64,
    held: Option<Held<P>>,
    /// A check of this subject that may take a lease is on its way to the store: concurrent
    /// ones ask for their cost alone, so that one isolate takes one lease at a time.
    asking: bool,
}

pub struct LeaseBook<P> {
    entries: RefCell<HashMap<String, Entry<P>>>,
    /// Every lease granted, by when it ends, in order of grant: what `expired` reads, so that
    /// it never walks the whole book. An entry whose lease ended otherwise is skipped.
    ends: RefCell<VecDeque<(Millis, String)>>,
    max_keys: usize,
}

impl<P> LeaseBook<P> {
    pub fn new(max_keys: usize) -> LeaseBook<P> {
        LeaseBook {
            entries: RefCell::new(HashMap::new()),
            ends: RefCell::new(VecDeque::new()),
            max_keys: max_keys.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a request of `cost` units and decides it from the subject's lease when the
    /// lease covers it: `Some(allowed)`, with no store call. `None`: ask the store.
    pub fn take(&self, key: &str, now: Millis, cost: u64, settings: Leasing) -> Option<Decision> {
        if !settings.on() {
            return None;
        }
        let mut entries = self.entries.borrow_mut();
        if !entries.contains_key(key) && entries.len() >= self.max_keys {
            evict(&mut entries, now, settings.ttl_ms, self.max_keys);
            if entries.len() >= self.max_keys {
                return None; // every entry holds a lease: this subject goes to the store, untracked
            }
        }
        let entry = entries.entry(key.to_string()).or_insert(Entry {
            period_start: now,
            used_now: 0,
            used_before: 0,
            held: None,
            asking: false,
        });
        roll(entry, now, settings.ttl_ms);
        entry.used_now = entry.used_now.saturating_add(cost);
        let held = entry.held.as_mut()?;
        if now >= held.until || now < held.granted_at || held.left < cost {
            return None;
        }
        held.left -= cost;
        Some(from_lease(&held.snapshot, held.left, now.saturating_sub(held.granted_at), cost))
    }

    /// Whether a check of this subject is asking the store for a lease now.
    pub fn asking(&self, key: &str) -> bool {
        self.entries.borrow().get(key).is_some_and(|e| e.asking)
    }

    /// How many units to ask the store for, for a request of `cost`: what the subject used
    /// here over the last lease period, at least `cost`, at most `settings.max`; only `cost`
    /// while another check of the subject is asking for a lease. A call for more than `cost`
    /// must be followed by [`LeaseBook::hold`] or [`LeaseBook::asked`].
    pub fn want(&self, key: &str, cost: u64, settings: Leasing) -> u64 {
        if !settings.on() {
            return cost;
        }
        let mut entries = self.entries.borrow_mut();
        let Some(entry) = entries.get_mut(key) else { return cost };
        if entry.asking {
            return cost;
        }
        // The request being asked for is already counted in `used_now`.
        let rate = entry.used_before.max(entry.used_now.saturating_sub(cost));
        let want = rate.clamp(cost, settings.max.max(cost));
        entry.asking = want > cost;
        want
    }

    /// The store answered (or failed) a check that asked for a lease.
    pub fn asked(&self, key: &str) {
        if let Some(entry) = self.entries.borrow_mut().get_mut(key) {
            entry.asking = false;
        }
    }

    /// Keeps what a grant for a request of `cost` left over, usable until the grant's bound
    /// (a fixed window's end) or the lease period, whichever is sooner. Returns the
    /// unused units of the lease it replaces, to hand back.
    pub fn hold(
        &self,
        key: &str,
        now: Millis,
        cost: u64,
        grant: &Grant,
        settings: Leasing,
        payload: P,
    ) -> Option<Unused<P>> {
        let Grant { decision, granted, until } = *grant;
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get_mut(key)?;
        entry.asking = false;
        let old = entry.held.take().and_then(|h| unused(key, h));
        if granted > cost && settings.on() {
            let until = until.min(now.saturating_add(settings.ttl_ms));
            entry.held = Some(Held { payload, left: granted - cost, granted_at: now, until, snapshot: decision });
            let mut ends = self.ends.borrow_mut();
            ends.push_back((until, key.to_string()));
            if ends.len() > 2 * self.max_keys {
                ends.pop_front(); // bounded: that lease then ends at its next use or grant
            }
        }
        old
    }

    /// Ends the subject's lease (an administrative reset, or a denial): its unused units, if
    /// any, to hand back.
    pub fn end(&self, key: &str) -> Option<Unused<P>> {
        let held = self.entries.borrow_mut().get_mut(key)?.held.take()?;
        unused(key, held)
    }

    /// When the earliest lease still held ends (the ends of leases that ended otherwise are
    /// dropped on the way).
    pub fn first_end(&self) -> Option<Millis> {
        let mut ends = self.ends.borrow_mut();
        let entries = self.entries.borrow();
        while let Some((until, key)) = ends.front() {
            let held = entries.get(key).and_then(|e| e.held.as_ref());
            if held.is_some_and(|h| h.until == *until) {
                return Some(*until);
            }
            ends.pop_front();
        }
        None
    }

    /// Leases held now, for the status.
    pub fn held(&self) -> usize {
        self.entries.borrow().values().filter(|e| e.held.is_some()).count()
    }

    /// Ends the leases that are over, at most `limit` of them: their unused units.
    pub fn expired(&self, now: Millis, limit: usize) -> Vec<Unused<P>> {
        let mut out = Vec::new();
        let mut ends = self.ends.borrow_mut();
        let mut entries = self.entries.borrow_mut();
        // Leases are granted with one period, so they end nearly in the order granted; one
        // that ends later than one behind it is reached when it is over.
        while out.len() < limit {
            match ends.front() {
                Some((until, _)) if *until <= now => {}
                _ => break,
            }
            let Some((until, key)) = ends.pop_front() else { break };
            let Some(entry) = entries.get_mut(&key) else { continue };
            if entry.held.as_ref().is_some_and(|h| h.until == until) {
                if let Some(u) = entry.held.take().and_then(|h| unused(&key, h)) {
                    out.push(u);
                }
            }
        }
        out
    }
}

fn unused<P>(key: &str, held: Held<P>) -> Option<Unused<P>> {
    (held.left > 0).then(|| Unused {
        key: key.to_string(),
        units: held.left,
        granted_at: held.granted_at,
        payload: held.payload,
    })
}

/// Moves the rate's period on: the units of a period just over become the last period's;
/// after a longer pause both are forgotten.
fn roll<P>(entry: &mut Entry<P>, now: Millis, period: Millis) {
    let elapsed = now.saturating_sub(entry.period_start);
    if elapsed < period.max(1) {
        return;
    }
    entry.used_before = if elapsed < 2 * period.max(1) { entry.used_now } else { 0 };
    entry.used_now = 0;
    entry.period_start = now;
}

/// Drops subjects with no lease whose rate is forgotten; if that frees too little, every
/// subject without a lease (a held lease is units of the shared bucket: never dropped here).
fn evict<P>(entries: &mut HashMap<String, Entry<P>>, now: Millis, period: Millis, max_keys: usize) {
    entries.retain(|_, e| e.held.is_some() || now.saturating_sub(e.period_start) < 2 * period.max(1));
    if entries.len() >= max_keys {
        entries.retain(|_, e| e.held.is_some());
    }
}

/// An allowed decision told from a lease: every limit reports what the lease still holds
/// (a lower bound of what the caller can get), and its reset as the grant said, aged.
fn from_lease(snapshot: &Decision, left: u64, aged: Millis, cost: u64) -> Decision {
    let statuses: Vec<LimitStatus> = snapshot
        .limits()
        .iter()
        .map(|s| LimitStatus {
            outcome: Outcome::Allowed,
            remaining: left,
            reset_ms: s.reset_ms.saturating_sub(aged),
            retry_after_ms: 0,
        })
        .collect();
    Decision::from_parts(Outcome::Allowed, snapshot.binding, cost, &statuses).unwrap_or(*snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::{check, Algorithm, State};

    const ON: Leasing = Leasing { max: 10, ttl_ms: 1_000 };

    fn granted_decision(remaining_in_store: u64) -> Decision {
        // A decision with one limit, as the store answers a grant.
        let limits = [Algorithm::fixed_window(100, 60_000).unwrap()];
        let mut states = [State::Empty];
        check(&limits, &mut states, 0, 100 - remaining_in_store)
    }

    fn grant(granted: u64, until: Millis, remaining_in_store: u64) -> Grant {
        Grant { decision: granted_decision(remaining_in_store), granted, until }
    }

    #[test]
    fn a_subject_seen_once_asks_for_its_cost_alone() {
        let book: LeaseBook<()> = LeaseBook::new(100);
        assert_eq!(book.take("t:a", 0, 1, ON), None);
        assert_eq!(book.want("t:a", 1, ON), 1);
        assert_eq!(book.want("t:b", 3, ON), 3, "never seen");
        assert_eq!(LeaseBook::<()>::new(100).want("t:a", 1, Leasing::OFF), 1);
    }

    #[test]
    fn a_busy_subject_asks_for_its_rate_and_is_then_served_from_its_lease() {
        let book: LeaseBook<()> = LeaseBook::new(100);
        for i in 0..6 {
            assert_eq!(book.take("t:a", i * 100, 1, ON), None);
        }
        // Six units in this period so far, the sixth being asked for now: five seen before it.
        assert_eq!(book.want("t:a", 1, ON), 5);
        assert_eq!(book.hold("t:a", 600, 1, &grant(5, u64::MAX, 50), ON, ()), None);
        let mut remaining = Vec::new();
        for i in 0..4 {
            let d = book.take("t:a", 650 + i, 1, ON).expect("from the lease");
            assert!(d.allowed());
            remaining.push(d.remaining());
        }
        assert_eq!(remaining, [3, 2, 1, 0], "what the lease still holds, never the store's 50");
        assert_eq!(book.take("t:a", 700, 1, ON), None, "used up: ask the store");
    }

    #[test]
    fn the_rate_is_capped_and_follows_the_last_period() {
        let book: LeaseBook<()> = LeaseBook::new(100);
        for i in 0..40 {
            book.take("t:a", i * 10, 1, ON);
        }
        assert_eq!(book.want("t:a", 1, ON), 10, "capped at max");
        assert_eq!(book.want("t:a", 1, ON), 1, "one lease asked for at a time");
        book.asked("t:a");
        book.take("t:a", 1_500, 1, ON);
        assert_eq!(book.want("t:a", 1, ON), 10, "the last period's 40, capped");
        book.asked("t:a");
        book.take("t:a", 5_000, 1, ON);
        assert_eq!(book.want("t:a", 1, ON), 1, "after a pause the rate is forgotten");
        assert_eq!(book.want("t:a", 20, ON), 20, "a cost above max is still asked for whole");
    }

    #[test]
    fn a_lease_ends_at_its_bound_and_hands_back_what_it_did_not_use() {
        let book: LeaseBook<()> = LeaseBook::new(100);
        book.take("t:a", 0, 1, ON);
        book.hold("t:a", 0, 1, &grant(8, 300, 10), ON, ());
        assert!(book.take("t:a", 100, 1, ON).is_some());
        assert_eq!(book.take("t:a", 300, 1, ON), None, "the engine's bound (a window's end)");
        assert_eq!(book.expired(300, 10), vec![Unused { key: "t:a".into(), units: 6, granted_at: 0, payload: () }]);
        assert_eq!(book.expired(300, 10), vec![], "handed back once");
        // The lease period bounds it too, and a new grant hands back the old lease's rest.
        book.hold("t:a", 400, 1, &grant(5, u64::MAX, 10), ON, ());
        assert_eq!(book.take("t:a", 1_400, 1, ON), None);
        let back = book.hold("t:a", 1_400, 1, &grant(3, u64::MAX, 10), ON, ());
        assert_eq!(back, Some(Unused { key: "t:a".into(), units: 4, granted_at: 400, payload: () }));
        assert_eq!(book.end("t:a"), Some(Unused { key: "t:a".into(), units: 2, granted_at: 1_400, payload: () }));
        assert_eq!(book.end("t:a"), None);
    }

    #[test]
    fn a_lease_never_decides_a_request_it_cannot_cover_or_one_from_before_it() {
        let book: LeaseBook<()> = LeaseBook::new(100);
        book.take("t:a", 1_000, 1, ON);
        book.hold("t:a", 1_000, 1, &grant(3, u64::MAX, 10), ON, ());
        assert_eq!(book.take("t:a", 1_001, 5, ON), None, "costs more than it holds");
        assert_eq!(book.take("t:a", 999, 1, ON), None, "a clock from before the grant");
        assert!(book.take("t:a", 1_002, 2, ON).is_some());
        assert_eq!(book.take("t:a", 1_003, 1, ON), None);
    }

    #[test]
    fn the_book_is_bounded_and_never_drops_a_held_lease() {
        let book: LeaseBook<()> = LeaseBook::new(10);
        book.take("held", 0, 1, ON);
        book.hold("held", 0, 1, &grant(5, u64::MAX, 10), ON, ());
        for i in 0..1_000u64 {
            book.take(&format!("s{i}"), 10_000 + i, 1, ON);
            assert!(book.len() <= 10);
        }
        assert_eq!(book.expired(u64::MAX, 10).len(), 1, "the held lease survived the flood");
    }
}
