// Shared pieces of the end-to-end tests (and of the benchmark, bench/*.mjs): the real built
// Worker (build/index.js and its wasm, made by `worker-build --release`) running in workerd
// through Miniflare, a real origin server on 127.0.0.1, the processes a test starts and stops
// by PID (redis-server, local-upstash, wrangler dev, an app), Redis's own counts of script
// calls, and helpers to sign JWTs and send raw HTTP.
import { spawn } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { connect } from "node:net";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Miniflare } from "miniflare";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const JWT_SECRET = "e2e-test-secret-" + Math.random().toString(36).slice(2);

export const sha256Hex = (s) => createHash("sha256").update(s).digest("hex");
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Miniflare's options for one Worker on 127.0.0.1 (a free port): the same runtime settings for
 * the tests and the benchmark (bench/serve.mjs). `wasm`: the script imports a compiled module.
 */
export function workerOptions({ script, wasm = true, bindings, handleRuntimeStdio }) {
  return {
    scriptPath: script,
    modules: true,
    // Every .js of ours is an ES module (Miniflare would read one that is imported as CommonJS).
    modulesRules: [{ type: "ESModule", include: ["**/*.js"] }, ...(wasm ? [{ type: "CompiledWasm", include: ["**/*.wasm"] }] : [])],
    compatibilityDate: "2026-04-01",
    bindings,
    host: "127.0.0.1",
    port: 0,
    handleRuntimeStdio,
  };
}

/** Starts the Worker with the given vars (POLICY, ORIGIN_URL, JWT_SECRET...); with `script`,
 * another Worker in its place (`wasm: false` for a plain JavaScript one). */
export async function startWorker(vars, { script = path.join(ROOT, "build/index.js"), wasm = true } = {}) {
  if (!existsSync(script)) throw new Error(`${path.relative(ROOT, script)} is missing: scripts/test builds it`);
  const logs = [];
  const mf = new Miniflare(workerOptions({
    script,
    wasm,
    bindings: vars,
    handleRuntimeStdio(stdout, stderr) {
      stdout.on("data", (d) => logs.push(String(d)));
      stderr.on("data", (d) => logs.push(String(d)));
    },
  }));
  const url = (await mf.ready).toString().replace(/\/$/, "");
  return { url, logs, stop: () => mf.dispose() };
}

/**
 * A real origin on 127.0.0.1. It answers with what it received (method, path, headers,
 * body length and SHA-256), `/status/NNN` with that status, and sets a header of its own.
 */
export async function startOrigin() {
  const seen = [];
  // Like most real servers, it accepts header sections larger than Node's 16 KB default.
  const server = createServer({ maxHeaderSize: 128 * 1024 }, (req, res) => {
    const hash = createHash("sha256");
    let length = 0;
    req.on("data", (chunk) => { hash.update(chunk); length += chunk.length; });
    req.on("end", () => {
      const info = { method: req.method, url: req.url, headers: req.headers, length, sha256: hash.digest("hex") };
      seen.push(info);
      const m = /^\/status\/(\d{3})/.exec(req.url);
      const status = m ? Number(m[1]) : 200;
      res.writeHead(status, { "content-type": "application/json", "x-origin": "e2e", "set-cookie": ["a=1", "b=2"] });
      res.end(status === 204 || status === 304 ? undefined : JSON.stringify(info));
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, seen, stop: () => new Promise((ok) => server.close(ok)) };
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64url");
}

/** An HS256 JWT over `claims`, signed with `secret`; `header` may be overridden. */
export function signJwt(claims, { secret = JWT_SECRET, header = { alg: "HS256", typ: "JWT" } } = {}) {
  const signing = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = createHmac("sha256", secret).update(signing).digest();
  return `${signing}.${b64url(sig)}`;
}

export const nowS = () => Math.floor(Date.now() / 1000);

/** Sends raw bytes as one HTTP/1.1 request and returns the status line's code and text. */
export function rawRequest(baseUrl, bytes) {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname, () => sock.end(bytes));
    const chunks = [];
    sock.on("data", (c) => chunks.push(c));
    sock.on("error", reject);
    sock.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      resolve({ status: Number(text.split(" ")[1]), text });
    });
    sock.setTimeout(10_000, () => { sock.destroy(); reject(new Error("raw request timed out")); });
  });
}

