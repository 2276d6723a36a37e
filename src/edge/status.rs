//! What the limiter is doing in this isolate, as `status.json` and the admin API's `health`
//! report it.

use serde_json::{json, Value};

use super::isolate::{Config, Isolate};
use crate::core::describe::describe;
use crate::store::breaker::BreakerState;

/// `private` adds what only the admin API shows (the last failure's message).
pub fn status(iso: &Isolate, now: u64, private: bool) -> Value {
    let store = &iso.store;
    let breaker = store.breaker();
    let (state, reopens_in_ms, failures_in_a_row) = match breaker.state() {
        BreakerState::Closed { failures } => ("closed", None, failures),
        BreakerState::Open { until } => ("open", Some(until.saturating_sub(now)), 0),
        BreakerState::HalfOpen { .. } => ("half-open", None, 0),
    };
    let counts = store.counts();
    let last_failure = store.last_failure().map(|(at, e)| {
        let mut v = json!({ "class": e.class(), "ago_ms": now.saturating_sub(at) });
        if let (true, Some(fields)) = (private, v.as_object_mut()) {
            fields.insert("message".into(), json!(e.to_string()));
        }
        v
    });
    let (allowed, denied) = iso.counts();
    let (blocked, allow_listed) = iso.listed();
    let shadow_denied = iso.shadow_denials();
    let service = iso.service_counts();
    json!({
        "limiter": "edge-limiter",
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": now,
        "isolate_started_ms": iso.started_at,
        "requests": { "allowed": allowed, "denied": denied, "blocked": blocked, "allow_listed": allow_listed, "shadow_denied": shadow_denied, "delayed": iso.delayed() },
        // The published demo keys work only in front of the demo origin; the dashboard
        // offers them only then.
        "service": {
            "on": iso.service_token.is_ok(),
            "checks": service.checks,
            "denied": service.denied,
            "refunds": service.refunds,
        },
        "controls": iso.controls.status(now),
        "demo_keys": iso.demo() && iso.policy().is_some(),
        "store": {
            "primary": if store.has_primary() { "upstash" } else { "memory" },
            "on_failure": iso.store_settings().on_failure.as_str(),
            "breaker": { "state": state, "failures_in_a_row": failures_in_a_row, "trips": breaker.trips(), "reopens_in_ms": reopens_in_ms },
            "calls": counts.store_calls,
            "failures": counts.store_failures,
            "skipped_while_open": counts.skipped,
            "last_failure": last_failure,
            "deny_cache": store.deny_cache().map(|c| json!({ "entries": c.len(), "hits": c.hits() })),
            "memory_keys": store.memory().len(),
            "leases": { "held": store.leases_held(), "answered": counts.leased, "units_returned": counts.returned, "hand_back_calls": counts.hand_backs },
            "batches": store.batched().map(|b| json!({ "calls": b.calls, "checks": b.ops })),
        },
        "policy": match &iso.config {
            Config::Ready { policy, .. } => describe(policy),
            Config::Broken(e) => json!({ "error": e }),
        },
    })
}
