//! The check-and-consume script (`check.lua`, the Redis twin of `core::algorithm`) and the
//! translation of a check to its arguments and of its reply back to a core `Decision`.
//! Pure, so it is tested natively and against a real `redis-server` (tests/lua_twin.rs).

use crate::core::algorithm::{Algorithm, Decision, LimitStatus, Millis, Outcome};
use crate::core::rate::MAX_EXACT;

/// The Lua source, sent as EVALSHA of [`CHECK_SHA1`] (EVAL when Redis answers NOSCRIPT).
pub const CHECK_LUA: &str = include_str!("check.lua");

/// The script's SHA-1 in hex, as Redis names it: computed at compile time, so the Worker
/// carries no hashing code for it and the name can never drift from the text.
pub const CHECK_SHA1: &str = match core::str::from_utf8(&sha1_hex(CHECK_LUA.as_bytes())) {
    Ok(hex) => hex,
    Err(_) => panic!("hex digits are ASCII"),
};

/// SHA-1 (FIPS 180-4) as a `const fn`. Used only to name a script, never for security.
/// Evaluated at compile time (`CHECK_SHA1`): an index out of range would fail the build.
#[allow(clippy::indexing_slicing)]
const fn sha1_hex(msg: &[u8]) -> [u8; 40] {
    // The padded message: the bytes, 0x80, zeros, then the bit length in 8 bytes.
    let padded_len = (msg.len() + 8) / 64 * 64 + 64;
    const fn padded_byte(msg: &[u8], i: usize, padded_len: usize) -> u8 {
        if i < msg.len() {
            msg[i]
        } else if i == msg.len() {
            0x80
        } else if i >= padded_len - 8 {
            ((msg.len() as u64 * 8) >> (8 * (padded_len - 1 - i))) as u8
        } else {
            0
        }
    }
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut block = 0;
    while block < padded_len {
        let mut w = [0u32; 80];
        let mut t = 0;
        while t < 80 {
            w[t] = if t < 16 {
                let at = block + 4 * t;
                u32::from_be_bytes([
                    padded_byte(msg, at, padded_len),
                    padded_byte(msg, at + 1, padded_len),
                    padded_byte(msg, at + 2, padded_len),
                    padded_byte(msg, at + 3, padded_len),
                ])
            } else {
                (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1)
            };
            t += 1;
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        t = 0;
        while t < 80 {
            let (f, k) = match t / 20 {
                0 => ((b & c) | (!b & d), 0x5A82_7999),
                1 => (b ^ c ^ d, 0x6ED9_EBA1),
                2 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let next = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(w[t]);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, next);
            t += 1;
        }
        h = [
            h[0].wrapping_add(a),
            h[1].wrapping_add(b),
            h[2].wrapping_add(c),
            h[3].wrapping_add(d),
            h[4].wrapping_add(e),
        ];
        block += 64;
    }
    let digits = b"0123456789abcdef";
    let mut hex = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        let nibble = (h[i / 8] >> (28 - 4 * (i % 8))) & 0xF;
        hex[i] = digits[nibble as usize];
        i += 1;
    }
    hex
}

/// ARGV for `check.lua`: now, cost, then kind and three parameters per limit.
pub fn script_args<L: AsRef<Algorithm>>(limits: &[L], now: Millis, cost: u64) -> Vec<String> {
    let mut args = Vec::with_capacity(2 + 4 * limits.len());
    args.push(now.to_string());
    args.push(cost.to_string());
    for l in limits {
        args.extend(l.as_ref().script_params().iter().map(u64::to_string));
    }
    args
}

/// Why a script reply could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedReply(pub String);

fn outcome(code: i64) -> Result<Outcome, MalformedReply> {
    match code {
        0 => Ok(Outcome::Allowed),
        1 => Ok(Outcome::Denied),
        2 => Ok(Outcome::Never),
        other => Err(MalformedReply(format!("unknown outcome code {other}"))),
    }
}

