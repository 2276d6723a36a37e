// Issue 13, hole 4: a limit's stored state is only valid for the parameters that wrote it.
// One limit named `hourly` is changed from a sliding window of 300/h to 300/day and back,
// against one real redis-server (through local-upstash), with two real Workers (two workerd
// processes, through Miniflare): one running each policy, as after a deploy, during a
// rollback, or while two versions of the Worker are live at once.
//
// Before the store keys carried the limits' parameters, both policies read and wrote the same
// key: the hour's 360 s slot numbers read under the day's 8,640 s slots lie far "in the
// future", so the day Worker answered Retry-After in the tens of billions of seconds and wrote
// the key with a TTL of centuries. Now each set of parameters has its own key, and each answer
// stays within the limit's span (the window plus one tenth, as RateLimit-Policy's `w` says:
// a sliding window releases a unit up to one slot late).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startWorker, startOrigin, startRedis, startLocalUpstash, parseRateLimit, freshIp } from "./harness.mjs";
import { STORE_CLAIMS, mdTable, recordSection, testCommand } from "../../scripts/record.mjs";

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** A sliding window's span: the window and one slot (a tenth of it), as the engine counts. */
const span = (window) => window + Math.ceil(window / 10);
/** Longest Retry-After for a wait of `ms`: rounded up, with the edge's jitter of <= 250 ms. */
const retryBound = (ms) => Math.ceil((ms + 250) / 1000);

const policy = (per) => JSON.stringify({
  key_prefix: "e2e",
  tiers: { anonymous: { limits: { hourly: { sliding_window: `300/${per}` } } } },
  routes: [{ path: "/bulk", cost: 100 }],
  // About state, not latency: a slow moment on a small machine must not turn an Upstash
  // answer into a memory fallback.
  store: { timeout: "10s" },
});

let redis, upstash, origin, hourly, daily;
/**
 * What the answers and keys showed, per limit ("300/h", "300/day"), for
 * docs/results/store-claims.md: requests, denials, the longest Retry-After and reset, the
 * longest PTTL; and how many tests passed.
 */
const observed = {};
const seenOf = (w) => (observed[w.name] ??= { window: w.window, requests: 0, denied: 0, retry: 0, reset: 0, pttl: 0, keys: new Set() });
let passed = 0;
const started = [];
async function worker(per) {
  const w = await startWorker({
    POLICY: policy(per),
    ORIGIN_URL: origin.url,
    UPSTASH_REDIS_REST_URL: upstash.url,
    UPSTASH_REDIS_REST_TOKEN: upstash.token,
  });
  started.push(w);
  return { ...w, window: per === "h" ? HOUR : DAY, name: `300/${per}` };
}
/** The day Worker comes up only when a test first needs it: a new deployment, late. */
async function dayWorker() {
  daily ??= await worker("day");
  return daily;
}

before(async () => {
  redis = await startRedis();
  upstash = await startLocalUpstash(redis.port);
  origin = await startOrigin();
  hourly = await worker("h");
});
after(async () => {
  for (const w of started) await w.stop();
  await origin?.stop();
  await upstash?.stop();
  await redis?.stop();
});

/**
 * One request from `ip` through `w`; asserts that whatever it answers is sane for w's limit:
 * Retry-After within the limit's span, the reset (`t`) within the span, the policy's `w` the
 * span itself. Returns the status and what is left.
 */
async function send(w, ip, path = "/x") {
  const r = await fetch(w.url + path, { headers: { "CF-Connecting-IP": ip } });
  await r.arrayBuffer();
  const what = `${w.name} ${path} from ${ip}: ${r.status}`;
  assert.ok(r.status === 200 || r.status === 429, what);
  assert.ok(["upstash", "deny-cache"].includes(r.headers.get("x-limiter-backend")), `${what} via ${r.headers.get("x-limiter-backend")}`);
  const s = span(w.window);
  const declared = /"hourly";q=300;w=(\d+)/.exec(r.headers.get("ratelimit-policy") ?? "");
  assert.equal(Number(declared?.[1]), Math.ceil(s / 1000), `${what}: RateLimit-Policy ${r.headers.get("ratelimit-policy")}`);
  const seen = seenOf(w);
  seen.requests++;
  if (r.status === 429) {
    const retry = Number(r.headers.get("retry-after"));
    assert.ok(retry >= 1 && retry <= retryBound(s), `${what}: Retry-After ${r.headers.get("retry-after")} s, the limit's span is ${s / 1000} s`);
    seen.denied++;
    seen.retry = Math.max(seen.retry, retry);
  }
  const rl = parseRateLimit(r.headers.get("ratelimit")).hourly;
  assert.ok(rl, `${what}: RateLimit ${r.headers.get("ratelimit")}`);
  assert.ok(rl.w <= Math.ceil(s / 1000), `${what}: reset in ${rl.w} s, longer than the limit's span of ${s / 1000} s`);
  seen.reset = Math.max(seen.reset, rl.w);
  return { status: r.status, remaining: rl.a, backend: r.headers.get("x-limiter-backend") };
}

/** The store's own answer (not the deny cache's), with this status and what is left. */
const store = (status, remaining) => ({ status, remaining, backend: "upstash" });

/**
 * Every key in Redis has a TTL, and none longer than its limit's span (a key written by one
 * clock expires when its limit is whole again). A key names its parameters (`sw300-<window>`);
 * one that does not (the old scheme) is held to the longer of the two windows.
 */
