//! The policy: which limits apply to whom, parsed from JSON into types that cannot hold an
//! invalid value. Parsing walks the document by hand so that every error carries the path
//! of the field at fault (`tiers.premium.limits.burst.refill`) and what is wrong with it,
//! and so that unknown fields are refused rather than silently ignored.
//!
//! The format is documented in docs/policy.md; `policy.example.json` is a full
//! example and is what the Worker runs when no policy is configured.

use std::fmt;

use serde_json::{Map, Value};

use super::algorithm::{Algorithm, MAX_LIMITS};
use super::cors::{AllowOrigins, Cors};
use super::path::{normalize_prefix, PathOptions};
use super::rate::{parse_duration_ms, Rate};

/// The policy the Worker runs when none is configured: three tiers and a few routes.
pub const EXAMPLE_POLICY: &str = include_str!("../../policy.example.json");

/// A tier of one policy, as its rules and callers name it. Only the parser makes one, from
/// a tier it found, so [`Policy::tier`] resolves it; it is not a number to count with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TierId(usize);

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Prefix of every store key, so several limiters can share one database.
    pub key_prefix: String,
    pub tiers: Vec<Tier>,
    pub identity: Identity,
    /// How the origin reads paths, so route rules read them the same way.
    pub paths: PathOptions,
    /// CORS fields on the limiter's own answers, and whether preflights are charged.
    pub cors: Cors,
    /// Preflights not charged to the caller's tier still count here, per client address, so
    /// `OPTIONS` cannot carry a flood to the origin: a tier named [`PREFLIGHTS`].
    pub preflights: Tier,
    /// Route rules, first match wins.
    pub routes: Vec<Route>,
    pub headers: HeaderStyle,
    pub store: StoreSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    pub name: String,
    pub description: String,
    /// One to [`MAX_LIMITS`] limits, all checked together.
    pub limits: Vec<NamedLimit>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NamedLimit {
    pub name: String,
    pub algorithm: Algorithm,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// Tier of callers who present no credential, keyed by client IP.
    pub anonymous_tier: TierId,
    pub client_ip: ClientIp,
    pub api_key: Option<ApiKeys>,
    pub jwt: Option<Jwt>,
    /// What a failed credential (an unknown API key, a bad JWT, a wrong admin token) costs
    /// the caller's address: limits of their own, keyed by the address like the anonymous
    /// tier, so guessing is limited like any other abuse. A tier named [`AUTH_FAILURES`].
    pub auth_failures: Tier,
}

/// The name of the limits that failed credentials consume from, reserved: no policy tier
/// may take it, so no caller can be put in it by a claim.
pub const AUTH_FAILURES: &str = "auth-failures";

/// The `identity.auth_failures` of a policy that names none: ten failures at once, then one
/// every six minutes.
const DEFAULT_AUTH_FAILURES: &str = r#"{"failures": {"token_bucket": {"capacity": 10, "refill": "10/h"}}}"#;

