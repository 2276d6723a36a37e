//! The request path of everything that is not the dashboard: identify the caller, apply the
//! route rules, check the tier's limits, then forward to the origin or refuse.
//!
//! ```text
//! handle ─ policy broken? ──────────────────────────────► 500 invalid-policy
//!        ─ on the block list (policy's or runtime)? ────► 403 blocked
//!        ─ on the allow list? ──────────────────────────► forward, unlimited
//!        ─ preflight not charged? ─ preflights' limits ─► forward, or 429
//!        ─ protect ─ locked out? ───────────────────────► 429
//!                  ─ identify ─ bad credential ─────────► guard: 401, or 429
//!                             ─ an override? ───────────► its tier, or its own limits
//!                  ─ plan ─ exempt ─────────────────────► forward
//!                         ─ check the tier (+ wide net) ► forward with its fields, or 429
//!                           (due within max_delay? ─ reserve, hold, forward)
//! ```

use worker::Result;

use super::fields::Fields;
use super::guard::{failed_credential, locked_out};
use super::isolate::{Config, Isolate};
use super::proxy::{forward, Target};
use super::respond::{jitter_ms, with_cors, Reply};
use crate::core::algorithm::{Decision, Outcome};
use crate::core::controls::{Applies, Resolved};
use crate::core::cors::is_preflight;
use crate::core::decision::{
    admitted_fields, problem, shadow_fields, store_unavailable, too_many_requests, unauthorized, Backend,
};
use crate::core::fleet::Event;
use crate::core::identity::{client_address, failure_subject, identify, presents_credential, wide_subject, CallerKind};
use crate::core::lists::{Listed, Lists, Visitor};
use crate::core::policy::{Plan, Policy, Tier};
use crate::core::subject::Subject;
use crate::runtime;
use crate::store::CheckRequest;

/// The limiter's own answers get the policy's CORS fields (`respond::with_cors`); the
/// origin's answer to a preflight goes back as it is. `method` and `fields` were read from
/// `req` by the router, in one call; `now` is when the request came.
pub async fn handle(
    req: &web_sys::Request,
    method: &str,
    fields: &Fields,
    iso: &Isolate,
    target: &Target<'_>,
    now: u64,
) -> Result<Reply> {
    let origin = fields.origin.as_deref();
    let policy = match &iso.config {
        Config::Ready { policy, .. } => policy,
        Config::Broken(e) => {
            let detail = format!("The rate limiter's policy is invalid: {e}");
            let answer = iso.answer(problem(500, "Rate limiter misconfigured", &detail, "invalid-policy"));
            return with_cors(Reply::Own(answer), iso.cors(), origin);
        }
    };
    // The policy's lists and those set at runtime (`edge::controls`), and the overrides.
    let controls = iso.controls.current();
    if !controls.lists.is_empty() {
        match listed(req, &controls.lists, policy, fields, iso) {
            Listed::Blocked(_) => {
                // Counted, not logged: a blocked flood would flood the log. The entry that
                // matched is the operator's to know; the caller learns only the refusal.
                iso.count_blocked();
                iso.record(now, Event::Blocked, "-", "-", "-", None);
                let detail = "This client is blocked by the service's operator.";
                let answer = iso.answer(problem(403, "Forbidden", detail, "blocked"));
                return with_cors(Reply::Own(answer), iso.cors(), origin);
            }
            Listed::Allowed(_) => {
                iso.count_allow_listed();
                iso.record(now, Event::AllowListed, "-", "-", "-", None);
                let reply = forward(req, method, iso, target, fields, None, &[], origin).await?;
                return with_cors(reply, iso.cors(), origin);
            }
            Listed::Neither => {}
        }
    }
    // As sent: extension methods (PROPFIND, PURGE...) keep their names for the route rules.
    if is_preflight(method, origin, || fields.asks.clone()) && !policy.cors.charge_preflight {
        // The browser asks the app whether it may: the app's answer, not charged to the
        // caller's tier, but counted on the preflights' own limits so OPTIONS is no way
        // around them.
        let address = failure_subject(&policy.identity.client_ip, &fields.facts(now));
        let preflight =
            Check { cost: 1, html: false, shadow: policy.shadow, max_delay_ms: 0, route: "-", tally_allowed: true };
        if let Err(refused) = checked(iso, policy, &policy.preflights, &address, now, preflight).await {
            return with_cors(Reply::Own(refused), iso.cors(), origin);
        }
        return forward(req, method, iso, target, fields, None, &[], None).await;
    }
    let response = protect(req, iso, policy, &controls, target, fields, method, now).await?;
    with_cors(response, iso.cors(), origin)
}

