// Runtime controls, end to end: overrides (a subject's tier or its own limits, with an
// expiry) and block and allow lists set through the admin API, without a redeploy. On
// Upstash (two Workers on one local-upstash and redis-server), on a Workers KV namespace
// (two Workers on one persisted KV), and in a memory-only Worker, where they stay in the
// isolate and the status says so. Every change is logged by the subject's digest only.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Miniflare } from "miniflare";
import { ROOT, startWorker, startPair, freshIp, scriptCalls, sleep, workerOptions, sharedBackends } from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const REFRESH_MS = 1_000;
const POLICY = {
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 2, refill: "1/day" } } } },
    premium: { limits: { burst: { token_bucket: { capacity: 6, refill: "1/day" } } } },
  },
  store: { controls_refresh: `${REFRESH_MS}ms`, fleet: false },
};

const backends = sharedBackends({ before, after });

const SERVICE_TOKEN = "e2e-service-" + randomBytes(16).toString("hex");
const vars = () => ({
  POLICY: JSON.stringify({ key_prefix: "ctl-" + randomBytes(4).toString("hex"), ...POLICY }),
  ORIGIN_URL: backends.origin.url,
  ADMIN_TOKEN,
  SERVICE_TOKEN,
});

async function admin(w, method, route, body) {
  const r = await fetch(`${w.url}/__limiter/admin/${route}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json", "CF-Connecting-IP": "192.0.2.250" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: r.status, json: await r.json() };
}

/** Statuses of `n` requests from `ip`. */
async function burst(w, ip, n, headers = {}) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${w.url}/page`, { headers: { "CF-Connecting-IP": ip, ...headers } });
    await r.arrayBuffer();
    out.push(r.status);
  }
  return out;
}

const count = (xs, s) => xs.filter((x) => x === s).length;

test("on Upstash: an override set through one Worker applies there at once and in the other within the refresh; removed, both go back", async () => {
  const workers = await startPair(vars(), backends.upstash);
  try {
    const [a, b] = workers;
    const [vip, other] = [freshIp(), freshIp()];
    const set = await admin(a, "POST", "overrides", { ip: vip, tier: "premium" });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    assert.equal(set.json.source, "upstash");
    assert.equal(set.json.every_isolate_within_s, 1);
    assert.equal(count(await burst(a, vip, 4), 200), 4, "premium's 6 at once on the Worker that set it");
    await sleep(REFRESH_MS + 300);
    await burst(b, freshIp(), 1); // the request that finds B's copy due reads it in its background
    await sleep(300);
    assert.deepEqual(await burst(b, vip, 3), [200, 200, 429], "B applies it too: 6 in all, shared in Upstash");
    assert.deepEqual(await burst(b, other, 3), [200, 200, 429], "another address keeps its tier");

    const listed = await admin(b, "GET", "controls");
    assert.equal(listed.json.overrides.length, 1);
    assert.equal(listed.json.overrides[0].tier, "premium");
    assert.match(listed.json.overrides[0].subject_hash, /^[0-9a-f]{32}$/);
    assert.equal(listed.json.status.source, "upstash");
    assert.ok(!JSON.stringify(listed.json).includes(vip), "no raw address in the listing");

    const removed = await admin(b, "DELETE", `overrides?subject_hash=${listed.json.overrides[0].subject_hash}`);
    assert.equal(removed.status, 200);
    await sleep(REFRESH_MS + 300);
    await burst(a, freshIp(), 1);
    await sleep(300);
    const back = freshIp();
    assert.deepEqual(await burst(a, back, 3), [200, 200, 429]);
    const logs = a.logs.join("") + b.logs.join("");
    assert.match(logs, /admin set an override: subject=[0-9a-f]{32} tier premium, until removed/);
    assert.match(logs, /admin removed the override of subject=[0-9a-f]{32}/);
    assert.ok(!logs.includes(vip), "the log names the subject by digest only");
  } finally {
    for (const w of workers) await w.stop();
  }
});

