//! From the document as written to the model: what needs several fields at once. Tier
//! references resolve against the tiers, reserved tier names are refused, required fields
//! are said missing at their own path, route prefixes are normalised as `paths` says, and a
//! route's cost is checked against every limit it meets. Every problem is collected, with
//! its path, before any is reported.

use serde_json::Value;

use super::document::{self as doc, Document, Limit, Named, Object};
use super::model::parse_digest;
use super::model::{
    ApiKeys, ClientIp, HeaderStyle, Identity, IetfDraft, Jwt, Leasing, NamedLimit, Policy, PolicyError, PolicyErrors,
    Route, RouteAction, StoreSettings, Tier, TierId, WideNet, AUTH_FAILURES, IPV6_WIDE, PREFLIGHTS,
};
use crate::core::algorithm::MAX_LIMITS;
use crate::core::cors::Cors;
use crate::core::lists::{List, Lists};
use crate::core::path::{normalize_prefix, PathOptions};

/// A list as the model holds it: every entry was parsed on its own while reading.
pub fn list(l: &doc::List) -> List {
    List {
        addresses: l.addresses.iter().map(|e| e.0).collect(),
        countries: l.countries.iter().map(|e| e.0.clone()).collect(),
        asns: l.asns.iter().map(|e| e.0 as u32).collect(),
        user_agents: l.user_agents.iter().map(|e| e.0.clone()).collect(),
    }
}

/// The model of a document, or every problem found in it.
pub fn policy(d: &Document) -> Result<Policy, PolicyErrors> {
    let mut v = Validator { errors: Vec::new() };
    match v.policy(d) {
        Some(policy) if v.errors.is_empty() => Ok(policy),
        _ => Err(PolicyErrors(v.errors)),
    }
}

/// A tier's limits on their own (the decision API's inline limits), every problem at `path`.
pub fn limits(l: &Named<Limit>, path: &str) -> Result<Vec<NamedLimit>, PolicyErrors> {
    let mut v = Validator { errors: Vec::new() };
    match v.limits(l, path) {
        Some(limits) if v.errors.is_empty() => Ok(limits),
        _ => Err(PolicyErrors(v.errors)),
    }
}

/// Collects errors; each method returns `None` for what it could not accept, after saying why.
struct Validator {
    errors: Vec<PolicyError>,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The tiers as written, by name, so references resolve even when a tier itself is wrong.
struct Tiers<'d> {
    names: Vec<&'d str>,
    /// The tiers that are right, at their names' positions.
    built: Vec<Option<Tier>>,
}

impl Validator {
    fn fail<T>(&mut self, path: &str, message: impl Into<String>) -> Option<T> {
        self.errors.push(PolicyError { path: path.to_string(), message: message.into() });
        None
    }

