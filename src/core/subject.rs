//! Who a limit counts, and the digest that stands for it in every store key. A subject is
//! born in `identity` (or in the admin API's lookup, which names it the same way) and never
//! leaves the Worker as itself: stores, logs and answers see only its [`SubjectDigest`].

use std::fmt;

use sha2::{Digest, Sha256};

/// What a caller is known by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An address, masked to the policy's prefix: `203.0.113.7`, `2001:db8::/64`.
    Address(String),
    /// A request with no usable client address: one documented, shared bucket.
    UnknownAddress,
    /// An API key of the policy, by its SHA-256 digest (hex), never the key.
    Key(String),
    /// A verified JWT's subject claim.
    Token(String),
    /// A name an app gave through the decision API (a user id, a tenant): its own
    /// namespace, never the same bucket as an edge subject.
    App(String),
}

impl Subject {
    /// The digest store keys carry instead of the subject: 128 bits of SHA-256 of its text
    /// form (`ip:203.0.113.7`, `ip:unknown`, `key:<hex>`, `jwt:<sub>`, `app:<name>`), hex.
    pub fn digest(&self) -> SubjectDigest {
        SubjectDigest(digest_of(&self.to_string()))
    }

    pub fn is_address(&self) -> bool {
        matches!(self, Subject::Address(_))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Address(net) => write!(f, "ip:{net}"),
            Subject::UnknownAddress => f.write_str("ip:unknown"),
            Subject::Key(digest) => write!(f, "key:{digest}"),
            Subject::Token(sub) => write!(f, "jwt:{sub}"),
            Subject::App(name) => write!(f, "app:{name}"),
        }
    }
}

/// A subject's text form compares with text, so tests and logs read as the keys do.
impl PartialEq<&str> for Subject {
    fn eq(&self, other: &&str) -> bool {
        match (self, other.split_once(':')) {
            (Subject::UnknownAddress, _) => *other == "ip:unknown",
            (Subject::Address(net), Some(("ip", text))) => net == text,
            (Subject::Key(digest), Some(("key", text))) => digest == text,
            (Subject::Token(sub), Some(("jwt", text))) => sub == text,
            (Subject::App(name), Some(("app", text))) => name == text,
            _ => false,
        }
    }
}

/// A subject as the stores know it: 32 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubjectDigest(String);

impl SubjectDigest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A digest taken as given, for tests that name their keys.
    #[cfg(test)]
    pub(crate) fn raw(text: &str) -> SubjectDigest {
        SubjectDigest(text.to_string())
    }
}

impl fmt::Display for SubjectDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 128 bits of SHA-256 of `text`, hex.
pub fn digest_of(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes())[..16])
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_read_as_their_keys_and_hash_to_32_hex_digits() {
        let ip = Subject::Address("203.0.113.9".into());
        assert_eq!(ip, "ip:203.0.113.9");
        assert_eq!(Subject::UnknownAddress, "ip:unknown");
        assert_eq!(Subject::Token("u1".into()), "jwt:u1");
        let d = ip.digest();
        assert_eq!(d.as_str().len(), 32);
        assert_eq!(d.as_str(), digest_of("ip:203.0.113.9"));
        assert_ne!(d, Subject::Address("203.0.113.8".into()).digest());
        assert_ne!(Subject::Key("ab".into()).digest(), Subject::Token("ab".into()).digest());
    }
}
