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
//!
//! A raw API key is accepted only in a body: never in a URL, where logs keep it.

use serde_json::{json, Value};
use worker::{console_log, Method, Request, Response, Result};

use super::dashboard::{json_response, status};
use super::{failed_credential, locked_out, refusal, Fields, Isolate};
use crate::core::admin::{authorized, body_fields, subject_from_fields, subject_state, FieldSource};
use crate::core::decision::{problem, unauthorized};
use crate::core::describe::describe;
use crate::core::identity::{failure_subject, subject_hash};

fn error(status: u16, title: &str, detail: &str) -> Result<Response> {
    refusal(problem(status, title, detail, "admin"), None)
}

/// `None` when the request carries the admin token; otherwise the answer to give: 404 when
/// the API is off, 401 for a missing or wrong token (charged to the caller's address), 429
/// once the address has used up its failed-credential limits.
pub(super) async fn authorize(req: &Request, iso: &Isolate, what: &str, now: u64) -> Option<Result<Response>> {
    let token = match &iso.admin_token {
        Ok(t) => t,
        Err(why) => return Some(error(404, "Not Found", why)),
    };
    let policy = iso.policy.as_ref().ok();
    let fields = policy.map(|p| Fields::read(req.headers(), p));
    let address = match (policy, &fields) {
        (Some(p), Some(f)) => Some(failure_subject(&p.identity.client_ip, &f.facts(now))),
        _ => None,
    };
    if let (Some(p), Some(a), Some(f)) = (policy, &address, &fields) {
        if let Some(r) = locked_out(iso, p, a, now, f.html()) {
            return Some(r);
        }
    }
    let header = req.headers().get("authorization").ok().flatten();
    if authorized(header.as_deref(), token) {
        return None;
    }
    let r = unauthorized(&format!("{what} needs `Authorization: Bearer <ADMIN_TOKEN>`."), "admin");
    // No token at all is a question, not a guess: only a wrong one is charged.
    let Some(_) = header else { return Some(refusal(r, None)) };
    console_log!("edge-limiter: {what}: refused (wrong admin token)");
    Some(match (policy, address, fields) {
        (Some(p), Some(a), Some(f)) => failed_credential(iso, p, &a, now, f.html(), r).await,
        _ => refusal(r, None),
    })
}

pub(super) async fn handle(mut req: Request, iso: &Isolate, route: &str, now: u64) -> Result<Response> {
    let method = req.method();
    if let Some(refused) = authorize(&req, iso, "The admin API", now).await {
        return refused;
    }
    let policy = match &iso.policy {
        Ok(p) => p,
        Err(e) => return error(500, "Rate limiter misconfigured", &format!("The policy is invalid: {e}")),
    };
    match (method.clone(), route) {
        (Method::Get, "policy") => {
            console_log!("edge-limiter: admin read the policy");
            let written: Value = serde_json::from_str(&iso.policy_text).unwrap_or(Value::Null);
            json_response(200, &json!({ "policy": written, "described": describe(policy) }))
        }
        (Method::Get, "health") => {
            console_log!("edge-limiter: admin read the store health");
            json_response(200, &status(iso, now, true))
        }
        (Method::Get | Method::Post, "subject") | (Method::Post, "reset") => {
            let query: Vec<(String, String)> =
                req.url()?.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            let body = if method == Method::Post { req.text().await.unwrap_or_default() } else { String::new() };
            let (pairs, source) = if body.trim().is_empty() {
                (query, FieldSource::Query)
            } else {
                match body_fields(&body) {
                    Ok(p) => (p, FieldSource::Body),
                    Err(e) => return error(400, "Bad Request", &e),
                }
            };
            let subject = match subject_from_fields(policy, &pairs, source) {
                Ok(s) => s,
                Err(e) => return error(400, "Bad Request", &e),
            };
            let hash = subject_hash(&subject.subject);
            let Some((tier, request)) = iso.check_request(policy, subject.tier, &hash, now, 0) else {
                return error(400, "Bad Request", "No such tier.");
            };
            if route == "reset" {
                console_log!("edge-limiter: admin reset tier={} subject={hash}", tier.name);
                return match iso.store.reset(&request).await {
                    Ok(()) => json_response(200, &json!({ "reset": true, "tier": tier.name, "subject_hash": hash })),
                    Err(e) => error(
                        503,
                        "Store unavailable",
                        &format!("The reset did not reach the store ({}): {e}", e.class()),
                    ),
                };
            }
            console_log!("edge-limiter: admin inspected tier={} subject={hash}", tier.name);
            let (decision, backend) = iso.store.inspect(&request).await;
            json_response(200, &subject_state(tier, &hash, &decision, backend.as_str()))
        }
        (_, "policy" | "health" | "subject" | "reset") => {
            error(405, "Method Not Allowed", "See docs/dashboard.md: GET policy, health, subject; POST subject, reset.")
        }
        _ => error(404, "Not Found", "Admin routes: GET policy, GET health, GET/POST subject, POST reset."),
    }
}
