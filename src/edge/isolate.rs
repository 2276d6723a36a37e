//! What one isolate keeps between requests, read from the environment once: the
//! configuration (the policy, or why there is none), the settings beside it, the store, and
//! the counts the dashboard shows.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::Env;

use super::controls::{self, Controls};
use super::log;
use super::respond;
use crate::core::cors::{Cors, DEFAULT_CORS};
use crate::core::decision::{LastDenied, Refusal, PROBLEM_DOCS};
use crate::core::fleet::{isolate_line, Event, Tally, FLUSH_EVERY_MS};
use crate::core::identity::DEMO_KEY_DIGESTS;
use crate::core::path::PathOptions;
use crate::core::policy::{Policy, StoreSettings, DEFAULT_STORE, EXAMPLE_POLICY};
use crate::core::subject::{digest_of, Subject, SubjectDigest};
use crate::store::breaker::BreakerState;
use crate::store::deny_cache::DenyCache;
use crate::store::hybrid::{Hybrid, Note, Verdict};
use crate::store::upstash::{Endpoint, FetchTransport, UpstashStore};
use crate::store::CheckRequest;

/// Where allowed requests go.
pub enum Origin {
    /// `ORIGIN_URL` set: requests are re-addressed to it, path and query kept.
    Url(String),
    /// `ORIGIN_URL = "demo"`: a small built-in origin, for trying the limiter locally.
    Demo,
    /// No `ORIGIN_URL`: the request goes on to the URL it was sent to, as on a Workers route.
    Passthrough,
}

/// The policy this isolate runs, or why it runs none: then every limited request is a 500
/// naming the fault, and the dashboard still answers. (One per isolate: its size is no cost.)
#[allow(clippy::large_enum_variant)]
pub enum Config {
    Ready {
        policy: Policy,
        /// The policy as written (for the admin API).
        written: String,
    },
    Broken(String),
}

/// Shortest `ADMIN_TOKEN` accepted: a shorter one could be guessed, so the API stays off.
const MIN_ADMIN_TOKEN: usize = 32;

pub struct Isolate {
    pub config: Config,
    pub origin: Origin,
    /// Where the dashboard and admin API live (`DASHBOARD_PATH`), or `None` when off.
    pub dashboard: Option<String>,
    /// Where the problem types' docs page is when DASHBOARD_PATH moves it (`about:blank`
    /// when the dashboard is off); `None` at the default `/__limiter/`.
    docs_moved: Option<String>,
    /// `Ok(token)` when the admin API is on, else why it is off.
    pub admin_token: std::result::Result<String, &'static str>,
    /// `Ok(token)` when the decision API for apps is on (`SERVICE_TOKEN`), else why it is off.
    pub service_token: std::result::Result<String, &'static str>,
    pub jwt_secret: Option<Vec<u8>>,
    pub store: Hybrid<UpstashStore<FetchTransport>>,
    /// Overrides and runtime lists set through the admin API, and where they live.
    pub controls: Controls,
    /// Addresses that have used up their failed-credential limits, until when: their
    /// credentials are refused unjudged, so a guesser learns nothing from a right guess.
    pub lockouts: DenyCache,
    pub started_at: u64,
    /// `TEST_GEO_HEADERS` is set: `X-Test-Country` and `X-Test-Asn` stand for `request.cf`'s
    /// country and ASN, which a local run lacks. For the end-to-end tests only: a client could
    /// claim any country with them, so it is never set in wrangler.toml.
    pub test_geo: bool,
    allowed: Cell<u64>,
    denied: Cell<u64>,
    blocked: Cell<u64>,
    allow_listed: Cell<u64>,
    shadow_denied: Cell<u64>,
    service: Cell<ServiceCounts>,
    delayed: Cell<u64>,
    /// The fleet view (`core::fleet`): this isolate's tallies since its last flush, its id
    /// and its policy's version; kept only when there is a sink to flush them to (the shared
    /// store, the Analytics Engine dataset).
    fleet: RefCell<Tally>,
    /// The fleet's second sink, a Workers Analytics Engine dataset bound as
    /// [`ANALYTICS_BINDING`]: each flush's counts as data points, with or without a store.
    pub analytics: Option<wasm_bindgen::JsValue>,
    pub fleet_id: String,
    pub policy_version: String,
    last_flush: Cell<u64>,
    /// The subject last checked and its digest: a flood comes from one subject, and its
    /// digest (a SHA-256) is then worked out once, not per request.
    last_digest: RefCell<Option<(Subject, SubjectDigest)>>,
    /// The 429 body last made, made again only when its figures change.
    pub last_denied: RefCell<LastDenied>,
    /// Requests held for a route's `max_delay`, per subject key: capped per subject and in all.
    holds: RefCell<HashMap<String, u32>>,
    /// Subjects whose shadow denial has been logged, so the log gets a line per subject and
    /// not per request; forgotten all at once when it reaches [`SHADOW_LOGGED_MAX`].
    shadow_logged: RefCell<HashSet<String>>,
    /// Subjects whose first denial has been logged (`subject_denied`), likewise bounded.
    denied_logged: RefCell<HashSet<String>>,
}

