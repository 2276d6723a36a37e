// What the benchmark (bench/run.mjs) and the profile (bench/profile.mjs) share, so that the
// profile measures exactly the benchmark's cases.
import { createServer } from "node:http";
import { spawn, execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { sleep, until } from "../tests/e2e/harness.mjs";
import { TICKS, processes } from "../scripts/record.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");

/** The same numbers for both limiters: a token bucket of 10, refilled 1/s. */
export const POLICY = JSON.stringify({
  key_prefix: "bench",
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 10, refill: "1/s" } } } } },
  store: { timeout: "1s" },
});

/** The same, with leases (`lease: "auto"`) and batching (`store.batch`) on. */
export const POLICY_ON = JSON.stringify({
  key_prefix: "bench-on",
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 10, refill: "1/s" } } }, lease: "auto" } },
  store: { timeout: "1s", batch: true },
});

/** A fast local origin on 127.0.0.1: answers every request `200 ok`. */
export async function startOrigin() {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => { res.writeHead(200, { "content-type": "text/plain", "content-length": "2" }); res.end("ok"); });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** CPU seconds (user + system) of the workerd processes that are children of `pid`. */
export function workerdCpu(pid) {
  let total = 0;
  for (const { comm, fields } of processes()) {
    if (Number(fields[1]) === pid && comm.startsWith("workerd")) total += (Number(fields[11]) + Number(fields[12])) / TICKS;
  }
  return total;
}

/** Starts one Worker in workerd through Miniflare, in a process of its own (bench/serve.mjs), and
 * waits for its first served request: its URL, PID, the time to that request, and `stop`. */
export async function startWorker(config) {
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(HERE, "serve.mjs"), JSON.stringify(config)], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  await until(() => /READY (\S+)/.test(out), "the Worker", child, { ms: 60_000, every: 20 });
  const url = /READY (\S+)/.exec(out)[1].replace(/\/$/, "");
  // Time to the first served request, from the process start.
  for (;;) {
    try {
      const r = await fetch(`${url}/bench`, { headers: { "CF-Connecting-IP": "10.254.0.1" } });
      await r.arrayBuffer();
      if (r.status < 500) break; // any answer but an error: the fixed-429 case never says 200
    } catch { /* not yet */ }
    await sleep(5);
  }
  const firstMs = performance.now() - started;
  const stop = () => new Promise((ok) => { child.once("exit", ok); child.kill("SIGTERM"); });
  return { url, pid: child.pid, firstMs, stop };
}

function toMs(text) {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2]];
}

/** wrk against `url` with the bench script `lua` (in bench/): its counts and latencies.
 * Asynchronous, so this process's event loop (which serves the origin) keeps running. */
export async function wrk(url, lua, seconds, connections) {
  const { stdout: out } = await promisify(execFile)("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", path.join(HERE, lua), url], { encoding: "utf8" });
  const num = (re) => Number((re.exec(out) ?? [])[1]);
  // The answers by backend, from the scripts that count them (bench/backends.lua).
  const b = /^BACKENDS lease=(\d+) upstash=(\d+) other=(\d+)/m.exec(out);
  return {
    ...(b ? { backends: { lease: Number(b[1]), upstash: Number(b[2]), other: Number(b[3]) } } : {}),
    requests: num(/(\d+) requests in/),
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: toMs((/^\s+50%\s+(\S+)/m.exec(out) ?? [])[1] ?? ""),
    p99: toMs((/^\s+99%\s+(\S+)/m.exec(out) ?? [])[1] ?? ""),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    errors: /Socket errors: (.*)/.exec(out)?.[1] ?? "",
  };
}
