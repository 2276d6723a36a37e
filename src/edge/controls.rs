//! Where the runtime controls (`core::controls`) are kept, and how every isolate keeps its
//! copy fresh without a read per request.
//!
//! - **Upstash**, when it is configured: one hash, `<key_prefix>:controls`, a field per record.
//!   Each isolate reads it whole (`HGETALL`, one command) on its first request, then at most
//!   once per `store.controls_refresh` (10 s by default), in the background of the request
//!   that finds its copy due (`waitUntil`), never in its way.
//! - **Workers KV**, when a `CONTROLS` namespace is bound and Upstash is not configured: one
//!   value, `controls`, a JSON object of the records. KV spreads a write within about a
//!   minute, so a change arrives within that and one refresh.
//! - **This isolate**, with neither: a change applies here at once and nowhere else; the
//!   status says so.
//!
//! An isolate applies its own changes at once. A failed read keeps the copy it has (the
//! policy's own lists, before the first) and says why in the status.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{json, Map, Value};
use worker::Env;

use super::log;

use crate::core::controls::Resolved;
use crate::core::policy::Policy;
use crate::store::upstash::{FetchTransport, UpstashStore};

/// The shared store, when there is one.
pub type Shared<'a> = Option<&'a UpstashStore<FetchTransport>>;

/// The KV binding that holds the controls when Upstash is not configured, and its key.
pub const KV_BINDING: &str = "CONTROLS";
const KV_KEY: &str = "controls";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Upstash,
    Kv,
    Isolate,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Upstash => "upstash",
            Source::Kv => "kv",
            Source::Isolate => "isolate",
        }
    }
}

/// Whether this request should read the controls first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    No,
    /// The isolate has never read them: this request waits for the read, so that no request
    /// is judged without the block list an operator set.
    First,
    /// Its copy is older than the refresh interval: read in the request's background.
    Later,
    /// Another request of the isolate is making the first read: wait for it.
    Waiting,
}

pub struct Controls {
    pub source: Source,
    pub refresh_ms: u64,
    resolved: RefCell<Rc<Resolved>>,
    loaded_at: Cell<Option<u64>>,
    loading: Cell<bool>,
    /// The records themselves when this isolate is where they live.
    here: RefCell<BTreeMap<String, String>>,
    last_error: RefCell<Option<(u64, String)>>,
    reads: Cell<u64>,
}

impl Controls {
    pub fn new(source: Source, policy: Option<&Policy>, refresh_ms: u64) -> Controls {
        let resolved = policy.map(Resolved::of_policy).unwrap_or_default();
        Controls {
            source,
            refresh_ms,
            resolved: RefCell::new(Rc::new(resolved)),
            loaded_at: Cell::new(None),
            loading: Cell::new(false),
            here: RefCell::new(BTreeMap::new()),
            last_error: RefCell::new(None),
            reads: Cell::new(0),
        }
    }

    /// What requests are judged by now.
    pub fn current(&self) -> Rc<Resolved> {
        self.resolved.borrow().clone()
    }

    /// Kept where every isolate reads them (Upstash or KV), not in this isolate alone.
    pub fn is_shared(&self) -> bool {
        self.source != Source::Isolate
    }

    /// Whether a read is due; if so, the caller has it (no other request starts one) and
    /// must run [`refresh`].
    pub fn due(&self, now: u64) -> Due {
        if !self.is_shared() {
            return Due::No;
        }
        if self.loading.get() {
            return if self.loaded_at.get().is_none() { Due::Waiting } else { Due::No };
        }
        let due = match self.loaded_at.get() {
            None => Due::First,
            Some(at) if now.saturating_sub(at) >= self.refresh_ms => Due::Later,
            Some(_) => Due::No,
        };
        self.loading.set(due != Due::No);
        due
    }

    /// The status's view: where they live, how fresh this isolate's copy is, what it holds.
    pub fn status(&self, now: u64) -> Value {
        let resolved = self.current();
        let (overrides, block, allow) = resolved.counts(now);
        json!({
            "source": self.source.as_str(),
            "scope": if self.source == Source::Isolate { "this isolate only" } else { "every isolate" },
            "refresh_ms": self.refresh_ms,
            "loaded_ago_ms": self.loaded_at.get().map(|at| now.saturating_sub(at)),
            "reads": self.reads.get(),
            "overrides": overrides,
            "block_entries": block,
            "allow_entries": allow,
            "problems": resolved.problems.len(),
            "last_error": self.last_error.borrow().as_ref().map(|(at, e)| json!({ "ago_ms": now.saturating_sub(*at), "error": e })),
        })
    }

    fn install(&self, policy: &Policy, records: &[(String, String)], now: u64) {
        let resolved = Resolved::from_records(policy, records);
        for p in &resolved.problems {
            log::error("controls", &format!("controls: record set aside: {p}"), json!({ "problem": p }));
        }
        *self.resolved.borrow_mut() = Rc::new(resolved);
        self.loaded_at.set(Some(now));
    }
}