test("own limits and an expiry: the override ends by itself", async () => {
  const w = await startWorker({ ...vars(), UPSTASH_REDIS_REST_URL: backends.upstash.url, UPSTASH_REDIS_REST_TOKEN: backends.upstash.token });
  try {
    const ip = freshIp();
    const set = await admin(w, "POST", "overrides", { ip, limits: { burst: { token_bucket: { capacity: 4, refill: "1/day" } } }, ttl: "3s" });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    assert.match(set.json.override, /own limits \(burst\) for 3 s/);
    assert.equal(count(await burst(w, ip, 5), 200), 4, "its own 4");
    await sleep(3_200);
    const later = freshIp();
    assert.deepEqual(await burst(w, later, 3), [200, 200, 429], "others as before");
    // Expired: the address is back on its tier's bucket, which it never touched.
    assert.deepEqual(await burst(w, ip, 3), [200, 200, 429]);
    assert.equal((await admin(w, "GET", "controls")).json.overrides.length, 0, "an expired override is not listed");
  } finally {
    await w.stop();
  }
});

test("runtime lists: a block set through one Worker refuses the address at both, with no store and no backends.origin call; a fresh isolate's first request is judged by it", async () => {
  const v = vars();
  const workers = await startPair(v, backends.upstash);
  try {
    const [a, b] = workers;
    const attacker = freshIp();
    const put = await admin(a, "PUT", "lists", { block: { addresses: [`${attacker}/32`], user_agents: ["*evilbot*"] } });
    assert.equal(put.status, 200, JSON.stringify(put.json));
    assert.equal(put.json.lists, "block 2 entries");
    await sleep(REFRESH_MS + 300);
    await burst(b, freshIp(), 1);
    await sleep(300);
    const seen = backends.origin.seen.length;
    const calls = await scriptCalls(backends.upstash);
    for (const w of workers) {
      const r = await fetch(`${w.url}/page`, { headers: { "CF-Connecting-IP": attacker } });
      assert.equal(r.status, 403);
      assert.match((await r.json()).type, /#blocked$/);
      assert.equal((await fetch(`${w.url}/page`, { headers: { "CF-Connecting-IP": freshIp(), "user-agent": "x evilbot y" } })).status, 403);
    }
    assert.equal(backends.origin.seen.length, seen, "no backends.origin call");
    const after = await scriptCalls(backends.upstash);
    assert.equal(after.evalsha.calls + after.eval.calls, calls.evalsha.calls + calls.eval.calls, "no store call for a blocked request");

    // A Worker started now: its first request is from the blocked address.
    const third = await startWorker({ ...v, UPSTASH_REDIS_REST_URL: backends.upstash.url, UPSTASH_REDIS_REST_TOKEN: backends.upstash.token });
    try {
      const first = await fetch(`${third.url}/page`, { headers: { "CF-Connecting-IP": attacker } });
      await first.arrayBuffer();
      assert.equal(first.status, 403, "the first request waited for the first read");
    } finally {
      await third.stop();
    }

    assert.equal((await admin(b, "PUT", "lists", { block: {} })).status, 200);
    await sleep(REFRESH_MS + 300);
    await burst(a, freshIp(), 1);
    await sleep(300);
    assert.equal((await burst(a, attacker, 1))[0], 200, "emptied: the address passes again");
    assert.ok(!(a.logs.join("") + b.logs.join("")).includes(attacker), "the log has counts, not addresses");
  } finally {
    for (const w of workers) await w.stop();
  }
});

test("an allow list set at runtime passes its address unlimited", async () => {
  const w = await startWorker(vars());
  try {
    const friend = freshIp();
    assert.equal((await admin(w, "PUT", "lists", { allow: { addresses: [friend] } })).status, 200);
    assert.equal(count(await burst(w, friend, 6), 200), 6);
  } finally {
    await w.stop();
  }
});

test("memory only: a change applies in this isolate, and the status says it is this isolate's only", async () => {
  const w = await startWorker(vars());
  try {
    const ip = freshIp();
    const set = await admin(w, "POST", "overrides", { ip, tier: "premium" });
    assert.equal(set.json.source, "isolate");
    assert.equal(set.json.every_isolate_within_s, null);
    assert.equal(count(await burst(w, ip, 7), 200), 6);
    // The decision API answers what the edge would: the override's tier.
    const asked = await fetch(`${w.url}/__limiter/v1/check`, {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_TOKEN}` },
      body: JSON.stringify({ ip, peek: true }),
    });
    const decision = await asked.json();
    assert.equal(decision.tier, "premium");
    assert.equal(decision.limit, 6);
    // Claiming the overridden address in a forwarded-for field, or in another spelling,
    // gets nothing: the override is keyed by the subject identity derives.
    assert.equal(count(await burst(w, freshIp(), 4, { "X-Forwarded-For": ip }), 200), 2);
    const status = await (await fetch(`${w.url}/__limiter/status.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    assert.equal(status.controls.source, "isolate");
    assert.equal(status.controls.scope, "this isolate only");
    assert.equal(status.controls.overrides, 1);
  } finally {
    await w.stop();
  }
});

test("on Workers KV: two Workers on one namespace share the controls", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "controls-kv-"));
  const start = async () => {
    const opts = workerOptions({ script: path.join(ROOT, "build/index.js"), bindings: vars() });
    const mf = new Miniflare({ ...opts, kvNamespaces: ["CONTROLS"], kvPersist: dir });
    const url = (await mf.ready).toString().replace(/\/$/, "");
    return { url, stop: () => mf.dispose() };
  };
  const [a, b] = [await start(), await start()];
  try {
    const ip = freshIp();
    const set = await admin(a, "POST", "overrides", { ip, tier: "premium" });
    assert.equal(set.status, 200, JSON.stringify(set.json));
    assert.equal(set.json.source, "kv");
    await sleep(REFRESH_MS + 300);
    await burst(b, freshIp(), 1);
    await sleep(300);
    const listed = await admin(b, "GET", "controls");
    assert.equal(listed.json.overrides.length, 1, JSON.stringify(listed.json));
    assert.equal(count(await burst(b, ip, 7), 200), 6, "B's memory buckets, premium's capacity");
  } finally {
    await a.stop();
    await b.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("every bad change gets 400 naming its field; other methods 405; no token 401", async () => {
  const w = await startWorker(vars());
  try {
    const cases = [
      ["POST", "overrides", "[1]", /JSON object/],
      ["POST", "overrides", { tier: "premium" }, /exactly one/],
      ["POST", "overrides", { ip: "203.0.113.9" }, /tier/],
      ["POST", "overrides", { ip: "203.0.113.9", tier: "gold" }, /^tier:/],
      ["POST", "overrides", { ip: "203.0.113.9", limits: { burst: "1/fortnight" } }, /limits\.burst/],
      ["POST", "overrides", { ip: "203.0.113.9", tier: "premium", ttl: "forever" }, /^ttl:/],
      ["POST", "overrides", { ip: "203.0.113.9", tier: "premium", colour: 1 }, /^colour:/],
      ["POST", "overrides", { key: "not-a-key", tier: "premium" }, /^key:/],
      ["DELETE", "overrides?subject_hash=xyz", undefined, /^subject_hash:/],
      ["DELETE", "overrides?key=secret", undefined, /never goes in a URL/],
      ["PUT", "lists", { block: { addresses: ["300.1.1.1"] } }, /block\.addresses\[0\]/],
      ["PUT", "lists", { deny: {} }, /^deny:/],
      ["PUT", "lists", {}, /block, allow or both/],
    ];
    for (const [method, route, body, detail] of cases) {
      const r = await admin(w, method, route, body);
      assert.equal(r.status, 400, `${method} ${route} ${JSON.stringify(body)}: ${JSON.stringify(r.json)}`);
      assert.match(r.json.detail, detail, `${method} ${route} ${JSON.stringify(body)}`);
    }
    assert.equal((await admin(w, "GET", "overrides")).status, 405);
    assert.equal((await admin(w, "POST", "lists", { block: {} })).status, 405);
    const none = await fetch(`${w.url}/__limiter/admin/overrides`, { method: "POST", body: "{}" });
    assert.equal(none.status, 401);
    assert.equal((await admin(w, "GET", "controls")).json.overrides.length, 0, "nothing was stored");
  } finally {
    await w.stop();
  }
});
