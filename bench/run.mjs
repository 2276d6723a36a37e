// The benchmark: each case on the same runtime (workerd through Miniflare, one instance per
// case), the same load generator settings (wrk), on 127.0.0.1 only, bounded in time.
// Started by scripts/bench, which builds the Workers, runs the engine's native benchmark into
// build/bench-native.txt and starts redis-server and local-upstash (LU_URL, LU_TOKEN). Prints
// the table and writes the whole results page, docs/results/benchmark.md (with the native
// table), README.md's benchmark figures, build/bench.md and build/bench.json.
import { spawn, execFile } from "node:child_process";
import { promisify } from "node:util";
import { createServer } from "node:http";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { median, parseScriptCalls, sleep, until } from "../tests/e2e/harness.mjs";
import { ROOT, TICKS, date, mdTable, processes, writePage, writeReadmeFigures } from "../scripts/record.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const RUNS = 3;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const { LU_URL, LU_TOKEN } = process.env;
if (!LU_URL || !LU_TOKEN) throw new Error("run through scripts/bench (LU_URL and LU_TOKEN are missing)");

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
/** CPU seconds (user + system) of the workerd processes that are children of `pid`. */
function workerdCpu(pid) {
  let total = 0;
  for (const { comm, fields } of processes()) {
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
  const calls = parseScriptCalls((await r.json()).result);
  return { trips: stats.single + stats.pipeline + stats.multi_exec, scripts: calls.evalsha.calls + calls.eval.calls };
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

// ---- the page ----------------------------------------------------------------------------
const floor = results["1"];
const f = (v, d = 0) => v.toFixed(d);
const x = (v) => `${f(v, 2)}×`;
const rows = CASES.map((c) => {
  const r = results[c.id];
  const peer = c.peer ? results[c.peer] : null;
  const vsPeer = peer ? `${x(r.rps / peer.rps)} / ${x(r.p50 / peer.p50)} / ${x(r.p99 / peer.p99)} / ${x(r.cpuPer1k / peer.cpuPer1k)}` : "";
  return [c.id, c.name, `${f(r.rps)} (${x(r.rps / floor.rps)})`, `${f(r.p50, 2)} (${x(r.p50 / floor.p50)})`, `${f(r.p99, 2)} (${x(r.p99 / floor.p99)})`,
    `${f(r.tripsPerReq, 3)} / ${f(r.scriptsPerReq, 3)}`, `${f(r.cpuPer1k, 3)} (${x(r.cpuPer1k / floor.cpuPer1k)})`, `${f(r.denied * 100, 1)} %`, vsPeer];
});
const table = mdTable(["case", "what", "requests/s (× floor)", "p50 ms (× floor)", "p99 ms (× floor)",
  "store calls per request: HTTP round trips / Redis script calls", "workerd CPU s per 1,000 requests (× floor)", "denied", "× peer: throughput / p50 / p99 / CPU"], rows);
const size = (file) => {
  const bytes = readFileSync(file);
  return `${bytes.length.toLocaleString("en")} B raw, ${gzipSync(bytes, { level: 9 }).length.toLocaleString("en")} B gzip -9 (zlib)`;
};
/** The same ratio in each round, as numbers. */
const roundRatios = (a, b, k) => runs[a].map((r, i) => r[k] / runs[b][i][k]);
const span = (xs) => `${f(Math.min(...xs), 2)} to ${f(Math.max(...xs), 2)}×`;
const ratio = (a, b, k) => results[a][k] / results[b][k];

/** The engine's native benchmark, as `cargo bench --bench decision` printed it (scripts/bench runs it first). */
function native() {
  const file = path.join(ROOT, "build/bench-native.txt");
  if (!existsSync(file)) return null;
  const text = readFileSync(file, "utf8");
  const cases = [...text.matchAll(/^([a-z])\) (.+?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s*$/gm)]
    .map((m) => ({ id: m[1], name: m[2], median: Number(m[3]), min: Number(m[4]), allowed: Number(m[5]) }));
  const ratios = [...text.matchAll(/^(\w\/\w) \((.+?)\)\s+([\d.]+)\s*$/gm)].map((m) => ({ id: m[1], name: m[2], value: Number(m[3]) }));
  if (!cases.length) return null;
  const shared = path.join(ROOT, "build/bench-native-sharing.txt");
  const sharing = existsSync(shared) ? readFileSync(shared, "utf8").trim() : "";
  return { head: text.split("\n")[0].trim(), sharing, cases, ratios, byId: Object.fromEntries(cases.map((c) => [c.id, c])) };
}
const engine = native();

const overrides = ["BENCH_SECONDS", "BENCH_CONNECTIONS"].filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]} `).join("");
const command = `${overrides}bash scripts/bench`;
const settings = `wrk -t1 -c${CONNECTIONS} -d${SECONDS}s --latency, after a 1 s warm-up per case; each case once per round, ${RUNS} interleaved rounds, ` +
  "medians of the rounds; workerd through Miniflare, one instance per case, all started before the first round; both limiters a token bucket of 10, " +
  "refilled 1/s; wrk, workerd, the origin, local-upstash and redis-server all on this machine's cores. What each case is, and why the figures " +
  "are what they are: [../benchmark.md](../benchmark.md).";

const memRounds = roundRatios("2", "1", "rps");
const meets = (ok) => (ok ? "met" : "not met");
const aims = [
  `- Memory store against the bare Rust Worker, throughput (aim: at least 0.90×): ${x(ratio("2", "1", "rps"))} at ${x(ratio("2", "1", "cpuPer1k"))} the CPU; ` +
    `by round ${span(memRounds)}: ${meets(ratio("2", "1", "rps") >= 0.9)} by the median.`,
  `- Store calls per request (aim: 1 when every request is allowed, 0 when one subject is far past its limit): ` +
    `${f(results["3"].tripsPerReq, 3)} and ${f(results["4"].tripsPerReq, 3)} (the peer: ${f(results["3p"].tripsPerReq, 3)} and ${f(results["4p"].tripsPerReq, 3)}).`,
  `- Against the peer (aim: at least its throughput at no more CPU): allowed traffic (3 / 3p) ${x(ratio("3", "3p", "rps"))} the throughput at ${x(ratio("3", "3p", "cpuPer1k"))} the CPU, ` +
    `by round ${span(roundRatios("3", "3p", "rps"))} and ${span(roundRatios("3", "3p", "cpuPer1k"))}; ` +
    `cached denials (4 / 4p) ${x(ratio("4", "4p", "rps"))} at ${x(ratio("4", "4p", "cpuPer1k"))}, by round ${span(roundRatios("4", "4p", "rps"))} and ${span(roundRatios("4", "4p", "cpuPer1k"))}: ` +
    `${ratio("3", "3p", "rps") >= 1 && ratio("4", "4p", "rps") >= 1 ? "met" : "short of it"}.`,
];
const perRoundLines = [
  ["memory store / floor", "2", "1"], ["case 3 / peer (3p)", "3", "3p"], ["case 4 / peer (4p)", "4", "4p"],
  ["Rust floor / JavaScript floor, forwarding (1 / 1j)", "1", "1j"], ["Rust floor / JavaScript floor, fixed 429 (1b / 1jb)", "1b", "1jb"],
].map(([what, a, b]) => `- ${what}: throughput ${perRound(a, b, "rps")}; CPU ${perRound(a, b, "cpuPer1k")}`);
const cpuMs = (id) => results[id].cpuPer1k; // CPU s per 1,000 requests = CPU ms per request
const body = [
  `Settings: ${settings}`,
  "",
  "## The cases (medians of the rounds)",
  "",
  table,
  "",
  "## Against the aims",
  "",
  ...aims,
  "",
  "## Per round",
  "",
  "Each ratio in each round, to show how far the machine's noise moves it (compare ratios within one run, not figures across runs):",
  "",
  ...perRoundLines,
  "",
  "## Where the CPU goes",
  "",
  `- The floors alone, Rust against JavaScript, CPU ms per request: forwarding ${f(cpuMs("1"), 3)} against ${f(cpuMs("1j"), 3)}, a fixed 429 ${f(cpuMs("1b"), 3)} against ${f(cpuMs("1jb"), 3)}.`,
  `- Added by each limiter over the floor of its own language, CPU ms per request: allowed on Upstash, ours ${f(cpuMs("3") - cpuMs("1"), 3)} against the peer's ${f(cpuMs("3p") - cpuMs("1j"), 3)}; ` +
    `a cached denial, ours ${f(cpuMs("4") - cpuMs("1b"), 3)} against ${f(cpuMs("4p") - cpuMs("1jb"), 3)}; the memory store ${f(cpuMs("2") - cpuMs("1"), 3)}.`,
  `- Time from process start to the first served request: bare ${f(results["1"].firstMs)} ms, limiter (memory) ${f(results["2"].firstMs)} ms, ` +
    `limiter (Upstash) ${f(results["3"].firstMs)} ms, peer ${f(results["3p"].firstMs)} ms.`,
  ...(Object.values(results).some((r) => r.errors.length)
    ? ["", "wrk's socket errors: " + Object.values(results).filter((r) => r.errors.length).map((r) => `case ${r.id}: ${r.errors.join("; ")}`).join("; ")]
    : []),
  "",
  "## Sizes",
  "",
  `- Wasm: limiter ${size(path.join(ROOT, "build/index_bg.wasm"))}; bare forwarder ${size(path.join(ROOT, "bench/bare/build/index_bg.wasm"))}.`,
  `- Peer bundle (esbuild): ${size(path.join(ROOT, "build/peer/worker.js"))}.`,
  "",
  "## The engine, natively (`cargo bench --bench decision`)",
  "",
  ...(engine
    ? [`${engine.head}.${engine.sharing ? ` While it ran: ${engine.sharing.replace(/^Other work on the machine during the run: /, "other work took ")}` : ""}`, "",
      mdTable(["case", "median ns per decision", "min ns", "allowed"], engine.cases.map((c) => [`${c.id}) ${c.name}`, f(c.median, 2), f(c.min, 2), `${f(c.allowed, 3)} %`])),
      "", ...engine.ratios.map((r) => `- ${r.id} (${r.name}): ${f(r.value, 2)}`)]
    : ["build/bench-native.txt is missing or unreadable: run `bash scripts/bench`, which runs it first."]),
].join("\n");

