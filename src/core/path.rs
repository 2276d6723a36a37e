//! The request path, parsed once. Route rules match on the result and the Worker forwards
//! exactly the result, so the limiter and the origin can never read two different paths.
//!
//! Origins disagree on paths: Tomcat, Jetty and Spring drop `;params` from segments (so
//! `/health/..;/search` is `/search` to them), Express and ASP.NET match case-insensitively,
//! some decode `%2F` or `%5C` into separators, most merge `//`. [`normalize`] brings a path to
//! one form that every origin reads the same way (RFC 3986 dot segments removed, unreserved
//! escapes decoded, slashes merged by default) and refuses what cannot be made unambiguous.
//! [`PathOptions`] then say how the origin compares paths, so that route rules compare the
//! same way ([`NormalPath::matched`], [`normalize_prefix`]).
//!
//! The forwarded path is a fixed point: normalising it again, or parsing it as a WHATWG URL
//! (the Workers runtime, the `url` crate), leaves it unchanged.

use std::fmt;

/// How the origin behind the limiter reads paths. `Default` is what nginx and most
/// servers do: case-sensitive, `;` an ordinary character, runs of `/` merged. The policy's
/// `paths` section is read straight into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathOptions {
    /// The origin routes `/Search` like `/search` (Express's default router, ASP.NET, IIS).
    pub case_insensitive: bool,
    /// The origin drops `;params` from each segment (Tomcat, Jetty, Spring).
    pub ignore_params: bool,
    /// Runs of `/` are one separator, in the forwarded path too (nginx's default).
    pub merge_slashes: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions { case_insensitive: false, ignore_params: false, merge_slashes: true }
    }
}

/// A request path in the one form the limiter matches and forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalPath {
    /// The path to forward, params and case as sent. Always starts with `/`; with
    /// `merge_slashes` off it may start with `//`, so append it to the origin's address,
    /// never resolve it as a relative reference (that would read a host from it).
    pub forward: String,
    /// What route rules compare against: `forward` with params dropped and case folded as
    /// the options say, and every escape of a character that may stand raw in a path
    /// (`%3A` for `:`, `%40` for `@`, ...) decoded, so either spelling matches the same rule.
    pub matched: String,
}

/// Why a path was refused. Each one is a request that some origin would read differently
/// from another: the Worker answers 400 rather than guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Empty, `*`, an absolute URL: anything that does not start with `/`.
    NotOriginForm,
    /// A raw `?` or `#`: the query or fragment was not split off.
    QueryOrFragment,
    /// `%` not followed by two hex digits (`%`, `%4`, `%zz`).
    MalformedEscape,
    /// `%2F`.
    EncodedSlash,
    /// `%5C`.
    EncodedBackslash,
    /// `%3B`.
    EncodedSemicolon,
    /// `%25` followed by two hex digits (`%252e`): an escape once more decoded.
    DoubleEncoded,
    /// A raw `\`.
    Backslash,
    /// A raw or encoded control character: `%00`-`%1F`, `%7F`.
    ControlCharacter,
    /// More `..` than there are segments above them.
    AboveRoot,
    /// `..;x` or `.;x`: Tomcat-likes resolve it as a dot segment, others do not.
    DotSegmentWithParams,
    /// `//..` with `merge_slashes` off: RFC 3986 removes the empty segment, a merging origin
    /// the one before it.
    DotDotAfterEmptySegment,
    /// A route prefix holding `.` or `..` segments ([`normalize_prefix`] only).
    DotSegmentInPrefix,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => "the request target is not a path: it must start with /",
            PathError::QueryOrFragment => {
                "a raw ? or # in the path: the query and fragment must be split off first"
            }
            PathError::MalformedEscape => {
                "a % in the path that does not start an escape of two hex digits (%XX)"
            }
            PathError::EncodedSlash => {
                "an encoded slash (%2F) inside a segment is ambiguous: origins disagree on whether it separates segments"
            }
            PathError::EncodedBackslash => {
                "an encoded backslash (%5C) is ambiguous: some origins read it as a path separator"
            }
            PathError::EncodedSemicolon => {
                "an encoded semicolon (%3B) is ambiguous: origins disagree on whether it starts segment parameters"
            }
            PathError::DoubleEncoded => {
                "an encoded percent sign followed by hex digits (%25XX) is ambiguous: origins that decode twice read an escape"
            }
            PathError::Backslash => {
                "a backslash in the path is ambiguous: some origins read it as a path separator"
            }
            PathError::ControlCharacter => {
                "a control character (raw, or encoded as %00-%1F or %7F) in the path"
            }
            PathError::AboveRoot => "a .. segment in the path climbs above the root",
            PathError::DotSegmentWithParams => {
                "a dot segment carrying parameters (..;x or .;x) is ambiguous: Tomcat-like origins resolve it, others do not"
            }
            PathError::DotDotAfterEmptySegment => {
                "a .. after an empty segment (//..) is ambiguous when slashes are not merged: RFC 3986 drops the empty segment, a slash-merging origin the one before it"
            }
            PathError::DotSegmentInPrefix => {
                "a route prefix may not hold . or .. segments: write the path it means"
            }
        })
    }
}

