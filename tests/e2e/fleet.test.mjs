// The fleet view, end to end: two `wrangler dev` processes (the real wasm, www/ through the
// assets binding) sharing one local-upstash and redis-server, a real origin, and headless
// Chromium reading the dashboard. Each isolate tallies its decisions and flushes them in one
// script call; what the dashboard, fleet.json and admin/metrics show adds up to what the
// test sent to both.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { ROOT, freshIp, launchChromium, startDev, startLocalUpstash, startOrigin, startRedis } from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const POLICY = {
  key_prefix: "fleet-" + randomBytes(4).toString("hex"),
  tiers: {
    anonymous: { limits: { burst: { token_bucket: { capacity: 4, refill: "1/day" } } } },
    premium: { limits: { burst: { token_bucket: { capacity: 8, refill: "1/day" } } } },
  },
  routes: [{ path: "/api/", cost: 2 }],
};

let redis, upstash, origin, a, b;
before(async () => {
  redis = await startRedis();
  upstash = await startLocalUpstash(redis.port);
  origin = await startOrigin();
  const vars = { POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url, ADMIN_TOKEN, UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: upstash.token };
  // One after the other: each runs the [build] command in the same directory.
  a = await startDev(vars);
  b = await startDev(vars);
});
after(async () => {
  await b?.stop();
  await a?.stop();
  await origin?.stop();
  await upstash?.stop();
  await redis?.stop();
});

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const sent = { allowed: 0, denied: 0 };

async function send(w, path, ip, n) {
  for (let i = 0; i < n; i++) {
    const r = await fetch(w.base + path, { headers: { "CF-Connecting-IP": ip } });
    await r.arrayBuffer();
    if (r.status === 200) sent.allowed++;
    else if (r.status === 429) sent.denied++;
    else throw new Error(`${path}: ${r.status}`);
  }
}

const fleet = async (w) => (await fetch(`${w.base}/__limiter/fleet.json`, { headers: auth })).json();

test("counts from both Workers reach the shared store and add up to what was sent", async () => {
  const [x, y, heavy] = [freshIp(), freshIp(), freshIp()];
  await send(a, "/page", x, 6); // 4 allowed, 2 denied
  await send(b, "/page", y, 3); // 3 allowed
  await send(b, "/api/thing", heavy, 5); // cost 2 of 4: 2 allowed, 3 denied
  await send(a, "/page", heavy, 1); // its bucket is empty: denied
  // B's read flushes B's own tallies first; then A's flushes A's and sees both.
  await fleet(b);
  const view = await fleet(a);
  assert.equal(view.scope, "fleet");
  const sum = (e) => view.minutes.reduce((t, m) => t + (m.events[e] || 0), 0);
  assert.deepEqual({ allowed: sum("allowed"), denied: sum("denied") }, sent, JSON.stringify(view.minutes.filter((m) => Object.keys(m.events).length)));
  assert.equal(view.isolates.length, 2, "both isolates reported");
  assert.ok(view.isolates.every((i) => i.policy_version === view.isolates[0].policy_version && i.breaker === "closed"));
  assert.equal(view.heaviest[0].requests, 6, "the address that sent 6 requests in all leads");
  assert.equal(view.heaviest[0].tier, "anonymous");
  assert.match(view.heaviest[0].subject_hash, /^[0-9a-f]{32}$/);
  assert.ok(!JSON.stringify(view).includes(heavy), "subjects by digest only");
  const byTier = view.minutes.reduce((t, m) => t + ((m.by_tier.denied || {}).anonymous || 0), 0);
  assert.equal(byTier, sent.denied, "every denial was of the anonymous tier");

  const metrics = await fetch(`${a.base}/__limiter/admin/metrics`, { headers: auth });
  assert.equal(metrics.status, 200);
  assert.match(metrics.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  const textBody = await metrics.text();
  const counter = (outcome) => [...textBody.matchAll(new RegExp(`^edge_limiter_requests_total\\{outcome="${outcome}",[^}]*\\} (\\d+)$`, "gm"))]
    .reduce((t, m) => t + Number(m[1]), 0);
  assert.equal(counter("allowed"), sent.allowed, textBody);
  assert.equal(counter("denied"), sent.denied);
  assert.match(textBody, /route="\/api\/"/, "labelled by route rule");
  assert.match(textBody, /^edge_limiter_isolates 2$/m);
  assert.equal((await fetch(`${a.base}/__limiter/admin/metrics`)).status, 401, "behind the admin token");
  assert.equal((await fetch(`${a.base}/__limiter/fleet.json`)).status, 401, "in front of a real origin, as status.json");
});

test("in Chromium: the dashboard shows the fleet's counts, both isolates and the heaviest subjects", async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${a.base}/__limiter/`);
    await page.waitForSelector("#token-form:not([hidden])");
    await page.fill("#admin-token", ADMIN_TOKEN);
    await page.click("#token-form button");
    await page.waitForFunction(() => document.body.dataset.fleet !== undefined, null, { timeout: 20_000 });
    assert.equal(await page.textContent("#fleet-allowed"), String(sent.allowed));
    assert.equal(await page.textContent("#fleet-denied"), String(sent.denied));
    assert.equal(await page.textContent("#fleet-isolates"), "2");
    assert.match(await page.textContent("#fleet-scope"), /every isolate/);
    assert.equal(await page.locator("#fleet-isolate-rows tr").count(), 2);
    assert.ok(await page.locator("#fleet-heaviest tr").count() >= 3);
    const painted = await page.evaluate(() => {
      const c = document.getElementById("fleet-chart");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
      return n;
    });
    assert.ok(painted > 500, `the chart is drawn (${painted} pixels)`);
    mkdirSync(path.join(ROOT, "build"), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, "build/fleet.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
