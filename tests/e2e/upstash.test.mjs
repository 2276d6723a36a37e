// The Upstash store end to end: two instances of the real Worker (two workerd processes,
// through Miniflare) share one local-upstash in front of one real redis-server, as two
// Cloudflare locations share one Upstash database.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import {
  startWorker, startOrigin, startRedis, startLocalUpstash, scriptCalls, parseRateLimit, freshIp, hammer,
} from "./harness.mjs";
import { STORE_CLAIMS, date, mdTable, recordSection, testCommand, writeReadmeFigures } from "../../scripts/record.mjs";

// Buckets that do not refill during a test: capacity 100, one unit back per day.
const POLICY = {
  key_prefix: "e2e",
  tiers: {
    anonymous: { limits: { quota: { token_bucket: { capacity: 100, refill: "1/day" } } } },
    // Three limits; the binding one (100) is neither the first nor the same kind.
    triple: {
      limits: {
        burst: { token_bucket: { capacity: 400, refill: "1/day" } },
        fixed: { fixed_window: "250/day" },
        sliding: { sliding_window: "100/day" },
      },
    },
  },
  routes: [{ path: "/triple", use_tier: "triple" }],
  // The test is about atomicity, not latency: a slow moment on a 2-core machine must not
  // turn an Upstash answer into a memory fallback.
  // Without the deny cache every request reaches Redis, the hardest case for atomicity (the
  // deny cache is tested in faults.test.mjs).
  store: { timeout: "10s", deny_cache: false, fleet: false },
};

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const CLIENTS = 64, EACH = 4, RUNS = 5, CAPACITY = 100;
/** What the tests observed, for docs/results/store-claims.md; set once a test's assertions held. */
const observed = {};
let redis, upstash, origin, workers;
before(async () => {
  redis = await startRedis();
  upstash = await startLocalUpstash(redis.port);
  origin = await startOrigin();
  const vars = {
    POLICY: JSON.stringify(POLICY),
    ORIGIN_URL: origin.url,
    UPSTASH_REDIS_REST_URL: upstash.url,
    UPSTASH_REDIS_REST_TOKEN: upstash.token,
    ADMIN_TOKEN,
  };
  workers = [await startWorker(vars), await startWorker(vars)];
});
after(async () => {
  for (const w of workers ?? []) await w.stop();
  await origin?.stop();
  await upstash?.stop();
  await redis?.stop();
});

/** `clients` concurrent clients on one address, alternating Workers. */
const hammerOne = async (path, ip, clients = CLIENTS, each = EACH) =>
  (await hammer(workers, path, () => ip, { clients, each })).seen;