/// The request's way through the limits: identify, plan, check, then forward or refuse.
#[allow(clippy::too_many_arguments)]
async fn protect(
    req: &web_sys::Request,
    iso: &Isolate,
    policy: &Policy,
    controls: &Resolved,
    target: &Target<'_>,
    fields: &Fields,
    method: &str,
    now: u64,
) -> Result<Reply> {
    let facts = fields.facts(now);
    let origin = fields.origin.as_deref();
    let address = failure_subject(&policy.identity.client_ip, &facts);
    if presents_credential(policy, &facts, iso.jwt_secret.is_some()) {
        if let Some(r) = locked_out(iso, policy, &address, now, fields.html()) {
            return Ok(Reply::Own(r));
        }
    }
    let mut caller = match identify(policy, &facts, iso.jwt_secret.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let r = unauthorized(&e.to_string(), "invalid-credential");
            return Ok(Reply::Own(failed_credential(iso, policy, &address, now, fields.html(), r).await));
        }
    };
    // An override set through the admin API: another tier (its route rules too), or limits
    // of the subject's own in place of its tier's.
    let mut own_limits = None;
    if controls.has_overrides() {
        match controls.lookup(iso.digest(&caller.subject).as_str(), now) {
            Some(Applies::Tier(id)) => caller.tier = *id,
            Some(Applies::Limits(t)) => own_limits = Some(t),
            None => {}
        }
    }
    // A WebSocket on a route that limits its messages is relayed, and counted, by the Worker.
    let rule = policy.rule(method, &target.path.matched, caller.tier);
    let messages = rule.and_then(|r| r.websocket_messages);
    let (tier, cost) = match Policy::plan_of(rule, caller.tier) {
        Plan::Exempt => return forward(req, method, iso, target, fields, messages, &[], origin).await,
        Plan::Check { tier: id, cost } => match (policy.tier(id), own_limits) {
            (Some(_), Some(own)) if id == caller.tier => (own, cost),
            (Some(tier), _) => (tier, cost),
            (None, _) => {
                let r = iso.answer(problem(500, "Rate limiter misconfigured", "No such tier.", "invalid-policy"));
                return Ok(Reply::Own(r));
            }
        },
    };
    // In shadow, a denial is reported and the request passes (`checked` says which).
    let shadow = policy.in_shadow(tier, rule);
    let how = Check {
        cost,
        html: fields.html(),
        shadow,
        max_delay_ms: rule.map_or(0, |r| r.max_delay_ms),
        route: rule.map_or("-", |r| r.path_prefix.as_str()),
        tally_allowed: true,
    };
    let (mut tier, mut decision, mut backend) = match checked(iso, policy, tier, &caller.subject, now, how).await {
        Ok((decision, backend)) => (tier, decision, backend),
        Err(refused) => return Ok(Reply::Own(refused)),
    };
    // The wider IPv6 net, after the caller's own limits admitted the request: a second
    // check only for anonymous IPv6 callers of a policy that casts it.
    let wide = policy.identity.client_ip.ipv6_wide.as_ref();
    if let (Some(net), CallerKind::Anonymous) = (wide, caller.kind) {
        if let Some(subject) = wide_subject(&policy.identity.client_ip, &facts) {
            let (d, b) =
                match checked(iso, policy, &net.tier, &subject, now, Check { tally_allowed: false, ..how }).await {
                    Ok(answer) => answer,
                    Err(refused) => return Ok(Reply::Own(refused)),
                };
            // The fields tell the tighter of the two: never more than the caller can get.
            if d.binding_status().remaining < decision.binding_status().remaining {
                (tier, decision, backend) = (&net.tier, d, b);
            }
        }
    }
    let added = if decision.allowed() {
        iso.count_allowed();
        admitted_fields(tier, &decision, policy.headers, backend)
    } else {
        shadow_fields(tier, &decision, policy.headers, backend)
    };
    forward(req, method, iso, target, fields, messages, &added, origin).await
}

/// Where the request stands with the policy's block and allow lists: its address as identity
/// reads it, its user agent, and `request.cf`'s country and ASN (read only when a list names
/// one).
fn listed(req: &web_sys::Request, lists: &Lists, policy: &Policy, fields: &Fields, iso: &Isolate) -> Listed {
    let facts = fields.facts(0);
    let (country, asn) = if lists.needs_geo() { runtime::geo(req, iso.test_geo) } else { (None, None) };
    let visitor = Visitor {
        address: client_address(&policy.identity.client_ip, &facts),
        country: country.as_deref(),
        asn,
        user_agent: fields.user_agent.as_deref(),
    };
    lists.judge(&visitor)
}

