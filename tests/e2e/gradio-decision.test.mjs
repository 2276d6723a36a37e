// The decision API's Python example (docs/examples/gradio_enforce.py), run as written: a real
// Gradio app from PyPI behind the real Worker, asking the Worker's v1/check before each call
// and refunding what its estimate took too much, driven by the official gradio_client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT, startWorker, freePort, freshIp, stopProcess, until } from "./harness.mjs";

const PYTHON = process.env.APPS_PYTHON ?? path.join(ROOT, ".venv-apps/bin/python");
const SERVICE_TOKEN = "e2e-service-" + randomBytes(16).toString("hex");
const ADMIN_TOKEN = "e2e-admin-" + randomBytes(16).toString("hex");
const run = promisify(execFile);
let app, worker, appLog = "";

before(async () => {
  const port = await freePort();
  // The Worker first, so the app knows where to ask; its origin is the app's port.
  worker = await startWorker({
    POLICY: JSON.stringify({
      tiers: {
        anonymous: { limits: { burst: "100/s" } },
        llm: { limits: { tokens: { token_bucket: { capacity: 1000, refill: "1000/day" } } } },
      },
    }),
    ORIGIN_URL: `http://127.0.0.1:${port}`,
    SERVICE_TOKEN,
    ADMIN_TOKEN,
  });
  app = spawn(PYTHON, [path.join(ROOT, "docs/examples/gradio_enforce.py"), String(port)], {
    env: { ...process.env, GRADIO_ANALYTICS_ENABLED: "False", LIMITER_URL: worker.url, SERVICE_TOKEN },
    stdio: ["ignore", "pipe", "pipe"],
  });
  app.stdout.on("data", (d) => { appLog += d; });
  app.stderr.on("data", (d) => { appLog += d; });
  await until(() => appLog.includes("Running on local URL"), "the example Gradio app (is .venv-apps installed? scripts/test does it)", app,
    { ms: 90_000, every: 200, detail: () => `:\n${appLog}` });
});
after(async () => {
  if (app) await stopProcess(app);
  await worker?.stop();
});

test("the example's enforce(): each call takes its estimate and refunds the rest, so three calls fit a budget two estimates would not, then a clear refusal", async () => {
  const prompt = "x".repeat(50); // estimate 400 tokens, used 250
  const { stdout } = await run(PYTHON, [path.join(ROOT, "tests/apps/gradio_answer_client.py"), worker.url, freshIp(), prompt, "4"], { timeout: 90_000 });
  const calls = JSON.parse(stdout.trim().split("\n").pop());
  console.log(`# ${JSON.stringify(calls).slice(0, 400)}`);
  assert.deepEqual(calls.slice(0, 3).map((c) => c.reply), Array(3).fill(prompt), "1000 tokens: 3 calls of 250 each, their estimates refunded down");
  assert.match(calls[3].error ?? "", /Token budget used up: try again in \d+ s/, "the fourth is refused in the app's own words");
  // Another caller has a budget of its own.
  const other = await run(PYTHON, [path.join(ROOT, "tests/apps/gradio_answer_client.py"), worker.url, freshIp(), prompt, "1"], { timeout: 90_000 });
  assert.equal(JSON.parse(other.stdout.trim().split("\n").pop())[0].reply, prompt);
  const status = await (await fetch(`${worker.url}/__limiter/status.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
  assert.deepEqual(status.service, { on: true, checks: 5, denied: 1, refunds: 4 }, "one check per call, one refund per call that passed");
});
