// Abuse cases against the real Worker (release wasm in workerd through Miniflare), and a scan
// for secrets: no token, key or raw IP may appear in logs, response fields, error bodies or
// Redis, whatever is sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  startWorker, startOrigin, startStack, signJwt, nowS, freshIp, parseRateLimit, sha256Hex, JWT_SECRET,
} from "./harness.mjs";

const API_KEY = "abuse-key-" + randomBytes(12).toString("hex");
const ADMIN_TOKEN = "abuse-admin-" + randomBytes(12).toString("hex");

const POLICY = {
  key_prefix: "abuse",
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/h" } } } },
    member: { limits: { burst: { token_bucket: { capacity: 5, refill: "1/h" } } } },
  },
  identity: {
    api_key: { header: "X-API-Key", keys: { [sha256Hex(API_KEY)]: "member" } },
    jwt: { tier_claim: "tier", default_tier: "member" },
  },
  store: { memory_max_keys: 200 },
};

let origin, memoryWorker;
const seen = []; // every response's fields and body, for the secrets scan
async function send(worker, path, headers = {}, init = {}) {
  const r = await fetch(worker.url + path, { headers, ...init, redirect: "manual" });
  const body = await r.text();
  // The limiter's own answers (refusals, admin, status), not the origin's echo of the request.
  if (!r.headers.get("x-origin")) seen.push(JSON.stringify([...r.headers]) + body);
  return { status: r.status, headers: r.headers, body };
}

before(async () => {
  origin = await startOrigin();
  memoryWorker = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET, ADMIN_TOKEN });
});
after(async () => {
  await memoryWorker?.stop();
  await origin?.stop();
});

test("a flood of distinct subjects: the memory store stays within its bound and evicts the oldest", async () => {
  const first = freshIp();
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await send(memoryWorker, "/f", { "CF-Connecting-IP": first })).status);
  assert.deepEqual(statuses, [200, 200, 200, 429]);
  // 1,000 other subjects, 16 at a time: five times the bound.
  const ips = Array.from({ length: 1000 }, (_, i) => `203.0.${113 + (i >> 8)}.${i & 255}`);
  for (let i = 0; i < ips.length; i += 16) {
    const batch = ips.slice(i, i + 16).map((ip) => fetch(`${memoryWorker.url}/f`, { headers: { "CF-Connecting-IP": ip } }).then((r) => r.arrayBuffer()));
    await Promise.all(batch);
  }
  const status = await (await fetch(`${memoryWorker.url}/__limiter/status.json`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
  assert.ok(status.store.memory_keys <= 200, `memory keys ${status.store.memory_keys}`);
  assert.ok(status.store.memory_keys > 0);
  // The first subject was the least recently used: its state is gone, its bucket is full.
  const again = await send(memoryWorker, "/f", { "CF-Connecting-IP": first });
  assert.equal(again.status, 200);
  assert.equal(parseRateLimit(again.headers.get("ratelimit")).burst.a, 2);
});

test("a 1 MB subject (API key, JWT subject) gets a clear 4xx, never a 5xx, and the Worker goes on", async () => {
  const mb = "k".repeat(1024 * 1024);
  const sub = signJwt({ sub: "s".repeat(1024 * 1024), exp: nowS() + 60 });
  for (const headers of [{ "X-API-Key": mb }, { Authorization: `Bearer ${sub}` }, { "X-API-Key": "k".repeat(64 * 1024) }]) {
    let status;
    try {
      status = (await send(memoryWorker, "/big-subject", headers)).status;
    } catch (e) {
      status = `connection refused the request: ${e.cause?.code ?? e}`;
    }
    // The runtime may refuse an oversized header section itself (431); what reaches the Worker
    // is an unknown key (401). Either way: a 4xx or a refused request, never a 5xx.
    assert.ok(typeof status === "string" || (status >= 400 && status < 500), `status ${status}`);
  }
  assert.equal((await send(memoryWorker, "/after", { "CF-Connecting-IP": freshIp() })).status, 200);
});

test("JWTs with a wrong key or an expiry in the past are refused; alg none or a changed algorithm gains nothing", async () => {
  const claims = { sub: "mallory", tier: "member", exp: nowS() + 60 };
  const none = signJwt(claims, { header: { alg: "none", typ: "JWT" } }).split(".").slice(0, 2).join(".") + ".";
  const tokens = {
    "signed with another key": signJwt(claims, { secret: "not-the-secret" }),
    "expired": signJwt({ ...claims, exp: nowS() - 3600 }),
    "HS256 with the signature cut off": signJwt(claims).split(".").slice(0, 2).join(".") + ".",
  };
  for (const [what, token] of Object.entries(tokens)) {
    const r = await send(memoryWorker, "/jwt", { Authorization: `Bearer ${token}` });
    assert.equal(r.status, 401, what);
    assert.equal(r.headers.get("www-authenticate"), "Bearer", what);
    assert.ok(!r.body.includes(token), `${what}: the token is not echoed`);
  }
  // Another algorithm is not a token of ours: no member tier, just the anonymous limits of
  // the caller's address (3), and the token passes to the app, which judges its own.
  for (const [what, token] of Object.entries({
    "alg none": none,
    "alg HS512 in the header": signJwt(claims, { header: { alg: "HS512", typ: "JWT" } }),
    "alg RS256 in the header": signJwt(claims, { header: { alg: "RS256", typ: "JWT" } }),
  })) {
    const r = await send(memoryWorker, "/jwt", { Authorization: `Bearer ${token}`, "CF-Connecting-IP": freshIp() });
    assert.equal(r.status, 200, what);
    assert.match(r.headers.get("ratelimit-policy"), /"burst";q=3;/, `${what}: the anonymous tier, never member`);
  }
  const good = await send(memoryWorker, "/jwt", { Authorization: `Bearer ${signJwt(claims)}` });
  assert.equal(good.status, 200);
});