impl std::error::Error for PathError {}

/// Normalises `raw`, the path of the request target as the runtime hands it over (no
/// query, no fragment), into the path to forward and the path to match.
pub fn normalize(raw: &str, opts: &PathOptions) -> Result<NormalPath, PathError> {
    let forward = forward_path(raw, opts.merge_slashes, Dots::Resolve)?;
    let matched = matched_path(&forward, opts);
    Ok(NormalPath { forward, matched })
}

/// A route rule's prefix in the form [`NormalPath::matched`] takes, so that comparing the
/// two as strings compares them as the origin would. A prefix is refused for what a path is
/// refused for, and for dot segments (`/health/..` would quietly cover everything).
pub fn normalize_prefix(prefix: &str, opts: &PathOptions) -> Result<String, PathError> {
    let forward = forward_path(prefix, opts.merge_slashes, Dots::Refuse)?;
    Ok(matched_path(&forward, opts))
}

/// A request URL as the runtime serialises it (`https://host/path?query`), cut into its
/// parts without parsing the path: that is [`normalize`]'s job, done once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// Scheme and authority, `https://example.com:8443`.
    pub origin: &'a str,
    /// From the first `/` after the authority up to `?` or `#`, as sent.
    pub path: &'a str,
    /// `?` and what follows up to any `#`, as sent; empty without a query.
    pub query: &'a str,
}

/// Splits an absolute URL into origin, raw path and query, dropping any fragment. `None`
/// for anything else: no scheme, an empty authority, userinfo (`user@host`; a request URL
/// never carries one), or no path after the authority (a serialised http(s) URL always has
/// one).
pub fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let url = url.split('#').next().unwrap_or(url);
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let authority_start = scheme_end + 3;
    let path_start = url[authority_start..].find(['/', '?']).map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..path_start];
    if !scheme_ok || authority.is_empty() || authority.contains('@') || !url[path_start..].starts_with('/') {
        return None;
    }
    let query_start = url[path_start..].find('?').map_or(url.len(), |i| path_start + i);
    Some(UrlParts { origin: &url[..path_start], path: &url[path_start..query_start], query: &url[query_start..] })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dots {
    Resolve,
    Refuse,
}

/// The forwarded form, in one pass. `out` holds `/` + segment for each segment kept so far,
/// so the last segment starts after its last `/` (segments never hold a raw `/`).
fn forward_path(raw: &str, merge_slashes: bool, dots: Dots) -> Result<String, PathError> {
    let Some(mut rest) = raw.as_bytes().strip_prefix(b"/") else {
        return Err(PathError::NotOriginForm);
    };
    let mut out = String::with_capacity(raw.len() + 8);
    loop {
        let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
        let (segment, tail) = rest.split_at(end);
        let last = tail.is_empty();
        let start = out.len();
        out.push('/');
        push_segment(segment, &mut out)?;
        let written = &out[start + 1..];
        // `%252e`: one decode gives `%2e`, a second `.`. Origins that decode twice read an
        // escape where others read a name. Checked on the output, so it stays a fixed point.
        if written
            .as_bytes()
            .windows(5)
            .any(|w| w.starts_with(b"%25") && hex_value(w[3]).is_some() && hex_value(w[4]).is_some())
        {
            return Err(PathError::DoubleEncoded);
        }
        let name = written.split(';').next().unwrap_or(written);
        let dot = match name {
            "." => Some(false),
            ".." => Some(true),
            _ => None,
        };
        match dot {
            Some(_) if name.len() != written.len() => return Err(PathError::DotSegmentWithParams),
            Some(_) if dots == Dots::Refuse => return Err(PathError::DotSegmentInPrefix),
            Some(parent) => {
                out.truncate(start);
                if parent {
                    let Some(cut) = out.rfind('/') else {
                        return Err(PathError::AboveRoot);
                    };
                    // Only reachable unmerged: a merged path keeps no empty segment.
                    if cut + 1 == out.len() {
                        return Err(PathError::DotDotAfterEmptySegment);
                    }
                    out.truncate(cut);
                }
                // `/a/.` and `/a/b/..` name a directory: keep the trailing slash.
                if last {
                    out.push('/');
                }
            }
            // An empty segment is the trailing slash when last, else a `//` to merge.
            None if written.is_empty() && merge_slashes && !last => out.truncate(start),
            None => {}
        }
        if last {
            break;
        }
        rest = &tail[1..];
    }
    Ok(out)
}

