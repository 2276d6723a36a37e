//! The policy document as written, derived with serde field for field. Every struct refuses
//! unknown fields (`deny_unknown_fields`) and takes what is absent from its `Default` impl,
//! the one home of every default. A value that is wrong on its own (a rate that does not
//! parse, a number out of range, a header name with a space) fails here, at its field;
//! what needs several fields at once is `validate`'s.
//!
//! Reading stops at the first such error, and the reader ([`super::tree`]) says where it was.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::model::{FailMode, Leasing, PolicyError, DEFAULT_STORE};
use super::tree::{self, Tree};
use crate::core::algorithm::Algorithm;
use crate::core::cors::AllowOrigins;
use crate::core::path::PathOptions;
use crate::core::rate::{parse_duration_ms, Rate, MAX_EXACT};

/// Reads a policy document, or says what the first problem in it is and where.
pub fn read(text: &str) -> Result<Document, PolicyError> {
    read_text::<Object<Document>>(text, "").map(|doc| doc.0)
}

/// A `T` read from a JSON text through a [`Tree`], so that an error names its field, below
/// `path` (parts of a document on their own).
pub fn read_text<T: for<'de> Deserialize<'de>>(text: &str, path: &str) -> Result<T, PolicyError> {
    read_tree(&Tree::parse(text).map_err(|e| not_json(&e))?, path)
}

/// A `T` read from a [`Tree`], an error named by its field below `path`.
pub fn read_tree<'de, T: Deserialize<'de>>(tree: &'de Tree, path: &str) -> Result<T, PolicyError> {
    tree::read(tree).map_err(|e| {
        let below = e.path.unwrap_or_default();
        let path = match (path.is_empty(), below.is_empty() || below.starts_with('[')) {
            (true, _) => below,
            (false, true) => format!("{path}{below}"),
            (false, false) => format!("{path}.{below}"),
        };
        PolicyError { path, message: e.message }
    })
}

/// A part of a document on its own, at `path` (the decision API's inline limits, the admin
/// API's runtime lists), read from its text as a whole policy is, so the Worker carries one
/// copy of the readers, not one per input type.
fn read_part<T: for<'de> Deserialize<'de>>(value: &Value, path: &str) -> Result<T, PolicyError> {
    read_text::<Object<T>>(&value.to_string(), path).map(|part| part.0)
}

/// A tier's `limits` object on its own, its errors at `path` and below.
pub fn read_limits(value: &Value, path: &str) -> Result<Named<Limit>, PolicyError> {
    read_part(value, path)
}

/// A block or allow list on its own, its errors at `path` and below.
pub fn read_list(value: &Value, path: &str) -> Result<List, PolicyError> {
    read_part(value, path)
}

fn not_json(e: &serde_json::Error) -> PolicyError {
    PolicyError { path: String::new(), message: format!("not valid JSON: {e}") }
}

/// A derived struct, read from a JSON object only: serde_json would also take an array of
/// its fields in order, a form no one means, and miss that it is the wrong type.
#[derive(Default)]
pub struct Object<T>(pub T);

impl<T> Deref for Object<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Object)
    }
}

/// An enum of names (`"ietf"`, `"memory"`): a string first, so that a number is a wrong type
/// rather than what serde_json would call a syntax error.
fn by_name<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    let name = String::deserialize(d)?;
    T::deserialize(de::value::StrDeserializer::<D::Error>::new(&name))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Document {
    pub version: Version,
    pub key_prefix: String,
    /// Required: `validate` says so when it is absent, at its path.
    pub tiers: Option<Named<Object<Tier>>>,
    pub identity: Object<Identity>,
    pub paths: Object<PathOptions>,
    pub cors: Object<Cors>,
    pub routes: Vec<Object<Route>>,
    #[serde(deserialize_with = "by_name")]
    pub headers: Headers,
    pub store: Object<Store>,
    /// Every tier and route in shadow: decided and reported, nothing refused.
    pub shadow: bool,
    /// Refused with 403 before anything else (`core::lists`).
    pub block: Object<List>,
    /// Exempt from every limit.
    pub allow: Object<List>,
}

impl Default for Document {
    fn default() -> Self {
        Document {
            version: Version,
            key_prefix: "rl".into(),
            tiers: None,
            identity: Object::default(),
            paths: Object::default(),
            cors: Object::default(),
            routes: Vec::new(),
            headers: Headers::default(),
            store: Object::default(),
            shadow: false,
            block: Object::default(),
            allow: Object::default(),
        }
    }
}

