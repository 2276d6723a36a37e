// Shared pieces of the end-to-end tests: the real built Worker (build/index.js and its
// wasm, made by `worker-build --release`) running in workerd through Miniflare, a real
// origin server on 127.0.0.1, and helpers to sign JWTs and send raw HTTP.
import { createHash, createHmac } from "node:crypto";
import { createServer } from "node:http";
import { connect } from "node:net";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Miniflare } from "miniflare";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const JWT_SECRET = "e2e-test-secret-" + Math.random().toString(36).slice(2);

/** Starts the Worker with the given vars (POLICY, ORIGIN_URL, JWT_SECRET...). */
export async function startWorker(vars) {
  const script = path.join(ROOT, "build/index.js");
  if (!existsSync(script)) throw new Error("build/index.js is missing: run `worker-build --release` (scripts/test does)");
  const logs = [];
  const mf = new Miniflare({
    scriptPath: script,
    modules: true,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-01",
    bindings: vars,
    host: "127.0.0.1",
    port: 0,
    handleRuntimeStdio(stdout, stderr) {
      stdout.on("data", (d) => logs.push(String(d)));
      stderr.on("data", (d) => logs.push(String(d)));
    },
  });
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

/** Parses `RateLimit: "name";r=N;t=N, ...` into { name: { r, t } }. */
export function parseRateLimit(value) {
  const out = {};
  for (const item of (value ?? "").split(",")) {
    const m = /"([^"]+)";r=(\d+);t=(\d+)/.exec(item.trim());
    if (m) out[m[1]] = { r: Number(m[2]), t: Number(m[3]) };
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