/// Appends one segment in its forwarded spelling: unreserved escapes decoded, other escapes
/// in upper-case hex, and what a WHATWG parser would encode encoded.
fn push_segment(segment: &[u8], out: &mut String) -> Result<(), PathError> {
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        if b == b'%' {
            let byte = match (segment.get(i + 1), segment.get(i + 2)) {
                (Some(&hi), Some(&lo)) => match (hex_value(hi), hex_value(lo)) {
                    (Some(hi), Some(lo)) => hi << 4 | lo,
                    _ => return Err(PathError::MalformedEscape),
                },
                _ => return Err(PathError::MalformedEscape),
            };
            match byte {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::EncodedBackslash),
                b';' => return Err(PathError::EncodedSemicolon),
                0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
                _ if is_unreserved(byte) => out.push(byte as char),
                _ => push_escape(byte, out),
            }
            i += 3;
            continue;
        }
        match b {
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
            b'\\' => return Err(PathError::Backslash),
            b'?' | b'#' => return Err(PathError::QueryOrFragment),
            _ if stands_raw(b) => out.push(b as char),
            _ => push_escape(b, out),
        }
        i += 1;
    }
    Ok(())
}

/// The compared form: params dropped, escapes of raw-able characters decoded, case folded.
/// `forward` is this module's output, so every `%` starts a valid upper-case escape.
fn matched_path(forward: &str, opts: &PathOptions) -> String {
    let bytes = forward.as_bytes();
    let decodes = bytes.windows(3).any(|w| w[0] == b'%' && escape_value(w[1], w[2]).is_some_and(decodes_for_match));
    if !opts.ignore_params && !opts.case_insensitive && !decodes {
        return forward.to_string();
    }
    let fold = |b: u8| if opts.case_insensitive { b.to_ascii_lowercase() } else { b };
    let mut out = String::with_capacity(forward.len());
    let mut in_params = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            b'/' => {
                in_params = false;
                // Dropping `;x` from `/a/;x/b` leaves an empty segment the origin merges.
                if !(opts.merge_slashes && out.ends_with('/')) {
                    out.push('/');
                }
            }
            _ if in_params => {}
            b';' if opts.ignore_params => in_params = true,
            b'%' if i + 1 < bytes.len() => {
                let (hi, lo) = (bytes[i], bytes[i + 1]);
                i += 2;
                match escape_value(hi, lo) {
                    Some(v) if decodes_for_match(v) => out.push(v as char),
                    // Hex digits stay upper-case: prefixes go through the same function.
                    _ => {
                        out.push('%');
                        out.push(hi as char);
                        out.push(lo as char);
                    }
                }
            }
            _ => out.push(fold(b) as char),
        }
    }
    out
}

/// RFC 3986's unreserved characters: an escape of one means the character itself.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Printable ASCII that stays raw in a forwarded path: not in the WHATWG path
/// percent-encode set (which gained `^` in 2025, so `^` is encoded whatever the parser's
/// vintage), and not `%`, `\`, `?` or `#`.
fn stands_raw(b: u8) -> bool {
    matches!(b, 0x21..=0x7E)
        && !matches!(b, b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'}')
}

/// An escape that route rules read decoded: the character could have been sent raw, and
/// decoding origins read both spellings alike. Never a separator (`%2F`, `%3B` are refused
/// before this, but this is what would turn them into one).
fn decodes_for_match(b: u8) -> bool {
    stands_raw(b) && b != b'/' && b != b';'
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn escape_value(hi: u8, lo: u8) -> Option<u8> {
    Some(hex_value(hi)? << 4 | hex_value(lo)?)
}

fn push_escape(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xF)] as char);
}

#[cfg(test)]
mod tests {
    use super::PathError::*;
    use super::*;
    use crate::core::policy::path_has_prefix;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    const DEFAULT: PathOptions = PathOptions { case_insensitive: false, ignore_params: false, merge_slashes: true };
    const UNMERGED: PathOptions = PathOptions { merge_slashes: false, ..DEFAULT };
    const CASELESS: PathOptions = PathOptions { case_insensitive: true, ..DEFAULT };
    const PARAMLESS: PathOptions = PathOptions { ignore_params: true, ..DEFAULT };
    const ALL: PathOptions = PathOptions { case_insensitive: true, ignore_params: true, merge_slashes: true };