/// A block or allow list as written: each entry parsed on its own, so a bad one is reported
/// at its index.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct List {
    pub addresses: Vec<Parsed<crate::core::lists::Cidr>>,
    pub countries: Vec<Parsed<crate::core::lists::Country>>,
    pub asns: Vec<Whole<1, 4_294_967_295>>,
    pub user_agents: Vec<Parsed<crate::core::lists::Pattern>>,
}

/// A string read through the type's `FromStr`, whose error is the message.
pub struct Parsed<T>(pub T);

impl<'de, T: std::str::FromStr<Err = String>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map(Parsed).map_err(de::Error::custom)
    }
}

/// `"version": 1`, the only one there is.
#[derive(Default)]
pub struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("1")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Version, E> {
                match n {
                    1 => Ok(Version),
                    _ => Err(E::custom("only version 1 exists; write 1 or leave it out")),
                }
            }
        }
        d.deserialize_u64(V)
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Tier {
    pub description: String,
    /// Required, like [`Document::tiers`].
    pub limits: Option<Named<Limit>>,
    pub lease: Lease,
    /// Decide, count and report, but refuse nothing.
    pub shadow: bool,
}

/// A tier's `lease`: `"off"` (the default), `"auto"`, or `{"max": 16, "ttl": "1s"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease(pub Leasing);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseSize {
    max: Whole<1, 1_000>,
    ttl: Millis<10, 60_000>,
}

impl<'de> Deserialize<'de> for Lease {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Leasing;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"off\", \"auto\" or {\"max\": units, \"ttl\": duration}")
            }
            fn visit_str<E: de::Error>(self, word: &str) -> Result<Leasing, E> {
                match word {
                    "off" => Ok(Leasing::OFF),
                    "auto" => Ok(Leasing::AUTO),
                    other => Err(E::custom(format_args!("`{other}` is not \"off\" or \"auto\""))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Leasing, A::Error> {
                let size = LeaseSize::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Leasing { max: size.max.0, ttl_ms: size.ttl.0 })
            }
        }
        d.deserialize_any(V).map(Lease)
    }
}

/// An object of things by name (tiers, limits), in the order of their names, each name once.
#[derive(Default)]
pub struct Named<T>(pub Vec<(String, T)>);

/// What a [`Named`] holds, for its messages.
pub trait Entry {
    const WHAT: &'static str;
}

impl<T: Entry> Entry for Object<T> {
    const WHAT: &'static str = T::WHAT;
}

impl Entry for Tier {
    const WHAT: &'static str = "tiers";
}

impl Entry for Limit {
    const WHAT: &'static str = "limits";
}

