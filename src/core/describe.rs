//! The active policy in plain words, as JSON for the dashboard: tiers and their limits,
//! route rules, and how callers are identified. Holds nothing secret: no key digests, no
//! JWT settings beyond claim names.

use serde_json::{json, Value};

use super::algorithm::Algorithm;
use super::policy::{Policy, RouteAction};
use super::rate::{format_duration, Rate};

/// A span as people say it: "10s", "1h", "1day".
fn span(ms: u64) -> String {
    let text = format_duration(ms);
    let one = if text.starts_with(|c: char| c.is_ascii_digit()) { "" } else { "1" };
    format!("{one}{text}")
}

/// A rate per the first of second, minute, hour or day that makes it a whole number
/// ("10/s", "6/min" for 0.1/s), else as the policy holds it.
fn rate_in_words(rate: Rate) -> String {
    for (unit_ms, unit) in [(1_000u64, "s"), (60_000, "min"), (3_600_000, "h"), (86_400_000, "day")] {
        let scaled = rate.amount as u128 * unit_ms as u128;
        if scaled % rate.period_ms as u128 == 0 {
            return format!("{}/{unit}", scaled / rate.period_ms as u128);
        }
    }
    rate.to_string()
}

/// "up to 10 requests at once, refilled at 1/s (full again 10s after emptying)", etc.
pub fn limit_in_words(a: &Algorithm) -> String {
    match a.refill() {
        Some(rate) => format!(
            "up to {} requests at once, refilled at {} (full again {} after emptying)",
            a.capacity(),
            rate_in_words(rate),
            span(a.window_ms())
        ),
        None if a.kind() == "fixed_window" => {
            format!("{} requests per {} (calendar-aligned windows)", a.capacity(), format_duration(a.window_ms()))
        }
        None => format!("at most {} requests in any {}", a.capacity(), span(a.written_window_ms())),
    }
}

/// A list by how many entries of each kind it has (the entries are the operator's to see).
fn list_in_words(l: &crate::core::lists::List, what: &str) -> String {
    let kinds = [
        (l.addresses.len(), "address or range", "addresses or ranges"),
        (l.countries.len(), "country", "countries"),
        (l.asns.len(), "ASN", "ASNs"),
        (l.user_agents.len(), "user-agent pattern", "user-agent patterns"),
    ];
    let parts: Vec<String> = kinds
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect();
    if parts.is_empty() {
        "empty".to_string()
    } else {
        format!("{}: {what}", parts.join(", "))
    }
}

