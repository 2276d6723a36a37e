// A CPU profile of the request path in workerd, per case: the Worker runs in workerd through
// Miniflare with the V8 inspector on a port of its own; this script connects to the inspector
// over its WebSocket (Chrome DevTools Protocol), starts the sampling profiler, puts a bounded
// load on the Worker with wrk (as bench/run.mjs does), stops the profiler and reads the profile:
// self time per frame and per category (runtime, fetches, JSON, wasm-bindgen glue, our code).
// Started by scripts/profile, which builds the profiling wasm (build-profile/: the release
// build with its function names kept), bundles the peer, and starts redis-server and
// local-upstash (LU_URL, LU_TOKEN). Prints the tables and writes its section of
// docs/results/profile.md (PROFILE_SECTION, `before` unless set), build-profile/profile.md,
// build-profile/profile.json and one build-profile/<case>.cpuprofile per case (DevTools opens
// them).
import { POLICY, startOrigin } from "./common.mjs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import WebSocket from "ws";
import { freePort, sleep, workerOptions } from "../tests/e2e/harness.mjs";
import { ROOT, TICKS, mdTable, processes, writeSection } from "../scripts/record.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(ROOT, "build-profile");
const SECONDS = Number(process.env.PROFILE_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.PROFILE_CONNECTIONS ?? 8);
const INTERVAL_US = Number(process.env.PROFILE_INTERVAL_US ?? 100);
const SECTION = process.env.PROFILE_SECTION ?? "before";
const TOP = 25;
const { LU_URL, LU_TOKEN } = process.env;
if (!LU_URL || !LU_TOKEN) throw new Error("run through scripts/profile (LU_URL and LU_TOKEN are missing)");
if (!["before", "after"].includes(SECTION)) throw new Error(`PROFILE_SECTION is before or after, not ${SECTION}`);

// ---- a fast local origin, the benchmark's ----------------------------------------------------
const origin = await startOrigin();
const ORIGIN_URL = origin.url;

// ---- the benchmark's policy and cases (bench/run.mjs) ---------------------------------------
const upstash = { UPSTASH_REDIS_REST_URL: LU_URL, UPSTASH_REDIS_REST_TOKEN: LU_TOKEN };
const LIMITER = path.join(OUT, "index.js");
const PEER = path.join(OUT, "peer/worker.js");
// The JavaScript forwarding floor of the benchmark (case 1j), as it is: it needs no build.
const FLOOR_JS = path.join(ROOT, "bench/bare-js/worker.js");
// The JavaScript proxy (case 1x): the limiter's forwarding, with no limiting.
const PROXY_JS = path.join(ROOT, "bench/proxy-js/worker.js");
// The peer runs right after case a, the load it is compared with, so that both meet the machine alike.
const CASES = [
  { id: "a", name: "edge-limiter, local Upstash, a new subject per request (all allowed); bench case 3", script: LIMITER, wasm: true,
    bindings: { ORIGIN_URL, POLICY, ...upstash }, lua: "unique.lua" },
  { id: "ap", name: "peer: @upstash/ratelimit, a new subject per request; bench case 3p", script: PEER, wasm: false,
    bindings: { ORIGIN_URL, CAPACITY: "10", REFILL_PER_S: "1", ...upstash }, lua: "unique.lua" },
  { id: "b", name: "edge-limiter, local Upstash, one subject far past its limit (cached denials); bench case 4", script: LIMITER, wasm: true,
    bindings: { ORIGIN_URL, POLICY, ...upstash }, lua: "one.lua" },
  { id: "bp", name: "peer: @upstash/ratelimit, one subject far past its limit; bench case 4p", script: PEER, wasm: false,
    bindings: { ORIGIN_URL, CAPACITY: "10", REFILL_PER_S: "1", ...upstash }, lua: "one.lua" },
  { id: "c", name: "edge-limiter, memory store, a new subject per request; bench case 2", script: LIMITER, wasm: true,
    bindings: { ORIGIN_URL, POLICY }, lua: "unique.lua" },
  // Right after case c, the load the memory store's aim compares with it.
  { id: "j", name: "the JavaScript forwarding floor (bench/bare-js), the same load; bench case 1j", script: FLOOR_JS, wasm: false,
    floor: true, bindings: { ORIGIN_URL }, lua: "unique.lua" },
  { id: "x", name: "a JavaScript proxy that forwards as the limiter does, no limiting (bench/proxy-js), the same load; bench case 1x", script: PROXY_JS, wasm: false,
    floor: true, bindings: { ORIGIN_URL }, lua: "unique.lua" },
];

