// The Worker's few calls into the runtime, each one crossing from the wasm where the `worker`
// crate's types would make many: every property read, header set, stream chunk and promise
// through wasm-bindgen is a call between the wasm and JavaScript (the profile of issue 17,
// docs/results/profile.md). Only I/O and the runtime's own objects are handled here; every
// decision is the wasm's (src/runtime/mod.rs has the Rust side).
//
// Lists of fields cross as one string, `name\nvalue\nname\nvalue`: neither a field name nor
// a value can hold a newline (the runtime refuses them).

/** Connection-level fields that must not cross a proxy (RFC 9110 §7.6.1), `host` (the URL
 * decides it), and `x-edge-limiter-own-answer`, a name the limiter keeps for itself (it once
 * marked its own answers): passed neither way. */
const HOP_BY_HOP = [
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
  "transfer-encoding", "upgrade", "host", "x-edge-limiter-own-answer",
];

export function setAll(headers, fields) {
  if (!fields) return;
  const list = fields.split("\n");
  for (let i = 0; i + 1 < list.length; i += 2) headers.set(list[i], list[i + 1]);
}

/** `setAll` for a redirect: without the draft's `RateLimit` fields, which its -12 says a
 * server should avoid on a redirection (the request it leads to gets its own). */
function setAllButRateLimit(headers, fields) {
  if (!fields) return;
  const list = fields.split("\n");
  for (let i = 0; i + 1 < list.length; i += 2) {
    if (list[i] !== "RateLimit" && list[i] !== "RateLimit-Policy") headers.set(list[i], list[i + 1]);
  }
}

/** Drops from `headers`, in place, the fields that must not cross, and sets `Upgrade:
 * websocket` exactly for a handshake. In place: the request and the answer built around the
 * runtime's objects each copy the fields once, as a JavaScript proxy's would. */
export function strip(headers, websocket) {
  for (const name of HOP_BY_HOP) headers.delete(name);
  if (websocket) {
    headers.set("Upgrade", "websocket");
    headers.set("Connection", "Upgrade");
  }
}

/** The names last read, split (they change only with the policy or the lists). */
let lastNames = "", lastList = [];

/**
 * The request's method, URL and the named fields in one string: `method\nurl\n` then, per
 * name, `\n`-separated, its value, or `\0` when absent (or when the name is empty: not read).
 */
export function readRequest(request, names) {
  if (names !== lastNames) {
    lastNames = names;
    lastList = names.split("\n");
  }
  const h = request.headers;
  let out = request.method + "\n" + request.url;
  for (const name of lastList) {
    let v = null;
    if (name) {
      try {
        v = h.get(name);
      } catch {
        // Not a field name: nothing can be sent under it.
      }
    }
    out += "\n" + (v === null ? "\0" : v);
  }
  return out;
}

/**
 * The country and ASN of `request.cf` as `country\nasn` (empty for absent). With `test`,
 * `X-Test-Country` and `X-Test-Asn` stand in for them (a local run has no `cf`; only the
 * end-to-end tests set the variable that turns this on).
 */
export function readGeo(request, test) {
  const cf = request.cf;
  let country = cf && cf.country ? String(cf.country) : "";
  let asn = cf && cf.asn ? String(cf.asn) : "";
  if (test) {
    country = request.headers.get("x-test-country") ?? country;
    asn = request.headers.get("x-test-asn") ?? asn;
  }
  return country.replace(/\n/g, "") + "\n" + asn.replace(/\n/g, "");
}

/**
 * POSTs a command body to Upstash's REST endpoint, aborted after `timeoutMs`, and hands the
 * answer to `done(ticket, kind, status, body)`: kind 0 with the status and body text, 1 for a
 * timeout, 2 for a failure with its reason as `body`. `done` is the wasm's (made once per
 * isolate, src/runtime/mod.rs), called from this call's own continuation, so the request's
 * task goes on in its own context. The timer is cleared as soon as the answer is read:
 * `AbortSignal.timeout` would leave one timer per call pending for the whole timeout, and
 * firing them cost about 5 % of the Worker's CPU per request (measured side by side). The
 * call is aborted, not only given up: the runtime lets a request have at most six subrequests
 * waiting for their answer's headers at once and queues the rest, so a hung call left open would
 * keep its place for as long as the request lives (a WebSocket relay's checks, a batch, a hold's
 * retries) and the calls after it would queue behind it. (Without the signal, paired rounds gave
 * 0.98x-0.99x the CPU: not worth that.)
 */
