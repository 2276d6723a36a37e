// Issue 14: a real app no one here wrote. A Gradio app (from PyPI, on its queue, with a
// streaming generator) behind the real Worker under the example policy, driven by the
// official gradio_client and by headless Chromium (Debian's, through playwright-core).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT, startWorker, freePort, freshIp, launchChromium, stopProcess, until } from "./harness.mjs";

const PYTHON = process.env.APPS_PYTHON ?? path.join(ROOT, ".venv-apps/bin/python");
const run = promisify(execFile);
let app, worker, appLog = "";

before(async () => {
  const port = await freePort();
  app = spawn(PYTHON, [path.join(ROOT, "tests/apps/gradio_app.py"), String(port)], {
    env: { ...process.env, GRADIO_ANALYTICS_ENABLED: "False", GRADIO_SERVER_NAME: "127.0.0.1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  app.stdout.on("data", (d) => { appLog += d; });
  app.stderr.on("data", (d) => { appLog += d; });
  await until(() => appLog.includes("Running on local URL"), "the Gradio app (is .venv-apps installed? scripts/test does it)", app,
    { ms: 90_000, every: 200, detail: () => `:\n${appLog}` });
  // No POLICY: the embedded example policy, in front of the app.
  worker = await startWorker({ ORIGIN_URL: `http://127.0.0.1:${port}` });
});
after(async () => {
  await worker?.stop();
  if (app) await stopProcess(app);
});

async function client(ip, calls) {
  const { stdout } = await run(PYTHON, [path.join(ROOT, "tests/apps/gradio_client_check.py"), worker.url, ip, String(calls)], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split("\n").pop());
}

test("gradio_client through the limiter: calls and a streaming generator return the right results", async () => {
  const r = await client(freshIp(), 2);
  assert.equal(r.error, null, r.error);
  assert.deepEqual(r.greet, ["Hello, user 0!", "Hello, user 1!"]);
  assert.deepEqual(r.count, ["step 1", "step 2", "step 3"]);
});

test("past the limit gradio_client gets a clear 429, and a script hammering the API is limited", async () => {
  const ip = freshIp();
  // The example policy's anonymous burst is 10: twenty calls (each a join plus its stream) pass it.
  const r = await client(ip, 20);
  assert.ok(r.greet.length < 20, `all ${r.greet.length} calls passed`);
  assert.match(r.error ?? "", /429/, `what the client said: ${r.error}`);
  console.log(`# gradio_client past the limit, after ${r.greet.length} calls: ${r.error.slice(0, 160)}`);
  // The same API hammered directly: a 429 with the retry time.
  const answers = [];
  const hammer = freshIp();
  let last;
  for (let i = 0; i < 15; i++) {
    last = await fetch(`${worker.url}/gradio_api/queue/join`, {
      method: "POST",
      headers: { "CF-Connecting-IP": hammer, "Content-Type": "application/json" },
      body: JSON.stringify({ data: ["x"], fn_index: 0, session_hash: "hammer" }),
    });
    answers.push(last.status);
    await last.arrayBuffer();
  }
  assert.ok(answers.filter((s) => s === 429).length >= 5, answers.join(" "));
  assert.ok(Number(last.headers.get("retry-after")) >= 1);
});

test("in Chromium the Gradio page loads completely under the example policy, and a click returns its result", async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.setExtraHTTPHeaders({ "CF-Connecting-IP": freshIp() });
    const refused = [];
    let loaded = 0;
    page.on("response", (r) => {
      loaded++;
      if (r.status() >= 400) refused.push(`${r.status()} ${new URL(r.url()).pathname}`);
    });
    await page.goto(`${worker.url}/`, { waitUntil: "networkidle", timeout: 60_000 });
    assert.deepEqual(refused, [], `of ${loaded} responses`);
    assert.ok(loaded > 20, `the page pulled ${loaded} files`);
    await page.fill("#name textarea", "Ada");
    await page.click("#greet");
    await page.waitForFunction(() => document.querySelector("#greeting textarea")?.value === "Hello, Ada!", null, { timeout: 30_000 });
    console.log(`# the Gradio page: ${loaded} responses, none refused; the click answered "Hello, Ada!"`);
  } finally {
    await browser.close();
  }
});