// ---- the load (wrk, as in bench/run.mjs) ----------------------------------------------------
async function wrk(url, lua, seconds) {
  const { stdout: out } = await promisify(execFile)("wrk", ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "-s", path.join(HERE, lua), url], { encoding: "utf8" });
  const num = (re) => Number((re.exec(out) ?? [])[1]);
  return { requests: num(/(\d+) requests in/), rps: num(/Requests\/sec:\s+([\d.]+)/), non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0 };
}

/** CPU seconds (user + system) of the workerd processes that are children of this process. */
function workerdCpu() {
  let total = 0;
  for (const { comm, fields } of processes()) {
    if (Number(fields[1]) === process.pid && comm.startsWith("workerd")) total += (Number(fields[11]) + Number(fields[12])) / TICKS;
  }
  return total;
}

// ---- the inspector: a minimal Chrome DevTools Protocol client -------------------------------
/**
 * workerd's inspector lists one target per isolate: the Worker's is `core:user:<name>`; the others
 * are Miniflare's own (`core:entry`, which every incoming request passes through first, and
 * those its outbound fetches pass through), which a deployed Worker does not have.
 */
async function inspectorTargets(port) {
  for (let i = 0; i < 100; i++) {
    try {
      const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
      if (targets.some((t) => String(t.id).startsWith("core:user:"))) return targets;
    } catch { /* not yet */ }
    await sleep(50);
  }
  throw new Error(`the inspector on port ${port} lists no Worker`);
}