test("decisions come from Upstash; keys are namespaced digests with a TTL no longer than the refill", async () => {
  const ip = freshIp();
  const r = await fetch(workers[0].url + "/x", { headers: { "CF-Connecting-IP": ip } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-limiter-backend"), "upstash");
  assert.equal(parseRateLimit(r.headers.get("ratelimit")).quota.a, 99);
  // The other Worker sees the same bucket.
  const r2 = await fetch(workers[1].url + "/x", { headers: { "CF-Connecting-IP": ip } });
  assert.equal(parseRateLimit(r2.headers.get("ratelimit")).quota.a, 98);
  const keys = await upstash.command("KEYS", "*");
  assert.equal(keys.length, 1, JSON.stringify(keys));
  // The limit's kind and parameters are part of its key: a changed limit starts afresh.
  assert.match(keys[0], /^e2e:anonymous:quota:tb100-1-86400000:[0-9a-f]{32}$/);
  assert.ok(!keys.some((k) => k.includes(ip)), "no raw IP in Redis");
  const ttl = await upstash.command("PTTL", keys[0]);
  // Two units used, one back per day: whole again in at most two days.
  assert.ok(ttl > 0 && ttl <= 2 * 86_400_000, `TTL ${ttl}`);
  observed.keys = { key: keys[0].replace(/[0-9a-f]{32}$/, "<32 hex>"), count: keys.length, ttl, bound: 2 * 86_400_000 };
  await upstash.command("FLUSHALL");
});

test("two Workers, 64 concurrent clients, one key, capacity 100: exactly 100 allowed, five runs", async () => {
  const runs = [];
  for (let run = 1; run <= RUNS; run++) {
    const seen = await hammerOne("/x", freshIp());
    assert.deepEqual(Object.keys(seen.backends), ["upstash"], `run ${run}`);
    assert.deepEqual(seen.other, [], `run ${run}`);
    assert.equal(seen.allowed, 100, `run ${run}: ${seen.allowed} allowed`);
    assert.equal(seen.denied, 64 * 4 - 100, `run ${run}`);
    runs.push(seen);
  }
  observed.concurrency = runs;
});

test("the same with three limits on the tier: exactly 100 allowed, five runs, all-or-nothing", async () => {
  const runs = [];
  for (let run = 1; run <= RUNS; run++) {
    const ip = freshIp();
    const seen = await hammerOne("/triple", ip);
    assert.deepEqual(Object.keys(seen.backends), ["upstash"], `run ${run}`);
    assert.deepEqual(seen.other, [], `run ${run}`);
    assert.equal(seen.allowed, 100, `run ${run}: ${seen.allowed} allowed`);
    // Denied requests consumed nothing from the limits that had room.
    const r = await fetch(workers[run % 2].url + "/triple", { headers: { "CF-Connecting-IP": ip } });
    const rl = parseRateLimit(r.headers.get("ratelimit"));
    assert.equal(r.status, 429);
    assert.deepEqual([rl.burst.a, rl.fixed.a, rl.sliding.a], [300, 150, 0], `run ${run}`);
    runs.push({ allowed: seen.allowed, denied: seen.denied, left: [rl.burst.a, rl.fixed.a, rl.sliding.a] });
  }
  observed.triple = runs;
});

test("INFO commandstats: one script call per request in steady state", async () => {
  const ip = freshIp();
  await (await fetch(workers[0].url + "/x", { headers: { "CF-Connecting-IP": ip } })).arrayBuffer();
  const before = await scriptCalls(upstash);
  const seen = await hammerOne("/x", freshIp(), 16, 10);
  const after = await scriptCalls(upstash);
  const requests = 16 * 10;
  assert.equal(seen.allowed + seen.denied, requests);
  console.log(`# commandstats over ${requests} requests: EVALSHA +${after.evalsha.calls - before.evalsha.calls}, EVAL +${after.eval.calls - before.eval.calls}`);
  assert.equal(after.evalsha.calls - before.evalsha.calls, requests, "one EVALSHA per request");
  assert.equal(after.evalsha.failed - before.evalsha.failed, 0, "no NOSCRIPT");
  assert.equal(after.eval.calls - before.eval.calls, 0, "no EVAL");
  observed.scripts = {
    requests,
    evalsha: after.evalsha.calls - before.evalsha.calls,
    eval: after.eval.calls - before.eval.calls,
    failed: after.evalsha.failed - before.evalsha.failed + after.eval.failed - before.eval.failed,
  };
});

test("NOSCRIPT: after SCRIPT FLUSH the next request sends EVAL and carries on", async () => {
  const ip = freshIp();
  const send = async () => {
    const r = await fetch(workers[0].url + "/x", { headers: { "CF-Connecting-IP": ip } });
    await r.arrayBuffer();
    return r;
  };
  await send();
  await upstash.command("SCRIPT", "FLUSH");
  const before = await scriptCalls(upstash);
  const r = await send();
  const mid = await scriptCalls(upstash);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-limiter-backend"), "upstash");
  assert.equal(parseRateLimit(r.headers.get("ratelimit")).quota.a, 98, "the bucket survived the flush");
  assert.equal(mid.evalsha.calls - before.evalsha.calls, 1, "one EVALSHA, answered NOSCRIPT");
  assert.equal(mid.eval.calls - before.eval.calls, 1, "then one EVAL");
  await send();
  const last = await scriptCalls(upstash);
  assert.equal(last.eval.calls - mid.eval.calls, 0, "EVAL loaded it: back to EVALSHA alone");
  assert.equal(last.evalsha.calls - mid.evalsha.calls, 1);
  observed.noscript = {
    evalsha: mid.evalsha.calls - before.evalsha.calls,
    noscript: mid.evalsha.failed - before.evalsha.failed,
    eval: mid.eval.calls - before.eval.calls,
    remaining: parseRateLimit(r.headers.get("ratelimit")).quota.a,
    thenEvalsha: last.evalsha.calls - mid.evalsha.calls,
    thenEval: last.eval.calls - mid.eval.calls,
  };
});

test("admin API on Upstash: inspect reads Redis (from either Worker), reset deletes the keys", async () => {
  const ip = freshIp();
  const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  let last;
  for (let i = 0; i < 3; i++) {
    last = await fetch(workers[0].url + "/x", { headers: { "CF-Connecting-IP": ip } });
    await last.arrayBuffer();
  }
  const said = parseRateLimit(last.headers.get("ratelimit")).quota.a;
  // Asked of the other Worker: the state is in Redis, not in the first Worker's memory.
  const state = await (await fetch(`${workers[1].url}/__limiter/admin/subject?ip=${ip}`, { headers: auth })).json();
  assert.equal(state.backend, "upstash");
  assert.equal(state.limits[0].remaining, said);
  assert.equal(said, 97);
  const pattern = `e2e:anonymous:quota:*:${state.subject_hash}`;
  assert.equal((await upstash.command("KEYS", pattern)).length, 1, "the subject's key is in Redis");
  const reset = await fetch(`${workers[1].url}/__limiter/admin/reset?ip=${ip}`, { method: "POST", headers: auth });
  assert.equal(reset.status, 200);
  assert.deepEqual(await upstash.command("KEYS", pattern), [], "the key is gone from Redis");
  const after = await fetch(workers[0].url + "/x", { headers: { "CF-Connecting-IP": ip } });
  assert.equal(parseRateLimit(after.headers.get("ratelimit")).quota.a, 99, "full again");
});

/** "a / b in each of the 5 runs", or each run's figures when they differ. */
function perRun(runs, show) {
  const each = runs.map(show);
  return new Set(each).size === 1 ? `${each[0]}, in each of the ${runs.length} runs` : `${each.map((x, i) => `run ${i + 1}: ${x}`).join("; ")}`;
}

after(() => {
  const o = observed;
  const missing = "not measured: the test failed";
  const rows = [
    ["no over-admission under concurrency",
      `${CLIENTS} concurrent clients alternate between the two Workers, ${CLIENTS * EACH} requests on one key, a bucket of ${CAPACITY} that does not refill in the test; ${RUNS} runs`,
      o.concurrency ? perRun(o.concurrency, (x) => `${x.allowed} allowed, ${x.denied} denied`) : missing],
    ["the same with three limits",
      `token bucket ${POLICY.tiers.triple.limits.burst.token_bucket.capacity}, fixed window ${POLICY.tiers.triple.limits.fixed.fixed_window}, sliding window ${POLICY.tiers.triple.limits.sliding.sliding_window} on one tier; ${RUNS} runs`,
      o.triple ? perRun(o.triple, (x) => `${x.allowed} allowed; afterwards the three limits show ${x.left.join(" / ")} left`) : missing],
    ["one script call per request",
      "Redis's `INFO commandstats` before and after 160 requests (16 clients × 10)",
      o.scripts ? `${o.scripts.requests} requests: \`EVALSHA\` +${o.scripts.evalsha}, \`EVAL\` +${o.scripts.eval}, failed calls +${o.scripts.failed}` : missing],
    ["NOSCRIPT recovery",
      "`SCRIPT FLUSH`, then two requests",
      o.noscript ? `first request: \`EVALSHA\` +${o.noscript.evalsha} (${o.noscript.noscript} failed: NOSCRIPT), \`EVAL\` +${o.noscript.eval}, ` +
        `${o.noscript.remaining} left in the bucket (as before the flush); second: \`EVALSHA\` +${o.noscript.thenEvalsha}, \`EVAL\` +${o.noscript.thenEval}` : missing],
    ["keys",
      "`KEYS *` and `PTTL` after two requests from one address",
      o.keys ? `${o.keys.count} key, \`${o.keys.key}\`, not holding the address; \`PTTL\` ${o.keys.ttl} ms (the bound, the time to refill fully: ${o.keys.bound} ms)` : missing],
  ];
  const complete = Boolean(o.concurrency && o.triple && o.scripts && o.noscript && o.keys);
  const command = testCommand(fileURLToPath(import.meta.url));
  const body = mdTable(["claim", "how it is shown", "observed"], rows);
  console.log(body.split("\n").map((l) => `# ${l}`).join("\n"));
  const docs = recordSection(STORE_CLAIMS.page, "claims:upstash", { command, body, skeleton: STORE_CLAIMS.skeleton, complete });
  if (docs) {
    const c = o.concurrency;
    const same = c.every((x) => x.allowed === c[0].allowed);
    writeReadmeFigures("store-claims", [
      `- Under concurrency, two Workers × ${CLIENTS} clients on one key with a budget of ${CAPACITY}: ` +
        `${same ? `${c[0].allowed} admitted in each of ${c.length} runs` : c.map((x) => x.allowed).join(", ") + " admitted"}; ` +
        `one script call per request (${o.scripts.evalsha} for ${o.scripts.requests}) (\`${command}\`, ${date().slice(0, 10)}) — ` +
        "[docs/results/store-claims.md](docs/results/store-claims.md)",
    ]);
  }
});