const SHADOW_LOGGED_MAX: usize = 10_000;

/// The binding name of the fleet view's optional Analytics Engine dataset (wrangler.toml's
/// `[[analytics_engine_datasets]]`).
pub const ANALYTICS_BINDING: &str = "FLEET_ANALYTICS";

/// One flush of the fleet tallies: the `fleet.lua` call's keys and arguments for the shared
/// store, and the data points (a JSON array) for the Analytics Engine dataset, each when the
/// Worker has that sink.
pub struct FleetFlush {
    pub script: Option<(Vec<String>, Vec<String>)>,
    pub points: Option<String>,
}

/// At most this many requests of one subject held at once for a route's `max_delay`, and
/// this many in the isolate: past them a request is refused as it would be without it.
pub const MAX_HOLDS_PER_SUBJECT: u32 = 4;
const MAX_HOLDS: usize = 1_000;

/// A request held for `max_delay`: its place is given back when it is dropped.
pub struct Hold<'a> {
    iso: &'a Isolate,
    key: String,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut holds = self.iso.holds.borrow_mut();
        if let Some(n) = holds.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                holds.remove(&self.key);
            }
        }
    }
}

/// What the decision API answered in this isolate.
#[derive(Clone, Copy, Default)]
pub struct ServiceCounts {
    pub checks: u64,
    /// Checks answered "not allowed" (or 503 when the store failed closed).
    pub denied: u64,
    pub refunds: u64,
}

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
}

impl Isolate {
    /// This isolate's state, made on its first request.
    pub fn get(env: &Env) -> Rc<Isolate> {
        if let Some(iso) = ISOLATE.with(|i| i.borrow().clone()) {
            return iso;
        }
        let iso = Rc::new(Isolate::from_env(env));
        ISOLATE.with(|i| *i.borrow_mut() = Some(iso.clone()));
        iso
    }

    /// This isolate's state, once a request has made it.
    pub fn current() -> Option<Rc<Isolate>> {
        ISOLATE.with(|i| i.borrow().clone())
    }

    fn from_env(env: &Env) -> Isolate {
        let origin = match env_text(env, "ORIGIN_URL") {
            Some(u) if u.trim() == "demo" => Origin::Demo,
            Some(u) => Origin::Url(u.trim().trim_end_matches('/').to_string()),
            None => Origin::Passthrough,
        };
        let config = configure(env, matches!(origin, Origin::Demo));
        let settings = match &config {
            Config::Ready { policy, .. } => &policy.store,
            Config::Broken(_) => &DEFAULT_STORE,
        };
        let store = Hybrid::new(config.policy().and_then(|p| upstash(env, p)), settings);
        let lockouts = DenyCache::new(settings.memory_max_keys);
        let controls =
            Controls::new(controls::source(env, store.has_primary()), config.policy(), settings.controls_refresh_ms);
        let jwt_secret = env_text(env, "JWT_SECRET").map(String::into_bytes);
        if config.policy().is_some_and(|p| p.identity.jwt.is_some()) && jwt_secret.is_none() {
            log::error(
                "config_error",
                "the policy accepts JWTs but JWT_SECRET is not set: no bearer token is judged; \
                 they pass to the origin and their callers are limited by address",
                json!({ "setting": "JWT_SECRET" }),
            );
        }
        let dashboard = dashboard_prefix(env_text(env, "DASHBOARD_PATH").as_deref());
        // The fleet view shows which policy each isolate runs: a digest of its text.
        let policy_version = match &config {
            Config::Ready { written, .. } => digest_of(written).get(..12).unwrap_or_default().to_string(),
            Config::Broken(_) => "invalid".to_string(),
        };
        Isolate {
            config,
            origin,
            docs_moved: match &dashboard {
                Some(p) if format!("{p}docs.html") == PROBLEM_DOCS => None,
                Some(p) => Some(format!("{p}docs.html")),
                None => Some("about:blank".to_string()),
            },
            dashboard,
            admin_token: admin_token(env),
            service_token: service_token(env),
            jwt_secret,
            store,
            controls,
            lockouts,
            started_at: js_sys::Date::now() as u64,
            test_geo: env_text(env, "TEST_GEO_HEADERS").is_some(),
            allowed: Cell::new(0),
            denied: Cell::new(0),
            blocked: Cell::new(0),
            allow_listed: Cell::new(0),
            shadow_denied: Cell::new(0),
            service: Cell::new(ServiceCounts::default()),
            delayed: Cell::new(0),
            fleet: RefCell::new(Tally::default()),
            analytics: crate::runtime::analytics_dataset(env, ANALYTICS_BINDING),
            fleet_id: random_id(),
            policy_version,
            last_flush: Cell::new(js_sys::Date::now() as u64),
            last_digest: RefCell::new(None),
            last_denied: RefCell::new(LastDenied::default()),
            holds: RefCell::new(HashMap::new()),
            shadow_logged: RefCell::new(HashSet::new()),
            denied_logged: RefCell::new(HashSet::new()),
        }
    }

