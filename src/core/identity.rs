//! Who is calling, and in which tier: request facts in, `(tier, subject)` out.
//!
//! Only what the client cannot simply claim decides the tier: an API key found in the
//! policy's table of SHA-256 digests, or an HS256 JWT whose signature and expiry check out.
//! Everyone else is anonymous and keyed by client IP (IPv6 grouped by prefix, so one host
//! cannot rotate through its /64). A credential that is present but wrong is an error
//! (401), never a quiet fall back to anonymous.
//!
//! Subjects never carry a raw key, token or address into a store key: [`Subject::digest`]
//! turns them into digests first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::policy::{ClientIp, Jwt, Policy, TierId};
use super::subject::{hex, Subject};

/// What the edge read off the request. Header values are as the runtime gave them.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts<'a> {
    /// The policy's client-IP header (`CF-Connecting-IP` by default).
    pub client_ip: Option<&'a str>,
    pub forwarded_for: Option<&'a str>,
    /// The policy's API-key header.
    pub api_key: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// Seconds since the epoch, for `exp` and `nbf`.
    pub now_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub tier: TierId,
    /// What the caller is known by, before hashing.
    pub subject: Subject,
    pub kind: CallerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    Anonymous,
    ApiKey,
    Jwt,
}

/// Why a presented credential was refused. The message is safe to show the client: it
/// never echoes the credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityError {
    UnknownApiKey,
    InvalidToken(&'static str),
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::UnknownApiKey => f.write_str("The API key is not known."),
            IdentityError::InvalidToken(why) => write!(f, "The bearer token is not valid: {why}."),
        }
    }
}

/// Longest credential looked at; anything longer is refused without hashing it.
const MAX_CREDENTIAL: usize = 8 * 1024;

pub fn identify(policy: &Policy, facts: &RequestFacts, jwt_secret: Option<&[u8]>) -> Result<Caller, IdentityError> {
    let id = &policy.identity;
    if let (Some(keys), Some(presented)) = (&id.api_key, our_key(id, facts.api_key)) {
        if presented.len() > MAX_CREDENTIAL {
            return Err(IdentityError::UnknownApiKey);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every entry is compared in full so the time taken says nothing about which
        // digest came close.
        let mut found = None;
        for (known, tier) in &keys.keys {
            if constant_time_eq(known, &digest) {
                found = Some(*tier);
            }
        }
        let tier = found.ok_or(IdentityError::UnknownApiKey)?;
        return Ok(Caller { tier, subject: Subject::Key(hex(&digest)), kind: CallerKind::ApiKey });
    }
    if let (Some(jwt), Some(auth), Some(secret)) = (&id.jwt, facts.authorization, jwt_secret) {
        if let Some(token) = bearer_token(auth).filter(|t| claims_to_be_ours(t, jwt)) {
            let claims = verify_hs256(token, secret, jwt, facts.now_s)?;
            let tier = claims
                .get(&jwt.tier_claim)
                .and_then(Value::as_str)
                .and_then(|name| policy.tier_id(name))
                .unwrap_or(jwt.default_tier);
            let sub = match claims.get(&jwt.subject_claim) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(IdentityError::InvalidToken("it has no subject claim")),
            };
            return Ok(Caller { tier, subject: Subject::Token(sub), kind: CallerKind::Jwt });
        }
    }
    Ok(Caller { tier: id.anonymous_tier, subject: client_subject(&id.client_ip, facts), kind: CallerKind::Anonymous })
}

/// The caller's address as a subject (`ip:203.0.113.7`, `ip:2001:db8::/64`), or
/// `ip:unknown`: what anonymous callers and failed credentials are counted by.
pub fn client_subject(rules: &ClientIp, facts: &RequestFacts) -> Subject {
    match client_network(rules, facts) {
        Some(net) => Subject::Address(net),
        None => Subject::UnknownAddress,
    }
}

/// What failed credentials are counted by: the caller's address, or for IPv6 its wider net
/// when the policy casts one, so that one allocation cannot rotate through its /64s for
/// fresh guesses.
pub fn failure_subject(rules: &ClientIp, facts: &RequestFacts) -> Subject {
    wide_subject(rules, facts).unwrap_or_else(|| client_subject(rules, facts))
}

/// True when the request carries a credential that this policy judges (its API-key header,
/// or a bearer token that claims to be ours while the Worker has a `JWT_SECRET`): the
/// requests a guesser sends.
pub fn presents_credential(policy: &Policy, facts: &RequestFacts, has_jwt_secret: bool) -> bool {
    let id = &policy.identity;
    let ours = |t: &str| id.jwt.as_ref().is_some_and(|jwt| claims_to_be_ours(t, jwt));
    our_key(id, facts.api_key).is_some()
        || (has_jwt_secret && facts.authorization.and_then(bearer_token).is_some_and(ours))
}

