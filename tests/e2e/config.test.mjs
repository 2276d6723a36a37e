// POLICY as wrangler passes it from a `[vars.POLICY]` table (an object), beside the same
// policy as JSON text (a secret, or a string var): the same limits, the same refusal of a
// bad field.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, startOrigin, freshIp } from "./harness.mjs";

const POLICY = {
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/min" } } } } },
  routes: [{ path: "/health", exempt: true }],
};

let origin;
before(async () => { origin = await startOrigin(); });
after(async () => { await origin?.stop(); });

async function statuses(w, path, n, ip) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(w.url + path, { headers: { "CF-Connecting-IP": ip } });
    await r.arrayBuffer();
    out.push(r.status);
  }
  return out;
}

test("POLICY as an object and as JSON text: the same limits and the same fields", async () => {
  const asObject = await startWorker({ POLICY, ORIGIN_URL: origin.url });
  const asText = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url });
  try {
    for (const w of [asObject, asText]) {
      const ip = freshIp();
      assert.deepEqual(await statuses(w, "/x", 5, ip), [200, 200, 200, 429, 429]);
      assert.deepEqual(await statuses(w, "/health", 3, ip), [200, 200, 200], "the exempt route of the policy");
      const r = await fetch(w.url + "/y", { headers: { "CF-Connecting-IP": freshIp() } });
      assert.match(r.headers.get("ratelimit-policy"), /^"burst";q=3;w=/);
      assert.ok(!w.logs.join("").includes("no POLICY set"), "the policy was read, not the built-in one");
    }
  } finally {
    await asObject.stop();
    await asText.stop();
  }
});

test("a bad field in a POLICY object is refused naming the field", async () => {
  const bad = { ...POLICY, tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "often" } } } } } };
  const w = await startWorker({ POLICY: bad, ORIGIN_URL: origin.url });
  try {
    const r = await fetch(w.url + "/x", { headers: { "CF-Connecting-IP": freshIp() } });
    assert.equal(r.status, 500);
    const body = await r.json();
    assert.match(body.detail, /tiers\.anonymous\.limits\.burst\.token_bucket\.refill/);
  } finally {
    await w.stop();
  }
});
