//! The pure half of the decision API for apps (`POST {DASHBOARD_PATH}v1/check`, `v1/refund`,
//! `v1/reset`, behind `SERVICE_TOKEN`): an app behind the limiter asks for the decision the
//! edge would make, for a subject and limits it names. This reads the asks and renders the
//! answers; `edge::service` does the I/O.
//!
//! An ask names its subject one way: `ip`, `key`, `key_digest` or `sub` (named exactly as a
//! request with that credential is, so the app and the edge share its buckets), or
//! `subject`, a name of the app's own (a user id, a tenant), kept apart from every edge
//! subject. Its limits are a tier of the policy (`tier`; for an edge subject, its own tier by
//! default) or written inline (`limits`, as a tier's are).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::{limit_states, subject_from_fields, FieldSource};
use super::algorithm::{Decision, Millis, Outcome};
use super::decision::{ceil_secs, rate_limit_headers, Backend};
use super::policy::{read_tree, Policy, Tier, Tree};
use super::rate::MAX_EXACT;
use super::subject::{Subject, SubjectDigest};

/// Longest `subject` an app may give: a name, not a document.
pub const MAX_SUBJECT: usize = 256;

/// How far back a refund's `at` may reach: no limit the policy accepts counts units longer.
const MAX_REFUND_AGE_MS: Millis = 7 * 24 * 3_600_000;

/// What an ask asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Take `cost` units if every limit has them (`peek`: take none, only look).
    Check,
    /// Give back `units` taken at `at` by a check whose estimate was too high.
    Refund,
    /// Make the subject's buckets full again.
    Reset,
}

impl Call {
    /// The route after `v1/`.
    pub fn from_route(route: &str) -> Option<Call> {
        match route {
            "check" => Some(Call::Check),
            "refund" => Some(Call::Refund),
            "reset" => Some(Call::Reset),
            _ => None,
        }
    }
}

/// An ask, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// The policy's tier, or the inline limits as a tier of their own (`api:<digest>`).
    pub tier: Tier,
    pub subject: Subject,
    /// Check: the units to take (0 for a peek). Refund: the units to give back.
    pub units: u64,
    /// Refund: when the units were taken (the check's `at`).
    pub at: Millis,
    /// The tier is in shadow: a denial is reported, and the answer still says allowed.
    pub shadow: bool,
    /// The tier is the one a request with this credential would get (no `tier` or
    /// `limits` given): an override of the subject applies, as at the edge.
    pub tier_of_caller: bool,
}

/// The body as written. Every field is optional here; `read` says which are needed.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Body {
    subject: Option<String>,
    ip: Option<String>,
    key: Option<String>,
    key_digest: Option<String>,
    sub: Option<String>,
    tier: Option<String>,
    limits: Option<Value>,
    cost: Option<u64>,
    peek: Option<bool>,
    units: Option<u64>,
    at: Option<u64>,
}

