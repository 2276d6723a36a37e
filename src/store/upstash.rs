//! The Upstash store: a small, typed client of the Upstash Redis REST API, doing one thing,
//! the check-and-consume script, in one HTTP round trip per call: a single check (the Store
//! trait), or a batch of checks, leases and refunds ([`UpstashStore::batch`]).
//!
//! The protocol (request bodies, reply decoding, the EVALSHA-then-EVAL rule) is pure and
//! tested natively. The one impure part, a [`Transport`] that POSTs a body and returns the
//! status and text, is the runtime's `fetch` with a timeout in the Worker
//! (`FetchTransport`, wasm only).

use serde_json::Value;

use super::script::{batch_args, decode_batch, Answer, Op, CHECK_LUA, CHECK_SHA1, FLEET_LUA, FLEET_SHA1};
use super::{CheckRequest, Store, StoreError};
use crate::core::algorithm::{Algorithm, Decision, Millis};

/// Where the database is and how to get in: `UPSTASH_REDIS_REST_URL` and
/// `UPSTASH_REDIS_REST_TOKEN`, the names the Upstash console and its own clients use.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: it never reaches a log through a `{:?}`.
        f.debug_struct("Endpoint").field("url", &self.url).field("token", &"<redacted>").finish()
    }
}

impl Endpoint {
    /// Reads the two settings. Neither set: `Ok(None)`, the Worker runs on memory. One set
    /// without the other, or a URL that is not http(s): an error saying which.
    pub fn from_settings(url: Option<&str>, token: Option<&str>) -> Result<Option<Endpoint>, String> {
        let url = url.map(str::trim).filter(|s| !s.is_empty());
        let token = token.map(str::trim).filter(|s| !s.is_empty());
        match (url, token) {
            (None, None) => Ok(None),
            (Some(_), None) => Err("UPSTASH_REDIS_REST_URL is set but UPSTASH_REDIS_REST_TOKEN is not \
                                    (set it with `wrangler secret put UPSTASH_REDIS_REST_TOKEN`)"
                .into()),
            (None, Some(_)) => Err("UPSTASH_REDIS_REST_TOKEN is set but UPSTASH_REDIS_REST_URL is not".into()),
            (Some(url), Some(token)) => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) || url.len() <= "http://".len() {
                    return Err(format!(
                        "UPSTASH_REDIS_REST_URL must be an http(s) URL such as https://<name>.upstash.io, not {url:?}"
                    ));
                }
                if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    return Err("UPSTASH_REDIS_REST_TOKEN contains spaces or control characters".into());
                }
                Ok(Some(Endpoint { url: url.trim_end_matches('/').to_string(), token: token.to_string() }))
            }
        }
    }

    /// The `Authorization` field value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// Sends one command body to the REST endpoint and returns the HTTP status and body text,
/// or the failure that kept it from getting them (timeout, network).
#[allow(async_fn_in_trait)] // one thread per isolate: no `Send` bound is wanted.
pub trait Transport {
    async fn post(&self, body: String) -> Result<(u16, String), StoreError>;
}

