//! CORS for a limiter in front of a browser app: a front end on another origin must be able
//! to read a 429 (its `Retry-After` and `RateLimit` fields) instead of seeing a network error,
//! and its preflights are the app's business, not requests to charge.
//!
//! The limiter's own answers (429, 401, 400...) get the fields the policy allows; the origin's
//! answers keep the origin's CORS fields, with the limiter's response fields added to
//! `Access-Control-Expose-Headers` when the origin allows a cross-origin read at all.

/// The policy's `cors` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: AllowOrigins,
    /// Charge preflights (`OPTIONS` with `Access-Control-Request-Method`) like any request.
    /// Off by default: they are sent by browsers, not by the caller's code.
    pub charge_preflight: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowOrigins {
    /// `Access-Control-Allow-Origin: *` on the limiter's answers (no credentials).
    Any,
    /// Only these origins (`https://app.example`), echoed with credentials allowed.
    List(Vec<String>),
    /// No CORS fields on the limiter's answers.
    None,
}

/// The `cors` of a policy that names none: any origin may read the limiter's answers, and
/// preflights are not charged.
pub const DEFAULT_CORS: Cors = Cors { allow_origins: AllowOrigins::Any, charge_preflight: false };

impl Default for Cors {
    fn default() -> Self {
        DEFAULT_CORS
    }
}

/// The response fields a browser script needs to read to back off.
pub const EXPOSED: &str =
    "Retry-After, RateLimit, RateLimit-Policy, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Limiter-Backend";

/// A CORS preflight (Fetch standard): `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
/// The last is asked for only when the first two hold (reading a header costs a crossing).
pub fn is_preflight<S>(method: &str, origin: Option<&str>, request_method: impl FnOnce() -> Option<S>) -> bool {
    method.eq_ignore_ascii_case("OPTIONS") && origin.is_some() && request_method().is_some()
}

/// The CORS fields for one of the limiter's own answers to a request from `origin`.
pub fn own_answer_fields(cors: &Cors, origin: Option<&str>) -> Vec<(&'static str, String)> {
    let Some(origin) = origin else { return Vec::new() };
    match &cors.allow_origins {
        AllowOrigins::Any => {
            vec![("Access-Control-Allow-Origin", "*".into()), ("Access-Control-Expose-Headers", EXPOSED.into())]
        }
        AllowOrigins::List(list) if list.iter().any(|o| o.eq_ignore_ascii_case(origin)) => vec![
            ("Access-Control-Allow-Origin", origin.to_string()),
            ("Access-Control-Allow-Credentials", "true".into()),
            ("Access-Control-Expose-Headers", EXPOSED.into()),
            ("Vary", "Origin".into()),
        ],
        _ => Vec::new(),
    }
}

/// `Access-Control-Expose-Headers` for an origin answer that allows a cross-origin read:
/// the origin's own list and the limiter's fields. `None` when nothing needs to change.
pub fn exposed_with_ours(origin_exposes: Option<&str>) -> Option<String> {
    match origin_exposes.map(str::trim) {
        Some("*") => None,
        Some(list) if !list.is_empty() => Some(format!("{list}, {EXPOSED}")),
        _ => Some(EXPOSED.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflights_are_told_apart() {
        assert!(is_preflight("OPTIONS", Some("https://a.example"), || Some("POST")));
        assert!(!is_preflight("OPTIONS", Some("https://a.example"), || None::<&str>), "a plain OPTIONS is a request");
        assert!(!is_preflight("GET", Some("https://a.example"), || Some("POST")));
        assert!(!is_preflight("GET", Some("https://a.example"), || -> Option<&str> { panic!("not asked") }));
    }

    #[test]
    fn own_answers_carry_what_the_policy_allows() {
        let any = Cors::default();
        let fields = own_answer_fields(&any, Some("https://a.example"));
        assert_eq!(fields[0], ("Access-Control-Allow-Origin", "*".to_string()));
        assert!(fields[1].1.contains("Retry-After") && fields[1].1.contains("RateLimit"));
        assert!(own_answer_fields(&any, None).is_empty(), "no Origin, no CORS");
        let list =
            Cors { allow_origins: AllowOrigins::List(vec!["https://app.example".into()]), charge_preflight: false };
        let fields = own_answer_fields(&list, Some("https://APP.example"));
        assert_eq!(fields[0].1, "https://APP.example");
        assert!(fields.contains(&("Vary", "Origin".to_string())));
        assert!(own_answer_fields(&list, Some("https://evil.example")).is_empty());
        let none = Cors { allow_origins: AllowOrigins::None, charge_preflight: false };
        assert!(own_answer_fields(&none, Some("https://app.example")).is_empty());
    }

    #[test]
    fn origin_answers_expose_our_fields_too() {
        assert_eq!(exposed_with_ours(None).as_deref(), Some(EXPOSED));
        assert_eq!(exposed_with_ours(Some("X-Request-Id")), Some(format!("X-Request-Id, {EXPOSED}")));
        assert_eq!(exposed_with_ours(Some("*")), None);
    }
}
