//! Runtime controls: what an operator changes through the admin API without a redeploy. A
//! subject's tier or its own limits (an override, with an optional expiry), and block and
//! allow lists added to the policy's. Wherever they are kept (an Upstash hash, a Workers KV
//! value, or this isolate's memory: `edge::controls`), they are named records of JSON text:
//! `o:<subject digest>` for an override, `block` and `allow` for the lists. This reads
//! them, checks them against the policy and resolves them into what a request needs. A
//! record that no longer fits the policy (its tier was removed) is set aside and reported,
//! never applied half-way.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::admin::{subject_from_fields, FieldSource};
use super::algorithm::Millis;
use super::lists::{List, Lists};
use super::policy::{Policy, Tier, TierId};
use super::rate::parse_duration_ms;

/// At most this many overrides are kept: a bound on every isolate's memory and reads.
pub const MAX_OVERRIDES: usize = 10_000;
/// At most this many entries in each runtime list.
pub const MAX_LIST_ENTRIES: usize = 1_000;
/// The longest expiry an override may have; without one it lasts until it is removed.
const MAX_TTL_MS: Millis = 366 * 86_400_000;
/// The record names of the runtime lists.
pub const BLOCK: &str = "block";
pub const ALLOW: &str = "allow";
/// The prefix of an override's record name, before the subject's digest.
pub const OVERRIDE: &str = "o:";

/// An override as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Millis>,
    set_at: Millis,
}

/// What an override does to its subject's requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Applies {
    /// As if identity had put the subject in this tier: its limits, and the route rules
    /// for it.
    Tier(TierId),
    /// These limits instead of its tier's (the route rules still see its tier).
    Limits(Tier),
}

#[derive(Clone, Debug, PartialEq)]
struct Applied {
    applies: Applies,
    expires_at: Option<Millis>,
    record: Record,
}

/// The controls as a request uses them: the overrides by subject digest, and the policy's
/// lists with the runtime ones added.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    overrides: HashMap<String, Applied>,
    /// The policy's lists and the runtime ones together: what a request is judged by.
    pub lists: Lists,
    /// The runtime lists alone, as the admin API shows them.
    runtime: Lists,
    runtime_written: Map<String, Value>,
    /// Records set aside, and why (by record name: a digest, never a raw subject).
    pub problems: Vec<String>,
}

impl Resolved {
    /// Nothing but the policy's own lists.
    pub fn of_policy(policy: &Policy) -> Resolved {
        Resolved { lists: policy.lists.clone(), ..Resolved::default() }
    }

    /// Resolves stored records against `policy`.
    pub fn from_records(policy: &Policy, records: &[(String, String)]) -> Resolved {
        let mut out = Resolved::of_policy(policy);
        for (name, text) in records {
            if let Some(digest) = name.strip_prefix(OVERRIDE) {
                if out.overrides.len() >= MAX_OVERRIDES {
                    out.problems.push(format!("{name}: more than {MAX_OVERRIDES} overrides; the rest ignored"));
                    break;
                }
                match read_record(policy, text) {
                    Ok(applied) => {
                        out.overrides.insert(digest.to_string(), applied);
                    }
                    Err(e) => out.problems.push(format!("{name}: {e}")),
                }
            } else if name == BLOCK || name == ALLOW {
                let read = serde_json::from_str::<Value>(text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| Policy::read_list(&v, name).map(|l| (v, l)).map_err(|e| e.to_string()));
                match read {
                    Ok((written, list)) => {
                        let (runtime, merged) = if name == BLOCK {
                            (&mut out.runtime.block, &mut out.lists.block)
                        } else {
                            (&mut out.runtime.allow, &mut out.lists.allow)
                        };
                        append(merged, &list);
                        *runtime = list;
                        out.runtime_written.insert(name.clone(), written);
                    }
                    Err(e) => out.problems.push(format!("{name}: {e}")),
                }
            } else {
                out.problems.push(format!("{name}: not a record of the controls"));
            }
        }
        out
    }