/// `["EVALSHA", sha, numkeys, keys..., args...]` (or EVAL with the script text), as the JSON
/// array the REST API takes in a POST to its root. Each part is written by serde_json straight
/// into one buffer: no array of parts is collected first.
pub fn script_body(script_or_sha: (&str, &str), keys: &[String], args: &[String]) -> String {
    let (verb, script) = script_or_sha;
    let count = keys.len().to_string();
    let parts = keys.iter().chain(args).map(String::len).sum::<usize>();
    let mut out = Vec::with_capacity(verb.len() + script.len() + parts + 4 * (keys.len() + args.len()) + 24);
    out.push(b'[');
    let head = [verb, script, count.as_str()].into_iter();
    for (i, part) in head.chain(keys.iter().chain(args).map(String::as_str)).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if serde_json::to_writer(&mut out, part).is_err() {
            return String::new();
        }
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

/// Longest piece of a server's message kept for a log line.
const MESSAGE_LIMIT: usize = 200;

fn clip(text: &str) -> String {
    let mut end = text.len().min(MESSAGE_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!("{}{more}", text[..end].trim())
}

/// Reads the answer to one command: `{"result": ...}` with 200, or `{"error": "..."}` with
/// 400 for a Redis error, 401 for a bad token, 5xx for trouble.
pub fn read_reply(status: u16, body: &str) -> Result<Value, StoreError> {
    if status == 401 || status == 403 {
        return Err(StoreError::Unauthorized);
    }
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error =
        parsed.as_ref().and_then(|v| v.get("error")).map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string));
    if status >= 500 || !(200..300).contains(&status) && status != 400 {
        let message = error.unwrap_or_else(|| clip(body));
        return Err(StoreError::Server { status, message: clip(&message) });
    }
    if let Some(message) = error {
        return Err(if message.starts_with("NOSCRIPT") {
            StoreError::ScriptMissing
        } else {
            StoreError::Command(clip(&message))
        });
    }
    let Some(parsed) = parsed else {
        return Err(StoreError::Malformed(format!("not JSON: {:?}", clip(body))));
    };
    if status == 400 {
        return Err(StoreError::Malformed(format!("400 without an error field: {}", clip(body))));
    }
    match parsed {
        Value::Object(mut fields) => {
            fields.remove("result").ok_or_else(|| StoreError::Malformed(format!("no result in {}", clip(body))))
        }
        _ => Err(StoreError::Malformed(format!("not an object: {}", clip(body)))),
    }
}

/// Reads the answer to a script call: an array of integers.
pub fn read_script_reply(status: u16, body: &str) -> Result<Vec<i64>, StoreError> {
    if status == 200 {
        if let Some(numbers) = plain_script_reply(body) {
            return Ok(numbers);
        }
    }
    let result = read_reply(status, body)?;
    let items = result.as_array().ok_or_else(|| StoreError::Malformed(format!("no result array in {}", clip(body))))?;
    items
        .iter()
        .map(|item| item.as_i64().ok_or_else(|| StoreError::Malformed(format!("{item} is not an integer"))))
        .collect()
}

/// The answer as Upstash writes a script's integers, `{"result":[n,n,...]}` with nothing
/// else, read with no JSON value built; `None` for anything else (spaces, other fields, a
/// number JSON would not write), which [`read_reply`] then reads in full. Where both read a
/// body they read the same numbers (the fuzz target `upstash_reply` checks it).
pub fn plain_script_reply(body: &str) -> Option<Vec<i64>> {
    let list = body.strip_prefix(r#"{"result":["#)?.strip_suffix("]}")?;
    let mut numbers = Vec::with_capacity(list.len() / 2 + 1);
    if list.is_empty() {
        return Some(numbers);
    }
    for item in list.split(',') {
        let negative = item.starts_with('-');
        let digits = item.get(usize::from(negative)..).unwrap_or_default();
        // As serde_json reads an integer: no leading zero, and no `-0` (a float to it).
        let json_integer = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits.len() == 1 || !digits.starts_with('0'))
            && !(negative && digits == "0");
        if !json_integer {
            return None;
        }
        numbers.push(item.parse().ok()?);
    }
    Some(numbers)
}

/// The store: every limit of the caller's tier checked and consumed by one script call.
pub struct UpstashStore<T> {
    transport: T,
    key_prefix: String,
}

