// The runtime's rules that coalesced store calls rely on (src/store/coalesce.rs), checked
// on the real workerd, so a change of the runtime shows here first:
// - a request that waits only on a promise another request will resolve is cancelled as hung;
//   with a timer of its own it waits;
// - a promise one request makes and another resolves wakes the first in its own context: its
//   own subrequest afterwards works;
// - a response (an I/O object) made by one request cannot be read by another.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { Miniflare } from "miniflare";
import { startOrigin, sleep, ROOT } from "./harness.mjs";

let origin, mf, url;
before(async () => {
  origin = await startOrigin();
  mf = new Miniflare({
    scriptPath: path.join(ROOT, "tests/e2e/fixtures/cross-request.js"),
    modules: true,
    compatibilityDate: "2026-04-01",
    bindings: { ORIGIN: origin.url },
    host: "127.0.0.1",
    port: 0,
    handleRuntimeStdio() {},
  });
  url = (await mf.ready).toString().replace(/\/$/, "");
});
after(async () => {
  await mf?.dispose();
  await origin?.stop();
});

async function pair(waiter, waker) {
  const waiting = fetch(url + waiter).then(async (r) => ({ status: r.status, text: await r.text() }));
  await sleep(300);
  const woke = await fetch(url + waker).then(async (r) => ({ status: r.status, text: await r.text() }));
  return { waiting: await waiting, woke };
}

test("waiting on nothing of its own, a request is cancelled as hung", async () => {
  const { waiting, woke } = await pair("/wait", "/wake");
  assert.equal(waiting.status, 500);
  assert.match(waiting.text, /hung/);
  assert.equal(woke.status, 200, "the waker found the promise, but its maker was gone");
});

test("with a timer of its own, a request woken by another runs on in its own context", async () => {
  const { waiting, woke } = await pair("/wait?timer=5000", "/wake");
  assert.equal(woke.status, 200);
  assert.equal(waiting.status, 200);
  assert.match(waiting.text, /^woke with a value; own fetch: /);
});

test("and its timer ends the wait when nobody wakes it", async () => {
  const r = await fetch(url + "/wait?timer=200");
  assert.equal(r.status, 200);
  assert.match(await r.text(), /^woke with own timer/);
});

test("a response made by one request cannot be read by another", async () => {
  const { waiting } = await pair("/wait-for-response?timer=5000", "/hand-over-response");
  assert.equal(waiting.status, 500);
  assert.match(waiting.text, /^refused: Cannot perform I\/O on behalf of a different request/);
});