    /// What applies to the subject with this digest at `now`, if anything.
    pub fn lookup(&self, digest: &str, now: Millis) -> Option<&Applies> {
        let a = self.overrides.get(digest)?;
        match a.expires_at {
            Some(at) if at <= now => None,
            _ => Some(&a.applies),
        }
    }

    pub fn has_overrides(&self) -> bool {
        !self.overrides.is_empty()
    }

    /// How many overrides are in force at `now`, and the runtime lists' entries.
    pub fn counts(&self, now: Millis) -> (usize, usize, usize) {
        let live = self.overrides.values().filter(|a| a.expires_at.is_none_or(|at| at > now)).count();
        (live, entries(&self.runtime.block), entries(&self.runtime.allow))
    }

    /// The record names of overrides past their expiry, for a write to drop.
    pub fn expired(&self, now: Millis) -> Vec<String> {
        let mut out: Vec<String> = (self.overrides.iter())
            .filter(|(_, a)| a.expires_at.is_some_and(|at| at <= now))
            .map(|(d, _)| format!("{OVERRIDE}{d}"))
            .collect();
        crate::core::order::sort(&mut out);
        out
    }

    /// The controls as the admin API lists them.
    pub fn describe(&self, policy: &Policy, now: Millis) -> Value {
        let mut overrides: Vec<(&String, &Applied)> =
            self.overrides.iter().filter(|(_, a)| a.expires_at.is_none_or(|at| at > now)).collect();
        crate::core::order::sort_by(&mut overrides, |a, b| a.0.cmp(b.0));
        let overrides: Vec<Value> = overrides
            .into_iter()
            .map(|(digest, a)| {
                let mut v = json!({ "subject_hash": digest, "set_at": a.record.set_at });
                match &a.applies {
                    Applies::Tier(id) => v["tier"] = json!(policy.tier(*id).map(|t| t.name.as_str())),
                    Applies::Limits(t) => {
                        v["limits"] = a.record.limits.clone().unwrap_or(Value::Null);
                        v["limits_tier"] = json!(t.name);
                    }
                }
                if let Some(at) = a.expires_at {
                    v["expires_at"] = json!(at);
                    v["expires_in_s"] = json!(at.saturating_sub(now).div_ceil(1000));
                }
                v
            })
            .collect();
        json!({
            "overrides": overrides,
            "block": self.runtime_written.get(BLOCK).cloned().unwrap_or_else(|| json!({})),
            "allow": self.runtime_written.get(ALLOW).cloned().unwrap_or_else(|| json!({})),
            "problems": self.problems,
        })
    }
}

fn entries(l: &List) -> usize {
    l.addresses.len() + l.countries.len() + l.asns.len() + l.user_agents.len()
}

fn append(to: &mut List, from: &List) {
    to.addresses.extend(from.addresses.iter().copied());
    to.countries.extend(from.countries.iter().cloned());
    to.asns.extend(from.asns.iter().copied());
    to.user_agents.extend(from.user_agents.iter().cloned());
}

fn read_record(policy: &Policy, text: &str) -> Result<Applied, String> {
    let record: Record = serde_json::from_str(text).map_err(|e| format!("not an override record: {e}"))?;
    let applies = match (&record.tier, &record.limits) {
        (Some(name), None) => {
            Applies::Tier(policy.tier_id(name).ok_or_else(|| format!("tier {name:?} is no longer in the policy"))?)
        }
        (None, Some(limits)) => {
            Applies::Limits(Policy::inline_tier("override", limits, "limits").map_err(|e| e.to_string())?)
        }
        _ => return Err("an override has a tier or limits, one of them".into()),
    };
    Ok(Applied { applies, expires_at: record.expires_at, record })
}

/// An override asked for through the admin API, checked and ready to store.
#[derive(Debug, PartialEq)]
pub struct NewOverride {
    /// The record name (`o:<digest>`) and its JSON text.
    pub name: String,
    pub text: String,
    /// For the log and the answer: the subject's digest and what the override does.
    pub digest: String,
    pub summary: String,
}

