//! Identity extraction: the client-IP header (IPv4, IPv6 in every form), X-Forwarded-For, the
//! API-key header and the Authorization header (JWT segments), as any bytes a client can send.
//! Also the admin API's subject lookup, which takes the same values from a query string.
#![no_main]
use edge_limiter::core::admin::{body_fields, subject_from_fields, FieldSource};
use edge_limiter::core::identity::{
    failure_subject, identify, presents_credential, subject_hash, CallerKind, RequestFacts,
};
use edge_limiter::core::policy::Policy;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policies() -> &'static [Policy; 2] {
    static P: OnceLock<[Policy; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let trusting = Policy::parse(
            r#"{"tiers": {"anonymous": {"limits": {"b": "1/s"}}},
                "identity": {"client_ip": {"trust_forwarded_for": true, "ipv4_prefix": 24, "ipv6_prefix": 56,
                                           "ipv6_wide": {"prefix": 40, "limits": {"w": "10/s"}}},
                             "jwt": {"issuer": "i", "audience": "a", "leeway_s": 5, "default_tier": "anonymous"}}}"#,
        )
        .expect("fuzz policy");
        [Policy::example(), trusting]
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xFF (never valid UTF-8, so no field contains it).
    let mut fields = data.split(|b| *b == 0xFF).map(|f| std::str::from_utf8(f).ok());
    let mut next = || fields.next().flatten();
    let (ip, xff, key, auth) = (next(), next(), next(), next());
    let now_s = 1_800_000_000;
    for (i, policy) in policies().iter().enumerate() {
        let facts = RequestFacts { client_ip: ip, forwarded_for: xff, api_key: key, authorization: auth, now_s };
        let secret: &[u8] = if i == 0 { b"fuzz-secret" } else { b"" };
        let judged = presents_credential(policy, &facts, true);
        let failures = failure_subject(&policy.identity.client_ip, &facts);
        assert!(failures.starts_with("ip:"));
        if let Ok(caller) = identify(policy, &facts, Some(secret)) {
            assert!(policy.tier(caller.tier).is_some());
            // A caller named by a credential presented one the policy judges.
            assert!(
                caller.kind == CallerKind::Anonymous || judged,
                "identified by a credential not counted as presented"
            );
            assert_eq!(subject_hash(&caller.subject).len(), 32);
            if let (Some(k), CallerKind::ApiKey) = (key, caller.kind) {
                assert!(k.len() < 8 || !caller.subject.contains(k), "a raw key in a subject");
            }
        }
        let pairs: Vec<(String, String)> = [("ip", ip), ("key", key), ("sub", auth), ("tier", xff)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
            .collect();
        for source in [FieldSource::Query, FieldSource::Body] {
            let named = subject_from_fields(policy, &pairs, source);
            assert!(!(source == FieldSource::Query && key.is_some() && named.is_ok()), "a raw key taken from a URL");
        }
        if let Some(body) = auth {
            let _ = body_fields(body);
        }
    }
});