    /// Tricks against an exempt `/health` (or a costly `/search`), and the plain cases
    /// around them. `Ok` is the forwarded path; these options leave `matched` equal to it.
    const TRICKS: &[(&str, PathOptions, Result<&str, PathError>)] = &[
        ("/health/../search", DEFAULT, Ok("/search")),
        ("/health/%2e%2e/search", DEFAULT, Ok("/search")),
        ("/health/.%2e/search", DEFAULT, Ok("/search")),
        ("/health/%2e./search", DEFAULT, Ok("/search")),
        ("/health/%2E%2E/search", DEFAULT, Ok("/search")),
        ("/health/%2E%2e/search", UNMERGED, Ok("/search")),
        ("/health/..;/search", DEFAULT, Err(DotSegmentWithParams)),
        ("/health/..;/search", PARAMLESS, Err(DotSegmentWithParams)),
        ("/health/..;x=1/search", DEFAULT, Err(DotSegmentWithParams)),
        ("/health/%2e%2e;/search", DEFAULT, Err(DotSegmentWithParams)),
        ("/health/.;x/search", DEFAULT, Err(DotSegmentWithParams)),
        ("/health/..;", DEFAULT, Err(DotSegmentWithParams)),
        ("/health;x/../search", DEFAULT, Ok("/search")),
        ("/health;x/../search", UNMERGED, Ok("/search")),
        ("/health/..%2fsearch", DEFAULT, Err(EncodedSlash)),
        ("/health%2f..%2fsearch", DEFAULT, Err(EncodedSlash)),
        ("/health%2F..%2Fsearch", UNMERGED, Err(EncodedSlash)),
        ("/health/..\\search", DEFAULT, Err(Backslash)),
        ("/health\\..\\search", DEFAULT, Err(Backslash)),
        ("/health%5c..%5csearch", DEFAULT, Err(EncodedBackslash)),
        ("/health%5C..%5Csearch", DEFAULT, Err(EncodedBackslash)),
        ("//health/../search", DEFAULT, Ok("/search")),
        ("//health/../search", UNMERGED, Ok("//search")),
        ("/health//../search", DEFAULT, Ok("/search")),
        ("/health//../search", UNMERGED, Err(DotDotAfterEmptySegment)),
        ("/health//./../search", UNMERGED, Err(DotDotAfterEmptySegment)),
        ("/health//..", UNMERGED, Err(DotDotAfterEmptySegment)),
        ("//..", UNMERGED, Err(DotDotAfterEmptySegment)),
        ("/a/..//b", DEFAULT, Ok("/b")),
        ("/a/..//b", UNMERGED, Ok("//b")),
        ("/a/.//b", UNMERGED, Ok("/a//b")),
        ("/./search", DEFAULT, Ok("/search")),
        ("/%2e/search", DEFAULT, Ok("/search")),
        ("/../search", DEFAULT, Err(AboveRoot)),
        ("/%2e%2e/search", DEFAULT, Err(AboveRoot)),
        ("/a/b/../../..", DEFAULT, Err(AboveRoot)),
        ("/a/b/../../../c", UNMERGED, Err(AboveRoot)),
        ("/a/b/../..", DEFAULT, Ok("/")),
        ("/health/%00", DEFAULT, Err(ControlCharacter)),
        ("/health\0", DEFAULT, Err(ControlCharacter)),
        ("/a\tb", DEFAULT, Err(ControlCharacter)),
        ("/a\r\nb", DEFAULT, Err(ControlCharacter)),
        ("/a%0Ab", DEFAULT, Err(ControlCharacter)),
        ("/a%1f", DEFAULT, Err(ControlCharacter)),
        ("/a%7F", DEFAULT, Err(ControlCharacter)),
        ("/a\u{7f}", DEFAULT, Err(ControlCharacter)),
        ("/%68ealth", DEFAULT, Ok("/health")),
        ("/%68%65%61%6C%74%68", DEFAULT, Ok("/health")),
        ("/%7e%41%5F%2d%30", DEFAULT, Ok("/~A_-0")),
        ("/search%3b", DEFAULT, Err(EncodedSemicolon)),
        ("/search%3Bx/..", PARAMLESS, Err(EncodedSemicolon)),
        ("/%", DEFAULT, Err(MalformedEscape)),
        ("/%4", DEFAULT, Err(MalformedEscape)),
        ("/%zz", DEFAULT, Err(MalformedEscape)),
        ("/a%g1", DEFAULT, Err(MalformedEscape)),
        ("/%%41", DEFAULT, Err(MalformedEscape)),
        ("/%\u{e9}", DEFAULT, Err(MalformedEscape)),
        ("/a b", DEFAULT, Ok("/a%20b")),
        ("/caf\u{e9}", DEFAULT, Ok("/caf%C3%A9")),
        ("/%c3%a9", DEFAULT, Ok("/%C3%A9")),
        ("/\u{20ac}/\u{1F600}", DEFAULT, Ok("/%E2%82%AC/%F0%9F%98%80")),
        ("/a\"<>`{}^", DEFAULT, Ok("/a%22%3C%3E%60%7B%7D%5E")),
        ("/a%3fb%23c%25", DEFAULT, Ok("/a%3Fb%23c%25")),
        ("/health/%252e%252e/search", DEFAULT, Err(DoubleEncoded)),
        ("/a%252F", DEFAULT, Err(DoubleEncoded)),
        ("/100%25", DEFAULT, Ok("/100%25")),
        ("/100%25x", DEFAULT, Ok("/100%25x")),
        ("/100%25%41", DEFAULT, Ok("/100%25A")),
        ("/100%25%41B", DEFAULT, Err(DoubleEncoded)),
        ("/a|b[c]!$&'()*+,=:@;x", DEFAULT, Ok("/a|b[c]!$&'()*+,=:@;x")),
        ("/a?b", DEFAULT, Err(QueryOrFragment)),
        ("/a#b", DEFAULT, Err(QueryOrFragment)),
        ("", DEFAULT, Err(NotOriginForm)),
        ("health", DEFAULT, Err(NotOriginForm)),
        ("*", DEFAULT, Err(NotOriginForm)),
        ("http://example.com/health", DEFAULT, Err(NotOriginForm)),
        ("%2Fhealth", DEFAULT, Err(NotOriginForm)),
        ("\\health", DEFAULT, Err(NotOriginForm)),
        ("/", DEFAULT, Ok("/")),
        ("/", UNMERGED, Ok("/")),
        ("/a/", DEFAULT, Ok("/a/")),
        ("/a/.", DEFAULT, Ok("/a/")),
        ("/a/%2E", DEFAULT, Ok("/a/")),
        ("/a/..", DEFAULT, Ok("/")),
        ("/a/b/..", UNMERGED, Ok("/a/")),
        ("/.", DEFAULT, Ok("/")),
        ("/a/./", DEFAULT, Ok("/a/")),
        ("/a//", DEFAULT, Ok("/a/")),
        ("/a//", UNMERGED, Ok("/a//")),
        ("/a//.", UNMERGED, Ok("/a//")),
        ("///", DEFAULT, Ok("/")),
        ("///", UNMERGED, Ok("///")),
        ("/a//b", DEFAULT, Ok("/a/b")),
        ("/a//b", UNMERGED, Ok("/a//b")),
        ("/...", DEFAULT, Ok("/...")),
        ("/a/%2e%2e%2e", DEFAULT, Ok("/a/...")),
        ("/..a/b../.b./a.", DEFAULT, Ok("/..a/b../.b./a.")),
    ];

