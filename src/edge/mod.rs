#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
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
mod relay;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::{console_error, console_log, Env, Headers, Request, Response, Result};

use crate::core::algorithm::{Algorithm, Decision};
use crate::core::cors::{exposed_with_ours, is_preflight, own_answer_fields, Cors, DEFAULT_CORS};
use crate::core::decision::{
    ceil_secs, prefers_html, problem, rate_limit_headers, too_many_requests, unauthorized, Refusal, PROBLEM_DOCS,
};
use crate::core::identity::{
    failure_subject, identify, presents_credential, subject_hash, wide_subject, CallerKind, RequestFacts,
    DEMO_KEY_DIGESTS,
};
use crate::core::path::{normalize, split_url, NormalPath, PathError, PathOptions};
use crate::core::policy::{Plan, Policy, Tier, TierId, DEFAULT_STORE, EXAMPLE_POLICY};
use crate::store::deny_cache::DenyCache;
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

/// Where a request goes, parsed once: the origin it was sent to (`https://host`), its
/// normalised path, and its query as sent (`?a=1`, or empty).
struct Target<'a> {
    origin: &'a str,
    path: NormalPath,
    query: &'a str,
}

/// A tier's limits laid out once, as the stores take them.
struct TierLimits {
    algorithms: Vec<Algorithm>,
    names: Vec<String>,
}

impl TierLimits {
    fn of(tier: &Tier) -> TierLimits {
        TierLimits {
            algorithms: tier.limits.iter().map(|l| l.algorithm).collect(),
            names: tier.limits.iter().map(|l| l.name.clone()).collect(),
        }
    }

    fn request<'a>(&'a self, tier: &'a Tier, hash: &'a str, now: u64, cost: u64) -> CheckRequest<'a> {
        CheckRequest {
            tier: &tier.name,
            limits: &self.algorithms,
            limit_names: &self.names,
            subject_hash: hash,
            now,
            cost,
        }
    }
}

/// Shortest `ADMIN_TOKEN` accepted: a shorter one could be guessed, so the API stays off.
const MIN_ADMIN_TOKEN: usize = 32;

/// What one isolate keeps between requests. Read from the environment once.
struct Isolate {
    policy: std::result::Result<Policy, String>,
    /// The policy as written (for the admin API).
    policy_text: String,
    /// Where the dashboard and admin API live (`DASHBOARD_PATH`), or `None` when off.
    dashboard_prefix: Option<String>,
    /// Where the problem types' docs page is when DASHBOARD_PATH moves it (`about:blank`
    /// when the dashboard is off); `None` at the default `/__limiter/`.
    docs_moved: Option<String>,
    /// `Ok(token)` when the admin API is on, else why it is off.
    admin_token: std::result::Result<String, &'static str>,
    started_at: u64,
    tiers: Vec<TierLimits>,
    /// The limits of `identity.auth_failures`, laid out like a tier's.
    auth_limits: TierLimits,
    /// The limits of `cors.preflight_limits`.
    preflight_limits: TierLimits,
    /// The limits of `identity.client_ip.ipv6_wide`, when the policy casts that net.
    wide_limits: Option<TierLimits>,
    /// Addresses that have used up their failed-credential limits, until when: their
    /// credentials are refused unjudged, so a guesser learns nothing from a right guess.
    lockouts: DenyCache,
    origin: Origin,
    jwt_secret: Option<Vec<u8>>,
    store: Hybrid<UpstashStore<FetchTransport>>,
    allowed: Cell<u64>,
    denied: Cell<u64>,
}

