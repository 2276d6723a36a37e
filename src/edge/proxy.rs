//! Forwarding an allowed request to the origin and streaming the answer back, with the
//! rate-limit fields added. Bodies are passed as streams both ways, never buffered, so a
//! large upload or download costs the Worker no memory. A failing origin is a 502
//! problem+json, not an exception.

use wasm_bindgen::JsValue;
use worker::{console_error, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response, ResponseBody, Result};

use super::{refusal, Origin, Target};
use crate::core::decision::problem;

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

fn copy_headers(from: &Headers) -> Result<Headers> {
    let to = Headers::new();
    for (name, value) in from.entries() {
        if !HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            to.append(&name, &value)?;
        }
    }
    Ok(to)
}

/// Sends the request on with exactly the path the route rules matched (`Target::path`).
pub(super) async fn forward(req: Request, origin: &Origin, to: &Target<'_>, added: &[(&'static str, String)]) -> Result<Response> {
    let base = match origin {
        Origin::Demo => return demo(&req, &to.path.forward, added),
        Origin::Url(base) => base.as_str(),
        Origin::Passthrough => to.origin,
    };
    let target = format!("{base}{}{}", to.path.forward, to.query);
    let method = req.method();
    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(copy_headers(req.headers())?)
        .with_redirect(RequestRedirect::Manual);
    if !matches!(method, Method::Get | Method::Head) {
        init.with_body(req.inner().body().map(JsValue::from));
    }
    let outgoing = Request::new_with_init(&target, &init)?;
    let answer = match Fetch::Request(outgoing).send().await {
        Ok(r) => r,
        Err(e) => {
            console_error!("edge-limiter: origin request failed: {e}");
            let detail = "The origin server could not be reached or failed to answer.";
            return refusal(problem(502, "Bad Gateway", detail, "origin-unreachable"), None);
        }
    };
    // Fetched responses have immutable headers: build a new response around the same body.
    let status = answer.status_code();
    let headers = copy_headers(answer.headers())?;
    for (name, value) in added {
        headers.set(name, value)?;
    }
    let body = answer.body().clone();
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
        "method": req.method().to_string(),
        "path": path,
        "note": "Set ORIGIN_URL to put the limiter in front of your own service.",
    });
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    for (name, value) in added {
        headers.set(name, value)?;
    }
    Ok(Response::builder().with_headers(headers).fixed(body.to_string().into_bytes()))
}
