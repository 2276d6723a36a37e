//! The operator's pages under the dashboard prefix (default `/__limiter/`), never limited:
//! the static files in `www/` through the Workers assets binding, and `status.json` (no
//! secrets; public in front of the demo origin, behind the admin token in front of a real
//! one). The admin API below `admin/` is `admin.rs`'s.

use worker::{Env, Method, Request, Response, Result};

use super::fields::Fields;
use super::guard;
use super::isolate::Isolate;
use super::respond;
use super::status::status;
use crate::core::decision::problem;

pub async fn serve(req: Request, fields: &Fields, env: &Env, iso: &Isolate, rest: &str, now: u64) -> Result<Response> {
    if !matches!(req.method(), Method::Get | Method::Head) {
        let detail = "The dashboard only answers GET.";
        return Ok(iso.answer(problem(405, "Method Not Allowed", detail, "method-not-allowed")).into());
    }
    if rest == "fleet.json" {
        // The whole deployment's last hour, under the same rule as status.json.
        if !iso.demo() {
            let what = "fleet.json (in front of a real origin)";
            if let Some(refused) = guard::admin_token(&req, fields, iso, what, now).await {
                return Ok(refused.into());
            }
        }
        return respond::json(200, &super::fleet::fleet_json(iso, now).await);
    }
    if rest == "status.json" {
        // Live counts and the policy in words: public only in front of the demo origin.
        if !iso.demo() {
            let what = "status.json (in front of a real origin)";
            if let Some(refused) = guard::admin_token(&req, fields, iso, what, now).await {
                return Ok(refused.into());
            }
        }
        return respond::json(200, &status(iso, now, false));
    }
    let Ok(assets) = env.assets("ASSETS") else {
        let detail = "The dashboard's files are not bound to this Worker: add an [assets] section with binding \"ASSETS\" and directory \"./www\" to wrangler.toml.";
        return Ok(iso.answer(problem(404, "Dashboard not deployed", detail, "dashboard-missing")).into());
    };
    let file = if rest.is_empty() { "index.html" } else { rest };
    // A request made from the URL alone: `Fetcher::fetch` would link the whole `RequestInit`
    // conversion (and serde-wasm-bindgen) for an init we never pass.
    let asset = web_sys::Request::new_with_str(&format!("https://assets.invalid/{file}"));
    match async { assets.fetch_request(Request::from(asset?)).await }.await {
        Ok(r) => Ok(r),
        Err(e) => {
            super::log::error("config_error", &format!("the assets binding failed: {e}"), serde_json::Value::Null);
            let detail = "The dashboard's files could not be read.";
            Ok(iso.answer(problem(502, "Bad Gateway", detail, "dashboard-missing")).into())
        }
    }
}