impl Isolate {
    /// A check of `cost` units against the limits of tier `tier_id`, for one subject digest.
    fn check_request<'a>(
        &'a self,
        policy: &'a Policy,
        tier_id: TierId,
        hash: &'a str,
        now: u64,
        cost: u64,
    ) -> Option<(&'a Tier, CheckRequest<'a>)> {
        // Tier ids come from the policy this isolate laid out, so both lookups succeed; an
        // id from elsewhere is `None`, never a panic.
        let tier = policy.tier(tier_id)?;
        let at = policy.tiers.iter().position(|t| std::ptr::eq(t, tier))?;
        Some((tier, self.tiers.get(at)?.request(tier, hash, now, cost)))
    }

    /// The dashboard's data is public only in front of the demo origin.
    fn demo(&self) -> bool {
        matches!(self.origin, Origin::Demo)
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
    let origin = match env_text(env, "ORIGIN_URL") {
        Some(u) if u.trim() == "demo" => Origin::Demo,
        Some(u) => Origin::Url(u.trim().trim_end_matches('/').to_string()),
        None => Origin::Passthrough,
    };
    let demo = matches!(origin, Origin::Demo);
    let policy_text = env_text(env, "POLICY").unwrap_or_else(|| {
        if demo {
            console_log!("edge-limiter: no POLICY set; running the built-in example policy");
        } else {
            console_error!(
                "edge-limiter: no POLICY set: the built-in demo policy is running in front of a real origin; \
                 set POLICY to your own (docs/policy.md)"
            );
        }
        EXAMPLE_POLICY.to_string()
    });
    let mut policy = Policy::parse(&policy_text).map_err(|e| e.to_string());
    if let (Ok(p), false) = (&mut policy, demo) {
        // The demo keys are published: in front of a real origin they would be a free pass.
        if p.drop_keys(&DEMO_KEY_DIGESTS) > 0 {
            console_error!(
                "edge-limiter: the policy lists the published demo API keys, which work only with ORIGIN_URL = \"demo\"; \
                 here they are unknown keys. Replace them with your own key digests."
            );
        }
    }
    let none = || TierLimits { algorithms: Vec::new(), names: Vec::new() };
    let (tiers, auth_limits, preflight_limits, wide_limits, store) = match &policy {
        Ok(p) => {
            let tiers = p.tiers.iter().map(TierLimits::of).collect();
            let wide = p.identity.client_ip.ipv6_wide.as_ref().map(|w| TierLimits::of(&w.tier));
            let (auth, preflights) = (TierLimits::of(&p.identity.auth_failures), TierLimits::of(&p.preflights));
            (tiers, auth, preflights, wide, Hybrid::new(upstash(env, p), &p.store))
        }
        Err(e) => {
            console_error!("edge-limiter: the policy is invalid, every request will get a 500 until it is fixed: {e}");
            (Vec::new(), none(), none(), None, Hybrid::new(None, &DEFAULT_STORE))
        }
    };
    let admin_token = match env_text(env, "ADMIN_TOKEN") {
        None => Err("The admin API is off: set the secret ADMIN_TOKEN to turn it on."),
        Some(t) if t.trim().len() < MIN_ADMIN_TOKEN => {
            console_error!(
                "edge-limiter: configuration error: ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN} characters, \
                 so the admin API stays off (make one with `openssl rand -hex 32`)"
            );
            Err("The admin API is off: ADMIN_TOKEN is shorter than 32 characters.")
        }
        Some(t) => Ok(t.trim().to_string()),
    };
    let jwt_secret = env_text(env, "JWT_SECRET").map(String::into_bytes);
    if policy.as_ref().is_ok_and(|p| p.identity.jwt.is_some()) && jwt_secret.is_none() {
        console_error!(
            "edge-limiter: the policy accepts JWTs but JWT_SECRET is not set: no bearer token is judged; \
             they pass to the origin and their callers are limited by address"
        );
    }
    let dashboard_prefix = dashboard::prefix(env_text(env, "DASHBOARD_PATH").as_deref());
    let max_keys = policy.as_ref().map_or(DEFAULT_STORE.memory_max_keys, |p| p.store.memory_max_keys);
    let iso = Rc::new(Isolate {
        policy,
        policy_text,
        docs_moved: match &dashboard_prefix {
            Some(p) if format!("{p}docs.html") == PROBLEM_DOCS => None,
            Some(p) => Some(format!("{p}docs.html")),
            None => Some("about:blank".to_string()),
        },
        dashboard_prefix,
        admin_token,
        started_at: js_sys::Date::now() as u64,
        tiers,
        auth_limits,
        preflight_limits,
        wide_limits,
        lockouts: DenyCache::new(max_keys),
        origin,
        jwt_secret,
        store,
        allowed: Cell::new(0),
        denied: Cell::new(0),
    });
    ISOLATE.with(|i| *i.borrow_mut() = Some(iso.clone()));
    iso
}

