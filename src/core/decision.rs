//! A decision rendered for HTTP: the `RateLimit-Policy` and `RateLimit` fields of the IETF
//! draft "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers-12, or -10
//! when the policy asks; docs/request-path.md says what each field means), the
//! older `X-RateLimit-*` trio when the policy asks for it, `Retry-After`, and the 429 body as
//! RFC 9457 problem+json or a short HTML page.
//!
//! This is the only place that turns decisions into header text or bodies.

use serde::Serialize;
use std::fmt::Write as _;

use super::algorithm::{Decision, Outcome};
use super::policy::{HeaderStyle, IetfDraft, Tier};

/// Where the problem types are explained (the Worker serves its docs there).
pub const PROBLEM_DOCS: &str = "/__limiter/docs.html";

/// Response field naming the backend that decided ([`Backend::as_str`]).
pub const BACKEND_HEADER: &str = "X-Limiter-Backend";

/// Which backend made a decision, as the `X-Limiter-Backend` response field reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Upstash decided: the fleet-wide answer.
    Upstash,
    /// The isolate's memory decided, because no Upstash is configured.
    Memory,
    /// The isolate's memory decided, because Upstash failed (policy `on_failure: memory`).
    Fallback,
    /// The deny cache decided: Upstash said earlier that this subject is denied until later.
    DenyCache,
    /// The subject's lease decided: units Upstash granted it ahead, held in this isolate.
    Lease,
    /// Nobody decided: Upstash failed and the policy says `on_failure: open`.
    FailOpen,
    /// Nobody decided: Upstash failed and the policy says `on_failure: closed`.
    FailClosed,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Upstash => "upstash",
            Backend::Memory => "memory",
            Backend::Fallback => "memory-fallback",
            Backend::DenyCache => "deny-cache",
            Backend::Lease => "lease",
            Backend::FailOpen => "fail-open",
            Backend::FailClosed => "fail-closed",
        }
    }
}

/// The fields an admitted request's answer carries: the rate-limit fields and the backend.
pub fn admitted_fields(
    tier: &Tier,
    decision: &Decision,
    style: HeaderStyle,
    backend: Backend,
) -> Vec<(&'static str, String)> {
    let mut fields = rate_limit_headers(tier, decision, style);
    fields.push((BACKEND_HEADER, backend.as_str().to_string()));
    fields
}

/// Marks an answer the origin gave to a request that its limits would have refused, had
/// they not been in shadow (policy `shadow`).
pub const SHADOW_HEADER: &str = "X-Limiter-Shadow";

/// The fields of a request passed in shadow although its limits would refuse it: the
/// decision's rate-limit fields as they are (nothing left, when the limits reset), and
/// `X-Limiter-Shadow: denied`.
pub fn shadow_fields(
    tier: &Tier,
    decision: &Decision,
    style: HeaderStyle,
    backend: Backend,
) -> Vec<(&'static str, String)> {
    let mut fields = admitted_fields(tier, decision, style, backend);
    fields.push((SHADOW_HEADER, "denied".to_string()));
    fields
}

/// Whole seconds, rounded up: a client that waits this long is never early.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The rate-limit header fields for a decision on `tier`'s limits. Empty for an unlimited
/// decision (exempt routes carry no rate-limit fields).
pub fn rate_limit_headers(tier: &Tier, decision: &Decision, style: HeaderStyle) -> Vec<(&'static str, String)> {
    let statuses = decision.limits();
    let mut out = Vec::with_capacity(4);
    if statuses.is_empty() || statuses.len() != tier.limits.len() {
        return out;
    }
    if let Some(draft) = style.ietf {
        // Each field written into one string, with no string per item.
        let mut policy = String::with_capacity(32 * tier.limits.len());
        for l in &tier.limits {
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            let window = ceil_secs(l.algorithm.window_ms()).max(1);
            let _ = write!(policy, "\"{}\";q={};w={window}", l.name, l.algorithm.capacity());
        }
        out.push(("RateLimit-Policy", policy));
        // The binding limit first, so a client reading only the first item reads the right one.
        let order = std::iter::once(decision.binding).chain((0..statuses.len()).filter(|i| *i != decision.binding));
        let mut current = String::with_capacity(32 * statuses.len());
        for i in order {
            let (limit, status) = (&tier.limits[i], &statuses[i]);
            if !current.is_empty() {
                current.push_str(", ");
            }
            // When the quota can next grow: within it, no more than what is available.
            let window = ceil_secs(limit.algorithm.grows_in_ms(status));
            let (name, remaining) = (&limit.name, status.remaining);
            let _ = match draft {
                IetfDraft::Twelve if decision.cost == 1 => write!(current, "\"{name}\";a={remaining};w={window}"),
                IetfDraft::Twelve => write!(current, "\"{name}\";a={remaining};w={window};c={}", decision.cost),
                IetfDraft::Ten => write!(current, "\"{name}\";r={remaining};t={window}"),
            };
        }
        out.push(("RateLimit", current));
    }
    if style.legacy {
        let b = decision.binding_status();
        out.push(("X-RateLimit-Limit", tier.limits[decision.binding].algorithm.capacity().to_string()));
        out.push(("X-RateLimit-Remaining", b.remaining.to_string()));
        out.push(("X-RateLimit-Reset", ceil_secs(b.reset_ms).to_string()));
    }
    out
}