/// The API-key header's value when it is ours: the policy judges API keys, and the value
/// starts with `api_key.prefix` when one is set. Otherwise it is the app's own key.
fn our_key<'a>(id: &super::policy::Identity, presented: Option<&'a str>) -> Option<&'a str> {
    let keys = id.api_key.as_ref()?;
    presented.filter(|k| k.starts_with(keys.prefix.as_str()))
}

/// A bearer token is ours when it says so: a JWT whose header names HS256, the one
/// algorithm this limiter verifies, and, when the policy names an `issuer`, whose `iss` is
/// that issuer. Ours, it is verified, and a failure is a failed credential. Any other bearer
/// token (an opaque session token, the app's own RS256 or `none` tokens) is the app's
/// business: it passes to the origin untouched and its caller is limited by address.
pub fn claims_to_be_ours(token: &str, rules: &Jwt) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    // A header is a few dozen bytes; a huge one is nobody's JWT.
    if header.len() > 1024 || decode_json(header).and_then(|h| h.get("alg").cloned()) != Some(Value::from("HS256")) {
        return false;
    }
    match &rules.issuer {
        None => true,
        Some(iss) => {
            payload.len() <= MAX_CREDENTIAL
                && decode_json(payload).is_some_and(|p| p.get("iss").and_then(Value::as_str) == Some(iss.as_str()))
        }
    }
}

/// The API keys that README and the dashboard publish for trying the limiter locally:
/// `demo-premium-key` and `demo-authenticated-key`, as SHA-256 digests. They are only keys
/// in front of the demo origin; anywhere else they are unknown keys (`Policy::drop_keys`).
pub const DEMO_KEY_DIGESTS: [&str; 2] = [
    "24fdfedfe3f3458eae8dfd32a021ba503cb73dca09e14591a41821f5f9af91fe",
    "e480255150c40a53ba4ad6ae9b09089a9399d8fa1feb56a20fc8a084576a0874",
];

/// `Bearer <token>`, scheme case-insensitive. Other schemes are not ours to judge.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The client's address masked to the policy's prefix, as text (`2001:db8:1:2::/64`).
pub fn client_network(rules: &ClientIp, facts: &RequestFacts) -> Option<String> {
    Some(masked(client_address(rules, facts)?, rules.ipv4_prefix, rules.ipv6_prefix))
}

/// The subject of the caller's wider IPv6 network (`ip:2001:db8:1::/48`), when the policy
/// casts that net and the caller comes over IPv6.
pub fn wide_subject(rules: &ClientIp, facts: &RequestFacts) -> Option<Subject> {
    let wide = rules.ipv6_wide.as_ref()?;
    match client_address(rules, facts)? {
        ip @ IpAddr::V6(_) => Some(Subject::Address(masked(ip, rules.ipv4_prefix, wide.prefix))),
        IpAddr::V4(_) => None,
    }
}

/// The client's address, IPv4-mapped IPv6 as IPv4.
pub fn client_address(rules: &ClientIp, facts: &RequestFacts) -> Option<IpAddr> {
    let from_header = facts.client_ip.and_then(|v| v.trim().parse::<IpAddr>().ok());
    let ip = from_header.or_else(|| {
        if !rules.trust_forwarded_for {
            return None;
        }
        facts.forwarded_for?.split(',').next()?.trim().parse::<IpAddr>().ok()
    })?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    })
}

fn masked(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let net = Ipv4Addr::from(u32::from(v4) & mask32(v4_prefix));
            if v4_prefix == 32 {
                net.to_string()
            } else {
                format!("{net}/{v4_prefix}")
            }
        }
        IpAddr::V6(v6) => {
            let net = Ipv6Addr::from(u128::from(v6) & mask128(v6_prefix));
            if v6_prefix == 128 {
                net.to_string()
            } else {
                format!("{net}/{v6_prefix}")
            }
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32) as u32)
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix.min(128) as u32)
    }
}

