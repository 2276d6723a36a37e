// Store faults, end to end: the real Worker in workerd, local-upstash in front of a real
// redis-server, all on 127.0.0.1. For each fault, two steady streams of requests run before,
// during and after it: a "steady" caller well within its limits (to measure latency and the
// return to Upstash) and a "hammer" caller far past its limit (to show limiting goes on).
// Every scenario is bounded in time and stops the processes it started.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import {
  startOrigin, startRedis, startLocalUpstash, startStack, scriptCalls, freshIp, sleep, sha256Hex, median,
} from "./harness.mjs";
import { RECORD_DOCS, date, testCommand, writePage, writeReadmeFigures } from "../../scripts/record.mjs";

const STEADY_KEY = "e2e-steady-" + randomBytes(8).toString("hex");
const TIMEOUT_MS = 200;
const COOLDOWN_MS = 1000;

const POLICY = {
  key_prefix: "faults",
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 5, refill: "5/s" } } } },
    steady: { limits: { burst: { token_bucket: { capacity: 1000, refill: "1000/s" } } } },
    slow: { limits: { burst: { token_bucket: { capacity: 5, refill: "1/min" } } } },
  },
  identity: { api_key: { header: "X-API-Key", keys: { [sha256Hex(STEADY_KEY)]: "steady" } } },
  routes: [{ path: "/slow", use_tier: "slow" }],
  store: { timeout: `${TIMEOUT_MS}ms`, breaker_failures: 3, breaker_cooldown: `${COOLDOWN_MS}ms`, fleet: false },
};

/** The same faults with leases and batching on: a held lease is used, then memory decides. */
const LEASE_TTL_MS = 300;
const LEASED = {
  ...POLICY,
  tiers: Object.fromEntries(
    Object.entries(POLICY.tiers).map(([name, t]) => [name, { ...t, lease: { max: 16, ttl: `${LEASE_TTL_MS}ms` } }]),
  ),
  store: { ...POLICY.store, batch: true },
};

const origin = await startOrigin();
after(() => origin.stop());

/** Redis, local-upstash and one Worker on them, for one scenario. */
const rig = (options, policy = POLICY) => startStack({ POLICY: JSON.stringify(policy), ORIGIN_URL: origin.url }, options);

/** Sends requests one after another until `stop.now`, recording each. */
async function stream(url, headers, stop, log) {
  while (!stop.now) {
    const start = performance.now();
    let status, backend;
    try {
      const r = await fetch(url, { headers });
      await r.arrayBuffer();
      status = r.status;
      backend = r.headers.get("x-limiter-backend");
    } catch (e) {
      status = 0; // the Worker itself did not answer: counted as a failure below
      backend = String(e);
    }
    log.push({ at: Date.now(), ms: performance.now() - start, status, backend });
    await sleep(10);
  }
}

const rows = [];
/** The fault scenarios below, each a row of the table. */
const SCENARIOS = 6;
let denyCache = null;

/**
 * Runs one fault: 1.5 s healthy, `inject()`, 2.5 s of fault, `heal()`, then until the steady
 * caller is answered by Upstash again (at most 6 s), then 0.5 s more.
 */
