//! A floor of the benchmark beside bench/bare: a Rust Worker entered the way the limiter is
//! (src/lib.rs: a `#[wasm_bindgen] fetch` taking the runtime's own Request, worker-build's
//! shim replaced by scripts/entry.mjs's plain entry), doing the least a wasm forwarder can:
//! one read of the URL into the wasm, the target built there, and one call out to a
//! JavaScript `fetch` whose promise goes back to the runtime as it is. With `ANSWER_429` set
//! it answers a fixed 429 built in JavaScript. Beside the JavaScript floor (bench/bare-js),
//! it shows what being entered as wasm costs per request, apart from anything the limiter
//! does; beside bench/bare, what the `worker` crate's entry and types cost.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen(inline_js = "
export function forwardTo(request, url) {
  return fetch(url, { method: request.method, headers: request.headers });
}
export function tooMany() {
  return new Response('Too Many Requests', { status: 429 });
}
export function envText(env, name) {
  const v = env[name];
  return typeof v === 'string' ? v : undefined;
}
")]
extern "C" {
    #[wasm_bindgen(js_name = forwardTo)]
    fn forward_to(request: &web_sys::Request, url: &str) -> JsValue;
    #[wasm_bindgen(js_name = tooMany)]
    fn too_many() -> JsValue;
    #[wasm_bindgen(js_name = envText)]
    fn env_text(env: &JsValue, name: &str) -> Option<String>;
}

#[wasm_bindgen]
pub fn fetch(req: web_sys::Request, env: worker::Env, _ctx: worker::worker_sys::Context) -> JsValue {
    let env: &JsValue = env.as_ref();
    if env_text(env, "ANSWER_429").is_some() {
        return too_many();
    }
    let origin = env_text(env, "ORIGIN_URL").unwrap_or_default();
    let url = req.url();
    // The path and query: what follows the scheme's `//` and the host.
    let rest = url.split_once("//").map_or("", |(_, r)| r.find('/').map_or("", |i| &r[i..]));
    let target = format!("{}{rest}", origin.trim_end_matches('/'));
    forward_to(&req, &target)
}
