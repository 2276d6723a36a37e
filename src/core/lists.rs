//! Block and allow lists: addresses and CIDR ranges (IPv4 and IPv6), countries and ASNs (from
//! the runtime's `request.cf`), and user-agent patterns. A blocked request is refused with
//! 403 before anything else is done for it (no store call, no origin call); an allowed one is
//! exempt from every limit. Block is looked at first: a request on both lists is blocked.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address, or a range of them in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`).
/// IPv4-mapped IPv6 is read as IPv4, on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn masked(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("`{s}` is not an address or a CIDR range (like 203.0.113.0/24 or 2001:db8::/32)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps.
        let prefix = if net.is_ipv4() && addr.contains(':') { prefix.checked_sub(96).ok_or_else(bad)? } else { prefix };
        if prefix > bits {
            return Err(format!("`{s}`: a prefix of at most {bits} bits"));
        }
        if !host_zero(net, prefix) {
            return Err(format!("`{s}` has bits set past its prefix: write the range's first address"));
        }
        Ok(Cidr { net, prefix })
    }
}

/// Whether every bit of `ip` past the first `prefix` is 0.
fn host_zero(ip: IpAddr, prefix: u8) -> bool {
    let (value, bits) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u8),
        IpAddr::V6(v6) => (u128::from(v6), 128u8),
    };
    match u32::from(bits - prefix) {
        0 => true,
        128 => value == 0,
        host => value & ((1u128 << host) - 1) == 0,
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// A country as `request.cf.country` gives it: two upper-case letters (ISO 3166-1 alpha-2;
/// `T1` for Tor, `XX` for unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Country(String);

impl FromStr for Country {
    type Err = String;
    fn from_str(s: &str) -> Result<Country, String> {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Country(s.to_ascii_uppercase()))
        } else {
            Err(format!("`{s}` is not a country code: two letters, like \"DE\" (ISO 3166-1 alpha-2)"))
        }
    }
}

/// A user-agent pattern: `*` matches any run of characters, the rest is compared without
/// regard to case, and the pattern covers the whole field (`*curl*`, `python-requests/*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
            return Err(format!("`{s}` is not a user-agent pattern: 1 to 256 visible characters, `*` for any run"));
        }
        if s.chars().all(|c| c == '*') {
            return Err(format!("`{s}` would match every user agent (and a request without one would not be matched): list what to match"));
        }
        Ok(Pattern(s.to_ascii_lowercase()))
    }
}

impl Pattern {
    pub fn matches(&self, text: &str) -> bool {
        glob(self.0.as_bytes(), text.to_ascii_lowercase().as_bytes())
    }
}

/// `*`-only wildcard matching in linear time: the last `*` seen is where to retry from.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One list: a request is on it when any of its entries matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List {
    pub addresses: Vec<Cidr>,
    pub countries: Vec<Country>,
    pub asns: Vec<u32>,
    pub user_agents: Vec<Pattern>,
}

/// What the lists look at in a request. `country` and `asn` come from `request.cf`, which a
/// local run does not have.
#[derive(Clone, Copy, Debug, Default)]
pub struct Visitor<'a> {
    pub address: Option<IpAddr>,
    pub country: Option<&'a str>,
    pub asn: Option<u32>,
    pub user_agent: Option<&'a str>,
}

impl List {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.countries.is_empty() && self.asns.is_empty() && self.user_agents.is_empty()
    }

    /// The entry that matches, in words, or `None`.
    pub fn matching(&self, v: &Visitor) -> Option<String> {
        if let Some(ip) = v.address {
            if let Some(c) = self.addresses.iter().find(|c| c.contains(ip)) {
                return Some(format!("address {c}"));
            }
        }
        if let Some(country) = v.country {
            if let Some(c) = self.countries.iter().find(|c| c.0.eq_ignore_ascii_case(country)) {
                return Some(format!("country {}", c.0));
            }
        }
        if let Some(asn) = v.asn {
            if self.asns.contains(&asn) {
                return Some(format!("AS{asn}"));
            }
        }
        if let Some(ua) = v.user_agent {
            if let Some(p) = self.user_agents.iter().find(|p| p.matches(ua)) {
                return Some(format!("user agent `{}`", p.0));
            }
        }
        None
    }
}

/// The policy's two lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lists {
    pub block: List,
    pub allow: List,
}

/// Where a request stands with the lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Refused with 403; the matching entry, in words.
    Blocked(String),
    /// Exempt from every limit.
    Allowed(String),
    Neither,
}