/// How a check is made: its cost, how a refusal is rendered, whether a denial only counts
/// (`shadow`), and how long a request whose units are due soon may be held instead.
/// `route` names the matching rule for the fleet view (its path prefix, or `-`); an admission
/// is tallied there only when `tally_allowed` (the caller's own check, not the wide net's
/// second one); a denial always is.
#[derive(Clone, Copy)]
struct Check<'a> {
    cost: u64,
    html: bool,
    shadow: bool,
    max_delay_ms: u64,
    route: &'a str,
    tally_allowed: bool,
}

/// Checks `how.cost` units of `tier`'s limits for `subject`: the decision and its backend
/// when the request is admitted, or denied in shadow (reported, not refused), or held until
/// its units are due (`max_delay`); else the answer to send (429, or 429 `store-unavailable`
/// when the store fails and the policy says closed).
async fn checked(
    iso: &Isolate,
    policy: &Policy,
    tier: &Tier,
    subject: &Subject,
    now: u64,
    how: Check<'_>,
) -> std::result::Result<(Decision, Backend), web_sys::Response> {
    let digest = iso.digest(subject);
    let request = CheckRequest::new(tier, &digest, now, how.cost);
    let verdict = iso.check(&request).await;
    let backend = verdict.backend;
    let tally = |event, backend: Backend| {
        iso.record(now, event, &tier.name, how.route, backend.as_str(), Some(digest.as_str()));
    };
    match verdict.decision {
        Ok(d) if d.allowed() => {
            if how.tally_allowed {
                tally(Event::Allowed, backend);
            }
            Ok((d, backend))
        }
        Ok(d) if how.shadow => {
            let limit = tier.limits.get(d.binding).map_or("?", |l| l.name.as_str());
            iso.shadow_denied(&tier.name, limit, digest.as_str());
            tally(Event::ShadowDenied, backend);
            Ok((d, backend))
        }
        Ok(d) => {
            if let Some((held, by)) = held(iso, &request, &d, how.max_delay_ms).await {
                tally(Event::Delayed, by);
                if how.tally_allowed {
                    tally(Event::Allowed, by);
                }
                return Ok((held, by));
            }
            iso.count_denied();
            iso.denied(&tier.name, tier.limits.get(d.binding).map_or("?", |l| l.name.as_str()), digest.as_str());
            tally(Event::Denied, backend);
            Err(iso.answer(
                too_many_requests(tier, &d, policy.headers, how.html, jitter_ms(), &mut iso.last_denied.borrow_mut())
                    .decided_by(backend),
            ))
        }
        Err(_) => {
            iso.count_denied();
            tally(Event::Denied, backend);
            Err(iso.answer(store_unavailable(policy.store.breaker_cooldown_ms, backend)))
        }
    }
}

/// A denied request whose units are due within `max_delay_ms`: its units reserved (taken
/// now, counted at the time they are due) and the request held until then, then passed.
/// `None` when it cannot be: not due soon enough, or the subject's holds at their cap. A
/// reservation that finds the units taken meanwhile (another held request, another isolate)
/// tries the next time they are due, within the delay, at most [`RESERVE_TRIES`] times.
async fn held(
    iso: &Isolate,
    request: &CheckRequest<'_>,
    d: &Decision,
    max_delay_ms: u64,
) -> Option<(Decision, Backend)> {
    if max_delay_ms == 0 || d.binding_status().outcome != Outcome::Denied || d.retry_after_ms() > max_delay_ms {
        return None;
    }
    let _place = iso.hold(request.subject_key())?;
    let mut wait = d.retry_after_ms();
    for _ in 0..RESERVE_TRIES {
        let verdict = iso.store.reserve(request, wait).await;
        match verdict.decision {
            Ok(reserved) if reserved.allowed() => {
                // Time moves on across the store call (not within CPU work): wait what is left.
                let left = (request.now + wait).saturating_sub(js_sys::Date::now() as u64);
                if left > 0 {
                    worker::Delay::from(std::time::Duration::from_millis(left)).await;
                }
                iso.count_delayed();
                return Some((reserved, verdict.backend));
            }
            // Denied at `now + wait`: its retry counts from then.
            Ok(later) if later.binding_status().outcome == Outcome::Denied => {
                wait = wait.saturating_add(later.retry_after_ms().max(1));
                if wait > max_delay_ms {
                    return None;
                }
            }
            _ => return None,
        }
    }
    None
}

/// How many reservations one held request may try.
const RESERVE_TRIES: usize = 3;
