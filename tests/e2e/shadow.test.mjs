// Shadow mode, end to end: the real Worker in workerd on local-upstash and redis-server, a
// real origin. A request its limits would refuse passes, marked `X-Limiter-Shadow: denied`
// with the decision's fields; the status counts it; the log has one line per subject, not
// per request. Shadow per tier, per route and for the whole policy; what is not in shadow is
// enforced as before.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startWorker, freshIp, sharedBackends } from "./harness.mjs";

const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const two = { burst: { token_bucket: { capacity: 2, refill: "1/day" } } };

const backends = sharedBackends({ before, after });

async function withWorker(policy, run) {
  const w = await startWorker({
    POLICY: JSON.stringify({ key_prefix: "shadow-" + randomBytes(4).toString("hex"), ...policy }),
    ORIGIN_URL: backends.origin.url,
    ADMIN_TOKEN,
    UPSTASH_REDIS_REST_URL: backends.upstash.url,
    UPSTASH_REDIS_REST_TOKEN: backends.upstash.token,
  });
  try {
    await run(w);
  } finally {
    await w.stop();
  }
}

async function burst(w, path, ip, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(w.url + path, { headers: { "CF-Connecting-IP": ip } });
    await r.arrayBuffer();
    out.push({ status: r.status, shadow: r.headers.get("x-limiter-shadow"), ratelimit: r.headers.get("ratelimit") });
  }
  return out;
}

const statusOf = async (w) =>
  (await (await fetch(w.url + "/__limiter/status.json", { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).json()).requests;

test("a tier in shadow: every request passes, the ones past the limit marked denied with their fields, counted, one log line per subject", async () => {
  await withWorker({ tiers: { anonymous: { limits: two, shadow: true } } }, async (w) => {
    const seen = backends.origin.seen.length;
    const [a, b] = [freshIp(), freshIp()];
    const first = await burst(w, "/x", a, 5);
    const second = await burst(w, "/x", b, 4);
    console.log(`# ${JSON.stringify(first)}`);
    assert.deepEqual(first.map((r) => r.status), [200, 200, 200, 200, 200]);
    assert.deepEqual(first.map((r) => r.shadow), [null, null, "denied", "denied", "denied"]);
    assert.match(first[2].ratelimit, /a=0/, "the denial's own fields: nothing left");
    assert.deepEqual(second.map((r) => r.shadow), [null, null, "denied", "denied"]);
    assert.equal(backends.origin.seen.length, seen + 9, "every request reached the origin");
    const requests = await statusOf(w);
    assert.equal(requests.shadow_denied, 5, JSON.stringify(requests));
    assert.equal(requests.denied, 0, JSON.stringify(requests));
    const lines = w.logs.join("").split("\n").filter((l) => l.includes('"event":"shadow_denied"'));
    assert.equal(lines.length, 2, `one line per subject, not per request:\n${lines.join("\n")}`);
    for (const l of lines) {
      assert.ok(!l.includes(a) && !l.includes(b), `no raw address in the log: ${l}`);
      assert.match(l, /tier anonymous would be denied by its limit burst/);
    }
  });
});

test("a route in shadow: only its requests pass past the limit; the rest of the tier is enforced", async () => {
  await withWorker(
    { tiers: { anonymous: { limits: two } }, routes: [{ path: "/beta", shadow: true }] },
    async (w) => {
      const ip = freshIp();
      const beta = await burst(w, "/beta/new", ip, 3);
      assert.deepEqual(beta.map((r) => [r.status, r.shadow]), [[200, null], [200, null], [200, "denied"]]);
      // The same subject's bucket is empty now: elsewhere it is refused.
      const other = await burst(w, "/x", ip, 1);
      assert.equal(other[0].status, 429);
    },
  );
});

test("the whole policy in shadow, the IPv6 wide net and preflights too; failed credentials are still refused", async () => {
  await withWorker(
    {
      shadow: true,
      tiers: { anonymous: { limits: two } },
      identity: {
        client_ip: { ipv6_wide: { prefix: 48, limits: { net: { token_bucket: { capacity: 3, refill: "1/day" } } } } },
        api_key: { keys: {} },
      },
      cors: { preflight_limits: { p: { token_bucket: { capacity: 1, refill: "1/day" } } } },
    },
    async (w) => {
      const net = "2001:db8:5:" + Math.floor(Math.random() * 65535).toString(16);
      const statuses = [];
      for (let i = 0; i < 6; i++) {
        const r = await fetch(w.url + "/x", { headers: { "CF-Connecting-IP": `${net}:${i}::1` } });
        await r.arrayBuffer();
        statuses.push([r.status, r.headers.get("x-limiter-shadow")]);
      }
      assert.deepEqual(statuses.map((s) => s[0]), [200, 200, 200, 200, 200, 200]);
      assert.deepEqual(statuses.slice(3).map((s) => s[1]), ["denied", "denied", "denied"], JSON.stringify(statuses));
      const ip = freshIp();
      for (let i = 0; i < 3; i++) {
        const r = await fetch(w.url + "/x", {
          method: "OPTIONS",
          headers: { "CF-Connecting-IP": ip, Origin: "https://app.example", "Access-Control-Request-Method": "POST" },
        });
        await r.arrayBuffer();
        assert.notEqual(r.status, 429, `preflight ${i + 1}`);
      }
      const key = await fetch(w.url + "/x", { headers: { "CF-Connecting-IP": freshIp(), "X-API-Key": "not-a-key" } });
      await key.arrayBuffer();
      assert.equal(key.status, 401, "a wrong key is refused in shadow as ever");
    },
  );
});

test("shadow off (the default): the same burst is refused", async () => {
  await withWorker({ tiers: { anonymous: { limits: two } } }, async (w) => {
    const r = await burst(w, "/x", freshIp(), 3);
    assert.deepEqual(r.map((x) => x.status), [200, 200, 429]);
    assert.equal(r[2].shadow, null);
  });
});