/** Parses `RateLimit: "name";a=N;w=N[;c=N], ...` (draft -12) into { name: { a, w } }. */
export function parseRateLimit(value) {
  const out = {};
  for (const item of (value ?? "").split(",")) {
    const m = /"([^"]+)";a=(\d+);w=(\d+)/.exec(item.trim());
    if (m) out[m[1]] = { a: Number(m[2]), w: Number(m[3]) };
  }
  return out;
}

/** A fresh documentation-range IPv4 address per call, so tests never share buckets. */
let ipCounter = 1;
export function freshIp() {
  const n = ipCounter++;
  return `198.51.${(n >> 8) & 255}.${n & 255}`;
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export async function freePort() {
  const server = createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/**
 * Waits until `ready()` is true, failing early if `proc` exits; `detail()` (for instance the
 * process's output so far) is added to the error.
 */
export async function until(ready, what, proc, { ms = 15_000, every = 50, detail = () => "" } = {}) {
  const deadline = Date.now() + ms;
  while (!(await ready())) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}${detail()}`);
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${ms} ms${detail()}`);
    await sleep(every);
  }
}

function portOpen(port) {
  return new Promise((ok) => {
    const s = connect(port, "127.0.0.1", () => { s.destroy(); ok(true); });
    s.on("error", () => ok(false));
  });
}

/**
 * Stops a process the caller started, by its PID (SIGTERM, then SIGKILL after `killAfterMs`),
 * and waits for it to exit.
 */
export async function stopProcess(proc, killAfterMs = 5_000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((ok) => proc.once("exit", ok));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), killAfterMs);
  await exited;
  clearTimeout(timer);
}

/** A private redis-server on a free loopback port, no persistence, in a temporary directory. */
export async function startRedis(port) {
  port ??= await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "edge-limiter-redis-"));
  const args = ["--save", "", "--appendonly", "no", "--port", String(port), "--bind", "127.0.0.1", "--dir", dir];
  const proc = spawn("redis-server", args, { stdio: ["ignore", "ignore", "inherit"] });
  await until(() => portOpen(port), "redis-server", proc);
  return {
    port,
    proc,
    stop: async () => { await stopProcess(proc); rmSync(dir, { recursive: true, force: true }); },
  };
}

export const LOCAL_UPSTASH_BIN = path.join(ROOT, "local-upstash/target/release/local-upstash");

/**
 * local-upstash (this repository's Upstash REST server) in front of redis-server on
 * `redisPort`, with a generated token. `command(...args)` sends one command over REST.
 */
export async function startLocalUpstash(redisPort, { port, token, fault } = {}) {
  if (!existsSync(LOCAL_UPSTASH_BIN)) throw new Error(`${LOCAL_UPSTASH_BIN} is missing: scripts/test builds it`);
  port ??= await freePort();
  token ??= "e2e-" + randomBytes(16).toString("hex");
  const args = ["--listen", `127.0.0.1:${port}`, "--redis", `127.0.0.1:${redisPort}`, "--token", token];
  if (fault) args.push("--fault", fault);
  const proc = spawn(LOCAL_UPSTASH_BIN, args, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  proc.stdout.on("data", (d) => { out += d; });
  await until(() => out.includes("local-upstash listening on"), "local-upstash", proc);
  const url = `http://127.0.0.1:${port}`;
  const command = async (...cmd) => {
    const r = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(cmd) });
    const body = await r.json();
    if (body.error) throw new Error(`${cmd[0]}: ${body.error}`);
    return body.result;
  };
  const setFault = async (mode) => {
    const r = await fetch(`${url}/__fault`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ mode }) });
    if (!r.ok) throw new Error(`fault ${mode}: ${r.status}`);
  };
  return { url, port, token, proc, command, setFault, stop: () => stopProcess(proc) };
}

/** Script calls in the text of `INFO commandstats`: EVALSHA and EVAL, failed ones included. */
export function parseScriptCalls(info) {
  const stat = (name) => {
    const m = new RegExp(`^cmdstat_${name}:calls=(\\d+)(?:.*failed_calls=(\\d+))?`, "m").exec(info);
    return { calls: m ? Number(m[1]) : 0, failed: m && m[2] ? Number(m[2]) : 0 };
  };
  return { evalsha: stat("evalsha"), eval: stat("eval") };
}

/** Redis's own count of script calls (`INFO commandstats`), failed ones included. */
export async function scriptCalls(upstash) {
  return parseScriptCalls(await upstash.command("INFO", "commandstats"));
}