async function assertKeysSane() {
  const keys = await upstash.command("KEYS", "e2e:*");
  assert.ok(keys.length > 0);
  for (const key of keys) {
    const tagged = /:sw300-(\d+):/.exec(key);
    const window = tagged ? Number(tagged[1]) : DAY;
    const ttl = await upstash.command("PTTL", key);
    assert.ok(ttl > 0 && ttl <= span(window), `${key}: PTTL ${ttl} ms, the limit's span is ${span(window)} ms`);
    const seen = Object.values(observed).find((x) => x.window === window);
    if (seen) {
      seen.pttl = Math.max(seen.pttl, ttl);
      seen.keys.add(key);
    }
  }
  for (const key of keys) {
    assert.match(key, /^e2e:anonymous:hourly:sw300-(3600000|86400000):[0-9a-f]{32}$/, "keys carry the parameters");
  }
  return keys;
}

// Each test leaves the Worker that will be asked to remember the subject's state without a
// cached denial of it, so that the answer that matters comes from Redis, not the deny cache.
test("300/h used up, then the same limit as 300/day: the caller starts from a sane state", async () => {
  const ip = freshIp();
  for (const left of [200, 100, 0]) assert.deepEqual(await send(hourly, ip, "/bulk"), store(200, left));
  const day = await dayWorker();
  // A new limit: its own state, whole. (With one key: Retry-After in the billions of seconds.)
  assert.deepEqual(await send(day, ip), store(200, 299));
  assert.deepEqual(await send(day, ip, "/bulk"), store(200, 199));
  assert.deepEqual(await send(day, ip, "/bulk"), store(200, 99));
  assert.deepEqual(await send(day, ip, "/bulk"), store(429, 99));
  assert.deepEqual(await send(day, ip), store(200, 98), "the day counts its own traffic, nothing else");
  assert.deepEqual(await send(hourly, ip), store(429, 0), "and the hour's state is untouched");
  const keys = await assertKeysSane();
  assert.equal(keys.length, 2, "one key per set of parameters");
  for (const key of keys) console.log(`${key}: PTTL ${await upstash.command("PTTL", key)} ms`);
  passed++;
});

test("300/day used up, then 300/h, then rolled back to 300/day: each finds its own state", async () => {
  const day = await dayWorker();
  const ip = freshIp();
  for (const left of [200, 100, 0]) assert.deepEqual(await send(day, ip, "/bulk"), store(200, left));
  assert.deepEqual(await send(hourly, ip), store(200, 299));
  assert.deepEqual(await send(hourly, ip), store(200, 298));
  // The rollback: the day's state is as the day left it, used up, for a day at most.
  // (With one key, the hour's slots had replaced it: Retry-After in the billions.)
  assert.deepEqual(await send(day, ip), store(429, 0));
  assert.deepEqual(await send(hourly, ip), store(200, 297), "and back again");
  await assertKeysSane();
  passed++;
});

test("both policies live at once, requests alternating: neither poisons the other", async () => {
  const day = await dayWorker();
  const ip = freshIp();
  for (let i = 0; i < 10; i++) {
    assert.deepEqual(await send(hourly, ip), store(200, 299 - i), `hour, request ${i}`);
    assert.deepEqual(await send(day, ip), store(200, 299 - i), `day, request ${i}`);
  }
  const seen = { [hourly.name]: [], [day.name]: [] };
  for (let i = 0; i < 3; i++) {
    for (const w of [hourly, day]) seen[w.name].push(await send(w, ip, "/bulk"));
  }
  for (const w of [hourly, day]) {
    assert.deepEqual(seen[w.name], [store(200, 190), store(200, 90), store(429, 90)], w.name);
    // A unit still fits (a smaller cost than the denied one asks the store again).
    assert.deepEqual(await send(w, ip), store(200, 89), w.name);
  }
  await assertKeysSane();
  passed++;
});

after(() => {
  const TESTS = 3;
  const rows = Object.entries(observed).map(([name, x]) => [
    `\`${name}\``,
    `${x.requests} answers, ${x.denied} of them 429`,
    x.denied ? `${x.retry} s` : "none denied",
    `${x.reset} s`,
    `${(x.pttl / 1000).toFixed(0)} s over ${x.keys.size} keys`,
    `${(span(x.window) / 1000).toFixed(0)} s`,
  ]);
  const body = [
    "The limit `hourly`, a sliding window of `300/h` changed to `300/day` under the same name, the reverse (a rollback), and both",
    "versions live at once on one Redis, each policy in its own Worker (two workerd processes). Every answer was checked against",
    "the limit's span (the window plus one slot, a tenth of it); the longest of each, over the whole run:",
    "",
    mdTable(["limit", "answers", "longest Retry-After", "longest reset (`RateLimit` `t`)", "longest PTTL", "the limit's span"], rows),
    "",
    "Keys, one per set of parameters and subject: " +
      Object.entries(observed).map(([name, x]) => `\`${name}\` wrote \`${[...new Set([...x.keys].map((k) => k.replace(/[0-9a-f]{32}$/, "<32 hex>")))].join("`, `")}\``).join("; ") +
      `. ${passed} of ${TESTS} tests passed.`,
  ].join("\n");
  console.log(body.split("\n").map((l) => `# ${l}`).join("\n"));
  recordSection(STORE_CLAIMS.page, "claims:policy-change", {
    command: testCommand(fileURLToPath(import.meta.url)), body, skeleton: STORE_CLAIMS.skeleton, complete: passed === TESTS,
  });
});
