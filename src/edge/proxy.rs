//! Forwarding an allowed request to the origin and streaming the answer back, with the
//! rate-limit fields added. Bodies are passed as the runtime's own streams both ways, never
//! buffered, so a large upload or download costs the Worker no memory. The method goes as
//! sent (extension methods too: PROPFIND, PURGE...), and a WebSocket upgrade goes through
//! with its `Upgrade` and `Connection` fields, the origin's 101 answered with its socket. A
//! failing origin is a 502 problem+json, not an exception.

use worker::{console_error, Fetch, Headers, Request, Response, ResponseBody, Result};

use super::isolate::{Isolate, Origin};
use super::respond::{fields, OWN_ANSWER};
use crate::core::algorithm::Algorithm;
use crate::core::decision::problem;
use crate::core::forwarding::{forwarded_for, public_location};
use crate::core::path::{normalize, split_url, NormalPath, PathError, PathOptions};

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

/// Connection-level fields that must not cross a proxy (RFC 9110 §7.6.1), plus `host`,
/// which the outgoing URL decides.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// A WebSocket opening handshake (RFC 6455 §4.1): `Upgrade: websocket`.
fn is_websocket(headers: &Headers) -> bool {
    headers.get("upgrade").ok().flatten().is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
}

/// The fields that may cross: all but the hop-by-hop ones. A WebSocket handshake is sent
/// as one, `Upgrade: websocket` and `Connection: Upgrade` exactly: fields the client named in
/// its own `Connection` (`X-Forwarded-For`, say) are not dropped on its word.
fn copy_headers(from: &Headers, websocket: bool) -> Result<Headers> {
    let to = Headers::new();
    for (name, value) in from.entries() {
        let lower = name.to_ascii_lowercase();
        if lower != OWN_ANSWER && !HOP_BY_HOP.contains(&lower.as_str()) {
            to.append(&name, &value)?;
        }
    }
    if websocket {
        to.set("Upgrade", "websocket")?;
        to.set("Connection", "Upgrade")?;
    }
    Ok(to)
}

/// Tells the origin who is calling and how it was reached, as a proxy does: the client's
/// address appended to `X-Forwarded-For`, the public host in `X-Forwarded-Host`, the scheme in
/// `X-Forwarded-Proto`.
fn tell_the_origin(headers: &Headers, public: &str, client: Option<&str>) -> Result<()> {
    if let Some(chain) = forwarded_for(headers.get("x-forwarded-for")?.as_deref(), client) {
        headers.set("X-Forwarded-For", &chain)?;
    }
    if let Some((scheme, host)) = public.split_once("://") {
        headers.set("X-Forwarded-Host", host)?;
        headers.set("X-Forwarded-Proto", scheme)?;
    }
    Ok(())
}

/// Sends the request on with exactly the path the route rules matched (`Target::path`),
/// and its answer back with the `added` fields (the rate-limit fields of its decision).
pub async fn forward(
    req: Request,
    iso: &Isolate,
    to: &Target<'_>,
    client: Option<&str>,
    messages: Option<Algorithm>,
    added: &[(&'static str, String)],
) -> Result<Response> {
    let origin = &iso.origin;
    let base = match origin {
        Origin::Demo => return demo(&req, &to.path.forward, added),
        Origin::Url(base) => base.as_str(),
        Origin::Passthrough => to.origin,
    };
    let target = format!("{base}{}{}", to.path.forward, to.query);
    // Built on the runtime's own types: `worker::Method` knows ten methods and turns the rest
    // into GET, and the body stays the runtime's stream, never wrapped.
    let incoming = req.inner();
    let method = incoming.method();
    let websocket = is_websocket(req.headers());
    let init = web_sys::RequestInit::new();
    init.set_method(&method);
    let outgoing_headers = copy_headers(req.headers(), websocket)?;
    tell_the_origin(&outgoing_headers, to.origin, client)?;
    init.set_headers(&outgoing_headers.0);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if !(method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD")) {
        if let Some(body) = incoming.body() {
            init.set_body(&body);
        }
    }
    let outgoing = web_sys::Request::new_with_str_and_init(&target, &init)?;
    let answer = match Fetch::Request(Request::from(outgoing)).send().await {
        Ok(r) => r,
        Err(e) => {
            console_error!("edge-limiter: origin request failed: {e}");
            let detail = "The origin server could not be reached or failed to answer.";
            return iso.answer(problem(502, "Bad Gateway", detail, "origin-unreachable"));
        }
    };
    // Fetched responses have immutable headers: build a new response around the same body.
    let status = answer.status_code();
    let headers = copy_headers(answer.headers(), status == 101)?;
    for (name, value) in added {
        headers.set(name, value)?;
    }
    if let (Origin::Url(base), Some(location)) = (origin, headers.get("location")?) {
        if let Some(public) = public_location(&location, base, to.origin) {
            headers.set("Location", &public)?;
        }
    }
    let body = answer.body().clone();
    if status == 101 {
        // The origin accepted the upgrade: hand its socket to the client, untouched.
        return match (answer.websocket(), messages) {
            (Some(socket), Some(limit)) => super::relay::relay(socket, limit, headers),
            (Some(socket), None) => {
                Ok(Response::builder().with_status(101).with_headers(headers).with_websocket(socket).empty())
            }
            (None, _) => iso.answer(problem(
                502,
                "Bad Gateway",
                "The origin answered 101 without a WebSocket.",
                "origin-unreachable",
            )),
        };
    }
    let builder = Response::builder().with_status(status).with_headers(headers);
    Ok(match body {
        ResponseBody::Stream(s) => builder.stream(s),
        ResponseBody::Body(b) => builder.fixed(b),
        ResponseBody::Empty => builder.empty(),
    })
}

/// The built-in demo origin: says what it received, so limiting can be watched with curl.
fn demo(req: &Request, path: &str, added: &[(&'static str, String)]) -> Result<Response> {
    let body = serde_json::json!({
        "origin": "edge-limiter demo origin",
        "method": req.inner().method(),
        "path": path,
        "note": "Set ORIGIN_URL to put the limiter in front of your own service.",
    });
    let added = added.iter().map(|(name, value)| (*name, value.as_str()));
    let headers = fields(std::iter::once(("Content-Type", "application/json")).chain(added))?;
    Ok(Response::builder().with_headers(headers).fixed(body.to_string().into_bytes()))
}
