//! The leaf of the Worker: core answers and plain values made into responses (the runtime's
//! own for the limited path, through `runtime`; `worker::Response`s for the dashboard and the
//! admin API). It knows no state but its jitter's generator and calls nothing of the
//! Worker's, so every other module may use it.

use serde_json::Value;
use worker::{Headers, Response, Result};

use crate::core::cors::{own_answer_fields, Cors};
use crate::core::decision::{Refusal, PROBLEM_DOCS};
use crate::runtime;

/// Header fields from name-value pairs: the one place a list of fields becomes `Headers`.
pub fn fields<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Headers> {
    let headers = Headers::new();
    for (name, value) in pairs {
        headers.set(name, value)?;
    }
    Ok(headers)
}

/// Renders a core refusal (429, 401, 500...), in one call into the runtime. The core links
/// its problem types to the docs page at the default dashboard path; `docs` is where that
/// page is instead, when `DASHBOARD_PATH` moved it (or `about:blank` when the dashboard is
/// off).
pub fn render(r: Refusal, docs: Option<&str>) -> web_sys::Response {
    let body = match docs {
        Some(docs) => r.body.replace(PROBLEM_DOCS, docs),
        None => r.body,
    };
    let fixed = [("Content-Type", r.content_type), ("Cache-Control", "no-store")];
    let added = r.headers.iter().map(|(name, value)| (*name, value.as_str()));
    runtime::answer(r.status, &runtime::field_list(fixed.into_iter().chain(added)), &body)
}

/// A JSON answer of the dashboard or the admin API, never cached.
pub fn json(status: u16, body: &Value) -> Result<Response> {
    let headers = fields([("Content-Type", "application/json"), ("Cache-Control", "no-store")])?;
    Ok(Response::builder().with_status(status).with_headers(headers).fixed(body.to_string().into_bytes()))
}

/// A permanent redirect (the dashboard's prefix without its last slash).
pub fn redirect(location: &str) -> Result<Response> {
    Ok(Response::empty()?.with_status(308).with_headers(fields([("Location", location)])?))
}

/// What the Worker gives the runtime for a request: the limiter's own answer (which takes
/// the policy's CORS fields), an answer that is complete as it is (the origin's, the
/// dashboard's), or the promise of the origin's, which `runtime.js` completes (its CORS
/// fields included). The type says which, so no field has to mark it.
pub enum Reply {
    Own(web_sys::Response),
    Done(web_sys::Response),
    Later(js_sys::Promise),
}

impl From<Reply> for wasm_bindgen::JsValue {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Own(response) | Reply::Done(response) => response.into(),
            Reply::Later(promise) => promise.into(),
        }
    }
}

/// The limiter's own answers get the CORS fields the policy allows for the request's
/// `Origin` (none without one: then nothing crosses into the runtime here).
pub fn with_cors(reply: Reply, cors: &Cors, origin: Option<&str>) -> Result<Reply> {
    if let (Reply::Own(response), Some(_)) = (&reply, origin) {
        let headers = response.headers();
        for (name, value) in own_answer_fields(cors, origin) {
            headers.set(name, &value)?;
        }
    }
    Ok(reply)
}

/// Up to 250 ms added to a 429's wait, so clients denied together do not all come back in
/// the same instant. Spreading needs no secret, only variety: an xorshift generator seeded
/// once per isolate from the runtime's random source, not a call into the runtime per 429.
pub fn jitter_ms() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            u64::from_le_bytes(b) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 56) * 250 / 255
    })
}