/// Where the controls of a new isolate live: Upstash, else a bound KV namespace, else here.
pub fn source(env: &Env, has_upstash: bool) -> Source {
    if has_upstash {
        Source::Upstash
    } else if env.kv(KV_BINDING).is_ok() {
        Source::Kv
    } else {
        Source::Isolate
    }
}

fn hash_key(policy: &Policy) -> String {
    format!("{}:controls", policy.key_prefix)
}

/// Reads the records from where they live. The isolate's own are not read, they are held.
async fn read(c: &Controls, store: Shared<'_>, env: &Env, policy: &Policy) -> Result<Vec<(String, String)>, String> {
    match c.source {
        Source::Upstash => {
            let store = store.ok_or("no Upstash store")?;
            let reply = store.command(&["HGETALL", &hash_key(policy)]).await.map_err(|e| e.to_string())?;
            let items = reply.as_array().ok_or("HGETALL answered no array")?;
            let text: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
            if text.len() != items.len() || text.len() % 2 != 0 {
                return Err("HGETALL answered something other than field, value pairs".into());
            }
            Ok(text.chunks(2).filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone()))).collect())
        }
        Source::Kv => {
            let kv = env.kv(KV_BINDING).map_err(|e| e.to_string())?;
            let text = kv.get(KV_KEY).text().await.map_err(|e| e.to_string())?;
            kv_records(text.as_deref())
        }
        Source::Isolate => Ok(c.here.borrow().iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
    }
}

fn kv_records(text: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(text) = text else { return Ok(Vec::new()) };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => {
            Ok(map.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        }
        _ => Err(format!("the KV value {KV_KEY:?} is not a JSON object of records")),
    }
}

/// Waits, by short naps on this request's own timers, until the first read another request
/// is making is done (or the store's timeout has passed).
pub async fn first_read(c: &Controls, timeout_ms: u64) {
    let mut waited = 0;
    while c.loading.get() && c.loaded_at.get().is_none() && waited <= timeout_ms {
        worker::Delay::from(std::time::Duration::from_millis(2)).await;
        waited += 2;
    }
}

/// Reads the controls and puts them in force in this isolate. A failure keeps what it had.
pub async fn refresh(c: &Controls, store: Shared<'_>, env: &Env, policy: &Policy, now: u64) {
    let read = read(c, store, env, policy).await;
    c.loading.set(false);
    c.reads.set(c.reads.get() + 1);
    match read {
        Ok(records) => {
            c.install(policy, &records, now);
            *c.last_error.borrow_mut() = None;
        }
        Err(e) => {
            // Tried again after the interval, not on every request meanwhile.
            c.loaded_at.set(Some(now));
            if c.last_error.borrow().is_none() {
                let message = format!("controls: could not read them ({e}); keeping the copy in force");
                log::error("controls", &message, json!({ "source_of_controls": c.source.as_str() }));
            }
            *c.last_error.borrow_mut() = Some((now, e));
        }
    }
}

/// Stores `sets` and removes `deletes` where the controls live, then puts the result in
/// force in this isolate at once.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    c: &Controls,
    store: Shared<'_>,
    env: &Env,
    policy: &Policy,
    sets: &[(String, String)],
    deletes: &[String],
    now: u64,
) -> Result<(), String> {
    match c.source {
        Source::Upstash => {
            let store = store.ok_or("no Upstash store")?;
            let key = hash_key(policy);
            if !deletes.is_empty() {
                let mut args = vec!["HDEL", key.as_str()];
                args.extend(deletes.iter().map(String::as_str));
                store.command(&args).await.map_err(|e| e.to_string())?;
            }
            if !sets.is_empty() {
                let mut args = vec!["HSET", key.as_str()];
                for (k, v) in sets {
                    args.push(k);
                    args.push(v);
                }
                store.command(&args).await.map_err(|e| e.to_string())?;
            }
        }
        Source::Kv => {
            // KV has no field-wise write: read, change, write back (the last writer wins).
            let kv = env.kv(KV_BINDING).map_err(|e| e.to_string())?;
            let text = kv.get(KV_KEY).text().await.map_err(|e| e.to_string())?;
            let mut map: Map<String, Value> =
                kv_records(text.as_deref())?.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            for d in deletes {
                map.remove(d);
            }
            for (k, v) in sets {
                map.insert(k.clone(), Value::String(v.clone()));
            }
            let put = kv.put(KV_KEY, Value::Object(map).to_string()).map_err(|e| e.to_string())?;
            put.execute().await.map_err(|e| e.to_string())?;
        }
        Source::Isolate => {
            let mut here = c.here.borrow_mut();
            for d in deletes {
                here.remove(d);
            }
            for (k, v) in sets {
                here.insert(k.clone(), v.clone());
            }
        }
    }
    // In force here at once: read back what is stored now (a KV read may still be the old
    // value for a while; the change itself is applied on top).
    let mut records: BTreeMap<String, String> =
        read(c, store, env, policy).await.unwrap_or_default().into_iter().collect();
    for d in deletes {
        records.remove(d);
    }
    for (k, v) in sets {
        records.insert(k.clone(), v.clone());
    }
    let records: Vec<(String, String)> = records.into_iter().collect();
    c.install(policy, &records, now);
    Ok(())
}