/// A rendered refusal: status, content type, extra headers and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Refusal {
    /// Names the backend whose decision this refusal tells.
    pub fn decided_by(mut self, backend: Backend) -> Refusal {
        self.headers.push((BACKEND_HEADER, backend.as_str().to_string()));
        self
    }

    /// Adds the rate-limit fields of a decision that charged this refusal (a failed
    /// credential within its limits: 401, with what is left of them), and its backend.
    pub fn charged(mut self, tier: &Tier, decision: &Decision, style: HeaderStyle, backend: Backend) -> Refusal {
        self.headers.extend(admitted_fields(tier, decision, style, backend));
        self
    }
}

/// The 429 of a store that is failing under `on_failure: closed`: retry once the breaker
/// may have closed again.
pub fn store_unavailable(cooldown_ms: u64, backend: Backend) -> Refusal {
    let detail = "The rate limiter cannot reach its store and is configured to refuse requests until it can.";
    let mut r = problem(429, "Rate limiter store unavailable", detail, "store-unavailable");
    r.headers.push(("Retry-After", ceil_secs(cooldown_ms).max(1).to_string()));
    r.decided_by(backend)
}

/// The 429 for a denied decision. `jitter_ms` (a few hundred ms at most, random at the edge)
/// spreads out clients that were denied together; it only ever lengthens the wait. `last`
/// keeps the body last made: under a flood one subject is refused again and again with the
/// same figures, and its body is then made once.
pub fn too_many_requests(
    tier: &Tier,
    decision: &Decision,
    style: HeaderStyle,
    html: bool,
    jitter_ms: u64,
    last: &mut LastDenied,
) -> Refusal {
    let mut headers = rate_limit_headers(tier, decision, style);
    let limit = tier.limits.get(decision.binding);
    let retry = match decision.outcome {
        Outcome::Never => None,
        _ => {
            // Saturating: a decision decoded from a store reply may carry any number. Never
            // more than the binding limit's own window: a longer wait can only come from a
            // state written ahead of this clock, and a client told to wait a window and then
            // refused again for the rest is better off than one told to wait for years.
            let window = limit.map_or(u64::MAX, |l| ceil_secs(l.algorithm.window_ms()).max(1));
            let secs = ceil_secs(decision.retry_after_ms().saturating_add(jitter_ms)).clamp(1, window);
            headers.push(("Retry-After", secs.to_string()));
            Some(secs)
        }
    };
    let made: DeniedBody<&str> = DeniedBody {
        tier: tier.name.as_str(),
        limit: limit.map_or("", |l| l.name.as_str()),
        capacity: limit.map_or(0, |l| l.algorithm.capacity()),
        cost: decision.cost,
        remaining: decision.remaining(),
        retry,
        html,
    };
    let body = match &last.0 {
        Some((was, body)) if was.is(&made) => body.clone(),
        _ => {
            let body = made.text();
            last.0 = Some((made.owned(), body.clone()));
            body
        }
    };
    let content_type = if html { "text/html; charset=utf-8" } else { "application/problem+json" };
    Refusal { status: 429, content_type, headers, body }
}

/// The 429 body last made, and what it was made from ([`too_many_requests`]).
#[derive(Default)]
pub struct LastDenied(Option<(DeniedBody<String>, String)>);

/// What a 429's body says: everything it is made from.
pub struct DeniedBody<S> {
    tier: S,
    limit: S,
    capacity: u64,
    cost: u64,
    remaining: u64,
    /// The seconds to wait, or `None` when the request can never pass.
    retry: Option<u64>,
    html: bool,
}

