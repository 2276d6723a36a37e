//! Request routing and the Upstash REST semantics on top of the Redis pool.

use crate::b64;
use crate::http::{percent_decode, Request};
use crate::redis::Pool;
use crate::resp::Reply;
use crate::script;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// Sleep this many milliseconds, then answer normally.
    Delay(u64),
    /// 500 `{"error":"injected"}`.
    Error500,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 401 `{"error":"Unauthorized"}` whatever the token.
    Unauthorized,
    /// Close the connection without answering.
    Drop,
}

impl Fault {
    pub fn parse(s: &str) -> Option<Fault> {
        let s = s.trim();
        Some(match s {
            "none" | "" => Fault::None,
            "error500" => Fault::Error500,
            "garbage" => Fault::Garbage,
            "unauthorized" => Fault::Unauthorized,
            "drop" => Fault::Drop,
            _ => {
                let ms = s.strip_prefix("delay:")?.parse::<u64>().ok()?;
                Fault::Delay(ms)
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Fault::None => "none".into(),
            Fault::Delay(ms) => format!("delay:{ms}"),
            Fault::Error500 => "error500".into(),
            Fault::Garbage => "garbage".into(),
            Fault::Unauthorized => "unauthorized".into(),
            Fault::Drop => "drop".into(),
        }
    }
}

pub struct State {
    pub token: String,
    pub pool: Pool,
    pub fault: RwLock<Fault>,
    /// SHA1 of the script text the client sent -> SHA1 of the text Redis holds.
    pub scripts: Mutex<HashMap<String, String>>,
    /// Requests served per route (for `GET /__stats`): single, pipeline, multi-exec.
    pub stats: [AtomicU64; 3],
}

pub enum Outcome {
    Respond {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Close the connection without a reply (fault mode `drop`).
    Drop,
}

fn json_resp(status: u16, v: &Value) -> Outcome {
    Outcome::Respond {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(v).unwrap_or_else(|_| b"{\"error\":\"serialization\"}".to_vec()),
    }
}

fn err(status: u16, msg: &str) -> Outcome {
    json_resp(status, &json!({ "error": msg }))
}

fn text(status: u16, body: &str) -> Outcome {
    Outcome::Respond { status, content_type: "text/plain; charset=utf-8", body: body.as_bytes().to_vec() }
}

/// Commands that would change the state of a pooled connection or need a session the REST
/// protocol does not have. (Transactions go through `/multi-exec`.)
const REJECTED: &[&str] = &[
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "SELECT",
    "QUIT",
    "RESET",
    "HELLO",
    "AUTH",
    "SYNC",
    "PSYNC",
    "REPLCONF",
    "SHUTDOWN",
];

/// A command ready to send, plus what to do with its reply.
pub struct Prepared {
    pub args: Vec<Vec<u8>>,
    /// For SCRIPT LOAD: answer with the SHA1 of the client's text.
    pub script_load_sha: Option<String>,
}

impl State {
    pub fn new(token: String, redis_addr: String, fault: Fault) -> State {
        State {
            token,
            pool: Pool::new(redis_addr, 32),
            fault: RwLock::new(fault),
            scripts: Mutex::new(HashMap::new()),
            stats: Default::default(),
        }
    }

    fn fault(&self) -> Fault {
        *self.fault.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_fault(&self, f: Fault) {
        *self.fault.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    fn authorized(&self, req: &Request) -> bool {
        if let Some(h) = req.header("authorization") {
            let h = h.trim();
            if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") && h[7..].trim() == self.token {
                return true;
            }
        }
        req.query_param("_token").is_some_and(|t| t == self.token)
    }

    fn map_sha(&self, sha: &[u8]) -> Vec<u8> {
        let key = String::from_utf8_lossy(sha).to_ascii_lowercase();
        match self.scripts.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            Some(r) => r.as_bytes().to_vec(),
            None => sha.to_vec(),
        }
    }

    /// Rewrite a script's shebang if needed, remembering client SHA -> redis SHA.
    fn rewrite_script(&self, script: &[u8]) -> (Vec<u8>, String) {
        let client_sha = script::sha1_hex(script);
        match script::strip_unknown_shebang_flags(script) {
            Some(rewritten) => {
                let redis_sha = script::sha1_hex(&rewritten);
                self.scripts.lock().unwrap_or_else(|e| e.into_inner()).insert(client_sha.clone(), redis_sha);
                (rewritten, client_sha)
            }
            None => (script.to_vec(), client_sha),
        }
    }

    /// Validate and translate one command (script shebangs and SHAs).
    pub fn prepare(&self, mut args: Vec<Vec<u8>>) -> Result<Prepared, String> {
        if args.is_empty() {
            return Err("ERR empty command".into());
        }
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        if REJECTED.contains(&name.as_str()) {
            return Err(format!("ERR Command is not allowed: {}", name.to_ascii_lowercase()));
        }
        let mut script_load_sha = None;
        match name.as_str() {
            "EVAL" | "EVAL_RO" if args.len() >= 2 => {
                let (s, _) = self.rewrite_script(&args[1]);
                args[1] = s;
            }
            "EVALSHA" | "EVALSHA_RO" if args.len() >= 2 => {
                args[1] = self.map_sha(&args[1]);
            }
            "SCRIPT" if args.len() >= 2 => {
                let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
                match sub.as_str() {
                    "LOAD" if args.len() >= 3 => {
                        let (s, client_sha) = self.rewrite_script(&args[2]);
                        args[2] = s;
                        script_load_sha = Some(client_sha);
                    }
                    "EXISTS" => {
                        for a in args.iter_mut().skip(2) {
                            *a = self.map_sha(a);
                        }
                    }
                    "FLUSH" => self.scripts.lock().unwrap_or_else(|e| e.into_inner()).clear(),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(Prepared { args, script_load_sha })
    }

    fn post(p: &Prepared, r: Reply) -> Reply {
        match (&p.script_load_sha, r) {
            (Some(sha), Reply::Bulk(Some(_))) => Reply::Bulk(Some(sha.as_bytes().to_vec())),
            (_, r) => r,
        }
    }

    fn redis_down(&self, e: &std::io::Error) -> Outcome {
        err(500, &format!("ERR local-upstash: redis at {} unavailable: {e}", self.pool.addr()))
    }

    pub fn handle(&self, req: &Request) -> Outcome {
        let path = req.path();
        if req.method == "OPTIONS" {
            return Outcome::Respond { status: 204, content_type: "", body: Vec::new() };
        }
        if path == "/__health" {
            return text(200, "ok");
        }
        if path == "/__fault" {
            return self.handle_fault(req);
        }
        match self.fault() {
            Fault::None => {}
            Fault::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Fault::Error500 => return err(500, "injected"),
            Fault::Garbage => return text(200, "not json at all"),
            Fault::Unauthorized => return err(401, "Unauthorized"),
            Fault::Drop => return Outcome::Drop,
        }
        if !self.authorized(req) {
            return err(401, "Unauthorized");
        }
        if path == "/__stats" {
            let n = |i: usize| self.stats[i].load(Ordering::Relaxed);
            return json_resp(200, &json!({ "single": n(0), "pipeline": n(1), "multi_exec": n(2) }));
        }
        if path.starts_with("/__") {
            return err(404, &format!("Not found: {path}"));
        }
        if req.method != "GET" && req.method != "POST" && req.method != "HEAD" {
            return err(405, &format!("Method not allowed: {}", req.method));
        }
        let trimmed = path.trim_end_matches('/');
        match trimmed {
            "" => {
                if req.method != "POST" {
                    return err(400, "ERR empty command: POST a JSON array like [\"GET\",\"key\"]");
                }
                match parse_command(&req.body) {
                    Ok(args) => self.single(args, encoding_b64(req)),
                    Err(e) => err(400, &e),
                }
            }
            "/pipeline" | "/multi-exec" => {
                if req.method != "POST" {
                    return err(405, &format!("{trimmed} takes POST"));
                }
                let cmds = match parse_batch(&req.body) {
                    Ok(c) => c,
                    Err(e) => return err(400, &e),
                };
                if trimmed == "/pipeline" {
                    self.pipeline(cmds, encoding_b64(req))
                } else {
                    self.multi_exec(cmds, encoding_b64(req))
                }
            }
            _ if trimmed.starts_with("/pipeline/") || trimmed.starts_with("/multi-exec/") => {
                err(404, &format!("Not found: {path}"))
            }
            _ => {
                let mut args: Vec<Vec<u8>> =
                    trimmed.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
                if req.method == "POST" && !req.body.is_empty() {
                    args.push(req.body.clone());
                }
                self.single(args, encoding_b64(req))
            }
        }
    }

    fn handle_fault(&self, req: &Request) -> Outcome {
        if !self.authorized(req) {
            return err(401, "Unauthorized");
        }
        match req.method.as_str() {
            "GET" => json_resp(200, &json!({ "result": self.fault().name() })),
            "POST" => {
                let v: Value = match serde_json::from_slice(&req.body) {
                    Ok(v) => v,
                    Err(e) => return err(400, &format!("ERR invalid JSON body: {e}")),
                };
                let mode = v.get("mode").and_then(Value::as_str).unwrap_or("\u{0}");
                match Fault::parse(mode) {
                    Some(f) => {
                        self.set_fault(f);
                        json_resp(200, &json!({ "result": "OK", "mode": f.name() }))
                    }
                    None => {
                        err(400, "ERR unknown fault mode (none | delay:MS | error500 | garbage | unauthorized | drop)")
                    }
                }
            }
            m => err(405, &format!("Method not allowed: {m}")),
        }
    }

    fn single(&self, args: Vec<Vec<u8>>, b64: bool) -> Outcome {
        self.stats[0].fetch_add(1, Ordering::Relaxed);
        let p = match self.prepare(args) {
            Ok(p) => p,
            Err(e) => return err(400, &e),
        };
        match self.pool.exec(&[&p.args]) {
            Ok(mut replies) => match Self::post(&p, replies.remove(0)) {
                Reply::Error(e) => err(400, &e),
                r => json_resp(200, &json!({ "result": reply_to_json(&r, b64) })),
            },
            Err(e) => self.redis_down(&e),
        }
    }

    fn pipeline(&self, cmds: Vec<Vec<Vec<u8>>>, b64: bool) -> Outcome {
        self.stats[1].fetch_add(1, Ordering::Relaxed);
        let prepared: Vec<Result<Prepared, String>> = cmds.into_iter().map(|c| self.prepare(c)).collect();
        let to_send: Vec<&[Vec<u8>]> =
            prepared.iter().filter_map(|p| p.as_ref().ok().map(|p| p.args.as_slice())).collect();
        let mut replies = match self.pool.exec(&to_send) {
            Ok(r) => r.into_iter(),
            Err(e) => return self.redis_down(&e),
        };
        let out: Vec<Value> = prepared
            .iter()
            .map(|p| match p {
                Ok(p) => entry_json(&Self::post(p, replies.next().expect("one reply per command")), b64),
                Err(e) => json!({ "error": e }),
            })
            .collect();
        json_resp(200, &Value::Array(out))
    }

    fn multi_exec(&self, cmds: Vec<Vec<Vec<u8>>>, b64: bool) -> Outcome {
        self.stats[2].fetch_add(1, Ordering::Relaxed);
        let mut prepared = Vec::with_capacity(cmds.len());
        for c in cmds {
            match self.prepare(c) {
                Ok(p) => prepared.push(p),
                Err(e) => return err(400, &e),
            }
        }
        let multi = vec![b"MULTI".to_vec()];
        let exec = vec![b"EXEC".to_vec()];
        let mut batch: Vec<&[Vec<u8>]> = Vec::with_capacity(prepared.len() + 2);
        batch.push(&multi);
        batch.extend(prepared.iter().map(|p| p.args.as_slice()));
        batch.push(&exec);
        let replies = match self.pool.exec(&batch) {
            Ok(r) => r,
            Err(e) => return self.redis_down(&e),
        };
        if let Reply::Error(e) = &replies[0] {
            return err(400, e);
        }
        match replies.last() {
            Some(Reply::Array(Some(items))) => {
                let out: Vec<Value> = prepared
                    .iter()
                    .zip(items.iter())
                    .map(|(p, r)| entry_json(&Self::post(p, r.clone()), b64))
                    .collect();
                json_resp(200, &Value::Array(out))
            }
            Some(Reply::Error(e)) => {
                // EXECABORT: say which command failed to queue, as Redis's own text does not.
                let first = replies[1..replies.len() - 1].iter().find_map(|r| match r {
                    Reply::Error(q) => Some(q.clone()),
                    _ => None,
                });
                match first {
                    Some(q) => err(400, &format!("{e} ({q})")),
                    None => err(400, e),
                }
            }
            Some(Reply::Array(None)) => json_resp(200, &Value::Null),
            _ => err(500, "ERR local-upstash: unexpected EXEC reply"),
        }
    }
}

fn encoding_b64(req: &Request) -> bool {
    req.header("upstash-encoding").is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"))
}

fn arg_bytes(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Number(n) => Ok(n.to_string().into_bytes()),
        Value::Bool(b) => Ok(b.to_string().into_bytes()),
        Value::Null => Err("ERR invalid argument: null".into()),
        Value::Array(_) | Value::Object(_) => Ok(v.to_string().into_bytes()),
    }
}

/// `["SET","k","v"]` -> args.
pub fn parse_command(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("ERR failed to parse command: {e}"))?;
    command_from_value(&v)
}

fn command_from_value(v: &Value) -> Result<Vec<Vec<u8>>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| "ERR failed to parse command: expected a JSON array like [\"GET\",\"key\"]".to_string())?;
    if arr.is_empty() {
        return Err("ERR empty command".into());
    }
    arr.iter().map(arg_bytes).collect()
}

/// `[["SET","k","v"],["GET","k"]]` -> commands.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("ERR failed to parse pipeline request: {e}"))?;
    let arr = v
        .as_array()
        .ok_or_else(|| "ERR failed to parse pipeline request: expected an array of commands".to_string())?;
    if arr.is_empty() {
        return Err("ERR empty pipeline".into());
    }
    arr.iter().map(command_from_value).collect()
}

fn bytes_json(b: &[u8], b64: bool) -> Value {
    if b64 {
        Value::String(b64::encode(b))
    } else {
        Value::String(String::from_utf8_lossy(b).into_owned())
    }
}

/// RESP reply -> JSON `result` value. Nested errors (inside arrays) become their text.
pub fn reply_to_json(r: &Reply, b64: bool) -> Value {
    match r {
        Reply::Status(s) => bytes_json(s, b64),
        Reply::Error(e) => Value::String(e.clone()),
        Reply::Int(i) => Value::from(*i),
        Reply::Bulk(None) | Reply::Array(None) => Value::Null,
        Reply::Bulk(Some(b)) => bytes_json(b, b64),
        Reply::Array(Some(items)) => Value::Array(items.iter().map(|i| reply_to_json(i, b64)).collect()),
    }
}

fn entry_json(r: &Reply, b64: bool) -> Value {
    match r {
        Reply::Error(e) => json!({ "error": e }),
        r => json!({ "result": reply_to_json(r, b64) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_mapping() {
        let r = Reply::Array(Some(vec![
            Reply::Status(b"OK".to_vec()),
            Reply::Int(3),
            Reply::Bulk(None),
            Reply::Array(Some(vec![Reply::Bulk(Some(b"v".to_vec()))])),
        ]));
        assert_eq!(reply_to_json(&r, false), json!(["OK", 3, null, ["v"]]));
        assert_eq!(reply_to_json(&r, true), json!(["T0s=", 3, null, ["dg=="]]));
        assert_eq!(entry_json(&Reply::Error("ERR x".into()), true), json!({"error": "ERR x"}));
    }

    #[test]
    fn command_parsing() {
        assert_eq!(
            parse_command(br#"["SET","k",5,1.5,true]"#).unwrap(),
            vec![b"SET".to_vec(), b"k".to_vec(), b"5".to_vec(), b"1.5".to_vec(), b"true".to_vec()]
        );
        assert!(parse_command(b"[]").is_err());
        assert!(parse_command(b"{}").is_err());
        assert!(parse_command(b"[\"GET\"").is_err());
        assert!(parse_command(br#"["GET",null]"#).is_err());
        assert_eq!(parse_batch(br#"[["PING"],["GET","k"]]"#).unwrap().len(), 2);
        assert!(parse_batch(b"[]").is_err());
        assert!(parse_batch(br#"[["PING"],[]]"#).is_err());
        assert!(parse_batch(br#"["PING"]"#).is_err());
    }

    #[test]
    fn fault_modes() {
        assert_eq!(Fault::parse("none"), Some(Fault::None));
        assert_eq!(Fault::parse("delay:250"), Some(Fault::Delay(250)));
        assert_eq!(Fault::parse("error500"), Some(Fault::Error500));
        assert_eq!(Fault::parse("garbage"), Some(Fault::Garbage));
        assert_eq!(Fault::parse("unauthorized"), Some(Fault::Unauthorized));
        assert_eq!(Fault::parse("drop"), Some(Fault::Drop));
        assert_eq!(Fault::parse("delay:x"), None);
        assert_eq!(Fault::parse("bogus"), None);
        assert_eq!(Fault::Delay(7).name(), "delay:7");
    }

    #[test]
    fn script_translation() {
        let st = State::new("t".into(), "127.0.0.1:1".into(), Fault::None);
        let src = b"#!lua flags=allow-key-locking\nreturn 1".to_vec();
        let client_sha = script::sha1_hex(&src);
        let redis_sha = script::sha1_hex(b"#!lua\nreturn 1");
        let p = st.prepare(vec![b"eval".to_vec(), src.clone(), b"0".to_vec()]).unwrap();
        assert_eq!(p.args[1], b"#!lua\nreturn 1");
        let p = st.prepare(vec![b"EVALSHA".to_vec(), client_sha.to_uppercase().into_bytes(), b"0".to_vec()]).unwrap();
        assert_eq!(p.args[1], redis_sha.as_bytes());
        let p = st.prepare(vec![b"SCRIPT".to_vec(), b"load".to_vec(), src]).unwrap();
        assert_eq!(p.script_load_sha.as_deref(), Some(client_sha.as_str()));
        let p = st
            .prepare(vec![b"SCRIPT".to_vec(), b"EXISTS".to_vec(), client_sha.clone().into_bytes(), b"abc".to_vec()])
            .unwrap();
        assert_eq!(p.args[2], redis_sha.as_bytes());
        assert_eq!(p.args[3], b"abc");
        // Unknown SHAs pass through so Redis answers NOSCRIPT itself.
        let p = st.prepare(vec![b"EVALSHA".to_vec(), b"ffff".to_vec(), b"0".to_vec()]).unwrap();
        assert_eq!(p.args[1], b"ffff");
        assert!(st.prepare(vec![b"multi".to_vec()]).is_err());
        assert!(st.prepare(vec![]).is_err());
    }
}
