//! The pure half of the admin API: who may call it, which subject a call is about, and how
//! a subject's state is reported. The Worker half (`edge::admin`) only does the I/O.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::algorithm::Decision;
use super::identity::{constant_time_eq, identify, RequestFacts};
use super::policy::{Policy, Tier, TierId};

/// True when `authorization` is `Bearer <ADMIN_TOKEN>`. Both sides are hashed first, so the
/// comparison takes the same time whatever the length or content of the guess.
pub fn authorized(authorization: Option<&str>, admin_token: &str) -> bool {
    let Some(given) = authorization.and_then(|a| {
        let (scheme, rest) = a.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }) else {
        return false;
    };
    let (given, expected) = (Sha256::digest(given.as_bytes()), Sha256::digest(admin_token.as_bytes()));
    constant_time_eq(&given, &expected)
}

/// The subject an admin call is about, and the tier whose limits are meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRef {
    pub tier: TierId,
    /// As the limiter knows it before hashing (`ip:203.0.113.0/24`, `key:<digest>`, `jwt:<sub>`).
    pub subject: String,
}

/// Reads `ip=`, `key=` or `sub=` (exactly one) and an optional `tier=` from query pairs, and
/// names the subject exactly as a request with that credential would be named.
pub fn subject_from_query(policy: &Policy, pairs: &[(String, String)]) -> Result<SubjectRef, String> {
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let tier = match get("tier") {
        Some(name) => Some(policy.tier_id(name).ok_or_else(|| format!("tier: no tier named {name:?} in the policy"))?),
        None => None,
    };
    let given: Vec<&str> = ["ip", "key", "sub"].into_iter().filter(|k| get(k).is_some()).collect();
    if given.len() != 1 {
        return Err("give exactly one of ip=<address>, key=<API key> or sub=<JWT subject>".into());
    }
    let facts = RequestFacts { client_ip: None, forwarded_for: None, api_key: None, authorization: None, now_s: 0 };
    let (caller_tier, subject) = match given[0] {
        "ip" => {
            let ip = get("ip").unwrap_or_default();
            let c = identify(policy, &RequestFacts { client_ip: Some(ip), ..facts }, None).map_err(|e| format!("ip: {e}"))?;
            if c.subject == "ip:unknown" {
                return Err(format!("ip: {ip:?} is not an IP address"));
            }
            (c.tier, c.subject)
        }
        "key" => {
            if policy.identity.api_key.is_none() {
                return Err("key: the policy accepts no API keys".into());
            }
            let key = get("key").unwrap_or_default();
            let c = identify(policy, &RequestFacts { api_key: Some(key), ..facts }, None).map_err(|e| format!("key: {e}"))?;
            (c.tier, c.subject)
        }
        _ => {
            let jwt = policy.identity.jwt.as_ref().ok_or("sub: the policy accepts no JWTs")?;
            let sub = get("sub").unwrap_or_default();
            if sub.is_empty() {
                return Err("sub: empty".into());
            }
            (jwt.default_tier, format!("jwt:{sub}"))
        }
    };
    Ok(SubjectRef { tier: tier.unwrap_or(caller_tier), subject })
}

/// A subject's state per limit, as the admin API reports it.
pub fn subject_state(tier: &Tier, subject_hash: &str, decision: &Decision, backend: &str) -> Value {
    let limits: Vec<Value> = tier
        .limits
        .iter()
        .zip(decision.limits())
        .map(|(l, s)| {
            json!({
                "name": l.name,
                "capacity": l.algorithm.capacity(),
                "remaining": s.remaining,
                "reset_ms": s.reset_ms,
                "reset_s": s.reset_ms.div_ceil(1000),
            })
        })
        .collect();
    json!({ "tier": tier.name, "subject_hash": subject_hash, "backend": backend, "limits": limits })
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
        for bad in [None, Some(""), Some("s3cret-token"), Some("Bearer s3cret-toke"), Some("Bearer s3cret-token2"), Some("Basic s3cret-token")] {
            assert!(!authorized(bad, "s3cret-token"), "{bad:?}");
        }
    }

    #[test]
    fn subjects_are_named_as_requests_name_them() {
        let p = Policy::example();
        let anon = p.tier_id("anonymous").unwrap();
        assert_eq!(
            subject_from_query(&p, &pairs(&[("ip", "203.0.113.9")])),
            Ok(SubjectRef { tier: anon, subject: "ip:203.0.113.9".into() })
        );
        assert_eq!(subject_from_query(&p, &pairs(&[("ip", "2001:db8::1")])).unwrap().subject, "ip:2001:db8::/64");
        let premium = subject_from_query(&p, &pairs(&[("key", "demo-premium-key")])).unwrap();
        assert_eq!(premium.tier, p.tier_id("premium").unwrap());
        assert!(premium.subject.starts_with("key:") && !premium.subject.contains("demo"));
        let sub = subject_from_query(&p, &pairs(&[("sub", "u1"), ("tier", "premium")])).unwrap();
        assert_eq!(sub, SubjectRef { tier: p.tier_id("premium").unwrap(), subject: "jwt:u1".into() });
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let p = Policy::example();
        let err = |items: &[(&str, &str)]| subject_from_query(&p, &pairs(items)).unwrap_err();
        assert!(err(&[]).contains("exactly one"));
        assert!(err(&[("ip", "1.2.3.4"), ("key", "k")]).contains("exactly one"));
        assert!(err(&[("ip", "not-an-ip")]).starts_with("ip:"));
        assert!(err(&[("key", "no-such-key")]).starts_with("key:"));
        assert!(err(&[("ip", "1.2.3.4"), ("tier", "gold")]).contains("gold"));
        assert!(err(&[("sub", "")]).starts_with("sub:"));
    }
}
