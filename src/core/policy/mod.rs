//! The policy: which limits apply to whom, read from JSON into types that cannot hold an
//! invalid value. Three parts:
//!
//! - `model`: the model the Worker runs (`Policy` and its parts) and its methods;
//! - `document`: the document as written, derived with serde: unknown fields are refused,
//!   absent ones take the values of its `Default` impls, and a value wrong on its own (a rate
//!   that does not parse, a number out of range) is reported at its field's dotted path
//!   (`tiers.premium.limits.burst.refill`);
//! - `tree`: how the document is read so that errors have those paths: into a tree that
//!   keeps every key, then from the tree by a deserializer that knows each node's path;
//! - `validate`: what needs several fields at once (tier references, reserved tier names, a
//!   route's cost against the capacities it meets), turning the document into the model and
//!   collecting every such problem.
//!
//! The format is documented in docs/policy.md; `policy.example.json` is a full
//! example and is what the Worker runs when no policy is configured.

mod document;
mod model;
mod tree;
mod validate;

pub use document::read_tree;
pub use model::*;
pub use tree::Tree;

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Policy, PolicyErrors> {
        let document = document::read(text).map_err(|e| PolicyErrors(vec![e]))?;
        validate::policy(&document)
    }

    /// Limits written as a tier's `limits` are (an object of limits by name), read and checked
    /// the same way: the decision API's inline limits. An error names its field under `path`.
    pub fn read_limits(value: &serde_json::Value, path: &str) -> Result<Vec<NamedLimit>, PolicyErrors> {
        let limits = document::read_limits(value, path).map_err(|e| PolicyErrors(vec![e]))?;
        validate::limits(&limits, path)
    }

    /// Limits written as a tier's are, as a tier of their own named `<label>:<digest>`, the
    /// digest of their names and parameters: the same limits given again meet the same
    /// buckets, other limits never do. A policy's tier names cannot hold `:`, so no such
    /// tier shares a policy tier's keys. The decision API's inline limits and a subject's
    /// own limits set through the admin API are such tiers.
    pub fn inline_tier(label: &str, value: &serde_json::Value, path: &str) -> Result<Tier, PolicyErrors> {
        use sha2::{Digest, Sha256};
        let limits = Policy::read_limits(value, path)?;
        let mut h = Sha256::new();
        for l in &limits {
            h.update(l.name.as_bytes());
            for n in l.algorithm.script_params() {
                h.update(b":");
                h.update(n.to_string().as_bytes());
            }
            h.update(b";");
        }
        let digest = crate::core::subject::hex(&h.finalize());
        let name = format!("{label}:{}", digest.get(..12).unwrap_or(&digest));
        let description = format!("Limits of its own ({label})");
        Ok(Tier { name, description, limits, lease: Leasing::OFF, shadow: false })
    }

    /// A block or allow list written as the policy's are, read the same way: the admin
    /// API's runtime lists. An error names its entry under `path`.
    pub fn read_list(value: &serde_json::Value, path: &str) -> Result<crate::core::lists::List, PolicyErrors> {
        let list = document::read_list(value, path).map_err(|e| PolicyErrors(vec![e]))?;
        Ok(validate::list(&list))
    }

    /// The policy compiled into the Worker.
    pub fn example() -> Policy {
        match Policy::parse(EXAMPLE_POLICY) {
            Ok(p) => p,
            Err(e) => panic!("policy.example.json is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::Algorithm;
    use crate::core::cors::{AllowOrigins, Cors};
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
    fn a_route_may_hold_requests_for_a_short_wait() {
        let route = |rule: &str| {
            format!(r#"{{"tiers": {{"anonymous": {{"limits": {{"burst": "10/s"}}}}}}, "routes": [{rule}]}}"#)
        };
        let p = Policy::parse(&route(r#"{"path": "/api/", "max_delay": "500ms"}"#)).unwrap();
        assert_eq!(p.routes[0].max_delay_ms, 500);
        assert_eq!(Policy::parse(&route(r#"{"path": "/api/"}"#)).unwrap().routes[0].max_delay_ms, 0);
        assert!(has(&errors(&route(r#"{"path": "/api/", "max_delay": "20s"}"#)), "routes[0].max_delay", ""));
        assert!(has(&errors(&route(r#"{"path": "/h", "exempt": true, "max_delay": "1s"}"#)), "routes[0]", "max_delay"));
    }

    #[test]
    fn a_tier_leases_only_when_asked() {
        let tier = |lease: &str| {
            let text = format!(r#"{{"tiers": {{"anonymous": {{"limits": {{"b": "10/s"}}{lease}}}}}}}"#);
            Policy::parse(&text).map(|p| p.tiers[0].lease)
        };
        assert_eq!(tier(""), Ok(Leasing::OFF), "off unless asked");
        assert_eq!(tier(r#", "lease": "off""#), Ok(Leasing::OFF));
        assert_eq!(tier(r#", "lease": "auto""#), Ok(Leasing::AUTO));
        assert_eq!(tier(r#", "lease": {"max": 8, "ttl": "500ms"}"#), Ok(Leasing { max: 8, ttl_ms: 500 }));
        let refused = |lease: &str| tier(lease).unwrap_err().to_string();
        assert!(
            refused(r#", "lease": "always""#).contains("`tiers.anonymous.lease`"),
            "{}",
            refused(r#", "lease": "always""#)
        );
        assert!(refused(r#", "lease": {"max": 0, "ttl": "1s"}"#).contains("tiers.anonymous.lease.max"));
        assert!(refused(r#", "lease": {"max": 8}"#).contains("ttl"));
        assert!(refused(r#", "lease": {"max": 8, "ttl": "1s", "x": 1}"#).contains("unknown field `x`"));
        assert!(refused(r#", "lease": 5"#).contains("\"off\", \"auto\""));
    }

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
        assert_eq!(p.headers, HeaderStyle { ietf: Some(IetfDraft::Twelve), legacy: false });
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
            (
                r#"{"block": {"addresses": ["10.0.0.0/8", "10.1.2.3/8"]}}"#,
                "block.addresses[1]",
                "bits set past its prefix",
            ),
            (r#"{"block": {"addresses": ["2001:db8::/200"]}}"#, "block.addresses[0]", "at most 128 bits"),
            (r#"{"allow": {"countries": ["Germany"]}}"#, "allow.countries[0]", "two letters"),
            (r#"{"block": {"asns": [0]}}"#, "block.asns[0]", "out of range"),
            (r#"{"block": {"user_agents": ["**"]}}"#, "block.user_agents[0]", "every user agent"),
            (r#"{"block": {"ips": ["10.0.0.1"]}}"#, "block.ips", "unknown field"),
            (r#"{"allow": ["10.0.0.1"]}"#, "allow", "expected an object"),
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
    fn block_and_allow_lists_are_read_entry_by_entry() {
        use crate::core::lists::{Listed, Visitor};
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"b": "1/s"}}},
                "block": {"addresses": ["203.0.113.0/24", "2001:db8::/32"], "countries": ["kp"], "asns": [64496],
                          "user_agents": ["*sqlmap*"]},
                "allow": {"addresses": ["198.51.100.7"]}}"#,
        )
        .unwrap();
        let at = |a: &str| Visitor { address: a.parse().ok(), ..Visitor::default() };
        assert_eq!(p.lists.judge(&at("2001:db8::5")), Listed::Blocked("address 2001:db8::/32".into()));
        assert_eq!(p.lists.judge(&at("198.51.100.7")), Listed::Allowed("address 198.51.100.7/32".into()));
        assert!(p.lists.needs_geo());
        assert!(Policy::example().lists.is_empty(), "the example blocks and allows nobody");
    }

    #[test]
    fn shadow_is_the_policy_s_the_tier_s_or_the_route_s() {
        let p = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"b": "1/s"}}, "beta": {"limits": {"b": "1/s"}, "shadow": true}},
                "routes": [{"path": "/try", "shadow": true}, {"path": "/x", "cost": 1}]}"#,
        )
        .unwrap();
        let (anonymous, beta) = (&p.tiers[0], &p.tiers[1]);
        assert!(!p.in_shadow(anonymous, None) && p.in_shadow(beta, None));
        assert!(p.in_shadow(anonymous, Some(&p.routes[0])) && !p.in_shadow(anonymous, Some(&p.routes[1])));
        let all = Policy::parse(r#"{"shadow": true, "tiers": {"anonymous": {"limits": {"b": "1/s"}}}}"#).unwrap();
        assert!(all.in_shadow(&all.tiers[0], None));
        assert!(!Policy::example().shadow && Policy::example().tiers.iter().all(|t| !t.shadow));
        assert!(has(&errors(r#"{"shadow": "yes"}"#), "shadow", "expected a boolean"));
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
