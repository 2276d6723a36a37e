//! Upstash reply decoding: any status and body must become a typed reply or a typed error,
//! and a script reply must become a valid decision or a malformed-reply error; the plain
//! reader of script replies must agree with the full one wherever it reads a body.
#![no_main]
use edge_limiter::store::script::decode_reply;
use edge_limiter::store::upstash::{plain_script_reply, read_reply, read_script_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]) % 600;
    let (limits, cost) = (usize::from(data[2] % 10), u64::from(data[3]));
    let Ok(body) = std::str::from_utf8(&data[4..]) else { return };
    let _ = read_reply(status, body);
    // The plain reader (no JSON value built) reads nothing the full reader would read otherwise.
    if let Some(plain) = plain_script_reply(body) {
        let full = read_reply(200, body).ok().and_then(|v| {
            v.as_array().and_then(|items| items.iter().map(serde_json::Value::as_i64).collect::<Option<Vec<i64>>>())
        });
        assert_eq!(Some(plain), full, "{body}");
    }
    if let Ok(numbers) = read_script_reply(status, body) {
        if let Ok(d) = decode_reply(&numbers, limits, cost) {
            assert_eq!(d.limits().len(), limits);
            assert!(d.binding < limits);
        }
    }
});
