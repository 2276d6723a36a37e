// What the Worker does when its configuration or its origin is broken: a clear answer,
// never a panic.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { startWorker } from "./harness.mjs";

test("a broken policy answers 500 problem+json naming the field, and logs it once", async () => {
  const policy = { tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 0, refill: "1/s" } } } } } };
  const w = await startWorker({ POLICY: JSON.stringify(policy), ORIGIN_URL: "demo" });
  try {
    for (let i = 0; i < 3; i++) {
      const r = await fetch(w.url + "/x");
      assert.equal(r.status, 500);
      assert.equal(r.headers.get("content-type"), "application/problem+json");
      const body = await r.json();
      assert.match(body.detail, /tiers\.anonymous\.limits\.burst\.token_bucket\.capacity/);
      assert.match(body.detail, /out of range/);
    }
    const said = w.logs.join("").split("the policy is invalid").length - 1;
    assert.equal(said, 1, "logged once per isolate:\n" + w.logs.join(""));
  } finally {
    await w.stop();
  }
});

test("an origin that cannot be reached gives 502 problem+json", async () => {
  // A port that was free a moment ago and has nothing listening now.
  const port = await new Promise((ok) => {
    const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  });
  const w = await startWorker({ ORIGIN_URL: `http://127.0.0.1:${port}` });
  try {
    const r = await fetch(w.url + "/x", { headers: { "CF-Connecting-IP": "192.0.2.1" } });
    assert.equal(r.status, 502);
    assert.equal(r.headers.get("content-type"), "application/problem+json");
    assert.equal((await r.json()).status, 502);
  } finally {
    await w.stop();
  }
});

test("with nothing configured the built-in example policy and demo origin run", async () => {
  const w = await startWorker({ ORIGIN_URL: "demo" });
  try {
    const r = await fetch(w.url + "/hello", { headers: { "CF-Connecting-IP": "192.0.2.2" } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("ratelimit-policy"), /"burst";q=10;w=10, "hourly";q=300/);
    assert.equal((await r.json()).path, "/hello");
    assert.match(w.logs.join(""), /no POLICY set/);
  } finally {
    await w.stop();
  }
});
