// The benchmark's JavaScript proxy (bench/proxy-js) stands for "the same forwarding as the
// limiter's, with no limiting": its rows are only fair if it does that work. The same requests
// go through the limiter (memory store, the benchmark's policy) and through the proxy, to the
// same origin: the origin must see the same fields, and the client the same fields back, the
// rate-limit fields' values aside.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import path from "node:path";
import { Miniflare } from "miniflare";
import { ROOT, startWorker, startOrigin, workerOptions } from "./harness.mjs";
import { POLICY } from "../../bench/common.mjs";

let origin, limiter, proxy;
before(async () => {
  origin = await startOrigin();
  limiter = await startWorker({ POLICY, ORIGIN_URL: origin.url });
  const mf = new Miniflare(workerOptions({ script: path.join(ROOT, "bench/proxy-js/worker.js"), wasm: false, bindings: { ORIGIN_URL: origin.url } }));
  proxy = { url: (await mf.ready).toString().replace(/\/$/, ""), stop: () => mf.dispose() };
});
after(async () => {
  await limiter?.stop();
  await proxy?.stop();
  await origin?.stop();
});

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

for (const [what, init] of [
  ["a GET with a client address and connection-level fields", { headers: { "CF-Connecting-IP": "10.9.8.7", "Keep-Alive": "timeout=5", TE: "trailers", "Proxy-Authorization": "Basic dGVzdDp0ZXN0", "X-Edge-Limiter-Own-Answer": "1", "X-App": "1" } }],
  ["a POST with a body", { method: "POST", body: "hello", headers: { "CF-Connecting-IP": "10.9.8.6", "Content-Type": "text/plain" } }],
]) {
  test(`bench/proxy-js forwards as the limiter does: ${what}`, async () => {
    const a = await through(limiter.url, init);
    const b = await through(proxy.url, init);
    assert.equal(a.status, 200);
    assert.equal(b.status, a.status);
    assert.deepEqual(b.atOrigin, a.atOrigin, "the origin sees the same fields");
    assert.equal(b.fwdHost, a.fwdHost, "X-Forwarded-Host names the same host");
    assert.equal(b.body.method, a.body.method);
    assert.equal(b.body.url, a.body.url);
    assert.equal(b.body.sha256, a.body.sha256, "the same body");
    assert.deepEqual(b.back.sort(), a.back.sort(), "the client gets the same fields back");
  });
}
