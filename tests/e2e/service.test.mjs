// The decision API for apps, end to end: the real Worker in workerd, on local-upstash and
// redis-server where the store matters. An app asks `POST /__limiter/v1/check` with
// SERVICE_TOKEN for the decision the edge would make (the same buckets when it names an
// edge subject), peeks at cost 0, refunds an estimate that was too high, resets; the same
// through a service binding from an app Worker of its own. Every way around the token tried.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { Miniflare } from "miniflare";
import { ROOT, startWorker, startPair, freshIp, workerOptions, scriptCalls, sharedBackends } from "./harness.mjs";

const SERVICE_TOKEN = "e2e-service-" + randomBytes(16).toString("hex");
const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const POLICY = {
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/day" } } } },
    llm: { limits: { tokens: { token_bucket: { capacity: 1000, refill: "1000/day" } } } },
  },
  identity: { auth_failures: { failures: { token_bucket: { capacity: 3, refill: "1/day" } } } },
  // The test counts the decision API's own script calls.
  store: { fleet: false },
};

const backends = sharedBackends({ before, after });

const vars = (extra = {}) => ({
  POLICY: JSON.stringify({ key_prefix: "svc-" + randomBytes(4).toString("hex"), ...POLICY }),
  ORIGIN_URL: backends.origin.url,
  SERVICE_TOKEN,
  ADMIN_TOKEN,
  ...extra,
});

