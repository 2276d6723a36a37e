//! Lua shebang handling: Redis 7.0 rejects shebang flags it does not know (for example
//! `allow-key-locking`, which `@upstash/ratelimit` sends and real Upstash accepts), so they are
//! dropped before the script reaches Redis. EVALSHA keeps working under the SHA1 of the text
//! the client sent through a client-SHA -> Redis-SHA map kept by the server.

/// Shebang flags Redis 7.0 understands.
const KNOWN_FLAGS: &[&str] = &["no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys"];

/// Returns `Some(rewritten)` if the script's shebang line carried options or flags Redis 7.0
/// would reject, `None` if the script can be passed on unchanged.
pub fn strip_unknown_shebang_flags(script: &[u8]) -> Option<Vec<u8>> {
    if !script.starts_with(b"#!") {
        return None;
    }
    let mut line_end = script.iter().position(|&b| b == b'\n').unwrap_or(script.len());
    if line_end > 0 && script[line_end - 1] == b'\r' {
        line_end -= 1; // keep a CRLF line ending as it was
    }
    let line = std::str::from_utf8(&script[..line_end]).ok()?;
    let mut tokens = line.split_whitespace();
    let engine = tokens.next()?; // "#!lua"
    if engine != "#!lua" {
        return None; // Redis will report the unknown engine itself.
    }
    let mut changed = false;
    let mut kept_flags: Vec<&str> = Vec::new();
    for tok in tokens {
        if let Some(list) = tok.strip_prefix("flags=") {
            for f in list.split(',') {
                if f.is_empty() {
                    continue;
                }
                if KNOWN_FLAGS.contains(&f) {
                    kept_flags.push(f);
                } else {
                    changed = true;
                }
            }
        } else {
            // Any other shebang option is unknown to Redis 7.0 ("Unknown lua shebang option").
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    let mut out = Vec::with_capacity(script.len());
    out.extend_from_slice(b"#!lua");
    if !kept_flags.is_empty() {
        out.extend_from_slice(b" flags=");
        out.extend_from_slice(kept_flags.join(",").as_bytes());
    }
    out.extend_from_slice(&script[line_end..]);
    Some(out)
}

pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn plain_scripts_are_untouched() {
        assert_eq!(strip_unknown_shebang_flags(b"return 1"), None);
        assert_eq!(strip_unknown_shebang_flags(b""), None);
        assert_eq!(strip_unknown_shebang_flags(b"#!lua\nreturn 1"), None);
        assert_eq!(strip_unknown_shebang_flags(b"#!lua flags=no-writes\nreturn 1"), None);
        assert_eq!(strip_unknown_shebang_flags(b"#!lua flags=no-writes,allow-stale\nreturn 1"), None);
        // Other engines are left for Redis to reject.
        assert_eq!(strip_unknown_shebang_flags(b"#!js flags=foo\nreturn 1"), None);
    }

    #[test]
    fn drops_allow_key_locking() {
        assert_eq!(
            s(strip_unknown_shebang_flags(b"#!lua flags=allow-key-locking\nlocal x = 1\nreturn x")),
            Some("#!lua\nlocal x = 1\nreturn x".into())
        );
        assert_eq!(
            s(strip_unknown_shebang_flags(b"#!lua flags=no-writes,allow-key-locking\nreturn 1")),
            Some("#!lua flags=no-writes\nreturn 1".into())
        );
        assert_eq!(
            s(strip_unknown_shebang_flags(b"#!lua flags=allow-key-locking,allow-oom\r\nreturn 1")),
            Some("#!lua flags=allow-oom\r\nreturn 1".into())
        );
        // Shebang only, no newline.
        assert_eq!(s(strip_unknown_shebang_flags(b"#!lua flags=allow-key-locking")), Some("#!lua".into()));
        // Unknown non-flag options are dropped too.
        assert_eq!(
            s(strip_unknown_shebang_flags(b"#!lua name=x flags=no-writes\nreturn 1")),
            Some("#!lua flags=no-writes\nreturn 1".into())
        );
    }

    #[test]
    fn sha1_matches_redis() {
        // Redis: SCRIPT LOAD "return 1" -> e0e1f9fabfc9d4800c877a703b823ac0578ff8db
        assert_eq!(sha1_hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
