// The benchmark: each case on the same runtime (workerd through Miniflare, one instance per
// case), the same load generator settings (wrk), on 127.0.0.1 only, bounded in time.
// Started by scripts/bench, which builds the Workers and starts redis-server and local-upstash
// (LU_URL, LU_TOKEN). Prints a table and writes it to build/bench.md.
import { spawn, execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { createServer } from "node:http";
import { readFileSync, readdirSync, writeFileSync, mkdirSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const RUNS = 3;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const { LU_URL, LU_TOKEN } = process.env;
if (!LU_URL || !LU_TOKEN) throw new Error("run through scripts/bench (LU_URL and LU_TOKEN are missing)");
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// ---- a fast local origin -----------------------------------------------------------------
const origin = createServer((req, res) => {
  req.resume();
  req.on("end", () => { res.writeHead(200, { "content-type": "text/plain", "content-length": "2" }); res.end("ok"); });
});
await new Promise((ok) => origin.listen(0, "127.0.0.1", ok));
const ORIGIN_URL = `http://127.0.0.1:${origin.address().port}`;

// ---- the same numbers for both limiters: a token bucket of 10, refilled 1/s ----------------
const POLICY = JSON.stringify({
  key_prefix: "bench",
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 10, refill: "1/s" } } } } },
  store: { timeout: "1s" },
});
const upstash = { UPSTASH_REDIS_REST_URL: LU_URL, UPSTASH_REDIS_REST_TOKEN: LU_TOKEN };
const WORKERS = {
  bare: { script: path.join(ROOT, "bench/bare/build/index.js"), wasm: true, bindings: { ORIGIN_URL } },
  bare429: { script: path.join(ROOT, "bench/bare/build/index.js"), wasm: true, bindings: { ORIGIN_URL, ANSWER_429: "1" } },
  bareJs: { script: path.join(ROOT, "bench/bare-js/worker.js"), wasm: false, bindings: { ORIGIN_URL } },
  bareJs429: { script: path.join(ROOT, "bench/bare-js/worker.js"), wasm: false, bindings: { ORIGIN_URL, ANSWER_429: "1" } },
  memory: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY } },
  upstash: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY, ...upstash } },
  peer: { script: path.join(ROOT, "build/peer/worker.js"), wasm: false, bindings: { ORIGIN_URL, CAPACITY: "10", REFILL_PER_S: "1", ...upstash } },
};
const CASES = [
  { id: "1", name: "bare Rust Worker, forwards only (the floor)", worker: "bare", lua: "unique.lua" },
  { id: "1b", name: "bare Rust Worker answering a fixed 429, no subrequest", worker: "bare429", lua: "one.lua" },
  { id: "1j", name: "bare JavaScript Worker, forwards only", worker: "bareJs", lua: "unique.lua" },
  { id: "1jb", name: "bare JavaScript Worker answering a fixed 429", worker: "bareJs429", lua: "one.lua" },
  { id: "2", name: "edge-limiter, memory store", worker: "memory", lua: "unique.lua" },
  { id: "3", name: "edge-limiter, local Upstash, a new subject per request (all allowed)", worker: "upstash", lua: "unique.lua", peer: "3p" },
  { id: "4", name: "edge-limiter, local Upstash, one subject far past its limit", worker: "upstash", lua: "one.lua", peer: "4p" },
  { id: "3p", name: "peer: @upstash/ratelimit, a new subject per request", worker: "peer", lua: "unique.lua" },
  { id: "4p", name: "peer: @upstash/ratelimit, one subject far past its limit", worker: "peer", lua: "one.lua" },
];

// ---- measuring -----------------------------------------------------------------------------
const TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

/** CPU seconds (user + system) of the workerd processes that are children of `pid`. */
function workerdCpu(pid) {
  let total = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try { stat = readFileSync(`/proc/${entry}/stat`, "utf8"); } catch { continue; }
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[1]) === pid && comm.startsWith("workerd")) total += (Number(fields[11]) + Number(fields[12])) / TICKS;
  }
  return total;
}

/**
 * Store calls so far: HTTP round trips to the local Upstash (its /__stats, less the INFO
 * this function sends) and script calls as Redis counts them (EVALSHA + EVAL in
 * `INFO commandstats`; commands a script runs inside are not counted).
 */
