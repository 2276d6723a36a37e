//! The Worker's calls into the runtime, each one crossing (`runtime.js`): reading the
//! request's fields, the Upstash call, forwarding to the origin and making an answer. Through
//! the `worker` crate's types each of these is tens of calls between the wasm and JavaScript
//! (a header set, a stream chunk, a promise step each); here it is one, with plain values.
//! A leaf: it knows nothing of the Worker, so `store` and `edge` both use it.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

pub mod task;

#[wasm_bindgen(module = "/src/runtime.js")]
extern "C" {
    #[wasm_bindgen(js_name = readRequest)]
    fn read_request(request: &web_sys::Request, names: &JsValue) -> String;
    #[wasm_bindgen(js_name = readGeo)]
    fn read_geo(request: &web_sys::Request, test: bool) -> String;
    #[wasm_bindgen(js_name = upstashPost)]
    fn upstash_post(
        url: &JsValue,
        authorization: &JsValue,
        body: &str,
        timeout_ms: u32,
        done: &js_sys::Function,
        ticket: u32,
    );
    #[wasm_bindgen(js_name = forward)]
    #[allow(clippy::too_many_arguments)]
    fn forward_js(
        request: &web_sys::Request,
        url: &str,
        to_origin: &str,
        added: &str,
        websocket: bool,
        hook: &js_sys::Function,
        public_origin: &str,
        origin: Option<String>,
    ) -> js_sys::Promise;
    #[wasm_bindgen(js_name = answer)]
    fn answer_js(status: u16, fields: &str, body: &str) -> web_sys::Response;
    #[wasm_bindgen(js_name = analyticsDataset)]
    fn analytics_dataset_js(env: &JsValue, name: &str) -> JsValue;
    #[wasm_bindgen(js_name = analyticsWrite, catch)]
    fn analytics_write_js(dataset: &JsValue, points: &str) -> Result<js_sys::Promise, JsValue>;
}

/// The Analytics Engine dataset bound to the Worker as `name`, if there is one.
pub fn analytics_dataset(env: &JsValue, name: &str) -> Option<JsValue> {
    Some(analytics_dataset_js(env, name)).filter(|d| !d.is_undefined())
}

/// Writes `points` (a JSON array of data points) to `dataset`; the error as text.
pub async fn analytics_write(dataset: &JsValue, points: &str) -> Result<(), String> {
    let described =
        |e: JsValue| e.as_string().or_else(|| js_sys::Error::from(e).message().as_string()).unwrap_or_default();
    let promise = analytics_write_js(dataset, points).map_err(described)?;
    JsFuture::from(promise).await.map(|_| ()).map_err(described)
}

/// Fields as they cross: `name\nvalue\n...`. Values with a newline are left out (no runtime
/// accepts them, and none of ours has one).
pub fn field_list<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(256);
    for (name, value) in pairs {
        if value.as_bytes().contains(&b'\n') || name.as_bytes().contains(&b'\n') {
            debug_assert!(false, "a field with a newline: {name}");
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
    }
    out
}

/// What the limiter reads of a request, read in one call: its method, its URL, and the
/// values of the fields named (in the order named; `None` when absent or not named).
pub struct Read<const N: usize> {
    pub method: String,
    pub url: String,
    pub values: [Option<String>; N],
}

thread_local! {
    /// The names last read, as the runtime's own string: they change only with the policy or
    /// the lists, so a request passes a reference, not a copy of their text.
    static NAMES: std::cell::RefCell<(Vec<String>, JsValue)> = const { std::cell::RefCell::new((Vec::new(), JsValue::UNDEFINED)) };
}

/// Reads `names` of `request` (an empty name is not read).
pub fn read<const N: usize>(request: &web_sys::Request, names: &[&str; N]) -> Read<N> {
    let text = NAMES.with_borrow_mut(|(last, js)| {
        if !last.iter().map(String::as_str).eq(names.iter().copied()) {
            *last = names.iter().map(|n| n.to_string()).collect();
            *js = JsValue::from_str(&names.join("\n"));
        }
        read_request(request, js)
    });
    let mut parts = text.split('\n');
    let method = parts.next().unwrap_or_default().to_string();
    let url = parts.next().unwrap_or_default().to_string();
    let values = std::array::from_fn(|_| parts.next().filter(|v| *v != "\0").map(str::to_string));
    Read { method, url, values }
}

/// The request's country and ASN (`request.cf`), each when known; with `test`, the test
/// harness's stand-in fields (`readGeo` in `runtime.js`).
pub fn geo(request: &web_sys::Request, test: bool) -> (Option<String>, Option<u32>) {
    let text = read_geo(request, test);
    let (country, asn) = text.split_once('\n').unwrap_or((&text, ""));
    let country = (!country.is_empty()).then(|| country.to_string());
    (country, asn.trim().parse().ok())
}

/// Why an Upstash call got no answer.
pub enum PostError {
    Timeout,
    Network(String),
}

type Posted = Result<(u16, String), PostError>;

/// An Upstash call in flight: what its answer finds when it comes (`done`).
enum Flight {
    Waiting { waker: Option<std::task::Waker>, task: Option<task::Current> },
    Answered(Posted),
}

