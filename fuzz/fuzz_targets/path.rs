//! Path normalisation: any request path under every combination of options, and the split
//! of a full request URL into origin, path and query. An accepted path must be the one form
//! the limiter matches and forwards: a fixed point, starting with `/`, with no dot segment
//! (not even a Tomcat-style `..;x`), no `//` when slashes merge, and nothing a WHATWG URL
//! parser would re-encode.
#![no_main]
use edge_limiter::core::path::{normalize, normalize_prefix, split_url, PathOptions};
use libfuzzer_sys::fuzz_target;

fn options(bits: u8) -> PathOptions {
    PathOptions { case_insensitive: bits & 1 != 0, ignore_params: bits & 2 != 0, merge_slashes: bits & 4 != 0 }
}

fn whatwg_keeps(path: &str) -> bool {
    let dot = |s: &str| matches!(s.to_ascii_lowercase().as_str(), "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e");
    path.bytes().all(|b| (0x21..0x7F).contains(&b) && !b"\"#<>?^`{}\\".contains(&b)) && !path.split('/').any(dot)
}

fn check_path(raw: &str, bits: u8) {
    let opts = options(bits);
    let prefix = normalize_prefix(raw, &opts);
    let Ok(n) = normalize(raw, &opts) else { return };
    let (f, m) = (n.forward.as_str(), n.matched.as_str());
    assert!(f.starts_with('/') && m.starts_with('/'), "{raw:?} -> {n:?}");
    assert_eq!(normalize(f, &opts).as_ref(), Ok(&n), "not a fixed point: {raw:?}");
    assert!(whatwg_keeps(f), "a WHATWG parser would change {f:?}");
    for segment in f.split('/') {
        let name = segment.split(';').next().unwrap_or(segment);
        assert!(name != "." && name != "..", "dot segment in {f:?}");
    }
    if opts.merge_slashes {
        assert!(!f.contains("//") && !m.contains("//"), "{raw:?} -> {n:?}");
    }
    for escape in f.split('%').skip(1) {
        let hex = escape.get(..2).unwrap_or("");
        assert!(hex.len() == 2 && hex.bytes().all(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(&d)), "{f:?}");
        let v = u8::from_str_radix(hex, 16).unwrap_or(0);
        assert!(!(v.is_ascii_alphanumeric() || b"-._~/\\;".contains(&v) || v < 0x20 || v == 0x7F), "{f:?}");
    }
    assert_eq!(normalize_prefix(f, &opts).as_deref(), Ok(m), "the forwarded path as a prefix");
    assert_eq!(normalize_prefix(m, &opts).as_deref(), Ok(m), "matched is not its own form");
    if prefix.is_ok() {
        assert_eq!(prefix.as_deref(), Ok(m), "a prefix without dot segments differs from the path");
    }
    if opts.ignore_params {
        assert!(!m.contains(';'), "{m:?}");
    }
    // Case and params only change what is compared, never what is forwarded.
    for other in 0..4 {
        let same = normalize(raw, &options(other | (bits & 4))).map(|o| o.forward);
        assert_eq!(same.as_deref(), Ok(f), "forward depends on the matching options: {raw:?}");
    }
}

fn check_url(url: &str) {
    let Some(parts) = split_url(url) else { return };
    let joined = format!("{}{}{}", parts.origin, parts.path, parts.query);
    assert!(url.starts_with(&joined), "{url:?} -> {parts:?}");
    assert!(parts.path.starts_with('/') && !parts.path.contains(['?', '#']), "{parts:?}");
    assert!(parts.query.is_empty() || parts.query.starts_with('?'), "{parts:?}");
    assert!(!parts.query.contains('#') && parts.origin.contains("://"), "{parts:?}");
}

fuzz_target!(|data: &[u8]| {
    // One byte of option bits, then the path; after a 0xFF (never valid UTF-8), a full URL.
    let Some((&bits, rest)) = data.split_first() else { return };
    let mut fields = rest.split(|b| *b == 0xFF).map(|f| std::str::from_utf8(f).ok());
    if let Some(raw) = fields.next().flatten() {
        check_path(raw, bits);
    }
    if let Some(url) = fields.next().flatten() {
        check_url(url);
        if let Some(parts) = split_url(url) {
            check_path(parts.path, bits);
        }
    }
});