    #[test]
    fn tricks() {
        for (raw, opts, want) in TRICKS {
            let got = normalize(raw, opts);
            let want = want.map(|f| NormalPath { forward: f.to_string(), matched: f.to_string() });
            assert_eq!(got, want, "{raw:?} with {opts:?}");
        }
    }

    /// Where the options make `matched` differ from `forward`: (raw, options, forward, matched).
    const MATCHED: &[(&str, PathOptions, &str, &str)] = &[
        ("/HEALTH", DEFAULT, "/HEALTH", "/HEALTH"),
        ("/HEALTH", CASELESS, "/HEALTH", "/health"),
        ("/%48ealth", CASELESS, "/Health", "/health"),
        ("/Caf%c3%89", CASELESS, "/Caf%C3%89", "/caf%C3%89"),
        ("/A%5eB", CASELESS, "/A%5EB", "/a%5Eb"),
        ("/health;jsessionid=1", DEFAULT, "/health;jsessionid=1", "/health;jsessionid=1"),
        ("/health;jsessionid=1", PARAMLESS, "/health;jsessionid=1", "/health"),
        ("/a;x/b;y=1,2/c;", PARAMLESS, "/a;x/b;y=1,2/c;", "/a/b/c"),
        ("/a/;x/b", PARAMLESS, "/a/;x/b", "/a/b"),
        ("/a/;x/b", PathOptions { ignore_params: true, ..UNMERGED }, "/a/;x/b", "/a//b"),
        ("/a/;x", PARAMLESS, "/a/;x", "/a/"),
        ("/;x", PARAMLESS, "/;x", "/"),
        ("/;x/;y/a", PARAMLESS, "/;x/;y/a", "/a"),
        ("/a;%41%3a", PARAMLESS, "/a;A%3A", "/a"),
        ("/HEALTH;JSESSIONID=X/", ALL, "/HEALTH;JSESSIONID=X/", "/health/"),
        ("/v1%3abatch", DEFAULT, "/v1%3Abatch", "/v1:batch"),
        ("/a%40b%7C%5b%5D%2B%27", DEFAULT, "/a%40b%7C%5B%5D%2B%27", "/a@b|[]+'"),
        ("/a%20b%25%3F%23%22", CASELESS, "/a%20b%25%3F%23%22", "/a%20b%25%3F%23%22"),
    ];