impl<'de, T: Deserialize<'de> + Entry> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Entry> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an object of {} by name", T::WHAT)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value()?;
                    out.push((name, value));
                }
                crate::core::order::sort_by(&mut out, |a, b| a.0.cmp(&b.0));
                if let Some(twice) = out.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(de::Error::custom(format_args!("`{}` is written twice", twice[0].0)));
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A limit, checked and built: `"10/s"` (a token bucket holding 10, refilling 10 per second),
/// or an object with exactly one of `token_bucket`, `fixed_window`, `sliding_window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Algorithm);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Kinds {
    #[serde(default)]
    token_bucket: Option<Bucket>,
    #[serde(default)]
    fixed_window: Option<Window<false>>,
    #[serde(default)]
    sliding_window: Option<Window<true>>,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a limit: a rate like \"10/s\", or an object with one of token_bucket, fixed_window, sliding_window")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Limit, E> {
                shorthand(s).map(Limit).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Limit, A::Error> {
                let kinds = Kinds::deserialize(MapAccessDeserializer::new(map))?;
                match (kinds.token_bucket, kinds.fixed_window, kinds.sliding_window) {
                    (Some(Bucket(a)), None, None) | (None, Some(Window(a)), None) | (None, None, Some(Window(a))) => {
                        Ok(Limit(a))
                    }
                    _ => Err(de::Error::custom("give exactly one of token_bucket, fixed_window, sliding_window")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `"10/s"` as a token bucket: capacity 10, refilling 10 per second.
fn shorthand(s: &str) -> Result<Algorithm, String> {
    let (count, window) = Rate::parse_window(s).map_err(|e| {
        format!("{e}; for a fractional rate write {{\"token_bucket\": {{\"capacity\": N, \"refill\": \"{s}\"}}}}")
    })?;
    Algorithm::token_bucket(count, Rate::new(count, window)?)
}

/// `token_bucket`: the shorthand, or `{"capacity": 10, "refill": "0.1/s"}`.
struct Bucket(Algorithm);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketParts {
    #[serde(default)]
    capacity: Option<Whole<1, MAX_EXACT>>,
    #[serde(default)]
    refill: Option<Refill>,
}

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bucket;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate like \"10/s\", or an object with capacity and refill")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bucket, E> {
                shorthand(s).map(Bucket).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Bucket, A::Error> {
                let parts = BucketParts::deserialize(MapAccessDeserializer::new(map))?;
                let Some(Whole(capacity)) = parts.capacity else {
                    return Err(de::Error::custom("missing `capacity`: how many units the bucket holds (its burst)"));
                };
                let Some(Refill(refill)) = parts.refill else {
                    return Err(de::Error::custom(
                        "missing `refill`: how fast units come back, like \"10/s\" or \"0.1/s\"",
                    ));
                };
                Algorithm::token_bucket(capacity, refill).map(Bucket).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `fixed_window` (`SLIDING` false) or `sliding_window`: `"5000/min"`.
struct Window<const SLIDING: bool>(Algorithm);

impl<'de, const SLIDING: bool> Deserialize<'de> for Window<SLIDING> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let made = Rate::parse_window(&text).and_then(|(limit, window)| match SLIDING {
            false => Algorithm::fixed_window(limit, window),
            true => Algorithm::sliding_window(limit, window),
        });
        made.map(Window).map_err(de::Error::custom)
    }
}

/// A refill rate: `"10/s"`, `"0.1/s"`.
struct Refill(Rate);

impl<'de> Deserialize<'de> for Refill {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Rate::parse(&String::deserialize(d)?).map(Refill).map_err(de::Error::custom)
    }
}

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Whole<const MIN: u64, const MAX: u64>(pub u64);

/// One visitor for every [`Whole`], so each range costs no code of its own.
struct WholeVisitor {
    min: u64,
    max: u64,
}

impl Visitor<'_> for WholeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from {} to {}", self.min, self.max)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(E::custom(format_args!("{n} is out of range; expected {} to {}", self.min, self.max)))
        }
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(WholeVisitor { min: MIN, max: MAX }).map(Whole)
    }
}

/// A duration from `MIN` to `MAX` milliseconds, written `"250ms"`, `"10s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis<const MIN: u64, const MAX: u64>(pub u64);

fn millis(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let ms = parse_duration_ms(text.trim(), false)?;
    if (min..=max).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("`{text}` is out of range; expected {min} ms to {max} ms"))
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Millis<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        millis(&String::deserialize(d)?, MIN, MAX).map(Millis).map_err(de::Error::custom)
    }
}

/// A string that must pass `check`, which may also rewrite it (lower-case a header name).
fn checked<'de, D: Deserializer<'de>>(d: D, check: fn(&str) -> Result<String, String>) -> Result<String, D::Error> {
    check(&String::deserialize(d)?).map_err(de::Error::custom)
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                checked(d, $check).map($name)
            }
        }
    };
}

checked_string!(
    /// A header name, lower-cased.
    HeaderName,
    header_name
);

fn header_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("`{s}` is not a valid header name"))
    }
}

checked_string!(
    /// An HTTP method, upper-cased.
    Method,
    method
);

/// A token (RFC 9110 §5.6.2): extension methods such as PROPFIND or M-SEARCH too.
fn method(m: &str) -> Result<String, String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !m.is_empty() && m.len() <= 32 && m.bytes().all(tchar) {
        Ok(m.to_ascii_uppercase())
    } else {
        Err(format!("`{m}` is not an HTTP method"))
    }
}

checked_string!(
    /// A CORS origin: scheme and host.
    Origin,
    origin
);

fn origin(s: &str) -> Result<String, String> {
    let (scheme, host) = s.split_once("://").unwrap_or(("", ""));
    if matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains(['/', ' ', '*']) {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not an origin: write scheme and host, like \"https://app.example\""))
    }
}

checked_string!(
    /// The prefix that marks an API key as ours.
    KeyPrefix,
    key_prefix
);