    pub fn policy(&self) -> Option<&Policy> {
        self.config.policy()
    }

    /// The CORS fields of the limiter's own answers: the policy's, or the default while the
    /// policy is broken.
    pub fn cors(&self) -> &Cors {
        self.policy().map_or(&DEFAULT_CORS, |p| &p.cors)
    }

    pub fn path_options(&self) -> PathOptions {
        self.policy().map_or_else(PathOptions::default, |p| p.paths)
    }

    pub fn store_settings(&self) -> &StoreSettings {
        self.policy().map_or(&DEFAULT_STORE, |p| &p.store)
    }

    /// The dashboard's data is public only in front of the demo origin.
    pub fn demo(&self) -> bool {
        matches!(self.origin, Origin::Demo)
    }

    /// A core refusal as this isolate's answer (its problem-type links where its docs are).
    pub fn answer(&self, r: Refusal) -> web_sys::Response {
        respond::render(r, self.docs_moved.as_deref())
    }

    /// One check through the store, its notes (failures, the breaker) logged.
    pub async fn check(&self, request: &CheckRequest<'_>) -> Verdict {
        let verdict = self.store.check(request).await;
        for note in &verdict.notes {
            match note {
                Note::Error(event, m) => log::error(event, m, Value::Null),
                Note::Info(event, m) => log::info(event, m, Value::Null),
            }
        }
        verdict
    }

    pub fn count_allowed(&self) {
        self.allowed.set(self.allowed.get() + 1);
    }

    pub fn count_denied(&self) {
        self.denied.set(self.denied.get() + 1);
    }

    pub fn count_blocked(&self) {
        self.blocked.set(self.blocked.get() + 1);
    }

    pub fn count_allow_listed(&self) {
        self.allow_listed.set(self.allow_listed.get() + 1);
    }

    /// Requests allowed and denied since the isolate started.
    pub fn counts(&self) -> (u64, u64) {
        (self.allowed.get(), self.denied.get())
    }

    /// A request its limits would refuse, passed in shadow: counted, and logged the first
    /// time for its subject (by digest, never the raw key or address).
    pub fn shadow_denied(&self, tier: &str, limit: &str, digest: &str) {
        self.shadow_denied.set(self.shadow_denied.get() + 1);
        let mut logged = self.shadow_logged.borrow_mut();
        if logged.len() >= SHADOW_LOGGED_MAX {
            logged.clear();
        }
        if logged.insert(digest.to_string()) {
            let message =
                format!("shadow: subject {digest} of tier {tier} would be denied by its limit {limit}; passed");
            log::info("shadow_denied", &message, json!({ "subject_hash": digest, "tier": tier, "limit": limit }));
        }
    }

    /// `subject.digest()`, remembered for the subject last asked for.
    pub fn digest(&self, subject: &Subject) -> SubjectDigest {
        let mut last = self.last_digest.borrow_mut();
        match &*last {
            Some((s, d)) if s == subject => d.clone(),
            _ => {
                let d = subject.digest();
                *last = Some((subject.clone(), d.clone()));
                d
            }
        }
    }

    /// A denial: logged the first time for its subject (by digest), not per request.
    pub fn denied(&self, tier: &str, limit: &str, digest: &str) {
        let mut logged = self.denied_logged.borrow_mut();
        if logged.len() >= SHADOW_LOGGED_MAX {
            logged.clear();
        }
        if logged.insert(digest.to_string()) {
            let message = format!("subject {digest} of tier {tier} denied by its limit {limit}");
            log::info("subject_denied", &message, json!({ "subject_hash": digest, "tier": tier, "limit": limit }));
        }
    }