    #[test]
    fn matched_follows_the_options() {
        for (raw, opts, forward, matched) in MATCHED {
            let got = normalize(raw, opts).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!((got.forward.as_str(), got.matched.as_str()), (*forward, *matched), "{raw:?} with {opts:?}");
        }
    }

    #[test]
    fn prefixes_take_the_matched_form() {
        let cases: &[(&str, PathOptions, Result<&str, PathError>)] = &[
            ("/health", DEFAULT, Ok("/health")),
            ("/api/", DEFAULT, Ok("/api/")),
            ("/Health/", CASELESS, Ok("/health/")),
            ("/%68ealth", DEFAULT, Ok("/health")),
            ("/api/v1:batch", DEFAULT, Ok("/api/v1:batch")),
            ("/api/v1%3Abatch", DEFAULT, Ok("/api/v1:batch")),
            ("/api;v=1", PARAMLESS, Ok("/api")),
            ("/api//v1", DEFAULT, Ok("/api/v1")),
            ("/caf\u{e9}", CASELESS, Ok("/caf%C3%A9")),
            ("/health/..", DEFAULT, Err(DotSegmentInPrefix)),
            ("/./health", DEFAULT, Err(DotSegmentInPrefix)),
            ("/health/%2e%2e/", DEFAULT, Err(DotSegmentInPrefix)),
            ("/health/..;", DEFAULT, Err(DotSegmentWithParams)),
            ("/a%2fb", DEFAULT, Err(EncodedSlash)),
            ("api", DEFAULT, Err(NotOriginForm)),
        ];
        for (prefix, opts, want) in cases {
            assert_eq!(normalize_prefix(prefix, opts), want.map(String::from), "{prefix:?} with {opts:?}");
        }
    }

    /// The defect this module closes: no spelling of a path outside `/health` is matched by
    /// the exempt prefix, and every spelling of `/search` is matched by the costly one.
    #[test]
    fn route_rules_see_what_the_origin_sees() {
        for opts in [DEFAULT, UNMERGED, CASELESS, PARAMLESS, ALL] {
            let health = normalize_prefix("/health", &opts).unwrap();
            let search = normalize_prefix("/search", &opts).unwrap();
            for (raw, _, _) in TRICKS.iter().filter(|(raw, _, _)| raw.contains("search")) {
                if let Ok(p) = normalize(raw, &opts) {
                    assert!(!path_has_prefix(&p.matched, &health), "{raw:?} with {opts:?} passes as /health");
                    assert!(path_has_prefix(&p.matched, &search) || p.matched.starts_with("//"), "{raw:?}");
                }
            }
        }
        let tomcat = PathOptions { ignore_params: true, ..DEFAULT };
        let search = normalize_prefix("/search", &tomcat).unwrap();
        for raw in ["/search;x", "/search;jsessionid=1/", "/%73earch;a/b"] {
            assert!(path_has_prefix(&normalize(raw, &tomcat).unwrap().matched, &search), "{raw:?}");
        }
        let express = PathOptions { case_insensitive: true, ..DEFAULT };
        let search = normalize_prefix("/search", &express).unwrap();
        for raw in ["/SEARCH", "/Search/x", "/%53earch", "/x/../sEaRcH"] {
            assert!(path_has_prefix(&normalize(raw, &express).unwrap().matched, &search), "{raw:?}");
        }
    }

    #[test]
    fn urls_split_without_touching_the_path() {
        let parts = |origin, path, query| Some(UrlParts { origin, path, query });
        let cases: &[(&str, Option<UrlParts>)] = &[
            ("https://example.com/a/b?x=1&y=%2F#frag", parts("https://example.com", "/a/b", "?x=1&y=%2F")),
            ("http://127.0.0.1:8787/", parts("http://127.0.0.1:8787", "/", "")),
            ("https://h/health/%2e%2e;/search?", parts("https://h", "/health/%2e%2e;/search", "?")),
            ("https://h//a?b?c#d?e", parts("https://h", "//a", "?b?c")),
            ("https://[2001:db8::1]:443/x#", parts("https://[2001:db8::1]:443", "/x", "")),
            ("https://h/a#b?c", parts("https://h", "/a", "")),
            ("https://h", None),
            ("https://h?x=1", None),
            ("https:///path", None),
            ("https://user:pw@h/", None),
            ("/path", None),
            ("://h/", None),
            ("1http://h/", None),
        ];
        for (url, want) in cases {
            assert_eq!(split_url(url), *want, "{url:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(EncodedSlash.to_string().contains("%2F"));
        assert!(EncodedBackslash.to_string().contains("%5C"));
        assert!(EncodedSemicolon.to_string().contains("%3B"));
        assert!(DotSegmentWithParams.to_string().contains("..;x"));
        let all = [
            NotOriginForm,
            QueryOrFragment,
            MalformedEscape,
            EncodedSlash,
            EncodedBackslash,
            EncodedSemicolon,
            Backslash,
            ControlCharacter,
            AboveRoot,
            DotSegmentWithParams,
            DotDotAfterEmptySegment,
            DotSegmentInPrefix,
        ];
        for e in all {
            let m = e.to_string();
            assert!(m.len() > 20 && !m.ends_with('.'), "{e:?}: {m}");
        }
    }

    // -----------------------------------------------------------------------------------
    // Properties
    // -----------------------------------------------------------------------------------

    fn config() -> Config {
        Config { cases: 2048, failure_persistence: None, ..Config::default() }
    }

    fn options() -> impl Strategy<Value = PathOptions> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(case_insensitive, ignore_params, merge_slashes)| {
            PathOptions { case_insensitive, ignore_params, merge_slashes }
        })
    }

