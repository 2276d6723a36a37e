//! The check-and-consume script (`check.lua`, the Redis twin of `core::algorithm`) and the
//! translation of a check to its arguments and of its reply back to a core `Decision`.
//! Pure, so it is tested natively and against a real `redis-server` (tests/lua_twin.rs).

use crate::core::algorithm::{Algorithm, Decision, LimitStatus, Millis, Outcome};

/// The Lua source, sent as EVALSHA of [`CHECK_SHA1`] (EVAL when Redis answers NOSCRIPT).
pub const CHECK_LUA: &str = include_str!("check.lua");

/// Store key of one limit of one subject: `<prefix>:<tier>:<limit>:<subject digest>`.
/// Names are policy-validated (`a-z 0-9 _ -`), the subject is a digest: no raw key or IP.
pub fn state_key(prefix: &str, tier: &str, limit: &str, subject_hash: &str) -> String {
    format!("{prefix}:{tier}:{limit}:{subject_hash}")
}

/// ARGV for `check.lua`: now, cost, then kind and three parameters per limit.
pub fn script_args(limits: &[Algorithm], now: Millis, cost: u64) -> Vec<String> {
    let mut args = Vec::with_capacity(2 + 4 * limits.len());
    args.push(now.to_string());
    args.push(cost.to_string());
    for l in limits {
        args.extend(l.script_params().iter().map(u64::to_string));
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
    let nonneg = |v: i64| u64::try_from(v).map_err(|_| MalformedReply(format!("negative value {v}")));
    let mut statuses = Vec::with_capacity(limits);
    for chunk in reply[2..].chunks(4) {
        statuses.push(LimitStatus {
            outcome: outcome(chunk[0])?,
            remaining: nonneg(chunk[1])?,
            reset_ms: nonneg(chunk[2])?,
            retry_after_ms: nonneg(chunk[3])?,
        });
    }
    let binding = usize::try_from(reply[1] - 1).map_err(|_| MalformedReply(format!("binding {}", reply[1])))?;
    Decision::from_parts(outcome(reply[0])?, binding, cost, &statuses)
        .ok_or_else(|| MalformedReply(format!("binding {} out of range", reply[1])))
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
        assert_eq!(state_key("rl", "anonymous", "burst", "ab12"), "rl:anonymous:burst:ab12");
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
    }
}