async function storeCalls() {
  const auth = { authorization: `Bearer ${LU_TOKEN}` };
  const stats = await (await fetch(`${LU_URL}/__stats`, { headers: auth })).json();
  const r = await fetch(LU_URL, { method: "POST", headers: auth, body: '["INFO","commandstats"]' });
  const info = (await r.json()).result;
  const calls = (name) => Number((new RegExp(`^cmdstat_${name}:calls=(\\d+)`, "m").exec(info) ?? [])[1] ?? 0);
  return { trips: stats.single + stats.pipeline + stats.multi_exec, scripts: calls("evalsha") + calls("eval") };
}

function toMs(text) {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2]];
}

// Asynchronous, so this process's event loop (which serves the origin) keeps running.
async function wrk(url, lua, seconds) {
  const { stdout: out } = await promisify(execFile)("wrk", ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--latency", "-s", path.join(HERE, lua), url], { encoding: "utf8" });
  const num = (re) => Number((re.exec(out) ?? [])[1]);
  return {
    requests: num(/(\d+) requests in/),
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: toMs((/^\s+50%\s+(\S+)/m.exec(out) ?? [])[1] ?? ""),
    p99: toMs((/^\s+99%\s+(\S+)/m.exec(out) ?? [])[1] ?? ""),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    errors: /Socket errors: (.*)/.exec(out)?.[1] ?? "",
  };
}

async function startWorker(config) {
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(HERE, "serve.mjs"), JSON.stringify(config)], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  while (!/READY (\S+)/.test(out)) {
    if (child.exitCode !== null) throw new Error("the Worker did not start");
    await sleep(20);
  }
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

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// BENCH_CASES=3,3p runs only those cases (for experiments); the table needs them all.
const only = process.env.BENCH_CASES?.split(",");
// Every case's Worker is started first; then the cases run in interleaved rounds (each round
// runs every case once), so that a slow minute of the machine hits all cases alike and the
// ratios within a round stay fair. Medians are taken over the rounds.
const chosen = CASES.filter((c) => !only || only.includes(c.id));
const workers = {};
for (const c of chosen) {
  workers[c.id] = await startWorker(WORKERS[c.worker]);
  await wrk(workers[c.id].url, c.lua, 1); // warm-up: JIT, connections, the script loaded in Redis
}
const runs = Object.fromEntries(chosen.map((c) => [c.id, []]));
for (let round = 1; round <= RUNS; round++) {
  for (const c of chosen) {
    const w = workers[c.id];
    const [cpu0, calls0] = [workerdCpu(w.pid), await storeCalls()];
    const r = await wrk(w.url, c.lua, SECONDS);
    const [cpu1, calls1] = [workerdCpu(w.pid), await storeCalls()];
    runs[c.id].push({
      ...r,
      cpuPer1k: ((cpu1 - cpu0) / r.requests) * 1000,
      tripsPerReq: (calls1.trips - calls0.trips - 1) / r.requests, // less storeCalls' own INFO
      scriptsPerReq: (calls1.scripts - calls0.scripts) / r.requests,
    });
  }
  console.log(`round ${round} of ${RUNS} done`);
}
for (const w of Object.values(workers)) await w.stop();
const results = {};
for (const c of chosen) {
  const pick = (k) => median(runs[c.id].map((r) => r[k]));
  results[c.id] = {
    ...c, firstMs: workers[c.id].firstMs, rps: pick("rps"), p50: pick("p50"), p99: pick("p99"), cpuPer1k: pick("cpuPer1k"),
    tripsPerReq: pick("tripsPerReq"), scriptsPerReq: pick("scriptsPerReq"), denied: pick("non2xx") / pick("requests"),
    errors: runs[c.id].map((r) => r.errors).filter(Boolean),
  };
  const x = results[c.id];
  console.log(`case ${c.id}: ${x.rps.toFixed(0)} req/s, p50 ${x.p50.toFixed(2)} ms, p99 ${x.p99.toFixed(2)} ms, ` +
    `${x.tripsPerReq.toFixed(3)} store round trips/req, ${x.scriptsPerReq.toFixed(3)} script calls/req, ${x.cpuPer1k.toFixed(3)} CPU s/1000 req, ${(x.denied * 100).toFixed(1)}% denied` +
    (x.errors.length ? `, socket errors: ${x.errors.join("; ")}` : ""));
}
/** The same ratio in each round, to show how far the machine's noise moves it. */
const perRound = (a, b, k) => runs[a].map((r, i) => (r[k] / runs[b][i][k]).toFixed(2)).join(", ");
origin.close();
if (only) process.exit(0);

// ---- the table ----------------------------------------------------------------------------
const floor = results["1"];
const f = (v, d = 0) => v.toFixed(d);
const rows = CASES.map((c) => {
  const x = results[c.id];
  const peer = c.peer ? results[c.peer] : null;
  const vsPeer = peer
    ? `${f(x.rps / peer.rps, 2)}× / ${f(x.p50 / peer.p50, 2)}× / ${f(x.p99 / peer.p99, 2)}× / ${f(x.cpuPer1k / peer.cpuPer1k, 2)}×`
    : "";
  return `| ${c.id} | ${c.name} | ${f(x.rps)} (${f(x.rps / floor.rps, 2)}×) | ${f(x.p50, 2)} (${f(x.p50 / floor.p50, 2)}×) | ${f(x.p99, 2)} (${f(x.p99 / floor.p99, 2)}×) | ${f(x.tripsPerReq, 3)} / ${f(x.scriptsPerReq, 3)} | ${f(x.cpuPer1k, 3)} (${f(x.cpuPer1k / floor.cpuPer1k, 2)}×) | ${f(x.denied * 100, 1)} % | ${vsPeer} |`;
});
const size = (file) => {
  const bytes = readFileSync(file);
  return `${bytes.length.toLocaleString("en")} B raw, ${gzipSync(bytes, { level: 9 }).length.toLocaleString("en")} B gzip -9`;
};
const lines = [
  `Machine: ${execFileSync("nproc").toString().trim()} cores, ${execFileSync("uname", ["-sr"]).toString().trim()}; ` +
    `wrk -t1 -c${CONNECTIONS} -d${SECONDS}s, each case once per round, ${RUNS} interleaved rounds, medians; workerd through Miniflare, one instance per case; ${new Date().toISOString().slice(0, 10)}.`,
  "",
  "| case | what | requests/s (× floor) | p50 ms (× floor) | p99 ms (× floor) | store calls per request: HTTP round trips / Redis script calls | workerd CPU s per 1,000 requests (× floor) | denied | × peer: throughput / p50 / p99 / CPU |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ...rows,
  "",
  `Per round (throughput ratio; CPU ratio): memory store / floor ${perRound("2", "1", "rps")}; ${perRound("2", "1", "cpuPer1k")}. ` +
    `Case 3 / peer ${perRound("3", "3p", "rps")}; ${perRound("3", "3p", "cpuPer1k")}. Case 4 / peer ${perRound("4", "4p", "rps")}; ${perRound("4", "4p", "cpuPer1k")}. ` +
    `Rust floor / JavaScript floor: forwarding ${perRound("1", "1j", "rps")}; ${perRound("1", "1j", "cpuPer1k")}, fixed 429 ${perRound("1b", "1jb", "rps")}; ${perRound("1b", "1jb", "cpuPer1k")}.`,
  `Added by the limiter over the floor of its own language, CPU ms per request: case 3 ${f(results["3"].cpuPer1k - results["1"].cpuPer1k, 3)} ` +
    `against the peer's ${f(results["3p"].cpuPer1k - results["1j"].cpuPer1k, 3)}; case 4 ${f(results["4"].cpuPer1k - results["1b"].cpuPer1k, 3)} against ${f(results["4p"].cpuPer1k - results["1jb"].cpuPer1k, 3)}.`,
  `Time from process start to the first served request: bare ${f(results["1"].firstMs)} ms, limiter (memory) ${f(results["2"].firstMs)} ms, ` +
    `limiter (Upstash) ${f(results["3"].firstMs)} ms, peer ${f(results["3p"].firstMs)} ms.`,
  `Wasm: limiter ${size(path.join(ROOT, "build/index_bg.wasm"))}; bare forwarder ${size(path.join(ROOT, "bench/bare/build/index_bg.wasm"))}. ` +
    `Peer bundle: ${size(path.join(ROOT, "build/peer/worker.js"))}.`,
];
const text = lines.join("\n");
writeFileSync(path.join(ROOT, "build/bench.json"), JSON.stringify(results, null, 1));
console.log("\n" + text);
mkdirSync(path.join(ROOT, "build"), { recursive: true });
writeFileSync(path.join(ROOT, "build/bench.md"), text + "\n");