impl Lists {
    pub fn judge(&self, v: &Visitor) -> Listed {
        if let Some(why) = self.block.matching(v) {
            return Listed::Blocked(why);
        }
        match self.allow.matching(v) {
            Some(why) => Listed::Allowed(why),
            None => Listed::Neither,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.block.is_empty() && self.allow.is_empty()
    }

    /// Whether either list looks at `request.cf` (a country or an ASN), which is read only then.
    pub fn needs_geo(&self) -> bool {
        [&self.block, &self.allow].iter().any(|l| !l.countries.is_empty() || !l.asns.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_they_say_v4_v6_and_mapped() {
        let r: Cidr = "203.0.113.0/24".parse().unwrap();
        assert!(r.contains(ip("203.0.113.0")) && r.contains(ip("203.0.113.255")));
        assert!(!r.contains(ip("203.0.114.0")) && !r.contains(ip("2001:db8::1")));
        assert!(r.contains(ip("::ffff:203.0.113.7")), "IPv4-mapped IPv6 is the IPv4 address");
        let one: Cidr = "198.51.100.7".parse().unwrap();
        assert!(one.contains(ip("198.51.100.7")) && !one.contains(ip("198.51.100.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::1")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(ip("10.9.9.9")));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (s, words) in [
            ("203.0.113.0/33", "at most 32 bits"),
            ("2001:db8::/129", "at most 128 bits"),
            ("203.0.113.5/24", "bits set past its prefix"),
            ("example.com", "not an address"),
            ("10.0.0.0/", "not an address"),
            ("10.0.0.0/+8", "not an address"),
            (" 10.0.0.1", "not an address"),
        ] {
            let e = s.parse::<Cidr>().unwrap_err();
            assert!(e.contains(words), "{s}: {e}");
        }
        assert!("DEU".parse::<Country>().unwrap_err().contains("two letters"));
        assert_eq!("de".parse::<Country>().unwrap(), Country("DE".into()));
        assert!("*".parse::<Pattern>().unwrap_err().contains("every user agent"));
        assert!("".parse::<Pattern>().is_err() && "a\nb".parse::<Pattern>().is_err());
    }

    #[test]
    fn user_agent_patterns_match_the_whole_field_without_case() {
        let p: Pattern = "*curl*".parse().unwrap();
        assert!(p.matches("curl/8.5.0") && p.matches("Mozilla (compatible; CURL)") && !p.matches("wget"));
        let q: Pattern = "python-requests/*".parse().unwrap();
        assert!(q.matches("python-requests/2.31") && !q.matches("my python-requests/2.31"));
        let exact: Pattern = "BadBot".parse().unwrap();
        assert!(exact.matches("badbot") && !exact.matches("badbot/2"));
        let many: Pattern = "a*b*c".parse().unwrap();
        assert!(many.matches("aXXbYYc") && many.matches("abc") && !many.matches("acb"));
        // Linear, not exponential, on a hostile field.
        let hostile: Pattern = "*a*a*a*a*a*a*a*a*b".parse().unwrap();
        assert!(!hostile.matches(&"a".repeat(10_000)));
    }

    #[test]
    fn block_is_looked_at_first_and_allow_exempts() {
        let lists = Lists {
            block: List {
                addresses: vec!["203.0.113.0/24".parse().unwrap()],
                countries: vec!["KP".parse().unwrap()],
                asns: vec![64496],
                user_agents: vec!["*sqlmap*".parse().unwrap()],
            },
            allow: List {
                addresses: vec!["203.0.113.0/24".parse().unwrap(), "198.51.100.0/24".parse().unwrap()],
                ..List::default()
            },
        };
        let at = |a: &str| Visitor { address: Some(ip(a)), ..Visitor::default() };
        assert_eq!(lists.judge(&at("203.0.113.9")), Listed::Blocked("address 203.0.113.0/24".into()));
        assert_eq!(lists.judge(&at("198.51.100.9")), Listed::Allowed("address 198.51.100.0/24".into()));
        assert_eq!(lists.judge(&at("192.0.2.1")), Listed::Neither);
        let geo = Visitor { country: Some("kp"), ..Visitor::default() };
        assert_eq!(lists.judge(&geo), Listed::Blocked("country KP".into()));
        let asn = Visitor { asn: Some(64496), ..Visitor::default() };
        assert_eq!(lists.judge(&asn), Listed::Blocked("AS64496".into()));
        let ua = Visitor { user_agent: Some("sqlmap/1.7"), ..Visitor::default() };
        assert_eq!(lists.judge(&ua), Listed::Blocked("user agent `*sqlmap*`".into()));
        assert_eq!(lists.judge(&Visitor::default()), Listed::Neither, "nothing known matches nothing");
        assert!(lists.needs_geo() && !Lists::default().needs_geo() && Lists::default().is_empty());
    }
}
