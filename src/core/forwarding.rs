//! What a proxy tells the origin, and what it changes in the origin's answer: the client's
//! address appended to `X-Forwarded-For`, and a redirect to the origin's own address pointed
//! back at the public one, so a browser never goes around the limiter.

use std::net::IpAddr;

/// `X-Forwarded-For` after this hop: the chain the request came with, then the client's
/// address. `None` when the address does not parse (nothing is passed on then).
pub fn forwarded_for(before: Option<&str>, client: Option<&str>) -> Option<String> {
    let ip = client.map(str::trim).filter(|ip| ip.parse::<IpAddr>().is_ok())?;
    Some(match before.map(str::trim) {
        Some(chain) if !chain.is_empty() => format!("{chain}, {ip}"),
        _ => ip.to_string(),
    })
}

/// A `Location` that points at the origin's own address (`origin_base`, as `ORIGIN_URL`
/// writes it), re-pointed at the public address (`https://host`), path and query kept;
/// `None` for any other location.
pub fn public_location(location: &str, origin_base: &str, public: &str) -> Option<String> {
    let base = origin_base.trim_end_matches('/');
    let scheme_and_host = location.get(..base.len())?;
    let rest = &location[base.len()..];
    let same = scheme_and_host.eq_ignore_ascii_case(base) && (rest.is_empty() || rest.starts_with(['/', '?', '#']));
    same.then(|| format!("{public}{}", if rest.is_empty() { "/" } else { rest }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_appended_to_the_chain() {
        assert_eq!(forwarded_for(None, Some("203.0.113.9")).as_deref(), Some("203.0.113.9"));
        assert_eq!(forwarded_for(Some("10.0.0.1"), Some("2001:db8::1")).as_deref(), Some("10.0.0.1, 2001:db8::1"));
        assert_eq!(forwarded_for(Some("  "), Some(" 203.0.113.9 ")).as_deref(), Some("203.0.113.9"));
        assert_eq!(forwarded_for(Some("10.0.0.1"), Some("not-an-ip\r\nX-Evil: 1")), None);
        assert_eq!(forwarded_for(Some("10.0.0.1"), None), None);
    }

    #[test]
    fn redirects_to_the_origin_point_at_the_public_address() {
        let (origin, public) = ("http://127.0.0.1:3000", "https://app.example");
        assert_eq!(
            public_location("http://127.0.0.1:3000/login?next=/a", origin, public).as_deref(),
            Some("https://app.example/login?next=/a")
        );
        assert_eq!(public_location("HTTP://127.0.0.1:3000", origin, public).as_deref(), Some("https://app.example/"));
        assert_eq!(
            public_location("http://127.0.0.1:3000/x", "http://127.0.0.1:3000/", public).as_deref(),
            Some("https://app.example/x")
        );
        for other in [
            "/relative",
            "http://127.0.0.1:30001/x",
            "https://elsewhere.example/x",
            "http://127.0.0.1:3000@evil/x",
            "",
            "http",
        ] {
            assert_eq!(public_location(other, origin, public), None, "{other}");
        }
    }
}
