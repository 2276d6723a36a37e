//! Credentials that fail cost the caller's address: an unknown API key, a bad JWT and a
//! wrong admin token each take a unit of `identity.auth_failures`, through the same store as
//! every limit. Within those limits the answer is 401; past them 429, and the address is
//! locked out in this isolate until then, so a right guess looks like a wrong one.

use serde_json::json;
use worker::Request;

use super::log;

use super::fields::Fields;
use super::isolate::Isolate;
use super::respond::jitter_ms;
use crate::core::admin::authorized;
use crate::core::decision::{problem, too_many_requests, unauthorized, Refusal};
use crate::core::identity::failure_subject;
use crate::core::policy::Policy;
use crate::core::subject::Subject;
use crate::store::CheckRequest;

/// One of the limiter's own answers, as the runtime's response.
type Answer = web_sys::Response;

/// Before a credential is judged: an address that has used up its failed-credential limits
/// gets 429 whatever it presents. Per isolate (each learns from its first failure there).
pub fn locked_out(iso: &Isolate, policy: &Policy, address: &Subject, now: u64, html: bool) -> Option<Answer> {
    let tier = &policy.identity.auth_failures;
    let digest = address.digest();
    let decision = iso.lockouts.lookup(&CheckRequest::new(tier, &digest, now, 1).subject_key(), now, 1)?;
    iso.count_denied();
    Some(iso.answer(too_many_requests(
        tier,
        &decision,
        policy.headers,
        html,
        jitter_ms(),
        &mut iso.last_denied.borrow_mut(),
    )))
}

/// A credential of ours failed: charge the address, then answer `unauthorized` (401, with
/// what is left of the failure limits), or 429 once they are used up.
pub async fn failed_credential(
    iso: &Isolate,
    policy: &Policy,
    address: &Subject,
    now: u64,
    html: bool,
    unauthorized: Refusal,
) -> Answer {
    let tier = &policy.identity.auth_failures;
    let digest = address.digest();
    let request = CheckRequest::new(tier, &digest, now, 1);
    let verdict = iso.check(&request).await;
    match verdict.decision {
        Ok(d) if d.allowed() => iso.answer(unauthorized.charged(tier, &d, policy.headers, verdict.backend)),
        Ok(d) => {
            iso.lockouts.remember(&request.subject_key(), now, &d);
            iso.count_denied();
            iso.answer(
                too_many_requests(tier, &d, policy.headers, html, jitter_ms(), &mut iso.last_denied.borrow_mut())
                    .decided_by(verdict.backend),
            )
        }
        // The store is failing and the policy says closed: the 401 stands, unconsumed.
        Err(_) => iso.answer(unauthorized.decided_by(verdict.backend)),
    }
}

/// Which bearer token a page takes.
#[derive(Clone, Copy)]
pub enum Token {
    /// `ADMIN_TOKEN`: the admin API, and `status.json` in front of a real origin.
    Admin,
    /// `SERVICE_TOKEN`: the decision API for apps.
    Service,
}

/// `None` when the request carries the admin token; otherwise the answer to give (see
/// [`bearer`]).
pub async fn admin_token(req: &Request, fields: &Fields, iso: &Isolate, what: &str, now: u64) -> Option<Answer> {
    bearer(req, fields, iso, Token::Admin, what, now).await
}

/// `None` when the request carries the `which` token; otherwise the answer to give: 404 when
/// its API is off, 401 for a missing or wrong token (a wrong one charged to the caller's
/// address), 429 once the address has used up its failed-credential limits.
pub async fn bearer(
    req: &Request,
    fields: &Fields,
    iso: &Isolate,
    which: Token,
    what: &str,
    now: u64,
) -> Option<Answer> {
    let (token, name, kind) = match which {
        Token::Admin => (&iso.admin_token, "ADMIN_TOKEN", "admin"),
        Token::Service => (&iso.service_token, "SERVICE_TOKEN", "service"),
    };
    let token = match token {
        Ok(t) => t,
        Err(why) => return Some(iso.answer(problem(404, "Not Found", why, kind))),
    };
    let judged = iso.policy().map(|p| (p, failure_subject(&p.identity.client_ip, &fields.facts(now))));
    if let Some((p, address)) = &judged {
        if let Some(r) = locked_out(iso, p, address, now, fields.html()) {
            return Some(r);
        }
    }
    let header = req.headers().get("authorization").ok().flatten();
    if authorized(header.as_deref(), token) {
        return None;
    }
    let r = unauthorized(&format!("{what} needs `Authorization: Bearer <{name}>`."), kind);
    // No token at all is a question, not a guess: only a wrong one is charged.
    let Some(_) = header else { return Some(iso.answer(r)) };
    log::info("credential_refused", &format!("{what}: refused (wrong {kind} token)"), json!({ "token": kind }));
    Some(match judged {
        Some((p, address)) => failed_credential(iso, p, &address, now, fields.html(), r).await,
        None => iso.answer(r),
    })
}