async function connectInspector(port, target) {
  // workerd names the target's socket after the id; its own URL may say localhost.
  const wsPath = target.webSocketDebuggerUrl ? new URL(target.webSocketDebuggerUrl).pathname : `/${target.id}`;
  const ws = new WebSocket(`ws://127.0.0.1:${port}${wsPath}`);
  await new Promise((ok, fail) => { ws.once("open", ok); ws.once("error", fail); });
  let next = 0;
  const pending = new Map();
  ws.on("message", (data) => {
    const msg = JSON.parse(String(data));
    const p = pending.get(msg.id);
    if (!p) return; // events
    pending.delete(msg.id);
    if (msg.error) p.fail(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
    else p.ok(msg.result);
  });
  const send = (method, params = {}) => new Promise((ok, fail) => {
    const id = ++next;
    pending.set(id, { ok, fail, method });
    ws.send(JSON.stringify({ id, method, params }));
  });
  return { send, close: () => ws.close(), id: target.id };
}

// ---- reading a profile ------------------------------------------------------------------------
const SPECIAL = new Set(["(idle)", "(program)", "(garbage collector)", "(root)"]);
/** Crates whose wasm code is the Rust side of the bindings: worker's types over JS objects, promises bridged. */
const GLUE_CRATES = /^(wasm_bindgen|wasm_bindgen_futures|js_sys|web_sys|worker|worker_sys|serde_wasm_bindgen|futures_util|futures_core|futures_channel|futures_task|__wbindgen|__wbg)/;
const JSON_CRATES = /^(serde_json|serde|serde_path_to_error|itoa|ryu|memchr)$/;
const STD_CRATES = /^(core|alloc|std|dlmalloc|compiler_builtins|hashbrown|memcpy|memmove|memset|memcmp|rustc_demangle|__rust|__rdl|__rg)/;
/** Names of the Fetch API's objects and methods (what a Worker's subrequests and answers are made of). */
const FETCH_API = /\bfetch\(|new (Headers|Request|Response)\b|\.(headers|body|status|statusText|url|method|cf|webSocket|aborted)\b|\.text\(\)|\.arrayBuffer\(\)|\.json\(\)|\.(get|set|append|has|delete)\(getStringFromWasm0|\.entries\(\)|AbortSignal|\.(signal|redirect|headers|body|method|status)\s*=/;
/** What a `__wbg_*` import reaches, from its source: the first that matches. */
const REACHES = [
  ["body streams (getReader, read, releaseLock)", /\.(getReader|read|releaseLock|cancel|enqueue|respond)\(|\.(byobRequest|view)\b|ReadableStream/],
  ["iterator steps (next, done, value: Headers entries copied, stream chunks)", /\.next\(\)|\.done\b|\.value\b/],
  ["promises and tasks (then, queueMicrotask, new Promise, calls)", /\.then\(|\.catch\(|Promise|queueMicrotask|\.call\(/],
  ["the Fetch API's objects (Request, Response, Headers, cf, url, method, status)", null],
  ["byte arrays (Uint8Array)", /Uint8Array|\.buffer\b|\.byteLength|\.byteOffset|\.length\b/],
  ["other (Date.now, getRandomValues, Reflect, errors, console...)", /[\s\S]/],
];
const FETCH_NAMES = new Set(["fetch", "Headers", "Request", "Response", "text", "json", "arrayBuffer", "clone", "entries", "append", "headers", "body", "status", "url", "method", "timeout", "aborted"]);

export const CATEGORIES = [
  ["program", "runtime: (program), native time V8 does not attribute to a function"],
  ["gc", "runtime: (garbage collector)"],
  ["native", "runtime: other native builtins and runtime APIs"],
  ["fetch", "fetches: fetch() and the Request / Response / Headers / AbortSignal natives"],
  ["json", "JSON: JSON.parse / JSON.stringify, and serde_json in the wasm"],
  ["glue-imports", "wasm-bindgen glue, JavaScript: the `__wbg_*` imports, one JS call each (with the getters and methods they call that V8 does not sample apart)"],
  ["glue-js", "wasm-bindgen glue, JavaScript: its helpers (strings, externref table, closures) and worker-build's shim"],
  ["crossings", "wasm-bindgen glue: V8's wasm-to-JS and JS-to-wasm transitions"],
  ["glue-wasm", "wasm-bindgen glue, wasm: the worker, wasm-bindgen, js-sys, web-sys, futures crates"],
  ["ours-js", "our code: src/runtime.js, the I/O the wasm hands to JavaScript in one call each (JavaScript)"],
  ["ours", "our code: edge_limiter (wasm)"],
  ["ours-deps", "our code's own dependencies (sha2, hmac, getrandom...) (wasm)"],
  ["std", "Rust std, alloc, fmt and the allocator (wasm)"],
  ["peer", "the peer's JavaScript: @upstash/ratelimit, @upstash/redis and its Worker"],
  ["floor-js", "the Worker's own JavaScript: bench/bare-js/worker.js, or bench/proxy-js/worker.js with bench/forward.js"],
  ["other-js", "other JavaScript"],
];
const LABEL = Object.fromEntries(CATEGORIES);
/** The functions of src/runtime.js, which esbuild bundles into the Worker's index.js. */
const RUNTIME_JS = new Set([...readFileSync(path.join(ROOT, "src/runtime.js"), "utf8").matchAll(/^(?:export )?(?:async )?function (\w+)/gm)].map((m) => m[1]));

/** The crate a (demangled) Rust function name belongs to: `<a::B as c::D>::f` → a; drop_in_place<a::B> → a. */
function crateOf(name) {
  let n = name.replace(/^\$/, "");
  const drop = /^core::ptr::drop_in_place<(.+)>$/.exec(n);
  if (drop) n = drop[1];
  n = n.replace(/^[<&*\s]+(mut\s+|dyn\s+)?/, "");
  return /^([A-Za-z_][A-Za-z0-9_]*)/.exec(n)?.[1] ?? n;
}

/** Without the hashes: `::h0123…` and the crate disambiguators `core[0123…]`. */
const shortName = (name) => name.replace(/::h[0-9a-f]{16}\b/g, "").replace(/\[[0-9a-f]{16}\]/g, "");

/** Reads a JavaScript function's source from the script file at its start (line, column), up to its closing brace. */
function sourceAt(lines, line, column) {
  let text = (lines[line] ?? "").slice(column);
  for (let i = line + 1; text.length < 2000 && i < lines.length; i++) text += "\n" + lines[i];
  let depth = 0, started = false;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "{") { depth++; started = true; }
    else if (text[i] === "}" && --depth === 0 && started) return text.slice(0, i + 1);
  }
  return text.slice(0, 400);
}

/** The sampling period of a profile: the median gap between its samples. */
function periodOf(profile) {
  const gaps = profile.timeDeltas.slice(1).filter((d) => d > 0).sort((a, b) => a - b);
  return gaps.length ? gaps[Math.floor(gaps.length / 2)] : INTERVAL_US;
}

/** An isolate's busy time in a profile (every sample but idle ones), in µs. */
function busyOf(profile) {
  const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
  return profile.samples.filter((id) => !idle.has(id)).length * periodOf(profile);
}

/**
 * Self time per frame and per category from a V8 CPU profile, each sample counting as the
 * sampling period. `script`: the Worker's own JavaScript file (for the glue's source), `kind`: wasm
 * (the limiter: its JavaScript is wasm-bindgen's glue) or js (the peer).
 */
export function analyse(profile, { script, kind }) {
  const lines = existsSync(script) ? readFileSync(script, "utf8").split("\n") : [];
  const byId = new Map(profile.nodes.map((n) => [n.id, { ...n, self: 0 }]));
  for (const n of byId.values()) for (const c of n.children ?? []) byId.get(c).parent = n;
  // V8 samples the isolate only while its thread holds the isolate's lock: between two events
  // workerd lets go of it and no sample is taken, so the gap to the next sample is not the
  // time of the last one. Each sample counts as the sampling period instead: the median gap.
  const { samples } = profile;
  const period = periodOf(profile);
  for (const id of samples) byId.get(id).self += period;
  const isWasm = (f) => f.url.startsWith("wasm://") || /^\$?(func|wasm-function)\[?\d/.test(f.functionName);
  const isNative = (f) => !f.url && !SPECIAL.has(f.functionName) && !isWasm(f);
  const glueSource = new Map();
  const sourceOf = (f) => {
    const key = `${f.lineNumber}:${f.columnNumber}`;
    if (!glueSource.has(key)) glueSource.set(key, sourceAt(lines, f.lineNumber, f.columnNumber));
    return glueSource.get(key);
  };
  /** The nearest caller that is JavaScript (not native, not wasm), or null. */
  const jsCaller = (n) => {
    for (let p = n.parent; p; p = p.parent) {
      const f = p.callFrame;
      if (f.url && !isWasm(f)) return p;
      if (isWasm(f) || SPECIAL.has(f.functionName)) return null;
    }
    return null;
  };
  const classify = (n) => {
    const f = n.callFrame;
    if (f.functionName === "(program)" || f.functionName === "(root)") return "program";
    if (f.functionName === "(garbage collector)") return "gc";
    if (f.functionName === "(idle)") return "idle";
    if (/^(wasm-to-js|js-to-wasm)/.test(f.functionName)) return "crossings";
    if (isWasm(f)) {
      const crate = crateOf(f.functionName);
      // wasm-bindgen's generated shims around each import (`… catch wrapper`, `… externref shim`).
      if (/__wbg_|__wbindgen_| catch wrapper$| externref shim$/.test(f.functionName)) return "glue-wasm";
      if (crate === "edge_limiter") return "ours";
      // The export #[event(fetch)] generates: the JsValues made into worker's types, the future made a promise.
      if (f.functionName === "fetch") return "glue-wasm";
      if (JSON_CRATES.test(crate)) return "json";
      if (GLUE_CRATES.test(crate)) return "glue-wasm";
      if (STD_CRATES.test(crate)) return "std";
      return "ours-deps";
    }
    if (isNative(f)) {
      if (f.functionName === "parse" || f.functionName === "stringify") return "json";
      const caller = jsCaller(n);
      // A native called by one of wasm-bindgen's imports (`__wbg_*`): what the import does decides.
      if (kind === "wasm" && caller && /^__wbg_/.test(caller.callFrame.functionName)) {
        const body = sourceOf(caller.callFrame);
        if (/JSON\.(parse|stringify)/.test(body)) return "json";
        if (FETCH_API.test(body)) return "fetch";
        return "native";
      }
      return FETCH_NAMES.has(f.functionName) ? "fetch" : "native";
    }
    // bench/proxy-js runs as it is, through bench/forward.js and src/runtime.js's helpers: its
    // JavaScript too (the peer is bundled, so its copies of them are in its own file).
    const own = f.url.endsWith(path.basename(script)) || (kind === "floor" && /\/(forward|runtime)\.js$/.test(f.url));
    if (!own) return "other-js";
    if (kind === "floor") return "floor-js";
    if (kind !== "wasm") return "peer";
    if (RUNTIME_JS.has(f.functionName)) return "ours-js";
    return /^(__wbg_|__wbindgen_)/.test(f.functionName) ? "glue-imports" : "glue-js";
  };
  const frames = new Map();
  const categories = Object.fromEntries([...CATEGORIES.map(([k]) => k), "idle"].map((k) => [k, 0]));
  let nativeViaGlue = 0;
  const imports = Object.fromEntries(REACHES.map(([label]) => [label, 0]));
  for (const n of byId.values()) {
    if (!n.self) continue;
    const f = n.callFrame;
    const category = classify(n);
    categories[category] += n.self;
    if (category === "glue-imports") {
      const body = sourceOf(f);
      const [label] = REACHES.find(([, re]) => (re ?? FETCH_API).test(body));
      imports[label] += n.self;
    }
    let caller = "";
    if (isNative(f)) {
      const c = jsCaller(n);
      caller = c ? c.callFrame.functionName || "(anonymous)" : "";
      if (category === "native" && kind === "wasm" && c) nativeViaGlue += n.self;
    }
    const name = isWasm(f) ? shortName(f.functionName) : f.functionName || "(anonymous)";
    const where = isWasm(f) ? "wasm" : f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : !isNative(f) ? "" :
      n.parent?.callFrame.functionName === "(root)" ? "native, called by the runtime itself" : "native";
    const key = `${name}|${where}|${caller}`;
    const frame = frames.get(key) ?? { name, where, caller, category, self: 0 };
    frame.self += n.self;
    frames.set(key, frame);
  }
  const total = Object.values(categories).reduce((a, b) => a + b, 0);
  const busy = total - categories.idle;
  const wasmFrames = [...byId.values()].filter((n) => isWasm(n.callFrame));
  const named = wasmFrames.filter((n) => !/^\$?(func|wasm-function)\[?\d/.test(n.callFrame.functionName)).length;
  return {
    totalUs: total, busyUs: busy, categories, nativeViaGlue, imports, samples: samples.length, period,
    wallUs: profile.endTime - profile.startTime,
    frames: [...frames.values()].sort((a, b) => b.self - a.self),
    wasmNamed: wasmFrames.length ? named / wasmFrames.length : null,
  };
}

// ---- the wasm: is the profiled code the release build's code? ---------------------------------
/** A wasm module's code section (id 10): its size in bytes, its function count and its bytes. */
function codeSection(file) {
  const b = readFileSync(file);
  let i = 8;
  const leb = () => { let r = 0, s = 0, x; do { x = b[i++]; r |= (x & 0x7f) << s; s += 7; } while (x & 0x80); return r >>> 0; };
  while (i < b.length) {
    const id = b[i++];
    const size = leb();
    const start = i;
    if (id === 10) return { size, functions: leb(), bytes: b.subarray(start, start + size) };
    i = start + size;
  }
  return null;
}

/** The profiled wasm against the release one: the compiler's output, and what wasm-bindgen made of it. */
function sameCode() {
  const pairs = [
    ["the compiler's output", "target/wasm32-unknown-unknown/release/edge_limiter.wasm", "target/profile-names/wasm32-unknown-unknown/release/edge_limiter.wasm"],
    ["after wasm-bindgen", "build/index_bg.wasm", "build-profile/index_bg.wasm"],
  ];
  return pairs.map(([what, release, named]) => {
    if (!existsSync(path.join(ROOT, release)) || !existsSync(path.join(ROOT, named))) return `${what}: not compared (${release} is missing)`;
    const a = codeSection(path.join(ROOT, release)), b = codeSection(path.join(ROOT, named));
    if (a.bytes.equals(b.bytes)) return `${what}: the same code section as the release build's, byte for byte (${a.size.toLocaleString("en")} B)`;
    return `${what}: ${b.functions} functions and ${b.size.toLocaleString("en")} B of code against the release build's ${a.functions} and ` +
      `${a.size.toLocaleString("en")} B (${f((Math.abs(b.size - a.size) / a.size) * 100, 2)} % apart)`;
  }).join("; ");
}

// ---- one case ---------------------------------------------------------------------------------
async function profileCase(c) {
  const inspectorPort = Number(process.env.PROFILE_INSPECTOR_PORT ?? 0) || await freePort();
  const mf = new Miniflare({
    ...workerOptions({
      script: c.script,
      wasm: c.wasm,
      bindings: c.bindings,
      handleRuntimeStdio(stdout, stderr) { stdout.resume(); stderr.on("data", (d) => process.stderr.write(d)); },
    }),
    inspectorPort,
  });
  try {
    const url = (await mf.ready).toString().replace(/\/$/, "");
    const inspectors = await Promise.all((await inspectorTargets(inspectorPort)).map((t) => connectInspector(inspectorPort, t)));
    await wrk(url, c.lua, 1); // warm-up: JIT, connections, the script loaded in Redis
    for (const i of inspectors) {
      await i.send("Profiler.enable");
      await i.send("Profiler.setSamplingInterval", { interval: INTERVAL_US });
    }
    const cpu0 = workerdCpu();
    await Promise.all(inspectors.map((i) => i.send("Profiler.start")));
    const load = await wrk(url, c.lua, SECONDS);
    const profiles = await Promise.all(inspectors.map((i) => i.send("Profiler.stop")));
    const cpu = workerdCpu() - cpu0;
    for (const i of inspectors) { await i.send("Profiler.disable"); i.close(); }
    const user = inspectors.findIndex((i) => i.id.startsWith("core:user:"));
    const profile = profiles[user].profile;
    writeFileSync(path.join(OUT, `${c.id}.cpuprofile`), JSON.stringify(profile));
    const result = analyse(profile, { script: c.script, kind: c.wasm ? "wasm" : c.floor ? "floor" : "js" });
    // Miniflare's own isolates: how much of workerd's CPU they take, for the account of the rest.
    const others = inspectors.map((i, k) => ({ id: i.id, busyUs: busyOf(profiles[k].profile) }))
      .filter((o, k) => k !== user && o.busyUs > 0);
    return { ...c, bindings: undefined, load, cpuMsPerReq: (cpu * 1000) / load.requests, inspectorPort, others, ...result };
  } finally {
    await mf.dispose();
  }
}

// ---- the tables -----------------------------------------------------------------------------
const f = (v, d = 1) => v.toFixed(d);
const pct = (v, of) => (of ? `${f((v / of) * 100)} %` : "");

function categoryTable(r) {
  const wasmOnly = ["glue-imports", "glue-js", "crossings", "glue-wasm", "ours-js", "ours", "ours-deps", "std"];
  const shown = CATEGORIES.filter(([k]) => r.categories[k] > 0 ||
    (r.wasm ? !["peer", "floor-js", "other-js"].includes(k)
      : !wasmOnly.includes(k) && k !== "other-js" && k !== (r.floor ? "peer" : "floor-js")));
  const rows = shown.map(([k, label]) => [label, f(r.categories[k] / 1000), pct(r.categories[k], r.busyUs), f(r.categories[k] / r.load.requests, 1)]);
  rows.push(["**busy, all of the above**", `**${f(r.busyUs / 1000)}**`, "**100 %**", `**${f(r.busyUs / r.load.requests, 1)}**`]);
  rows.push(["(idle), not counted above", f(r.categories.idle / 1000), "", ""]);
  return mdTable(["category", "self ms", "share of busy", "µs per request"], rows);
}

function topTable(r, n = TOP) {
  const rows = r.frames.filter((x) => x.category !== "idle").slice(0, n).map((x, i) => [
    String(i + 1), f(x.self / 1000), pct(x.self, r.busyUs), x.category,
    `\`${x.name.replace(/\|/g, "\\|").replace(/`/g, "'")}\``, x.where + (x.caller ? ` (from \`${x.caller}\`)` : ""),
  ]);
  return mdTable(["#", "self ms", "share of busy", "category", "frame", "where"], rows);
}

function caseText(r) {
  const denied = r.load.requests ? (r.load.non2xx / r.load.requests) * 100 : 0;
  const covered = (r.busyUs / 1000) / (r.cpuMsPerReq * r.load.requests);
  return [
    `### Case ${r.id}: ${r.name}`,
    "",
    `${r.load.requests} requests in ${SECONDS} s (${f(r.load.rps, 0)} per second, ${f(denied)} % denied); ${r.samples} samples, one every ${f(r.period, 0)} µs while sampling, over ${f(r.wallUs / 1e6, 2)} s; ` +
      `busy (all but idle) ${f(r.busyUs / 1000)} ms = ${f(r.busyUs / r.load.requests)} µs per request in the Worker's isolate, ` +
      `while the workerd process took ${f(r.cpuMsPerReq * 1000)} µs of CPU per request (user + system, all its threads): ` +
      `the profile sees ${f(covered * 100, 0)} % of it. ` +
      (r.wasm !== false
        ? `Of the other natives, ${f(r.nativeViaGlue / 1000)} ms were called by the glue (its string helpers, promises, Reflect).`
        : ""),
    "",
    categoryTable(r),
    "",
    ...(r.wasm
      ? [`The \`__wbg_*\` imports by what they reach, µs per request: ${Object.entries(r.imports).filter(([, v]) => v > 0)
        .sort((a, b) => b[1] - a[1]).map(([label, v]) => `${label} ${f(v / r.load.requests)}`).join("; ")}.`, ""]
      : []),
    `Outside this isolate: Miniflare's own isolates in the same workerd took ${r.others.map((o) => `${o.id} ${f(o.busyUs / r.load.requests)}`).join(", ") || "nothing"} µs per request ` +
      `(a deployed Worker has none of them); the rest of workerd's CPU, ${f(Math.max(0, r.cpuMsPerReq * 1000 - (r.busyUs + r.others.reduce((a, o) => a + o.busyUs, 0)) / r.load.requests), 0)} µs per request, ` +
      "is outside every isolate's JavaScript: HTTP in and out, the sockets, the event loop, its other threads.",
    "",
    `The top ${TOP} frames by self time (a native frame names the JavaScript that called it):`,
    "",
    topTable(r),
  ].join("\n");
}

// ---- run ----------------------------------------------------------------------------------------
mkdirSync(OUT, { recursive: true });
const only = process.env.PROFILE_CASES?.split(",");
const chosen = CASES.filter((c) => (!only || only.includes(c.id)) && existsSync(c.script));
for (const c of CASES) if (!existsSync(c.script)) console.log(`case ${c.id}: ${path.relative(ROOT, c.script)} is missing, skipped`);
const results = [];
for (const c of chosen) {
  console.log(`==> case ${c.id}: ${c.name}`);
  const r = await profileCase(c);
  results.push(r);
  console.log(`\n${caseText(r)}\n`);
}
origin.close();

const named = sameCode();
const nameShare = results.find((r) => r.wasmNamed !== null)?.wasmNamed;
const command = `${["PROFILE_SECONDS", "PROFILE_CONNECTIONS", "PROFILE_INTERVAL_US", "PROFILE_CASES", "PROFILE_SECTION"]
  .filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]} `).join("")}bash scripts/profile`;
const body = [
  `Settings: per case, one workerd through Miniflare (the benchmark's runtime settings) with the V8 inspector on a port of its own; ` +
    `a 1 s warm-up, then V8's sampling profiler (Profiler.start, every ${INTERVAL_US} µs) over \`wrk -t1 -c${CONNECTIONS} -d${SECONDS}s\` ` +
    `with the benchmark's policy (a token bucket of 10, refilled 1/s) and origin. Self time per frame: each sample counts as the sampling period ` +
    "(the median gap between samples; V8 samples the isolate only while its thread holds the isolate's lock, so the gaps between events take no samples). " +
    "Busy time is wall time with the lock held, not CPU time: on a shared machine it also holds the time the thread waited for a core, so compare shares within a case, and µs per request between the cases of one run. " +
    `The limiter profiled is build-profile/: the release profile (opt-level z, LTO, one codegen unit) with its function names kept ` +
    `(CARGO_PROFILE_RELEASE_STRIP=false, CARGO_PROFILE_RELEASE_DEBUG=false) and the glue left unminified (NO_MINIFY=1), built from the same source; ` +
    `against the release build: ${named}` +
    (nameShare !== undefined && nameShare !== null ? `; ${f(nameShare * 100, 0)} % of the wasm frames sampled carry a name.` : "."),
  "",
  ...results.map(caseText).flatMap((t) => [t, ""]),
].join("\n");

const SKELETON = [
  "<!-- Generated: each section by the command it names; do not edit by hand. -->",
  "# CPU profile of the request path in workerd: measured",
  "",
  "How it is taken, what each category holds and how to read it: [../benchmark.md](../benchmark.md#cpu-profile-of-the-request-path).",
  "Each section is one run of `bash scripts/profile` (`PROFILE_SECTION=after` writes the second).",
  "",
  "## Before (the request path as it is)",
  "",
  "<!-- profile:before -->",
  "<!-- /profile:before -->",
  "",
  "## After",
  "",
  "<!-- profile:after -->",
  "Not run yet: `PROFILE_SECTION=after bash scripts/profile`, once the request path has changed.",
  "<!-- /profile:after -->",
  "",
].join("\n");
writeFileSync(path.join(OUT, "profile.json"), JSON.stringify({ command, results: results.map((r) => ({ ...r, frames: r.frames.slice(0, 200) })) }, null, 1));
writeSection("build-profile/profile.md", `profile:${SECTION}`, { command, body, skeleton: SKELETON });
if (!only) {
  writeSection("docs/results/profile.md", `profile:${SECTION}`, { command, body, skeleton: SKELETON });
  console.log(`wrote the ${SECTION} section of docs/results/profile.md, build-profile/profile.md, build-profile/profile.json and build-profile/*.cpuprofile`);
} else {
  console.log("PROFILE_CASES given: wrote build-profile/profile.md and build-profile/profile.json only");
}
