//! Where bucket state lives. Each backend applies the core's pure check atomically for one
//! subject: the memory store runs `core::algorithm::check` on its own map, the Upstash store
//! (to come) runs the Lua twin of it in one script call.

pub mod memory;
pub mod script;

use crate::core::algorithm::{Algorithm, Decision, Millis};

/// Which backend made a decision, as reported in the `X-Limiter-Backend` response field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
        }
    }
}

/// One check: these limits, for this subject of this tier, at this time, for this cost.
#[derive(Clone, Copy, Debug)]
pub struct CheckRequest<'a> {
    pub tier: &'a str,
    pub limits: &'a [Algorithm],
    /// The subject's digest (`core::identity::subject_hash`), never the subject itself.
    pub subject_hash: &'a str,
    pub now: Millis,
    pub cost: u64,
}

/// A store failure, told apart so the caller can log and fall back sensibly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    Unavailable(String),
}

/// The one job of a store: measure and replace, atomically, for one subject.
#[allow(async_fn_in_trait)] // Workers run one thread per isolate: no `Send` bound is wanted.
pub trait Store {
    async fn check(&self, request: &CheckRequest<'_>) -> Result<(Decision, Backend), StoreError>;
}