    /// The pieces tricks are made of, slashes the most common.
    const TOKENS: &[&str] = &[
        "/",
        "/",
        "/",
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        ".%2e",
        "%2f",
        "%5C",
        "%3b",
        "%3a",
        "%40",
        ";",
        ";x=1",
        "a",
        "B",
        "zz",
        "%41",
        "%7e",
        "%5f",
        "%",
        "%4",
        "%zz",
        " ",
        "\u{e9}",
        "\u{20ac}",
        "\\",
        "\0",
        "\t",
        "\u{7f}",
        "?",
        "#",
        "%00",
        "%1f",
        "%7F",
        "%20",
        "%25",
        "%3F",
        "%23",
        "%5E",
        "^",
        "~",
        "|",
        "[",
        "]",
        "\"",
        "{",
        "<",
        "`",
        "%c3%a9",
        "%E2%82%AC",
        "'",
        "+",
        "%2B",
        ":",
        "@",
    ];

    fn tricky_path() -> impl Strategy<Value = String> {
        (prop::bool::weighted(0.95), prop::collection::vec(prop::sample::select(TOKENS), 0..24))
            .prop_map(|(slash, tokens)| (if slash { "/" } else { "" }).to_string() + &tokens.concat())
    }

    /// Whether the WHATWG URL parser's path state leaves `path` as it is in an http(s) URL:
    /// nothing it percent-encodes (C0 controls, space, `"#<>?^\`{}`, DEL, non-ASCII), no
    /// `\` (a separator in special URLs), no segment it reads as a dot segment (`.`, `..`,
    /// and their `%2e` spellings).
    fn whatwg_keeps(path: &str) -> bool {
        let bytes_kept = path.bytes().all(|b| (0x21..0x7F).contains(&b) && !b"\"#<>?^`{}\\".contains(&b));
        let dot = |s: &str| matches!(s.to_ascii_lowercase().as_str(), "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e");
        path.starts_with('/') && bytes_kept && !path.split('/').any(dot)
    }

    fn check_canonical(raw: &str, n: &NormalPath, opts: &PathOptions) -> Result<(), TestCaseError> {
        let (f, m) = (n.forward.as_str(), n.matched.as_str());
        prop_assert!(f.starts_with('/') && m.starts_with('/'), "{raw:?} -> {n:?}");
        prop_assert_eq!(normalize(f, opts), Ok(n.clone()), "not a fixed point: {:?}", raw);
        prop_assert!(whatwg_keeps(f), "a WHATWG parser would change {f:?} (from {raw:?})");
        for segment in f.split('/') {
            let name = segment.split(';').next().unwrap_or(segment);
            prop_assert!(name != "." && name != "..", "dot segment in {f:?} (from {raw:?})");
        }
        if opts.merge_slashes {
            prop_assert!(!f.contains("//") && !m.contains("//"), "{raw:?} -> {n:?}");
        }
        let mut escapes = f.split('%').skip(1);
        prop_assert!(
            escapes.all(|e| {
                let b = e.as_bytes();
                b.len() >= 2
                    && b[..2].iter().all(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(d))
                    && escape_value(b[0], b[1])
                        .is_some_and(|v| !is_unreserved(v) && !b"/\\;".contains(&v) && v > 0x1F && v != 0x7F)
            }),
            "escape not canonical in {f:?}"
        );
        prop_assert_eq!(normalize_prefix(f, opts), Ok(m.to_string()), "the path as a prefix");
        prop_assert_eq!(normalize_prefix(m, opts), Ok(m.to_string()), "matched is not its own form");
        if opts.ignore_params {
            prop_assert!(!m.contains(';'));
        } else {
            prop_assert_eq!(m.matches(';').count(), f.matches(';').count());
        }
        if opts.case_insensitive {
            let mut upper_outside_escapes =
                m.split('%').enumerate().map(|(i, s)| if i == 0 { s } else { s.get(2..).unwrap_or("") });
            prop_assert!(!upper_outside_escapes.any(|s| s.bytes().any(|b| b.is_ascii_uppercase())), "{m:?}");
        }
        Ok(())
    }

