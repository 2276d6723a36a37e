// Block and allow lists in the policy, end to end: the real Worker in workerd, one
// local-upstash in front of one redis-server, and a real origin that records what reaches it.
// A blocked request gets 403 problem+json and costs neither an origin call nor a store call;
// an allowed one passes unlimited; everything else is limited as before. Each way a client
// might try to get around a list is a test here.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startOrigin, startRedis, startLocalUpstash, startWorker, scriptCalls, freshIp } from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const policy = {
  key_prefix: "lists",
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 2, refill: "1/day" } } } } },
  block: {
    addresses: ["203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.66"],
    countries: ["KP"],
    asns: [64496],
    user_agents: ["*sqlmap*", "BadBot/*"],
  },
  allow: { addresses: ["198.51.100.0/24", "192.0.2.10"] },
  store: { deny_cache: false, fleet: false },
};

let redis, upstash, origin, w, plain;
before(async () => {
  redis = await startRedis();
  upstash = await startLocalUpstash(redis.port);
  origin = await startOrigin();
  const vars = {
    POLICY: JSON.stringify(policy),
    ORIGIN_URL: origin.url,
    ADMIN_TOKEN,
    UPSTASH_REDIS_REST_URL: upstash.url,
    UPSTASH_REDIS_REST_TOKEN: upstash.token,
  };
  w = await startWorker({ ...vars, TEST_GEO_HEADERS: "1" });
  // The same policy without the test harness's stand-in for `request.cf`.
  plain = await startWorker(vars);
});
after(async () => {
  await w?.stop();
  await plain?.stop();
  await origin?.stop();
  await upstash?.stop();
  await redis?.stop();
});

async function send(worker, headers = {}, { method = "GET", path = "/x" } = {}) {
  const r = await fetch(worker.url + path, { method, headers });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text };
}
const calls = async () => {
  const c = await scriptCalls(upstash);
  return c.evalsha.calls + c.eval.calls;
};

test("a blocked request: 403 problem+json of type blocked, no origin call, no store call; by address, v6 range, IPv4-mapped form, user agent, country and ASN", async () => {
  const seen = origin.seen.length, before = await calls();
  for (const headers of [
    { "CF-Connecting-IP": "203.0.113.9" },
    { "CF-Connecting-IP": "203.0.113.255" },
    { "CF-Connecting-IP": "198.51.100.66" },
    { "CF-Connecting-IP": "2001:db8:bad:1::7" },
    { "CF-Connecting-IP": "::ffff:203.0.113.9" },
    { "CF-Connecting-IP": "::FFFF:CB00:7109" }, // 203.0.113.9 again, written in hex
    { "CF-Connecting-IP": freshIp(), "User-Agent": "sqlmap/1.7.2#stable" },
    { "CF-Connecting-IP": freshIp(), "User-Agent": "Mozilla/5.0 (SQLMap)" },
    { "CF-Connecting-IP": freshIp(), "User-Agent": "badbot/2.0" },
    { "CF-Connecting-IP": freshIp(), "X-Test-Country": "KP" },
    { "CF-Connecting-IP": freshIp(), "X-Test-Country": "kp" },
    { "CF-Connecting-IP": freshIp(), "X-Test-Asn": "64496" },
  ]) {
    const r = await send(w, headers);
    assert.equal(r.status, 403, JSON.stringify(headers));
    assert.equal(r.headers.get("content-type"), "application/problem+json", JSON.stringify(headers));
    const body = JSON.parse(r.text);
    assert.match(body.type, /#blocked$/);
    assert.equal(body.status, 403);
    assert.ok(!r.text.includes("203.0.113"), "the answer does not name the entry that matched");
  }
  assert.equal(origin.seen.length, seen, "no blocked request reached the origin");
  assert.equal(await calls(), before, "no blocked request made a store call");
});

test("a blocked request stays blocked: another method, a preflight, an X-Forwarded-For naming an allowed address, another path spelling", async () => {
  const ip = { "CF-Connecting-IP": "203.0.113.40" };
  for (const [headers, opts] of [
    [ip, { method: "POST" }],
    [ip, { method: "PROPFIND" }],
    [{ ...ip, Origin: "https://app.example", "Access-Control-Request-Method": "POST" }, { method: "OPTIONS" }],
    [{ ...ip, "X-Forwarded-For": "198.51.100.1" }, {}],
    [{ ...ip, "True-Client-IP": "198.51.100.1", "X-Real-IP": "198.51.100.1" }, {}],
    [ip, { path: "/%2e/x" }],
    [ip, { path: "/__limiter-not/x" }],
  ]) {
    const r = await send(w, headers, opts);
    assert.equal(r.status, 403, JSON.stringify([headers, opts]));
  }
});

test("an allowed address passes unlimited, with no store call and no rate-limit fields; block wins over allow", async () => {
  const before = await calls(), seen = origin.seen.length;
  for (let i = 0; i < 10; i++) {
    const r = await send(w, { "CF-Connecting-IP": "198.51.100.20" });
    assert.equal(r.status, 200, `request ${i + 1}`);
    assert.equal(r.headers.get("ratelimit"), null);
  }
  assert.equal(origin.seen.length, seen + 10);
  assert.equal(await calls(), before, "the allow list skips the store");
  // 198.51.100.66 is on both lists: blocked.
  assert.equal((await send(w, { "CF-Connecting-IP": "198.51.100.66" })).status, 403);
});

test("a client on neither list is limited as before, and cannot claim a place on the allow list", async () => {
  const ip = freshIp();
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await send(w, { "CF-Connecting-IP": ip, "X-Forwarded-For": "192.0.2.10" })).status);
  assert.deepEqual(statuses, [200, 200, 429], "its own limits, whatever X-Forwarded-For says");
  // A user agent that only contains a listed word in another place is not blocked by an
  // anchored pattern, and a country the lists do not name passes.
  assert.equal((await send(w, { "CF-Connecting-IP": freshIp(), "User-Agent": "NotBadBot/1" })).status, 200);
  assert.equal((await send(w, { "CF-Connecting-IP": freshIp(), "X-Test-Country": "DE" })).status, 200);
});

test("without TEST_GEO_HEADERS the stand-in fields are ignored: a client cannot claim a country", async () => {
  // Locally `request.cf` has no country, so nothing is blocked by country here; what matters
  // is that the header does not count.
  assert.equal((await send(plain, { "CF-Connecting-IP": freshIp(), "X-Test-Country": "KP" })).status, 200);
  assert.equal((await send(plain, { "CF-Connecting-IP": freshIp(), "X-Test-Asn": "64496" })).status, 200);
  assert.equal((await send(plain, { "CF-Connecting-IP": "203.0.113.1" })).status, 403);
});

test("the status counts what the lists did", async () => {
  const r = await fetch(w.url + "/__limiter/status.json", { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  const requests = (await r.json()).requests;
  console.log(`# ${JSON.stringify(requests)}`);
  assert.ok(requests.blocked >= 20, JSON.stringify(requests));
  assert.ok(requests.allow_listed >= 10, JSON.stringify(requests));
});

test("a malformed list is refused with the field and the reason", async () => {
  const bad = await startWorker({
    POLICY: JSON.stringify({ ...policy, block: { addresses: ["203.0.113.0/24", "10.1.2.3/8"] } }),
    ORIGIN_URL: origin.url,
  });
  try {
    const r = await send(bad, { "CF-Connecting-IP": freshIp() });
    assert.equal(r.status, 500);
    assert.match(r.text, /block\.addresses\[1\]/);
    assert.match(r.text, /bits set past its prefix/);
  } finally {
    await bad.stop();
  }
});