/// The body of `POST admin/overrides`: the subject as the admin API names it (`ip`, `key`,
/// `key_digest` or `sub`), then `tier` (a tier of the policy) or `limits` (written as a
/// tier's), and an optional `ttl` (`"1h"`).
pub fn override_from_body(policy: &Policy, body: &str, now: Millis) -> Result<NewOverride, String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return Err(
            "the body must be a JSON object such as {\"ip\": \"203.0.113.9\", \"tier\": \"premium\", \"ttl\": \"1h\"}"
                .into(),
        );
    };
    let mut subject_fields = Vec::new();
    let (mut tier, mut limits, mut ttl) = (None, None, None);
    for (k, v) in map {
        match (k.as_str(), v) {
            ("ip" | "key" | "key_digest" | "sub", Value::String(s)) => subject_fields.push((k, s)),
            ("tier", Value::String(s)) => tier = Some(s),
            ("limits", v) => limits = Some(v),
            ("ttl", Value::String(s)) => ttl = Some(s),
            ("ip" | "key" | "key_digest" | "sub" | "tier" | "ttl", other) => {
                return Err(format!("{k}: expected a string, found {other}"))
            }
            _ => {
                return Err(format!(
                    "{k}: not a field of an override (ip, key, key_digest or sub; tier or limits; ttl)"
                ))
            }
        }
    }
    let subject = subject_from_fields(policy, &subject_fields, FieldSource::Body)?;
    let digest = subject.subject.digest();
    let (record_tier, summary) = match (&tier, &limits) {
        (Some(name), None) => {
            policy.tier_id(name).ok_or_else(|| format!("tier: no tier named {name:?} in the policy"))?;
            (Some(name.clone()), format!("tier {name}"))
        }
        (None, Some(l)) => {
            let t = Policy::inline_tier("override", l, "limits").map_err(|e| e.to_string())?;
            let names: Vec<&str> = t.limits.iter().map(|l| l.name.as_str()).collect();
            (None, format!("own limits ({})", names.join(", ")))
        }
        _ => return Err("give tier (a tier of the policy) or limits (written as a tier's), one of them".into()),
    };
    let expires_at = match ttl {
        None => None,
        Some(text) => {
            let ms = parse_duration_ms(&text, true).map_err(|e| format!("ttl: {e}"))?;
            if !(1_000..=MAX_TTL_MS).contains(&ms) {
                return Err("ttl: from 1s to 366 days".into());
            }
            Some(now + ms)
        }
    };
    let record = Record { tier: record_tier, limits, expires_at, set_at: now };
    let text = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let summary = match expires_at {
        Some(at) => format!("{summary} for {} s", (at - now) / 1000),
        None => format!("{summary}, until removed"),
    };
    Ok(NewOverride {
        name: format!("{OVERRIDE}{}", digest.as_str()),
        text,
        digest: digest.as_str().to_string(),
        summary,
    })
}

/// The record name of the override to remove: `subject_hash=<32 hex digits>` (a digest is
/// no secret, so it may be in a URL), or the subject named as for a new one.
pub fn override_name(policy: &Policy, pairs: &[(String, String)]) -> Result<(String, String), String> {
    if let Some((_, hash)) = pairs.iter().find(|(k, _)| k == "subject_hash") {
        let hash = hash.to_ascii_lowercase();
        if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("subject_hash: 32 hexadecimal digits, as the listing shows it".into());
        }
        return Ok((format!("{OVERRIDE}{hash}"), hash));
    }
    let subject = subject_from_fields(policy, pairs, FieldSource::Query)?;
    let digest = subject.subject.digest().as_str().to_string();
    Ok((format!("{OVERRIDE}{digest}"), digest))
}

