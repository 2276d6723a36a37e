// The request path rebuilt for issue 17 (fewer crossings between the wasm and the runtime)
// must answer exactly as the path before it did: the same decisions, the same status, the
// same response fields and bodies, and the same request at the origin. The answers of the
// path before were recorded from its build (fixtures/answers-before.json, made with
// `RECORD_ANSWERS=1 node --test tests/e2e/same-answers.test.mjs` at the commit the file
// names); this test sends the same requests to today's build and compares every answer.
// Time-valued fields (seconds until a reset or a retry) may differ by a second or two, since
// the runs are at different times; everything else must be equal. One change since is on
// purpose: `RateLimit` follows draft -12 (issue 18), so the recorded -10 items
// (`"name";r=N;t=N`) are read as -12's (`a` the same number; `w`, the effective window, no
// longer than the `t` recorded: for a bucket it is now the next unit, not the time to full).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import {
  ROOT, startWorker, startOrigin, startStack, signJwt, sha256Hex,
} from "./harness.mjs";

const FIXTURE = path.join(ROOT, "tests/e2e/fixtures/answers-before.json");
const RECORD = process.env.RECORD_ANSWERS === "1";

// Fixed test values, not secrets.
const PREMIUM_KEY = "answers-test-premium-key-0001";
const SECRET = "answers-test-jwt-secret-0001";
// Fixed expiries, so the tokens (which the origin sees) are the same in every run.
const FUTURE = 4_102_444_800; // 2100-01-01

const POLICY = {
  key_prefix: "answers",
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/min" } } } },
    authenticated: { limits: { burst: { token_bucket: { capacity: 5, refill: "1/min" } } } },
    premium: {
      // Two limits, both buckets: a window's reset depends on the time of day, not on the run.
      limits: { burst: { token_bucket: { capacity: 8, refill: "1/min" } }, hourly: { token_bucket: { capacity: 100, refill: "100/h" } } },
    },
  },
  identity: {
    api_key: { header: "X-API-Key", keys: { [sha256Hex(PREMIUM_KEY)]: "premium" } },
    jwt: { tier_claim: "tier", default_tier: "authenticated" },
    auth_failures: { guesses: { token_bucket: { capacity: 2, refill: "1/h" } } },
  },
  routes: [
    { path: "/health", exempt: true },
    { method: "POST", path: "/upload", cost: 2 },
  ],
  cors: { allow_origins: ["https://app.example"] },
  headers: "both",
};

