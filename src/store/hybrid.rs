//! Upstash first, the isolate's memory when Upstash fails: the store the Worker uses.
//! A failure never reaches the client as an error; the policy's `store.on_failure` says what
//! happens instead, and the answer names the backend that decided.

use std::cell::Cell;

use super::memory::MemoryStore;
use super::{Backend, CheckRequest, Store, StoreError};
use crate::core::algorithm::Decision;
use crate::core::policy::FailMode;

/// What the hybrid could say about one check.
#[derive(Debug)]
pub struct Verdict {
    /// `Err` only under `on_failure: closed` while the primary is failing.
    pub decision: Result<Decision, StoreError>,
    pub backend: Backend,
    /// The primary's failure, when there was one (for logs and the dashboard).
    pub failure: Option<StoreError>,
}

pub struct Hybrid<P> {
    primary: Option<P>,
    memory: MemoryStore,
    on_failure: FailMode,
    failures: Cell<u64>,
}

impl<P: Store> Hybrid<P> {
    pub fn new(primary: Option<P>, memory: MemoryStore, on_failure: FailMode) -> Hybrid<P> {
        Hybrid { primary, memory, on_failure, failures: Cell::new(0) }
    }

    pub fn has_primary(&self) -> bool {
        self.primary.is_some()
    }

    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// Checks with failed primary calls so far in this isolate.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    pub async fn check(&self, r: &CheckRequest<'_>) -> Verdict {
        let Some(primary) = &self.primary else {
            return Verdict { decision: Ok(self.memory.check_now(r)), backend: Backend::Memory, failure: None };
        };
        let error = match primary.check(r).await {
            Ok((decision, backend)) => return Verdict { decision: Ok(decision), backend, failure: None },
            Err(e) => e,
        };
        self.failures.set(self.failures.get() + 1);
        let (decision, backend) = match self.on_failure {
            FailMode::Memory => (Ok(self.memory.check_now(r)), Backend::Fallback),
            FailMode::Open => (Ok(Decision::unlimited(r.cost)), Backend::FailOpen),
            FailMode::Closed => (Err(error.clone()), Backend::FailClosed),
        };
        Verdict { decision, backend, failure: Some(error) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::Algorithm;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn run<F: Future>(f: F) -> F::Output {
        match pin!(f).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("never waits"),
        }
    }

    /// A primary that is down: the hybrid's own logic is what is under test here; the real
    /// Upstash path is tested end to end against local-upstash and redis-server.
    struct Down;
    impl Store for Down {
        async fn check(&self, _: &CheckRequest<'_>) -> Result<(Decision, Backend), StoreError> {
            Err(StoreError::Timeout { after_ms: 5 })
        }
    }

    fn verdicts(mode: FailMode, n: usize) -> Vec<Verdict> {
        let hybrid = Hybrid::new(Some(Down), MemoryStore::new(10), mode);
        let limits = [Algorithm::fixed_window(2, 60_000).unwrap()];
        let names = ["m".to_string()];
        let r = CheckRequest { tier: "t", limits: &limits, limit_names: &names, subject_hash: "s", now: 0, cost: 1 };
        let out = (0..n).map(|_| run(hybrid.check(&r))).collect();
        assert_eq!(hybrid.failures(), n as u64);
        out
    }

    #[test]
    fn memory_fallback_still_limits() {
        let v = verdicts(FailMode::Memory, 3);
        let allowed: Vec<bool> = v.iter().map(|v| v.decision.as_ref().unwrap().allowed()).collect();
        assert_eq!(allowed, [true, true, false]);
        assert!(v.iter().all(|v| v.backend == Backend::Fallback && v.failure.is_some()));
    }

    #[test]
    fn open_lets_through_and_closed_refuses() {
        assert!(verdicts(FailMode::Open, 3).iter().all(|v| v.decision.as_ref().unwrap().allowed()));
        let closed = verdicts(FailMode::Closed, 1);
        assert_eq!(closed[0].decision.as_ref().unwrap_err().class(), "timeout");
        assert_eq!(closed[0].backend.as_str(), "fail-closed");
    }

    #[test]
    fn no_primary_is_plain_memory() {
        let hybrid: Hybrid<Down> = Hybrid::new(None, MemoryStore::new(10), FailMode::Closed);
        let limits = [Algorithm::fixed_window(1, 1_000).unwrap()];
        let names = ["m".to_string()];
        let r = CheckRequest { tier: "t", limits: &limits, limit_names: &names, subject_hash: "s", now: 0, cost: 1 };
        let v = run(hybrid.check(&r));
        assert_eq!((v.backend, v.failure), (Backend::Memory, None));
    }
}
