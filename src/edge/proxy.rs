//! Forwarding an allowed request to the origin and streaming the answer back, with the
//! rate-limit fields added. Bodies are passed as the runtime's own streams both ways, never
//! buffered, so a large upload or download costs the Worker no memory. The method goes as
//! sent (extension methods too: PROPFIND, PURGE...), and a WebSocket upgrade goes through
//! with its `Upgrade` and `Connection` fields, the origin's 101 answered with its socket. A
//! failing origin is a 502 problem+json, not an exception.

use wasm_bindgen::JsValue;
use worker::{Headers, Result};

use super::fields::Fields;
use super::isolate::{Isolate, Origin};
use super::respond::{with_cors, Reply};
use crate::core::algorithm::Algorithm;
use crate::core::cors::exposed_with_ours;
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

thread_local! {
    /// The forward's hook (`runtime::forward`), made once per isolate.
    static HOOK: js_sys::Function = runtime::callback(hook);
}

/// The hook's questions, numbered as in `runtime.js` (`HOOK_LOCATION`, ...).
const HOOK_LOCATION: u32 = 0;
const HOOK_EXPOSE: u32 = 1;

/// What the origin's answer needs of the limiter's judgment, asked by `runtime.js` only when
/// it arises: [`HOOK_LOCATION`], a `Location` re-pointed at the public address;
/// [`HOOK_EXPOSE`], the limiter's fields in a cross-origin answer's
/// `Access-Control-Expose-Headers`; else (`HOOK_UNREACHABLE`, 2) the answer when the origin
/// could not be reached (a 502 problem+json with the policy's CORS fields). Undefined for none.
fn hook(kind: u32, a: Option<String>, b: Option<String>) -> JsValue {
    let Some(iso) = Isolate::current() else { return JsValue::UNDEFINED };
    let text = |v: Option<String>| v.map_or(JsValue::UNDEFINED, |s| JsValue::from_str(&s));
    match kind {
        HOOK_LOCATION => match (&iso.origin, a, b) {
            (Origin::Url(base), Some(location), Some(public)) => text(public_location(&location, base, &public)),
            _ => JsValue::UNDEFINED,
        },
        HOOK_EXPOSE => text(exposed_with_ours(a.as_deref())),
        _ => {
            let why = a.unwrap_or_default();
            super::log::error("origin_unreachable", &format!("origin request failed: {why}"), serde_json::Value::Null);
            let detail = if why.contains("101") {
                "The origin answered 101 without a WebSocket."
            } else {
                "The origin server could not be reached or failed to answer."
            };
            let answer = Reply::Own(iso.answer(problem(502, "Bad Gateway", detail, "origin-unreachable")));
            match with_cors(answer, iso.cors(), b.as_deref()) {
                Ok(reply) => reply.into(),
                Err(_) => JsValue::UNDEFINED,
            }
        }
    }
}

/// Sends the request on with exactly the path the route rules matched (`Target::path`),
/// and its answer back with the `added` fields (the rate-limit fields of its decision). The
/// copying of fields, the fetch and the new response around the origin's body are one call
/// into the runtime (`runtime::forward`), whose promise goes to the runtime as it is: the
/// wasm waits on nothing more for this request. Only a WebSocket on a route that limits its
/// messages is waited for, to be relayed. `cors_origin` is the `Origin` whose answer gets the
/// limiter's fields exposed (none for a preflight, whose answer is the origin's alone).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    req: &web_sys::Request,
    method: &str,
    iso: &Isolate,
    to: &Target<'_>,
    fields: &Fields,
    messages: Option<Algorithm>,
    added: &[(&'static str, String)],
    cors_origin: Option<&str>,
) -> Result<Reply> {
    let origin = &iso.origin;
    let (base, public) = match origin {
        Origin::Demo => return Ok(Reply::Done(demo(method, &to.path.forward, added))),
        Origin::Url(base) => (base.as_str(), to.origin),
        Origin::Passthrough => (to.origin, ""),
    };
    let target = format!("{base}{}{}", to.path.forward, to.query);
    // Who is calling and how it was reached, as a proxy tells the origin: the client's
    // address appended to `X-Forwarded-For`, the public host and scheme.
    let chain = forwarded_for(fields.forwarded_for(), fields.client_ip.as_deref());
    let mut to_origin: Vec<(&str, &str)> = Vec::with_capacity(3);
    if let Some(chain) = &chain {
        to_origin.push(("X-Forwarded-For", chain));
    }
    // `split_once(':')` and a check, not a search for "://": a string pattern costs a searcher.
    let parts = to.origin.split_once(':').and_then(|(scheme, rest)| Some((scheme, rest.strip_prefix("//")?)));
    if let Some((scheme, host)) = parts {
        to_origin.push(("X-Forwarded-Host", host));
        to_origin.push(("X-Forwarded-Proto", scheme));
    }
    let added_list = runtime::field_list(added.iter().map(|(n, v)| (*n, v.as_str())));
    let websocket = fields.websocket();
    let to_origin = runtime::field_list(to_origin);
    let answer =
        HOOK.with(|hook| runtime::forward(req, &target, &to_origin, &added_list, websocket, hook, public, cors_origin));
    let (true, Some(limit)) = (websocket, messages) else { return Ok(Reply::Later(answer)) };
    // The origin may accept the upgrade on a route that limits messages: then relay them.
    let answer = runtime::answered(answer).await?;
    if answer.status() != 101 {
        return Ok(Reply::Done(answer));
    }
    let Some(socket) = runtime::websocket_of(&answer) else {
        let detail = "The origin answered 101 without a WebSocket.";
        return Ok(Reply::Own(iso.answer(problem(502, "Bad Gateway", detail, "origin-unreachable"))));
    };
    super::relay::relay(socket, limit, Headers(answer.headers())).map(|r| Reply::Done(r.into()))
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
