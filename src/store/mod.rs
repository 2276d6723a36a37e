#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
//! Where bucket state lives. Each backend applies the core's pure check atomically for one
//! subject: the memory store runs `core::algorithm::check` on its own map, the Upstash store
//! runs the Lua twin of it (`check.lua`) in one script call, and the hybrid puts the two
//! together: Upstash first, the isolate's memory when Upstash fails.

pub mod breaker;
pub mod coalesce;
pub mod deny_cache;
pub mod hybrid;
pub mod keys;
pub mod lease;
pub mod memory;
pub mod script;
pub mod upstash;

use std::fmt;

pub use crate::core::decision::Backend;

use crate::core::algorithm::{Algorithm, Decision, Millis};
use crate::core::policy::{NamedLimit, Tier};
use crate::core::subject::SubjectDigest;

/// One check: the limits of this tier, for this subject, at this time, for this cost.
#[derive(Clone, Copy, Debug)]
pub struct CheckRequest<'a> {
    /// Its limits are checked together; with each limit's name and parameters they name the
    /// Upstash keys (`keys::state_key`).
    pub tier: &'a Tier,
    /// The subject's digest, never the subject itself.
    pub subject: &'a SubjectDigest,
    pub now: Millis,
    pub cost: u64,
}

/// A tier's limits go to the engine as they are.
impl AsRef<Algorithm> for NamedLimit {
    fn as_ref(&self) -> &Algorithm {
        &self.algorithm
    }
}

impl<'a> CheckRequest<'a> {
    pub fn new(tier: &'a Tier, subject: &'a SubjectDigest, now: Millis, cost: u64) -> CheckRequest<'a> {
        CheckRequest { tier, subject, now, cost }
    }

    pub fn limits(&self) -> &'a [NamedLimit] {
        &self.tier.limits
    }

    /// The subject within its tier: the key of the memory store and of the deny cache.
    pub fn subject_key(&self) -> String {
        keys::subject_key(&self.tier.name, self.subject.as_str())
    }

    /// The Upstash key of each of the tier's limits for this subject.
    pub fn state_keys(&self, prefix: &str) -> Vec<String> {
        let subject = self.subject.as_str();
        self.limits().iter().map(|l| keys::state_key(prefix, &self.tier.name, &l.name, &l.algorithm, subject)).collect()
    }
}

/// A store failure, told apart so the caller can log it once with its cause and fall back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// 401 or 403: the token is wrong or lacks rights. A configuration error, not an outage.
    Unauthorized,
    /// The service answered 5xx (or another status it has no business sending).
    Server { status: u16, message: String },
    /// No complete answer within the policy's `store.timeout`; the request was aborted.
    Timeout { after_ms: u64 },
    /// The request could not be sent or its answer not read (DNS, refused, reset).
    Network(String),
    /// An answer that is not the reply the script gives: not JSON, wrong shape, bad numbers.
    Malformed(String),
    /// Redis does not know the script (NOSCRIPT). The client answers it with EVAL; it is
    /// a failure only if EVAL is refused the same way.
    ScriptMissing,
    /// Redis refused the command itself (an error reply other than NOSCRIPT).
    Command(String),
}

impl StoreError {
    /// A short, stable name for logs and the dashboard.
    pub fn class(&self) -> &'static str {
        match self {
            StoreError::Unauthorized => "unauthorized",
            StoreError::Server { .. } => "server-error",
            StoreError::Timeout { .. } => "timeout",
            StoreError::Network(_) => "network",
            StoreError::Malformed(_) => "malformed-reply",
            StoreError::ScriptMissing => "script-missing",
            StoreError::Command(_) => "command-error",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unauthorized => {
                write!(f, "Upstash refused the token (401/403): configuration error, check UPSTASH_REDIS_REST_TOKEN")
            }
            StoreError::Server { status, message } => write!(f, "Upstash answered {status}: {message}"),
            StoreError::Timeout { after_ms } => write!(f, "Upstash did not answer within {after_ms} ms"),
            StoreError::Network(m) => write!(f, "Upstash could not be reached: {m}"),
            StoreError::Malformed(m) => write!(f, "Upstash sent a malformed reply: {m}"),
            StoreError::ScriptMissing => write!(f, "Redis does not know the check script, even after EVAL"),
            StoreError::Command(m) => write!(f, "Redis refused the check script: {m}"),
        }
    }
}

/// A tier of one limit, for the stores' tests.
#[cfg(test)]
pub(crate) fn test_tier(name: &str, limit: &str, algorithm: Algorithm) -> Tier {
    Tier {
        name: name.into(),
        description: String::new(),
        limits: vec![NamedLimit { name: limit.into(), algorithm }],
        lease: crate::core::policy::Leasing::OFF,
        shadow: false,
    }
}

/// Runs a future that never waits on real I/O (the test doubles answer at once).
#[cfg(test)]
pub(crate) fn run_ready<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    match std::pin::pin!(f).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a test double never waits"),
    }
}

/// The one job of a store: measure and replace, atomically, for one subject.
#[allow(async_fn_in_trait)] // Workers run one thread per isolate: no `Send` bound is wanted.
pub trait Store {
    async fn check(&self, request: &CheckRequest<'_>) -> Result<Decision, StoreError>;

    /// Forgets the subject's state for these limits: its buckets are full again.
    async fn reset(&self, request: &CheckRequest<'_>) -> Result<(), StoreError>;

    /// The keys of a request's state in this store, one per limit for [`Store::run`].
    fn keys(&self, request: &CheckRequest<'_>) -> Vec<String>;

    /// Several operations (checks that may lease, refunds) in one call at `now`, each atomic
    /// on its own keys (`keys`: every operation's, in order); one answer each.
    async fn run(
        &self,
        keys: &[String],
        now: Millis,
        ops: &[script::Op<'_, Algorithm>],
    ) -> Result<Vec<script::Answer>, StoreError>;
}
