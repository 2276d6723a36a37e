// The Worker end to end on the memory store: the real wasm build in workerd (Miniflare),
// a real origin on 127.0.0.1, real HTTP between them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  startWorker, startOrigin, signJwt, nowS, rawRequest, parseRateLimit, freshIp, sleep, sha256Hex, JWT_SECRET,
} from "./harness.mjs";

const PREMIUM_KEY = "e2e-premium-" + randomBytes(8).toString("hex");

const POLICY = {
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 5, refill: "2/s" } } } },
    authenticated: { limits: { burst: { token_bucket: { capacity: 8, refill: "1/min" } } } },
    premium: {
      limits: { burst: { token_bucket: { capacity: 12, refill: "1/min" } }, daily: { fixed_window: "1000/day" } },
    },
    bulk: { limits: { burst: { token_bucket: { capacity: 100, refill: "100/s" } } } },
  },
  identity: {
    api_key: { header: "X-API-Key", keys: { [sha256Hex(PREMIUM_KEY)]: "premium" } },
    jwt: { tier_claim: "tier", default_tier: "authenticated" },
  },
  routes: [
    { path: "/health", exempt: true },
    { method: "POST", path: "/upload", cost: 3 },
    { path: "/big", use_tier: "bulk" },
  ],
  headers: "both",
};

let origin, worker;
before(async () => {
  origin = await startOrigin();
  worker = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, JWT_SECRET });
});
after(async () => {
  await worker?.stop();
  await origin?.stop();
});

const get = (path, headers = {}, init = {}) => fetch(worker.url + path, { headers, ...init });

test("a burst admits exactly the capacity, then 429 with Retry-After and RateLimit fields", async () => {
  const ip = freshIp();
  for (let i = 0; i < 5; i++) {
    const r = await get("/anything", { "CF-Connecting-IP": ip });
    assert.equal(r.status, 200, `request ${i + 1}`);
    assert.equal(parseRateLimit(r.headers.get("ratelimit")).burst.a, 4 - i);
    assert.equal(r.headers.get("ratelimit-policy"), '"burst";q=5;w=3');
    assert.equal(r.headers.get("x-ratelimit-limit"), "5");
    assert.equal(r.headers.get("x-limiter-backend"), "memory");
    await r.arrayBuffer();
  }
  const denied = await get("/anything", { "CF-Connecting-IP": ip });
  assert.equal(denied.status, 429);
  assert.equal(denied.headers.get("content-type"), "application/problem+json");
  // The next unit comes 500 ms after the burst; with up to 250 ms jitter that is 1 s.
  assert.equal(denied.headers.get("retry-after"), "1");
  assert.equal(parseRateLimit(denied.headers.get("ratelimit")).burst.a, 0);
  assert.equal(denied.headers.get("x-ratelimit-remaining"), "0");
  const body = await denied.json();
  assert.equal(body.status, 429);
  assert.equal(body.retry_after, 1);
  assert.equal(body.limit, "burst");
  assert.equal(origin.seen.filter((s) => s.headers["cf-connecting-ip"] === ip).length, 0, "the origin never sees the client IP header");
});

test("refill lets requests through again on time, and not before", async () => {
  const ip = freshIp();
  for (let i = 0; i < 5; i++) await (await get("/r", { "CF-Connecting-IP": ip })).arrayBuffer();
  assert.equal((await get("/r", { "CF-Connecting-IP": ip })).status, 429);
  await sleep(100);
  assert.equal((await get("/r", { "CF-Connecting-IP": ip })).status, 429, "too early");
  await sleep(550);
  assert.equal((await get("/r", { "CF-Connecting-IP": ip })).status, 200, "one unit back after 500 ms");
  assert.equal((await get("/r", { "CF-Connecting-IP": ip })).status, 429, "and only one");
});

async function countAllowed(n, headers) {
  let allowed = 0;
  let policy;
  for (let i = 0; i < n; i++) {
    const r = await get("/tiers", headers);
    if (r.status === 200) allowed++;
    else assert.equal(r.status, 429);
    policy ??= r.headers.get("ratelimit-policy");
    await r.arrayBuffer();
  }
  return { allowed, policy };
}

test("each tier, by API key and by JWT, gets its own limits", async () => {
  const ip = freshIp();
  const anon = await countAllowed(7, { "CF-Connecting-IP": ip });
  assert.deepEqual(anon, { allowed: 5, policy: '"burst";q=5;w=3' });
  const key = await countAllowed(14, { "CF-Connecting-IP": ip, "X-API-Key": PREMIUM_KEY });
  assert.equal(key.allowed, 12);
  assert.match(key.policy, /"burst";q=12;w=720, "daily";q=1000;w=86400/);
  const jwt = signJwt({ sub: "user-1", exp: nowS() + 600 });
  const auth = await countAllowed(10, { "CF-Connecting-IP": ip, Authorization: `Bearer ${jwt}` });
  assert.equal(auth.allowed, 8, "a JWT without a tier claim is the default tier");
  const premiumJwt = signJwt({ sub: "user-2", tier: "premium", exp: nowS() + 600 });
  const pj = await countAllowed(14, { "CF-Connecting-IP": ip, Authorization: `Bearer ${premiumJwt}` });
  assert.equal(pj.allowed, 12, "the tier claim picks the tier; separate bucket from the API key");
});

