//! The policy text: any bytes must give a policy or errors naming fields, never a panic;
//! a policy that parses must describe itself and plan any request.
#![no_main]
use edge_limiter::core::describe::describe;
use edge_limiter::core::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Policy::parse(text) {
        Ok(p) => {
            let _ = describe(&p);
            for tier in p.tiers.iter().filter_map(|t| p.tier_id(&t.name)) {
                let _ = p.plan("POST", "/upload/x", tier);
                let _ = p.plan("GET", "/", tier);
            }
        }
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
});
