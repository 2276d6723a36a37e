// Issue 13, holes 2 and 3, against the real Worker (release wasm in workerd through
// Miniflare) in front of a real origin: the published demo keys are no pass in front of a
// real origin, and failed credentials (API keys, JWTs, admin tokens) cost the caller's
// address like any other abuse, with no oracle for a right guess once it is locked out.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  startWorker, startOrigin, startStack, signJwt, nowS, freshIp, parseRateLimit, sha256Hex, JWT_SECRET,
} from "./harness.mjs";

const API_KEY = "cred-key-" + randomBytes(12).toString("hex");
const ADMIN_TOKEN = "cred-admin-" + randomBytes(16).toString("hex");

// Three failures per address, then one an hour: a guesser is stopped at once.
const POLICY = {
  key_prefix: "cred",
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 50, refill: "1/s" } } } },
    member: { limits: { burst: { token_bucket: { capacity: 50, refill: "1/s" } } } },
  },
  identity: {
    api_key: { keys: { [sha256Hex(API_KEY)]: "member" } },
    jwt: { default_tier: "member" },
    auth_failures: { guesses: { token_bucket: { capacity: 3, refill: "1/h" } } },
  },
};

let origin;
before(async () => { origin = await startOrigin(); });
after(async () => { await origin?.stop(); });

async function send(worker, path, headers = {}, init = {}) {
  const r = await fetch(worker.url + path, { headers, ...init, redirect: "manual" });
  return { status: r.status, headers: r.headers, body: await r.text() };
}

const count = (logs, text) => logs.join("").split(text).length - 1;

test("the published demo keys are unknown keys in front of a real origin, and the log says so once", async () => {
  for (const policy of [undefined, "copied"]) {
    const vars = { ORIGIN_URL: origin.url, ADMIN_TOKEN };
    // Unset: the embedded default. "copied": an operator's policy that kept the example's key table.
    if (policy) vars.POLICY = JSON.stringify({ ...POLICY, identity: { api_key: { keys: {
      "24fdfedfe3f3458eae8dfd32a021ba503cb73dca09e14591a41821f5f9af91fe": "member",
      [sha256Hex(API_KEY)]: "member",
    } } } });
    const w = await startWorker(vars);
    try {
      for (const key of ["demo-premium-key", "demo-authenticated-key"]) {
        const r = await send(w, "/x", { "X-API-Key": key, "CF-Connecting-IP": freshIp() });
        assert.equal(r.status, 401, `${policy ?? "default"}: ${key} is not a key here`);
        assert.equal(origin.seen.filter((s) => s.headers["x-api-key"] === key).length, 0, "never forwarded");
      }
      if (policy) assert.equal((await send(w, "/x", { "X-API-Key": API_KEY })).status, 200, "the operator's own key still works");
      await send(w, "/x", { "X-API-Key": "demo-premium-key", "CF-Connecting-IP": freshIp() });
      assert.equal(count(w.logs, "published demo API keys"), 1, w.logs.join(""));
      if (!policy) assert.equal(count(w.logs, "built-in demo policy is running in front of a real origin"), 1);
      // The dashboard's data is private here, and offers no demo key.
      assert.equal((await send(w, "/__limiter/status.json", { "CF-Connecting-IP": freshIp() })).status, 401);
      const status = await send(w, "/__limiter/status.json", { Authorization: `Bearer ${ADMIN_TOKEN}` });
      assert.equal(status.status, 200);
      assert.equal(JSON.parse(status.body).demo_keys, false);
    } finally {
      await w.stop();
    }
  }
});

test("with the demo origin the demo keys work and the dashboard offers them", async () => {
  const w = await startWorker({ ORIGIN_URL: "demo" });
  try {
    const r = await send(w, "/x", { "X-API-Key": "demo-premium-key" });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("ratelimit-policy"), /"burst";q=200/);
    const status = await send(w, "/__limiter/status.json");
    assert.equal(status.status, 200, "public in front of the demo origin");
    assert.equal(JSON.parse(status.body).demo_keys, true);
    assert.equal(count(w.logs, "published demo API keys"), 0);
  } finally {
    await w.stop();
  }
});

test("wrong API keys cost the address; once it is used up even the right key gets 429", async () => {
  const w = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET });
  try {
    const guesser = freshIp();
    const statuses = [];
    let last;
    for (let i = 0; i < 5; i++) {
      last = await send(w, "/g", { "X-API-Key": `guess-${i}`, "CF-Connecting-IP": guesser });
      statuses.push(last.status);
      if (i === 0) assert.equal(parseRateLimit(last.headers.get("ratelimit")).guesses.a, 2, "the 401 says what is left");
    }
    assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
    const retry = Number(last.headers.get("retry-after"));
    assert.ok(retry >= 3599 && retry <= 3601, `Retry-After ${retry}: one unit back per hour (plus jitter)`);
    assert.equal(JSON.parse(last.body).tier, "auth-failures");
    // The right key from the locked-out address looks exactly like a wrong one: no oracle.
    const right = await send(w, "/g", { "X-API-Key": API_KEY, "CF-Connecting-IP": guesser });
    assert.equal(right.status, 429);
    // Its holder elsewhere is unaffected, and so are the guesser's requests with no credential.
    assert.equal((await send(w, "/g", { "X-API-Key": API_KEY, "CF-Connecting-IP": freshIp() })).status, 200);
    assert.equal((await send(w, "/g", { "CF-Connecting-IP": guesser })).status, 200);
  } finally {
    await w.stop();
  }
});

