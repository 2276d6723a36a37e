//! The admin API, on only when the secret `ADMIN_TOKEN` (32 characters or more) is set:
//! bearer auth compared in constant time, JSON answers, no CORS headers (a browser on
//! another origin cannot read them). A wrong token is a failed credential like any other: it
//! costs the caller's address from `identity.auth_failures`. Every action is logged with the
//! subject's digest, never the token or raw subject.
//!
//!   GET  admin/policy                                  the active policy, as written and in plain words
//!   GET  admin/health                                  store, breaker, counts, last failure
//!   GET  admin/subject?ip=|key_digest=|sub=[&tier=]    remaining and reset per limit (consumes nothing)
//!   POST admin/subject  {"key": ...} (or any field above)   the same, for a raw key in the body
//!   POST admin/reset    fields in the body or the query      the subject's buckets full again
//!   GET  admin/metrics                                 the fleet's counters, Prometheus text format
//!   GET  admin/controls                                the overrides and runtime lists in force
//!   POST admin/overrides  {ip|key|key_digest|sub, tier | limits, ttl?}   a subject's tier or limits
//!   DELETE admin/overrides?subject_hash=|ip=|key_digest=|sub=          the override removed
//!   PUT  admin/lists    {block?, allow?}                  the runtime lists, added to the policy's
//!
//! A change reaches every isolate within the refresh interval (`edge::controls`).
//! A raw API key is accepted only in a body: never in a URL, where logs keep it.

use serde_json::{json, Value};
use worker::{Env, Method, Request, Response, Result};

use super::controls;
use super::fields::Fields;
use super::guard;
use super::isolate::{Config, Isolate};
use super::log;
use super::respond;
use super::status::status;
use crate::core::admin::{body_fields, query_pairs, subject_from_fields, subject_state, FieldSource};
use crate::core::controls::{lists_from_body, override_from_body, override_name};
use crate::core::decision::problem;
use crate::core::describe::describe;
use crate::store::CheckRequest;

fn error(iso: &Isolate, status: u16, title: &str, detail: &str) -> Result<Response> {
    Ok(iso.answer(problem(status, title, detail, "admin")).into())
}