/// The request fields identity reads, read once.
struct Fields {
    client_ip: Option<String>,
    forwarded_for: Option<String>,
    api_key: Option<String>,
    authorization: Option<String>,
    accept: Option<String>,
}

impl Fields {
    fn read(headers: &Headers, policy: &Policy) -> Fields {
        let text = |name: &str| headers.get(name).ok().flatten();
        Fields {
            client_ip: text(&policy.identity.client_ip.header),
            forwarded_for: text("x-forwarded-for"),
            api_key: policy.identity.api_key.as_ref().and_then(|k| text(&k.header)),
            authorization: text("authorization"),
            accept: text("accept"),
        }
    }

    fn facts(&self, now: u64) -> RequestFacts<'_> {
        RequestFacts {
            client_ip: self.client_ip.as_deref(),
            forwarded_for: self.forwarded_for.as_deref(),
            api_key: self.api_key.as_deref(),
            authorization: self.authorization.as_deref(),
            now_s: now / 1000,
        }
    }

    fn html(&self) -> bool {
        self.accept.as_deref().is_some_and(prefers_html)
    }
}

/// Before a credential is judged: an address that has used up its failed-credential limits
/// gets 429 whatever it presents, so a right guess looks like a wrong one until the wait
/// is over. Per isolate (each learns from its first failure there).
fn locked_out(iso: &Isolate, policy: &Policy, address: &str, now: u64, html: bool) -> Option<Result<Response>> {
    let hash = subject_hash(address);
    let key = iso.auth_limits.request(&policy.identity.auth_failures, &hash, now, 1).subject_key();
    let decision = iso.lockouts.lookup(&key, now, 1)?;
    iso.denied.set(iso.denied.get() + 1);
    let tier = &policy.identity.auth_failures;
    Some(refusal(too_many_requests(tier, &decision, policy.headers, html, jitter_ms()), None))
}

/// A credential of ours failed (an unknown API key, a bad JWT, a wrong admin token): it
/// costs the caller's address one unit of `identity.auth_failures`, through the same store
/// as every limit. Within them the answer is `unauthorized` (401); past them, 429 with
/// `Retry-After`, and the address is locked out in this isolate until then.
async fn failed_credential(
    iso: &Isolate,
    policy: &Policy,
    address: &str,
    now: u64,
    html: bool,
    unauthorized: Refusal,
) -> Result<Response> {
    let tier = &policy.identity.auth_failures;
    let hash = subject_hash(address);
    let request = iso.auth_limits.request(tier, &hash, now, 1);
    let verdict = iso.store.check(&request).await;
    log_notes(&verdict.notes);
    match verdict.decision {
        Ok(d) if d.allowed() => {
            let mut r = unauthorized;
            r.headers.extend(rate_limit_headers(tier, &d, policy.headers));
            refusal(r, Some(verdict.backend))
        }
        Ok(d) => {
            iso.lockouts.remember(&request.subject_key(), now, &d);
            iso.denied.set(iso.denied.get() + 1);
            refusal(too_many_requests(tier, &d, policy.headers, html, jitter_ms()), Some(verdict.backend))
        }
        // The store is failing and the policy says closed: the 401 stands, unconsumed.
        Err(_) => refusal(unauthorized, Some(verdict.backend)),
    }
}

fn log_notes(notes: &[Note]) {
    for note in notes {
        match note {
            Note::Error(m) => console_error!("edge-limiter: {m}"),
            Note::Info(m) => console_log!("edge-limiter: {m}"),
        }
    }
}

