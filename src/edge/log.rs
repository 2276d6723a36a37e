//! Structured logs: one JSON object per event, never one per request, with stable field
//! names so that Workers Logs and Logpush can filter them: `source` (always
//! `edge-limiter`), `event` (a stable name: `policy_loaded`, `policy_invalid`,
//! `config_error`, `store_selected`, `store_failure`, `breaker_open`, `breaker_closed`,
//! `admin_action`, `subject_denied`, `shadow_denied`, `controls`, `fleet_flush_failed`,
//! `fleet_analytics_failed`, `origin_unreachable`, `credential_refused`, `internal_error`),
//! `level` (`info` or `error`), `message` (for a person), then the event's own fields.
//! Subjects appear only as digests (`subject_hash`); tokens, keys and addresses never. A
//! leaf: it uses nothing of the Worker.

use serde_json::{Map, Value};
use worker::{console_error, console_log};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// Writes one event. `fields`: a JSON object of the event's own fields (or `Value::Null`).
pub fn event(level: Level, event: &str, message: &str, fields: Value) {
    let mut line = Map::new();
    line.insert("source".into(), Value::from("edge-limiter"));
    line.insert("event".into(), Value::from(event));
    line.insert("level".into(), Value::from(if level == Level::Error { "error" } else { "info" }));
    line.insert("message".into(), Value::from(message));
    if let Value::Object(own) = fields {
        for (k, v) in own {
            line.entry(k).or_insert(v);
        }
    }
    let text = Value::Object(line).to_string();
    match level {
        Level::Info => console_log!("{text}"),
        Level::Error => console_error!("{text}"),
    }
}

pub fn info(name: &str, message: &str, fields: Value) {
    event(Level::Info, name, message, fields);
}

pub fn error(name: &str, message: &str, fields: Value) {
    event(Level::Error, name, message, fields);
}