mkdirSync(path.join(ROOT, "build"), { recursive: true });
writeFileSync(path.join(ROOT, "build/bench.json"), JSON.stringify({ date: date(), command, results, runs, engine }, null, 1));
const page = { title: "Benchmark: measured", command, body };
writePage("build/bench.md", page);
writePage("docs/results/benchmark.md", page);
const day = date().slice(0, 10);
writeReadmeFigures("bench", [
  `- Side by side with \`@upstash/ratelimit\` on a local Upstash: allowed traffic ${x(ratio("3", "3p", "rps"))} its throughput at ${x(ratio("3", "3p", "cpuPer1k"))} its CPU, ` +
    `cached denials ${x(ratio("4", "4p", "rps"))} at ${x(ratio("4", "4p", "cpuPer1k"))}; the memory store ${x(ratio("2", "1", "rps"))} a bare Worker's throughput ` +
    `(\`${command}\`, ${day}) — [docs/results/benchmark.md](docs/results/benchmark.md)`,
  ...(engine
    ? [`- Engine: ${f(engine.byId.a.median, 1)} ns per decision natively, one token bucket; ${f(engine.byId.b.median, 1)} ns with three limits ` +
      `(\`cargo bench --bench decision\`, in \`${command}\`, ${day}) — [docs/results/benchmark.md](docs/results/benchmark.md#the-engine-natively-cargo-bench---bench-decision)`]
    : []),
]);
console.log(`\n${table}\n\n${aims.join("\n")}\n\nwrote docs/results/benchmark.md, README.md's figures, build/bench.md and build/bench.json`);
