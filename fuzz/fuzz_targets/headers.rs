//! Header rendering: any decision the stores can return (including one decoded from a
//! hostile reply), rendered as RateLimit fields (both drafts) and a 429 in every style, must give valid
//! field values: no CR, LF or NUL, so no header can be injected or split.
#![no_main]
use edge_limiter::core::algorithm::{Decision, LimitStatus, Outcome};
use edge_limiter::core::decision::{prefers_html, rate_limit_headers, too_many_requests, LastDenied};
use edge_limiter::core::policy::{HeaderStyle, IetfDraft, Policy};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::sync::OnceLock;

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, slot) in b.iter_mut().enumerate() {
        *slot = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(Policy::example)
}

thread_local! {
    /// Kept across inputs, as the isolate keeps it across requests: a kept body must be the
    /// body made afresh.
    static LAST: RefCell<LastDenied> = RefCell::new(LastDenied::default());
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    let Some(&first) = data.first() else { return };
    let tier = &policy.tiers[usize::from(first) % policy.tiers.len()];
    let outcome = |n: u64| match n % 3 {
        0 => Outcome::Allowed,
        1 => Outcome::Denied,
        _ => Outcome::Never,
    };
    let statuses: Vec<LimitStatus> = (0..tier.limits.len())
        .map(|i| LimitStatus {
            outcome: outcome(u64_at(data, 1 + 4 * i)),
            remaining: u64_at(data, 2 + 4 * i),
            reset_ms: u64_at(data, 3 + 4 * i),
            retry_after_ms: u64_at(data, 4 + 4 * i),
        })
        .collect();
    let binding = (u64_at(data, 20) as usize) % statuses.len();
    let Some(decision) = Decision::from_parts(outcome(u64_at(data, 21)), binding, u64_at(data, 22), &statuses) else {
        return;
    };
    let accept = std::str::from_utf8(data.get(23 * 8..).unwrap_or(&[])).unwrap_or("");
    let html = prefers_html(accept);
    let jitter = u64_at(data, 0) % 251;
    for style in [
        HeaderStyle { ietf: Some(IetfDraft::Twelve), legacy: true },
        HeaderStyle { ietf: Some(IetfDraft::Ten), legacy: false },
        HeaderStyle { ietf: None, legacy: false },
    ] {
        let mut fields = rate_limit_headers(tier, &decision, style);
        let refusal = too_many_requests(tier, &decision, style, html, jitter, &mut LastDenied::default());
        let kept = LAST.with(|last| too_many_requests(tier, &decision, style, html, jitter, &mut last.borrow_mut()));
        assert_eq!(kept.body, refusal.body);
        assert_eq!(kept.headers, refusal.headers);
        assert_eq!(refusal.status, 429);
        fields.extend(refusal.headers);
        for (name, value) in fields {
            assert!(!value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0), "{name}: {value:?}");
        }
        if !html {
            let body: serde_json::Value = serde_json::from_str(&refusal.body).expect("problem+json is JSON");
            assert_eq!(body["status"], 429);
        }
    }
});
