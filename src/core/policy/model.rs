//! The policy model: what the Worker runs, in types that cannot hold an invalid value, and
//! the questions the request path asks of it. Made only by `validate`.

use std::fmt;

use serde::Deserialize;

use crate::core::algorithm::Algorithm;
use crate::core::cors::Cors;
use crate::core::lists::Lists;
use crate::core::path::PathOptions;

/// The policy the Worker runs when none is configured: three tiers and a few routes.
pub const EXAMPLE_POLICY: &str = include_str!("../../../policy.example.json");

/// A tier of one policy, as its rules and callers name it. Only the parser makes one, from
/// a tier it found, so [`Policy::tier`] resolves it; it is not a number to count with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TierId(pub(super) usize);

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
    /// Block and allow lists, looked at before anything else.
    pub lists: Lists,
    /// Everything in shadow: denials reported, nothing refused.
    pub shadow: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    pub name: String,
    pub description: String,
    /// One to [`MAX_LIMITS`] limits, all checked together.
    pub limits: Vec<NamedLimit>,
    /// Whether its busy subjects take units ahead, and how many.
    pub lease: Leasing,
    /// In shadow: its denials are reported (fields, counts, a log line per subject) but the
    /// request passes.
    pub shadow: bool,
}

/// How a tier's busy subjects lease units ahead (policy `lease`): at most `max` units at a
/// time, each lease used within `ttl_ms` or handed back. Off (`max` 1) is the default: every
/// check goes to the store, and answers tell the store's own remaining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leasing {
    pub max: u64,
    pub ttl_ms: u64,
}

impl Leasing {
    pub const OFF: Leasing = Leasing { max: 1, ttl_ms: 0 };
    /// `"auto"`: up to 32 units, each lease used within a second.
    pub const AUTO: Leasing = Leasing { max: 32, ttl_ms: 1_000 };

    pub fn on(&self) -> bool {
        self.max > 1 && self.ttl_ms > 0
    }
}

impl Default for Leasing {
    fn default() -> Self {
        Leasing::OFF
    }
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
    /// In shadow, as a tier can be: for requests this rule matches.
    pub shadow: bool,
    /// A request whose units are due within this many ms is held until then and passed,
    /// instead of refused (0: never held).
    pub max_delay_ms: u64,
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
    /// `RateLimit-Policy` and `RateLimit`, as in this revision of the IETF draft.
    pub ietf: Option<IetfDraft>,
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    pub legacy: bool,
}

/// The revision of "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers)
/// whose `RateLimit` field the limiter sends. `RateLimit-Policy` is the same in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IetfDraft {
    /// -12 (November 2026): `"name";a=<available>;w=<effective window>`, with `c=<cost>` for a
    /// request that costs other than 1. The default (`headers: "ietf"`).
    Twelve,
    /// -10 (September 2025): `"name";r=<remaining>;t=<seconds>` (`headers: "ietf-10"`), for
    /// clients written to it.
    Ten,
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
    /// Checks that come while a store call is in flight in the isolate wait for it, then go
    /// together in the next call (`store::coalesce`).
    pub batch: bool,
    /// How often each isolate reads the runtime controls (overrides, runtime lists) from
    /// where they are kept (`core::controls`).
    pub controls_refresh_ms: u64,
    /// Each isolate's decisions tallied and flushed to the shared store for the fleet view
    /// (`core::fleet`), one script call per isolate every few seconds at most.
    pub fleet: bool,
}

/// What the Worker does with one request, per the route rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Exempt,
    Check { tier: TierId, cost: u64 },
}

impl Policy {
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
    /// Whether a denial of `tier`'s limits under `rule` is only reported: the whole policy,
    /// the tier or the route rule is in shadow.
    pub fn in_shadow(&self, tier: &Tier, rule: Option<&Route>) -> bool {
        self.shadow || tier.shadow || rule.is_some_and(|r| r.shadow)
    }

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
    batch: false,
    controls_refresh_ms: 10_000,
    fleet: true,
};

pub(super) fn parse_digest(hex: &str) -> Option<[u8; 32]> {
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