pub fn describe(policy: &Policy) -> Value {
    let tier_name = |id| policy.tier(id).map_or("?", |t| t.name.as_str()).to_string();
    let tiers: Vec<Value> = policy
        .tiers
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "limits": t.limits.iter().map(|l| json!({
                    "name": l.name,
                    "kind": l.algorithm.kind(),
                    "capacity": l.algorithm.capacity(),
                    "window_s": l.algorithm.window_ms().div_ceil(1000),
                    "words": limit_in_words(&l.algorithm),
                })).collect::<Vec<_>>(),
                "shadow": t.shadow || policy.shadow,
                "lease": if t.lease.on() {
                    json!({ "max": t.lease.max, "ttl_ms": t.lease.ttl_ms })
                } else {
                    json!("off")
                },
            })
        })
        .collect();
    let routes: Vec<Value> = policy
        .routes
        .iter()
        .map(|r| {
            let methods = if r.methods.is_empty() { "any method".to_string() } else { r.methods.join(", ") };
            let who = if r.tiers.is_empty() {
                String::new()
            } else {
                format!(" for {}", r.tiers.iter().map(|t| tier_name(*t)).collect::<Vec<_>>().join(", "))
            };
            let what = match r.action {
                RouteAction::Exempt => "not limited".to_string(),
                RouteAction::Limit { cost, tier: None } => format!("costs {cost}"),
                RouteAction::Limit { cost, tier: Some(t) } => {
                    format!("costs {cost}, against the limits of tier {}", tier_name(t))
                }
            };
            json!({
                "path": r.path_prefix,
                "methods": r.methods,
                "words": format!("{methods} {}{who}: {what}{}", r.path_prefix, if r.shadow { " (in shadow)" } else { "" }),
            })
        })
        .collect();
    let id = &policy.identity;
    let mut identity = vec![format!(
        "callers with no credential: tier {}, one bucket per client address ({} header; IPv4 /{}, IPv6 /{})",
        tier_name(id.anonymous_tier),
        id.client_ip.header,
        id.client_ip.ipv4_prefix,
        id.client_ip.ipv6_prefix
    )];
    if let Some(k) = &id.api_key {
        identity.push(format!("API keys in the {} header: {} key(s), each mapped to a tier", k.header, k.keys.len()));
    }
    if let Some(j) = &id.jwt {
        identity.push(format!(
            "HS256 bearer tokens: tier from the \"{}\" claim (default {}), one bucket per \"{}\"",
            j.tier_claim,
            tier_name(j.default_tier),
            j.subject_claim
        ));
    }
    let s = &policy.store;
    json!({
        "tiers": tiers,
        "routes": routes,
        "identity": identity,
        "shadow": policy.shadow,
        "lists": {
            "block": list_in_words(&policy.lists.block, "refused with 403"),
            "allow": list_in_words(&policy.lists.allow, "not limited"),
        },
        "store": {
            "on_failure": s.on_failure.as_str(),
            "timeout_ms": s.timeout_ms,
            "breaker_failures": s.breaker_failures,
            "breaker_cooldown_ms": s.breaker_cooldown_ms,
            "deny_cache": s.deny_cache,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_in_plain_words_without_secrets() {
        let p = Policy::example();
        let d = describe(&p);
        let text = d.to_string();
        assert_eq!(d["tiers"][0]["name"], "anonymous");
        assert_eq!(
            d["tiers"][0]["limits"][0]["words"],
            "up to 10 requests at once, refilled at 1/s (full again 10s after emptying)"
        );
        assert_eq!(d["tiers"][0]["limits"][1]["words"], "at most 300 requests in any 1h");
        assert_eq!(d["tiers"][1]["limits"][1]["words"], "10000 requests per day (calendar-aligned windows)");
        assert_eq!(
            d["tiers"][2]["limits"][0]["words"],
            "up to 200 requests at once, refilled at 200/s (full again 1s after emptying)"
        );
        assert_eq!(rate_in_words(Rate::parse("0.1/s").unwrap()), "6/min");
        assert_eq!(rate_in_words(Rate::parse("7/3ms").unwrap()), "140000/min");
        assert_eq!(rate_in_words(Rate::parse("1/7ms").unwrap()), "1/7ms", "no whole number per unit: as written");
        assert_eq!(d["routes"][0]["words"], "any method /health: not limited");
        assert_eq!(d["routes"][2]["words"], "GET, HEAD /assets/: not limited");
        assert_eq!(d["routes"][5]["words"], "POST, PUT /upload: costs 5");
        assert!(d["identity"][1].as_str().unwrap().contains("2 key(s)"));
        assert_eq!(d["lists"]["block"], "empty");
        for digest in p.identity.api_key.as_ref().unwrap().keys.iter().map(|(d, _)| d) {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!text.contains(&hex), "no key digest in the description");
        }
    }

    #[test]
    fn lists_are_told_by_their_counts_not_their_entries() {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"b": "1/s"}}},
                "block": {"addresses": ["203.0.113.0/24", "198.51.100.7"], "user_agents": ["*sqlmap*"]},
                "allow": {"countries": ["DE"]}}"#,
        )
        .unwrap();
        let d = describe(&p);
        assert_eq!(d["lists"]["block"], "2 addresses or ranges, 1 user-agent pattern: refused with 403");
        assert_eq!(d["lists"]["allow"], "1 country: not limited");
        assert!(!d.to_string().contains("203.0.113"), "no entry is shown");
    }
}
