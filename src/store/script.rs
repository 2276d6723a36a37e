//! The check-and-consume script (`check.lua`, the Redis twin of `core::algorithm`) and the
//! translation of a batch of operations (checks, leases, refunds: [`Op`]) to its arguments
//! and of its reply back to core values ([`Answer`]; a single check's to a `Decision`).
//! Pure, so it is tested natively and against a real `redis-server` (tests/lua_twin.rs).

use crate::core::algorithm::{Algorithm, Decision, Lease, LimitStatus, Millis, Outcome, Refund};
use crate::core::rate::MAX_EXACT;

/// The Lua source, sent as EVALSHA of [`CHECK_SHA1`] (EVAL when Redis answers NOSCRIPT).
pub const CHECK_LUA: &str = include_str!("check.lua");

/// The script's SHA-1 in hex, as Redis names it: computed at compile time, so the Worker
/// carries no hashing code for it and the name can never drift from the text.
pub const CHECK_SHA1: &str = match core::str::from_utf8(&sha1_hex(CHECK_LUA.as_bytes())) {
    Ok(hex) => hex,
    Err(_) => panic!("hex digits are ASCII"),
};

/// The fleet view's script (`fleet.lua`: flush an isolate's tallies, read the last hour),
/// sent the same way.
pub const FLEET_LUA: &str = include_str!("fleet.lua");
pub const FLEET_SHA1: &str = match core::str::from_utf8(&sha1_hex(FLEET_LUA.as_bytes())) {
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

/// One operation of a batch sent to `check.lua` in one call. Each is atomic and
/// all-or-nothing on its own keys; a batch answers exactly as its operations run one after
/// the other would (so several checks of one subject in one batch see each other).
#[derive(Debug)]
pub enum Op<'a, L> {
    /// [`crate::core::algorithm::lease`]: a check of `cost` that also takes up to
    /// `want - cost` spare units. `want = cost` is a plain check.
    Check { limits: &'a [L], cost: u64, want: u64 },
    /// [`crate::core::algorithm::refund`]: `units` of a lease granted at `granted_at`
    /// handed back.
    Refund { limits: &'a [L], units: u64, granted_at: Millis },
}

impl<'a, L> Op<'a, L> {
    /// A plain check, as the Store trait makes.
    pub fn check(limits: &'a [L], cost: u64) -> Op<'a, L> {
        Op::Check { limits, cost, want: cost }
    }

    /// The limits, whose keys (one per limit, in order) the operation takes.
    pub fn limits(&self) -> &'a [L] {
        match self {
            Op::Check { limits, .. } | Op::Refund { limits, .. } => limits,
        }
    }

    /// How many numbers of the reply answer it.
    fn reply_len(&self) -> usize {
        match self {
            Op::Check { limits, .. } => 4 + 4 * limits.len(),
            Op::Refund { limits, .. } => limits.len(),
        }
    }
}

/// The answer to one operation of a batch, in the batch's order.
// Plain values, a few per call: boxing the lease would cost an allocation per check.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Lease(Lease),
    Refund(Refund),
}

/// ARGV for `check.lua`: now, the number of operations, then per operation its kind (1 check
/// or lease, 2 refund), its number of limits, two numbers (cost and want, or units and
/// granted_at), and four per limit. KEYS are every operation's state keys in order.
pub fn batch_args<L: AsRef<Algorithm>>(now: Millis, ops: &[Op<'_, L>]) -> Vec<String> {
    let numbers = 2 + ops.iter().map(|op| 4 + 4 * op.limits().len()).sum::<usize>();
    let mut args = Vec::with_capacity(numbers);
    args.push(now.to_string());
    args.push(ops.len().to_string());
    for op in ops {
        // Counts past 2^53 would not be exact in the script's doubles; none is meaningful
        // there (no limit holds as many), so they are sent as 2^53.
        let (kind, a, b) = match *op {
            Op::Check { cost, want, .. } => (1, cost, want.min(MAX_EXACT)),
            Op::Refund { units, granted_at, .. } => (2, units.min(MAX_EXACT), granted_at.min(MAX_EXACT)),
        };
        args.extend([kind, op.limits().len() as u64, a, b].iter().map(u64::to_string));
        for l in op.limits() {
            args.extend(l.as_ref().script_params().iter().map(u64::to_string));
        }
    }
    args
}

/// ARGV for a single check: a batch of one.
pub fn script_args<L: AsRef<Algorithm>>(limits: &[L], now: Millis, cost: u64) -> Vec<String> {
    batch_args(now, &[Op::check(limits, cost)])
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

// The script computes with doubles and never exceeds 2^53: anything outside 0..=2^53 is not
// its answer.
fn nonneg(v: i64) -> Result<u64, MalformedReply> {
    match u64::try_from(v) {
        Ok(n) if n <= MAX_EXACT => Ok(n),
        Ok(n) => Err(MalformedReply(format!("value {n} is beyond what the script can compute"))),
        Err(_) => Err(MalformedReply(format!("negative value {v}"))),
    }
}

/// Reads one check's group: `{outcome, binding (1-based), granted, until, then per limit:
/// outcome, remaining, reset, retry}`.
fn decode_lease(group: &[i64], limits: usize, cost: u64, want: u64) -> Result<Lease, MalformedReply> {
    if group.len() != 4 + 4 * limits {
        return Err(MalformedReply(format!("expected {} numbers, got {}", 4 + 4 * limits, group.len())));
    }
    let [overall, binding, granted, until, per_limit @ ..] = group else {
        return Err(MalformedReply("no outcome, binding, grant and end".into()));
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
    let decision = Decision::from_parts(outcome(*overall)?, index, cost, &statuses)
        .ok_or_else(|| MalformedReply(format!("binding {binding} out of range")))?;
    let (granted, until) = (nonneg(*granted)?, nonneg(*until)?);
    let possible = if decision.allowed() { (cost..=cost.max(want)).contains(&granted) } else { granted == 0 };
    if !possible {
        return Err(MalformedReply(format!("granted {granted} for cost {cost}, want {want}, {:?}", decision.outcome)));
    }
    Ok(Lease { decision, granted, until })
}

/// Reads a single check's reply (a batch of one) as its decision.
pub fn decode_reply(reply: &[i64], limits: usize, cost: u64) -> Result<Decision, MalformedReply> {
    decode_lease(reply, limits, cost, cost).map(|l| l.decision)
}

/// Reads a batch's reply: one answer per operation, in order, each group as long as its
/// operation says (`4 + 4n` numbers for a check, `n` for a refund) and the whole reply no
/// longer.
pub fn decode_batch<L>(reply: &[i64], ops: &[Op<'_, L>]) -> Result<Vec<Answer>, MalformedReply> {
    let expected: usize = ops.iter().map(Op::reply_len).sum();
    if reply.len() != expected {
        return Err(MalformedReply(format!(
            "expected {expected} numbers for {} operations, got {}",
            ops.len(),
            reply.len()
        )));
    }
    let mut rest = reply;
    let mut answers = Vec::with_capacity(ops.len());
    for op in ops {
        let (group, after) = rest.split_at_checked(op.reply_len()).unwrap_or((rest, &[]));
        rest = after;
        answers.push(match *op {
            Op::Check { limits, cost, want } => Answer::Lease(decode_lease(group, limits.len(), cost, want)?),
            Op::Refund { limits, .. } => {
                let returned = group.iter().map(|v| nonneg(*v)).collect::<Result<Vec<u64>, _>>()?;
                if returned.len() != limits.len() {
                    return Err(MalformedReply(format!("{} numbers for a refund of {}", returned.len(), limits.len())));
                }
                Answer::Refund(
                    Refund::from_parts(&returned).ok_or_else(|| MalformedReply(format!("{} limits", limits.len())))?,
                )
            }
        });
    }
    Ok(answers)
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
        let args = script_args(&limits, 5, 1);
        assert_eq!(args, ["5", "1", "1", "2", "1", "1", "1", "10", "1", "10000", "3", "300", "3600000", "0"]);
        let ops = [
            Op::Check { limits: &limits[..1], cost: 2, want: u64::MAX },
            Op::Refund { limits: &limits[..], units: 3, granted_at: 4 },
        ];
        let args = batch_args(9, &ops);
        let head = ["9", "2", "1", "1", "2", "9007199254740992", "1", "10", "1", "10000", "2", "2", "3", "4"];
        assert_eq!(args[..14], head);
        assert_eq!(args.len(), 2 + 4 + 4 + 4 + 8);
    }

    #[test]
    fn batches_are_read_group_by_group() {
        let limits = [Algorithm::fixed_window(10, 60_000).unwrap(), Algorithm::sliding_window(10, 60_000).unwrap()];
        let ops = [
            Op::Check { limits: &limits[..], cost: 1, want: 5 },
            Op::Refund { limits: &limits[..], units: 2, granted_at: 0 },
            Op::check(&limits[..1], 1),
        ];
        let lease = [0, 2, 3, 6_000, 0, 7, 60_000, 0, 0, 5, 60_000, 0];
        let reply: Vec<i64> = lease.iter().chain(&[2, 0]).chain(&[1, 1, 0, 0, 1, 0, 59_000, 59_000]).copied().collect();
        let answers = decode_batch(&reply, &ops).unwrap();
        let Answer::Lease(l) = answers[0] else { panic!("{answers:?}") };
        assert_eq!((l.granted, l.until, l.spare(), l.decision.binding, l.decision.remaining()), (3, 6_000, 2, 1, 5));
        assert_eq!(answers[1], Answer::Refund(Refund::from_parts(&[2, 0]).unwrap()));
        let Answer::Lease(d) = answers[2] else { panic!("{answers:?}") };
        assert_eq!((d.decision.outcome, d.granted, d.decision.retry_after_ms()), (Outcome::Denied, 0, 59_000));
        // One number short or long, a grant out of range, a negative refund: all refused.
        assert!(decode_batch(&reply[1..], &ops).is_err());
        assert!(decode_batch(&[&reply[..], &[0]].concat(), &ops).is_err());
        let mut bad = reply.clone();
        bad[2] = 6;
        assert!(decode_batch(&bad, &ops).is_err(), "granted beyond want");
        bad[2] = 0;
        assert!(decode_batch(&bad, &ops).is_err(), "granted below cost");
        let mut bad = reply.clone();
        bad[12] = -1;
        assert!(decode_batch(&bad, &ops).is_err());
        let mut bad = reply.clone();
        bad[16] = 1;
        assert!(decode_batch(&bad, &ops).is_err(), "a denial grants nothing");
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
        let d = decode_reply(&[1, 2, 0, 7, 0, 5, 100, 0, 1, 0, 3000, 2500], 2, 1).unwrap();
        assert_eq!((d.outcome, d.binding, d.retry_after_ms()), (Outcome::Denied, 1, 2500));
        assert!(decode_reply(&[0, 1, 1, 9, 0, 5], 1, 1).is_err(), "too short");
        assert!(decode_reply(&[0, 2, 1, 9, 0, 5, 1, 0], 1, 1).is_err(), "binding out of range");
        assert!(decode_reply(&[0, 0, 1, 9, 0, 5, 1, 0], 1, 1).is_err(), "binding is 1-based");
        assert!(decode_reply(&[7, 1, 1, 9, 0, 5, 1, 0], 1, 1).is_err(), "unknown outcome");
        assert!(decode_reply(&[0, 1, 1, 9, 0, -5, 1, 0], 1, 1).is_err(), "negative");
        assert!(decode_reply(&[0, 1, 2, 9, 0, 5, 1, 0], 1, 1).is_err(), "a check grants its cost, no more");
        assert!(decode_reply(&[1, 1, 0, 9, 1, 0, 1, i64::MAX], 1, 1).is_err(), "beyond 2^53");
        assert!(decode_reply(&[1, 1, 0, 9, 1, 0, 1, 1 << 53], 1, 1).is_ok(), "2^53 itself is fine");
    }
}