/**
 * A private redis-server, local-upstash in front of it, and the Worker (with `vars`) pointed
 * at them; `token` overrides the token the Worker is given. `stop()` stops whatever the
 * stack's fields hold then, so a test may replace a process it killed.
 */
export async function startStack(vars, { token } = {}) {
  const redis = await startRedis();
  const upstash = await startLocalUpstash(redis.port);
  const worker = await startWorker({
    ...vars,
    UPSTASH_REDIS_REST_URL: upstash.url,
    UPSTASH_REDIS_REST_TOKEN: token ?? upstash.token,
  });
  const stack = { redis, upstash, worker };
  stack.stop = async () => {
    await stack.worker.stop();
    await stack.upstash.stop();
    await stack.redis.stop();
  };
  return stack;
}

/** Debian's Chromium, headless, as playwright-core drives it (scripts/test installs it). */
export const CHROMIUM = "/usr/bin/chromium";
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/test installs Debian's chromium`);
  // Loaded here, not at the top: the benchmark uses this file and no browser.
  const { chromium } = await import("playwright-core");
  // Without the background-networking flags Chromium keeps calling out to a closed network.
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/**
 * `clients` concurrent clients, each sending `each` requests in turn, alternating between
 * `workers`; `ipOf(c)` is client c's address. Counts statuses, the backends that decided
 * (`X-Limiter-Backend`, by name) and the admissions per address.
 */
export async function hammer(workers, path, ipOf, { clients = 64, each = 4 } = {}) {
  const seen = { allowed: 0, denied: 0, other: [], backends: {} };
  const per = new Map();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; i < each; i++) {
        const ip = ipOf(c);
        const r = await fetch(workers[(c + i) % workers.length].url + path, { headers: { "CF-Connecting-IP": ip } });
        await r.arrayBuffer();
        const b = r.headers.get("x-limiter-backend");
        seen.backends[b] = (seen.backends[b] ?? 0) + 1;
        if (r.status === 200) {
          seen.allowed++;
          per.set(ip, (per.get(ip) ?? 0) + 1);
        } else if (r.status === 429) seen.denied++;
        else seen.other.push(r.status);
      }
    }),
  );
  return { seen, per };
}

/**
 * Two Workers with `vars`, on one local-upstash (`upstash`), each with the check script loaded
 * (a first call sends NOSCRIPT, then EVAL), so what follows counts only its own calls.
 */
export async function startPair(vars, upstash) {
  const all = { ...vars, UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: upstash.token };
  const workers = [await startWorker(all), await startWorker(all)];
  for (const w of workers) {
    await (await fetch(w.url + "/warm-up", { headers: { "CF-Connecting-IP": freshIp() } })).arrayBuffer();
  }
  return workers;
}

/** `wrangler dev` with extra `--var`s, on its own port and inspector port (several may run at
 * once), serving www/ through the assets binding as a deployment does. */
export async function startDev(vars) {
  const port = await freePort();
  const inspector = await freePort();
  const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspector)];
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  // wrangler dev runs the [build] command (a no-op cargo build after scripts/test's build).
  const proc = spawn(path.join(ROOT, "node_modules/.bin/wrangler"), args,
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WRANGLER_SEND_METRICS: "false" } });
  const out = { proc, log: "", base: `http://127.0.0.1:${port}` };
  proc.stdout.on("data", (d) => { out.log += d; });
  proc.stderr.on("data", (d) => { out.log += d; });
  await until(() => out.log.includes("Ready on"), "wrangler dev", proc, { ms: 240_000, every: 200, detail: () => `:\n${out.log}` });
  out.stop = () => stopProcess(proc, 10_000);
  return out;
}

/**
 * For a test file: a private redis-server, local-upstash in front of it and a real origin,
 * started before its tests and stopped after them (`before` and `after` are node:test's,
 * passed in so that the benchmark can use this file without it). Read them from the
 * returned object once the tests run.
 */
export function sharedBackends({ before, after }) {
  const s = {};
  before(async () => {
    s.redis = await startRedis();
    s.upstash = await startLocalUpstash(s.redis.port);
    s.origin = await startOrigin();
  });
  after(async () => {
    await s.origin?.stop();
    await s.upstash?.stop();
    await s.redis?.stop();
  });
  return s;
}
