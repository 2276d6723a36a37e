//! Forwarding an allowed request to the origin and streaming the answer back, with the
//! rate-limit fields added. Bodies are passed as the runtime's own streams both ways, never
//! buffered, so a large upload or download costs the Worker no memory. The method goes as
//! sent (extension methods too: PROPFIND, PURGE...), and a WebSocket upgrade goes through
//! with its `Upgrade` and `Connection` fields, the origin's 101 answered with its socket. A
//! failing origin is a 502 problem+json, not an exception.

use worker::{console_error, Headers, Result};

use super::fields::Fields;
use super::isolate::{Isolate, Origin};
use crate::core::algorithm::Algorithm;
use crate::core::decision::problem;
use crate::core::forwarding::{forwarded_for, public_location};
use crate::core::path::{normalize, split_url, NormalPath, PathError, PathOptions};
use crate::runtime;

/// Where a request goes, parsed once: the origin it was sent to (`https://host`), its
/// normalised path (what the dashboard prefix and the route rules match, and exactly what
/// the origin is sent), and its query as sent (`?a=1`, or empty).
pub struct Target<'a> {
    pub origin: &'a str,
    pub path: NormalPath,
    pub query: &'a str,
}

impl<'a> Target<'a> {
    /// The runtime's request URL, split and normalised; an error is a 400 `invalid-path`.
    pub fn parse(url: &'a str, options: &PathOptions) -> std::result::Result<Target<'a>, PathError> {
        let t = split_url(url).ok_or(PathError::NotOriginForm)?;
        Ok(Target { origin: t.origin, path: normalize(t.path, options)?, query: t.query })
    }
}

/// Sends the request on with exactly the path the route rules matched (`Target::path`),
/// and its answer back with the `added` fields (the rate-limit fields of its decision). The
/// copying of fields, the fetch and the new response around the origin's body are one call
/// into the runtime (`runtime::forward`); what to add is decided here.
pub async fn forward(
    req: &web_sys::Request,
    method: &str,
    iso: &Isolate,
    to: &Target<'_>,
    fields: &Fields,
    messages: Option<Algorithm>,
    added: &[(&'static str, String)],
) -> Result<web_sys::Response> {
    let origin = &iso.origin;
    let base = match origin {
        Origin::Demo => return Ok(demo(method, &to.path.forward, added)),
        Origin::Url(base) => base.as_str(),
        Origin::Passthrough => to.origin,
    };
    let target = format!("{base}{}{}", to.path.forward, to.query);
    // Who is calling and how it was reached, as a proxy tells the origin: the client's
    // address appended to `X-Forwarded-For`, the public host and scheme.
    let chain = forwarded_for(fields.forwarded_for(), fields.client_ip.as_deref());
    let mut to_origin: Vec<(&str, &str)> = Vec::with_capacity(3);
    if let Some(chain) = &chain {
        to_origin.push(("X-Forwarded-For", chain));
    }
    if let Some((scheme, host)) = to.origin.split_once("://") {
        to_origin.push(("X-Forwarded-Host", host));
        to_origin.push(("X-Forwarded-Proto", scheme));
    }
    let added_list = runtime::field_list(added.iter().map(|(n, v)| (*n, v.as_str())));
    let websocket = fields.websocket();
    let answer = match runtime::forward(req, &target, &runtime::field_list(to_origin), &added_list, websocket).await {
        Ok(r) => r,
        Err(e) => {
            console_error!("edge-limiter: origin request failed: {e}");
            let detail = if e.contains("101") {
                "The origin answered 101 without a WebSocket."
            } else {
                "The origin server could not be reached or failed to answer."
            };
            return Ok(iso.answer(problem(502, "Bad Gateway", detail, "origin-unreachable")));
        }
    };
    if let Origin::Url(base) = origin {
        let headers = answer.headers();
        if let Some(location) = headers.get("location")? {
            if let Some(public) = public_location(&location, base, to.origin) {
                headers.set("Location", &public)?;
            }
        }
    }
    if let (101, Some(limit)) = (answer.status(), messages) {
        // The origin accepted the upgrade on a route that limits messages: relay them.
        let Some(socket) = runtime::websocket_of(&answer) else {
            let detail = "The origin answered 101 without a WebSocket.";
            return Ok(iso.answer(problem(502, "Bad Gateway", detail, "origin-unreachable")));
        };
        return super::relay::relay(socket, limit, Headers(answer.headers())).map(Into::into);
    }
    Ok(answer)
}

/// The built-in demo origin: says what it received, so limiting can be watched with curl.
fn demo(method: &str, path: &str, added: &[(&'static str, String)]) -> web_sys::Response {
    let body = serde_json::json!({
        "origin": "edge-limiter demo origin",
        "method": method,
        "path": path,
        "note": "Set ORIGIN_URL to put the limiter in front of your own service.",
    });
    let added = added.iter().map(|(name, value)| (*name, value.as_str()));
    let fields = runtime::field_list(std::iter::once(("Content-Type", "application/json")).chain(added));
    runtime::answer(200, &fields, &body.to_string())
}