    /// RFC 3986 §5.2.4, transcribed step by step, as the reference for dot removal.
    fn rfc_remove_dot_segments(path: &str) -> String {
        fn pop(out: &mut String) {
            let cut = out.rfind('/').unwrap_or(0);
            out.truncate(cut);
        }
        let (mut input, mut out) = (path.to_string(), String::new());
        while !input.is_empty() {
            if input.starts_with("../") {
                input.drain(..3);
            } else if input.starts_with("./") {
                input.drain(..2);
            } else if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".into();
            } else if input.starts_with("/../") {
                input.replace_range(..4, "/");
                pop(&mut out);
            } else if input == "/.." {
                input = "/".into();
                pop(&mut out);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let from = usize::from(input.starts_with('/'));
                let end = input[from..].find('/').map_or(input.len(), |i| i + from);
                out.extend(input.drain(..end));
            }
        }
        out
    }

    fn merge(path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn ok_results_are_canonical(raw in tricky_path(), opts in options()) {
            if let Ok(n) = normalize(&raw, &opts) {
                check_canonical(&raw, &n, &opts)?;
            }
            let _ = normalize_prefix(&raw, &opts);
        }

        #[test]
        fn any_string_is_refused_or_canonical(s in any::<String>(), opts in options()) {
            for raw in [s.clone(), format!("/{s}")] {
                if let Ok(n) = normalize(&raw, &opts) {
                    check_canonical(&raw, &n, &opts)?;
                }
                let _ = normalize_prefix(&raw, &opts);
            }
        }

        /// Against the RFC's own algorithm, with slashes merged first when the options say so.
        #[test]
        fn dot_removal_is_rfc_3986(tokens in prop::collection::vec(prop::sample::select(&["/", "a", "b", ".", ".."][..]), 0..16), merged in any::<bool>()) {
            let raw = format!("/{}", tokens.concat());
            let opts = PathOptions { merge_slashes: merged, ..DEFAULT };
            let input = if merged { merge(&raw) } else { raw.clone() };
            // How deep each `..` would climb, counted on the segments themselves.
            let mut depth = 0i32;
            let mut climbs = false;
            for segment in input[1..].split('/') {
                match segment {
                    ".." => { depth -= 1; climbs |= depth < 0; depth = depth.max(0) }
                    "." => {}
                    _ => depth += 1,
                }
            }
            match normalize(&raw, &opts) {
                Ok(n) => {
                    prop_assert!(!climbs, "{raw:?}");
                    prop_assert_eq!(n.forward, rfc_remove_dot_segments(&input), "{:?}", raw);
                }
                Err(AboveRoot) => prop_assert!(climbs, "{raw:?}"),
                Err(DotDotAfterEmptySegment) => prop_assert!(!merged && input.contains("//") && input.contains(".."), "{raw:?}"),
                Err(e) => prop_assert!(false, "{raw:?}: {e}"),
            }
        }

        /// Every spelling of the same characters is the same path: unreserved escapes in
        /// either hex case, escapes of what may stand raw, and dots that undo themselves.
        #[test]
        fn spellings_agree(
            segments in prop::collection::vec("[a-zA-Z0-9_~:@!$&'()*+,=|\\[\\]-]{1,5}", 0..6),
            spell in prop::collection::vec(0..4u8, 40),
            detour in (0..6usize, 0..3u8),
            opts in options(),
        ) {
            let plain = format!("/{}", segments.join("/"));
            let mut respelt = String::from("/");
            let mut forward_changes = false;
            for (i, segment) in segments.iter().enumerate() {
                if i == detour.0 {
                    respelt.push_str(["zz/../", "./", "%2E/q/.%2e/"][usize::from(detour.1)]);
                }
                for (j, b) in segment.bytes().enumerate() {
                    match spell[(i * 5 + j) % spell.len()] {
                        0 | 1 => respelt.push(b as char),
                        2 => respelt.push_str(&format!("%{b:02X}")),
                        _ => respelt.push_str(&format!("%{b:02x}")),
                    }
                    forward_changes |= spell[(i * 5 + j) % spell.len()] >= 2 && !is_unreserved(b);
                }
                if i + 1 < segments.len() {
                    respelt.push('/');
                }
            }
            let (a, b) = (normalize(&plain, &opts).unwrap(), normalize(&respelt, &opts).unwrap());
            prop_assert_eq!(&a.matched, &b.matched, "{:?} vs {:?}", plain, respelt);
            if !forward_changes {
                prop_assert_eq!(&a.forward, &b.forward);
            }
            if opts.case_insensitive {
                let shouted = normalize(&plain.to_ascii_uppercase(), &opts).unwrap();
                prop_assert_eq!(&a.matched, &shouted.matched);
            }
        }
    }
}
