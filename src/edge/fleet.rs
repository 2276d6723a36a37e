//! The fleet view's reads (`core::fleet` has the layout): `fleet.json` for the dashboard,
//! under the same rule as `status.json`, and `admin/metrics` for scrapers. One script call
//! reads the last hour from the shared store; this isolate's own tallies are flushed first,
//! so what it just decided is in. Without a shared store, both say the counts are this
//! isolate's.

use serde_json::{json, Value};

use super::isolate::{FleetFlush, Isolate};
use crate::core::fleet::{metrics, read_call, view};
use crate::store::StoreError;

/// One flush, to each sink the Worker has: the shared store (its failure is the answer) and
/// the Analytics Engine dataset (a failure there is logged, `fleet_analytics_failed`, and its
/// points let go, as a failed store flush's are).
pub async fn send(iso: &Isolate, flush: &FleetFlush) -> Result<(), StoreError> {
    if let (Some(dataset), Some(points)) = (&iso.analytics, &flush.points) {
        if let Err(e) = crate::runtime::analytics_write(dataset, points).await {
            let message = format!("fleet view: the Analytics Engine write failed: {e}");
            super::log::error("fleet_analytics_failed", &message, Value::Null);
        }
    }
    match (iso.store.primary(), &flush.script) {
        (Some(store), Some((keys, args))) => store.fleet(keys, args).await.map(|_| ()),
        _ => Ok(()),
    }
}

/// The last hour as the store holds it, or why it could not be read; `None` without a store.
async fn read(iso: &Isolate, now: u64) -> Option<Result<Value, String>> {
    let store = iso.store.primary()?;
    let policy = iso.policy()?;
    if let Some(flush) = iso.fleet_flush(now, true) {
        if let Err(e) = send(iso, &flush).await {
            return Some(Err(format!("the flush failed: {e}")));
        }
    }
    let (keys, args) = read_call(&policy.key_prefix, now);
    Some(match store.fleet(&keys, &args).await {
        Ok(Value::String(text)) => serde_json::from_str(&text).map_err(|e| format!("the read answered {e}")),
        Ok(other) => Err(format!("the read answered {other}")),
        Err(e) => Err(e.to_string()),
    })
}

/// This isolate's counts in the shape of the store's totals, for a deployment without one.
fn isolate_totals(iso: &Isolate) -> Value {
    let (allowed, denied) = iso.counts();
    let (blocked, allow_listed) = iso.listed();
    let backend = "memory";
    json!({ "total": {
        format!("allowed|*|*|{backend}"): allowed,
        format!("denied|*|*|{backend}"): denied,
        "blocked|-|-|-": blocked,
        "allow_listed|-|-|-": allow_listed,
        format!("shadow_denied|*|*|{backend}"): iso.shadow_denials(),
        format!("delayed|*|*|{backend}"): iso.delayed(),
    }})
}

/// The dashboard's fleet view.
pub async fn fleet_json(iso: &Isolate, now: u64) -> Value {
    match read(iso, now).await {
        Some(Ok(read)) => view(&read, now),
        Some(Err(e)) => json!({ "scope": "fleet", "error": e }),
        None => {
            let mut v = view(&isolate_totals(iso), now);
            if let Some(fields) = v.as_object_mut() {
                fields.insert("scope".into(), json!("isolate"));
                fields.insert(
                    "note".into(),
                    json!("no shared store is configured: these are this isolate's counts only"),
                );
            }
            v
        }
    }
}

/// The metrics in the Prometheus text format, or why the fleet could not be read.
pub async fn metrics_text(iso: &Isolate, now: u64) -> Result<String, String> {
    match read(iso, now).await {
        Some(Ok(read)) => Ok(metrics(&read, now)),
        Some(Err(e)) => Err(e),
        None => Ok(metrics(&isolate_totals(iso), now)),
    }
}
