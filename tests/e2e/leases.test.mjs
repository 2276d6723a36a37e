// Leases end to end: two instances of the real Worker (two workerd processes) share one
// local-upstash in front of one redis-server. A busy subject takes several units in one script
// call and spends them in the isolate; the units are consumed in Redis when granted, so the
// two Workers together never admit more than the budget, and they make far fewer calls.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startOrigin, startRedis, startLocalUpstash, startPair, scriptCalls, parseRateLimit, freshIp, sleep, hammer } from "./harness.mjs";

const LEASE = { max: 16, ttl: "400ms" };
const POLICY = {
  key_prefix: "lease",
  tiers: {
    anonymous: { limits: { quota: { token_bucket: { capacity: 100, refill: "1/day" } } }, lease: LEASE },
    triple: {
      limits: {
        burst: { token_bucket: { capacity: 400, refill: "1/day" } },
        fixed: { fixed_window: "250/day" },
        sliding: { sliding_window: "100/day" },
      },
      lease: LEASE,
    },
  },
  routes: [{ path: "/triple", use_tier: "triple" }],
  // Atomicity, not latency: a slow moment must not turn an answer into a memory fallback.
  store: { timeout: "10s", deny_cache: false, fleet: false },
};
const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const CLIENTS = 64, EACH = 4, RUNS = 5, BUDGET = 100;

let redis, upstash, origin, workers;
before(async () => {
  redis = await startRedis();
  upstash = await startLocalUpstash(redis.port);
  origin = await startOrigin();
  workers = await startPair({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, ADMIN_TOKEN }, upstash);
});
after(async () => {
  for (const w of workers ?? []) await w.stop();
  await origin?.stop();
  await upstash?.stop();
  await redis?.stop();
});

const send = async (w, path, ip) => {
  const r = await fetch(w.url + path, { headers: { "CF-Connecting-IP": ip } });
  await r.arrayBuffer();
  return r;
};

/** Store calls the two Workers made only to hand leased units back (waitUntil), so far. */
async function handBacks() {
  let n = 0;
  for (const w of workers) {
    const health = await (await fetch(`${w.url}/__limiter/admin/health`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    n += health.store.leases.hand_back_calls;
  }
  return n;
}

for (const [path, what] of [["/x", "one limit"], ["/triple", "three limits"]]) {
  test(`leases, two Workers × ${CLIENTS} clients on one subject, ${what}, budget ${BUDGET}: never over it in ${RUNS} runs, at least 90 % used, fewer calls`, async () => {
    for (let run = 1; run <= RUNS; run++) {
      const before = await scriptCalls(upstash);
      const handBacksBefore = await handBacks();
      const ip = freshIp();
      const { seen } = await hammer(workers, path, () => ip);
      await sleep(700); // past the last lease's end: its hand-back is done and counted
      const after = await scriptCalls(upstash);
      const handedBack = (await handBacks()) - handBacksBefore;
      const calls = after.evalsha.calls + after.eval.calls - before.evalsha.calls - before.eval.calls;
      const label = `run ${run}: ${JSON.stringify(seen)}, ${calls} script calls (${handedBack} only handing back)`;
      console.log(`# ${what}, ${label}`);
      assert.deepEqual(seen.other, [], label);
      assert.ok(seen.allowed <= BUDGET, `over the budget: ${label}`);
      assert.ok(seen.allowed >= 0.9 * BUDGET, `under 90 % of the budget used: ${label}`);
      assert.ok((seen.backends.lease ?? 0) > 0, `no answer from a lease: ${label}`);
      // Every answer not from a lease is one script call (no deny cache here); a lease's
      // answers cost none; an isolate whose lease ended with no next check hands it back.
      assert.equal(calls, CLIENTS * EACH - seen.backends.lease + handedBack, `calls: ${label}`);
    }
  });
}

test("a lease's unused units are handed back, and the other Worker sees them", async () => {
  const ip = freshIp();
  // Busy on Worker 0 alone: it leases.
  const said = [];
  for (let i = 0; i < 12; i++) said.push(await send(workers[0], "/x", ip));
  assert.ok(said.some((r) => r.headers.get("x-limiter-backend") === "lease"), "Worker 0 leased");
  for (const r of said) {
    assert.ok(parseRateLimit(r.headers.get("ratelimit")).quota.a <= BUDGET - 1, "never more than the budget left");
  }
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const inRedis = async () =>
    (await (await fetch(`${workers[1].url}/__limiter/admin/subject?ip=${ip}`, { headers: auth })).json()).limits[0].remaining;
  const whileHeld = await inRedis();
  assert.ok(whileHeld < BUDGET - 12, `Redis holds back the lease's spare units too: ${whileHeld}`);
  // The lease period passes; Worker 0's next store call (for anyone) hands the rest back.
  await sleep(600);
  await send(workers[0], "/x", freshIp());
  const afterReturn = await inRedis();
  assert.equal(afterReturn, BUDGET - 12, "only the 12 units used are gone");
  const r = await send(workers[1], "/x", ip);
  assert.equal(r.headers.get("x-limiter-backend"), "upstash");
  assert.equal(parseRateLimit(r.headers.get("ratelimit")).quota.a, BUDGET - 13, "the other Worker sees the units handed back");
});

test("an isolate that gets no next request hands its lease back by itself (waitUntil)", async () => {
  const ip = freshIp();
  for (let i = 0; i < 12; i++) await send(workers[0], "/x", ip);
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const inRedis = async () =>
    (await (await fetch(`${workers[1].url}/__limiter/admin/subject?ip=${ip}`, { headers: auth })).json()).limits[0].remaining;
  assert.ok((await inRedis()) < BUDGET - 12, "the lease holds spare units in Redis");
  // Nothing more reaches Worker 0: the hand-back it scheduled runs after the lease's end.
  await sleep(1000);
  assert.equal(await inRedis(), BUDGET - 12, "only the 12 units used are gone");
});