/// Reads an ask from its JSON body, or says which field is wrong and why.
pub fn read(policy: &Policy, body: &str, call: Call, now: Millis) -> Result<Ask, String> {
    let tree = Tree::parse(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !matches!(tree, Tree::Object(_)) {
        return Err("the body must be a JSON object such as {\"subject\": \"user-42\", \"tier\": \"...\"}".into());
    }
    // Read as the policy is (one copy of the reader in the Worker), so that an error names
    // its field, in serde's words (`unknown field `colour``, `invalid type: string "5",
    // expected u64`).
    let b: Body = read_tree(&tree, "").map_err(|e| format!("{}: {}", e.path, e.message))?;
    let fields =
        [("cost", b.cost.is_some()), ("peek", b.peek.is_some()), ("units", b.units.is_some()), ("at", b.at.is_some())];
    let allowed: &[&str] = match call {
        Call::Check => &["cost", "peek"],
        Call::Refund => &["units", "at"],
        Call::Reset => &[],
    };
    if let Some((name, _)) = fields.iter().find(|(name, given)| *given && !allowed.contains(name)) {
        let what = match call {
            Call::Check => "v1/check takes cost and peek",
            Call::Refund => "v1/refund takes units and at",
            Call::Reset => "v1/reset takes only the subject and its tier or limits",
        };
        return Err(format!("{name}: not a field of this call ({what})"));
    }

    let (subject, caller_tier) = subject_of(policy, &b)?;
    let tier_of_caller = b.tier.is_none() && b.limits.is_none();
    let mut shadow = policy.shadow;
    let tier = match (&b.tier, &b.limits) {
        (Some(_), Some(_)) => return Err("tier, limits: give one, not both".into()),
        (None, Some(limits)) => Policy::inline_tier("api", limits, "limits").map_err(|e| e.to_string())?,
        (Some(name), None) => {
            let id = policy.tier_id(name).ok_or_else(|| format!("tier: no tier named {name:?} in the policy"))?;
            let tier = policy.tier(id).ok_or("tier: no such tier")?;
            shadow |= tier.shadow;
            tier.clone()
        }
        (None, None) => match caller_tier.and_then(|id| policy.tier(id)) {
            Some(tier) => {
                shadow |= tier.shadow;
                tier.clone()
            }
            None => return Err("tier: an app's own subject needs a tier of the policy, or limits of its own".into()),
        },
    };

    let units = match call {
        Call::Check => match (b.peek, b.cost) {
            (Some(true), Some(c)) if c > 0 => return Err("peek: a peek takes nothing; leave cost out".into()),
            (Some(true), _) => 0,
            (_, cost) => cost.unwrap_or(1),
        },
        Call::Refund => b.units.ok_or("units: missing; how many units to give back")?,
        Call::Reset => 0,
    };
    if units > MAX_EXACT {
        return Err(format!("{}: at most {MAX_EXACT}", if call == Call::Refund { "units" } else { "cost" }));
    }
    if call == Call::Refund && units == 0 {
        return Err("units: at least 1".into());
    }
    let at = match b.at {
        None => now,
        Some(at) if at > now => return Err(format!("at: {at} is later than now ({now} ms since the epoch)")),
        Some(at) if now - at > MAX_REFUND_AGE_MS => return Err("at: more than 7 days ago".into()),
        Some(at) => at,
    };
    Ok(Ask { tier, subject, units, at, shadow, tier_of_caller })
}

/// The subject the body names, and the tier a request with that credential would be in.
fn subject_of(policy: &Policy, b: &Body) -> Result<(Subject, Option<super::policy::TierId>), String> {
    let named = [("ip", &b.ip), ("key", &b.key), ("key_digest", &b.key_digest), ("sub", &b.sub)];
    let edge: Vec<(String, String)> =
        named.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone()))).collect();
    match (&b.subject, edge.len()) {
        (Some(name), 0) => {
            if name.is_empty() || name.len() > MAX_SUBJECT || name.chars().any(char::is_control) {
                return Err(format!("subject: 1 to {MAX_SUBJECT} bytes with no control characters"));
            }
            Ok((Subject::App(name.clone()), None))
        }
        (None, 1) => {
            let found = subject_from_fields(policy, &edge, FieldSource::Body)?;
            Ok((found.subject, Some(found.tier)))
        }
        _ => Err("give exactly one of subject (the app's own name for the caller), ip, key, key_digest or sub".into()),
    }
}

/// Whether a decision says yes, no for now, or never (the cost is above a limit's capacity).
fn outcome_name(d: &Decision) -> &'static str {
    match d.binding_status().outcome {
        _ if d.allowed() => "allowed",
        Outcome::Never => "over_capacity",
        _ => "denied",
    }
}

/// The answer to a check: the decision, per limit and for the binding one, with the fields
/// the edge would put on its response (for the app to pass on).
pub fn check_answer(
    ask: &Ask,
    digest: &SubjectDigest,
    d: &Decision,
    backend: Backend,
    policy: &Policy,
    now: Millis,
) -> Value {
    let binding = d.binding_status();
    let limits = limit_states(&ask.tier, d);
    let denied = !d.allowed();
    let mut headers = Map::new();
    for (name, value) in rate_limit_headers(&ask.tier, d, policy.headers) {
        headers.insert(name.to_string(), Value::String(value));
    }
    let retry_after = (denied && binding.outcome == Outcome::Denied).then(|| ceil_secs(binding.retry_after_ms).max(1));
    if let (Some(secs), false) = (retry_after, ask.shadow) {
        headers.insert("Retry-After".into(), Value::String(secs.to_string()));
    }
    let mut answer = json!({
        "allowed": d.allowed() || ask.shadow,
        "outcome": outcome_name(d),
        "tier": ask.tier.name,
        "subject_hash": digest.as_str(),
        "backend": backend.as_str(),
        "cost": ask.units,
        "limit": ask.tier.limits.get(d.binding).map_or(0, |l| l.algorithm.capacity()),
        "binding": ask.tier.limits.get(d.binding).map(|l| l.name.as_str()),
        "remaining": binding.remaining,
        "reset": ceil_secs(binding.reset_ms),
        "retry_after": retry_after,
        "at": now,
        "limits": limits,
        "headers": headers,
    });
    if denied && ask.shadow {
        answer["shadow"] = json!("denied");
    }
    answer
}

