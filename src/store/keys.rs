//! Every key the stores write, in one place: the Upstash keys of a subject's limits
//! ([`state_key`]) and the key of a subject within its tier in this isolate's memory and deny
//! cache ([`subject_key`]). Both carry the subject's digest, never the subject.

use crate::core::algorithm::Algorithm;

/// Store key of one limit of one subject:
/// `<prefix>:<tier>:<limit name>:<parameters>:<subject digest>`.
///
/// A stored state means something only under the parameters that wrote it (a sliding
/// window's slot numbers, a bucket's level in units x period), so they are part of the key:
/// changing `300/h` to `300/day` under the same name, a rollback, or two policy versions
/// live on one database each use their own keys and never read each other's state. Names are
/// policy-validated (`a-z 0-9 _ -`, no `:`), the subject is a digest: no raw key or IP.
pub fn state_key(prefix: &str, tier: &str, limit_name: &str, limit: &Algorithm, subject_hash: &str) -> String {
    format!("{prefix}:{tier}:{limit_name}:{}:{subject_hash}", params_tag(limit))
}

/// The limit's kind and exactly the numbers the script is given for it (so a change of any
/// of them is a new key), short and readable: `tb10-1-10000` (token bucket: capacity, refill
/// amount, refill period in ms), `fw5000-60000` (fixed window: limit, window in ms),
/// `sw300-3600000` (sliding window: limit, window in ms).
pub fn params_tag(limit: &Algorithm) -> String {
    match limit.script_params() {
        [1, capacity, amount, period] => format!("tb{capacity}-{amount}-{period}"),
        [2, count, window, _] => format!("fw{count}-{window}"),
        [3, count, window, _] => format!("sw{count}-{window}"),
        // script_params knows three kinds; a fourth must get a tag before it gets keys.
        [kind, a, b, c] => format!("k{kind}-{a}-{b}-{c}"),
    }
}

/// Key of a subject within its tier in this isolate (the memory store, the deny cache):
/// `<tier>:<subject digest>`. Unlike [`state_key`] it needs no limit parameters: both live in
/// one isolate, which reads its policy once, so under one tier name they only ever see one
/// set of limits; a policy change is a new deployment and new isolates.
pub fn subject_key(tier: &str, subject_hash: &str) -> String {
    format!("{tier}:{subject_hash}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rate::Rate;

    #[test]
    fn keys_carry_the_parameters_that_give_the_state_its_meaning() {
        let bucket = Algorithm::token_bucket(10, Rate::parse("0.1/s").unwrap()).unwrap();
        assert_eq!(state_key("rl", "anonymous", "burst", &bucket, "ab12"), "rl:anonymous:burst:tb10-1-10000:ab12");
        let hourly = Algorithm::sliding_window(300, 3_600_000).unwrap();
        let daily = Algorithm::sliding_window(300, 86_400_000).unwrap();
        assert_eq!(state_key("rl", "free", "hourly", &hourly, "ab"), "rl:free:hourly:sw300-3600000:ab");
        assert_eq!(state_key("rl", "free", "hourly", &daily, "ab"), "rl:free:hourly:sw300-86400000:ab");
        assert_eq!(params_tag(&Algorithm::fixed_window(5000, 60_000).unwrap()), "fw5000-60000");
        // The same limit written two ways is one limit (rates are kept in lowest terms)...
        let per_minute = Algorithm::token_bucket(10, Rate::parse("6/min").unwrap()).unwrap();
        let per_10s = Algorithm::token_bucket(10, Rate::parse("1/10s").unwrap()).unwrap();
        assert_eq!(params_tag(&per_minute), params_tag(&per_10s));
        // ...and any change of kind, count, capacity, amount or period is another key.
        let tags: std::collections::HashSet<String> = [
            bucket,
            Algorithm::token_bucket(10, Rate::parse("1/s").unwrap()).unwrap(),
            Algorithm::token_bucket(11, Rate::parse("0.1/s").unwrap()).unwrap(),
            Algorithm::token_bucket(10, Rate::parse("0.2/s").unwrap()).unwrap(),
            hourly,
            daily,
            Algorithm::sliding_window(301, 3_600_000).unwrap(),
            Algorithm::fixed_window(300, 3_600_000).unwrap(),
        ]
        .iter()
        .map(params_tag)
        .collect();
        assert_eq!(tags.len(), 8);
    }

    #[test]
    fn a_subject_within_its_tier() {
        assert_eq!(subject_key("anonymous", "ab12"), "anonymous:ab12");
    }
}
