//! The floor of the benchmark: a Rust Worker that forwards every request to `ORIGIN_URL`
//! and returns the origin's answer, with no identity, no limits and no store. With
//! `ANSWER_429` set it answers every request with a fixed 429 instead: the floor of a Rust
//! Worker that makes no subrequest, beside the limiter's deny-cache case.

use worker::{event, Context, Env, Fetch, Request, RequestInit, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    if env.var("ANSWER_429").is_ok() {
        return Ok(Response::error("Too Many Requests", 429)?);
    }
    let origin = env.var("ORIGIN_URL")?.to_string();
    let url = req.url()?;
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    let target = format!("{}{}{query}", origin.trim_end_matches('/'), url.path());
    let mut init = RequestInit::new();
    init.with_method(req.method()).with_headers(req.headers().clone());
    Fetch::Request(Request::new_with_init(&target, &init)?).send().await
}
