//! The admin API, on only when the secret `ADMIN_TOKEN` is set: bearer auth compared in
//! constant time, JSON answers, no CORS headers (a browser on another origin cannot read
//! them). Every action is logged with the subject's digest, never the token or raw subject.
//!
//!   GET  admin/policy                      the active policy, as written and in plain words
//!   GET  admin/health                      store, breaker, counts, last failure
//!   GET  admin/subject?ip=|key=|sub=[&tier=]   remaining and reset per limit (consumes nothing)
//!   POST admin/reset?ip=|key=|sub=[&tier=]     the subject's buckets full again

use serde_json::{json, Value};
use worker::{console_log, Method, Request, Response, Result};

use super::dashboard::{json_response, status};
use super::{refusal, Isolate};
use crate::core::admin::{authorized, subject_from_query, subject_state};
use crate::core::decision::problem;
use crate::core::describe::describe;
use crate::core::identity::subject_hash;

fn error(status: u16, title: &str, detail: &str) -> Result<Response> {
    let mut r = problem(status, title, detail, "admin");
    if status == 401 {
        r.headers.push(("WWW-Authenticate", "Bearer".to_string()));
    }
    refusal(r, None)
}

pub(super) async fn handle(req: Request, iso: &Isolate, route: &str, now: u64) -> Result<Response> {
    let method = req.method();
    let Some(token) = &iso.admin_token else {
        return error(404, "Not Found", "The admin API is off: set the secret ADMIN_TOKEN to turn it on.");
    };
    let header = req.headers().get("authorization").ok().flatten();
    if !authorized(header.as_deref(), token) {
        console_log!("edge-limiter: admin {method} {route}: refused (no or wrong token)");
        return error(401, "Unauthorized", "The admin API needs `Authorization: Bearer <ADMIN_TOKEN>`.");
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
        (Method::Get, "subject") | (Method::Post, "reset") => {
            let pairs: Vec<(String, String)> = req.url()?.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            let subject = match subject_from_query(policy, &pairs) {
                Ok(s) => s,
                Err(e) => return error(400, "Bad Request", &e),
            };
            let hash = subject_hash(&subject.subject);
            let (tier, request) = iso.check_request(policy, subject.tier, &hash, now, 0);
            if route == "reset" {
                console_log!("edge-limiter: admin reset tier={} subject={hash}", tier.name);
                return match iso.store.reset(&request).await {
                    Ok(()) => json_response(200, &json!({ "reset": true, "tier": tier.name, "subject_hash": hash })),
                    Err(e) => error(503, "Store unavailable", &format!("The reset did not reach the store ({}): {e}", e.class())),
                };
            }
            console_log!("edge-limiter: admin inspected tier={} subject={hash}", tier.name);
            let (decision, backend) = iso.store.inspect(&request).await;
            json_response(200, &subject_state(tier, &hash, &decision, backend.as_str()))
        }
        (_, "policy" | "health" | "subject" | "reset") => error(405, "Method Not Allowed", "See README: GET policy, health, subject; POST reset."),
        _ => error(404, "Not Found", "Admin routes: GET policy, GET health, GET subject, POST reset."),
    }
}