/** The requests, in order: each `[name, path, init]`; `ip` becomes CF-Connecting-IP. */
function scenario() {
  const jwt = (claims) => signJwt(claims, { secret: SECRET });
  const anon = "198.51.100.10";
  return [
    ...[1, 2, 3, 4].map((i) => [`anonymous burst ${i}`, "/a", { ip: anon }]),
    ["denied, a browser", "/a", { ip: anon, headers: { accept: "text/html" } }],
    ["exempt while denied", "/health", { ip: anon }],
    ["cost 2, allowed", "/upload", { ip: "198.51.100.11", method: "POST", body: "x".repeat(1000) }],
    ["cost 2, denied", "/upload", { ip: "198.51.100.11", method: "POST", body: "y" }],
    ["an extension method", "/dav/file", { ip: "198.51.100.12", method: "PROPFIND", body: "<propfind/>" }],
    ["a query", "/q?x=1&y=%20two", { ip: "198.51.100.12" }],
    ["HEAD", "/head", { ip: "198.51.100.12", method: "HEAD" }],
    ["the origin's own status", "/status/503", { ip: "198.51.100.13" }],
    ["no content", "/status/204", { ip: "198.51.100.13", method: "DELETE" }],
    ["hop-by-hop and forwarding fields", "/hop", {
      ip: "198.51.100.14",
      headers: { connection: "x-drop-me", "x-drop-me": "1", te: "trailers", "x-forwarded-for": "203.0.113.7",
        "x-edge-limiter-own-answer": "1", "x-app": "kept" },
    }],
    ...[1, 2].map((i) => [`premium key ${i}`, "/p", { ip: "198.51.100.15", headers: { "x-api-key": PREMIUM_KEY } }]),
    ["unknown key 1", "/p", { ip: "198.51.100.16", headers: { "x-api-key": "answers-wrong-key" } }],
    ["unknown key 2", "/p", { ip: "198.51.100.16", headers: { "x-api-key": "answers-wrong-key" } }],
    ["unknown key 3: locked out", "/p", { ip: "198.51.100.16", headers: { "x-api-key": "answers-wrong-key" } }],
    ["the right key while locked out", "/p", { ip: "198.51.100.16", headers: { "x-api-key": PREMIUM_KEY } }],
    ["a JWT with a tier", "/j", { ip: "198.51.100.17", headers: { authorization: `Bearer ${jwt({ sub: "u1", tier: "premium", exp: FUTURE })}` } }],
    ["a JWT with none", "/j", { ip: "198.51.100.17", headers: { authorization: `Bearer ${jwt({ sub: "u2", exp: FUTURE })}` } }],
    ["an expired JWT", "/j", { ip: "198.51.100.18", headers: { authorization: `Bearer ${jwt({ sub: "u3", exp: 1_000_000_000 })}` } }],
    ["an app's own bearer token", "/j", { ip: "198.51.100.19", headers: { authorization: "Bearer not-a-jwt-app-token" } }],
    ["a preflight", "/cors", { ip: "198.51.100.20", method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "PUT" } }],
    ["a CORS request", "/cors", { ip: "198.51.100.20", headers: { origin: "https://app.example" } }],
    ["a CORS request from elsewhere", "/cors", { ip: "198.51.100.20", headers: { origin: "https://other.example" } }],
    ...[1, 2, 3].map((i) => [`CORS burst ${i}`, "/cors", { ip: "198.51.100.20", headers: { origin: "https://app.example" } }]),
    ["a refused path", "/a/%2e%2e%2fsecret", { ip: "198.51.100.21" }],
    ["an encoded slash", "/a%2Fb", { ip: "198.51.100.21" }],
    ["no address", "/anon", {}],
  ];
}

/** Sends one request and keeps everything about its answer that is not the clock's. */
async function send(worker, originUrl, [name, p, { ip, headers = {}, ...init }]) {
  const h = { ...headers };
  if (ip) h["cf-connecting-ip"] = ip;
  const r = await fetch(worker.url + p, { ...init, headers: h, redirect: "manual" });
  const ports = (s) => s.replaceAll(new URL(worker.url).port, "<worker>").replaceAll(new URL(originUrl).port, "<origin>");
  const fields = {};
  for (const [k, v] of r.headers) if (k !== "date" && k !== "set-cookie") fields[k] = ports(v);
  if (r.headers.getSetCookie().length) fields["set-cookie"] = r.headers.getSetCookie().join(" | ");
  let body = await r.text();
  try {
    const json = JSON.parse(body);
    // The origin's echo: what it received (its date-free fields).
    if (json.headers) for (const k of ["host", "cf-ray", "cf-visitor", "cdn-loop"]) delete json.headers[k];
    body = JSON.parse(ports(JSON.stringify(json)));
  } catch {
    body = ports(body);
  }
  return { name, status: r.status, fields, body };
}

async function run(worker, originUrl) {
  const answers = [];
  for (const req of scenario()) answers.push(await send(worker, originUrl, req));
  return answers;
}

/** Seconds-until values may move with the clock: numbers within 2 of each other are equal. */
const TIMED = new Set(["ratelimit", "ratelimit-reset", "x-ratelimit-reset", "retry-after"]);
function sameTimed(a, b) {
  const nums = (s) => String(s).match(/\d+/g) ?? [];
  const strip = (s) => String(s).replace(/\d+/g, "N");
  if (strip(a) !== strip(b)) return false;
  const [x, y] = [nums(a), nums(b)];
  return x.every((n, i) => Math.abs(Number(n) - Number(y[i])) <= 2);
}
/** `RateLimit` now (-12) against the recorded -10: the same limits in the same order, the
 * same units available, an effective window no longer than the seconds recorded. */
