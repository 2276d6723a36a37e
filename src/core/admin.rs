//! The pure half of the admin API: who may call it, which subject a call is about, and how
//! a subject's state is reported. The Worker half (`edge::admin`) only does the I/O.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::algorithm::Decision;
use super::identity::{bearer_token, constant_time_eq, identify, CallerKind, RequestFacts};
use super::policy::{Policy, Tier, TierId};
use super::subject::{hex, Subject, SubjectDigest};

/// True when `authorization` is `Bearer <ADMIN_TOKEN>`. Both sides are hashed first, so the
/// comparison takes the same time whatever the length or content of the guess.
pub fn authorized(authorization: Option<&str>, admin_token: &str) -> bool {
    let Some(given) = authorization.and_then(bearer_token) else {
        return false;
    };
    let (given, expected) = (Sha256::digest(given.as_bytes()), Sha256::digest(admin_token.as_bytes()));
    constant_time_eq(&given, &expected)
}

/// The subject an admin call is about, and the tier whose limits are meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRef {
    pub tier: TierId,
    /// As the limiter knows it before hashing.
    pub subject: Subject,
}

/// Where an admin call's fields came from. A raw API key is a secret: it may come in a
/// request body, never in a URL, where logs and browser history keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldSource {
    Query,
    Body,
}

/// Reads `ip=`, `key=` (body only), `key_digest=` or `sub=` (exactly one) and an optional
/// `tier=`, and names the subject exactly as a request with that credential would be named.
pub fn subject_from_fields(
    policy: &Policy,
    pairs: &[(String, String)],
    source: FieldSource,
) -> Result<SubjectRef, String> {
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if source == FieldSource::Query && get("key").is_some() {
        return Err("key: a raw API key never goes in a URL; send key_digest=<SHA-256 hex of the key>, \
                    or POST a JSON body {\"key\": \"...\"}"
            .into());
    }
    let tier = match get("tier") {
        Some(name) => Some(policy.tier_id(name).ok_or_else(|| format!("tier: no tier named {name:?} in the policy"))?),
        None => None,
    };
    let given: Vec<&str> = ["ip", "key", "key_digest", "sub"].into_iter().filter(|k| get(k).is_some()).collect();
    if given.len() != 1 {
        return Err(
            "give exactly one of ip=<address>, key_digest=<SHA-256 hex> (or key in a JSON body) or sub=<JWT subject>"
                .into(),
        );
    }
    let facts = RequestFacts { client_ip: None, forwarded_for: None, api_key: None, authorization: None, now_s: 0 };
    let (caller_tier, subject) = match given[0] {
        "ip" => {
            let ip = get("ip").unwrap_or_default();
            let c = identify(policy, &RequestFacts { client_ip: Some(ip), ..facts }, None)
                .map_err(|e| format!("ip: {e}"))?;
            if c.subject == Subject::UnknownAddress {
                return Err(format!("ip: {ip:?} is not an IP address"));
            }
            (c.tier, c.subject)
        }
        "key" => {
            if policy.identity.api_key.is_none() {
                return Err("key: the policy accepts no API keys".into());
            }
            let key = get("key").unwrap_or_default();
            let c = identify(policy, &RequestFacts { api_key: Some(key), ..facts }, None)
                .map_err(|e| format!("key: {e}"))?;
            if c.kind != CallerKind::ApiKey {
                return Err("key: not a key of this policy (it lacks identity.api_key.prefix)".into());
            }
            (c.tier, c.subject)
        }
        "key_digest" => {
            let keys = policy.identity.api_key.as_ref().ok_or("key_digest: the policy accepts no API keys")?;
            let text = get("key_digest").unwrap_or_default().to_ascii_lowercase();
            let known = keys.keys.iter().find(|(digest, _)| hex(digest) == text);
            let (digest, tier) = known.ok_or("key_digest: no key of the policy has this digest")?;
            (*tier, Subject::Key(hex(digest)))
        }
        _ => {
            let jwt = policy.identity.jwt.as_ref().ok_or("sub: the policy accepts no JWTs")?;
            let sub = get("sub").unwrap_or_default();
            if sub.is_empty() {
                return Err("sub: empty".into());
            }
            (jwt.default_tier, Subject::Token(sub.to_string()))
        }
    };
    Ok(SubjectRef { tier: tier.unwrap_or(caller_tier), subject })
}

/// The string fields of a JSON object body, as pairs; anything else is an error.
pub fn body_fields(body: &str) -> Result<Vec<(String, String)>, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(format!("{k}: expected a string, found {other}")),
            })
            .collect(),
        _ => Err("the body must be a JSON object such as {\"key\": \"...\"}".into()),
    }
}