/// Checks an HS256 token's form, algorithm, signature and time claims; returns its claims.
pub fn verify_hs256(
    token: &str,
    secret: &[u8],
    rules: &Jwt,
    now_s: u64,
) -> Result<serde_json::Map<String, Value>, IdentityError> {
    use IdentityError::InvalidToken as Bad;
    if token.len() > MAX_CREDENTIAL {
        return Err(Bad("it is too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Bad("it is not three dot-separated parts"));
    };
    let header = decode_json(h).ok_or(Bad("its header is not base64url JSON"))?;
    // The algorithm is fixed by the policy, never taken from the token: `none`, RS256 and
    // friends are refused before any signature work.
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(Bad("its algorithm is not HS256"));
    }
    let signature = base64url_decode(s).ok_or(Bad("its signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Bad("the secret is unusable"))?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&signature).map_err(|_| Bad("its signature does not match"))?;
    let claims = decode_json(p).ok_or(Bad("its payload is not base64url JSON"))?;
    let leeway = rules.leeway_s;
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp.saturating_add(leeway) > now_s => {}
        Some(_) => return Err(Bad("it has expired")),
        None => return Err(Bad("it has no numeric exp claim")),
    }
    if let Some(nbf) = claims.get("nbf") {
        match nbf.as_u64() {
            Some(nbf) if nbf <= now_s.saturating_add(leeway) => {}
            _ => return Err(Bad("it is not valid yet")),
        }
    }
    if let Some(iss) = &rules.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
            return Err(Bad("its issuer is not accepted"));
        }
    }
    if let Some(aud) = &rules.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
            _ => false,
        };
        if !ok {
            return Err(Bad("its audience is not accepted"));
        }
    }
    Ok(claims)
}

