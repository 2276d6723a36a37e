// The dashboard and the admin API against `wrangler dev` (which serves www/ through the
// assets binding, as a deployment does), plus a headless Chromium (Debian's, driven by
// playwright-core) that uses the dashboard's "try it" panel.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import {
  ROOT, freshIp, launchChromium, parseRateLimit, startDev, startOrigin, startWorker,
} from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(12).toString("hex");
let dev, base;

before(async () => {
  dev = await startDev({ ADMIN_TOKEN });
  base = dev.base;
});

after(async () => {
  await dev?.stop();
});

const admin = (route, { token = ADMIN_TOKEN, method = "GET" } = {}) =>
  fetch(`${base}/__limiter/admin/${route}`, { method, headers: token ? { Authorization: `Bearer ${token}` } : {} });

test("the dashboard's files are served under /__limiter/ only, and never limited", async () => {
  for (const file of ["", "docs.html", "app.js", "style.css"]) {
    const r = await fetch(`${base}/__limiter/${file}`);
    assert.equal(r.status, 200, file);
    assert.equal(r.headers.get("x-limiter-backend"), null, `${file}: not limited`);
    await r.arrayBuffer();
  }
  // At the root the same names are ordinary, limited requests to the origin.
  const root = await fetch(`${base}/app.js`, { headers: { "CF-Connecting-IP": freshIp() } });
  assert.equal(root.headers.get("x-limiter-backend"), "memory");
  assert.ok(!(await root.text()).includes("try-form"));
  const bare = await fetch(`${base}/__limiter`, { redirect: "manual" });
  assert.equal(bare.status, 308);
  assert.equal(bare.headers.get("location"), "/__limiter/");
  // 40 dashboard requests from one address: more than the anonymous burst, none refused.
  const ip = freshIp();
  for (let i = 0; i < 40; i++) {
    const r = await fetch(`${base}/__limiter/status.json`, { headers: { "CF-Connecting-IP": ip } });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  }
  const status = await (await fetch(`${base}/__limiter/status.json`)).json();
  assert.equal(status.store.primary, "memory");
  assert.equal(status.policy.tiers[0].name, "anonymous");
  assert.ok(!JSON.stringify(status).includes("24fdfedfe3f3458e"), "no key digest in the public status");
});

test("admin API: no token and a wrong token get 401, the right one gets answers; no CORS", async () => {
  for (const token of [null, "wrong-" + randomBytes(6).toString("hex"), ADMIN_TOKEN.slice(0, -1)]) {
    const r = await admin("health", { token });
    assert.equal(r.status, 401, `token ${token}`);
    assert.equal(r.headers.get("www-authenticate"), "Bearer");
    assert.equal((await r.json()).type, "/__limiter/docs.html#admin");
  }
  const health = await admin("health");
  assert.equal(health.status, 200);
  assert.equal(health.headers.get("access-control-allow-origin"), null);
  const h = await health.json();
  assert.equal(h.store.breaker.state, "closed");
  const policy = await (await admin("policy")).json();
  assert.equal(policy.policy.key_prefix, "rl");
  assert.equal(policy.described.tiers.length, 3);
  const preflight = await fetch(`${base}/__limiter/admin/health`, { method: "OPTIONS", headers: { Origin: "https://evil.example" } });
  assert.equal(preflight.headers.get("access-control-allow-origin"), null);
  assert.equal((await admin("health", { method: "POST" })).status, 405);
  assert.equal((await admin("nothing-here")).status, 404);
  const bad = await admin("subject?ip=not-an-ip");
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).detail, /^ip: /);
});

test("admin API: inspect reports what the last response said, and reset lets a denied subject pass", async () => {
  const ip = freshIp();
  const send = () => fetch(`${base}/x`, { headers: { "CF-Connecting-IP": ip } });
  let last;
  for (let i = 0; i < 4; i++) {
    last = await send();
    await last.arrayBuffer();
  }
  const said = parseRateLimit(last.headers.get("ratelimit"));
  const state = await (await admin(`subject?ip=${ip}`)).json();
  const byName = Object.fromEntries(state.limits.map((l) => [l.name, l]));
  assert.equal(state.tier, "anonymous");
  assert.equal(byName.hourly.remaining, said.hourly.a, "the sliding window cannot have moved");
  // The burst refills 1/s: the inspection a moment later may show one more.
  assert.ok(byName.burst.remaining >= said.burst.a && byName.burst.remaining <= said.burst.a + 1, JSON.stringify(state));
  const again = await (await admin(`subject?ip=${ip}`)).json();
  assert.equal(again.limits.find((l) => l.name === "hourly").remaining, said.hourly.a, "inspection consumes nothing");

  let denied;
  for (let i = 0; i < 15 && !denied; i++) {
    const r = await send();
    await r.arrayBuffer();
    if (r.status === 429) denied = r;
  }
  assert.ok(denied, "the subject is denied");
  const reset = await admin(`reset?ip=${ip}`, { method: "POST" });
  assert.equal(reset.status, 200);
  assert.equal((await reset.json()).reset, true);
  const passes = await send();
  assert.equal(passes.status, 200, "passes again after the reset");
  assert.equal(parseRateLimit(passes.headers.get("ratelimit")).burst.a, 9);
  assert.match(dev.log, /admin reset tier=anonymous subject=[0-9a-f]{32}/);
  assert.ok(!dev.log.includes(ADMIN_TOKEN), "the token is never logged");
  assert.ok(!dev.log.includes(`subject=${ip}`), "nor the raw address");
});

