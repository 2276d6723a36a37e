// The benchmark's JavaScript proxy (bench/proxy-js) stands for "the same forwarding as the
// limiter's, with no limiting", and the peer (bench/peer, @upstash/ratelimit) forwards what it
// admits the same way (bench/forward.js): their rows are only fair if they do that work. The
// same requests go through the limiter (memory store, the benchmark's policy), the proxy and
// the peer (bundled as scripts/bench bundles it, on local-upstash), to the same origin: the
// origin must see the same fields and body, and the client the same fields back, the
// rate-limit fields aside (the peer names its own).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { ROOT, startWorker, startOrigin, startRedis, startLocalUpstash } from "./harness.mjs";
import { POLICY } from "../../bench/common.mjs";

let origin, limiter, proxy, peer, redis, upstash;
before(async () => {
  origin = await startOrigin();
  limiter = await startWorker({ POLICY, ORIGIN_URL: origin.url });
  proxy = await startWorker({ ORIGIN_URL: origin.url }, { script: path.join(ROOT, "bench/proxy-js/worker.js"), wasm: false });
  redis = await startRedis();
  upstash = await startLocalUpstash(redis.port);
  const bundle = path.join(ROOT, "build/e2e-peer/worker.js");
  execFileSync(process.env.ESBUILD_BIN ?? path.join(ROOT, "node_modules/.bin/esbuild"), ["bench/peer/worker.js", "--bundle",
    "--format=esm", "--platform=neutral", "--main-fields=module,main", "--conditions=workerd,worker,browser",
    "--log-level=warning", `--outfile=${bundle}`], { cwd: ROOT });
  peer = await startWorker({ ORIGIN_URL: origin.url, CAPACITY: "1000", REFILL_PER_S: "1000", PREFIX: "e2e-peer",
    UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: upstash.token }, { script: bundle, wasm: false });
});
after(async () => {
  await limiter?.stop();
  await proxy?.stop();
  await peer?.stop();
  await upstash?.stop();
  await redis?.stop();
  await origin?.stop();
});

/** The fields an answer carries that say how much is left: each limiter names its own. */
const RATE_FIELDS = /^(ratelimit|ratelimit-policy|x-limiter-backend|x-ratelimit-.*)$/;

/** What the origin saw and what the client got back, for one request through `base`. */
async function through(base, init) {
  const count = origin.seen.length;
  // node:http, not fetch: fetch refuses to send connection-level fields.
  const r = await new Promise((ok, fail) => {
    const q = http.request(`${base}/bench/a?b=1`, { method: init.method ?? "GET", headers: init.headers }, (res) => {
      let text = "";
      res.on("data", (d) => { text += d; });
      res.on("end", () => ok({ status: res.statusCode, headers: res.headers, text }));
    });
    q.on("error", fail);
    q.end(init.body);
  });
  const seen = origin.seen.slice(count);
  assert.equal(seen.length, 1, "one request reaches the origin");
  const { host, "x-forwarded-host": fwdHost, ...atOrigin } = seen[0].headers;
  return { status: r.status, body: JSON.parse(r.text), atOrigin, fwdHost: fwdHost?.split(":")[0], back: Object.keys(r.headers).filter((k) => k !== "date") };
}

/** `b` forwarded as the limiter (`a`) did: the same status, fields and body at the origin;
 * the same fields back, but those `aside` matches (the rate-limit fields the peer names its own). */
function sameForwarding(a, b, aside = /^$/) {
  assert.equal(a.status, 200);
  assert.equal(b.status, a.status);
  assert.deepEqual(b.atOrigin, a.atOrigin, "the origin sees the same fields");
  assert.equal(b.fwdHost, a.fwdHost, "X-Forwarded-Host names the same host");
  assert.equal(b.body.method, a.body.method);
  assert.equal(b.body.url, a.body.url);
  assert.equal(b.body.sha256, a.body.sha256, "the same body");
  const kept = (list) => list.filter((k) => !aside.test(k)).sort();
  assert.deepEqual(kept(b.back), kept(a.back), "the client gets the same fields back");
}

for (const [what, init] of [
  ["a GET with a client address and connection-level fields", { headers: { "CF-Connecting-IP": "10.9.8.7", "Keep-Alive": "timeout=5", TE: "trailers", "Proxy-Authorization": "Basic dGVzdDp0ZXN0", "X-Edge-Limiter-Own-Answer": "1", "X-App": "1" } }],
  ["a POST with a body", { method: "POST", body: "hello", headers: { "CF-Connecting-IP": "10.9.8.6", "Content-Type": "text/plain" } }],
]) {
  test(`bench/proxy-js forwards as the limiter does: ${what}`, async () => {
    sameForwarding(await through(limiter.url, init), await through(proxy.url, init));
  });

  test(`the peer forwards what it admits as the limiter does: ${what}`, async () => {
    const peerAnswer = await through(peer.url, init);
    sameForwarding(await through(limiter.url, init), peerAnswer, RATE_FIELDS);
    assert.ok(peerAnswer.back.includes("x-ratelimit-remaining"), "the peer's own rate-limit fields are there");
  });
}