async function ask(w, call, body, { token = SERVICE_TOKEN, ip = "192.0.2.200", raw } = {}) {
  const r = await fetch(`${w.url}/__limiter/v1/${call}`, {
    method: "POST",
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json", "CF-Connecting-IP": ip },
    body: raw ?? JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* a problem body is JSON too; anything else stays null */ }
  return { status: r.status, type: r.headers.get("content-type"), json, text };
}

test("an app's own subject: check takes units, a denial says when, a peek takes none, a refund gives back, a reset fills", async () => {
  const w = await startWorker(vars());
  try {
    const user = { subject: "user-" + randomBytes(4).toString("hex"), tier: "llm" };
    const first = await ask(w, "check", { ...user, cost: 700 });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.allowed, true);
    assert.equal(first.json.remaining, 300);
    assert.equal(first.json.limit, 1000);
    assert.equal(first.json.backend, "memory");
    assert.match(first.json.subject_hash, /^[0-9a-f]{32}$/);
    assert.ok(!first.text.includes(user.subject), "no raw subject in an answer");
    assert.ok(first.json.headers.RateLimit, "the fields the edge would send, for the app to pass on");

    const denied = await ask(w, "check", { ...user, cost: 500 });
    assert.equal(denied.status, 200, "a denial is an answer, not an error");
    assert.equal(denied.json.allowed, false);
    assert.equal(denied.json.outcome, "denied");
    assert.ok(denied.json.retry_after > 0, JSON.stringify(denied.json));
    assert.equal(denied.json.headers["Retry-After"], String(denied.json.retry_after));
    const peek = await ask(w, "check", { ...user, peek: true });
    assert.equal(peek.json.remaining, 300, "the denial took nothing");
    assert.equal((await ask(w, "check", { ...user, peek: true })).json.remaining, 300, "nor did the peek");

    // The estimate was 700; the call used 250. The rest goes back.
    const refund = await ask(w, "refund", { ...user, units: 450, at: first.json.at });
    assert.equal(refund.status, 200, refund.text);
    // A token bucket gives back what it can be sure was not refilled past the cap since
    // `at`: here all of it but a fraction of a unit, which whole units round off.
    const back = refund.json.refunded;
    assert.ok(back === 449 || back === 450, JSON.stringify(refund.json));
    const after = (await ask(w, "check", { ...user, peek: true })).json.remaining;
    assert.ok(after - 300 - back >= 0 && after - 300 - back <= 1, `${after} after ${back} back`);
    const over = await ask(w, "check", { ...user, cost: 2000 });
    assert.equal(over.json.outcome, "over_capacity");
    assert.equal(over.json.retry_after, null, "no wait lets a cost above the capacity through");

    const reset = await ask(w, "reset", user);
    assert.equal(reset.json.reset, true);
    assert.equal((await ask(w, "check", { ...user, peek: true })).json.remaining, 1000);
    const status = await (await fetch(`${w.url}/__limiter/status.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    assert.deepEqual(status.service, { on: true, checks: 7, denied: 2, refunds: 1 });
  } finally {
    await w.stop();
  }
});

test("an edge subject: the app and the edge share its buckets, both ways", async () => {
  const w = await startWorker(vars());
  try {
    const ip = freshIp();
    const edge = async () => {
      const r = await fetch(`${w.url}/page`, { headers: { "CF-Connecting-IP": ip } });
      await r.arrayBuffer();
      return r.status;
    };
    assert.equal(await edge(), 200);
    const asked = await ask(w, "check", { ip });
    assert.equal(asked.json.tier, "anonymous", "an address's own tier, as the edge would pick");
    assert.equal(asked.json.remaining, 1, "the edge's request counted");
    assert.equal(await edge(), 200);
    assert.equal(await edge(), 429, "the app's check counted at the edge");
    assert.equal((await ask(w, "check", { ip })).json.allowed, false);
    // The same name as an app subject is another subject: its own buckets.
    assert.equal((await ask(w, "check", { subject: `ip:${ip}`, tier: "anonymous" })).json.remaining, 2);
  } finally {
    await w.stop();
  }
});

test("inline limits: read as a tier's are, the same limits meet the same buckets, a bad one named", async () => {
  const w = await startWorker(vars());
  try {
    const limits = { minute: "5/min", daily: { fixed_window: "20/day" } };
    const a = await ask(w, "check", { subject: "tenant-1", limits, cost: 4 });
    assert.equal(a.status, 200, a.text);
    assert.match(a.json.tier, /^api:[0-9a-f]{12}$/);
    assert.deepEqual(a.json.limits.map((l) => [l.name, l.remaining]), [["daily", 16], ["minute", 1]]);
    const again = await ask(w, "check", { subject: "tenant-1", limits: { daily: { fixed_window: "20/day" }, minute: "5/min" }, cost: 2 });
    assert.equal(again.json.allowed, false, "the same buckets, the minute's one unit short");
    const bad = await ask(w, "check", { subject: "tenant-1", limits: { minute: "5/fortnight" } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.detail, /limits\.minute/);
  } finally {
    await w.stop();
  }
});

test("every bad ask gets 400 naming its field, other methods 405, other routes 404; none reaches the origin", async () => {
  const w = await startWorker(vars());
  try {
    const seen = backends.origin.seen.length;
    const cases = [
      [{ raw: "not json" }, /not JSON/],
      [{ raw: "[1, 2]" }, /JSON object/],
      [{ body: { tier: "llm" } }, /exactly one/],
      [{ body: { subject: "u", ip: "192.0.2.1" } }, /exactly one/],
      [{ body: { subject: "u" } }, /^tier:/],
      [{ body: { subject: "u", tier: "gold" } }, /gold/],
      [{ body: { subject: "u", tier: "llm", cost: -1 } }, /^cost:/],
      [{ body: { subject: "u", tier: "llm", cost: "5" } }, /^cost:/],
      [{ body: { subject: "u", tier: "llm", peek: true, cost: 2 } }, /^peek:/],
      [{ body: { subject: "u", tier: "llm", colour: "red" } }, /colour/],
      [{ body: { subject: "", tier: "llm" } }, /^subject:/],
      [{ body: { subject: "x".repeat(300), tier: "llm" } }, /^subject:/],
      [{ body: { ip: "999.1.1.1" } }, /^ip:/],
      [{ body: { key: "not-a-key-of-ours" } }, /^key:/],
      [{ body: { subject: "u", tier: "llm" }, call: "refund" }, /^units:/],
      [{ body: { subject: "u", tier: "llm", units: 5, at: Date.now() + 60_000 }, call: "refund" }, /^at:/],
      [{ body: { subject: "u", tier: "llm", cost: 5 }, call: "refund" }, /^cost:/],
    ];
    for (const [{ body, raw, call = "check" }, detail] of cases) {
      const r = await ask(w, call, body, { raw });
      assert.equal(r.status, 400, `${JSON.stringify(body ?? raw)}: ${r.text}`);
      assert.equal(r.type, "application/problem+json");
      assert.match(r.json.detail, detail, JSON.stringify(body ?? raw));
      assert.match(r.json.type, /#service$/);
    }
    const get = await fetch(`${w.url}/__limiter/v1/check`, { headers: { authorization: `Bearer ${SERVICE_TOKEN}` } });
    assert.equal(get.status, 405);
    assert.equal((await ask(w, "decide", { subject: "u", tier: "llm" })).status, 404);
    assert.equal((await ask(w, "check/../../admin/health", { subject: "u", tier: "llm" })).status, 401, "a dot path lands on the admin API, which refuses the service token");
    assert.equal(backends.origin.seen.length, seen, "nothing reached the origin");
  } finally {
    await w.stop();
  }
});

test("the token: missing 401, wrong 401 and charged, then 429 for the address; the admin token opens nothing here and the service token nothing there", async () => {
  const w = await startWorker(vars());
  try {
    const body = { subject: "u", tier: "llm" };
    const none = await ask(w, "check", body, { token: null });
    assert.equal(none.status, 401);
    assert.match(none.json.detail, /SERVICE_TOKEN/);
    assert.equal((await ask(w, "check", body, { token: ADMIN_TOKEN, ip: "192.0.2.77" })).status, 401, "the admin token is not a service token");
    const admin = await fetch(`${w.url}/__limiter/admin/health`, { headers: { authorization: `Bearer ${SERVICE_TOKEN}`, "CF-Connecting-IP": "192.0.2.78" } });
    assert.equal(admin.status, 401, "the service token opens no admin API");
    const guesser = "192.0.2.99";
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await ask(w, "check", body, { token: SERVICE_TOKEN + "x", ip: guesser })).status);
    assert.deepEqual(statuses, [401, 401, 401, 429, 429], "three failures, then the address is out");
    assert.equal((await ask(w, "check", body, { ip: guesser })).status, 429, "a right guess from a locked-out address looks like a wrong one");
    assert.equal((await ask(w, "check", body, { ip: "192.0.2.100" })).status, 200, "another address is not");
  } finally {
    await w.stop();
  }
});

test("off unless SERVICE_TOKEN is set, long enough and not the admin token", async () => {
  for (const [extra, why] of [
    [{ SERVICE_TOKEN: undefined }, /set the secret SERVICE_TOKEN/],
    [{ SERVICE_TOKEN: "short" }, /shorter than 32/],
    [{ SERVICE_TOKEN: ADMIN_TOKEN }, /differ from ADMIN_TOKEN/],
  ]) {
    const v = vars(extra);
    if (v.SERVICE_TOKEN === undefined) delete v.SERVICE_TOKEN;
    const w = await startWorker(v);
    try {
      const r = await ask(w, "check", { subject: "u", tier: "llm" }, { token: v.SERVICE_TOKEN ?? SERVICE_TOKEN });
      assert.equal(r.status, 404, r.text);
      assert.match(r.json.detail, why);
      if (v.SERVICE_TOKEN === ADMIN_TOKEN) {
        assert.ok(w.logs.join("").includes("SERVICE_TOKEN is the same as ADMIN_TOKEN"), "said in the log");
      }
    } finally {
      await w.stop();
    }
  }
});

test("on Upstash: two Workers give one answer; a refund through one is seen by the other; the store counts one script call a check", async () => {
  const workers = await startPair(vars(), backends.upstash);
  try {
    const user = { subject: "user-" + randomBytes(4).toString("hex"), tier: "llm" };
    const before = await scriptCalls(backends.upstash);
    const a = await ask(workers[0], "check", { ...user, cost: 600 });
    assert.equal(a.json.backend, "upstash");
    const b = await ask(workers[1], "check", { ...user, cost: 600 });
    assert.equal(b.json.allowed, false, "the other Worker sees the first one's units taken");
    assert.equal(b.json.remaining, 400);
    const refund = await ask(workers[1], "refund", { ...user, units: 500, at: a.json.at });
    assert.ok(refund.json.refunded >= 499 && refund.json.refunded <= 500, JSON.stringify(refund.json));
    assert.equal(refund.json.backend, "upstash");
    const c = await ask(workers[0], "check", { ...user, cost: 600 });
    assert.equal(c.json.allowed, true, JSON.stringify(c.json));
    assert.ok(c.json.remaining >= 299 && c.json.remaining <= 301, JSON.stringify(c.json));
    const calls = await scriptCalls(backends.upstash);
    const made = calls.evalsha.calls + calls.eval.calls - before.evalsha.calls - before.eval.calls;
    assert.equal(made, 4, "three checks and a refund: one script call each");
  } finally {
    for (const w of workers) await w.stop();
  }
});

test("through a service binding: an app Worker asks without leaving the runtime, and the edge sees its units", async () => {
  const app = `export default {
    async fetch(request, env) {
      const ip = new URL(request.url).searchParams.get("ip");
      const r = await env.LIMITER.fetch("https://limiter.internal/__limiter/v1/check", {
        method: "POST",
        headers: { authorization: "Bearer " + env.SERVICE_TOKEN, "content-type": "application/json" },
        body: JSON.stringify({ ip, cost: 2 }),
      });
      const decision = await r.json();
      if (!decision.allowed) return new Response("slow down", { status: 429, headers: { "retry-after": String(decision.retry_after) } });
      return new Response("the app's own answer, " + decision.remaining + " left");
    },
  };`;
  const limiter = workerOptions({ script: path.join(ROOT, "build/index.js"), bindings: vars() });
  const mf = new Miniflare({
    host: "127.0.0.1",
    port: 0,
    workers: [
      { name: "app", modules: true, script: app, compatibilityDate: "2026-04-01", bindings: { SERVICE_TOKEN }, serviceBindings: { LIMITER: "limiter" } },
      { ...limiter, name: "limiter", host: undefined, port: undefined },
    ],
  });
  try {
    const url = (await mf.ready).toString().replace(/\/$/, "");
    const ip = freshIp();
    const first = await fetch(`${url}/?ip=${ip}`);
    assert.equal(first.status, 200);
    assert.equal(await first.text(), "the app's own answer, 1 left");
    const second = await fetch(`${url}/?ip=${ip}`);
    assert.equal(second.status, 429);
    assert.ok(Number(second.headers.get("retry-after")) > 0);
    // The limiter itself, asked by the same address, finds its bucket used by the app.
    const limiterWorker = await mf.getWorker("limiter");
    const edge = async () => {
      const r = await limiterWorker.fetch("https://limiter.internal/page", { headers: { "CF-Connecting-IP": ip } });
      await r.arrayBuffer();
      return r.status;
    };
    assert.deepEqual([await edge(), await edge()], [200, 429], "one unit was left after the app's two");
  } finally {
    await mf.dispose();
  }
});