test("without ADMIN_TOKEN the admin API is off", async () => {
  const w = await startWorker({ ORIGIN_URL: "demo" });
  try {
    const r = await fetch(`${w.url}/__limiter/admin/health`, { headers: { Authorization: "Bearer anything" } });
    assert.equal(r.status, 404);
    assert.match((await r.json()).detail, /ADMIN_TOKEN/);
  } finally {
    await w.stop();
  }
});

test("in Chromium: the try-it panel fires a burst past the anonymous capacity and shows the denials", async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 1400 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${base}/__limiter/`);
    await page.waitForFunction(() => document.getElementById("store-primary").textContent !== "…");
    assert.equal(await page.textContent("#store-primary"), "isolate memory");
    // In front of the demo origin the demo keys are offered: they work here.
    await page.waitForFunction(() => !document.querySelector("option.demo-only").hidden);
    assert.match(await page.textContent("#policy-tiers"), /up to 10 requests at once, refilled at 1\/s/);

    await page.selectOption("#credential", "");
    await page.fill("#count", "25");
    await page.click("#fire");
    await page.waitForFunction(() => document.body.dataset.tried === "25", null, { timeout: 60_000 });

    const allowed = Number(await page.textContent("#tried-allowed"));
    const denied = Number(await page.textContent("#tried-denied"));
    assert.equal(allowed + denied, 25);
    assert.ok(allowed >= 1 && allowed <= 10 + 3, `allowed ${allowed}`); // 10 burst + the 1/s refill while firing
    assert.ok(denied >= 12, `denied ${denied}`);
    // The last answer shown is a denial, or, when a unit refilled just before it (the burst
    // refills 1/s while the page fires), the admission that took that unit: a=0 either way.
    const last = await page.textContent("#last-headers");
    assert.match(last, /HTTP (429|200)[\s\S]*ratelimit: "burst";a=0/);
    if (/^HTTP 200/.test(last)) assert.ok(allowed > 10, `the last was admitted without a refill: allowed ${allowed}`);
    // The chart has drawn the denied line (its red) and the allowed line (its green).
    const colours = await page.evaluate(() => {
      const c = document.getElementById("chart");
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let red = 0, green = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] > 180 && data[i + 1] < 80 && data[i + 2] < 80) red++;
        if (data[i] < 60 && data[i + 1] > 100 && data[i + 2] < 90) green++;
      }
      return { red, green };
    });
    assert.ok(colours.red > 100 && colours.green > 100, JSON.stringify(colours));
    // The live counts (refreshed after the burst) include the denials.
    await page.waitForFunction((n) => Number(document.getElementById("live-denied").textContent) >= n, denied);
    // The lists' and shadow's counts: this policy blocks, allows and shadows nobody.
    assert.equal(await page.textContent("#live-listed"), "0 / 0 / 0");
    mkdirSync(path.join(ROOT, "build"), { recursive: true });
    const shot = path.join(ROOT, "build/dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot} (allowed ${allowed}, denied ${denied})`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("in Chromium, in front of a real origin: the dashboard asks for the token, then shows the state, and offers no demo key", async () => {
  const origin = await startOrigin();
  const real = await startDev({ ADMIN_TOKEN, ORIGIN_URL: origin.url });
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${real.base}/__limiter/`);
    await page.waitForSelector("#token-form:not([hidden])");
    assert.equal(await page.textContent("#store-primary"), "needs the admin token");
    assert.equal(await page.textContent("#policy-tiers"), "", "no policy shown without the token");
    await page.fill("#admin-token", ADMIN_TOKEN);
    await page.click("#token-form button");
    await page.waitForFunction(() => document.getElementById("store-primary").textContent === "isolate memory");
    assert.ok(await page.isHidden("#token-form"));
    assert.match(await page.textContent("#policy-tiers"), /anonymous/);
    const demoOffered = await page.evaluate(() => [...document.querySelectorAll("option.demo-only")].some((o) => !o.hidden && !o.disabled));
    assert.equal(demoOffered, false, "the demo keys are not keys here");
    // The demo key is indeed no key here.
    const r = await fetch(`${real.base}/x`, { headers: { "X-API-Key": "demo-premium-key" } });
    assert.equal(r.status, 401);
    assert.ok(!real.log.includes(ADMIN_TOKEN), "the token is never logged");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await real.stop();
    await origin.stop();
  }
});
