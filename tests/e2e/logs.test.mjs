// Structured logs, end to end: every line the real Worker writes is one JSON object with
// stable field names (`source`, `event`, `level`, `message`, then the event's own), one per
// event and never one per request: a subject denied ten times is logged once, by digest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startOrigin, startStack, startWorker, freshIp, sleep } from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const POLICY = { tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 2, refill: "1/day" } } } } }, store: { fleet: false } };
const EVENTS = new Set(["policy_loaded", "policy_invalid", "config_error", "store_selected", "store_failure", "breaker_open",
  "breaker_closed", "admin_action", "subject_denied", "shadow_denied", "controls", "fleet_flush_failed", "origin_unreachable",
  "credential_refused", "internal_error"]);

/** The limiter's lines, parsed; anything of ours that is not one JSON object fails. */
function events(logs) {
  const lines = logs.join("").split("\n").filter((l) => l.includes("edge-limiter"));
  return lines.map((l) => {
    const json = l.slice(l.indexOf("{"));
    let e;
    assert.doesNotThrow(() => { e = JSON.parse(json); }, `not one JSON object: ${l}`);
    assert.equal(e.source, "edge-limiter");
    assert.ok(EVENTS.has(e.event), `a stable event name: ${e.event}`);
    assert.ok(e.level === "info" || e.level === "error");
    assert.equal(typeof e.message, "string");
    return e;
  });
}

test("memory: policy loaded, store selected, a subject's first denial once, admin actions by digest; every line JSON", async () => {
  const origin = await startOrigin();
  const w = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, ADMIN_TOKEN });
  try {
    const ip = freshIp();
    for (let i = 0; i < 12; i++) await (await fetch(`${w.url}/x`, { headers: { "CF-Connecting-IP": ip } })).arrayBuffer();
    const r = await fetch(`${w.url}/__limiter/admin/reset?ip=${ip}`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(r.status, 200);
    await sleep(200);
    const seen = events(w.logs);
    const of = (name) => seen.filter((e) => e.event === name);
    assert.equal(of("policy_loaded").length, 1);
    assert.match(of("policy_loaded")[0].version, /^[0-9a-f]{12}$/);
    assert.equal(of("store_selected")[0].store, "memory");
    const denied = of("subject_denied");
    assert.equal(denied.length, 1, "ten denials, one line");
    assert.match(denied[0].subject_hash, /^[0-9a-f]{32}$/);
    assert.deepEqual([denied[0].tier, denied[0].limit], ["anonymous", "burst"]);
    const reset = of("admin_action").find((e) => e.action === "reset");
    assert.equal(reset.subject_hash, denied[0].subject_hash, "the same subject, by the same digest");
    assert.ok(!w.logs.join("").includes(ip), "no raw address");
    assert.ok(!w.logs.join("").includes(ADMIN_TOKEN), "no token");
    assert.ok(seen.length < 8, `events, not requests: ${seen.length} lines for 13 requests`);
  } finally {
    await w.stop();
    await origin.stop();
  }
});

test("Upstash refusing the token: a config_error with its class once, then breaker_open; JSON", async () => {
  const origin = await startOrigin();
  const stack = await startStack({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url }, { token: "wrong-" + randomBytes(8).toString("hex") });
  try {
    for (let i = 0; i < 6; i++) {
      const r = await fetch(`${stack.worker.url}/x`, { headers: { "CF-Connecting-IP": freshIp() } });
      await r.arrayBuffer();
      assert.ok(r.status < 500, "a failing store is never a 5xx");
    }
    await sleep(200);
    const seen = events(stack.worker.logs);
    const config = seen.filter((e) => e.event === "config_error" && /unauthorized/.test(e.message));
    assert.equal(config.length, 1, JSON.stringify(seen));
    assert.equal(config[0].level, "error");
    assert.equal(seen.filter((e) => e.event === "breaker_open").length, 1);
    assert.equal(seen.find((e) => e.event === "store_selected").store, "upstash");
  } finally {
    await stack.stop();
    await origin.stop();
  }
});