test("a key table entry that is not a SHA-256 digest: the policy is refused, naming the entry", async () => {
  const bad = { ...POLICY, identity: { api_key: { keys: { "my-secret-key": "member" } } } };
  const w = await startWorker({ POLICY: JSON.stringify(bad), ORIGIN_URL: origin.url });
  try {
    const r = await send(w, "/x", { "CF-Connecting-IP": freshIp() });
    assert.equal(r.status, 500);
    const problem = JSON.parse(r.body);
    // Named by position: a raw key pasted by mistake is not repeated to whoever asks.
    assert.match(problem.detail, /`identity\.api_key\.keys\[entry 1\]`: not a SHA-256 digest/);
    assert.ok(!r.body.includes("my-secret-key"));
    assert.ok(!w.logs.join("").includes("my-secret-key"), "nor logged");
  } finally {
    await w.stop();
  }
});

test("requests with no client IP share one limited bucket, never an unlimited one", async () => {
  // No CF-Connecting-IP, and an X-Forwarded-For the policy does not trust.
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const r = await send(memoryWorker, "/no-ip", { "X-Forwarded-For": `198.18.0.${i}` });
    statuses.push(r.status);
  }
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
});

test("encoded slashes, dot segments and case tricks never reach the dashboard or admin API unauthenticated", async () => {
  const tricks = [
    "/__limiter%2Fadmin/health",
    "/__limiter%2fadmin%2fhealth",
    "/%5F%5Flimiter/admin/health",
    "/__LIMITER/admin/health",
    "/x/..%2F__limiter/admin/health",
    "/x/%2E%2E/__limiter/admin/health",
    "//__limiter/admin/health",
    "/__limiter/admin/../admin/health",
    "/__limiter/./admin/health",
    "/__limiter/admin/health%00",
  ];
  for (const path of tricks) {
    const ip = freshIp();
    const r = await send(memoryWorker, path, { "CF-Connecting-IP": ip });
    assert.ok(r.status < 500, `${path}: ${r.status}`);
    if (r.headers.get("x-origin") || (r.status === 429 && JSON.parse(r.body).tier === "anonymous")) {
      // It went to the origin as an ordinary, limited request.
      assert.ok(r.status === 200 || r.status === 429, `${path}: ${r.status}`);
    } else {
      // It is the admin API (the runtime normalised it): the token is required; or the path
      // is one origins read differently (an encoded slash, a NUL) and is refused outright.
      // A wrong token is a failed credential: 401, and the store that counted it is named.
      assert.ok([400, 401, 404].includes(r.status), `${path}: ${r.status} ${r.body}`);
      assert.ok(!r.body.includes('"breaker"'), `${path}: no admin data`);
    }
  }
});