thread_local! {
    /// The calls in flight, by ticket.
    static FLIGHTS: std::cell::RefCell<std::collections::HashMap<u32, Flight>> = Default::default();
    static NEXT_TICKET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// What `upstashPost` calls with the answer: made once per isolate.
    static DONE: js_sys::Function = wasm_bindgen::closure::Closure::<dyn Fn(u32, u32, u16, String)>::new(done)
        .into_js_value()
        .unchecked_into();
}

/// The answer of the call `ticket` (`kind`: 0 answered with `status` and `body`, 1 timed out,
/// 2 failed with `body` as the reason), kept for its future, whose task is then polled at
/// once: this runs in the continuation of the call the task made, its own context.
fn done(ticket: u32, kind: u32, status: u16, body: String) {
    let answer = match kind {
        0 => Ok((status, body)),
        1 => Err(PostError::Timeout),
        _ => Err(PostError::Network(body)),
    };
    let waiting = FLIGHTS.with(|f| {
        let mut flights = f.borrow_mut();
        // None: its future was dropped (the request went away): the answer goes with it.
        let flight = flights.get_mut(&ticket)?;
        match std::mem::replace(flight, Flight::Answered(answer)) {
            Flight::Waiting { waker, task } => Some((waker, task)),
            Flight::Answered(_) => None,
        }
    });
    if let Some((waker, task)) = waiting {
        if !task.is_some_and(task::resume) {
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// One POST to Upstash's REST endpoint, in flight: its status and body text when it comes.
/// The call is made in JavaScript and its answer handed back through one function made once
/// (`done`), not a promise awaited through the glue (two closures made and one microtask
/// queued per call).
struct Post {
    ticket: u32,
}

impl std::future::Future for Post {
    type Output = Posted;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Posted> {
        FLIGHTS.with(|f| {
            let mut flights = f.borrow_mut();
            match flights.remove(&self.ticket) {
                Some(Flight::Answered(answer)) => std::task::Poll::Ready(answer),
                Some(Flight::Waiting { .. }) | None => {
                    let waiting = Flight::Waiting { waker: Some(cx.waker().clone()), task: task::current() };
                    flights.insert(self.ticket, waiting);
                    std::task::Poll::Pending
                }
            }
        })
    }
}

impl Drop for Post {
    fn drop(&mut self) {
        FLIGHTS.with(|f| f.borrow_mut().remove(&self.ticket));
    }
}

/// One POST to Upstash's REST endpoint (its URL and `Authorization` field as the runtime's
/// strings, made once): its status and body text.
pub async fn post(
    url: &JsValue,
    authorization: &JsValue,
    body: &str,
    timeout_ms: u64,
) -> Result<(u16, String), PostError> {
    let ms = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
    let ticket = NEXT_TICKET.with(|n| {
        let t = n.get();
        n.set(t.wrapping_add(1));
        t
    });
    FLIGHTS.with(|f| f.borrow_mut().insert(ticket, Flight::Waiting { waker: None, task: None }));
    let post = Post { ticket };
    DONE.with(|done| upstash_post(url, authorization, body, ms, done, ticket));
    post.await
}

/// A JavaScript function that calls `f`: made once and kept, for the runtime to call back
/// with `(kind, a, b)` (see `forward` in `runtime.js`).
pub fn callback(f: impl Fn(u32, Option<String>, Option<String>) -> JsValue + 'static) -> js_sys::Function {
    let f = wasm_bindgen::closure::Closure::<dyn Fn(u32, Option<String>, Option<String>) -> JsValue>::new(f);
    f.into_js_value().unchecked_into()
}

/// Forwards `request` to `url` (see `forward` in `runtime.js`): the promise of the answer to
/// send back, which `hook` (a [`callback`]) completes where it needs the wasm's judgment.
/// `public_origin` is set when `Location`s are to be re-pointed; `origin` is the request's
/// `Origin`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    request: &web_sys::Request,
    url: &str,
    to_origin: &str,
    added: &str,
    websocket: bool,
    hook: &js_sys::Function,
    public_origin: &str,
    origin: Option<&str>,
) -> js_sys::Promise {
    forward_js(request, url, to_origin, added, websocket, hook, public_origin, origin.map(str::to_string))
}

/// The answer of [`forward`], awaited (for a relay, which needs the origin's socket).
pub async fn answered(promise: js_sys::Promise) -> Result<web_sys::Response, JsValue> {
    JsFuture::from(promise).await?.dyn_into::<web_sys::Response>()
}

/// One of the limiter's own answers.
pub fn answer(status: u16, fields: &str, body: &str) -> web_sys::Response {
    answer_js(status, fields, body)
}

/// The origin's socket of a 101 answer made by [`forward`].
pub fn websocket_of(response: &web_sys::Response) -> Option<worker::WebSocket> {
    let ws = js_sys::Reflect::get(response, &JsValue::from_str("webSocket")).ok()?;
    ws.dyn_into::<web_sys::WebSocket>().ok().map(worker::WebSocket::from)
}