test("bad JWTs of ours cost the address the same way; bearer tokens that are not ours cost nothing", async () => {
  const w = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET });
  try {
    const guesser = freshIp();
    const claims = { sub: "u1", exp: nowS() + 60 };
    const bad = [signJwt(claims, { secret: "guess-1" }), signJwt(claims, { secret: "guess-2" }), signJwt({ sub: "u1" }), signJwt(claims, { secret: "guess-3" })];
    const statuses = [];
    for (const t of bad) statuses.push((await send(w, "/j", { Authorization: `Bearer ${t}`, "CF-Connecting-IP": guesser })).status);
    assert.deepEqual(statuses, [401, 401, 401, 429]);
    // Tokens that are not ours (another algorithm, not a JWT) are never charged nor refused.
    const app = freshIp();
    for (const t of ["opaque-token", signJwt(claims, { header: { alg: "RS256" } }), signJwt(claims, { header: { alg: "none" } })]) {
      for (let i = 0; i < 4; i++) assert.equal((await send(w, "/j", { Authorization: `Bearer ${t}`, "CF-Connecting-IP": app })).status, 200);
    }
    assert.equal((await send(w, "/j", { Authorization: `Bearer ${signJwt(claims)}`, "CF-Connecting-IP": guesser })).status, 429);
    assert.equal((await send(w, "/j", { Authorization: `Bearer ${signJwt(claims)}`, "CF-Connecting-IP": freshIp() })).status, 200);
    // Basic auth is the origin's business: never charged, never refused by the limiter.
    const other = freshIp();
    for (let i = 0; i < 5; i++) assert.equal((await send(w, "/j", { Authorization: "Basic dTpw", "CF-Connecting-IP": other })).status, 200);
  } finally {
    await w.stop();
  }
});

test("admin token guesses cost the address; a short ADMIN_TOKEN keeps the API off", async () => {
  const w = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, ADMIN_TOKEN });
  try {
    const guesser = freshIp();
    const statuses = [];
    for (let i = 0; i < 4; i++) {
      statuses.push((await send(w, "/__limiter/admin/health", { Authorization: `Bearer guess-${i}`, "CF-Connecting-IP": guesser })).status);
    }
    assert.deepEqual(statuses, [401, 401, 401, 429]);
    const right = await send(w, "/__limiter/admin/health", { Authorization: `Bearer ${ADMIN_TOKEN}`, "CF-Connecting-IP": guesser });
    assert.equal(right.status, 429, "locked out: the right token gets no answer either");
    // status.json is behind the same token here (a real origin), and the same lock-out.
    assert.equal((await send(w, "/__limiter/status.json", { Authorization: `Bearer ${ADMIN_TOKEN}`, "CF-Connecting-IP": guesser })).status, 429);
    const ok = await send(w, "/__limiter/admin/health", { Authorization: `Bearer ${ADMIN_TOKEN}`, "CF-Connecting-IP": freshIp() });
    assert.equal(ok.status, 200);
    // No token at all is not a guess (a dashboard asking for status.json): never charged.
    const asker = freshIp();
    for (let i = 0; i < 12; i++) assert.equal((await send(w, "/__limiter/status.json", { "CF-Connecting-IP": asker })).status, 401);
    assert.equal((await send(w, "/__limiter/status.json", { Authorization: `Bearer ${ADMIN_TOKEN}`, "CF-Connecting-IP": asker })).status, 200);
    assert.ok(!w.logs.join("").includes(ADMIN_TOKEN));
  } finally {
    await w.stop();
  }
  const short = "s".repeat(31);
  const s = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, ADMIN_TOKEN: short });
  try {
    const r = await send(s, "/__limiter/admin/health", { Authorization: `Bearer ${short}` });
    assert.equal(r.status, 404);
    assert.match(JSON.parse(r.body).detail, /shorter than 32/);
    assert.equal(count(s.logs, "ADMIN_TOKEN is shorter than 32 characters"), 1);
    assert.ok(!s.logs.join("").includes(short), "the token itself is never logged");
  } finally {
    await s.stop();
  }
});