/// The `name=value` pairs of a URL's query (`?` first or not), decoded as a form is:
/// `+` is a space and `%XX` a byte; an escape that is not two hex digits is kept as written,
/// and bytes that do not make UTF-8 become U+FFFD. Empty names are skipped.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = form_decode(k);
            (!k.is_empty()).then(|| (k, form_decode(v)))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let escaped = match (c, b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => Some(h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if c == b'+' { b' ' } else { c });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Each limit's state after a decision, as the admin and decision APIs report it.
pub fn limit_states(tier: &Tier, decision: &Decision) -> Vec<Value> {
    (tier.limits.iter().zip(decision.limits()))
        .map(|(l, s)| {
            json!({
                "name": l.name,
                "capacity": l.algorithm.capacity(),
                "remaining": s.remaining,
                "reset_ms": s.reset_ms,
                "reset_s": s.reset_ms.div_ceil(1000),
                "retry_after_ms": s.retry_after_ms,
            })
        })
        .collect()
}

/// A subject's state per limit, as the admin API reports it.
pub fn subject_state(tier: &Tier, subject_hash: &SubjectDigest, decision: &Decision, backend: &str) -> Value {
    let limits = limit_states(tier, decision);
    json!({ "tier": tier.name, "subject_hash": subject_hash.as_str(), "backend": backend, "limits": limits })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        assert!(authorized(Some("Bearer s3cret-token"), "s3cret-token"));
        assert!(authorized(Some("bearer  s3cret-token "), "s3cret-token"));
        for bad in [
            None,
            Some(""),
            Some("s3cret-token"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Basic s3cret-token"),
        ] {
            assert!(!authorized(bad, "s3cret-token"), "{bad:?}");
        }
    }

    #[test]
    fn queries_decode_as_forms_do() {
        let q = |s: &str| query_pairs(s);
        let owned = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(q(""), owned(&[]));
        assert_eq!(q("?"), owned(&[]));
        assert_eq!(q("?ip=203.0.113.9&tier=premium"), owned(&[("ip", "203.0.113.9"), ("tier", "premium")]));
        assert_eq!(q("ip=2001%3Adb8%3A%3A1"), owned(&[("ip", "2001:db8::1")]));
        assert_eq!(q("?sub=a+b%2Bc&&=x&flag"), owned(&[("sub", "a b+c"), ("flag", "")]));
        // Bad escapes are kept as written; bytes that are not UTF-8 are replaced, not dropped.
        assert_eq!(q("?sub=%zz%4%&k=%ff"), owned(&[("sub", "%zz%4%"), ("k", "\u{fffd}")]));
        assert_eq!(q("?sub=%E2%82%AC=1"), owned(&[("sub", "\u{20ac}=1")]));
        // A raw key spelled another way in a URL is still a raw key in a URL: refused.
        let p = Policy::example();
        for spelled in ["?k%65y=demo-premium-key", "?%6B%65%79=demo-premium-key", "?ip=203.0.113.9&key=x"] {
            let err = subject_from_fields(&p, &q(spelled), FieldSource::Query).unwrap_err();
            assert!(err.contains("never goes in a URL"), "{spelled}: {err}");
        }
    }

    #[test]
    fn subjects_are_named_as_requests_name_them() {
        let p = Policy::example();
        let subject_from_query =
            |p: &Policy, pairs: &[(String, String)]| subject_from_fields(p, pairs, FieldSource::Body);
        let anon = p.tier_id("anonymous").unwrap();
        assert_eq!(
            subject_from_query(&p, &pairs(&[("ip", "203.0.113.9")])),
            Ok(SubjectRef { tier: anon, subject: Subject::Address("203.0.113.9".into()) })
        );
        assert_eq!(subject_from_query(&p, &pairs(&[("ip", "2001:db8::1")])).unwrap().subject, "ip:2001:db8::/64");
        let premium = subject_from_query(&p, &pairs(&[("key", "demo-premium-key")])).unwrap();
        assert_eq!(premium.tier, p.tier_id("premium").unwrap());
        assert!(premium.subject.to_string().starts_with("key:") && !premium.subject.to_string().contains("demo"));
        let digest = crate::core::identity::DEMO_KEY_DIGESTS[0];
        let by_digest = subject_from_query(&p, &pairs(&[("key_digest", digest)])).unwrap();
        assert_eq!(by_digest, premium, "a digest names the same subject as the key");
        let sub = subject_from_query(&p, &pairs(&[("sub", "u1"), ("tier", "premium")])).unwrap();
        assert_eq!(sub, SubjectRef { tier: p.tier_id("premium").unwrap(), subject: Subject::Token("u1".into()) });
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let p = Policy::example();
        let err = |items: &[(&str, &str)]| subject_from_fields(&p, &pairs(items), FieldSource::Query).unwrap_err();
        assert!(err(&[("key", "demo-premium-key")]).contains("never goes in a URL"));
        assert!(err(&[("key_digest", "00")]).starts_with("key_digest:"));
        assert!(body_fields("[1]").is_err() && body_fields(r#"{"key": 1}"#).is_err());
        assert_eq!(body_fields(r#"{"key": "k"}"#).unwrap(), pairs(&[("key", "k")]));
        assert!(err(&[]).contains("exactly one"));
        assert!(err(&[("ip", "1.2.3.4"), ("sub", "k")]).contains("exactly one"));
        assert!(err(&[("ip", "not-an-ip")]).starts_with("ip:"));
        let body_err = subject_from_fields(&p, &pairs(&[("key", "no-such-key")]), FieldSource::Body).unwrap_err();
        assert!(body_err.starts_with("key:"));
        assert!(err(&[("ip", "1.2.3.4"), ("tier", "gold")]).contains("gold"));
        assert!(err(&[("sub", "")]).starts_with("sub:"));
    }
}