/// Reads `{outcome, binding (1-based), then per limit: outcome, remaining, reset, retry}`.
pub fn decode_reply(reply: &[i64], limits: usize, cost: u64) -> Result<Decision, MalformedReply> {
    if reply.len() != 2 + 4 * limits {
        return Err(MalformedReply(format!("expected {} numbers, got {}", 2 + 4 * limits, reply.len())));
    }
    // The script computes with doubles and never exceeds 2^53: anything outside 0..=2^53 is
    // not its answer.
    let nonneg = |v: i64| match u64::try_from(v) {
        Ok(n) if n <= MAX_EXACT => Ok(n),
        Ok(n) => Err(MalformedReply(format!("value {n} is beyond what the script can compute"))),
        Err(_) => Err(MalformedReply(format!("negative value {v}"))),
    };
    let [overall, binding, per_limit @ ..] = reply else {
        return Err(MalformedReply("no outcome and binding".into()));
    };
    let mut statuses = Vec::with_capacity(limits);
    for chunk in per_limit.chunks_exact(4) {
        let &[o, remaining, reset, retry] = chunk else { continue };
        statuses.push(LimitStatus {
            outcome: outcome(o)?,
            remaining: nonneg(remaining)?,
            reset_ms: nonneg(reset)?,
            retry_after_ms: nonneg(retry)?,
        });
    }
    let index = binding.checked_sub(1).and_then(|b| usize::try_from(b).ok());
    let index = index.ok_or_else(|| MalformedReply(format!("binding {binding}")))?;
    Decision::from_parts(outcome(*overall)?, index, cost, &statuses)
        .ok_or_else(|| MalformedReply(format!("binding {binding} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rate::Rate;

    #[test]
    fn arguments_carry_every_limit() {
        let limits = [
            Algorithm::token_bucket(10, Rate::parse("0.1/s").unwrap()).unwrap(),
            Algorithm::sliding_window(300, 3_600_000).unwrap(),
        ];
        assert_eq!(script_args(&limits, 5, 1), ["5", "1", "1", "10", "1", "10000", "3", "300", "3600000", "0"]);
    }

    #[test]
    fn script_name_is_its_sha1() {
        // FIPS 180 examples, including a two-block message and the 55/56-byte padding edge.
        assert_eq!(&sha1_hex(b""), b"da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(&sha1_hex(b"abc"), b"a9993e364706816aba3e25717850c26c9cd0d89d");
        let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(&sha1_hex(two_blocks), b"84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(&sha1_hex(&[b'a'; 55]), b"c1c8bbdc22796e28c0e15163d20899b65621d65a");
        assert_eq!(&sha1_hex(&[b'a'; 56]), b"c2db330f6083854c99d4b5bfb6e8f29f201be699");
        assert_eq!(CHECK_SHA1.len(), 40);
    }

    #[test]
    fn replies_are_checked_before_use() {
        let d = decode_reply(&[1, 2, 0, 5, 100, 0, 1, 0, 3000, 2500], 2, 1).unwrap();
        assert_eq!((d.outcome, d.binding, d.retry_after_ms()), (Outcome::Denied, 1, 2500));
        assert!(decode_reply(&[0, 1, 0, 5], 1, 1).is_err(), "too short");
        assert!(decode_reply(&[0, 2, 0, 5, 1, 0], 1, 1).is_err(), "binding out of range");
        assert!(decode_reply(&[0, 0, 0, 5, 1, 0], 1, 1).is_err(), "binding is 1-based");
        assert!(decode_reply(&[7, 1, 0, 5, 1, 0], 1, 1).is_err(), "unknown outcome");
        assert!(decode_reply(&[0, 1, 0, -5, 1, 0], 1, 1).is_err(), "negative");
        assert!(decode_reply(&[1, 1, 1, 0, 1, i64::MAX], 1, 1).is_err(), "beyond 2^53");
        assert!(decode_reply(&[1, 1, 1, 0, 1, 1 << 53], 1, 1).is_ok(), "2^53 itself is fine");
    }
}