function sameRateLimit(now, then) {
  const items = (s, re) => String(s).split(",").map((i) => re.exec(i.trim())).map((m) => m && [m[1], Number(m[2]), Number(m[3])]);
  const a = items(now, /^"([^"]+)";a=(\d+);w=(\d+)(;c=\d+)?$/);
  const b = items(then, /^"([^"]+)";r=(\d+);t=(\d+)$/);
  return a.length === b.length && a.every((x, i) => x && b[i] && x[0] === b[i][0] && x[1] === b[i][1] && x[2] <= b[i][2] + 2);
}
function compare(now, then, label) {
  assert.equal(now.length, then.length, `${label}: as many answers`);
  for (let i = 0; i < now.length; i++) {
    const [a, b] = [now[i], then[i]];
    const where = `${label}, ${b.name}`;
    assert.equal(a.status, b.status, `${where}: status`);
    assert.deepEqual(Object.keys(a.fields).sort(), Object.keys(b.fields).sort(), `${where}: the same fields`);
    for (const [k, v] of Object.entries(b.fields)) {
      if (k === "ratelimit") assert.ok(sameRateLimit(a.fields[k], v), `${where}: ${k} ${a.fields[k]} against ${v}`);
      else if (TIMED.has(k)) assert.ok(sameTimed(a.fields[k], v), `${where}: ${k} ${a.fields[k]} against ${v}`);
      else assert.equal(a.fields[k], v, `${where}: ${k}`);
    }
    const timedBody = (x) => JSON.stringify(x).replace(/(Retry in |wait |"retry_after":|"reset":)\d+/g, "$1N");
    assert.equal(timedBody(a.body), timedBody(b.body), `${where}: body`);
  }
}

const recorded = RECORD ? { cases: {} } : JSON.parse(readFileSync(FIXTURE, "utf8"));
const check = (label, answers) => {
  if (RECORD) recorded.cases[label] = answers;
  else compare(answers, recorded.cases[label], label);
};

let origin;
before(async () => { origin = await startOrigin(); });
after(async () => {
  await origin?.stop();
  if (RECORD) {
    recorded.commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT }).toString().trim();
    recorded.recorded = new Date().toISOString();
    writeFileSync(FIXTURE, JSON.stringify(recorded, null, 1) + "\n");
  }
});

test("the memory store: every answer as the path before gave it", async () => {
  const worker = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET: SECRET });
  try {
    check("memory", await run(worker, origin.url));
  } finally {
    await worker.stop();
  }
});

test("Upstash (local-upstash, redis-server): every answer as the path before gave it", async () => {
  const stack = await startStack({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET: SECRET });
  try {
    check("upstash", await run(stack.worker, origin.url));
  } finally {
    await stack.stop();
  }
});

test("the demo origin, a broken policy and the dashboard's redirect: as before", async () => {
  const demo = await startWorker({ ORIGIN_URL: "demo", POLICY: JSON.stringify(POLICY) });
  const broken = await startWorker({ ORIGIN_URL: origin.url, POLICY: '{"tiers": {"anonymous": {"limits": {"x": "ten"}}}}' });
  try {
    const requests = [
      ["demo, GET", "/hello?x=1", { ip: "198.51.100.30" }],
      ["demo, POST", "/hello", { ip: "198.51.100.30", method: "POST", body: "b" }],
      ["dashboard without its slash", "/__limiter", { ip: "198.51.100.30" }],
    ];
    const answers = [];
    for (const req of requests) answers.push(await send(demo, origin.url, req));
    answers.push(await send(broken, origin.url, ["a broken policy", "/a", { ip: "198.51.100.31" }]));
    answers.push(await send(broken, origin.url, ["a broken policy, CORS", "/a", { ip: "198.51.100.31", headers: { origin: "https://x.example" } }]));
    check("other", answers);
  } finally {
    await demo.stop();
    await broken.stop();
  }
});