async function scenario(name, expectedClass, inject, heal, { leased = false } = {}) {
  const r = await rig(undefined, leased ? LEASED : POLICY);
  // With leases, answers may come from one until it is used or its ttl passes.
  const fromUpstash = (b) => b === "upstash" || (leased && b === "lease");
  try {
    const stop = { now: false };
    const steady = [], hammer = [];
    const streams = Promise.all([
      stream(`${r.worker.url}/s`, { "X-API-Key": STEADY_KEY, "CF-Connecting-IP": freshIp() }, stop, steady),
      stream(`${r.worker.url}/h`, { "CF-Connecting-IP": freshIp() }, stop, hammer),
    ]);
    await sleep(1500);
    const faultAt = Date.now();
    await inject(r);
    await sleep(2500);
    const healAt = Date.now();
    await heal(r);
    let backAt = null;
    for (const deadline = Date.now() + 6000; Date.now() < deadline && backAt === null; await sleep(20)) {
      backAt = steady.find((x) => x.at > healAt && x.backend === "upstash")?.at ?? null;
    }
    await sleep(500);
    stop.now = true;
    await streams;

    const all = [...steady, ...hammer];
    const during = (log) => log.filter((x) => x.at > faultAt && x.at <= healAt);
    const baseline = median(steady.filter((x) => x.at <= faultAt).map((x) => x.ms)) ?? 0;
    const worst = Math.max(...during(steady).map((x) => x.ms));
    const hammerDuring = during(hammer);
    const row = {
      fault: name,
      sent: all.length,
      fivexx: all.filter((x) => x.status >= 500 || x.status === 0).length,
      limitedDuring: hammerDuring.filter((x) => x.status === 429).length,
      allowedDuring: hammerDuring.filter((x) => x.status === 200).length,
      hammerDuring: hammerDuring.length,
      addedMs: Math.round(worst - baseline),
      // Requests that waited on Upstash during the fault: with the breaker, only the first
      // failures and one probe per cool-down do.
      waited: during(all).filter((x) => x.ms >= TIMEOUT_MS / 2).length,
      baselineMs: baseline.toFixed(1),
      backMs: backAt === null ? null : backAt - healAt,
      backends: [...new Set(during(all).map((x) => x.backend))].sort().join(" "),
    };
    console.log(`# ${JSON.stringify(row)}`);
    const logs = r.worker.logs.join("");

    assert.equal(row.fivexx, 0, `${name}: no 5xx and no failed request`);
    assert.ok(steady.filter((x) => x.at <= faultAt).every((x) => fromUpstash(x.backend)), `${name}: Upstash before the fault`);
    if (leased) assert.ok(steady.some((x) => x.backend === "lease"), `${name}: the steady caller leased`);
    assert.ok(row.limitedDuring > 0, `${name}: the hammering caller is still limited during the fault`);
    // Memory buckets: 5 to start plus 5/s over 2.5 s. Upstash's own bucket may add its rest.
    assert.ok(row.allowedDuring <= 5 + 5 * 3 + 5, `${name}: ${row.allowedDuring} allowed during the fault`);
    // Requests already on their way when the fault began may still have been answered by Upstash.
    const settled = during(steady).filter((x) => x.at > faultAt + 300 + (leased ? LEASE_TTL_MS : 0));
    assert.ok(settled.every((x) => x.backend === "memory-fallback"), `${name}: memory decides during the fault`);
    // The slow fault holds replies for 1 s: a request that waited for one would show it.
    assert.ok(worst < 900, `${name}: the timeout cut the wait (worst ${worst} ms)`);
    if (name.startsWith("replies delayed")) {
      // 3 failures to trip, then at most one probe per second of fault, on two streams.
      assert.ok(row.waited >= 3 && row.waited <= 10, `${name}: ${row.waited} requests waited on Upstash`);
    }
    assert.notEqual(row.backMs, null, `${name}: back on Upstash after healing`);
    const classLines = logs.split("\n").filter((l) => l.includes(`(${expectedClass})`));
    assert.equal(classLines.length, 1, `${name}: the failure logged once, with its class:\n${logs}`);
    assert.equal(logs.match(/circuit open after/g)?.length, 1, `${name}: one trip logged`);
    assert.match(logs, /Upstash answers again after \d+ ms/, `${name}: the recovery logged`);
    if (!leased) rows.push(row); // only a fault whose assertions held makes a row of the table
    return { logs };
  } finally {
    await r.stop();
  }
}

for (const leased of [false, true]) {
  const also = leased ? ", with leases and batching on" : "";
  test(`local-upstash killed mid-run, then restarted${also}`, () =>
    scenario(
      "local-upstash process killed, restarted",
      "network",
      async (r) => { r.upstash.proc.kill("SIGKILL"); await r.upstash.stop(); },
      async (r) => { r.upstash = await startLocalUpstash(r.redis.port, { port: r.upstash.port, token: r.upstash.token }); },
      { leased },
    ));

  test(`replies delayed past the timeout${also}`, () =>
    scenario(`replies delayed 1 s (timeout ${TIMEOUT_MS} ms)`, "timeout", (r) => r.upstash.setFault("delay:1000"), (r) => r.upstash.setFault("none"), { leased }));

  test(`500 replies${also}`, () =>
    scenario("HTTP 500 replies", "server-error", (r) => r.upstash.setFault("error500"), (r) => r.upstash.setFault("none"), { leased }));

  test(`garbage instead of JSON${also}`, () =>
    scenario("garbage instead of JSON", "malformed-reply", (r) => r.upstash.setFault("garbage"), (r) => r.upstash.setFault("none"), { leased }));

  test(`401 replies, logged as a configuration error${also}`, async () => {
    const { logs } = await scenario("HTTP 401 (token refused)", "unauthorized", (r) => r.upstash.setFault("unauthorized"), (r) => r.upstash.setFault("none"), { leased });
    assert.match(logs, /configuration error \(unauthorized\).*UPSTASH_REDIS_REST_TOKEN/);
  });

  test(`redis-server killed behind a live local-upstash, then restarted${also}`, () =>
    scenario(
      "redis-server killed, restarted (empty)",
      "server-error",
      async (r) => { r.redis.proc.kill("SIGKILL"); await r.redis.stop(); },
      async (r) => { r.redis = await startRedis(r.redis.port); },
      { leased },
    ));
}

