//! The policy: which limits apply to whom, read from JSON into types that cannot hold an
//! invalid value. Three parts:
//!
//! - this module: the model the Worker runs (`Policy` and its parts) and its methods;
//! - `document`: the document as written, derived with serde: unknown fields are refused,
//!   absent ones take the values of its `Default` impls, and a value wrong on its own (a rate
//!   that does not parse, a number out of range) is reported at its field's dotted path
//!   (`tiers.premium.limits.burst.refill`) through `serde_path_to_error`;
//! - `validate`: what needs several fields at once (tier references, reserved tier names, a
//!   route's cost against the capacities it meets), turning the document into the model and
//!   collecting every such problem.
//!
//! The format is documented in docs/policy.md; `policy.example.json` is a full
//! example and is what the Worker runs when no policy is configured.

use std::fmt;

use serde::Deserialize;

use super::algorithm::Algorithm;
use super::cors::Cors;
use super::path::PathOptions;

mod document;
mod validate;

/// The policy the Worker runs when none is configured: three tiers and a few routes.
pub const EXAMPLE_POLICY: &str = include_str!("../../../policy.example.json");

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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
        let document = document::read(text).map_err(|e| PolicyErrors(vec![e]))?;
        validate::policy(&document)
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

/// What is wrong with a policy: the first problem met reading the document (a wrong type,
/// an unknown field, a value that does not parse), or else every problem validation found.
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
    use crate::core::cors::AllowOrigins;
    use crate::core::rate::Rate;

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
        let toml = include_str!("../../../wrangler.toml");
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
        // Reading the document stops at the first value that is wrong on its own (serde), so
        // each of these gets a document of its own.
        for (text, path, words) in [
            (
                r#"{"tiers": {"anonymous": {"limits": {"burst": "ten/s"}}}}"#,
                "tiers.anonymous.limits.burst",
                "not a whole number",
            ),
            (
                r#"{"tiers": {"premium": {"limits": {"b": {"token_bucket": {"capacity": 0, "refill": "1/s"}}}}}}"#,
                "tiers.premium.limits.b.token_bucket.capacity",
                "out of range",
            ),
            (
                r#"{"tiers": {"premium": {"limits": {"b": {"token_bucket": {"capacity": 1, "refill": "1/fortnight"}}}}}}"#,
                "tiers.premium.limits.b.token_bucket.refill",
                "not a time unit",
            ),
            (
                r#"{"tiers": {"x": {"limits": {"w": {"fixed_window": "0.5/s"}}}}}"#,
                "tiers.x.limits.w.fixed_window",
                "whole number",
            ),
            (r#"{"tiers": {"x": {"limits": {"v": {"leaky": "1/s"}}}}}"#, "tiers.x.limits.v.leaky", "unknown field"),
            (r#"{"tiers": {"z": {"limitz": {}}}}"#, "tiers.z.limitz", "unknown field"),
            (r#"{"identity": {"client_ip": {"ipv6_prefix": 200}}}"#, "identity.client_ip.ipv6_prefix", "out of range"),
            (r#"{"routes": [{"path": "/api", "cost": -1}]}"#, "routes[0].cost", "expected a whole number"),
            (
                r#"{"routes": [{"path": "/a"}, {"path": "/b"}, {"path": "/y", "method": "G T"}]}"#,
                "routes[2].method",
                "not an HTTP method",
            ),
            (r#"{"headers": "fancy"}"#, "headers", "`fancy`"),
            (r#"{"store": {"on_failure": "pray"}}"#, "store.on_failure", "`pray`"),
            (r#"{"store": {"timeout": "0ms"}}"#, "store.timeout", "at least 1 ms"),
            (r#"{"store": {"colour": 1}}"#, "store.colour", "unknown field"),
        ] {
            let errs = errors(text);
            assert!(has(&errs, path, words), "no error at `{path}` saying `{words}` in:\n{}", errs.join("\n"));
        }
        // What validation finds is reported all at once.
        let errs = errors(
            r#"{"tiers": {
                "anonymous": {"limits": {"burst": "10/s", "Bad Name": "1/s"}},
                "premium": {"limits": {"b": "1/s"}},
                "y": {"limits": {}},
                "z": {}
            },
            "identity": {"api_key": {"keys": {"abc": "premium", "00000000000000000000000000000000000000000000000000000000000000ff": "gold"}}},
            "routes": [{"path": "api"}, {"path": "/x", "exempt": true, "cost": 2}]
            }"#,
        );
        for (path, words) in [
            ("tiers.anonymous.limits.Bad Name", "not a valid limit name"),
            ("tiers.y.limits", "1 to 8 limits"),
            ("tiers.z.limits", "missing"),
            ("identity.api_key.keys[entry 2]", "not a SHA-256 digest"),
            ("routes[0].path", "must start with /"),
            ("routes[1]", "exempt rule takes no cost"),
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
        let with = |rest: &str| format!(r#"{{"tiers": {{"anonymous": {{"limits": {{"b": "10/s"}}}}}}, {rest}}}"#);
        for (rest, path, words) in [
            (r#""paths": {"merge_slashes": 1}"#, "paths.merge_slashes", "expected a boolean"),
            (r#""paths": {"other": true}"#, "paths.other", "unknown field"),
        ] {
            let errs = errors(&with(rest));
            assert!(has(&errs, path, words), "no error at `{path}` saying `{words}` in:\n{}", errs.join("\n"));
        }
        let errs =
            errors(&with(r#""routes": [{"path": "/health/..", "exempt": true}, {"path": "/a%2Fb", "exempt": true}]"#));
        for (path, words) in [("routes[0].path", ". or .. segments"), ("routes[1].path", "encoded slash")] {
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