test("an IPv6 guesser rotating through its /64s meets the wider net's failure count", async () => {
  const policy = { ...POLICY, identity: { ...POLICY.identity, client_ip: { ipv6_wide: { prefix: 48, limits: { all: "1000/s" } } } } };
  const w = await startWorker({ POLICY: JSON.stringify(policy), ORIGIN_URL: origin.url });
  try {
    const statuses = [];
    for (let i = 0; i < 5; i++) {
      statuses.push((await send(w, "/g", { "X-API-Key": `guess-${i}`, "CF-Connecting-IP": `2001:db8:99:${i}::1` })).status);
    }
    assert.deepEqual(statuses, [401, 401, 401, 429, 429], "failures count per /48, not per /64");
    assert.equal((await send(w, "/g", { "X-API-Key": API_KEY, "CF-Connecting-IP": "2001:db8:98::1" })).status, 200, "another /48 is untouched");
  } finally {
    await w.stop();
  }
});

test("raw API keys never travel in a URL: the admin lookup takes them in a body or by digest", async () => {
  const w = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, ADMIN_TOKEN });
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  try {
    await send(w, "/k", { "X-API-Key": API_KEY });
    const inUrl = await send(w, `/__limiter/admin/subject?key=${API_KEY}`, auth);
    assert.equal(inUrl.status, 400);
    assert.match(JSON.parse(inUrl.body).detail, /never goes in a URL/);
    const byDigest = JSON.parse((await send(w, `/__limiter/admin/subject?key_digest=${sha256Hex(API_KEY)}`, auth)).body);
    const inBody = JSON.parse((await send(w, "/__limiter/admin/subject", auth, { method: "POST", body: JSON.stringify({ key: API_KEY }) })).body);
    assert.equal(byDigest.tier, "member");
    assert.equal(byDigest.limits[0].remaining, 49);
    const remaining = (s) => ({ tier: s.tier, subject: s.subject_hash, remaining: s.limits.map((l) => l.remaining) });
    assert.deepEqual(remaining(inBody), remaining(byDigest), "the key in a body and its digest name one subject");
    const reset = await send(w, "/__limiter/admin/reset", auth, { method: "POST", body: JSON.stringify({ key: API_KEY }) });
    assert.equal(reset.status, 200);
    assert.equal(JSON.parse((await send(w, `/__limiter/admin/subject?key_digest=${sha256Hex(API_KEY)}`, auth)).body).limits[0].remaining, 50);
  } finally {
    await w.stop();
  }
});

test("on Upstash the failures count across isolates: two Workers, one budget of failures", async () => {
  const stack = await startStack({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url });
  const second = await startWorker({
    POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url,
    UPSTASH_REDIS_REST_URL: stack.upstash.url, UPSTASH_REDIS_REST_TOKEN: stack.upstash.token,
  });
  try {
    const guesser = freshIp();
    const workers = [stack.worker, second, stack.worker, second];
    const answers = [];
    for (const [i, w] of workers.entries()) {
      const r = await send(w, "/u", { "X-API-Key": `guess-${i}`, "CF-Connecting-IP": guesser });
      answers.push(`${r.status} ${r.headers.get("x-limiter-backend")}`);
    }
    assert.deepEqual(answers, ["401 upstash", "401 upstash", "401 upstash", "429 upstash"]);
    const keys = await stack.upstash.command("KEYS", "cred:auth-failures:*");
    assert.equal(keys.length, 1, `one fleet-wide key: ${keys}`);
    assert.ok(!keys[0].includes(guesser));
  } finally {
    await second.stop();
    await stack.stop();
  }
});

test("CORS on the limiter's answers follows the policy's list of origins; the admin API has none", async () => {
  const policy = { ...POLICY, cors: { allow_origins: ["https://app.example"] } };
  const w = await startWorker({ POLICY: JSON.stringify(policy), ORIGIN_URL: origin.url, ADMIN_TOKEN });
  try {
    const listed = await send(w, "/c", { "X-API-Key": "wrong", Origin: "https://app.example", "CF-Connecting-IP": freshIp() });
    assert.equal(listed.status, 401);
    assert.equal(listed.headers.get("access-control-allow-origin"), "https://app.example");
    assert.equal(listed.headers.get("access-control-allow-credentials"), "true");
    assert.equal(listed.headers.get("vary"), "Origin");
    const other = await send(w, "/c", { "X-API-Key": "wrong", Origin: "https://evil.example", "CF-Connecting-IP": freshIp() });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    const admin = await send(w, "/__limiter/admin/health", { Authorization: `Bearer ${ADMIN_TOKEN}`, Origin: "https://app.example" });
    assert.equal(admin.status, 200);
    assert.equal(admin.headers.get("access-control-allow-origin"), null, "no page on another origin reads the admin API");
    assert.equal(admin.headers.get("x-edge-limiter-own-answer"), null);
  } finally {
    await w.stop();
  }
});