export async function upstashPost(url, authorization, body, timeoutMs, done, ticket) {
  const controller = new AbortController();
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    controller.abort();
  }, timeoutMs);
  let kind = 0, status = 0, text;
  try {
    const r = await fetch(url, {
      method: "POST",
      headers: { authorization, "content-type": "application/json" },
      body,
      signal: controller.signal,
    });
    status = r.status;
    text = await r.text();
  } catch (e) {
    kind = late ? 1 : 2;
    text = e && e.message ? e.message : String(e);
  } finally {
    clearTimeout(timer);
  }
  try {
    done(ticket, kind, status, text ?? "");
  } catch (e) {
    // A trap in the wasm: thrown again from a microtask, uncaught, as it was when the task
    // was polled from one, so that the runtime reports it where the entry's recovery (a new
    // wasm instance for the next request, scripts/entry.mjs) sees it.
    queueMicrotask(() => {
      throw e;
    });
  }
}

/** The questions `forward` asks of the wasm through its hook (src/edge/proxy.rs, `hook`). */
const HOOK_LOCATION = 0, HOOK_EXPOSE = 1, HOOK_UNREACHABLE = 2;

/**
 * Sends `request` on to `url` with its method, fields (less the hop-by-hop ones, plus
 * `toOrigin`) and body as the runtime's own stream, redirects not followed; answers with the
 * origin's status, fields (less hop-by-hop, plus `added`) and body stream, or its socket for
 * a 101. What the answer needs of the wasm's judgment goes through `hook` (made once per
 * isolate by the wasm), only when it arises: `hook(HOOK_LOCATION, location, publicOrigin)` re-points a
 * `Location` at the public address (when `publicOrigin` is set), `hook(HOOK_EXPOSE, exposed, origin)`
 * adds the limiter's fields to a cross-origin answer's `Access-Control-Expose-Headers` (when
 * the request came with an `Origin`), and `hook(HOOK_UNREACHABLE, why, origin)` is the limiter's own answer
 * when the origin cannot be reached. Each returns a value, or undefined for none.
 */
export async function forward(request, url, toOrigin, added, websocket, hook, publicOrigin, origin) {
  const method = request.method;
  const upper = method.toUpperCase();
  const init = { method, headers: request.headers, redirect: "manual" };
  if (upper !== "GET" && upper !== "HEAD" && request.body) init.body = request.body;
  let answer;
  try {
    const outgoing = new Request(url, init);
    strip(outgoing.headers, websocket);
    setAll(outgoing.headers, toOrigin);
    answer = await fetch(outgoing);
  } catch (e) {
    return hook(HOOK_UNREACHABLE, e && e.message ? e.message : String(e), origin);
  }
  const status = answer.status;
  let response;
  if (status === 101) {
    if (!answer.webSocket) return hook(HOOK_UNREACHABLE, "the origin answered 101 without a WebSocket", origin);
    response = new Response(null, { status, headers: answer.headers, webSocket: answer.webSocket });
  } else {
    response = new Response(answer.body, answer);
  }
  const out = response.headers;
  strip(out, status === 101);
  if (status >= 300 && status < 400) setAllButRateLimit(out, added);
  else setAll(out, added);
  if (publicOrigin) {
    const location = out.get("location");
    const fixed = location === null ? undefined : hook(HOOK_LOCATION, location, publicOrigin);
    if (fixed !== undefined) out.set("Location", fixed);
  }
  if (origin && out.has("access-control-allow-origin")) {
    const list = hook(HOOK_EXPOSE, out.get("access-control-expose-headers"), origin);
    if (list !== undefined) out.set("Access-Control-Expose-Headers", list);
  }
  return response;
}

/** One of the limiter's own answers: a status, its fields and a text body. The fields are
 * set on the answer's own headers: a `Headers` given to the constructor would be copied. */
export function answer(status, fields, body) {
  const response = new Response(status === 204 || status === 304 ? null : body, { status });
  setAll(response.headers, fields);
  return response;
}

/**
 * Queues `poll(slot, generation)` as a microtask. It runs in the context of whatever queued
 * it: the wake of a request's own promise or timer, so each request's task is polled as that
 * request (see src/runtime/task.rs).
 */
export function later(poll, slot, generation) {
  queueMicrotask(() => poll(slot, generation));
}

/**
 * The Workers Analytics Engine dataset bound as `name`, or undefined: anything with a
 * `writeDataPoint` method (the runtime's dataset, or a test's stand-in).
 */
export function analyticsDataset(env, name) {
  const dataset = env?.[name];
  return dataset && typeof dataset.writeDataPoint === "function" ? dataset : undefined;
}

/**
 * Writes each of `points` (a JSON array of `writeDataPoint` arguments) to `dataset`. The
 * runtime's writes return nothing and need no waiting; the promise also waits for any
 * that return one.
 */
export function analyticsWrite(dataset, points) {
  return Promise.all(JSON.parse(points).map((point) => dataset.writeDataPoint(point)));
}