/// The body of `PUT admin/lists`: `block` and/or `allow`, each written as the policy's
/// lists are; each one given replaces the runtime list of that name (`{}` empties it).
/// Returns the records to store and a summary in counts (no address goes to a log).
pub fn lists_from_body(body: &str) -> Result<(Vec<(String, String)>, String), String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return Err("the body must be a JSON object such as {\"block\": {\"addresses\": [\"203.0.113.0/24\"]}}".into());
    };
    if map.is_empty() {
        return Err("give block, allow or both".into());
    }
    let mut records = Vec::new();
    let mut summary = Vec::new();
    for (k, v) in map {
        if k != BLOCK && k != ALLOW {
            return Err(format!("{k}: not a list (block or allow)"));
        }
        let list = Policy::read_list(&v, &k).map_err(|e| e.to_string())?;
        let n = entries(&list);
        if n > MAX_LIST_ENTRIES {
            return Err(format!("{k}: {n} entries; at most {MAX_LIST_ENTRIES}"));
        }
        summary.push(format!("{k} {n} entries"));
        records.push((k, v.to_string()));
    }
    Ok((records, summary.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lists::Visitor;
    use crate::core::subject::Subject;

    const NOW: Millis = 1_800_000_000_000;

    fn policy() -> Policy {
        Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"burst": "5/s"}}, "premium": {"limits": {"burst": "50/s"}}},
                "block": {"addresses": ["192.0.2.0/24"]}}"#,
        )
        .unwrap()
    }

    fn ip_digest(ip: &str) -> String {
        Subject::Address(ip.into()).digest().as_str().to_string()
    }

    #[test]
    fn an_override_names_its_subject_as_requests_do_and_expires() {
        let p = policy();
        let o = override_from_body(&p, r#"{"ip": "203.0.113.9", "tier": "premium", "ttl": "1h"}"#, NOW).unwrap();
        assert_eq!(o.digest, ip_digest("203.0.113.9"));
        assert_eq!(o.name, format!("o:{}", o.digest));
        assert_eq!(o.summary, "tier premium for 3600 s");
        assert!(!o.text.contains("203.0.113.9"), "no raw address in a record: {}", o.text);
        let r = Resolved::from_records(&p, &[(o.name.clone(), o.text.clone())]);
        assert_eq!(r.lookup(&o.digest, NOW + 1_000), Some(&Applies::Tier(p.tier_id("premium").unwrap())));
        assert_eq!(r.lookup(&o.digest, NOW + 3_600_000), None, "expired");
        assert_eq!(r.lookup(&ip_digest("203.0.113.10"), NOW), None);
        assert_eq!(r.counts(NOW), (1, 0, 0));
        assert_eq!(r.expired(NOW + 3_600_000), vec![o.name.clone()]);
        let listed = r.describe(&p, NOW);
        assert_eq!(listed["overrides"][0]["tier"], "premium");
        assert_eq!(listed["overrides"][0]["expires_in_s"], 3600);
    }

    #[test]
    fn own_limits_are_a_tier_of_their_own() {
        let p = policy();
        let o = override_from_body(&p, r#"{"ip": "2001:db8::1", "limits": {"burst": "500/s"}}"#, NOW).unwrap();
        assert_eq!(o.digest, Subject::Address("2001:db8::/64".into()).digest().as_str(), "IPv6 by /64, as identity");
        assert_eq!(o.summary, "own limits (burst), until removed");
        let r = Resolved::from_records(&p, &[(o.name, o.text)]);
        match r.lookup(&o.digest, NOW) {
            Some(Applies::Limits(t)) => {
                assert!(t.name.starts_with("override:"));
                assert_eq!(t.limits[0].algorithm.capacity(), 500);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_overrides_say_which_field() {
        let p = policy();
        let err = |body: &str| override_from_body(&p, body, NOW).unwrap_err();
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"tier": "premium"}"#).contains("exactly one"));
        assert!(err(r#"{"ip": "203.0.113.9"}"#).contains("tier"));
        assert!(err(r#"{"ip": "203.0.113.9", "tier": "gold"}"#).starts_with("tier:"));
        assert!(err(r#"{"ip": "203.0.113.9", "tier": "premium", "limits": {"a": "1/s"}}"#).contains("one of them"));
        assert!(err(r#"{"ip": "203.0.113.9", "limits": {"a": "1/fortnight"}}"#).contains("limits.a"));
        assert!(err(r#"{"ip": "203.0.113.9", "tier": "premium", "ttl": "forever"}"#).starts_with("ttl:"));
        assert!(err(r#"{"ip": "203.0.113.9", "tier": "premium", "ttl": "500ms"}"#).starts_with("ttl:"));
        assert!(err(r#"{"ip": "203.0.113.9", "tier": "premium", "colour": "red"}"#).starts_with("colour:"));
        assert!(err(r#"{"ip": 5, "tier": "premium"}"#).starts_with("ip:"));
        assert!(err(r#"{"ip": "nope", "tier": "premium"}"#).starts_with("ip:"));
    }

    #[test]
    fn a_record_that_no_longer_fits_is_set_aside() {
        let p = policy();
        let o = override_from_body(&p, r#"{"ip": "203.0.113.9", "tier": "premium"}"#, NOW).unwrap();
        let other = Policy::parse(r#"{"tiers": {"anonymous": {"limits": {"burst": "5/s"}}}}"#).unwrap();
        let r = Resolved::from_records(
            &other,
            &[(o.name.clone(), o.text), ("o:zz".into(), "{".into()), ("x".into(), "1".into())],
        );
        assert!(!r.has_overrides());
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(r.problems[0].contains("no longer in the policy"));
    }

    #[test]
    fn runtime_lists_add_to_the_policys() {
        let p = policy();
        let (records, summary) =
            lists_from_body(r#"{"block": {"addresses": ["198.51.100.7"], "user_agents": ["*bot*"]}, "allow": {"addresses": ["203.0.113.0/24"]}}"#).unwrap();
        assert_eq!(summary, "allow 1 entries, block 2 entries");
        let r = Resolved::from_records(&p, &records);
        let judge = |ip: &str, ua: Option<&str>| {
            let v = Visitor { address: ip.parse().ok(), user_agent: ua, ..Visitor::default() };
            r.lists.judge(&v)
        };
        assert!(matches!(judge("198.51.100.7", None), crate::core::lists::Listed::Blocked(_)));
        assert!(
            matches!(judge("192.0.2.5", None), crate::core::lists::Listed::Blocked(_)),
            "the policy's own list stays"
        );
        assert!(matches!(judge("10.0.0.1", Some("a bot")), crate::core::lists::Listed::Blocked(_)));
        assert!(matches!(judge("203.0.113.5", None), crate::core::lists::Listed::Allowed(_)));
        assert_eq!(r.counts(NOW), (0, 2, 1));
        assert!(lists_from_body(r#"{"block": {"addresses": ["300.1.1.1"]}}"#)
            .unwrap_err()
            .contains("block.addresses[0]"));
        assert!(lists_from_body(r#"{"deny": {}}"#).unwrap_err().starts_with("deny:"));
        assert!(lists_from_body("{}").is_err());
        let many: Vec<String> = (0..1001).map(|i| format!("\"10.{}.{}.1\"", i / 256, i % 256)).collect();
        let body = format!(r#"{{"block": {{"addresses": [{}]}}}}"#, many.join(","));
        assert!(lists_from_body(&body).unwrap_err().contains("at most 1000"));
    }

    #[test]
    fn removal_takes_a_digest_or_the_subject() {
        let p = policy();
        let d = ip_digest("203.0.113.9");
        let pairs = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(override_name(&p, &pairs("subject_hash", &d)).unwrap(), (format!("o:{d}"), d.clone()));
        assert_eq!(override_name(&p, &pairs("ip", "203.0.113.9")).unwrap().1, d);
        assert!(override_name(&p, &pairs("subject_hash", "xyz")).is_err());
        assert!(override_name(&p, &pairs("key", "k")).unwrap_err().contains("never goes in a URL"));
    }
}