impl DeniedBody<String> {
    fn is(&self, other: &DeniedBody<&str>) -> bool {
        let DeniedBody { tier, limit, capacity, cost, remaining, retry, html } = other;
        (self.tier == *tier && self.limit == *limit && self.capacity == *capacity && self.cost == *cost)
            && (self.remaining == *remaining && self.retry == *retry && self.html == *html)
    }
}

impl DeniedBody<&str> {
    fn owned(&self) -> DeniedBody<String> {
        let DeniedBody { tier, limit, capacity, cost, remaining, retry, html } = *self;
        DeniedBody { tier: tier.to_string(), limit: limit.to_string(), capacity, cost, remaining, retry, html }
    }

    fn text(&self) -> String {
        let DeniedBody { tier, limit, capacity, cost, remaining, retry, html } = *self;
        let detail = match retry {
            None => format!(
                "This request costs {cost} units, but limit \"{limit}\" of tier \"{tier}\" holds at most {capacity}: it can never pass, however long you wait."
            ),
            Some(secs) => format!("Limit \"{limit}\" of tier \"{tier}\" is used up. Retry in {secs} s."),
        };
        let kind = if retry.is_some() { "rate-limited" } else { "cost-exceeds-capacity" };
        if html {
            let wait = retry.map_or("This request can never pass as it is.".to_string(), |s| {
                format!("Please wait {s} seconds and try again.")
            });
            return format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>429 Too Many Requests</title></head>\
                 <body><h1>Too many requests</h1><p>{}</p><p>{}</p><p><a href=\"{PROBLEM_DOCS}#{kind}\">How rate limits work here</a></p></body></html>",
                escape_html(&detail),
                escape_html(&wait)
            );
        }
        json_text(&Denied {
            cost,
            detail: &detail,
            limit,
            remaining,
            retry_after: retry,
            status: 429,
            tier,
            title: if retry.is_some() { "Too Many Requests" } else { "Request cost exceeds the limit" },
            kind: &format!("{PROBLEM_DOCS}#{kind}"),
        })
    }
}

/// The body of a 429 (RFC 9457 problem+json with the limit's figures), its members in
/// alphabetical order; serialised from the struct, with no map built first.
#[derive(Serialize)]
struct Denied<'a> {
    cost: u64,
    detail: &'a str,
    limit: &'a str,
    remaining: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    status: u16,
    tier: &'a str,
    title: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// Any other problem+json body.
#[derive(Serialize)]
struct Problem<'a> {
    detail: &'a str,
    status: u16,
    title: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

fn json_text(body: &impl Serialize) -> String {
    // Serialising these structs cannot fail (no maps with non-string keys, no floats).
    serde_json::to_string(body).unwrap_or_default()
}

/// A problem+json answer for anything that is not a rate-limit denial (401, 500, 502...).
/// A 401 that asks for a bearer credential (`WWW-Authenticate: Bearer`).
pub fn unauthorized(detail: &str, kind: &str) -> Refusal {
    let mut r = problem(401, "Unauthorized", detail, kind);
    r.headers.push(("WWW-Authenticate", "Bearer".to_string()));
    r
}

pub fn problem(status: u16, title: &str, detail: &str, kind: &str) -> Refusal {
    let body = Problem { detail, status, title, kind: &format!("{PROBLEM_DOCS}#{kind}") };
    Refusal { status, content_type: "application/problem+json", headers: Vec::new(), body: json_text(&body) }
}

