//! The decision API for apps, on only when the secret `SERVICE_TOKEN` (32 characters or more,
//! not the admin token) is set. The asks and answers are `core::service`'s; this does the I/O,
//! through the same store, leases and deny cache as the edge, so the app and the edge share
//! the buckets of a subject they both name. A wrong token costs the caller's address like any
//! failed credential. Reached over HTTP or through a service binding (the same handler).
//!
//!   POST v1/check   {subject | ip | key | key_digest | sub, tier | limits, cost?, peek?}
//!   POST v1/refund  {the same subject and tier, units, at?}     units back to the buckets
//!   POST v1/reset   {the same subject and tier}                 the buckets full again
//!
//! Every answer is 200 with the decision in the body (a denial is an answer, not an error);
//! 400 names the wrong field; a refund or reset that reaches no store is 503.

use worker::{Method, Request, Response, Result};

use super::fields::Fields;
use super::guard::{self, Token};
use super::isolate::{Config, Isolate};
use super::respond;
use crate::core::controls::Applies;
use crate::core::decision::problem;
use crate::core::service::{check_answer, read, refund_answer, Call};
use crate::store::CheckRequest;

fn error(iso: &Isolate, status: u16, title: &str, detail: &str) -> Result<Response> {
    Ok(iso.answer(problem(status, title, detail, "service")).into())
}

/// `route` is what follows `v1/` (`check`, `refund`, `reset`).
pub async fn handle(mut req: Request, fields: &Fields, iso: &Isolate, route: &str, now: u64) -> Result<Response> {
    let Some(call) = Call::from_route(route) else {
        return error(iso, 404, "Not Found", "The decision API has POST v1/check, v1/refund and v1/reset.");
    };
    if req.method() != Method::Post {
        return error(iso, 405, "Method Not Allowed", "The decision API takes POST with a JSON body.");
    }
    if let Some(refused) = guard::bearer(&req, fields, iso, Token::Service, "The decision API", now).await {
        return Ok(refused.into());
    }
    let policy = match &iso.config {
        Config::Ready { policy, .. } => policy,
        Config::Broken(e) => {
            return error(iso, 500, "Rate limiter misconfigured", &format!("The policy is invalid: {e}"))
        }
    };
    let body = req.text().await.unwrap_or_default();
    let mut ask = match read(policy, &body, call, now) {
        Ok(ask) => ask,
        Err(e) => return error(iso, 400, "Bad Request", &e),
    };
    let digest = ask.subject.digest();
    // The edge's decision: an override set through the admin API applies here too.
    if ask.tier_of_caller {
        match iso.controls.current().lookup(digest.as_str(), now) {
            Some(Applies::Tier(id)) => {
                if let Some(t) = policy.tier(*id) {
                    ask.tier = t.clone();
                }
            }
            Some(Applies::Limits(t)) => ask.tier = t.clone(),
            None => {}
        }
    }
    let request = CheckRequest::new(&ask.tier, &digest, now, ask.units);
    match call {
        Call::Check => {
            let (decision, backend) = if ask.units == 0 {
                iso.store.inspect(&request).await
            } else {
                let verdict = iso.check(&request).await;
                match verdict.decision {
                    Ok(d) => (d, verdict.backend),
                    Err(e) => {
                        iso.count_service(|c| c.denied += 1);
                        let detail = format!("The store failed and the policy says on_failure closed: {e}");
                        return error(iso, 503, "Store unavailable", &detail);
                    }
                }
            };
            iso.count_service(|c| {
                c.checks += 1;
                c.denied += u64::from(!decision.allowed() && !ask.shadow);
            });
            if !decision.allowed() && ask.shadow && ask.units > 0 {
                let limit = ask.tier.limits.get(decision.binding).map_or("?", |l| l.name.as_str());
                iso.shadow_denied(&ask.tier.name, limit, digest.as_str());
            }
            respond::json(200, &check_answer(&ask, &digest, &decision, backend, policy, now))
        }
        Call::Refund => match iso.store.refund(&request, ask.units, ask.at).await {
            (Ok(refund), backend) => {
                iso.count_service(|c| c.refunds += 1);
                respond::json(200, &refund_answer(&ask, &digest, refund.limits(), backend))
            }
            (Err(e), _) => error(iso, 503, "Store unavailable", &format!("The refund did not reach the store: {e}")),
        },
        Call::Reset => {
            let message = format!("decision API reset tier={} subject={digest}", ask.tier.name);
            let fields =
                serde_json::json!({ "action": "v1/reset", "tier": ask.tier.name, "subject_hash": digest.as_str() });
            super::log::info("admin_action", &message, fields);
            match iso.store.reset(&request).await {
                Ok(()) => {
                    let answer = serde_json::json!({
                        "reset": true, "tier": ask.tier.name, "subject_hash": digest.as_str()
                    });
                    respond::json(200, &answer)
                }
                Err(e) => error(iso, 503, "Store unavailable", &format!("The reset did not reach the store: {e}")),
            }
        }
    }
}