fn decode_json(segment: &str) -> Option<serde_json::Map<String, Value>> {
    let bytes = base64url_decode(segment)?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Unpadded base64url (RFC 4648 §5), as JWTs use it. Padding is tolerated.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-not-a-real-one";

    pub(crate) fn base64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    pub(crate) fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
        let signing = format!("{}.{}", base64url(header.as_bytes()), base64url(claims.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signing.as_bytes());
        format!("{signing}.{}", base64url(&mac.finalize().into_bytes()))
    }

    fn policy() -> Policy {
        Policy::example()
    }

    fn facts<'a>() -> RequestFacts<'a> {
        RequestFacts { client_ip: Some("203.0.113.9"), now_s: 1_800_000_000, ..Default::default() }
    }

    #[test]
    fn anonymous_callers_are_keyed_by_ip_and_ipv6_by_prefix() {
        let p = policy();
        let anon = p.tier_id("anonymous").unwrap();
        let c = identify(&p, &facts(), None).unwrap();
        assert_eq!((c.tier, c.subject.to_string().as_str(), c.kind), (anon, "ip:203.0.113.9", CallerKind::Anonymous));
        let a = identify(&p, &RequestFacts { client_ip: Some("2001:db8:1:2:aaaa::1"), ..facts() }, None).unwrap();
        let b = identify(&p, &RequestFacts { client_ip: Some("2001:db8:1:2:ffff:1:2:3"), ..facts() }, None).unwrap();
        let other = identify(&p, &RequestFacts { client_ip: Some("2001:db8:1:3::1"), ..facts() }, None).unwrap();
        assert_eq!(a.subject, "ip:2001:db8:1:2::/64");
        assert_eq!(a.subject, b.subject);
        assert_ne!(a.subject, other.subject);
        let mapped = identify(&p, &RequestFacts { client_ip: Some("::ffff:203.0.113.9"), ..facts() }, None).unwrap();
        assert_eq!(mapped.subject, "ip:203.0.113.9");
    }

    #[test]
    fn forwarded_for_counts_only_when_trusted() {
        let mut p = policy();
        let f = RequestFacts { client_ip: None, forwarded_for: Some("198.51.100.4, 10.0.0.1"), ..facts() };
        assert_eq!(identify(&p, &f, None).unwrap().subject, "ip:unknown");
        p.identity.client_ip.trust_forwarded_for = true;
        assert_eq!(identify(&p, &f, None).unwrap().subject, "ip:198.51.100.4");
        // A garbage address is no address.
        let junk = RequestFacts { client_ip: Some("not-an-ip"), ..facts() };
        assert_eq!(identify(&p, &junk, None).unwrap().subject, "ip:unknown");
        p.identity.client_ip.ipv4_prefix = 24;
        assert_eq!(identify(&p, &facts(), None).unwrap().subject, "ip:203.0.113.0/24");
    }

    #[test]
    fn api_keys_map_to_tiers_through_digests() {
        let p = policy();
        let c = identify(&p, &RequestFacts { api_key: Some("demo-premium-key"), ..facts() }, None).unwrap();
        assert_eq!(c.tier, p.tier_id("premium").unwrap());
        assert_eq!(c.kind, CallerKind::ApiKey);
        assert!(!c.subject.to_string().contains("demo-premium-key"));
        let e = identify(&p, &RequestFacts { api_key: Some("guess"), ..facts() }, None).unwrap_err();
        assert_eq!(e, IdentityError::UnknownApiKey);
        let long = "k".repeat(16 * 1024);
        assert!(identify(&p, &RequestFacts { api_key: Some(&long), ..facts() }, None).is_err());
    }

    #[test]
    fn jwts_are_checked_and_give_their_tier() {
        let p = policy();
        let hdr = r#"{"alg":"HS256","typ":"JWT"}"#;
        let good = sign(hdr, r#"{"sub":"u1","tier":"premium","exp":1800000060}"#, SECRET);
        let f = |t: &'static str| RequestFacts { authorization: Some(t), ..facts() };
        let auth = format!("Bearer {good}");
        let c = identify(&p, &RequestFacts { authorization: Some(&auth), ..facts() }, Some(SECRET)).unwrap();
        assert_eq!((c.tier, c.subject.to_string().as_str()), (p.tier_id("premium").unwrap(), "jwt:u1"));
        // An unknown tier claim gets the default tier, not an error and not the claim.
        let odd = format!("bearer {}", sign(hdr, r#"{"sub":"u2","tier":"platinum","exp":1800000060}"#, SECRET));
        let c = identify(&p, &RequestFacts { authorization: Some(&odd), ..facts() }, Some(SECRET)).unwrap();
        assert_eq!(c.tier, p.tier_id("authenticated").unwrap());

        let cases = [
            (sign(hdr, r#"{"sub":"u","exp":1799999999}"#, SECRET), "expired"),
            (sign(hdr, r#"{"sub":"u"}"#, SECRET), "no numeric exp"),
            (sign(hdr, r#"{"sub":"u","exp":1800000060}"#, b"other-secret"), "signature does not match"),
            (sign(hdr, r#"{"exp":1800000060}"#, SECRET), "no subject"),
            (sign(hdr, r#"{"sub":"u","exp":1800000060,"nbf":1800000010}"#, SECRET), "not valid yet"),
            (format!("{}.e30.", base64url(br#"{"alg":"HS256"}"#)), "signature does not match"),
            (format!("{}.e30.!!", base64url(br#"{"alg":"HS256"}"#)), "signature is not base64url"),
        ];
        for (token, why) in cases {
            let auth = format!("Bearer {token}");
            match identify(&p, &RequestFacts { authorization: Some(&auth), ..facts() }, Some(SECRET)) {
                Err(IdentityError::InvalidToken(msg)) => assert!(msg.contains(why), "{token}: {msg}"),
                other => panic!("{token}: {other:?}"),
            }
        }
        // Other schemes, and bearer tokens that do not claim to be ours, are the origin's
        // business: their callers are anonymous, limited by address.
        assert_eq!(identify(&p, &f("Basic dTpw"), Some(SECRET)).unwrap().kind, CallerKind::Anonymous);
        for theirs in [
            sign(r#"{"alg":"none"}"#, r#"{"sub":"u","exp":1800000060}"#, SECRET),
            sign(r#"{"alg":"RS256"}"#, r#"{"sub":"u","tier":"premium","exp":1800000060}"#, SECRET),
            sign(r#"{"alg":"hs256"}"#, r#"{"sub":"u","exp":1800000060}"#, SECRET),
            "a.b".to_string(),
            "!!.??.**".to_string(),
            "opaque-session-token-4f2a".to_string(),
        ] {
            let auth = format!("Bearer {theirs}");
            let c = identify(&p, &RequestFacts { authorization: Some(&auth), ..facts() }, Some(SECRET)).unwrap();
            assert_eq!((c.kind, c.subject.to_string().as_str()), (CallerKind::Anonymous, "ip:203.0.113.9"), "{theirs}");
            assert!(
                !presents_credential(&p, &RequestFacts { authorization: Some(&auth), ..facts() }, true),
                "{theirs}"
            );
        }
        // Without a secret no token can be ours: anonymous, never refused for our configuration.
        let missing = identify(&p, &RequestFacts { authorization: Some(&auth), ..facts() }, None).unwrap();
        assert_eq!(missing.kind, CallerKind::Anonymous);
        assert!(!presents_credential(&p, &RequestFacts { authorization: Some(&auth), ..facts() }, false));
        // With an issuer named, only tokens of that issuer claim to be ours.
        let mut q = policy();
        q.identity.jwt.as_mut().unwrap().issuer = Some("https://id.example".into());
        let other =
            format!("Bearer {}", sign(hdr, r#"{"sub":"u","iss":"https://other.example","exp":1800000060}"#, b"x"));
        assert_eq!(
            identify(&q, &RequestFacts { authorization: Some(&other), ..facts() }, Some(SECRET)).unwrap().kind,
            CallerKind::Anonymous
        );
        let forged =
            format!("Bearer {}", sign(hdr, r#"{"sub":"u","iss":"https://id.example","exp":1800000060}"#, b"x"));
        assert!(identify(&q, &RequestFacts { authorization: Some(&forged), ..facts() }, Some(SECRET)).is_err());
    }

    #[test]
    fn the_wide_net_groups_ipv6_by_its_prefix_only() {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"b": "10/s"}}},
                "identity": {"client_ip": {"ipv6_wide": {"prefix": 48, "limits": {"b": "100/s"}}}}}"#,
        )
        .unwrap();
        let rules = &p.identity.client_ip;
        let at = |ip: &'static str| RequestFacts { client_ip: Some(ip), ..facts() };
        assert_eq!(
            wide_subject(rules, &at("2001:db8:1:2::1")).map(|s| s.to_string()).as_deref(),
            Some("ip:2001:db8:1::/48")
        );
        assert_eq!(wide_subject(rules, &at("2001:db8:1:ffff::1")), wide_subject(rules, &at("2001:db8:1:2::1")));
        assert_ne!(wide_subject(rules, &at("2001:db8:2::1")), wide_subject(rules, &at("2001:db8:1::1")));
        assert_eq!(wide_subject(rules, &at("203.0.113.9")), None);
        assert_eq!(wide_subject(rules, &at("::ffff:203.0.113.9")), None, "IPv4-mapped is IPv4");
        assert_eq!(wide_subject(&Policy::example().identity.client_ip, &at("2001:db8::1")), None, "no net, no subject");
        assert_eq!(failure_subject(rules, &at("2001:db8:1:2::1")), "ip:2001:db8:1::/48");
        assert_eq!(failure_subject(rules, &at("203.0.113.9")), "ip:203.0.113.9");
        assert_eq!(failure_subject(&Policy::example().identity.client_ip, &at("2001:db8::1")), "ip:2001:db8::/64");
    }

    #[test]
    fn the_demo_digests_are_the_published_demo_keys() {
        for (key, digest) in ["demo-premium-key", "demo-authenticated-key"].iter().zip(DEMO_KEY_DIGESTS) {
            assert_eq!(hex(&Sha256::digest(key.as_bytes())), digest);
        }
    }

    #[test]
    fn only_credentials_the_policy_judges_count_as_presented() {
        let mut p = policy();
        let key = RequestFacts { api_key: Some("k"), ..facts() };
        let token = format!("Bearer {}", sign(r#"{"alg":"HS256"}"#, "{}", b"guess"));
        let bearer = RequestFacts { authorization: Some(&token), ..facts() };
        let basic = RequestFacts { authorization: Some("Basic dTpw"), ..facts() };
        assert!(presents_credential(&p, &key, true) && presents_credential(&p, &bearer, true));
        assert!(!presents_credential(&p, &basic, true) && !presents_credential(&p, &facts(), true));
        p.identity.jwt = None;
        assert!(!presents_credential(&p, &bearer, true));
        assert_eq!(client_subject(&p.identity.client_ip, &RequestFacts::default()), Subject::UnknownAddress);
    }

    #[test]
    fn with_a_prefix_only_keys_that_carry_it_are_ours() {
        let mut p = policy();
        p.identity.api_key.as_mut().unwrap().prefix = "demo-".into();
        let theirs = RequestFacts { api_key: Some("app-own-key-123"), ..facts() };
        let c = identify(&p, &theirs, None).unwrap();
        assert_eq!(c.kind, CallerKind::Anonymous, "the app's own key: not judged, limited by address");
        assert!(!presents_credential(&p, &theirs, false));
        let ours = RequestFacts { api_key: Some("demo-premium-key"), ..facts() };
        assert_eq!(identify(&p, &ours, None).unwrap().kind, CallerKind::ApiKey);
        let guess = RequestFacts { api_key: Some("demo-guess"), ..facts() };
        assert_eq!(identify(&p, &guess, None), Err(IdentityError::UnknownApiKey));
        assert!(presents_credential(&p, &guess, false));
    }

    #[test]
    fn subjects_are_hashed_for_keys() {
        let h = Subject::Address("203.0.113.9".into()).digest();
        assert_eq!(h.as_str().len(), 32);
        assert!(!h.as_str().contains("203"));
        assert_ne!(h, Subject::Address("203.0.113.8".into()).digest());
        assert_eq!(base64url_decode("aGk").unwrap(), b"hi");
        assert!(base64url_decode("a").is_none());
    }
}