    pub fn shadow_denials(&self) -> u64 {
        self.shadow_denied.get()
    }

    /// A place for one more held request of this subject, if the caps allow one.
    pub fn hold(&self, key: String) -> Option<Hold<'_>> {
        let mut holds = self.holds.borrow_mut();
        let subjects = holds.len();
        let n = holds.entry(key.clone()).or_insert(0);
        if *n >= MAX_HOLDS_PER_SUBJECT || (*n == 0 && subjects >= MAX_HOLDS) {
            if *n == 0 {
                holds.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Hold { iso: self, key })
    }

    /// A decision for the fleet view, when there is a sink to flush it to: the shared store
    /// or an Analytics Engine dataset.
    pub fn record(&self, now: u64, event: Event, tier: &str, route: &str, backend: &str, subject: Option<&str>) {
        if (self.store.has_primary() || self.analytics.is_some()) && self.store_settings().fleet {
            self.fleet.borrow_mut().record(now, event, tier, route, backend, subject);
        }
    }

    /// A flush of the fleet tallies when one is due at `now` (`at_once`: whenever there is
    /// something to flush, for a read of the fleet that should include this isolate's latest).
    pub fn fleet_flush(&self, now: u64, at_once: bool) -> Option<FleetFlush> {
        let policy = self.policy()?;
        let mut tally = self.fleet.borrow_mut();
        let early = now.saturating_sub(self.last_flush.get()) < FLUSH_EVERY_MS;
        if tally.is_empty() || (early && !at_once) {
            return None;
        }
        self.last_flush.set(now);
        let breaker = match self.store.breaker().state() {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        };
        let taken = tally.take();
        let script = self.store.has_primary().then(|| {
            let line = isolate_line(now, &self.policy_version, breaker, self.store.counts().store_failures);
            taken.script_call(&policy.key_prefix, &self.fleet_id, &line)
        });
        let points = self
            .analytics
            .as_ref()
            .map(|_| serde_json::Value::Array(taken.data_points(&self.fleet_id, &self.policy_version)).to_string());
        Some(FleetFlush { script, points })
    }

    pub fn count_delayed(&self) {
        self.delayed.set(self.delayed.get() + 1);
    }

    pub fn delayed(&self) -> u64 {
        self.delayed.get()
    }

    pub fn count_service(&self, f: impl FnOnce(&mut ServiceCounts)) {
        let mut c = self.service.get();
        f(&mut c);
        self.service.set(c);
    }

    pub fn service_counts(&self) -> ServiceCounts {
        self.service.get()
    }

    /// Requests blocked by the block list, and passed unlimited by the allow list.
    pub fn listed(&self) -> (u64, u64) {
        (self.blocked.get(), self.allow_listed.get())
    }
}

impl Config {
    pub fn policy(&self) -> Option<&Policy> {
        match self {
            Config::Ready { policy, .. } => Some(policy),
            Config::Broken(_) => None,
        }
    }
}

fn env_text(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string()).filter(|s| !s.trim().is_empty())
}

/// `POLICY` as JSON text (a secret, or a string in `[vars]`) or as an object (a
/// `[vars.POLICY]` table, which wrangler passes as one); `None` when unset.
fn policy_text(env: &Env) -> Option<String> {
    let value = js_sys::Reflect::get(env, &JsValue::from_str("POLICY")).ok()?;
    if let Some(text) = value.as_string() {
        return Some(text).filter(|s| !s.trim().is_empty());
    }
    if value.is_object() {
        return js_sys::JSON::stringify(&value).ok().map(String::from);
    }
    None
}

/// The policy: `POLICY`, or the built-in example when none is set, checked once.
fn configure(env: &Env, demo: bool) -> Config {
    let written = policy_text(env).unwrap_or_else(|| {
        if demo {
            log::info(
                "policy_loaded",
                "no POLICY set; running the built-in example policy",
                json!({ "builtin": true }),
            );
        } else {
            log::error(
                "config_error",
                "no POLICY set: the built-in demo policy is running in front of a real origin; \
                 set POLICY to your own (docs/policy.md)",
                json!({ "setting": "POLICY" }),
            );
        }
        EXAMPLE_POLICY.to_string()
    });
    let mut policy = match Policy::parse(&written) {
        Ok(p) => p,
        Err(e) => {
            let reason = e.to_string();
            let message = format!("the policy is invalid, every request will get a 500 until it is fixed: {reason}");
            log::error("policy_invalid", &message, json!({ "reason": reason }));
            return Config::Broken(reason);
        }
    };
    // The demo keys are published: in front of a real origin they would be a free pass.
    if !demo && policy.drop_keys(&DEMO_KEY_DIGESTS) > 0 {
        log::error(
            "config_error",
            "the policy lists the published demo API keys, which work only with ORIGIN_URL = \"demo\"; \
             here they are unknown keys. Replace them with your own key digests.",
            json!({ "setting": "POLICY" }),
        );
    }
    let version = digest_of(&written);
    let fields = json!({ "version": version.get(..12), "tiers": policy.tiers.len(), "routes": policy.routes.len() });
    log::info("policy_loaded", "policy loaded", fields);
    Config::Ready { policy, written }
}

