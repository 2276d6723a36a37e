// The fleet view's second sink, Workers Analytics Engine, end to end: the real wasm in
// workerd with a dataset bound as FLEET_ANALYTICS and no Upstash. Locally the runtime's own
// dataset keeps nothing, so the binding here is a stand-in with the same `writeDataPoint`
// (a wrapped binding) that hands each point to a second Worker, which keeps them for the test
// to read. The points must add up to what the test sent, carry the tier and never an address.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Miniflare } from "miniflare";
import { ROOT, freshIp, workerOptions } from "./harness.mjs";

const POLICY = {
  key_prefix: "ae-" + randomBytes(4).toString("hex"),
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/day" } } } } },
  routes: [{ path: "/api/", cost: 2 }],
};

const dataset = `export default function (env) {
  return {
    writeDataPoint(point) {
      return env.SINK.fetch("http://sink/", { method: "POST", body: JSON.stringify(point) }).then((r) => r.arrayBuffer());
    },
  };
}`;
const sink = `const points = [];
export default {
  async fetch(request) {
    if (request.method === "POST") { points.push(await request.json()); return new Response("kept"); }
    return Response.json(points);
  },
};`;

test("Analytics Engine: every flush's counts arrive as data points that add up to what was sent, by digest-free fields", async () => {
  const limiter = workerOptions({ script: path.join(ROOT, "build/index.js"), bindings: { POLICY: JSON.stringify(POLICY), ORIGIN_URL: "demo" } });
  const mf = new Miniflare({
    workers: [
      { ...limiter, name: "limiter", wrappedBindings: { FLEET_ANALYTICS: "ae-dataset" } },
      { name: "ae-dataset", modules: true, script: dataset, serviceBindings: { SINK: "ae-sink" } },
      { name: "ae-sink", modules: true, script: sink, compatibilityDate: "2026-04-01" },
    ],
  });
  try {
    const url = (await mf.ready).toString().replace(/\/$/, "");
    const send = async (p, ip) => {
      const r = await fetch(`${url}${p}`, { headers: { "CF-Connecting-IP": ip } });
      await r.arrayBuffer();
      return r.status;
    };
    const [x, y] = [freshIp(), freshIp()];
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push(await send("/page", x)); // 3 allowed, 2 denied
    for (let i = 0; i < 3; i++) statuses.push(await send("/api/thing", y)); // cost 2 of 3: 1 allowed, 2 denied
    const sent = { allowed: statuses.filter((s) => s === 200).length, denied: statuses.filter((s) => s === 429).length };
    assert.deepEqual(sent, { allowed: 4, denied: 4 }, statuses.join(","));
    const sinkWorker = await mf.getWorker("ae-sink");
    const points = async () => (await (await sinkWorker.fetch("http://sink/")).json());
    assert.deepEqual(await points(), [], "nothing is written per request: the first flush waits its 5 s");
    // A flush happens at most every 5 s, in the background of a request that finds one due.
    await sleep(5_200);
    statuses.push(await send("/page", freshIp()));
    sent.allowed += 1;
    let got = [];
    for (let i = 0; i < 50 && got.length === 0; i++) {
      await sleep(100);
      got = await points();
    }
    const sum = (event) => got.filter((p) => p.blobs[0] === event).reduce((t, p) => t + p.doubles[0], 0);
    assert.deepEqual({ allowed: sum("allowed"), denied: sum("denied") }, sent, JSON.stringify(got));
    for (const p of got) {
      assert.equal(p.indexes[0], "anonymous", "the tier is the sampling key");
      assert.equal(p.blobs.length, 6, JSON.stringify(p));
      assert.equal(p.blobs[1], "anonymous");
      assert.match(p.blobs[3], /^(memory|upstash|deny-cache|lease|fallback)$/, "the backend");
      assert.match(p.blobs[4], /^[0-9a-f]{8}$/, "the isolate");
      assert.match(p.blobs[5], /^[0-9a-f]{12}$/, "the policy version");
      assert.equal(p.doubles[1] % 60_000, 0, "the minute's start");
      assert.ok(!JSON.stringify(p).includes(x) && !JSON.stringify(p).includes(y), "no address in a point");
    }
    assert.ok(got.some((p) => p.blobs[2] === "/api/" && p.blobs[0] === "denied"), "labelled by route rule");
    // Nothing more until the next flush is due: the points were taken, not kept to be sent again.
    await send("/page", freshIp());
    await sleep(300);
    assert.equal((await points()).length, got.length);
  } finally {
    await mf.dispose();
  }
});
