//! The Worker's request path: identify the caller, apply the route rules, check the
//! tier's limits, then forward to the origin or answer 429. Everything that can be decided
//! without the runtime is decided in `core`; this module only reads the request, keeps the
//! isolate's state, and turns core answers into `worker::Response`s.
//!
//! Nothing on this path may panic: a panic poisons the isolate and turns every later
//! request into an opaque 500. Errors become problem+json answers instead.

mod admin;
mod dashboard;
mod proxy;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::{console_error, console_log, Env, Headers, Request, Response, Result};

use crate::core::algorithm::Algorithm;
use crate::core::decision::{ceil_secs, prefers_html, problem, rate_limit_headers, too_many_requests, Refusal};
use crate::core::identity::{identify, subject_hash, IdentityError, RequestFacts};
use crate::core::policy::{Plan, Policy, Tier, TierId, DEFAULT_STORE};
use crate::store::hybrid::{Hybrid, Note};
use crate::store::upstash::{Endpoint, FetchTransport, UpstashStore};
use crate::store::{Backend, CheckRequest};

/// Response field naming the backend that decided (`store::Backend::as_str`): `upstash`,
/// `memory`, `memory-fallback`, `deny-cache`, `fail-open` or `fail-closed`.
pub const BACKEND_HEADER: &str = "X-Limiter-Backend";

/// Where allowed requests go.
enum Origin {
    /// `ORIGIN_URL` set: requests are re-addressed to it, path and query kept.
    Url(String),
    /// `ORIGIN_URL = "demo"`: a small built-in origin, for trying the limiter locally.
    Demo,
    /// No `ORIGIN_URL`: the request goes on to the URL it was sent to, as on a Workers route.
    Passthrough,
}

/// A tier's limits laid out once, as the stores take them.
struct TierLimits {
    algorithms: Vec<Algorithm>,
    names: Vec<String>,
}

/// What one isolate keeps between requests. Read from the environment once.
struct Isolate {
    policy: std::result::Result<Policy, String>,
    /// The policy as written (for the admin API).
    policy_text: String,
    /// Where the dashboard and admin API live (`DASHBOARD_PATH`), or `None` when off.
    dashboard_prefix: Option<String>,
    admin_token: Option<String>,
    started_at: u64,
    tiers: Vec<TierLimits>,
    origin: Origin,
    jwt_secret: Option<Vec<u8>>,
    store: Hybrid<UpstashStore<FetchTransport>>,
    allowed: Cell<u64>,
    denied: Cell<u64>,
    logged_secret_missing: Cell<bool>,
}

impl Isolate {
    /// A check of `cost` units against the limits of tier `tier_id`, for one subject digest.
    fn check_request<'a>(&'a self, policy: &'a Policy, tier_id: TierId, hash: &'a str, now: u64, cost: u64) -> (&'a Tier, CheckRequest<'a>) {
        let (tier, limits) = (&policy.tiers[tier_id], &self.tiers[tier_id]);
        let request = CheckRequest {
            tier: &tier.name,
            limits: &limits.algorithms,
            limit_names: &limits.names,
            subject_hash: hash,
            now,
            cost,
        };
        (tier, request)
    }
}

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
}

fn env_text(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string()).filter(|s| !s.trim().is_empty())
}

/// The Upstash store, when both settings are present and sound; otherwise memory, said once.
fn upstash(env: &Env, policy: &Policy) -> Option<UpstashStore<FetchTransport>> {
    let url = env_text(env, "UPSTASH_REDIS_REST_URL");
    let token = env_text(env, "UPSTASH_REDIS_REST_TOKEN");
    match Endpoint::from_settings(url.as_deref(), token.as_deref()) {
        Ok(Some(endpoint)) => {
            console_log!("edge-limiter: store is Upstash at {} (timeout {} ms)", endpoint.url, policy.store.timeout_ms);
            let transport = FetchTransport { endpoint, timeout_ms: policy.store.timeout_ms };
            Some(UpstashStore::new(transport, &policy.key_prefix))
        }
        Ok(None) => {
            console_log!("edge-limiter: store is the isolate's memory (no Upstash configured)");
            None
        }
        Err(e) => {
            console_error!("edge-limiter: configuration error, running on the isolate's memory: {e}");
            None
        }
    }
}

fn isolate(env: &Env) -> Rc<Isolate> {
    if let Some(iso) = ISOLATE.with(|i| i.borrow().clone()) {
        return iso;
    }
    let policy_text = env_text(env, "POLICY").unwrap_or_else(|| {
        console_log!("edge-limiter: no POLICY set; running the built-in example policy");
        crate::core::policy::EXAMPLE_POLICY.to_string()
    });
    let policy = Policy::parse(&policy_text).map_err(|e| e.to_string());
    let (tiers, store) = match &policy {
        Ok(p) => {
            let tiers = p
                .tiers
                .iter()
                .map(|t| TierLimits {
                    algorithms: t.limits.iter().map(|l| l.algorithm).collect(),
                    names: t.limits.iter().map(|l| l.name.clone()).collect(),
                })
                .collect();
            (tiers, Hybrid::new(upstash(env, p), &p.store))
        }
        Err(e) => {
            console_error!("edge-limiter: the policy is invalid, every request will get a 500 until it is fixed: {e}");
            (Vec::new(), Hybrid::new(None, &DEFAULT_STORE))
        }
    };
    let origin = match env_text(env, "ORIGIN_URL") {
        Some(u) if u.trim() == "demo" => Origin::Demo,
        Some(u) => Origin::Url(u.trim().trim_end_matches('/').to_string()),
        None => Origin::Passthrough,
    };
    let iso = Rc::new(Isolate {
        policy,
        policy_text,
        dashboard_prefix: dashboard::prefix(env_text(env, "DASHBOARD_PATH").as_deref()),
        admin_token: env_text(env, "ADMIN_TOKEN"),
        started_at: js_sys::Date::now() as u64,
        tiers,
        origin,
        jwt_secret: env_text(env, "JWT_SECRET").map(String::into_bytes),
        store,
        allowed: Cell::new(0),
        denied: Cell::new(0),
        logged_secret_missing: Cell::new(false),
    });
    ISOLATE.with(|i| *i.borrow_mut() = Some(iso.clone()));
    iso
}