fn key_prefix(p: &str) -> Result<String, String> {
    if !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(p.to_string())
    } else {
        Err(format!("`{p}` is not a key prefix: 1 to 32 visible ASCII characters, like \"rl_\""))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    pub anonymous_tier: String,
    pub client_ip: Object<ClientIp>,
    pub api_key: Option<Object<ApiKeys>>,
    pub jwt: Option<Object<Jwt>>,
    pub auth_failures: Named<Limit>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            anonymous_tier: "anonymous".into(),
            client_ip: Object::default(),
            api_key: None,
            jwt: None,
            // Ten failures at once, then one every six minutes.
            auth_failures: one_bucket("failures", 10, 10, 3_600_000),
        }
    }
}

/// Limits of one token bucket, for the defaults of the reserved tiers. Empty if the figures
/// were ever wrong, which validation then reports (a tier needs at least one limit).
fn one_bucket(name: &str, capacity: u64, amount: u64, period_ms: u64) -> Named<Limit> {
    let made = Rate::new(amount, period_ms).and_then(|refill| Algorithm::token_bucket(capacity, refill));
    Named(made.map(|a| vec![(name.to_string(), Limit(a))]).unwrap_or_default())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIp {
    pub header: HeaderName,
    pub trust_forwarded_for: bool,
    pub ipv4_prefix: Whole<8, 32>,
    pub ipv6_prefix: Whole<16, 128>,
    pub ipv6_wide: Option<Object<WideNet>>,
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp {
            header: HeaderName("cf-connecting-ip".into()),
            trust_forwarded_for: false,
            ipv4_prefix: Whole(32),
            ipv6_prefix: Whole(64),
            ipv6_wide: None,
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WideNet {
    /// Required, and narrower than `ipv6_prefix`: `validate` checks both.
    pub prefix: Option<Whole<16, 128>>,
    /// Required.
    pub limits: Option<Named<Limit>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeys {
    pub header: HeaderName,
    /// Required. Read as JSON values: an entry that is not a digest may be a raw key pasted
    /// by mistake, and a path through serde would carry its text into the error. `validate`
    /// names such an entry by its position instead.
    pub keys: Option<Map<String, Value>>,
    pub prefix: Option<KeyPrefix>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        ApiKeys { header: HeaderName("x-api-key".into()), keys: None, prefix: None }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jwt {
    pub tier_claim: String,
    pub default_tier: String,
    pub subject_claim: String,
    pub leeway_s: Whole<0, 300>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt {
            tier_claim: "tier".into(),
            default_tier: "authenticated".into(),
            subject_claim: "sub".into(),
            leeway_s: Whole(0),
            issuer: None,
            audience: None,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    pub allow_origins: Origins,
    pub charge_preflight: bool,
    pub preflight_limits: Named<Limit>,
}

impl Default for Cors {
    fn default() -> Self {
        let model = crate::core::cors::DEFAULT_CORS;
        Cors {
            allow_origins: Origins(model.allow_origins),
            charge_preflight: model.charge_preflight,
            // Generous, since browsers cache preflights, yet bounded.
            preflight_limits: one_bucket("preflights", 100, 10, 1_000),
        }
    }
}

/// `"*"`, a list of origins, or `[]` for none.
pub struct Origins(pub AllowOrigins);

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Origins;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"*\" or an array of origins")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Origins, E> {
                match s {
                    "*" => Ok(Origins(AllowOrigins::Any)),
                    _ => Err(E::custom(format_args!("expected \"*\" or an array of origins, found \"{s}\""))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Origins, A::Error> {
                let list = Vec::<Origin>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Origins(match list.is_empty() {
                    true => AllowOrigins::None,
                    false => AllowOrigins::List(list.into_iter().map(|o| o.0).collect()),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Route {
    pub method: Methods,
    /// Required; normalised the way `paths` says, in `validate`.
    pub path: Option<String>,
    /// Non-empty when written.
    pub tiers: Option<Vec<String>>,
    pub cost: Option<Whole<0, MAX_EXACT>>,
    pub exempt: bool,
    pub use_tier: Option<String>,
    pub websocket_messages: Option<Limit>,
    pub shadow: bool,
    pub max_delay: Option<Millis<1, 10_000>>,
}

/// A method or a non-empty array of them; none written means any.
#[derive(Default)]
pub struct Methods(pub Vec<String>);

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Methods;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a method or a non-empty array of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Methods, E> {
                method(s).map(|m| Methods(vec![m])).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Methods, A::Error> {
                let list = Vec::<Method>::deserialize(SeqAccessDeserializer::new(seq))?;
                if list.is_empty() {
                    return Err(de::Error::custom("expected a method or a non-empty array of them, found []"));
                }
                Ok(Methods(list.into_iter().map(|m| m.0).collect()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `headers`: which rate-limit header fields to send.
#[derive(serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Headers {
    #[default]
    Ietf,
    #[serde(rename = "ietf-10")]
    Ietf10,
    Legacy,
    Both,
    None,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    #[serde(deserialize_with = "by_name")]
    pub on_failure: FailMode,
    pub timeout: Millis<1, 30_000>,
    pub breaker_failures: Whole<1, 1_000>,
    pub breaker_cooldown: Millis<1, 3_600_000>,
    pub memory_max_keys: Whole<1, 1_000_000>,
    pub deny_cache: bool,
    pub batch: bool,
    pub controls_refresh: Millis<1_000, 600_000>,
    pub fleet: bool,
}

impl Default for Store {
    fn default() -> Self {
        let s = DEFAULT_STORE;
        Store {
            on_failure: s.on_failure,
            timeout: Millis(s.timeout_ms),
            breaker_failures: Whole(s.breaker_failures as u64),
            breaker_cooldown: Millis(s.breaker_cooldown_ms),
            memory_max_keys: Whole(s.memory_max_keys as u64),
            deny_cache: s.deny_cache,
            batch: s.batch,
            controls_refresh: Millis(s.controls_refresh_ms),
            fleet: s.fleet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> (String, String) {
        match read(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => (e.path, e.message),
        }
    }

    #[test]
    fn the_first_error_names_its_field_without_a_position() {
        let (path, message) = at(r#"{"tiers": {"a": {"limits": {"b": {"token_bucket": {"capacity": 0}}}}}}"#);
        assert_eq!(path, "tiers.a.limits.b.token_bucket.capacity");
        assert_eq!(message, "0 is out of range; expected 1 to 9007199254740992");
        let (path, message) = at(r#"{"routes": [{"path": "/a"}, {"method": ["GET", 7]}]}"#);
        assert_eq!(path, "routes[1].method[1]");
        assert!(message.contains("expected a string") && !message.contains("line"), "{message}");
    }

    #[test]
    fn unknown_and_repeated_fields_are_refused() {
        let (path, message) = at(r#"{"store": {"colour": 1}}"#);
        assert_eq!(path, "store.colour");
        assert!(message.starts_with("unknown field `colour`, expected one of"), "{message}");
        let (path, message) = at(r#"{"store": {"timeout": "1s", "timeout": "2s"}}"#);
        assert_eq!((path.as_str(), message.as_str()), ("store", "duplicate field `timeout`"));
        let (path, message) = at(r#"{"tiers": {"a": {"limits": {"b": "1/s"}}, "a": {"limits": {"b": "2/s"}}}}"#);
        assert_eq!((path.as_str(), message.as_str()), ("tiers", "`a` is written twice"));
    }

    #[test]
    fn named_things_come_in_the_order_of_their_names() {
        let Ok(doc) = read(r#"{"tiers": {"b": {}, "a": {"limits": {"y": "1/s", "x": "2/s"}}}}"#) else { panic!() };
        let tiers = doc.tiers.unwrap_or_default().0;
        assert_eq!(tiers.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let limits = tiers[0].1.limits.as_ref().map(|l| l.0.iter().map(|l| l.0.as_str()).collect::<Vec<_>>());
        assert_eq!(limits, Some(vec!["x", "y"]));
    }

    #[test]
    fn fail_modes_read_back_as_the_names_they_print() {
        for mode in [FailMode::Memory, FailMode::Open, FailMode::Closed] {
            let text = format!(r#"{{"store": {{"on_failure": "{}"}}}}"#, mode.as_str());
            assert_eq!(read(&text).map(|d| d.store.on_failure).ok(), Some(mode));
        }
    }

    #[test]
    fn an_object_is_an_object() {
        assert_eq!(at("[]"), (String::new(), "invalid type: sequence, expected an object".into()));
        assert_eq!(at(r#"{"store": [true]}"#).0, "store");
        let (path, message) = at(r#"{"headers": 1}"#);
        assert_eq!((path.as_str(), message.as_str()), ("headers", "invalid type: integer `1`, expected a string"));
    }

    #[test]
    fn syntax_errors_are_not_field_errors() {
        let e = read(r#"{"tiers": {"a": "#).err().unwrap();
        assert_eq!(e.path, "");
        assert!(e.message.starts_with("not valid JSON"), "{}", e.message);
        let e = read(r#"{} {}"#).err().unwrap();
        assert!(e.message.contains("trailing characters"), "{}", e.message);
    }
}