/// True when the `Accept` field ranks HTML above JSON: a browser gets a page, an API client
/// (or `*/*`) gets problem+json.
pub fn prefers_html(accept: &str) -> bool {
    let (mut html, mut json) = (0u32, 0u32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts.filter_map(|p| p.trim().strip_prefix("q=")).next().map_or(1000, parse_qvalue);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" | "application/problem+json" | "application/*" => json = json.max(q),
            _ => {}
        }
    }
    html > 0 && html > json
}

/// "0.8" -> 800; anything malformed counts as 0.
fn parse_qvalue(q: &str) -> u32 {
    let q = q.trim();
    let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let frac_value = format!("{frac:0<3}").parse::<u32>().unwrap_or(0);
    match whole {
        "1" => 1000,
        "0" => frac_value,
        _ => 0,
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::{check, State};
    use crate::core::policy::Policy;

    fn tier() -> Tier {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {
                "burst": {"token_bucket": {"capacity": 2, "refill": "0.5/s"}},
                "daily": {"fixed_window": "1000/day"}}}}}"#,
        )
        .unwrap();
        p.tiers[0].clone()
    }

    fn limits(t: &Tier) -> Vec<crate::core::algorithm::Algorithm> {
        t.limits.iter().map(|l| l.algorithm).collect()
    }

    const BOTH: HeaderStyle = HeaderStyle { ietf: Some(IetfDraft::Twelve), legacy: true };

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn allowed_requests_carry_the_draft_fields() {
        let t = tier();
        let mut s = [State::Empty; 2];
        let now = 86_400_000 * 100 + 3_600_000;
        let d = check(&limits(&t), &mut s, now, 1);
        let h = rate_limit_headers(&t, &d, BOTH);
        // Limits are sorted by name in the tier: burst, daily.
        assert_eq!(header(&h, "RateLimit-Policy"), Some("\"burst\";q=2;w=4, \"daily\";q=1000;w=86400"));
        assert_eq!(header(&h, "RateLimit"), Some("\"burst\";a=1;w=2, \"daily\";a=999;w=82800"));
        assert_eq!(header(&h, "X-RateLimit-Limit"), Some("2"));
        assert_eq!(header(&h, "X-RateLimit-Remaining"), Some("1"));
        assert_eq!(header(&h, "X-RateLimit-Reset"), Some("2"));
        let only_ietf = rate_limit_headers(&t, &d, HeaderStyle { ietf: Some(IetfDraft::Twelve), legacy: false });
        assert!(header(&only_ietf, "X-RateLimit-Limit").is_none());
        assert!(rate_limit_headers(&t, &d, HeaderStyle { ietf: None, legacy: false }).is_empty());
        let ten = rate_limit_headers(&t, &d, HeaderStyle { ietf: Some(IetfDraft::Ten), legacy: false });
        assert_eq!(header(&ten, "RateLimit"), Some("\"burst\";r=1;t=2, \"daily\";r=999;t=82800"));
        assert_eq!(header(&ten, "RateLimit-Policy"), header(&h, "RateLimit-Policy"), "the same in both drafts");
    }

    /// The effective window (`w`, and -10's `t`): the seconds within which the caller can use
    /// no more than what is available, that is until the quota can next grow.
    #[test]
    fn the_window_says_when_the_quota_next_grows() {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {
                "burst": {"token_bucket": {"capacity": 10, "refill": "1/s"}},
                "daily": {"fixed_window": "1000/day"},
                "hourly": {"sliding_window": "3/h"}}}}}"#,
        )
        .unwrap();
        let t = p.tiers[0].clone();
        let mut s = [State::Empty; 3];
        let now = 86_400_000 * 100;
        let fresh = check(&limits(&t), &mut s, now, 0);
        let h = rate_limit_headers(&t, &fresh, BOTH);
        // A full bucket cannot grow: 0. A fixed window always ends. A sliding window's
        // unused quota cannot grow either.
        assert_eq!(
            header(&h, "RateLimit"),
            Some("\"hourly\";a=3;w=0;c=0, \"burst\";a=10;w=0;c=0, \"daily\";a=1000;w=86400;c=0")
        );
        let d = check(&limits(&t), &mut s, now, 3);
        // Three units out of the bucket: the first is back in 1 s, not the 3 s to full.
        assert_eq!(
            header(&rate_limit_headers(&t, &d, BOTH), "RateLimit"),
            Some("\"hourly\";a=0;w=3960;c=3, \"burst\";a=7;w=1;c=3, \"daily\";a=997;w=86400;c=3")
        );
        let denied = check(&limits(&t), &mut s, now + 400, 1);
        assert!(!denied.allowed());
        let h = rate_limit_headers(&t, &denied, BOTH);
        assert_eq!(header(&h, "RateLimit"), Some("\"hourly\";a=0;w=3960, \"burst\";a=7;w=1, \"daily\";a=997;w=86400"));
    }

    #[test]
    fn a_denial_is_problem_json_with_retry_after_rounded_up() {
        let t = tier();
        let mut s = [State::Empty; 2];
        let now = 1_000_000;
        check(&limits(&t), &mut s, now, 2);
        let d = check(&limits(&t), &mut s, now + 500, 1);
        assert_eq!(d.retry_after_ms(), 1_500);
        let r = too_many_requests(&t, &d, BOTH, false, 0, &mut LastDenied::default());
        assert_eq!(r.status, 429);
        assert_eq!(r.content_type, "application/problem+json");
        assert_eq!(header(&r.headers, "Retry-After"), Some("2"));
        // The bucket's next unit is back in 1.5 s, the one the denied request waits for.
        assert_eq!(header(&r.headers, "RateLimit"), Some("\"burst\";a=0;w=2, \"daily\";a=998;w=85400"));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], 429);
        assert_eq!(body["retry_after"], 2);
        assert_eq!(body["limit"], "burst");
        assert_eq!(body["type"], "/__limiter/docs.html#rate-limited");
        // Jitter only lengthens the wait.
        let jittered = too_many_requests(&t, &d, BOTH, false, 600, &mut LastDenied::default());
        assert_eq!(header(&jittered.headers, "Retry-After"), Some("3"));
    }

    /// Found by the `headers` fuzz target: a retry time near `u64::MAX` (from a hostile store
    /// reply) plus jitter overflowed.
    #[test]
    fn a_huge_retry_time_does_not_overflow() {
        use crate::core::algorithm::{LimitStatus, Outcome};
        let t = tier();
        let status =
            LimitStatus { outcome: Outcome::Denied, remaining: 0, reset_ms: u64::MAX, retry_after_ms: u64::MAX };
        let d = Decision::from_parts(Outcome::Denied, 0, 1, &[status, status]).unwrap();
        let r = too_many_requests(&t, &d, BOTH, false, 250, &mut LastDenied::default());
        // No overflow, and no wait beyond the binding limit's own window.
        let window = ceil_secs(t.limits[0].algorithm.window_ms());
        assert_eq!(header(&r.headers, "Retry-After"), Some(window.to_string().as_str()));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["retry_after"], window);
    }

    #[test]
    fn a_cost_that_can_never_pass_says_so_without_a_retry_time() {
        let t = tier();
        let mut s = [State::Empty; 2];
        let d = check(&limits(&t), &mut s, 5, 3);
        let r = too_many_requests(&t, &d, BOTH, false, 0, &mut LastDenied::default());
        assert!(header(&r.headers, "Retry-After").is_none());
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(body["detail"].as_str().unwrap().contains("can never pass"));
        assert!(body.get("retry_after").is_none());
    }

    /// The body kept for a flood is the body made afresh, whatever changed in between: the
    /// page or the JSON, the wait, the tier, a request that can never pass.
    #[test]
    fn a_kept_body_is_the_body_made_afresh() {
        let t = tier();
        let mut other = tier();
        other.name = "other".into();
        let mut s = [State::Empty; 2];
        check(&limits(&t), &mut s, 0, 2);
        let denied = check(&limits(&t), &mut s, 0, 1);
        let never = check(&limits(&t), &mut [State::Empty; 2], 0, 5000);
        assert!(!denied.allowed() && !never.allowed());
        let mut last = LastDenied::default();
        let mut bodies = std::collections::HashSet::new();
        for (t, d, html, jitter) in [
            (&t, &denied, false, 0),
            (&t, &denied, false, 0),
            (&t, &denied, true, 0),
            (&t, &denied, false, 3000),
            (&other, &denied, false, 3000),
            (&t, &never, false, 0),
            (&t, &denied, false, 0),
        ] {
            let kept = too_many_requests(t, d, BOTH, html, jitter, &mut last);
            let fresh = too_many_requests(t, d, BOTH, html, jitter, &mut LastDenied::default());
            assert_eq!((&kept.body, kept.content_type), (&fresh.body, fresh.content_type));
            bodies.insert(kept.body);
        }
        assert_eq!(bodies.len(), 5, "each change made a body of its own");
    }

    #[test]
    fn browsers_get_a_page() {
        let t = tier();
        let mut s = [State::Empty; 2];
        check(&limits(&t), &mut s, 0, 2);
        let d = check(&limits(&t), &mut s, 0, 1);
        let r = too_many_requests(&t, &d, BOTH, true, 0, &mut LastDenied::default());
        assert_eq!(r.content_type, "text/html; charset=utf-8");
        assert!(r.body.contains("wait 2 seconds"), "{}", r.body);
        assert!(prefers_html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
        assert!(!prefers_html("*/*"));
        assert!(!prefers_html("application/json, text/html;q=0.5"));
        assert!(!prefers_html("text/html;q=0"));
        assert!(prefers_html("text/html;q=0.9, application/json;q=0.8"));
        assert!(!prefers_html(""));
        assert!(!prefers_html("text/html;q=banana"));
    }
}