#[derive(Clone, Debug, PartialEq)]
pub struct ClientIp {
    /// Lower-case header name holding the client IP (Cloudflare sets `cf-connecting-ip`).
    pub header: String,
    /// Take the first `X-Forwarded-For` address when the IP header is absent. Only for an
    /// origin behind a proxy you control: clients can write that header themselves.
    pub trust_forwarded_for: bool,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// A second, wider net for IPv6: anonymous callers are also checked, by their wider
    /// network (a /48, say), against limits of its own, so one allocation cannot rotate
    /// through its 65,536 /64s for fresh buckets.
    pub ipv6_wide: Option<WideNet>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WideNet {
    pub prefix: u8,
    /// The limits every anonymous caller in one such network shares; a tier named
    /// [`IPV6_WIDE`].
    pub tier: Tier,
}

/// The name of the preflights' own limits (`cors.preflight_limits`), reserved like
/// [`AUTH_FAILURES`].
pub const PREFLIGHTS: &str = "preflights";

/// The `cors.preflight_limits` of a policy that names none: generous, since browsers cache
/// preflights, yet bounded.
const DEFAULT_PREFLIGHTS: &str = r#"{"preflights": {"token_bucket": {"capacity": 100, "refill": "10/s"}}}"#;

/// The name of the wide IPv6 net's limits, reserved like [`AUTH_FAILURES`].
pub const IPV6_WIDE: &str = "ipv6-wide";

#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeys {
    pub header: String,
    /// SHA-256 digests of the keys, with the tier each key belongs to.
    pub keys: Vec<([u8; 32], TierId)>,
    /// When set, only keys that start with it are ours; any other value of the header is
    /// the app's own key, passed on untouched. Empty: every value is ours.
    pub prefix: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Jwt {
    pub tier_claim: String,
    /// Tier of a valid token whose claim is absent or names no tier of this policy.
    pub default_tier: TierId,
    pub subject_claim: String,
    pub leeway_s: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Matches this path and everything below it, segment by segment. In the form of
    /// `NormalPath::matched` (`path::normalize_prefix`), so it compares as the origin would.
    pub path_prefix: String,
    /// Caller tiers the rule applies to; empty means all.
    pub tiers: Vec<TierId>,
    pub action: RouteAction,
    /// For WebSockets opened on this route: how many messages a client may send per
    /// connection (a limit like `"20/s"`); past it the connection is closed with 1008.
    pub websocket_messages: Option<Algorithm>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteAction {
    Exempt,
    /// Check `cost` units, against `tier`'s limits instead of the caller's when set.
    Limit {
        cost: u64,
        tier: Option<TierId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit`, as in the IETF draft.
    pub ietf: bool,
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    pub legacy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Decide from the isolate's own memory buckets (the default).
    Memory,
    /// Let every request through while the store is failing.
    Open,
    /// Refuse requests (429 `store-unavailable`, with Retry-After) while the store is failing.
    Closed,
}

impl FailMode {
    /// The name the policy writes it with.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailMode::Memory => "memory",
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    pub on_failure: FailMode,
    pub timeout_ms: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub memory_max_keys: usize,
    pub deny_cache: bool,
}

/// What the Worker does with one request, per the route rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Exempt,
    Check { tier: TierId, cost: u64 },
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Policy, PolicyErrors> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            PolicyErrors(vec![PolicyError { path: String::new(), message: format!("not valid JSON: {e}") }])
        })?;
        let mut p = Parser { errors: Vec::new() };
        let policy = p.policy(&value);
        match policy {
            Some(policy) if p.errors.is_empty() => Ok(policy),
            _ => Err(PolicyErrors(p.errors)),
        }
    }

    /// The policy compiled into the Worker.
    pub fn example() -> Policy {
        match Policy::parse(EXAMPLE_POLICY) {
            Ok(p) => p,
            Err(e) => panic!("policy.example.json is invalid: {e}"),
        }
    }

    /// Removes the API keys whose digests are in `digests`; returns how many there were.
    /// The Worker drops the published demo keys this way in front of any real origin.
    pub fn drop_keys(&mut self, digests: &[&str]) -> usize {
        let Some(api_key) = &mut self.identity.api_key else { return 0 };
        let before = api_key.keys.len();
        let dropped: Vec<[u8; 32]> = digests.iter().filter_map(|d| parse_digest(d)).collect();
        api_key.keys.retain(|(digest, _)| !dropped.contains(digest));
        before - api_key.keys.len()
    }

    pub fn tier_id(&self, name: &str) -> Option<TierId> {
        self.tiers.iter().position(|t| t.name == name).map(TierId)
    }

    /// The tier an id of this policy names (`None` only for an id from another policy).
    pub fn tier(&self, id: TierId) -> Option<&Tier> {
        self.tiers.get(id.0)
    }

    /// The first route rule that matches a request by `caller_tier`.
    pub fn rule(&self, method: &str, path: &str, caller_tier: TierId) -> Option<&Route> {
        self.routes.iter().find(|r| {
            (r.methods.is_empty() || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
                && (r.tiers.is_empty() || r.tiers.contains(&caller_tier))
                && path_has_prefix(path, &r.path_prefix)
        })
    }

    /// Applies the route rules to a request by `caller_tier`.
    pub fn plan(&self, method: &str, path: &str, caller_tier: TierId) -> Plan {
        Policy::plan_of(self.rule(method, path, caller_tier), caller_tier)
    }

    /// What the rule found by [`Policy::rule`] (or none) does with a request by `caller_tier`.
    pub fn plan_of(rule: Option<&Route>, caller_tier: TierId) -> Plan {
        match rule.map(|r| r.action) {
            Some(RouteAction::Exempt) => Plan::Exempt,
            Some(RouteAction::Limit { cost, tier }) => Plan::Check { tier: tier.unwrap_or(caller_tier), cost },
            None => Plan::Check { tier: caller_tier, cost: 1 },
        }
    }
}

/// `/api` covers `/api` and `/api/x` but not `/apix`; a prefix ending in `/` covers what
/// starts with it.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// One thing wrong with a policy: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// Dotted path to the field, e.g. `tiers.premium.limits.burst.capacity`; empty for the
    /// document itself.
    pub path: String,
    pub message: String,
}

/// Every problem found in a policy, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "policy: {}", self.message)
        } else {
            write!(f, "policy field `{}`: {}", self.path, self.message)
        }
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// The store settings of a policy that names none.
pub const DEFAULT_STORE: StoreSettings = StoreSettings {
    on_failure: FailMode::Memory,
    timeout_ms: 300,
    breaker_failures: 3,
    breaker_cooldown_ms: 10_000,
    memory_max_keys: 10_000,
    deny_cache: true,
};

/// Collects errors while walking the document; each method returns `None` for a value it
/// could not accept, after recording why.
struct Parser {
    errors: Vec<PolicyError>,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
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

impl Parser {
    fn ok<T>(&mut self, result: Result<T, String>, path: &str) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => self.fail(path, e),
        }
    }

    fn fail<T>(&mut self, path: &str, message: impl Into<String>) -> Option<T> {
        self.errors.push(PolicyError { path: path.to_string(), message: message.into() });
        None
    }

    /// An object whose fields are all in `known`; unknown ones are reported.
    fn object<'v>(&mut self, v: &'v Value, path: &str, known: &[&str]) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = v else {
            return self.fail(path, format!("expected an object, found {}", type_name(v)));
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.fail::<()>(&join(path, key), format!("unknown field; expected one of: {}", known.join(", ")));
            }
        }
        Some(map)
    }

    fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            _ => self.fail(path, format!("expected a string, found {}", type_name(v))),
        }
    }

    fn integer(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => self.fail(path, format!("{n} is out of range; expected {min} to {max}")),
            None => {
                self.fail(path, format!("expected a whole number from {min} to {max}, found {}", type_name_or_value(v)))
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => self.fail(path, format!("expected true or false, found {}", type_name(v))),
        }
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

    fn header_name(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        let ok =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Some(s.to_ascii_lowercase())
        } else {
            self.fail(path, format!("`{s}` is not a valid header name"))
        }
    }

    fn tier_ref(&mut self, v: &Value, path: &str, tiers: &[Tier]) -> Option<TierId> {
        let s = self.string(v, path)?;
        match tiers.iter().position(|t| t.name == s) {
            Some(id) => Some(TierId(id)),
            None if tiers.is_empty() => None, // the tiers themselves failed; said already
            None => {
                let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
                self.fail(path, format!("no tier named `{s}`; the tiers are: {}", names.join(", ")))
            }
        }
    }

    fn policy(&mut self, v: &Value) -> Option<Policy> {
        let known = ["version", "key_prefix", "tiers", "identity", "paths", "cors", "routes", "headers", "store"];
        let map = self.object(v, "", &known)?;
        if let Some(version) = map.get("version") {
            if version.as_u64() != Some(1) {
                self.fail::<()>("version", "only version 1 exists; write 1 or leave it out");
            }
        }
        let key_prefix = match map.get("key_prefix") {
            None => Some("rl".to_string()),
            Some(v) => self.string(v, "key_prefix").and_then(|s| self.name(s, "key_prefix", "key prefix")),
        };
        let tiers = match map.get("tiers") {
            Some(v) => self.tiers(v, "tiers"),
            None => self.fail("tiers", "missing; a policy needs at least one tier"),
        };
        let tier_list = tiers.clone().unwrap_or_default();
        let identity = self.identity(map.get("identity").unwrap_or(&Value::Null), "identity", &tier_list);
        let paths = match map.get("paths") {
            None => Some(PathOptions::default()),
            Some(v) => self.paths(v, "paths"),
        };
        let cors = match map.get("cors") {
            None => Some(Cors::default()),
            Some(v) => self.cors(v, "cors"),
        };
        let preflights = self.own_tier(
            map.get("cors").and_then(|c| c.get("preflight_limits")),
            "cors.preflight_limits",
            DEFAULT_PREFLIGHTS,
            PREFLIGHTS,
            "CORS preflights, per client address",
        );
        let routes = match map.get("routes") {
            None => Some(Vec::new()),
            Some(v) => self.routes(v, "routes", &tier_list, &paths.unwrap_or_default()),
        };
        let headers = match map.get("headers") {
            None => Some(HeaderStyle { ietf: true, legacy: false }),
            Some(v) => self.header_style(v, "headers"),
        };
        let store = match map.get("store") {
            None => Some(DEFAULT_STORE),
            Some(v) => self.store(v, "store"),
        };
        Some(Policy {
            key_prefix: key_prefix?,
            tiers: tiers?,
            identity: identity?,
            paths: paths?,
            cors: cors?,
            preflights: preflights?,
            routes: routes?,
            headers: headers?,
            store: store?,
        })
    }

    fn tiers(&mut self, v: &Value, path: &str) -> Option<Vec<Tier>> {
        let Value::Object(map) = v else {
            return self.fail(path, format!("expected an object of tiers by name, found {}", type_name(v)));
        };
        if map.is_empty() {
            return self.fail(path, "a policy needs at least one tier");
        }
        let mut tiers = Vec::new();
        let mut ok = true;
        for (name, tier) in map {
            let tpath = join(path, name);
            match self.tier(name, tier, &tpath) {
                Some(t) => tiers.push(t),
                None => ok = false,
            }
        }
        ok.then_some(tiers)
    }

    fn tier(&mut self, name: &str, v: &Value, path: &str) -> Option<Tier> {
        let name = match self.name(name, path, "tier") {
            Some(n) if n == AUTH_FAILURES || n == IPV6_WIDE || n == PREFLIGHTS => self.fail(
                path,
                format!(
                    "`{n}` is reserved (identity.auth_failures, identity.client_ip.ipv6_wide and cors.preflight_limits use them); pick another tier name"
                ),
            ),
            other => other,
        };
        let map = self.object(v, path, &["description", "limits"])?;
        let description = match map.get("description") {
            None => String::new(),
            Some(d) => self.string(d, &join(path, "description"))?.to_string(),
        };
        let lpath = join(path, "limits");
        let limits = match map.get("limits") {
            Some(l) => self.limits(l, &lpath),
            None => self.fail(&lpath, "missing; a tier needs at least one limit"),
        };
        Some(Tier { name: name?, description, limits: limits? })
    }

    fn limits(&mut self, v: &Value, path: &str) -> Option<Vec<NamedLimit>> {
        let Value::Object(map) = v else {
            return self.fail(path, format!("expected an object of limits by name, found {}", type_name(v)));
        };
        if map.is_empty() || map.len() > MAX_LIMITS {
            return self.fail(path, format!("a tier needs 1 to {MAX_LIMITS} limits, found {}", map.len()));
        }
        let mut limits = Vec::new();
        let mut ok = true;
        for (name, limit) in map {
            let lpath = join(path, name);
            let name = self.name(name, &lpath, "limit");
            match (name, self.limit(limit, &lpath)) {
                (Some(name), Some(algorithm)) => limits.push(NamedLimit { name, algorithm }),
                _ => ok = false,
            }
        }
        ok.then_some(limits)
    }

    /// `"10/s"` (a token bucket holding 10, refilling 10 per second), or an object with
    /// exactly one of `token_bucket`, `fixed_window`, `sliding_window`.
    fn limit(&mut self, v: &Value, path: &str) -> Option<Algorithm> {
        if let Value::String(s) = v {
            return self.bucket_shorthand(s, path);
        }
        let kinds = ["token_bucket", "fixed_window", "sliding_window"];
        let map = self.object(v, path, &kinds)?;
        if map.len() != 1 {
            return self.fail(path, "give exactly one of token_bucket, fixed_window, sliding_window");
        }
        let (kind, spec) = map.iter().next()?;
        let kpath = join(path, kind);
        match kind.as_str() {
            "token_bucket" => match spec {
                Value::String(s) => self.bucket_shorthand(s, &kpath),
                _ => self.bucket(spec, &kpath),
            },
            _ => {
                let text = self.string(spec, &kpath)?;
                let (limit, window) = self.ok(Rate::parse_window(text), &kpath)?;
                let made = if kind == "fixed_window" {
                    Algorithm::fixed_window(limit, window)
                } else {
                    Algorithm::sliding_window(limit, window)
                };
                self.ok(made, &kpath)
            }
        }
    }

    fn bucket_shorthand(&mut self, s: &str, path: &str) -> Option<Algorithm> {
        let whole = Rate::parse_window(s).map_err(|e| {
            format!("{e}; for a fractional rate write {{\"token_bucket\": {{\"capacity\": N, \"refill\": \"{s}\"}}}}")
        });
        let (count, window) = self.ok(whole, path)?;
        let refill = self.ok(Rate::new(count, window), path)?;
        self.ok(Algorithm::token_bucket(count, refill), path)
    }

    fn bucket(&mut self, v: &Value, path: &str) -> Option<Algorithm> {
        let map = self.object(v, path, &["capacity", "refill"])?;
        let cpath = join(path, "capacity");
        let rpath = join(path, "refill");
        let capacity = match map.get("capacity") {
            Some(c) => self.integer(c, &cpath, 1, 1 << 53),
            None => self.fail(&cpath, "missing; how many units the bucket holds (its burst)"),
        };
        let refill = match map.get("refill") {
            Some(r) => self.string(r, &rpath).and_then(|s| self.ok(Rate::parse(s), &rpath)),
            None => self.fail(&rpath, "missing; how fast units come back, like \"10/s\" or \"0.1/s\""),
        };
        self.ok(Algorithm::token_bucket(capacity?, refill?), path)
    }

    fn identity(&mut self, v: &Value, path: &str, tiers: &[Tier]) -> Option<Identity> {
        let empty = Map::new();
        let map = match v {
            Value::Null => &empty,
            _ => self.object(v, path, &["anonymous_tier", "client_ip", "api_key", "jwt", "auth_failures"])?,
        };
        let anonymous_tier = match map.get("anonymous_tier") {
            Some(t) => self.tier_ref(t, &join(path, "anonymous_tier"), tiers),
            None => self.tier_ref(&Value::String("anonymous".into()), &join(path, "anonymous_tier"), tiers),
        };
        let client_ip = self.client_ip(map.get("client_ip").unwrap_or(&Value::Null), &join(path, "client_ip"));
        let api_key = match map.get("api_key") {
            None => Some(None),
            Some(v) => self.api_keys(v, &join(path, "api_key"), tiers).map(Some),
        };
        let jwt = match map.get("jwt") {
            None => Some(None),
            Some(v) => self.jwt(v, &join(path, "jwt"), tiers).map(Some),
        };
        let auth_failures = self.own_tier(
            map.get("auth_failures"),
            &join(path, "auth_failures"),
            DEFAULT_AUTH_FAILURES,
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

    fn client_ip(&mut self, v: &Value, path: &str) -> Option<ClientIp> {
        let mut ip = ClientIp {
            header: "cf-connecting-ip".into(),
            trust_forwarded_for: false,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            ipv6_wide: None,
        };
        if v.is_null() {
            return Some(ip);
        }
        let map =
            self.object(v, path, &["header", "trust_forwarded_for", "ipv4_prefix", "ipv6_prefix", "ipv6_wide"])?;
        let mut ok = true;
        if let Some(h) = map.get("header") {
            ok &= self.header_name(h, &join(path, "header")).map(|h| ip.header = h).is_some();
        }
        if let Some(b) = map.get("trust_forwarded_for") {
            ok &= self.boolean(b, &join(path, "trust_forwarded_for")).map(|b| ip.trust_forwarded_for = b).is_some();
        }
        if let Some(n) = map.get("ipv4_prefix") {
            ok &= self.integer(n, &join(path, "ipv4_prefix"), 8, 32).map(|n| ip.ipv4_prefix = n as u8).is_some();
        }
        if let Some(n) = map.get("ipv6_prefix") {
            ok &= self.integer(n, &join(path, "ipv6_prefix"), 16, 128).map(|n| ip.ipv6_prefix = n as u8).is_some();
        }
        if let Some(w) = map.get("ipv6_wide") {
            let wpath = join(path, "ipv6_wide");
            let wide = self.object(w, &wpath, &["prefix", "limits"]).and_then(|m| {
                let narrow = ip.ipv6_prefix as u64;
                let prefix = match m.get("prefix") {
                    Some(n) => self
                        .integer(n, &join(&wpath, "prefix"), 16, narrow.saturating_sub(1).max(16))
                        .filter(|p| *p < narrow),
                    None => self.fail(&join(&wpath, "prefix"), "missing; the wider IPv6 prefix, like 48"),
                };
                let limits = match m.get("limits") {
                    Some(l) => self.limits(l, &join(&wpath, "limits")),
                    None => {
                        self.fail(&join(&wpath, "limits"), "missing; the limits every caller in such a network shares")
                    }
                };
                let tier = Tier {
                    name: IPV6_WIDE.into(),
                    description: "Anonymous callers, per wider IPv6 network".into(),
                    limits: limits?,
                };
                Some(WideNet { prefix: prefix? as u8, tier })
            });
            ok &= wide.map(|w| ip.ipv6_wide = Some(w)).is_some();
        }
        ok.then_some(ip)
    }

    fn api_keys(&mut self, v: &Value, path: &str, tiers: &[Tier]) -> Option<ApiKeys> {
        let map = self.object(v, path, &["header", "keys", "prefix"])?;
        let header = match map.get("header") {
            None => Some("x-api-key".to_string()),
            Some(h) => self.header_name(h, &join(path, "header")),
        };
        let prefix = match map.get("prefix") {
            None => Some(String::new()),
            Some(p) => self.string(p, &join(path, "prefix")).and_then(|p| {
                if !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_graphic()) {
                    Some(p.to_string())
                } else {
                    self.fail(
                        &join(path, "prefix"),
                        format!("`{p}` is not a key prefix: 1 to 32 visible ASCII characters, like \"rl_\""),
                    )
                }
            }),
        };
        let kpath = join(path, "keys");
        let keys = match map.get("keys") {
            Some(Value::Object(keys)) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (n, (digest, tier)) in keys.iter().enumerate() {
                    // An entry that is not a digest may be a raw key pasted by mistake: the
                    // error names it by position, never by its text.
                    let d = parse_digest(digest);
                    let epath = if d.is_some() { join(&kpath, digest) } else { format!("{kpath}[entry {}]", n + 1) };
                    let d = d.or_else(|| {
                        self.fail(&epath, "not a SHA-256 digest: write the key's digest as 64 hex digits (sha256sum), never the key itself")
                    });
                    match (d, self.tier_ref(tier, &epath, tiers)) {
                        (Some(d), Some(t)) => out.push((d, t)),
                        _ => ok = false,
                    }
                }
                ok.then_some(out)
            }
            Some(other) => {
                self.fail(&kpath, format!("expected an object of SHA-256 digest to tier, found {}", type_name(other)))
            }
            None => self.fail(&kpath, "missing; map each key's SHA-256 digest to a tier"),
        };
        Some(ApiKeys { header: header?, keys: keys?, prefix: prefix? })
    }

    fn jwt(&mut self, v: &Value, path: &str, tiers: &[Tier]) -> Option<Jwt> {
        let known = ["tier_claim", "default_tier", "subject_claim", "leeway_s", "issuer", "audience"];
        let map = self.object(v, path, &known)?;
        let text = |p: &mut Parser, field: &str, default: Option<&str>| -> Option<Option<String>> {
            match map.get(field) {
                None => Some(default.map(String::from)),
                Some(v) => p.string(v, &join(path, field)).map(|s| Some(s.to_string())),
            }
        };
        let tier_claim = text(self, "tier_claim", Some("tier"));
        let subject_claim = text(self, "subject_claim", Some("sub"));
        let issuer = text(self, "issuer", None);
        let audience = text(self, "audience", None);
        let default_tier = match map.get("default_tier") {
            Some(t) => self.tier_ref(t, &join(path, "default_tier"), tiers),
            None => self.tier_ref(&Value::String("authenticated".into()), &join(path, "default_tier"), tiers),
        };
        let leeway_s = match map.get("leeway_s") {
            None => Some(0),
            Some(n) => self.integer(n, &join(path, "leeway_s"), 0, 300),
        };
        Some(Jwt {
            tier_claim: tier_claim??,
            default_tier: default_tier?,
            subject_claim: subject_claim??,
            leeway_s: leeway_s?,
            issuer: issuer?,
            audience: audience?,
        })
    }

    fn cors(&mut self, v: &Value, path: &str) -> Option<Cors> {
        // `preflight_limits` is read by `own_tier`, beside the other reserved tiers.
        let map = self.object(v, path, &["allow_origins", "charge_preflight", "preflight_limits"])?;
        let mut c = Cors::default();
        let mut ok = true;
        if let Some(o) = map.get("allow_origins") {
            let opath = join(path, "allow_origins");
            let origins = match o {
                Value::String(s) if s == "*" => Some(AllowOrigins::Any),
                Value::Array(list) if list.is_empty() => Some(AllowOrigins::None),
                Value::Array(list) => {
                    let items: Vec<Option<String>> = list
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            let ipath = format!("{opath}[{i}]");
                            let s = self.string(item, &ipath)?;
                            let (scheme, host) = s.split_once("://").unwrap_or(("", ""));
                            if matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains(['/', ' ', '*'])
                            {
                                Some(s.to_string())
                            } else {
                                self.fail(
                                    &ipath,
                                    format!(
                                        "`{s}` is not an origin: write scheme and host, like \"https://app.example\""
                                    ),
                                )
                            }
                        })
                        .collect();
                    items.into_iter().collect::<Option<Vec<String>>>().map(AllowOrigins::List)
                }
                other => self.fail(
                    &opath,
                    format!("expected \"*\" or an array of origins, found {}", type_name_or_value(other)),
                ),
            };
            ok &= origins.map(|o| c.allow_origins = o).is_some();
        }
        if let Some(b) = map.get("charge_preflight") {
            ok &= self.boolean(b, &join(path, "charge_preflight")).map(|b| c.charge_preflight = b).is_some();
        }
        ok.then_some(c)
    }

    /// Limits of their own under a reserved tier name (failed credentials, preflights): as
    /// the policy writes them at `path`, or the built-in `default`.
    fn own_tier(
        &mut self,
        v: Option<&Value>,
        path: &str,
        default: &str,
        name: &str,
        description: &str,
    ) -> Option<Tier> {
        let limits = match v {
            Some(v) => self.limits(v, path),
            None => match serde_json::from_str::<Value>(default) {
                Ok(v) => self.limits(&v, path),
                Err(e) => self.fail(path, format!("the built-in default is not JSON: {e}")),
            },
        };
        Some(Tier { name: name.into(), description: description.into(), limits: limits? })
    }

    fn paths(&mut self, v: &Value, path: &str) -> Option<PathOptions> {
        let map = self.object(v, path, &["case_insensitive", "ignore_params", "merge_slashes"])?;
        let mut o = PathOptions::default();
        let mut ok = true;
        if let Some(b) = map.get("case_insensitive") {
            ok &= self.boolean(b, &join(path, "case_insensitive")).map(|b| o.case_insensitive = b).is_some();
        }
        if let Some(b) = map.get("ignore_params") {
            ok &= self.boolean(b, &join(path, "ignore_params")).map(|b| o.ignore_params = b).is_some();
        }
        if let Some(b) = map.get("merge_slashes") {
            ok &= self.boolean(b, &join(path, "merge_slashes")).map(|b| o.merge_slashes = b).is_some();
        }
        ok.then_some(o)
    }

    fn routes(&mut self, v: &Value, path: &str, tiers: &[Tier], paths: &PathOptions) -> Option<Vec<Route>> {
        let Value::Array(items) = v else {
            return self.fail(path, format!("expected an array of route rules, found {}", type_name(v)));
        };
        let mut routes = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.route(item, &format!("{path}[{i}]"), tiers, paths) {
                Some(r) => routes.push(r),
                None => ok = false,
            }
        }
        ok.then_some(routes)
    }

    fn route(&mut self, v: &Value, path: &str, tiers: &[Tier], paths: &PathOptions) -> Option<Route> {
        let known = ["method", "path", "tiers", "cost", "exempt", "use_tier", "websocket_messages"];
        let map = self.object(v, path, &known)?;
        let ppath = join(path, "path");
        let path_prefix = match map.get("path") {
            Some(p) => self.string(p, &ppath).and_then(|p| {
                if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                    return self.fail(
                        &ppath,
                        format!("`{p}` is not a path prefix: it must start with / and hold no ?, # or space"),
                    );
                }
                match normalize_prefix(p, paths) {
                    Ok(normal) => Some(normal),
                    Err(e) => self.fail(&ppath, format!("`{p}`: {e}")),
                }
            }),
            None => self.fail(&ppath, "missing; the path prefix this rule matches, like \"/api/\""),
        };
        let mpath = join(path, "method");
        let methods = match map.get("method") {
            None => Some(Vec::new()),
            Some(Value::String(m)) => self.method(m, &mpath).map(|m| vec![m]),
            Some(Value::Array(ms)) if !ms.is_empty() => {
                let mut out = Vec::new();
                for (i, m) in ms.iter().enumerate() {
                    let p = format!("{mpath}[{i}]");
                    let m = self.string(m, &p).and_then(|m| self.method(m, &p));
                    out.push(m);
                }
                out.into_iter().collect()
            }
            Some(other) => {
                self.fail(&mpath, format!("expected a method or a non-empty array of them, found {}", type_name(other)))
            }
        };
        let tpath = join(path, "tiers");
        let filter = match map.get("tiers") {
            None => Some(Vec::new()),
            Some(Value::Array(ts)) if !ts.is_empty() => {
                let out: Vec<Option<TierId>> =
                    ts.iter().enumerate().map(|(i, t)| self.tier_ref(t, &format!("{tpath}[{i}]"), tiers)).collect();
                out.into_iter().collect()
            }
            Some(other) => {
                self.fail(&tpath, format!("expected a non-empty array of tier names, found {}", type_name(other)))
            }
        };
        let exempt = match map.get("exempt") {
            None => Some(false),
            Some(b) => self.boolean(b, &join(path, "exempt")),
        };
        let cost = match map.get("cost") {
            None => Some(None),
            Some(c) => self.integer(c, &join(path, "cost"), 0, 1 << 53).map(Some),
        };
        let use_tier = match map.get("use_tier") {
            None => Some(None),
            Some(t) => self.tier_ref(t, &join(path, "use_tier"), tiers).map(Some),
        };
        let websocket_messages = match map.get("websocket_messages") {
            None => Some(None),
            Some(l) => self.limit(l, &join(path, "websocket_messages")).map(Some),
        };
        let (exempt, cost, use_tier, filter, websocket_messages) =
            (exempt?, cost?, use_tier?, filter?, websocket_messages?);
        let action = if exempt {
            if cost.is_some() || use_tier.is_some() {
                return self.fail(path, "an exempt rule takes no cost or use_tier");
            }
            RouteAction::Exempt
        } else {
            let cost = cost.unwrap_or(1);
            // A cost no bucket can ever hold would make the route unreachable: say so now.
            let applies_to: Vec<TierId> = match use_tier {
                Some(t) => vec![t],
                None if filter.is_empty() => (0..tiers.len()).map(TierId).collect(),
                None => filter.clone(),
            };
            for t in applies_to {
                let Some(tier) = tiers.get(t.0) else { continue };
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
        Some(Route { methods: methods?, path_prefix: path_prefix?, tiers: filter, action, websocket_messages })
    }

    fn method(&mut self, m: &str, path: &str) -> Option<String> {
        // A token (RFC 9110 §5.6.2): extension methods such as PROPFIND or M-SEARCH too.
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if !m.is_empty() && m.len() <= 32 && m.bytes().all(tchar) {
            Some(m.to_ascii_uppercase())
        } else {
            self.fail(path, format!("`{m}` is not an HTTP method"))
        }
    }

    fn header_style(&mut self, v: &Value, path: &str) -> Option<HeaderStyle> {
        match v.as_str() {
            Some("ietf") => Some(HeaderStyle { ietf: true, legacy: false }),
            Some("legacy") => Some(HeaderStyle { ietf: false, legacy: true }),
            Some("both") => Some(HeaderStyle { ietf: true, legacy: true }),
            Some("none") => Some(HeaderStyle { ietf: false, legacy: false }),
            _ => self.fail(
                path,
                format!("expected \"ietf\", \"legacy\", \"both\" or \"none\", found {}", type_name_or_value(v)),
            ),
        }
    }

    fn store(&mut self, v: &Value, path: &str) -> Option<StoreSettings> {
        let known = ["on_failure", "timeout", "breaker_failures", "breaker_cooldown", "memory_max_keys", "deny_cache"];
        let map = self.object(v, path, &known)?;
        let mut s = DEFAULT_STORE;
        let mut ok = true;
        if let Some(m) = map.get("on_failure") {
            let mode = match m.as_str() {
                Some("memory") => Some(FailMode::Memory),
                Some("open") => Some(FailMode::Open),
                Some("closed") => Some(FailMode::Closed),
                _ => self.fail(
                    &join(path, "on_failure"),
                    format!("expected \"memory\", \"open\" or \"closed\", found {}", type_name_or_value(m)),
                ),
            };
            ok &= mode.map(|m| s.on_failure = m).is_some();
        }
        if let Some(t) = map.get("timeout") {
            ok &= self.duration(t, &join(path, "timeout"), 1, 30_000).map(|t| s.timeout_ms = t).is_some();
        }
        if let Some(n) = map.get("breaker_failures") {
            ok &= self
                .integer(n, &join(path, "breaker_failures"), 1, 1_000)
                .map(|n| s.breaker_failures = n as u32)
                .is_some();
        }
        if let Some(t) = map.get("breaker_cooldown") {
            ok &= self
                .duration(t, &join(path, "breaker_cooldown"), 1, 3_600_000)
                .map(|t| s.breaker_cooldown_ms = t)
                .is_some();
        }
        if let Some(n) = map.get("memory_max_keys") {
            ok &= self
                .integer(n, &join(path, "memory_max_keys"), 1, 1_000_000)
                .map(|n| s.memory_max_keys = n as usize)
                .is_some();
        }
        if let Some(b) = map.get("deny_cache") {
            ok &= self.boolean(b, &join(path, "deny_cache")).map(|b| s.deny_cache = b).is_some();
        }
        ok.then_some(s)
    }

    /// "250ms", "10s"; bounds in ms.
    fn duration(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
        let text = self.string(v, path)?;
        let ms = self.ok(parse_duration_ms(text.trim(), false), path)?;
        if (min..=max).contains(&ms) {
            Some(ms)
        } else {
            self.fail(path, format!("`{text}` is out of range; expected {min} ms to {max} ms"))
        }
    }
}

fn type_name_or_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{s}\""),
        other => type_name(other).to_string(),
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Policy::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn has(errs: &[String], path: &str, words: &str) -> bool {
        errs.iter().any(|e| e.contains(&format!("`{path}`")) && e.contains(words))
    }

    const MINIMAL: &str = r#"{"tiers": {"anonymous": {"limits": {"burst": "10/s"}}}}"#;

    #[test]
    fn the_example_policy_parses() {
        let p = Policy::example();
        let names: Vec<&str> = p.tiers.iter().map(|t| t.name.as_str()).collect();
        for want in ["anonymous", "authenticated", "premium"] {
            assert!(names.contains(&want), "{names:?}");
        }
        assert!(p.identity.api_key.is_some() && p.identity.jwt.is_some());
    }

    #[test]
    fn the_example_policy_has_one_home() {
        // The default wrangler.toml sets no POLICY: the binary embeds policy.example.json, the
        // one copy. A second copy pasted into wrangler.toml would drift from it.
        let toml = include_str!("../../wrangler.toml");
        assert!(!toml.lines().any(|l| l.trim_start().starts_with("POLICY")), "wrangler.toml sets POLICY");
        assert!(EXAMPLE_POLICY.contains("\"anonymous\""));
    }

    #[test]
    fn a_minimal_policy_gets_the_documented_defaults() {
        let p = Policy::parse(MINIMAL).unwrap();
        assert_eq!(p.key_prefix, "rl");
        assert_eq!(p.headers, HeaderStyle { ietf: true, legacy: false });
        assert_eq!(p.store, DEFAULT_STORE);
        assert_eq!(p.identity.client_ip.ipv6_prefix, 64);
        assert_eq!(p.identity.client_ip.header, "cf-connecting-ip");
        assert!(!p.identity.client_ip.trust_forwarded_for);
        let burst = p.tiers[0].limits[0].algorithm;
        assert_eq!(burst, Algorithm::token_bucket(10, Rate::parse("10/s").unwrap()).unwrap());
    }

    #[test]
    fn limits_are_written_the_way_people_say_them() {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {
                "a": "1000/day",
                "b": {"token_bucket": {"capacity": 10, "refill": "0.1/s"}},
                "c": {"fixed_window": "5000/min"},
                "d": {"sliding_window": "100/h"},
                "e": {"token_bucket": "100/10s"}
            }}}}"#,
        )
        .unwrap();
        let l: Vec<Algorithm> = p.tiers[0].limits.iter().map(|l| l.algorithm).collect();
        assert_eq!(l[0], Algorithm::token_bucket(1000, Rate::new(1000, 86_400_000).unwrap()).unwrap());
        assert_eq!(l[1], Algorithm::token_bucket(10, Rate::new(1, 10_000).unwrap()).unwrap());
        assert_eq!(l[2], Algorithm::fixed_window(5000, 60_000).unwrap());
        assert_eq!(l[3], Algorithm::sliding_window(100, 3_600_000).unwrap());
        assert_eq!(l[4].capacity(), 100);
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let errs = errors(
            r#"{"tiers": {
                "anonymous": {"limits": {"burst": "ten/s", "Bad Name": "1/s"}},
                "premium": {"limits": {"b": {"token_bucket": {"capacity": 0, "refill": "1/fortnight"}}}},
                "x": {"limits": {"w": {"fixed_window": "0.5/s"}, "v": {"leaky": "1/s"}}},
                "y": {"limits": {}},
                "z": {"limitz": {}}
            },
            "identity": {"client_ip": {"ipv6_prefix": 200}, "api_key": {"keys": {"abc": "premium", "00000000000000000000000000000000000000000000000000000000000000ff": "gold"}}},
            "routes": [{"path": "api", "cost": -1}, {"path": "/x", "exempt": true, "cost": 2}, {"path": "/y", "method": "G T"}],
            "headers": "fancy",
            "store": {"on_failure": "pray", "timeout": "0ms", "colour": 1}
            }"#,
        );
        for (path, words) in [
            ("tiers.anonymous.limits.burst", "not a whole number"),
            ("tiers.anonymous.limits.Bad Name", "not a valid limit name"),
            ("tiers.premium.limits.b.token_bucket.capacity", "out of range"),
            ("tiers.premium.limits.b.token_bucket.refill", "not a time unit"),
            ("tiers.x.limits.w.fixed_window", "whole number"),
            ("tiers.x.limits.v.leaky", "unknown field"),
            ("tiers.y.limits", "1 to 8 limits"),
            ("tiers.z.limitz", "unknown field"),
            ("tiers.z.limits", "missing"),
            ("identity.client_ip.ipv6_prefix", "out of range"),
            ("identity.api_key.keys[entry 2]", "not a SHA-256 digest"),
            ("routes[0].path", "must start with /"),
            ("routes[0].cost", "expected a whole number"),
            ("routes[1]", "exempt rule takes no cost"),
            ("routes[2].method", "not an HTTP method"),
            ("headers", "\"fancy\""),
            ("store.on_failure", "\"pray\""),
            ("store.timeout", "at least 1 ms"),
            ("store.colour", "unknown field"),
        ] {
            assert!(has(&errs, path, words), "no error at `{path}` saying `{words}` in:\n{}", errs.join("\n"));
        }
        // The unknown tier in the key table is reported too, once the tiers parse.
        let errs = errors(
            r#"{"tiers": {"anonymous": {"limits": {"b": "1/s"}}},
                "identity": {"api_key": {"keys": {"00000000000000000000000000000000000000000000000000000000000000ff": "gold"}}}}"#,
        );
        assert!(
            has(
                &errs,
                "identity.api_key.keys.00000000000000000000000000000000000000000000000000000000000000ff",
                "no tier named `gold`"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn structural_mistakes_are_caught() {
        assert!(errors("{").iter().any(|e| e.contains("not valid JSON")));
        assert!(errors("[]")[0].contains("expected an object"));
        assert!(has(&errors(r#"{"tiers": {}}"#), "tiers", "at least one tier"));
        assert!(has(
            &errors(r#"{"tiers": {"t": {"limits": {"b": "1/s"}}}}"#),
            "identity.anonymous_tier",
            "no tier named `anonymous`"
        ));
        assert!(has(&errors(&MINIMAL.replace("}}}}", "}}}, \"version\": 2}")), "version", "only version 1"));
        let too_big = r#"{"tiers": {"anonymous": {"limits": {"b": {"token_bucket": {"capacity": 9007199254740992, "refill": "1/day"}}}}}}"#;
        assert!(has(&errors(too_big), "tiers.anonymous.limits.b.token_bucket", "too large to count exactly"));
        let unreachable =
            r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}}, "routes": [{"path": "/upload", "cost": 11}]}"#;
        assert!(has(&errors(unreachable), "routes[0].cost", "could never pass"));
        let jwt_without_tier = r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}}, "identity": {"jwt": {}}}"#;
        assert!(has(&errors(jwt_without_tier), "identity.jwt.default_tier", "no tier named `authenticated`"));
    }

    #[test]
    fn failed_credentials_have_limits_of_their_own() {
        let p = Policy::parse(MINIMAL).unwrap();
        let f = &p.identity.auth_failures;
        assert_eq!(f.name, AUTH_FAILURES);
        assert_eq!(f.limits[0].algorithm, Algorithm::token_bucket(10, Rate::parse("10/h").unwrap()).unwrap());
        let own = MINIMAL.replace("}}}}", r#"}}}, "identity": {"auth_failures": {"guesses": "3/min"}}}"#);
        let p = Policy::parse(&own).unwrap();
        assert_eq!(p.identity.auth_failures.limits[0].name, "guesses");
        assert_eq!(p.identity.auth_failures.limits[0].algorithm.capacity(), 3);
        let bad = MINIMAL.replace("}}}}", r#"}}}, "identity": {"auth_failures": {"guesses": "lots"}}}"#);
        let errs = errors(&bad);
        assert!(errs.iter().any(|e| e.contains("`identity.auth_failures.guesses`")), "{errs:?}");
        let reserved =
            r#"{"tiers": {"anonymous": {"limits": {"b": "1/s"}}, "auth-failures": {"limits": {"b": "1/s"}}}}"#;
        assert!(has(&errors(reserved), "tiers.auth-failures", "reserved"));
    }

    #[test]
    fn route_prefixes_compare_as_the_origin_reads_paths() {
        let text = r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}},
            "paths": {"case_insensitive": true, "ignore_params": true},
            "routes": [{"path": "/Health", "exempt": true}, {"path": "/%7Euser/", "cost": 2}]}"#;
        let p = Policy::parse(text).unwrap();
        assert!(p.paths.case_insensitive && p.paths.ignore_params && p.paths.merge_slashes);
        assert_eq!(p.routes[0].path_prefix, "/health");
        assert_eq!(p.routes[1].path_prefix, "/~user/");
        let bad = r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}}, "paths": {"merge_slashes": 1, "other": true},
            "routes": [{"path": "/health/..", "exempt": true}, {"path": "/a%2Fb", "exempt": true}]}"#;
        let errs = errors(bad);
        for (path, words) in [
            ("paths.merge_slashes", "true or false"),
            ("paths.other", "unknown field"),
            ("routes[0].path", ". or .. segments"),
            ("routes[1].path", "encoded slash"),
        ] {
            assert!(has(&errs, path, words), "no error at `{path}` saying `{words}` in:\n{}", errs.join("\n"));
        }
    }

    #[test]
    fn a_wider_ipv6_net_has_limits_of_its_own() {
        let with = |wide: &str| {
            MINIMAL.replace("}}}}", &format!(r#"}}}}}}, "identity": {{"client_ip": {{"ipv6_wide": {wide}}}}}}}"#))
        };
        let p = Policy::parse(&with(r#"{"prefix": 48, "limits": {"burst": "100/s"}}"#)).unwrap();
        let wide = p.identity.client_ip.ipv6_wide.unwrap();
        assert_eq!(
            (wide.prefix, wide.tier.name.as_str(), wide.tier.limits[0].algorithm.capacity()),
            (48, IPV6_WIDE, 100)
        );
        let errs = errors(&with(r#"{"prefix": 64, "limits": {"burst": "100/s"}}"#));
        assert!(
            errs.iter().any(|e| e.contains("`identity.client_ip.ipv6_wide.prefix`")),
            "not wider than the /64: {errs:?}"
        );
        assert!(has(&errors(&with(r#"{"prefix": 48}"#)), "identity.client_ip.ipv6_wide.limits", "missing"));
    }

    #[test]
    fn cors_is_any_origin_unless_the_policy_lists_some() {
        assert_eq!(Policy::parse(MINIMAL).unwrap().cors, Cors::default());
        let with = |c: &str| MINIMAL.replace("}}}}", &format!(r#"}}}}}}, "cors": {c}}}"#));
        let p =
            Policy::parse(&with(r#"{"allow_origins": ["https://app.example"], "charge_preflight": true}"#)).unwrap();
        assert_eq!(p.cors.allow_origins, AllowOrigins::List(vec!["https://app.example".into()]));
        assert!(p.cors.charge_preflight);
        assert_eq!(Policy::parse(&with(r#"{"allow_origins": []}"#)).unwrap().cors.allow_origins, AllowOrigins::None);
        assert!(has(&errors(&with(r#"{"allow_origins": ["app.example"]}"#)), "cors.allow_origins[0]", "not an origin"));
        assert!(has(&errors(&with(r#"{"allow_origins": "all"}"#)), "cors.allow_origins", "expected"));
        assert_eq!(p.preflights.name, PREFLIGHTS);
        assert_eq!(p.preflights.limits[0].algorithm.capacity(), 100);
        let own = Policy::parse(&with(r#"{"preflight_limits": {"p": "5/s"}}"#)).unwrap();
        assert_eq!(own.preflights.limits[0].algorithm.capacity(), 5);
        assert!(has(&errors(&with(r#"{"preflight_limits": {"p": "x"}}"#)), "cors.preflight_limits.p", ""));
    }

    #[test]
    fn a_route_can_limit_websocket_messages() {
        let text = r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}},
            "routes": [{"path": "/chat", "websocket_messages": "20/s"}, {"path": "/x", "websocket_messages": "lots"}]}"#;
        let errs = errors(text);
        assert!(errs.iter().any(|e| e.contains("`routes[1].websocket_messages`")), "{errs:?}");
        let p = Policy::parse(&text.replace(r#", {"path": "/x", "websocket_messages": "lots"}"#, "")).unwrap();
        let limit = p.rule("GET", "/chat/room", p.identity.anonymous_tier).and_then(|r| r.websocket_messages).unwrap();
        assert_eq!(limit, Algorithm::token_bucket(20, Rate::parse("20/s").unwrap()).unwrap());
        assert!(p.rule("GET", "/other", p.identity.anonymous_tier).is_none());
    }

    #[test]
    fn demo_keys_can_be_dropped() {
        let mut p = Policy::example();
        let premium = crate::core::identity::DEMO_KEY_DIGESTS;
        assert_eq!(p.drop_keys(&premium), 2);
        assert_eq!(p.identity.api_key.as_ref().unwrap().keys.len(), 0);
        assert_eq!(p.drop_keys(&premium), 0);
    }

    #[test]
    fn route_rules_pick_cost_tier_or_exemption() {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}, "premium": {"limits": {"b": "100/s"}}, "uploads": {"limits": {"b": "5/min"}}},
                "routes": [
                    {"path": "/health", "exempt": true},
                    {"path": "/upload/", "method": ["post", "PUT"], "tiers": ["anonymous"], "use_tier": "uploads", "cost": 5},
                    {"path": "/search", "cost": 3}
                ]}"#,
        )
        .unwrap();
        let id = |name| p.tier_id(name).unwrap();
        let (anon, premium, uploads) = (id("anonymous"), id("premium"), id("uploads"));
        assert_eq!(p.tier(uploads).map(|t| t.name.as_str()), Some("uploads"));
        assert_eq!(p.plan("GET", "/health", anon), Plan::Exempt);
        assert_eq!(p.plan("GET", "/health/deep", anon), Plan::Exempt);
        assert_eq!(p.plan("GET", "/healthz", anon), Plan::Check { tier: anon, cost: 1 });
        assert_eq!(p.plan("POST", "/upload/a", anon), Plan::Check { tier: uploads, cost: 5 });
        assert_eq!(p.plan("POST", "/upload/a", premium), Plan::Check { tier: premium, cost: 1 });
        assert_eq!(p.plan("GET", "/upload/a", anon), Plan::Check { tier: anon, cost: 1 });
        assert_eq!(p.plan("GET", "/search/x", premium), Plan::Check { tier: premium, cost: 3 });
    }
}