impl<T: Transport> UpstashStore<T> {
    pub fn new(transport: T, key_prefix: &str) -> UpstashStore<T> {
        UpstashStore { transport, key_prefix: key_prefix.to_string() }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The prefix of every key this store writes: a batch's keys are its requests'
    /// `CheckRequest::state_keys(prefix)`, concatenated in the order of its operations.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// One plain command (`["HGETALL", key]`), its `result` as JSON: for the few reads and
    /// writes that are not the check script (the runtime controls).
    pub async fn command(&self, args: &[&str]) -> Result<Value, StoreError> {
        let body = Value::Array(args.iter().map(|a| Value::from(*a)).collect()).to_string();
        let (status, body) = self.transport.post(body).await?;
        read_reply(status, &body)
    }

    /// The fleet view's script (`fleet.lua`), EVALSHA then EVAL as for the check: one call,
    /// its result as JSON.
    pub async fn fleet(&self, keys: &[String], args: &[String]) -> Result<Value, StoreError> {
        self.eval((FLEET_SHA1, FLEET_LUA), keys, args, read_reply).await
    }

    /// Runs `ops` in one script call at `now`, each atomic on its own keys (`keys`: every
    /// operation's keys, one per limit, in order), and returns one answer per operation.
    pub async fn batch<L: AsRef<Algorithm>>(
        &self,
        keys: &[String],
        now: Millis,
        ops: &[Op<'_, L>],
    ) -> Result<Vec<Answer>, StoreError> {
        let limits: usize = ops.iter().map(|op| op.limits().len()).sum();
        if keys.len() != limits {
            return Err(StoreError::Command(format!("{} keys for {limits} limits", keys.len())));
        }
        let reply = self.run_script(keys, &batch_args(now, ops)).await?;
        decode_batch(&reply, ops).map_err(|e| StoreError::Malformed(e.0))
    }

    /// EVALSHA; if Redis has lost the script (restart, flush, failover), EVAL with the same
    /// keys and arguments, which also loads it, so the next request is an EVALSHA again.
    async fn run_script(&self, keys: &[String], args: &[String]) -> Result<Vec<i64>, StoreError> {
        self.eval((CHECK_SHA1, CHECK_LUA), keys, args, read_script_reply).await
    }

    /// A script by its SHA-1 (`script`: SHA-1 and text), sent again as text when Redis
    /// answers NOSCRIPT; `read` reads the answer.
    async fn eval<R>(
        &self,
        script: (&str, &str),
        keys: &[String],
        args: &[String],
        read: fn(u16, &str) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let (sha, lua) = script;
        let (status, body) = self.transport.post(script_body(("EVALSHA", sha), keys, args)).await?;
        match read(status, &body) {
            Err(StoreError::ScriptMissing) => {
                let (status, body) = self.transport.post(script_body(("EVAL", lua), keys, args)).await?;
                read(status, &body)
            }
            other => other,
        }
    }
}

impl<T: Transport> Store for UpstashStore<T> {
    async fn reset(&self, r: &CheckRequest<'_>) -> Result<(), StoreError> {
        let mut command = vec![Value::from("DEL")];
        command.extend(r.state_keys(&self.key_prefix).into_iter().map(Value::from));
        let (status, body) = self.transport.post(Value::Array(command).to_string()).await?;
        match read_reply(status, &body)? {
            Value::Number(_) => Ok(()),
            other => Err(StoreError::Malformed(format!("DEL answered {other}"))),
        }
    }

    fn keys(&self, r: &CheckRequest<'_>) -> Vec<String> {
        r.state_keys(&self.key_prefix)
    }

    async fn run(&self, keys: &[String], now: Millis, ops: &[Op<'_, Algorithm>]) -> Result<Vec<Answer>, StoreError> {
        self.batch(keys, now, ops).await
    }

    async fn check(&self, r: &CheckRequest<'_>) -> Result<Decision, StoreError> {
        // A batch of one: a lease that wants no more than the cost, which is the check.
        let keys = r.state_keys(&self.key_prefix);
        match self.batch(&keys, r.now, &[Op::check(r.limits(), r.cost)]).await?.as_slice() {
            [Answer::Lease(lease)] => Ok(lease.decision),
            other => Err(StoreError::Malformed(format!("a check answered {other:?}"))),
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use fetch::FetchTransport;

#[cfg(target_arch = "wasm32")]
mod fetch {
    use super::{Endpoint, StoreError, Transport};
    use crate::runtime::{self, PostError};

    /// A `fetch` to the REST endpoint, aborted after the policy's
    /// `store.timeout`, reading the body included: one call into the runtime
    /// (`runtime::post`), the reply read whole as text.
    pub struct FetchTransport {
        pub timeout_ms: u64,
        /// The endpoint's URL and `Authorization` field as the runtime's own strings, made
        /// once: each call passes a reference, not a copy of their text.
        url: wasm_bindgen::JsValue,
        bearer: wasm_bindgen::JsValue,
    }

    impl FetchTransport {
        pub fn new(endpoint: Endpoint, timeout_ms: u64) -> FetchTransport {
            let url = wasm_bindgen::JsValue::from_str(&endpoint.url);
            let bearer = wasm_bindgen::JsValue::from_str(&endpoint.bearer());
            FetchTransport { timeout_ms, url, bearer }
        }
    }

    impl Transport for FetchTransport {
        async fn post(&self, body: String) -> Result<(u16, String), StoreError> {
            runtime::post(&self.url, &self.bearer, &body, self.timeout_ms).await.map_err(|e| match e {
                PostError::Timeout => StoreError::Timeout { after_ms: self.timeout_ms },
                PostError::Network(why) => StoreError::Network(why),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::algorithm::{Algorithm, Outcome};
    use crate::core::subject::SubjectDigest;
    use crate::store::run_ready as run;
    use std::cell::RefCell;

    /// Answers each POST with the next canned reply and records the bodies.
    struct Canned {
        replies: RefCell<Vec<Result<(u16, String), StoreError>>>,
        sent: RefCell<Vec<String>>,
    }

    impl Canned {
        fn new(mut replies: Vec<Result<(u16, &str), StoreError>>) -> Canned {
            replies.reverse();
            let replies = replies.into_iter().map(|r| r.map(|(s, b)| (s, b.to_string()))).collect();
            Canned { replies: RefCell::new(replies), sent: RefCell::new(Vec::new()) }
        }
    }

    impl Transport for Canned {
        async fn post(&self, body: String) -> Result<(u16, String), StoreError> {
            self.sent.borrow_mut().push(body);
            self.replies.borrow_mut().pop().expect("no reply left")
        }
    }

    fn check(store: &UpstashStore<Canned>) -> Result<Decision, StoreError> {
        let tier = crate::store::test_tier("anon", "minute", Algorithm::fixed_window(5, 60_000).unwrap());
        let subject = SubjectDigest::raw("ab");
        run(store.check(&CheckRequest::new(&tier, &subject, 1_000, 1)))
    }

    const ALLOWED: &str = r#"{"result":[0,1,1,60000,0,4,59000,0]}"#;

    #[test]
    fn settings_are_both_or_neither() {
        assert_eq!(Endpoint::from_settings(None, Some(" ")), Ok(None));
        let e = Endpoint::from_settings(Some("https://x.upstash.io/"), Some("t0k")).unwrap().unwrap();
        assert_eq!((e.url.as_str(), e.bearer().as_str()), ("https://x.upstash.io", "Bearer t0k"));
        assert!(!format!("{e:?}").contains("t0k"), "Debug hides the token");
        assert!(Endpoint::from_settings(Some("https://x"), None).unwrap_err().contains("UPSTASH_REDIS_REST_TOKEN"));
        assert!(Endpoint::from_settings(None, Some("t")).unwrap_err().contains("UPSTASH_REDIS_REST_URL"));
        assert!(Endpoint::from_settings(Some("x.upstash.io"), Some("t")).unwrap_err().contains("http(s)"));
        assert!(Endpoint::from_settings(Some("https://x"), Some("a b")).is_err());
    }

    #[test]
    fn bodies_are_json_command_arrays() {
        let body = script_body(("EVALSHA", "abc"), &["k1".into(), "k\"2".into()], &["1".into()]);
        assert_eq!(body, r#"["EVALSHA","abc","2","k1","k\"2","1"]"#);
    }

    #[test]
    fn bodies_escape_what_json_must() {
        // Byte for byte what serde_json writes for the same parts as one array.
        let keys: Vec<String> = vec!["a\\b".into(), "\u{1}é\u{1f}".into(), "q\"\n\r\t\u{8}\u{c}".into(), String::new()];
        let args: Vec<String> = vec!["-12".into(), "1776000000123".into()];
        let body = script_body(("EVAL", "return 'x'\n"), &keys, &args);
        let mut parts = vec!["EVAL".to_string(), "return 'x'\n".into(), "4".into()];
        parts.extend(keys.iter().chain(&args).cloned());
        assert_eq!(body, serde_json::to_string(&parts).unwrap());
    }

    #[test]
    fn plain_replies_read_as_the_full_reader_does() {
        for body in [r#"{"result":[]}"#, r#"{"result":[0,1,-2,1776000000123]}"#, r#"{"result":[9223372036854775807]}"#]
        {
            assert_eq!(plain_script_reply(body), read_script_reply(200, body).ok(), "{body}");
            assert!(plain_script_reply(body).is_some(), "{body}");
        }
        // Anything else is left to the full reader: spaces, leading zeros, signs, overflow,
        // fractions, other fields.
        for body in [
            r#"{"result": [1]}"#,
            r#"{"result":[01]}"#,
            r#"{"result":[+1]}"#,
            r#"{"result":[-]}"#,
            r#"{"result":[0,-0,1]}"#,
            r#"{"result":[1,]}"#,
            r#"{"result":[9223372036854775808]}"#,
            r#"{"result":[1.5]}"#,
            r#"{"result":[1],"error":"x"}"#,
        ] {
            assert_eq!(plain_script_reply(body), None, "{body}");
        }
        assert_eq!(read_script_reply(200, r#"{"result": [1, 2]}"#), Ok(vec![1, 2]));
    }

    #[test]
    fn replies_are_told_apart() {
        assert_eq!(read_script_reply(200, r#"{"result":[0,1,2]}"#), Ok(vec![0, 1, 2]));
        assert_eq!(read_script_reply(401, r#"{"error":"Unauthorized"}"#), Err(StoreError::Unauthorized));
        assert_eq!(read_script_reply(403, ""), Err(StoreError::Unauthorized));
        let noscript = r#"{"error":"NOSCRIPT No matching script. Please use EVAL."}"#;
        assert_eq!(read_script_reply(400, noscript), Err(StoreError::ScriptMissing));
        assert_eq!(
            read_script_reply(400, r#"{"error":"ERR wrong number of arguments"}"#),
            Err(StoreError::Command("ERR wrong number of arguments".into()))
        );
        assert_eq!(
            read_script_reply(500, r#"{"error":"injected"}"#),
            Err(StoreError::Server { status: 500, message: "injected".into() })
        );
        assert!(matches!(
            read_script_reply(502, "<html>bad gateway</html>"),
            Err(StoreError::Server { status: 502, .. })
        ));
        assert!(matches!(read_script_reply(302, ""), Err(StoreError::Server { status: 302, .. })));
        for garbage in ["", "<html>", "{\"result\":\"OK\"}", "{\"result\":[1,\"x\"]}", "{\"result\":[1.5]}", "[1,2]"] {
            assert!(matches!(read_script_reply(200, garbage), Err(StoreError::Malformed(_))), "{garbage}");
        }
        assert!(matches!(read_script_reply(400, "{}"), Err(StoreError::Malformed(_))));
        let long = "x".repeat(10_000);
        match read_script_reply(503, &long) {
            Err(StoreError::Server { message, .. }) => assert!(message.len() < 300),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn steady_state_is_one_evalsha() {
        let store = UpstashStore::new(Canned::new(vec![Ok((200, ALLOWED))]), "rl");
        let decision = check(&store).unwrap();
        assert_eq!((decision.outcome, decision.remaining()), (Outcome::Allowed, 4));
        let sent = store.transport().sent.borrow();
        assert_eq!(sent.len(), 1);
        let command: Vec<String> = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(command[..4], ["EVALSHA", CHECK_SHA1, "1", "rl:anon:minute:fw5-60000:ab"]);
        assert_eq!(command[4..], ["1000", "1", "1", "1", "1", "1", "2", "5", "60000", "0"]);
    }

    #[test]
    fn a_batch_is_one_call_with_every_operation() {
        let limits = [Algorithm::fixed_window(10, 60_000).unwrap()];
        let reply = r#"{"result":[0,1,5,60000,0,5,59000,0,3]}"#;
        let store = UpstashStore::new(Canned::new(vec![Ok((200, reply))]), "rl");
        let ops = [
            Op::Check { limits: &limits[..], cost: 1, want: 9 },
            Op::Refund { limits: &limits[..], units: 3, granted_at: 500 },
        ];
        let keys = ["rl:a".to_string(), "rl:a".to_string()];
        let answers = run(store.batch(&keys, 1_000, &ops)).unwrap();
        let [Answer::Lease(lease), Answer::Refund(refund)] = answers.as_slice() else { panic!("{answers:?}") };
        assert_eq!((lease.granted, lease.until, refund.limits()), (5, 60_000, &[3][..]));
        let sent = store.transport().sent.borrow();
        let command: Vec<String> = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(command[2..5], ["2", "rl:a", "rl:a"]);
        assert_eq!(command[5..7], ["1000", "2"]);
        assert_eq!(store.key_prefix(), "rl");
        // Keys that do not fit the operations are refused before any call.
        assert!(matches!(run(store.batch(&keys[..1], 1_000, &ops)), Err(StoreError::Command(_))));
        assert_eq!(sent.len(), 1);
    }

    #[test]
    fn noscript_is_answered_with_eval_of_the_same_call() {
        let noscript = r#"{"error":"NOSCRIPT No matching script. Please use EVAL."}"#;
        let store = UpstashStore::new(Canned::new(vec![Ok((400, noscript)), Ok((200, ALLOWED))]), "rl");
        assert!(check(&store).unwrap().allowed());
        let sent = store.transport().sent.borrow();
        let first: Vec<String> = serde_json::from_str(&sent[0]).unwrap();
        let second: Vec<String> = serde_json::from_str(&sent[1]).unwrap();
        assert_eq!((first[0].as_str(), second[0].as_str(), second[1].as_str()), ("EVALSHA", "EVAL", CHECK_LUA));
        assert_eq!(first[2..], second[2..], "same keys and arguments");
    }

    #[test]
    fn failures_pass_through_typed() {
        let noscript = r#"{"error":"NOSCRIPT No matching script."}"#;
        let twice = UpstashStore::new(Canned::new(vec![Ok((400, noscript)), Ok((400, noscript))]), "rl");
        assert_eq!(check(&twice).unwrap_err(), StoreError::ScriptMissing);
        let timeout = UpstashStore::new(Canned::new(vec![Err(StoreError::Timeout { after_ms: 300 })]), "rl");
        assert_eq!(check(&timeout).unwrap_err().class(), "timeout");
        let short = UpstashStore::new(Canned::new(vec![Ok((200, r#"{"result":[0,1]}"#))]), "rl");
        assert!(matches!(check(&short).unwrap_err(), StoreError::Malformed(_)));
        assert_eq!(timeout.transport().sent.borrow().len(), 1, "a timeout is not retried");
    }
}