/// `route` is what follows `admin/` (`policy`, `health`, ...); `query` is the URL's query as
/// sent (`?...` or empty).
pub async fn handle(
    mut req: Request,
    fields: &Fields,
    iso: &Isolate,
    env: &Env,
    route: &str,
    query: &str,
    now: u64,
) -> Result<Response> {
    let method = req.method();
    if let Some(refused) = guard::admin_token(&req, fields, iso, "The admin API", now).await {
        return Ok(refused.into());
    }
    let (policy, written) = match &iso.config {
        Config::Ready { policy, written } => (policy, written),
        Config::Broken(e) => {
            return error(iso, 500, "Rate limiter misconfigured", &format!("The policy is invalid: {e}"))
        }
    };
    match (method.clone(), route) {
        (Method::Get, "policy") => {
            log::info("admin_action", "admin read the policy", json!({ "action": "policy" }));
            let written: Value = serde_json::from_str(written).unwrap_or(Value::Null);
            respond::json(200, &json!({ "policy": written, "described": describe(policy) }))
        }
        (Method::Get, "health") => {
            log::info("admin_action", "admin read the store health", json!({ "action": "health" }));
            respond::json(200, &status(iso, now, true))
        }
        (Method::Get | Method::Post, "subject") | (Method::Post, "reset") => {
            let query = query_pairs(query);
            let body = if method == Method::Post { req.text().await.unwrap_or_default() } else { String::new() };
            let (pairs, source) = if body.trim().is_empty() {
                (query, FieldSource::Query)
            } else {
                match body_fields(&body) {
                    Ok(p) => (p, FieldSource::Body),
                    Err(e) => return error(iso, 400, "Bad Request", &e),
                }
            };
            let subject = match subject_from_fields(policy, &pairs, source) {
                Ok(s) => s,
                Err(e) => return error(iso, 400, "Bad Request", &e),
            };
            let Some(tier) = policy.tier(subject.tier) else {
                return error(iso, 400, "Bad Request", "No such tier.");
            };
            let digest = subject.subject.digest();
            let request = CheckRequest::new(tier, &digest, now, 0);
            if route == "reset" {
                let message = format!("admin reset tier={} subject={digest}", tier.name);
                log::info("admin_action", &message, json!({ "action": "reset", "tier": tier.name, "subject_hash": digest.as_str() }));
                return match iso.store.reset(&request).await {
                    Ok(()) => respond::json(
                        200,
                        &json!({ "reset": true, "tier": tier.name, "subject_hash": digest.as_str() }),
                    ),
                    Err(e) => error(
                        iso,
                        503,
                        "Store unavailable",
                        &format!("The reset did not reach the store ({}): {e}", e.class()),
                    ),
                };
            }
            let message = format!("admin inspected tier={} subject={digest}", tier.name);
            log::info("admin_action", &message, json!({ "action": "subject", "tier": tier.name, "subject_hash": digest.as_str() }));
            let (decision, backend) = iso.store.inspect(&request).await;
            respond::json(200, &subject_state(tier, &digest, &decision, backend.as_str()))
        }
        (Method::Get, "metrics") => match super::fleet::metrics_text(iso, now).await {
            Ok(text) => {
                let headers = respond::fields([
                    ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                    ("Cache-Control", "no-store"),
                ])?;
                Ok(Response::builder().with_status(200).with_headers(headers).fixed(text.into_bytes()))
            }
            Err(e) => error(iso, 503, "Store unavailable", &format!("The fleet's counts could not be read: {e}")),
        },
        (Method::Get, "controls") => {
            log::info("admin_action", "admin read the controls", json!({ "action": "controls" }));
            let mut answer = iso.controls.current().describe(policy, now);
            if let Some(fields) = answer.as_object_mut() {
                fields.insert("status".into(), iso.controls.status(now));
            }
            respond::json(200, &answer)
        }
        (Method::Post, "overrides") => {
            let body = req.text().await.unwrap_or_default();
            let new = match override_from_body(policy, &body, now) {
                Ok(o) => o,
                Err(e) => return error(iso, 400, "Bad Request", &e),
            };
            let expired = iso.controls.current().expired(now);
            let sets = [(new.name.clone(), new.text.clone())];
            if let Err(e) = controls::write(&iso.controls, iso.store.primary(), env, policy, &sets, &expired, now).await {
                return error(iso, 503, "Store unavailable", &format!("The override was not stored: {e}"));
            }
            let message = format!("admin set an override: subject={} {}", new.digest, new.summary);
            let fields = json!({ "action": "override_set", "subject_hash": new.digest, "override": new.summary });
            log::info("admin_action", &message, fields);
            respond::json(200, &changed(iso, json!({ "set": true, "subject_hash": new.digest, "override": new.summary })))
        }
        (Method::Delete, "overrides") => {
            let query = query_pairs(query);
            let (name, digest) = match override_name(policy, &query) {
                Ok(n) => n,
                Err(e) => return error(iso, 400, "Bad Request", &e),
            };
            let mut deletes = iso.controls.current().expired(now);
            deletes.push(name);
            if let Err(e) = controls::write(&iso.controls, iso.store.primary(), env, policy, &[], &deletes, now).await {
                return error(iso, 503, "Store unavailable", &format!("The override was not removed: {e}"));
            }
            let message = format!("admin removed the override of subject={digest}");
            log::info("admin_action", &message, json!({ "action": "override_removed", "subject_hash": digest }));
            respond::json(200, &changed(iso, json!({ "removed": true, "subject_hash": digest })))
        }
        (Method::Put, "lists") => {
            let body = req.text().await.unwrap_or_default();
            let (records, summary) = match lists_from_body(&body) {
                Ok(r) => r,
                Err(e) => return error(iso, 400, "Bad Request", &e),
            };
            if let Err(e) = controls::write(&iso.controls, iso.store.primary(), env, policy, &records, &[], now).await {
                return error(iso, 503, "Store unavailable", &format!("The lists were not stored: {e}"));
            }
            // Counts only: the entries are addresses, which the log never carries.
            let message = format!("admin set the runtime lists: {summary}");
            log::info("admin_action", &message, json!({ "action": "lists_set", "lists": summary }));
            respond::json(200, &changed(iso, json!({ "set": true, "lists": summary })))
        }
        (_, "policy" | "health" | "subject" | "reset" | "controls" | "overrides" | "lists" | "metrics") => error(
            iso,
            405,
            "Method Not Allowed",
            "See docs/dashboard.md: GET policy, health, subject, controls, metrics; POST subject, reset, overrides; DELETE overrides; PUT lists.",
        ),
        _ => error(
            iso,
            404,
            "Not Found",
            "Admin routes: GET policy, GET health, GET/POST subject, POST reset, GET controls, POST/DELETE overrides, PUT lists, GET metrics.",
        ),
    }
}

/// A change's answer, with where it lives and how soon every isolate applies it.
fn changed(iso: &Isolate, mut answer: Value) -> Value {
    let c = &iso.controls;
    let within = match c.source {
        controls::Source::Upstash => json!(c.refresh_ms.div_ceil(1000)),
        // KV spreads a write within about a minute.
        controls::Source::Kv => json!(c.refresh_ms.div_ceil(1000) + 60),
        controls::Source::Isolate => Value::Null,
    };
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("source".into(), json!(c.source.as_str()));
        fields.insert("every_isolate_within_s".into(), within);
    }
    answer
}