test("a wrong token: every request still served from memory, one configuration error logged", async () => {
  const stack = await rig({ token: "wrong-" + randomBytes(8).toString("hex") });
  const { upstash, worker } = stack;
  try {
    const ip = freshIp();
    const statuses = [];
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${worker.url}/x`, { headers: { "CF-Connecting-IP": ip } });
      await res.arrayBuffer();
      statuses.push(`${res.status} ${res.headers.get("x-limiter-backend")}`);
    }
    assert.deepEqual(statuses, [...Array(5).fill("200 memory-fallback"), ...Array(7).fill("429 memory-fallback")]);
    const logs = worker.logs.join("");
    assert.equal(logs.match(/configuration error \(unauthorized\)/g)?.length, 1, logs);
    assert.ok(!logs.includes(upstash.token), "the token is never logged");
  } finally {
    await stack.stop();
  }
});

test("deny cache: a subject hammering past its limit costs no store calls", async () => {
  const r = await rig();
  try {
    // One request from someone else first, so the script is loaded (its EVAL is not counted).
    await (await fetch(`${r.worker.url}/slow`, { headers: { "CF-Connecting-IP": freshIp() } })).arrayBuffer();
    const ip = freshIp();
    const before = await scriptCalls(r.upstash);
    const backends = {};
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`${r.worker.url}/slow`, { headers: { "CF-Connecting-IP": ip } });
      await res.arrayBuffer();
      const key = `${res.status} ${res.headers.get("x-limiter-backend")}`;
      backends[key] = (backends[key] ?? 0) + 1;
    }
    const afterCalls = await scriptCalls(r.upstash);
    const calls = afterCalls.evalsha.calls - before.evalsha.calls + afterCalls.eval.calls - before.eval.calls;
    console.log(`# deny cache: 100 requests, capacity 5, refill 1/min: ${JSON.stringify(backends)}; script calls ${calls}`);
    assert.deepEqual(backends, { "200 upstash": 5, "429 upstash": 1, "429 deny-cache": 94 });
    assert.equal(calls, 6, "5 allowed + the first denial; the other 94 denials cost nothing");
    denyCache = { requests: 100, backends, calls };
  } finally {
    await r.stop();
  }
});

after(() => {
  // The table, with how it was measured: always in build/fault-table.md; in
  // docs/results/faults.md (and README.md's figure line) only when RECORD_DOCS=1.
  const lines = [
    `Policy: \`timeout\` ${TIMEOUT_MS} ms, \`breaker_failures\` ${POLICY.store.breaker_failures}, \`breaker_cooldown\` ${COOLDOWN_MS} ms; ` +
      "a steady caller (an API key, a bucket of 1000 + 1000/s) and a hammering caller (5 + 5/s), each sending one request " +
      "after another, 10 ms apart, for 1.5 s before the fault, 2.5 s during it, and after healing until Upstash answers again plus 0.5 s. " +
      "What the columns mean, and the assertions: [../store.md](../store.md#when-the-store-fails).",
    "",
    "| fault | requests sent | 5xx seen | hammering caller during the fault: denied / allowed | worst added latency during the fault | requests that waited on Upstash during the fault | back on Upstash after healing |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((x) =>
      `| ${x.fault} | ${x.sent} | ${x.fivexx} | ${x.limitedDuring} / ${x.allowedDuring} | ${x.addedMs} ms (baseline ${x.baselineMs} ms) | ${x.waited} | ${x.backMs === null ? "never" : x.backMs + " ms"} |`),
  ];
  if (denyCache) {
    const d = denyCache;
    const n = (key) => d.backends[key] ?? 0;
    lines.push("", `**Deny cache, counted by Redis:** ${d.requests} requests from one caller past a limit of 5 (refill 1/min): ` +
      `${n("200 upstash")} allowed and ${n("429 upstash")} denied by Upstash, ${n("429 deny-cache")} denied by the deny cache; ` +
      `\`INFO commandstats\` shows ${d.calls} script calls for the ${d.requests} requests.`);
  }
  const command = testCommand(fileURLToPath(import.meta.url));
  const page = { title: "Store faults: measured", command, body: lines.join("\n") };
  console.log(lines.map((l) => `# ${l}`).join("\n"));
  writePage("build/fault-table.md", page);
  const complete = rows.length === SCENARIOS && denyCache !== null;
  if (!RECORD_DOCS) return;
  if (!complete) {
    console.log(`# RECORD_DOCS: ${rows.length} of ${SCENARIOS} faults and ${denyCache ? "the" : "no"} deny cache measured: docs/ left as it was`);
    return;
  }
  writePage("docs/results/faults.md", page);
  const sent = rows.reduce((n, x) => n + x.sent, 0);
  const fivexx = rows.reduce((n, x) => n + x.fivexx, 0);
  writeReadmeFigures("faults", [
    `- Store failures (${rows.length} faults: killed, slow, 500, garbage, 401, Redis lost): ${fivexx} client 5xx in ${sent} requests; ` +
      `one caller past its limit: ${denyCache.backends["429 deny-cache"] ?? 0} of ${denyCache.requests} requests denied from the deny cache, ` +
      `${denyCache.calls} script calls in all (\`${command}\`, ${date().slice(0, 10)}) — ` +
      "[docs/results/faults.md](docs/results/faults.md)",
  ]);
});