test("a tier header sent by the client changes nothing", async () => {
  const ip = freshIp();
  const claims = {
    "CF-Connecting-IP": ip, "X-Tier": "premium", "X-Limiter-Tier": "premium", "X-RateLimit-Tier": "premium", Tier: "premium",
  };
  assert.deepEqual(await countAllowed(7, claims), { allowed: 5, policy: '"burst";q=5;w=3' });
});

test("IPv6 clients are grouped by /64", async () => {
  for (let i = 0; i < 5; i++) assert.equal((await get("/6", { "CF-Connecting-IP": "2001:db8:aa:1::1" })).status, 200);
  assert.equal((await get("/6", { "CF-Connecting-IP": "2001:db8:aa:1:ffff:1:2:3" })).status, 429, "same /64");
  assert.equal((await get("/6", { "CF-Connecting-IP": "2001:db8:aa:2::1" })).status, 200, "next /64");
});

test("exempt routes are never limited and carry no rate-limit fields", async () => {
  const ip = freshIp();
  for (let i = 0; i < 6; i++) await (await get("/x", { "CF-Connecting-IP": ip })).arrayBuffer();
  for (let i = 0; i < 20; i++) {
    const r = await get("/health", { "CF-Connecting-IP": ip });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("ratelimit"), null);
    await r.arrayBuffer();
  }
  assert.equal((await get("/healthz", { "CF-Connecting-IP": ip })).status, 429, "prefixes match whole segments");
});

test("route costs are charged", async () => {
  const ip = freshIp();
  const up = await get("/upload", { "CF-Connecting-IP": ip }, { method: "POST", body: "x" });
  assert.equal(up.status, 200);
  assert.equal(parseRateLimit(up.headers.get("ratelimit")).burst.a, 2);
  const again = await get("/upload", { "CF-Connecting-IP": ip }, { method: "POST", body: "x" });
  assert.equal(again.status, 429, "3 units needed, 2 left");
  assert.equal(parseRateLimit(again.headers.get("ratelimit")).burst.a, 2, "a denial consumes nothing");
  const small = await get("/upload", { "CF-Connecting-IP": ip }); // GET: the rule is POST only
  assert.equal(small.status, 200);
  assert.equal(parseRateLimit(small.headers.get("ratelimit")).burst.a, 1);
});

test("forwarding keeps method, path, query, body, status and headers", async () => {
  const ip = freshIp();
  const premium = { "CF-Connecting-IP": ip, Authorization: `Bearer ${signJwt({ sub: "fwd", tier: "premium", exp: nowS() + 600 })}` };
  const r = await get("/status/201/a%20b?x=1&y=two", { ...premium, "X-Custom": "kept" }, { method: "PUT", body: "hello" });
  assert.equal(r.status, 201);
  assert.equal(r.headers.get("x-origin"), "e2e");
  assert.equal(r.headers.get("x-limiter-backend"), "memory");
  assert.deepEqual(r.headers.getSetCookie(), ["a=1", "b=2"]);
  const seen = await r.json();
  assert.equal(seen.method, "PUT");
  assert.equal(seen.url, "/status/201/a%20b?x=1&y=two");
  assert.equal(seen.headers["x-custom"], "kept");
  assert.equal(seen.length, 5);
  for (const status of [204, 404, 503]) {
    const s = await get(`/status/${status}`, premium);
    assert.equal(s.status, status, "the origin's status is kept, even its 5xx");
    await s.arrayBuffer();
  }
});

test("a 20 MB body streams through to the origin", async () => {
  const body = randomBytes(20 * 1024 * 1024);
  const r = await get("/big/upload", { "CF-Connecting-IP": freshIp(), "Content-Type": "application/octet-stream" }, { method: "POST", body });
  assert.equal(r.status, 200);
  const seen = await r.json();
  assert.equal(seen.length, body.length);
  assert.equal(seen.sha256, sha256Hex(body));
});

