//! An edge rate limiter for Cloudflare Workers.
//!
//! `core` is pure and native-testable; `store` holds bucket state; `edge` (wasm32 only) is
//! the Worker: identify, limit, forward; `runtime` (wasm32 only) its few calls into the
//! Workers runtime.

pub mod core;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod edge;
#[cfg(target_arch = "wasm32")]
mod runtime;

/// The Worker's entry, which worker-build's shim calls for every request. Written out, not
/// made by `#[worker::event(fetch)]`: that builds a `worker::Request` first, reading the
/// method, the URL, the headers and `cf` through the glue, which the limited path never uses
/// (it reads what it needs in one call); and it makes every request a promise run on the
/// microtask queue. Here a request is run at once, to its first wait: one that needs no I/O
/// (a cached denial, a refused credential, any answer of the limiter's own) is answered
/// without a promise between the wasm and the runtime, and only one that waits (on Upstash,
/// on the origin) becomes a promise, its task run as that request alone (`runtime::task`).
/// The clock is read here, once, for the request's decisions, tallies and task: each read is
/// a crossing into the runtime.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn fetch(req: web_sys::Request, env: worker::Env, ctx: worker::worker_sys::Context) -> wasm_bindgen::JsValue {
    let now = js_sys::Date::now() as u64;
    runtime::task::run(now, async move {
        match edge::handle(req, env, worker::Context::new(ctx), now).await {
            Ok(reply) => wasm_bindgen::JsValue::from(reply),
            Err(e) => {
                worker::console_error!(
                    "{}",
                    serde_json::json!({ "source": "edge-limiter", "event": "internal_error", "level": "error", "message": e.to_string() })
                );
                runtime::answer(500, "Content-Type\ntext/plain", "INTERNAL SERVER ERROR").into()
            }
        }
    })
}