pub async fn handle(req: Request, env: Env) -> Result<Response> {
    let iso = isolate(&env);
    // CORS fields for the limiter's own answers: the policy's, or the default while the
    // policy is broken.
    let origin = req.headers().get("origin").ok().flatten();
    let cors = iso.policy.as_ref().map_or(&DEFAULT_CORS, |p| &p.cors);
    // The path is parsed once: the dashboard, the route rules and the origin all get this.
    let url = req.inner().url();
    let options = iso.policy.as_ref().map_or_else(|_| PathOptions::default(), |p| p.paths);
    let target =
        match split_url(&url).ok_or(PathError::NotOriginForm).and_then(|t| Ok((t, normalize(t.path, &options)?))) {
            Ok((t, path)) => Target { origin: t.origin, path, query: t.query },
            Err(e) => {
                let detail = format!("The request path was refused: {e}.");
                let response = refusal(problem(400, "Bad Request", &detail, "invalid-path"), None)?;
                return with_cors(response, cors, origin.as_deref());
            }
        };
    let path = target.path.forward.as_str();
    if let Some(prefix) = &iso.dashboard_prefix {
        // Exact prefix match on the normalised path: `..` is resolved and `%2F` refused, so
        // nothing reaches these pages by another spelling.
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            // No CORS here: no page on another origin may read the admin API.
            let response = dashboard::serve(req, &env, &iso, rest).await?;
            // (Only ours carry the mark; the assets binding's answers have immutable headers.)
            if response.headers().has(OWN_ANSWER)? {
                response.headers().delete(OWN_ANSWER)?;
            }
            return Ok(response);
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
            let response = refusal(problem(500, "Rate limiter misconfigured", &detail, "invalid-policy"), None)?;
            return with_cors(response, cors, origin.as_deref());
        }
    };
    let fields = Fields::read(req.headers(), policy);
    // As sent: extension methods (PROPFIND, PURGE...) keep their names for the route rules.
    let method = req.inner().method();
    let asks = || req.headers().get("access-control-request-method").ok().flatten();
    let preflight = is_preflight(&method, origin.as_deref(), asks);
    if preflight && !policy.cors.charge_preflight {
        // The browser asks the app whether it may: the app's answer, not charged to the
        // caller's tier, but counted on the preflights' own limits so OPTIONS is no way
        // around them.
        let now = js_sys::Date::now() as u64;
        let hash = subject_hash(&failure_subject(&policy.identity.client_ip, &fields.facts(now)));
        let request = iso.preflight_limits.request(&policy.preflights, &hash, now, 1);
        if let Err(refused) = checked(&iso, policy, &policy.preflights, &request, false).await {
            return with_cors(refused?, cors, origin.as_deref());
        }
        return proxy::forward(req, &iso.origin, &target, fields.client_ip.as_deref(), None, &[]).await;
    }
    let response = protect(req, &iso, policy, &target, &fields, &method).await?;
    with_cors(response, cors, origin.as_deref())
}

/// The request's way through the limits: identify, plan, check, then forward or refuse.
async fn protect(
    req: Request,
    iso: &Isolate,
    policy: &Policy,
    target: &Target<'_>,
    fields: &Fields,
    method: &str,
) -> Result<Response> {
    let now = js_sys::Date::now() as u64;
    let facts = fields.facts(now);
    let address = failure_subject(&policy.identity.client_ip, &facts);
    if presents_credential(policy, &facts, iso.jwt_secret.is_some()) {
        if let Some(r) = locked_out(iso, policy, &address, now, fields.html()) {
            return r;
        }
    }
    let caller = match identify(policy, &facts, iso.jwt_secret.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let r = unauthorized(&e.to_string(), "invalid-credential");
            return failed_credential(iso, policy, &address, now, fields.html(), r).await;
        }
    };
    // A WebSocket on a route that limits its messages is relayed, and counted, by the Worker.
    let rule = policy.rule(method, &target.path.matched, caller.tier);
    let messages = rule.and_then(|r| r.websocket_messages);
    let (tier_id, cost) = match Policy::plan_of(rule, caller.tier) {
        Plan::Exempt => {
            return proxy::forward(req, &iso.origin, target, fields.client_ip.as_deref(), messages, &[]).await
        }
        Plan::Check { tier, cost } => (tier, cost),
    };
    let hash = subject_hash(&caller.subject);
    let Some((mut tier, request)) = iso.check_request(policy, tier_id, &hash, now, cost) else {
        return refusal(problem(500, "Rate limiter misconfigured", "No such tier.", "invalid-policy"), None);
    };
    let (mut decision, mut backend) = match checked(iso, policy, tier, &request, fields.html()).await {
        Ok(answer) => answer,
        Err(refused) => return refused,
    };
    // The wider IPv6 net, after the caller's own limits admitted the request: a second
    // check only for anonymous IPv6 callers of a policy that casts it.
    let wide = policy.identity.client_ip.ipv6_wide.as_ref().zip(iso.wide_limits.as_ref());
    if let (Some((net, limits)), CallerKind::Anonymous) = (wide, caller.kind) {
        if let Some(subject) = wide_subject(&policy.identity.client_ip, &facts) {
            let wide_hash = subject_hash(&subject);
            let request = limits.request(&net.tier, &wide_hash, now, cost);
            let (d, b) = match checked(iso, policy, &net.tier, &request, fields.html()).await {
                Ok(answer) => answer,
                Err(refused) => return refused,
            };
            // The headers tell the tighter of the two: never more than the caller can get.
            if d.binding_status().remaining < decision.binding_status().remaining {
                (tier, decision, backend) = (&net.tier, d, b);
            }
        }
    }
    iso.allowed.set(iso.allowed.get() + 1);
    let mut added = rate_limit_headers(tier, &decision, policy.headers);
    added.push((BACKEND_HEADER, backend.as_str().to_string()));
    proxy::forward(req, &iso.origin, target, fields.client_ip.as_deref(), messages, &added).await
}