test("bad credentials of ours get 401 problem+json, never anonymous and never a panic", async () => {
  const ip = freshIp();
  const bad = [
    { "X-API-Key": "not-a-known-key" },
    { Authorization: `Bearer ${signJwt({ sub: "u", exp: nowS() - 10 })}` },
    { Authorization: `Bearer ${signJwt({ sub: "u", exp: nowS() + 60 }, { secret: "wrong" })}` },
    { Authorization: `Bearer ${signJwt({ sub: "u", tier: "premium" }).split(".").slice(0, 2).join(".")}.` },
    { "X-API-Key": "k".repeat(16 * 1024) },
  ];
  for (const headers of bad) {
    const r = await get("/cred", { "CF-Connecting-IP": ip, ...headers });
    assert.equal(r.status, 401, JSON.stringify(headers).slice(0, 80));
    assert.equal(r.headers.get("content-type"), "application/problem+json");
    assert.equal(r.headers.get("www-authenticate"), "Bearer");
    const body = await r.json();
    assert.equal(body.status, 401);
    assert.ok(!JSON.stringify(body).includes("not-a-known-key"), "the credential is not echoed");
  }
  // Bearer tokens that do not claim to be ours (not a JWT, another algorithm) are the app's:
  // forwarded untouched, their callers limited by address like anyone without a credential.
  const theirs = [
    "not.a.jwt", "a.b", "opaque-session-7f3e9a",
    signJwt({ sub: "u", tier: "premium", exp: nowS() + 60 }, { header: { alg: "none" } }),
    signJwt({ sub: "u", tier: "premium", exp: nowS() + 60 }, { header: { alg: "RS256", typ: "JWT" } }),
    signJwt({ sub: "u", exp: nowS() + 60 }, { header: { alg: "HS512" } }),
    "a".repeat(16 * 1024),
  ];
  for (const token of theirs) {
    const r = await get("/theirs", { "CF-Connecting-IP": freshIp(), Authorization: `Bearer ${token}` });
    assert.equal(r.status, 200, token.slice(0, 40));
    const seen = await r.json();
    assert.equal(seen.headers.authorization, `Bearer ${token}`, "the app's token reaches it unchanged");
    assert.match(r.headers.get("ratelimit-policy"), /"burst";q=5;/, "limited as anonymous, whatever the token claims");
  }
  // Large but harmless headers pass.
  for (const headers of [{ "X-Junk": "j".repeat(16 * 1024) }, { "CF-Connecting-IP": "z".repeat(16 * 1024) }]) {
    const r = await get("/cred", headers);
    assert.ok(r.status === 200 || r.status === 429, `${r.status}`);
    await r.arrayBuffer();
  }
});

test("non-UTF-8 header bytes never break the Worker", async () => {
  const cases = [
    ["X-API-Key: \xff\xfe\xfd", 401],
    // Not a JWT of ours: the app's business, passed on.
    ["Authorization: Bearer \xff\xfe.\xfd.\xfc", 200],
    ["CF-Connecting-IP: \xff\xfe", 200],
    ["X-Other: caf\xe9", 200],
  ];
  for (const [line, want] of cases) {
    const req = Buffer.from(`GET /bytes HTTP/1.1\r\nHost: x\r\n${line}\r\nConnection: close\r\n\r\n`, "latin1");
    const { status } = await rawRequest(worker.url, req);
    assert.equal(status, want, line);
  }
  assert.equal((await get("/after", { "CF-Connecting-IP": freshIp() })).status, 200, "still serving");
});

test("a browser gets an HTML 429", async () => {
  const ip = freshIp();
  for (let i = 0; i < 5; i++) await (await get("/page", { "CF-Connecting-IP": ip })).arrayBuffer();
  const r = await get("/page", { "CF-Connecting-IP": ip, Accept: "text/html,application/xhtml+xml,*/*;q=0.8" });
  assert.equal(r.status, 429);
  assert.match(r.headers.get("content-type"), /^text\/html/);
  assert.match(await r.text(), /Too many requests/);
});

test("the RateLimit field as draft -12 writes it (a, w, c for a costly request), and as -10 did with headers: ietf-10", async () => {
  const ip = freshIp();
  const first = await get("/anything", { "CF-Connecting-IP": ip });
  await first.arrayBuffer();
  // Capacity 5 at 2/s: 4 left, the unit taken back within 1 s (the effective window).
  assert.equal(first.headers.get("ratelimit"), '"burst";a=4;w=1');
  const upload = await get("/upload", { "CF-Connecting-IP": ip }, { method: "POST", body: "x" });
  await upload.arrayBuffer();
  assert.match(upload.headers.get("ratelimit"), /^"burst";a=1;w=1;c=3$/, "the cost of the request, when it is not 1");
  const ten = await startWorker({ POLICY: JSON.stringify({ ...POLICY, headers: "ietf-10" }), ORIGIN_URL: origin.url, JWT_SECRET });
  try {
    const r = await fetch(ten.url + "/anything", { headers: { "CF-Connecting-IP": ip } });
    await r.arrayBuffer();
    assert.equal(r.headers.get("ratelimit"), '"burst";r=4;t=1');
    assert.equal(r.headers.get("ratelimit-policy"), '"burst";q=5;w=3');
    assert.equal(r.headers.get("x-ratelimit-limit"), null, "ietf-10 sends the draft's fields only");
  } finally {
    await ten.stop();
  }
});