test("secrets never leak: logs, response fields, error bodies and Redis are scanned", async () => {
  const stack = await startStack({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET, ADMIN_TOKEN });
  const { upstash, worker: w } = stack;
  const ips = ["198.51.100.77", "2001:db8:abcd:12::5"];
  const jwt = signJwt({ sub: "user-secret-subject-42", exp: nowS() + 60 });
  try {
    for (let i = 0; i < 7; i++) {
      await send(w, "/s", { "CF-Connecting-IP": ips[0] });
      await send(w, "/s", { "CF-Connecting-IP": ips[1] });
      await send(w, "/s", { "X-API-Key": API_KEY });
      await send(w, "/s", { Authorization: `Bearer ${jwt}` });
    }
    await send(w, "/s", { "X-API-Key": API_KEY + "-wrong" });
    await send(w, "/s", { Authorization: `Bearer ${jwt}x` });
    await send(w, "/__limiter/admin/health", { Authorization: `Bearer ${ADMIN_TOKEN}-wrong` });
    await send(w, `/__limiter/admin/subject?ip=${ips[0]}`, { Authorization: `Bearer ${ADMIN_TOKEN}` });
    await send(w, "/__limiter/admin/reset", { Authorization: `Bearer ${ADMIN_TOKEN}` }, { method: "POST", body: JSON.stringify({ key: API_KEY }) });
    await send(w, "/__limiter/admin/health", { Authorization: `Bearer ${ADMIN_TOKEN}` });
    await send(w, "/__limiter/status.json");
    // A failure too, so that failure logs are scanned: the token refused for a while.
    await upstash.setFault("unauthorized");
    await send(w, "/s", { "CF-Connecting-IP": "198.51.100.78" }); // not held by the deny cache
    await upstash.setFault("none");

    const keys = await upstash.command("KEYS", "*");
    assert.ok(keys.length >= 3, `keys ${keys}`);
    const values = [];
    for (const k of keys) values.push(String(await upstash.command("GET", k)));
    const places = {
      logs: w.logs.join("") + memoryWorker.logs.join(""),
      "response fields and bodies": seen.join("\n"),
      "Redis keys and values": keys.join("\n") + values.join("\n"),
    };
    const secrets = {
      "API key": API_KEY,
      "admin token": ADMIN_TOKEN,
      "JWT secret": JWT_SECRET,
      "a JWT": jwt,
      "JWT subject": "user-secret-subject-42",
      "Upstash token": upstash.token,
      "IPv4 address": ips[0],
      "the other IPv4 address": "198.51.100.78",
      "IPv6 address": "2001:db8:abcd:12",
    };
    for (const [place, text] of Object.entries(places)) {
      for (const [what, secret] of Object.entries(secrets)) {
        assert.ok(!text.includes(secret), `${what} found in ${place}`);
      }
    }
    assert.match(places.logs, /configuration error \(unauthorized\)/, "the failure was logged (and scanned)");
  } finally {
    await stack.stop();
  }
});

test("one IPv6 allocation rotating through its /64s meets the wider /48 net", async () => {
  const policy = {
    key_prefix: "wide",
    tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 2, refill: "1/h" } } } } },
    identity: { client_ip: { ipv6_wide: { prefix: 48, limits: { allocation: { token_bucket: { capacity: 5, refill: "1/h" } } } } } },
  };
  const w = await startWorker({ POLICY: JSON.stringify(policy), ORIGIN_URL: origin.url });
  try {
    const statuses = [];
    let last;
    // Ten fresh /64s of 2001:db8:77::/48, two requests each: each /64 has room, the /48 does not.
    for (let i = 0; i < 10; i++) {
      for (let j = 0; j < 2; j++) {
        last = await send(w, "/w", { "CF-Connecting-IP": `2001:db8:77:${i.toString(16)}::${j + 1}` });
        statuses.push(last.status);
      }
    }
    assert.equal(statuses.filter((s) => s === 200).length, 5, statuses.join(" "));
    assert.equal(last.status, 429);
    assert.equal(JSON.parse(last.body).tier, "ipv6-wide");
    // The tighter of the two is what the headers tell: the first /64's second request had 4 left in the /48.
    const first = await send(w, "/w", { "CF-Connecting-IP": "2001:db8:78::1" });
    assert.equal(first.status, 200);
    assert.equal(parseRateLimit(first.headers.get("ratelimit")).burst.a, 1);
    // Another allocation and IPv4 callers are untouched.
    assert.equal((await send(w, "/w", { "CF-Connecting-IP": "2001:db8:79::1" })).status, 200);
    for (let i = 0; i < 2; i++) assert.equal((await send(w, "/w", { "CF-Connecting-IP": "203.0.113.50" })).status, 200);
  } finally {
    await w.stop();
  }
});

test("problem types point at the docs page where DASHBOARD_PATH puts it", async () => {
  const policy = { key_prefix: "docs", tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 1, refill: "1/h" } } } } } };
  for (const [setting, docs] of [["/ops/", "/ops/docs.html"], ["off", "about:blank"], [undefined, "/__limiter/docs.html"]]) {
    const vars = { POLICY: JSON.stringify(policy), ORIGIN_URL: origin.url };
    if (setting) vars.DASHBOARD_PATH = setting;
    const w = await startWorker(vars);
    try {
      const ip = freshIp();
      await send(w, "/d", { "CF-Connecting-IP": ip });
      const denied = await send(w, "/d", { "CF-Connecting-IP": ip });
      assert.equal(denied.status, 429);
      assert.equal(JSON.parse(denied.body).type, `${docs}#rate-limited`, `DASHBOARD_PATH ${setting}`);
      const page = await send(w, "/d", { "CF-Connecting-IP": ip, Accept: "text/html" });
      assert.ok(page.body.includes(`href="${docs}#rate-limited"`), `${setting}: ${page.body.slice(0, 300)}`);
      if (setting === "/ops/") {
        // The dashboard answers there, not the origin (Miniflare binds no assets here, so it
        // says the files are missing; dashboard.test.mjs serves them under wrangler dev).
        const there = await send(w, "/ops/docs.html");
        assert.match(JSON.parse(there.body).type, /#dashboard-missing$/);
      }
    } finally {
      await w.stop();
    }
  }
});
