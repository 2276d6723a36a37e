//! An edge rate limiter for Cloudflare Workers.
//!
//! `core` is pure and native-testable; `store` holds bucket state; `edge` (wasm32 only) is
//! the Worker: identify, limit, forward.

pub mod core;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod edge;

#[cfg(target_arch = "wasm32")]
#[worker::event(fetch)]
async fn fetch(req: worker::Request, env: worker::Env, ctx: worker::Context) -> worker::Result<worker::Response> {
    edge::handle(req, env, ctx).await
}