/// The answer to a refund: per limit, the whole units it took back.
pub fn refund_answer(ask: &Ask, digest: &SubjectDigest, returned: &[u64], backend: Backend) -> Value {
    let limits: Vec<Value> =
        (ask.tier.limits.iter().zip(returned)).map(|(l, units)| json!({ "name": l.name, "refunded": units })).collect();
    json!({
        "tier": ask.tier.name,
        "subject_hash": digest.as_str(),
        "backend": backend.as_str(),
        "asked": ask.units,
        "refunded": returned.iter().copied().min().unwrap_or(0),
        "limits": limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::{check, State};

    const NOW: Millis = 1_800_000_000_000;

    fn policy() -> Policy {
        Policy::parse(
            r#"{"tiers": {
                "anonymous": {"limits": {"burst": "10/s"}},
                "llm": {"limits": {"tokens": {"token_bucket": {"capacity": 1000, "refill": "1000/min"}}}},
                "quiet": {"limits": {"minute": "5/min"}, "shadow": true}},
               "identity": {"api_key": {"keys": {"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0": "llm"}}}}"#,
        )
        .unwrap()
    }

    fn ask(body: &str, call: Call) -> Result<Ask, String> {
        read(&policy(), body, call, NOW)
    }

    #[test]
    fn an_app_subject_has_its_own_namespace() {
        let a = ask(r#"{"subject": "user-42", "tier": "llm", "cost": 300}"#, Call::Check).unwrap();
        assert_eq!(a.subject, Subject::App("user-42".into()));
        assert_eq!((a.tier.name.as_str(), a.units, a.shadow), ("llm", 300, false));
        // The same text as an address is another subject: other buckets.
        let ip = ask(r#"{"ip": "203.0.113.9"}"#, Call::Check).unwrap();
        assert_eq!(ip.subject, Subject::Address("203.0.113.9".into()));
        assert_eq!((ip.tier.name.as_str(), ip.units), ("anonymous", 1), "an address's own tier, cost 1");
        assert_ne!(Subject::App("ip:203.0.113.9".into()).digest(), ip.subject.digest());
    }

    #[test]
    fn peeks_take_nothing_and_refunds_say_how_many() {
        assert_eq!(ask(r#"{"subject": "u", "tier": "llm", "peek": true}"#, Call::Check).unwrap().units, 0);
        assert_eq!(ask(r#"{"subject": "u", "tier": "llm", "cost": 0}"#, Call::Check).unwrap().units, 0);
        let r = ask(r#"{"subject": "u", "tier": "llm", "units": 200, "at": 1799999990000}"#, Call::Refund).unwrap();
        assert_eq!((r.units, r.at), (200, 1_799_999_990_000));
        assert_eq!(ask(r#"{"subject": "u", "tier": "llm", "units": 1}"#, Call::Refund).unwrap().at, NOW);
    }

    #[test]
    fn inline_limits_are_read_as_a_tiers_are() {
        let a = ask(
            r#"{"subject": "u", "limits": {"tokens": "100/min", "daily": {"fixed_window": "5000/day"}}}"#,
            Call::Check,
        )
        .unwrap();
        assert!(a.tier.name.starts_with("api:") && a.tier.name.len() == 16, "{}", a.tier.name);
        assert_eq!(a.tier.limits.len(), 2);
        let again = ask(
            r#"{"subject": "v", "limits": {"daily": {"fixed_window": "5000/day"}, "tokens": "100/min"}}"#,
            Call::Check,
        )
        .unwrap();
        assert_eq!(again.tier.name, a.tier.name, "the same limits meet the same buckets, in any order");
        let other = ask(r#"{"subject": "u", "limits": {"tokens": "101/min"}}"#, Call::Check).unwrap();
        assert_ne!(other.tier.name, a.tier.name);
        let err = ask(r#"{"subject": "u", "limits": {"tokens": "100/fortnight"}}"#, Call::Check).unwrap_err();
        assert!(err.contains("limits.tokens"), "{err}");
        let err = ask(r#"{"subject": "u", "limits": {"Bad Name": "1/s"}}"#, Call::Check).unwrap_err();
        assert!(err.contains("not a valid limit name"), "{err}");
        assert!(ask(r#"{"subject": "u", "limits": {}}"#, Call::Check).unwrap_err().contains("1 to"));
        assert!(ask(r#"{"subject": "u", "limits": [1]}"#, Call::Check).unwrap_err().contains("limits"));
    }

    #[test]
    fn every_bad_ask_names_its_field() {
        let err = |body: &str, call: Call| ask(body, call).unwrap_err();
        assert!(err("[]", Call::Check).contains("JSON object"));
        assert!(err("{", Call::Check).contains("not JSON"));
        assert!(err(r#"{"subject": "u", "tier": "llm"} {}"#, Call::Check).contains("not JSON"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "colour": 1}"#, Call::Check).contains("colour"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "cost": -1}"#, Call::Check).starts_with("cost:"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "cost": "5"}"#, Call::Check).starts_with("cost:"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "cost": 9007199254740993}"#, Call::Check).starts_with("cost:"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "peek": true, "cost": 3}"#, Call::Check).starts_with("peek:"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "units": 3}"#, Call::Check).starts_with("units:"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "cost": 3}"#, Call::Refund).starts_with("cost:"));
        assert!(err(r#"{"subject": "u", "tier": "llm"}"#, Call::Refund).starts_with("units:"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "units": 0}"#, Call::Refund).starts_with("units:"));
        assert!(
            err(r#"{"subject": "u", "tier": "llm", "units": 1, "at": 1800000000001}"#, Call::Refund).starts_with("at:")
        );
        assert!(err(r#"{"subject": "u", "tier": "llm", "units": 1, "at": 1}"#, Call::Refund).starts_with("at:"));
        assert!(err(r#"{"subject": "u"}"#, Call::Check).starts_with("tier:"));
        assert!(err(r#"{"subject": "u", "tier": "gold"}"#, Call::Check).contains("gold"));
        assert!(err(r#"{"subject": "u", "tier": "llm", "limits": {"a": "1/s"}}"#, Call::Check).contains("not both"));
        assert!(err(r#"{"tier": "llm"}"#, Call::Check).contains("exactly one"));
        assert!(err(r#"{"subject": "u", "ip": "203.0.113.9"}"#, Call::Check).contains("exactly one"));
        assert!(err(r#"{"subject": ""}"#, Call::Check).starts_with("subject:"));
        assert!(err(&format!(r#"{{"subject": "{}"}}"#, "u".repeat(257)), Call::Check).starts_with("subject:"));
        assert!(err(r#"{"subject": "a\nb", "tier": "llm"}"#, Call::Check).starts_with("subject:"));
        assert!(err(r#"{"ip": "not-an-ip"}"#, Call::Check).starts_with("ip:"));
        assert!(err(r#"{"key": "no-such-key"}"#, Call::Check).starts_with("key:"));
        assert!(err(r#"{"subject": 5, "tier": "llm"}"#, Call::Check).starts_with("subject:"));
    }

    #[test]
    fn a_tier_in_shadow_answers_allowed_and_says_so() {
        let a = ask(r#"{"subject": "u", "tier": "quiet", "cost": 6}"#, Call::Check).unwrap();
        assert!(a.shadow);
        let mut states = [State::Empty];
        let d = check(&a.tier.limits, &mut states, NOW, 6);
        let answer = check_answer(&a, &a.subject.digest(), &d, Backend::Memory, &policy(), NOW);
        assert_eq!(answer["allowed"], true);
        assert_eq!(answer["outcome"], "over_capacity");
        assert_eq!(answer["shadow"], "denied");
    }

    #[test]
    fn answers_carry_the_decision_and_the_edges_fields() {
        let a = ask(r#"{"subject": "user-42", "tier": "llm", "cost": 600}"#, Call::Check).unwrap();
        let mut states = [State::Empty];
        let digest = a.subject.digest();
        let first = check(&a.tier.limits, &mut states, NOW, 600);
        let answer = check_answer(&a, &digest, &first, Backend::Upstash, &policy(), NOW);
        assert_eq!(answer["allowed"], true);
        assert_eq!((answer["remaining"].as_u64(), answer["limit"].as_u64()), (Some(400), Some(1000)));
        assert_eq!(answer["retry_after"], Value::Null);
        assert_eq!(answer["at"], NOW);
        assert!(answer["headers"]["RateLimit"].as_str().unwrap().contains("a=400"));
        assert!(answer["headers"].get("Retry-After").is_none());
        let second = check(&a.tier.limits, &mut states, NOW, 600);
        let answer = check_answer(&a, &digest, &second, Backend::Upstash, &policy(), NOW);
        assert_eq!((answer["allowed"].as_bool(), answer["outcome"].as_str()), (Some(false), Some("denied")));
        // 200 more tokens at 1000 a minute: 12 s.
        assert_eq!(answer["retry_after"], 12);
        assert_eq!(answer["headers"]["Retry-After"], "12");
        assert_eq!(answer["subject_hash"], digest.as_str());
        assert!(!answer.to_string().contains("user"), "no raw subject in an answer");
        let refund = refund_answer(&a, &digest, &[200], Backend::Memory);
        assert_eq!((refund["refunded"].as_u64(), refund["asked"].as_u64()), (Some(200), Some(600)));
    }
}