pub async fn handle(req: Request, env: Env) -> Result<Response> {
    let iso = isolate(&env);
    let path = req.path();
    if let Some(prefix) = &iso.dashboard_prefix {
        // Exact prefix match on the decoded-once path the runtime gives: `..` is already
        // resolved, and `%2F` stays three characters, so neither reaches these pages.
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            return dashboard::serve(req, &env, &iso, rest).await;
        }
        if path == prefix.trim_end_matches('/') {
            let headers = Headers::new();
            headers.set("Location", prefix)?;
            return Ok(Response::empty()?.with_status(308).with_headers(headers));
        }
    }
    let policy = match &iso.policy {
        Ok(p) => p,
        Err(e) => {
            let detail = format!("The rate limiter's policy is invalid: {e}");
            return refusal(problem(500, "Rate limiter misconfigured", &detail, "invalid-policy"), None);
        }
    };
    let headers = req.headers();
    let text = |name: &str| headers.get(name).ok().flatten();
    let (client_ip, forwarded_for) = (text(&policy.identity.client_ip.header), text("x-forwarded-for"));
    let api_key = policy.identity.api_key.as_ref().and_then(|k| text(&k.header));
    let authorization = text("authorization");
    let now = js_sys::Date::now() as u64;
    let facts = RequestFacts {
        client_ip: client_ip.as_deref(),
        forwarded_for: forwarded_for.as_deref(),
        api_key: api_key.as_deref(),
        authorization: authorization.as_deref(),
        now_s: now / 1000,
    };
    let caller = match identify(policy, &facts, iso.jwt_secret.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            if e == IdentityError::TokenSecretMissing && !iso.logged_secret_missing.replace(true) {
                console_error!("edge-limiter: the policy accepts JWTs but JWT_SECRET is not set; bearer tokens get 401");
            }
            let mut r = problem(401, "Unauthorized", &e.to_string(), "invalid-credential");
            r.headers.push(("WWW-Authenticate", "Bearer".to_string()));
            return refusal(r, None);
        }
    };
    let method = req.method().to_string();
    let (tier_id, cost) = match policy.plan(&method, &path, caller.tier) {
        Plan::Exempt => return proxy::forward(req, &iso.origin, &[]).await,
        Plan::Check { tier, cost } => (tier, cost),
    };
    let hash = subject_hash(&caller.subject);
    let (tier, request) = iso.check_request(policy, tier_id, &hash, now, cost);
    let verdict = iso.store.check(&request).await;
    for note in &verdict.notes {
        match note {
            Note::Error(m) => console_error!("edge-limiter: {m}"),
            Note::Info(m) => console_log!("edge-limiter: {m}"),
        }
    }
    let backend = verdict.backend;
    let decision = match verdict.decision {
        Ok(d) => d,
        Err(_) => {
            iso.denied.set(iso.denied.get() + 1);
            let detail = "The rate limiter cannot reach its store and is configured to refuse requests until it can.";
            let mut r = problem(429, "Rate limiter store unavailable", detail, "store-unavailable");
            r.headers.push(("Retry-After", ceil_secs(policy.store.breaker_cooldown_ms).max(1).to_string()));
            return refusal(r, Some(backend));
        }
    };
    if !decision.allowed() {
        iso.denied.set(iso.denied.get() + 1);
        let html = text("accept").is_some_and(|a| prefers_html(&a));
        let r = too_many_requests(tier, &decision, policy.headers, html, jitter_ms());
        return refusal(r, Some(backend));
    }
    iso.allowed.set(iso.allowed.get() + 1);
    let mut added = rate_limit_headers(tier, &decision, policy.headers);
    added.push((BACKEND_HEADER, backend.as_str().to_string()));
    proxy::forward(req, &iso.origin, &added).await
}

/// Up to 250 ms, so clients denied together do not all come back in the same instant.
fn jitter_ms() -> u64 {
    let mut b = [0u8; 1];
    match getrandom::fill(&mut b) {
        Ok(()) => b[0] as u64 * 250 / 255,
        Err(_) => 0,
    }
}

/// Renders a core refusal (429, 401, 500...) as a response.
fn refusal(r: Refusal, backend: Option<Backend>) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", r.content_type)?;
    headers.set("Cache-Control", "no-store")?;
    for (name, value) in &r.headers {
        headers.set(name, value)?;
    }
    if let Some(b) = backend {
        headers.set(BACKEND_HEADER, b.as_str())?;
    }
    Ok(Response::builder().with_status(r.status).with_headers(headers).fixed(r.body.into_bytes()))
}
