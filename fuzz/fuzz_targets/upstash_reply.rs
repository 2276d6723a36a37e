//! Upstash reply decoding: any status and body must become a typed reply or a typed error,
//! and a script reply must become a valid decision or a malformed-reply error.
#![no_main]
use edge_limiter::store::script::decode_reply;
use edge_limiter::store::upstash::{read_reply, read_script_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]) % 600;
    let (limits, cost) = (usize::from(data[2] % 10), u64::from(data[3]));
    let Ok(body) = std::str::from_utf8(&data[4..]) else { return };
    let _ = read_reply(status, body);
    if let Ok(numbers) = read_script_reply(status, body) {
        if let Ok(d) = decode_reply(&numbers, limits, cost) {
            assert_eq!(d.limits().len(), limits);
            assert!(d.binding < limits);
        }
    }
});