/// The Upstash store, when both settings are present and sound; otherwise memory, said once.
fn upstash(env: &Env, policy: &Policy) -> Option<UpstashStore<FetchTransport>> {
    let url = env_text(env, "UPSTASH_REDIS_REST_URL");
    let token = env_text(env, "UPSTASH_REDIS_REST_TOKEN");
    match Endpoint::from_settings(url.as_deref(), token.as_deref()) {
        Ok(Some(endpoint)) => {
            let message = format!("store is Upstash at {} (timeout {} ms)", endpoint.url, policy.store.timeout_ms);
            log::info("store_selected", &message, json!({ "store": "upstash", "timeout_ms": policy.store.timeout_ms }));
            let transport = FetchTransport::new(endpoint, policy.store.timeout_ms);
            Some(UpstashStore::new(transport, &policy.key_prefix))
        }
        Ok(None) => {
            log::info(
                "store_selected",
                "store is the isolate's memory (no Upstash configured)",
                json!({ "store": "memory" }),
            );
            None
        }
        Err(e) => {
            log::error(
                "config_error",
                &format!("configuration error, running on the isolate's memory: {e}"),
                Value::Null,
            );
            None
        }
    }
}

fn admin_token(env: &Env) -> std::result::Result<String, &'static str> {
    match env_text(env, "ADMIN_TOKEN") {
        None => Err("The admin API is off: set the secret ADMIN_TOKEN to turn it on."),
        Some(t) if t.trim().len() < MIN_ADMIN_TOKEN => {
            let message = format!(
                "configuration error: ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN} characters, \
                 so the admin API stays off (make one with `openssl rand -hex 32`)"
            );
            log::error("config_error", &message, json!({ "setting": "ADMIN_TOKEN" }));
            Err("The admin API is off: ADMIN_TOKEN is shorter than 32 characters.")
        }
        Some(t) => Ok(t.trim().to_string()),
    }
}

/// `SERVICE_TOKEN`, for the decision API: as long as the admin token, and never the same,
/// so an app that holds it can ask for decisions but never reach the admin API.
fn service_token(env: &Env) -> std::result::Result<String, &'static str> {
    let token = match env_text(env, "SERVICE_TOKEN") {
        None => return Err("The decision API is off: set the secret SERVICE_TOKEN to turn it on."),
        Some(t) => t.trim().to_string(),
    };
    if token.len() < MIN_ADMIN_TOKEN {
        let message = format!(
            "configuration error: SERVICE_TOKEN is shorter than {MIN_ADMIN_TOKEN} characters, \
             so the decision API stays off (make one with `openssl rand -hex 32`)"
        );
        log::error("config_error", &message, json!({ "setting": "SERVICE_TOKEN" }));
        return Err("The decision API is off: SERVICE_TOKEN is shorter than 32 characters.");
    }
    if env_text(env, "ADMIN_TOKEN").is_some_and(|a| a.trim() == token) {
        log::error(
            "config_error",
            "configuration error: SERVICE_TOKEN is the same as ADMIN_TOKEN, so the decision API \
             stays off: an app's token must not open the admin API",
            json!({ "setting": "SERVICE_TOKEN" }),
        );
        return Err("The decision API is off: SERVICE_TOKEN must differ from ADMIN_TOKEN.");
    }
    Ok(token)
}

/// An isolate's name in the fleet view: 8 random hex digits.
fn random_id() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (js_sys::Date::now() as u32).to_le_bytes();
    }
    crate::core::subject::hex(&bytes)
}

/// The dashboard prefix from `DASHBOARD_PATH`: `/__limiter/` by default, `off` for none.
/// Always starts and ends with `/`.
fn dashboard_prefix(setting: Option<&str>) -> Option<String> {
    match setting.map(str::trim) {
        None | Some("") => Some("/__limiter/".into()),
        Some("off") => None,
        Some(p) => Some(format!("/{}/", p.trim_matches('/'))),
    }
}
