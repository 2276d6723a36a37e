#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
//! The Worker. A request's whole way, from `lib.rs`:
//!
//! ```text
//! handle (here) ─ path parsed once (proxy::Target) ─ bad ─► 400 invalid-path
//!               ─ under DASHBOARD_PATH ─ admin/… ─────────► admin::handle
//!                                      ─ v1/… ────────────► service::handle (apps ask)
//!                                      ─ the rest ────────► dashboard::serve
//!               ─ everything else ────────────────────────► limit::handle
//!                    identify (core) ─ plan (core) ─ check (store) ─ fields (core)
//!                    ─► proxy::forward to the origin, or the refusal (respond)
//! ```
//!
//! Imports run one way: this router → the request paths (`limit`, `dashboard`, `admin`,
//! `service`) →
//! `guard`, `proxy`, `status` → `isolate` → `respond`, the leaf that makes responses.
//! Everything that can be decided without the runtime is decided in `core`; the runtime is
//! reached through `crate::runtime`, one call per read, store call, forward or answer, so the
//! limited path crosses between the wasm and JavaScript a few times, not hundreds.
//!
//! Nothing here may panic: a panic poisons the isolate and turns every later request into
//! an opaque 500. Errors become problem+json answers instead.

mod admin;
mod controls;
mod dashboard;
mod fields;
mod fleet;
mod guard;
mod isolate;
mod limit;
mod log;
mod proxy;
mod relay;
mod respond;
mod service;
mod status;

use std::time::Duration;

use worker::{Context, Env, Request, Result};

use crate::core::decision::problem;
use fields::Fields;
use isolate::Isolate;
use proxy::Target;
use respond::Reply;

/// One request, from the runtime's own objects: read once (method, URL and the fields the
/// limiter needs, in one call), routed, answered. `now` is when it came (the entry read the
/// clock): the time of its decisions, read again only after a wait for the controls.
pub async fn handle(req: web_sys::Request, env: Env, ctx: Context, mut now: u64) -> Result<Reply> {
    let iso = Isolate::get(&env);
    if keep_controls_fresh(&iso, &env, &ctx, now).await {
        now = js_sys::Date::now() as u64;
    }
    let (method, url, fields) = Fields::read_request(&req, iso.policy(), &iso.controls.current().lists);
    // The path is parsed once: the dashboard, the route rules and the origin all get this.
    let target = match Target::parse(&url, &iso.path_options()) {
        Ok(t) => t,
        Err(e) => {
            let detail = format!("The request path was refused: {e}.");
            let answer = iso.answer(problem(400, "Bad Request", &detail, "invalid-path"));
            return respond::with_cors(Reply::Own(answer), iso.cors(), fields.origin.as_deref());
        }
    };
    if let Some(prefix) = &iso.dashboard {
        let path = target.path.forward.as_str();
        // Exact prefix match on the normalised path: `..` is resolved and `%2F` refused, so
        // nothing reaches these pages by another spelling. No CORS here: no page on another
        // origin may read the admin API. These pages take the `worker` crate's types.
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            let req = Request::from(req);
            let answer = match rest.strip_prefix("admin") {
                Some(route) if route.is_empty() || route.starts_with('/') => {
                    admin::handle(req, &fields, &iso, &env, route.trim_start_matches('/'), target.query, now).await?
                }
                _ => match rest.strip_prefix("v1/") {
                    Some(route) => service::handle(req, &fields, &iso, route, now).await?,
                    None => dashboard::serve(req, &fields, &env, &iso, rest, now).await?,
                },
            };
            return Ok(Reply::Done(answer.into()));
        }
        if path == prefix.trim_end_matches('/') {
            return respond::redirect(prefix).map(|r| Reply::Done(r.into()));
        }
    }
    let response = limit::handle(&req, &method, &fields, &iso, &target, now).await;
    // The fleet view's tallies, flushed at most every few seconds in one call, in the
    // background of the request that finds them due (dated by the request's arrival: a
    // flush's cadence has no need of the time since).
    if let Some(flush) = iso.fleet_flush(now, false) {
        let iso = iso.clone();
        crate::runtime::task::wait_until(ctx.as_ref(), async move {
            if let Err(e) = fleet::send(&iso, &flush).await {
                let message = format!("fleet view: the flush failed ({}): {e}", e.class());
                log::error("fleet_flush_failed", &message, serde_json::json!({ "class": e.class() }));
            }
        });
    }
    // A lease granted here that no later check of this isolate ends is handed back after its
    // end, once, while the runtime keeps this request's context for it.
    if let Some(end) = iso.store.hand_back_due() {
        // The wait counts from now, not from the request's arrival: the check that granted
        // the lease came after it (a read only on this rare path).
        let now = js_sys::Date::now() as u64;
        let iso = iso.clone();
        crate::runtime::task::wait_until(ctx.as_ref(), async move {
            worker::Delay::from(Duration::from_millis(end.saturating_sub(now) + 5)).await;
            iso.store.hand_back(js_sys::Date::now() as u64).await;
        });
    }
    response
}

/// The runtime controls (overrides, runtime lists) read where they live: on the isolate's
/// first request before it is judged, then at most once per refresh interval in the
/// background of the request that finds them due (`edge::controls`). True when the request
/// waited for them (its clock has moved on).
async fn keep_controls_fresh(iso: &std::rc::Rc<Isolate>, env: &Env, ctx: &Context, now: u64) -> bool {
    // Kept in this isolate: nothing to read.
    if !iso.controls.is_shared() {
        return false;
    }
    let Some(policy) = iso.policy() else { return false };
    match iso.controls.due(now) {
        controls::Due::No => false,
        controls::Due::Waiting => {
            controls::first_read(&iso.controls, policy.store.timeout_ms + 50).await;
            true
        }
        controls::Due::First => {
            controls::refresh(&iso.controls, iso.store.primary(), env, policy, now).await;
            true
        }
        controls::Due::Later => {
            let (iso, env) = (iso.clone(), env.clone());
            crate::runtime::task::wait_until(ctx.as_ref(), async move {
                if let Some(policy) = iso.policy() {
                    controls::refresh(&iso.controls, iso.store.primary(), &env, policy, now).await;
                }
            });
            false
        }
    }
}