/// Marks the limiter's own answers (set by [`refusal`], removed by [`with_cors`]; dropped from
/// whatever an origin sends), so CORS fields go only where the limiter answered.
pub(super) const OWN_ANSWER: &str = "x-edge-limiter-own-answer";

/// The limiter's own answers get the CORS fields the policy allows; the origin's answers
/// keep its own, with the limiter's response fields exposed too when it allows a read.
fn with_cors(response: Response, cors: &Cors, origin: Option<&str>) -> Result<Response> {
    let headers = response.headers();
    if headers.has(OWN_ANSWER)? {
        headers.delete(OWN_ANSWER)?;
        for (name, value) in own_answer_fields(cors, origin) {
            headers.set(name, &value)?;
        }
    } else if origin.is_some() && headers.has("access-control-allow-origin")? {
        if let Some(list) = exposed_with_ours(headers.get("access-control-expose-headers")?.as_deref()) {
            headers.set("Access-Control-Expose-Headers", &list)?;
        }
    }
    Ok(response)
}

/// Checks one request against one set of limits: the decision when it is allowed, else
/// the answer to send (429, or 429 `store-unavailable` when the store fails and the policy
/// says closed).
async fn checked(
    iso: &Isolate,
    policy: &Policy,
    tier: &Tier,
    request: &CheckRequest<'_>,
    html: bool,
) -> std::result::Result<(Decision, Backend), Result<Response>> {
    let verdict = iso.store.check(request).await;
    log_notes(&verdict.notes);
    let backend = verdict.backend;
    let decision = match verdict.decision {
        Ok(d) => d,
        Err(_) => {
            iso.denied.set(iso.denied.get() + 1);
            let detail = "The rate limiter cannot reach its store and is configured to refuse requests until it can.";
            let mut r = problem(429, "Rate limiter store unavailable", detail, "store-unavailable");
            r.headers.push(("Retry-After", ceil_secs(policy.store.breaker_cooldown_ms).max(1).to_string()));
            return Err(refusal(r, Some(backend)));
        }
    };
    if !decision.allowed() {
        iso.denied.set(iso.denied.get() + 1);
        return Err(refusal(too_many_requests(tier, &decision, policy.headers, html, jitter_ms()), Some(backend)));
    }
    Ok((decision, backend))
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
    // Problem types point at the docs page under DASHBOARD_PATH; the core writes the default
    // one, so a custom path is put in here (`None` from `docs_moved` for the default).
    let body = match ISOLATE.with(|i| i.borrow().as_ref().and_then(|iso| iso.docs_moved.clone())) {
        Some(docs) => r.body.replace(PROBLEM_DOCS, &docs),
        None => r.body,
    };
    let headers = Headers::new();
    headers.set(OWN_ANSWER, "1")?;
    headers.set("Content-Type", r.content_type)?;
    headers.set("Cache-Control", "no-store")?;
    for (name, value) in &r.headers {
        headers.set(name, value)?;
    }
    if let Some(b) = backend {
        headers.set(BACKEND_HEADER, b.as_str())?;
    }
    Ok(Response::builder().with_status(r.status).with_headers(headers).fixed(body.into_bytes()))
}