    /// A name used in keys and headers: 1 to 32 of `a-z 0-9 _ -`.
    fn name(&mut self, s: &str, path: &str, what: &str) -> Option<String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Some(s.to_string())
        } else {
            self.fail(path, format!("`{s}` is not a valid {what} name: use 1 to 32 of a-z, 0-9, _ and -"))
        }
    }

    fn tier_ref(&mut self, s: &str, path: &str, tiers: &Tiers) -> Option<TierId> {
        match tiers.names.iter().position(|t| *t == s) {
            Some(id) => Some(TierId(id)),
            None if tiers.names.is_empty() => None, // no tiers at all: said already
            None => self.fail(path, format!("no tier named `{s}`; the tiers are: {}", tiers.names.join(", "))),
        }
    }

    fn policy(&mut self, d: &Document) -> Option<Policy> {
        let key_prefix = self.name(&d.key_prefix, "key_prefix", "key prefix");
        let tiers = self.tiers(d.tiers.as_ref(), "tiers");
        let identity = self.identity(&d.identity, "identity", &tiers);
        let paths = *d.paths;
        let cors = Cors { allow_origins: d.cors.allow_origins.0.clone(), charge_preflight: d.cors.charge_preflight };
        let preflights = self.own_tier(
            &d.cors.preflight_limits,
            "cors.preflight_limits",
            PREFLIGHTS,
            "CORS preflights, per client address",
        );
        let routes: Vec<Option<Route>> = (d.routes.iter().enumerate())
            .map(|(i, r)| self.route(r, &format!("routes[{i}]"), &tiers, &paths))
            .collect();
        let headers = match d.headers {
            doc::Headers::Ietf => HeaderStyle { ietf: Some(IetfDraft::Twelve), legacy: false },
            doc::Headers::Ietf10 => HeaderStyle { ietf: Some(IetfDraft::Ten), legacy: false },
            doc::Headers::Legacy => HeaderStyle { ietf: None, legacy: true },
            doc::Headers::Both => HeaderStyle { ietf: Some(IetfDraft::Twelve), legacy: true },
            doc::Headers::None => HeaderStyle { ietf: None, legacy: false },
        };
        let s = &d.store;
        let store = StoreSettings {
            on_failure: s.on_failure,
            timeout_ms: s.timeout.0,
            breaker_failures: s.breaker_failures.0 as u32,
            breaker_cooldown_ms: s.breaker_cooldown.0,
            memory_max_keys: s.memory_max_keys.0 as usize,
            deny_cache: s.deny_cache,
            batch: s.batch,
            controls_refresh_ms: s.controls_refresh.0,
            fleet: s.fleet,
        };
        Some(Policy {
            key_prefix: key_prefix?,
            tiers: tiers.built.into_iter().collect::<Option<Vec<Tier>>>()?,
            identity: identity?,
            paths,
            cors,
            preflights: preflights?,
            routes: routes.into_iter().collect::<Option<Vec<Route>>>()?,
            headers,
            store,
            lists: Lists { block: list(&d.block), allow: list(&d.allow) },
            shadow: d.shadow,
        })
    }

    fn tiers<'d>(&mut self, written: Option<&'d Named<Object<doc::Tier>>>, path: &str) -> Tiers<'d> {
        let written: &[(String, Object<doc::Tier>)] = match written {
            Some(t) if t.0.is_empty() => self.fail(path, "a policy needs at least one tier").unwrap_or(&[]),
            Some(t) => &t.0,
            None => self.fail(path, "missing; a policy needs at least one tier").unwrap_or(&[]),
        };
        let names = written.iter().map(|(name, _)| name.as_str()).collect();
        let built = written.iter().map(|(name, tier)| self.tier(name, tier, &join(path, name))).collect();
        Tiers { names, built }
    }

    fn tier(&mut self, name: &str, t: &doc::Tier, path: &str) -> Option<Tier> {
        let name = match self.name(name, path, "tier") {
            Some(n) if n == AUTH_FAILURES || n == IPV6_WIDE || n == PREFLIGHTS => self.fail(
                path,
                format!(
                    "`{n}` is reserved (identity.auth_failures, identity.client_ip.ipv6_wide and cors.preflight_limits use them); pick another tier name"
                ),
            ),
            other => other,
        };
        let lpath = join(path, "limits");
        let limits = match &t.limits {
            Some(l) => self.limits(l, &lpath),
            None => self.fail(&lpath, "missing; a tier needs at least one limit"),
        };
        Some(Tier {
            name: name?,
            description: t.description.clone(),
            limits: limits?,
            lease: t.lease.0,
            shadow: t.shadow,
        })
    }

    fn limits(&mut self, l: &Named<Limit>, path: &str) -> Option<Vec<NamedLimit>> {
        if l.0.is_empty() || l.0.len() > MAX_LIMITS {
            return self.fail(path, format!("a tier needs 1 to {MAX_LIMITS} limits, found {}", l.0.len()));
        }
        let limits: Vec<Option<NamedLimit>> = (l.0.iter())
            .map(|(name, limit)| {
                let name = self.name(name, &join(path, name), "limit")?;
                Some(NamedLimit { name, algorithm: limit.0 })
            })
            .collect();
        limits.into_iter().collect()
    }

    /// Limits of their own under a reserved tier name (failed credentials, preflights).
    fn own_tier(&mut self, limits: &Named<Limit>, path: &str, name: &str, description: &str) -> Option<Tier> {
        let limits = self.limits(limits, path)?;
        Some(Tier { name: name.into(), description: description.into(), limits, lease: Leasing::OFF, shadow: false })
    }

    fn identity(&mut self, i: &doc::Identity, path: &str, tiers: &Tiers) -> Option<Identity> {
        let anonymous_tier = self.tier_ref(&i.anonymous_tier, &join(path, "anonymous_tier"), tiers);
        let client_ip = self.client_ip(&i.client_ip, &join(path, "client_ip"));
        let api_key = match &i.api_key {
            None => Some(None),
            Some(k) => self.api_keys(k, &join(path, "api_key"), tiers).map(Some),
        };
        let jwt = match &i.jwt {
            None => Some(None),
            Some(j) => self.jwt(j, &join(path, "jwt"), tiers).map(Some),
        };
        let auth_failures = self.own_tier(
            &i.auth_failures,
            &join(path, "auth_failures"),
            AUTH_FAILURES,
            "Failed credentials, per client address",
        );
        Some(Identity {
            anonymous_tier: anonymous_tier?,
            client_ip: client_ip?,
            api_key: api_key?,
            jwt: jwt?,
            auth_failures: auth_failures?,
        })
    }

    fn client_ip(&mut self, c: &doc::ClientIp, path: &str) -> Option<ClientIp> {
        let ipv6_wide = match &c.ipv6_wide {
            None => Some(None),
            Some(w) => self.wide_net(w, &join(path, "ipv6_wide"), c.ipv6_prefix.0).map(Some),
        };
        Some(ClientIp {
            header: c.header.0.clone(),
            trust_forwarded_for: c.trust_forwarded_for,
            ipv4_prefix: c.ipv4_prefix.0 as u8,
            ipv6_prefix: c.ipv6_prefix.0 as u8,
            ipv6_wide: ipv6_wide?,
        })
    }

    /// The wider net must be wider than the one each caller gets (`narrow`).
    fn wide_net(&mut self, w: &doc::WideNet, path: &str, narrow: u64) -> Option<WideNet> {
        let ppath = join(path, "prefix");
        let prefix = match w.prefix {
            Some(p) if p.0 < narrow => Some(p.0 as u8),
            Some(p) => self.fail(
                &ppath,
                format!("{} is out of range; expected 16 to {}, wider than ipv6_prefix", p.0, narrow.saturating_sub(1)),
            ),
            None => self.fail(&ppath, "missing; the wider IPv6 prefix, like 48"),
        };
        let lpath = join(path, "limits");
        let limits = match &w.limits {
            Some(l) => self.limits(l, &lpath),
            None => self.fail(&lpath, "missing; the limits every caller in such a network shares"),
        };
        let tier = Tier {
            name: IPV6_WIDE.into(),
            description: "Anonymous callers, per wider IPv6 network".into(),
            limits: limits?,
            lease: Leasing::OFF,
            shadow: false,
        };
        Some(WideNet { prefix: prefix?, tier })
    }

    fn api_keys(&mut self, k: &doc::ApiKeys, path: &str, tiers: &Tiers) -> Option<ApiKeys> {
        let kpath = join(path, "keys");
        let keys = match &k.keys {
            Some(keys) => {
                let entries: Vec<Option<([u8; 32], TierId)>> = (keys.iter().enumerate())
                    .map(|(n, (digest, tier))| {
                        // An entry that is not a digest may be a raw key pasted by mistake: the
                        // error names it by position, never by its text.
                        let d = parse_digest(digest);
                        let epath = if d.is_some() { join(&kpath, digest) } else { format!("{kpath}[entry {}]", n + 1) };
                        let d = d.or_else(|| {
                            self.fail(&epath, "not a SHA-256 digest: write the key's digest as 64 hex digits (sha256sum), never the key itself")
                        });
                        let t = match tier {
                            Value::String(t) => self.tier_ref(t, &epath, tiers),
                            other => self.fail(&epath, format!("expected a tier name, found {}", type_name(other))),
                        };
                        Some((d?, t?))
                    })
                    .collect();
                entries.into_iter().collect()
            }
            None => self.fail(&kpath, "missing; map each key's SHA-256 digest to a tier"),
        };
        let prefix = k.prefix.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        Some(ApiKeys { header: k.header.0.clone(), keys: keys?, prefix })
    }

    fn jwt(&mut self, j: &doc::Jwt, path: &str, tiers: &Tiers) -> Option<Jwt> {
        let default_tier = self.tier_ref(&j.default_tier, &join(path, "default_tier"), tiers)?;
        Some(Jwt {
            tier_claim: j.tier_claim.clone(),
            default_tier,
            subject_claim: j.subject_claim.clone(),
            leeway_s: j.leeway_s.0,
            issuer: j.issuer.clone(),
            audience: j.audience.clone(),
        })
    }

    fn route(&mut self, r: &doc::Route, path: &str, tiers: &Tiers, paths: &PathOptions) -> Option<Route> {
        let ppath = join(path, "path");
        let path_prefix = match r.path.as_deref() {
            Some(p) if !p.starts_with('/') || p.contains(['?', '#', ' ']) => {
                self.fail(&ppath, format!("`{p}` is not a path prefix: it must start with / and hold no ?, # or space"))
            }
            Some(p) => match normalize_prefix(p, paths) {
                Ok(normal) => Some(normal),
                Err(e) => self.fail(&ppath, format!("`{p}`: {e}")),
            },
            None => self.fail(&ppath, "missing; the path prefix this rule matches, like \"/api/\""),
        };
        let tpath = join(path, "tiers");
        let filter = match &r.tiers {
            None => Some(Vec::new()),
            Some(ts) if ts.is_empty() => self.fail(&tpath, "expected a non-empty array of tier names, found []"),
            Some(ts) => {
                let out: Vec<Option<TierId>> =
                    ts.iter().enumerate().map(|(i, t)| self.tier_ref(t, &format!("{tpath}[{i}]"), tiers)).collect();
                out.into_iter().collect()
            }
        };
        let use_tier = match &r.use_tier {
            None => Some(None),
            Some(t) => self.tier_ref(t, &join(path, "use_tier"), tiers).map(Some),
        };
        let (use_tier, filter) = (use_tier?, filter?);
        let cost = r.cost.map(|c| c.0);
        let action = if r.exempt {
            if cost.is_some() || use_tier.is_some() || r.max_delay.is_some() {
                return self.fail(path, "an exempt rule takes no cost, use_tier or max_delay");
            }
            RouteAction::Exempt
        } else {
            let cost = cost.unwrap_or(1);
            // A cost no bucket can ever hold would make the route unreachable: say so now.
            let applies_to: Vec<TierId> = match use_tier {
                Some(t) => vec![t],
                None if filter.is_empty() => (0..tiers.names.len()).map(TierId).collect(),
                None => filter.clone(),
            };
            for t in applies_to {
                let Some(Some(tier)) = tiers.built.get(t.0) else { continue };
                if let Some(l) = tier.limits.iter().find(|l| l.algorithm.capacity() < cost) {
                    return self.fail(
                        &join(path, "cost"),
                        format!(
                            "cost {cost} is more than limit `{}` of tier `{}` can ever hold ({}), so the route could never pass",
                            l.name, tier.name, l.algorithm.capacity()
                        ),
                    );
                }
            }
            RouteAction::Limit { cost, tier: use_tier }
        };
        Some(Route {
            methods: r.method.0.clone(),
            path_prefix: path_prefix?,
            tiers: filter,
            action,
            websocket_messages: r.websocket_messages.map(|l| l.0),
            shadow: r.shadow,
            max_delay_ms: r.max_delay.map_or(0, |d| d.0),
        })
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
