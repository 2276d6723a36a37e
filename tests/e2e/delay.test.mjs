// A short wait instead of a 429 (a route's `max_delay`), end to end: the real Worker in
// workerd, in memory and on local-upstash with redis-server. A request whose units are due
// within the route's max_delay is held until then and passed; its units are reserved before
// it waits (taken at the time they are due), so holding never admits more than the limit;
// holds per subject are capped; a later unit than max_delay is refused at once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startWorker, startPair, freshIp, sharedBackends } from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const POLICY = {
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 2, refill: "1/s" } } } } },
  routes: [
    { path: "/wait/", max_delay: "1500ms" },
    { path: "/many/", use_tier: "fast", max_delay: "1s" },
  ],
};
POLICY.tiers.fast = { limits: { burst: { token_bucket: { capacity: 5, refill: "10/s" } } } };

const backends = sharedBackends({ before, after });

const vars = () => ({ POLICY: JSON.stringify({ key_prefix: "dly-" + randomBytes(4).toString("hex"), ...POLICY }), ORIGIN_URL: backends.origin.url, ADMIN_TOKEN });

async function timed(url, ip) {
  const t0 = performance.now();
  const r = await fetch(url, { headers: { "CF-Connecting-IP": ip } });
  await r.arrayBuffer();
  return { status: r.status, ms: performance.now() - t0, retry: r.headers.get("retry-after") };
}

test("a unit due within max_delay: the request waits for it and passes; past the delay, or on a route without one, 429 at once", async () => {
  const w = await startWorker(vars());
  try {
    const ip = freshIp();
    assert.deepEqual([(await timed(`${w.url}/wait/a`, ip)).status, (await timed(`${w.url}/wait/a`, ip)).status], [200, 200]);
    const [held, refused] = await Promise.all([
      timed(`${w.url}/wait/a`, ip),
      // The held request took the unit of t = 1 s: for this one the next is 2 s away, past 1.5 s.
      new Promise((ok) => setTimeout(ok, 150)).then(() => timed(`${w.url}/wait/a`, ip)),
    ]);
    assert.equal(held.status, 200, "held, then passed");
    assert.ok(held.ms >= 850 && held.ms < 1_600, `held ${held.ms.toFixed(0)} ms for a unit due in 1 s`);
    assert.equal(refused.status, 429);
    assert.ok(refused.ms < 500, `refused at once (${refused.ms.toFixed(0)} ms)`);
    const other = freshIp();
    await timed(`${w.url}/plain`, other);
    await timed(`${w.url}/plain`, other);
    const plain = await timed(`${w.url}/plain`, other);
    assert.equal(plain.status, 429, "a route without max_delay refuses as before");
    assert.ok(plain.ms < 500);
    const status = await (await fetch(`${w.url}/__limiter/status.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    assert.equal(status.requests.delayed, 1);
  } finally {
    await w.stop();
  }
});

test("holds per subject are capped: of ten at once past the burst, at most four wait, the rest are refused at once", async () => {
  const w = await startWorker(vars());
  try {
    const ip = freshIp();
    for (let i = 0; i < 5; i++) assert.equal((await timed(`${w.url}/many/x`, ip)).status, 200);
    const all = await Promise.all(Array.from({ length: 10 }, () => timed(`${w.url}/many/x`, ip)));
    const passed = all.filter((r) => r.status === 200);
    const refused = all.filter((r) => r.status === 429);
    console.log(`# ${JSON.stringify(all.map((r) => [r.status, Math.round(r.ms)]))}`);
    assert.ok(passed.length >= 4 && passed.length <= 6, `${passed.length} passed`);
    assert.equal(passed.length + refused.length, 10);
    assert.ok(refused.every((r) => r.retry !== null), "refusals as usual, with Retry-After");
  } finally {
    await w.stop();
  }
});

test("on Upstash, two Workers: a reservation made through one is seen by the other, and all together never pass more than the bucket gives", async () => {
  const workers = await startPair(vars(), backends.upstash);
  try {
    const ip = freshIp();
    const t0 = performance.now();
    // 64 requests at once across both, for a bucket of 5 refilling 10/s, held up to 1 s.
    const all = await Promise.all(Array.from({ length: 64 }, (_, i) => timed(`${workers[i % 2].url}/many/y`, ip)));
    const elapsed = (performance.now() - t0) / 1000;
    const passed = all.filter((r) => r.status === 200).length;
    console.log(`# ${passed} of 64 passed in ${elapsed.toFixed(2)} s`);
    assert.deepEqual(all.filter((r) => r.status !== 200 && r.status !== 429), []);
    assert.ok(passed <= 5 + Math.ceil(10 * elapsed), `${passed} passed in ${elapsed.toFixed(2)} s: more than the bucket gives`);
    assert.ok(passed > 5, "some were held and passed");

    const fresh = freshIp();
    await timed(`${workers[0].url}/wait/z`, fresh);
    await timed(`${workers[0].url}/wait/z`, fresh);
    const [held, other] = await Promise.all([
      timed(`${workers[0].url}/wait/z`, fresh),
      new Promise((ok) => setTimeout(ok, 100)).then(() => timed(`${workers[1].url}/wait/z`, fresh)),
    ]);
    assert.equal(held.status, 200);
    assert.equal(other.status, 429, "the other Worker sees the unit of t = 1 s reserved: the next is past 1.5 s");
  } finally {
    for (const w of workers) await w.stop();
  }
});
