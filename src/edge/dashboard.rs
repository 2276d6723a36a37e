//! The operator's pages under the dashboard prefix (default `/__limiter/`), never limited:
//! the static files in `www/` through the Workers assets binding, `status.json` (no secrets;
//! public in front of the demo origin, behind the admin token in front of a real one), and
//! the admin API below `admin/`.

use serde_json::{json, Value};
use worker::{Env, Headers, Method, Request, Response, Result};

use super::{admin, refusal, Isolate};
use crate::core::decision::problem;
use crate::core::describe::describe;
use crate::core::policy::FailMode;
use crate::store::breaker::BreakerState;

/// The dashboard prefix from `DASHBOARD_PATH`: `/__limiter/` by default, `off` for none.
/// Always starts and ends with `/`.
pub(super) fn prefix(setting: Option<&str>) -> Option<String> {
    match setting.map(str::trim) {
        None | Some("") => Some("/__limiter/".into()),
        Some("off") => None,
        Some(p) => Some(format!("/{}/", p.trim_matches('/'))),
    }
}

pub(super) fn json_response(status: u16, body: &Value) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    headers.set("Cache-Control", "no-store")?;
    Ok(Response::builder().with_status(status).with_headers(headers).fixed(body.to_string().into_bytes()))
}

/// What the limiter is doing in this isolate. `private` adds what only the admin API shows
/// (the last failure's message).
pub(super) fn status(iso: &Isolate, now: u64, private: bool) -> Value {
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
    let on_failure = iso.policy.as_ref().map_or(FailMode::Memory, |p| p.store.on_failure);
    json!({
        "limiter": "edge-limiter",
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": now,
        "isolate_started_ms": iso.started_at,
        "requests": { "allowed": iso.allowed.get(), "denied": iso.denied.get() },
        // The published demo keys work only in front of the demo origin; the dashboard
        // offers them only then.
        "demo_keys": iso.demo() && iso.policy.is_ok(),
        "store": {
            "primary": if store.has_primary() { "upstash" } else { "memory" },
            "on_failure": on_failure.as_str(),
            "breaker": { "state": state, "failures_in_a_row": failures_in_a_row, "trips": breaker.trips(), "reopens_in_ms": reopens_in_ms },
            "calls": counts.store_calls,
            "failures": counts.store_failures,
            "skipped_while_open": counts.skipped,
            "last_failure": last_failure,
            "deny_cache": store.deny_cache().map(|c| json!({ "entries": c.len(), "hits": c.hits() })),
            "memory_keys": store.memory().len(),
        },
        "policy": match &iso.policy {
            Ok(p) => describe(p),
            Err(e) => json!({ "error": e }),
        },
    })
}

pub(super) async fn serve(req: Request, env: &Env, iso: &Isolate, rest: &str) -> Result<Response> {
    let now = js_sys::Date::now() as u64;
    if rest == "admin" || rest.starts_with("admin/") {
        return admin::handle(req, iso, rest.trim_start_matches("admin").trim_start_matches('/'), now).await;
    }
    if !matches!(req.method(), Method::Get | Method::Head) {
        return refusal(
            problem(405, "Method Not Allowed", "The dashboard only answers GET.", "method-not-allowed"),
            None,
        );
    }
    if rest == "status.json" {
        // Live counts and the policy in words: public only in front of the demo origin.
        if !iso.demo() {
            if let Some(refused) = admin::authorize(&req, iso, "status.json (in front of a real origin)", now).await {
                return refused;
            }
        }
        return json_response(200, &status(iso, now, false));
    }
    let Ok(assets) = env.assets("ASSETS") else {
        let detail = "The dashboard's files are not bound to this Worker: add an [assets] section with binding \"ASSETS\" and directory \"./www\" to wrangler.toml.";
        return refusal(problem(404, "Dashboard not deployed", detail, "dashboard-missing"), None);
    };
    let file = if rest.is_empty() { "index.html" } else { rest };
    match assets.fetch(format!("https://assets.invalid/{file}"), None).await {
        Ok(r) => Ok(r),
        Err(e) => {
            worker::console_error!("edge-limiter: the assets binding failed: {e}");
            refusal(problem(502, "Bad Gateway", "The dashboard's files could not be read.", "dashboard-missing"), None)
        }
    }
}
