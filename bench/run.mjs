// The benchmark: each case on the same runtime (workerd through Miniflare, one instance per
// case), the same load generator settings (wrk), on 127.0.0.1 only, bounded in time.
// Started by scripts/bench, which builds the Workers, runs the engine's native benchmark into
// build/bench-native.txt and starts redis-server and local-upstash (LU_URL, LU_TOKEN). Prints
// the table and writes the whole results page, docs/results/benchmark.md (with the native
// table and the store-calls section), README.md's benchmark figures, build/bench.md and
// build/bench.json.
import { POLICY, POLICY_ON, startOrigin, startWorker, workerdCpu, wrk as wrkAt } from "./common.mjs";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import path from "node:path";
import { median, parseScriptCalls, sleep } from "../tests/e2e/harness.mjs";
import { ROOT, date, mdTable, writePage, writeReadmeFigures } from "../scripts/record.mjs";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
// Interleaved rounds: five by default, since on these machines one round's ratio moves by tens
// of percent and a median of three still flipped the aims' verdicts from run to run.
const RUNS = Number(process.env.BENCH_ROUNDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const wrk = (url, lua, seconds, connections = CONNECTIONS) => wrkAt(url, lua, seconds, connections);
const { LU_URL, LU_TOKEN } = process.env;
if (!LU_URL || !LU_TOKEN) throw new Error("run through scripts/bench (LU_URL and LU_TOKEN are missing)");

// ---- a fast local origin -----------------------------------------------------------------
const origin = await startOrigin();
const ORIGIN_URL = origin.url;

// ---- the same numbers for both limiters: a token bucket of 10, refilled 1/s ----------------
const upstash = { UPSTASH_REDIS_REST_URL: LU_URL, UPSTASH_REDIS_REST_TOKEN: LU_TOKEN };
const WORKERS = {
  bare: { script: path.join(ROOT, "bench/bare/build/index.js"), wasm: true, bindings: { ORIGIN_URL } },
  bare429: { script: path.join(ROOT, "bench/bare/build/index.js"), wasm: true, bindings: { ORIGIN_URL, ANSWER_429: "1" } },
  bareRaw: { script: path.join(ROOT, "bench/bare-raw/build/index.js"), wasm: true, bindings: { ORIGIN_URL } },
  bareRaw429: { script: path.join(ROOT, "bench/bare-raw/build/index.js"), wasm: true, bindings: { ORIGIN_URL, ANSWER_429: "1" } },
  bareJs: { script: path.join(ROOT, "bench/bare-js/worker.js"), wasm: false, bindings: { ORIGIN_URL } },
  bareJs429: { script: path.join(ROOT, "bench/bare-js/worker.js"), wasm: false, bindings: { ORIGIN_URL, ANSWER_429: "1" } },
  proxyJs: { script: path.join(ROOT, "bench/proxy-js/worker.js"), wasm: false, bindings: { ORIGIN_URL } },
  memory: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY } },
  upstash: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY, ...upstash } },
  upstashOn: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY: POLICY_ON, ...upstash } },
  peer: { script: path.join(ROOT, "build/peer/worker.js"), wasm: false, bindings: { ORIGIN_URL, CAPACITY: "10", REFILL_PER_S: "1", ...upstash } },
};
const CASES = [
  { id: "1", name: "bare Rust Worker, forwards only (the floor)", worker: "bare", lua: "unique.lua" },
  { id: "1b", name: "bare Rust Worker answering a fixed 429, no subrequest", worker: "bare429", lua: "one.lua" },
  { id: "1r", name: "bare Rust Worker entered as the limiter is, one wasm call, JavaScript's fetch", worker: "bareRaw", lua: "unique.lua" },
  { id: "1rb", name: "bare Rust Worker entered as the limiter is, answering a fixed 429", worker: "bareRaw429", lua: "one.lua" },
  { id: "1j", name: "bare JavaScript Worker, forwards only", worker: "bareJs", lua: "unique.lua" },
  { id: "1jb", name: "bare JavaScript Worker answering a fixed 429", worker: "bareJs429", lua: "one.lua" },
  { id: "1x", name: "JavaScript Worker forwarding as the limiter does (its fields dropped and added), no limiting", worker: "proxyJs", lua: "unique.lua" },
  { id: "2", name: "edge-limiter, memory store", worker: "memory", lua: "unique.lua" },
  { id: "3", name: "edge-limiter, local Upstash, a new subject per request (all allowed)", worker: "upstash", lua: "unique.lua", peer: "3p" },
  { id: "4", name: "edge-limiter, local Upstash, one subject far past its limit", worker: "upstash", lua: "one.lua", peer: "4p" },
  { id: "3on", name: "edge-limiter as 3, with leases and batching on", worker: "upstashOn", lua: "unique.lua", peer: "3p" },
  { id: "4on", name: "edge-limiter as 4, with leases and batching on", worker: "upstashOn", lua: "one.lua", peer: "4p" },
  { id: "3p", name: "peer: @upstash/ratelimit, a new subject per request", worker: "peer", lua: "unique.lua" },
  { id: "4p", name: "peer: @upstash/ratelimit, one subject far past its limit", worker: "peer", lua: "one.lua" },
];

// ---- measuring -----------------------------------------------------------------------------
/**
 * Store calls so far: HTTP round trips to the local Upstash (its /__stats, less the INFO
 * this function sends) and script calls as Redis counts them (EVALSHA + EVAL in
 * `INFO commandstats`; Redis 7 counts the commands a script runs inside too, under their own
 * names, which these leave out).
 */
async function storeCalls() {
  const auth = { authorization: `Bearer ${LU_TOKEN}` };
  const stats = await (await fetch(`${LU_URL}/__stats`, { headers: auth })).json();
  const r = await fetch(LU_URL, { method: "POST", headers: auth, body: '["INFO","commandstats"]' });
  const calls = parseScriptCalls((await r.json()).result);
  return { trips: stats.single + stats.pipeline + stats.multi_exec, scripts: calls.evalsha.calls + calls.eval.calls };
}



// BENCH_ALT=<dir> (for experiments) adds cases 2alt, 3alt and 4alt: cases 2, 3 and 4 with the
// limiter built in <dir> (its index.js and index_bg.wasm, say a copy of build/ from another
// commit), in the same interleaved rounds, so that two builds are compared side by side.
// <dir> must be inside the repository (target/build-base, say): miniflare refuses a script
// path that leads out of it.
if (process.env.BENCH_ALT) {
  const script = path.join(path.resolve(process.env.BENCH_ALT), "index.js");
  WORKERS.memoryAlt = { ...WORKERS.memory, script };
  WORKERS.upstashAlt = { ...WORKERS.upstash, script };
  CASES.push(
    { id: "2alt", name: `as 2, the build in ${process.env.BENCH_ALT}`, worker: "memoryAlt", lua: "unique.lua" },
    { id: "3alt", name: `as 3, the build in ${process.env.BENCH_ALT}`, worker: "upstashAlt", lua: "unique.lua", peer: "3p" },
    { id: "4alt", name: `as 4, the build in ${process.env.BENCH_ALT}`, worker: "upstashAlt", lua: "one.lua", peer: "4p" },
  );
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
for (let round = 1; round <= RUNS && chosen.length; round++) {
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
    `; by round ${runs[c.id].map((r) => `${r.rps.toFixed(0)} req/s at ${r.cpuPer1k.toFixed(3)}`).join(", ")}` +
    (x.errors.length ? `, socket errors: ${x.errors.join("; ")}` : ""));
}
/** The same ratio in each round, to show how far the machine's noise moves it. */
const perRound = (a, b, k) => runs[a].map((r, i) => (r[k] / runs[b][i][k]).toFixed(2)).join(", ");

// ---- store calls: what allowed traffic costs in Upstash calls, leases and batching against the peer
// Every subject on a budget it never reaches during the run (a token bucket of 1e9, refilled
// 1e6/s, for both limiters), so that every request is allowed: the point is the calls made for
// allowed traffic. Three rows per scenario, each its own Worker: the limiter as it ships (leases
// and batching off), the limiter with `lease: "auto"` and `store.batch: true`, and the peer.
// After each wrk run the counts wait SETTLE_MS, so that a lease's hand-back (made when the
// lease ends, at most 1 s after it was granted) counts in the run that caused it.
// BENCH_CASES=calls runs only this section (for experiments).
const CALL_SECONDS = Number(process.env.BENCH_CALL_SECONDS ?? 3);
const SETTLE_MS = 1500;
const MONTH = 1000 * 86400 * 30; // requests in a 30-day month at 1,000 requests/s
const PRICE = { usd: 0.2, commands: 100_000 }; // Upstash Redis pay-as-you-go, per command
const BIG = { token_bucket: { capacity: 1_000_000_000, refill: "1000000/s" } };
const callsPolicy = (prefix, on, fleet = true) => JSON.stringify({
  key_prefix: prefix,
  tiers: { anonymous: { limits: { burst: BIG }, ...(on ? { lease: "auto" } : {}) } },
  store: { timeout: "1s", ...(on ? { batch: true } : {}), ...(fleet ? {} : { fleet: false }) },
});
const CALL_ROWS = [
  { id: "off", name: "edge-limiter, leases and batching off (the defaults)",
    worker: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY: callsPolicy("calls-off", false), ...upstash } } },
  { id: "nofleet", name: "edge-limiter, the defaults with the fleet view off (`store.fleet: false`)",
    worker: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY: callsPolicy("calls-nofleet", false, false), ...upstash } } },
  { id: "on", name: "edge-limiter, `lease: \"auto\"` and `store.batch: true`",
    worker: { script: path.join(ROOT, "build/index.js"), wasm: true, bindings: { ORIGIN_URL, POLICY: callsPolicy("calls-on", true), ...upstash } } },
  { id: "peer", name: "peer: `@upstash/ratelimit`, ephemeral cache on",
    worker: { script: path.join(ROOT, "build/peer/worker.js"), wasm: false, bindings: { ORIGIN_URL, CAPACITY: "1000000000", REFILL_PER_S: "1000000", PREFIX: "peer-calls", ...upstash } } },
];
const SCENARIOS = [
  { id: "hot", name: `one hot subject, ${CONNECTIONS} connections`, lua: "hot.lua", connections: CONNECTIONS },
  { id: "many8", name: "a new subject per request, 8 connections", lua: "many.lua", connections: 8 },
  { id: "many64", name: "a new subject per request, 64 connections", lua: "many.lua", connections: 64 },
  { id: "mix", name: `90/10 mix (1,000 subjects, 90 % of requests from 100 of them), ${CONNECTIONS} connections`, lua: "mix.lua", connections: CONNECTIONS },
];
/** Commands a client sends; neither limiter sends any other, so the rest ran inside scripts. */
const SENT = /^(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro|script(\|.*)?)$/;
const SCRIPT_CALLS = /^(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)$/;

/** HTTP round trips to local-upstash so far and every command Redis has counted, by name. */
async function redisCounts() {
  const auth = { authorization: `Bearer ${LU_TOKEN}` };
  const stats = await (await fetch(`${LU_URL}/__stats`, { headers: auth })).json();
  const r = await fetch(LU_URL, { method: "POST", headers: auth, body: '["INFO","commandstats"]' });
  const commands = {};
  for (const m of (await r.json()).result.matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)) commands[m[1]] = Number(m[2]);
  return { trips: stats.single + stats.pipeline + stats.multi_exec, commands };
}
/** What a run cost, per 1,000 requests: the counts' difference less what redisCounts sent itself. */
function callsPer1k(before, after, requests) {
  const per1k = (n) => (n / requests) * 1000;
  const byCommand = {};
  for (const [name, n] of Object.entries(after.commands)) {
    const d = n - (before.commands[name] ?? 0) - (name === "info" ? 1 : 0); // the first INFO is counted by the second
    if (d > 0) byCommand[name] = per1k(d);
  }
  const sum = (re) => Object.entries(byCommand).filter(([k]) => re.test(k)).reduce((a, [, v]) => a + v, 0);
  return {
    byCommand, commands: sum(/./), sent: sum(SENT), scripts: sum(SCRIPT_CALLS),
    trips: per1k(after.trips - before.trips - 1), // less the first INFO
  };
}

const callRuns = {};
const runCalls = !only || only.includes("calls");
if (runCalls) {
  const callWorkers = {};
  for (const row of CALL_ROWS) {
    callWorkers[row.id] = await startWorker(row.worker);
    await wrk(callWorkers[row.id].url, "many.lua", 1); // warm-up: JIT, connections, the script loaded in Redis
  }
  await sleep(SETTLE_MS);
  for (const sc of SCENARIOS) for (const row of CALL_ROWS) callRuns[`${sc.id}/${row.id}`] = [];
  // Interleaved like the cases: each round runs every scenario's every row once.
  for (let round = 1; round <= RUNS; round++) {
    for (const sc of SCENARIOS) {
      for (const row of CALL_ROWS) {
        const before = await redisCounts();
        const r = await wrk(callWorkers[row.id].url, sc.lua, CALL_SECONDS, sc.connections);
        await sleep(SETTLE_MS);
        const after = await redisCounts();
        const lease = r.backends ? r.backends.lease / (r.backends.lease + r.backends.upstash + r.backends.other) : NaN;
        callRuns[`${sc.id}/${row.id}`].push({ ...r, ...callsPer1k(before, after, r.requests), lease });
      }
    }
    console.log(`store calls: round ${round} of ${RUNS} done`);
  }
  for (const w of Object.values(callWorkers)) await w.stop();
}
/** A row's medians over the rounds, and which commands appeared in any round (median per 1,000 requests). */
const callResults = {};
for (const [key, list] of Object.entries(callRuns)) {
  const pick = (k) => median(list.map((r) => r[k]));
  const names = [...new Set(list.flatMap((r) => Object.keys(r.byCommand)))].sort();
  callResults[key] = {
    commands: pick("commands"), sent: pick("sent"), scripts: pick("scripts"), trips: pick("trips"), rps: pick("rps"),
    p50: pick("p50"), p99: pick("p99"),
    lease: pick("lease"), denied: median(list.map((r) => r.non2xx / r.requests)),
    other: list.reduce((a, r) => a + (r.backends?.other ?? 0), 0),
    byCommand: Object.fromEntries(names.map((n) => [n, median(list.map((r) => r.byCommand[n] ?? 0))])),
    errors: list.map((r) => r.errors).filter(Boolean),
  };
  const c = callResults[key];
  console.log(`${key}: ${c.commands.toFixed(1)} Redis commands (${c.sent.toFixed(1)} sent, ${c.scripts.toFixed(1)} script calls), ` +
    `${c.trips.toFixed(1)} HTTP round trips per 1,000 requests, ${c.rps.toFixed(0)} req/s, p50 ${c.p50.toFixed(2)} / p99 ${c.p99.toFixed(2)} ms, ${(c.lease * 100).toFixed(1)} % from a lease, ` +
    `${(c.denied * 100).toFixed(2)} % denied; ${names.join(", ")}` + (c.errors.length ? `; socket errors: ${c.errors.join("; ")}` : ""));
}
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

const overrides = ["BENCH_SECONDS", "BENCH_CONNECTIONS", "BENCH_CALL_SECONDS", "BENCH_ROUNDS"].filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]} `).join("");
const command = `${overrides}bash scripts/bench`;
const settings = `wrk -t1 -c${CONNECTIONS} -d${SECONDS}s --latency, after a 1 s warm-up per case; each case once per round, ${RUNS} interleaved rounds, ` +
  "medians of the rounds; workerd through Miniflare, one instance per case, all started before the first round; both limiters a token bucket of 10, " +
  "refilled 1/s; wrk, workerd, the origin, local-upstash and redis-server all on this machine's cores. What each case is, and why the figures " +
  "are what they are: [../benchmark.md](../benchmark.md).";

const memRounds = roundRatios("2", "1", "rps");
const meets = (ok) => (ok ? "met" : "not met");
const aims = [
  `- Memory store against the JavaScript forwarding floor, throughput (aim: at least 0.95×): ${x(ratio("2", "1j", "rps"))} at ${x(ratio("2", "1j", "cpuPer1k"))} the CPU, ` +
    `by round ${span(roundRatios("2", "1j", "rps"))}: ${meets(ratio("2", "1j", "rps") >= 0.95)}; against the bare Rust Worker (the floor of any Rust Worker built with ` +
    `the \`worker\` crate) ${x(ratio("2", "1", "rps"))} at ${x(ratio("2", "1", "cpuPer1k"))} the CPU, by round ${span(memRounds)}. ` +
    `The same forwarding in JavaScript with no limiting (1x) is ${x(ratio("1x", "1j", "rps"))} the floor's throughput at ${x(ratio("1x", "1j", "cpuPer1k"))} its CPU; ` +
    `the memory store is ${x(ratio("2", "1x", "rps"))} that proxy's throughput at ${x(ratio("2", "1x", "cpuPer1k"))} its CPU.`,
  `- Store calls per request (aim: 1 when every request is allowed, 0 when one subject is far past its limit): ` +
    `${f(results["3"].tripsPerReq, 3)} and ${f(results["4"].tripsPerReq, 3)} (the peer: ${f(results["3p"].tripsPerReq, 3)} and ${f(results["4p"].tripsPerReq, 3)}).`,
  `- Against the peer, allowed traffic with leases and batching off (3 / 3p; aim: at least 1.0× its throughput at no more than 1.0× its CPU): ` +
    `${x(ratio("3", "3p", "rps"))} the throughput at ${x(ratio("3", "3p", "cpuPer1k"))} the CPU, by round ${span(roundRatios("3", "3p", "rps"))} and ` +
    `${span(roundRatios("3", "3p", "cpuPer1k"))}: ${meets(ratio("3", "3p", "rps") >= 1 && ratio("3", "3p", "cpuPer1k") <= 1)}.`,
  `- Against the peer, cached denials (4 / 4p; aim: no more than its CPU): ${x(ratio("4", "4p", "cpuPer1k"))} its CPU at ${x(ratio("4", "4p", "rps"))} its throughput, ` +
    `by round ${span(roundRatios("4", "4p", "cpuPer1k"))} and ${span(roundRatios("4", "4p", "rps"))}: ${meets(ratio("4", "4p", "cpuPer1k") <= 1)}.`,
  `- With leases and batching on (3on / 3p, 4on / 4p): allowed ${x(ratio("3on", "3p", "rps"))} the throughput at ${x(ratio("3on", "3p", "cpuPer1k"))} the CPU; ` +
    `cached denials ${x(ratio("4on", "4p", "rps"))} at ${x(ratio("4on", "4p", "cpuPer1k"))}.`,
];
const perRoundLines = [
  ["memory store / JavaScript floor (2 / 1j)", "2", "1j"], ["memory store / Rust floor (2 / 1)", "2", "1"],
  ["JavaScript proxy / JavaScript floor (1x / 1j)", "1x", "1j"], ["memory store / JavaScript proxy (2 / 1x)", "2", "1x"],
  ["case 3 / peer (3p)", "3", "3p"], ["case 4 / peer (4p)", "4", "4p"], ["case 3on / peer (3p)", "3on", "3p"], ["case 4on / peer (4p)", "4on", "4p"],
  ["Rust floor / JavaScript floor, forwarding (1 / 1j)", "1", "1j"], ["Rust floor / JavaScript floor, fixed 429 (1b / 1jb)", "1b", "1jb"],
  ["raw wasm floor / JavaScript floor, forwarding (1r / 1j)", "1r", "1j"], ["raw wasm floor / JavaScript floor, fixed 429 (1rb / 1jb)", "1rb", "1jb"],
].map(([what, a, b]) => `- ${what}: throughput ${perRound(a, b, "rps")}; CPU ${perRound(a, b, "cpuPer1k")}`);
const cpuMs = (id) => results[id].cpuPer1k; // CPU s per 1,000 requests = CPU ms per request

// The store-calls section.
const call = (sc, row) => callResults[`${sc}/${row}`];
const n1 = (v) => v.toLocaleString("en", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
/** Dollars a month at 1,000 requests/s for `per1k` billed commands per 1,000 requests. */
const monthly = (per1k) => (per1k / 1000) * MONTH * (PRICE.usd / PRICE.commands);
const usd = (v) => `$${v.toLocaleString("en", { maximumFractionDigits: v < 100 ? 2 : 0 })}`;
/** Dollars per million requests for `per1k` billed commands per 1,000 requests. */
const perMillion = (per1k) => per1k * 1000 * (PRICE.usd / PRICE.commands);
/** A command's name as Redis documents it: a subcommand as "SCRIPT LOAD", never a "|" that would split a table cell. */
const cmdName = (k) => k.toUpperCase().replace("|", " ");
const inScripts = [...new Set(Object.values(callResults).flatMap((c) => Object.keys(c.byCommand)))].filter((k) => !SENT.test(k) && k !== "info").sort();
const callRows = SCENARIOS.flatMap((sc) => CALL_ROWS.map((row) => {
  const c = call(sc.id, row.id);
  const which = Object.entries(c.byCommand).map(([k, v]) => `${cmdName(k)} ${n1(v)}`).join(", ");
  return [sc.name, row.name, `${n1(c.sent)} / ${n1(c.commands)}`, which, n1(c.scripts), n1(c.trips), f(c.rps),
    `${f(c.p50, 2)} / ${f(c.p99, 2)}`, row.id === "peer" ? "" : `${f(c.lease * 100, 1)} %`, `${f(c.denied * 100, 2)} %`,
    `$${perMillion(c.sent).toFixed(3)} / $${perMillion(c.commands).toFixed(3)}`, `${usd(monthly(c.sent))} / ${usd(monthly(c.commands))}`];
}));
/** The issue's aims for these rows, judged from this run. */
const callAims = (() => {
  if (!runCalls) return [];
  const scripts = (sc) => call(sc, "on").scripts / 1000;
  const hot = SCENARIOS.find((sc) => sc.id.startsWith("hot")), wide = SCENARIOS.find((sc) => sc.connections === 64);
  const lat = SCENARIOS.map((sc) => {
    const [off, on] = ["off", "on"].map((row) => call(sc.id, row));
    return `${sc.name} ${x(on.p50 / off.p50)} / ${x(on.p99 / off.p99)}`;
  });
  const worse = SCENARIOS.filter((sc) => call(sc.id, "on").p50 > call(sc.id, "off").p50 || call(sc.id, "on").p99 > call(sc.id, "off").p99);
  return [
    `- Aim, one hot subject at most 0.1 script calls per allowed request with leases and batching: ${f(scripts(hot.id), 3)}, ${scripts(hot.id) <= 0.1 ? "met" : "not met"}.`,
    `- Aim, many subjects at 64 connections at most 0.5: ${f(scripts(wide.id), 3)}, ${scripts(wide.id) <= 0.5 ? "met" : "not met"}.`,
    `- Aim, latency no worse than with them off, same run (p50 / p99, on ÷ off): ${lat.join("; ")}: ` +
      (worse.length ? `worse in ${worse.map((sc) => sc.name).join(", ")}.` : "met."),
  ];
})();
const fallbacks = SCENARIOS.flatMap((sc) => ["off", "on"].map((row) => [sc, row, call(sc.id, row).other])).filter(([, , n]) => n > 0);
const callLines = SCENARIOS.map((sc) => {
  const [off, on, peer] = ["off", "on", "peer"].map((row) => call(sc.id, row));
  return `- ${sc.name}: with leases and batching ${x(on.sent / off.sent)} the commands sent of the defaults and ${x(on.sent / peer.sent)} the peer's; ` +
    `${x(on.trips / off.trips)} and ${x(on.trips / peer.trips)} the HTTP round trips; ${x(on.rps / off.rps)} and ${x(on.rps / peer.rps)} the throughput.`;
});
// What the fleet view (on by default) adds: the defaults less the same with it off.
const fleetLines = SCENARIOS.map((sc) => {
  const [off, nofleet] = ["off", "nofleet"].map((row) => call(sc.id, row));
  return `- ${sc.name}: ${n1(off.commands - nofleet.commands)} Redis commands per 1,000 requests ` +
    `(${n1(off.commands)} with it, ${n1(nofleet.commands)} without; ${n1(off.scripts - nofleet.scripts)} script calls).`;
});
const callsSection = !runCalls ? [] : [
  "## Store calls for allowed traffic: leases, batching and the peer",
  "",
  `What each request costs in Upstash calls when it is allowed. Every subject has a budget it never reaches in the run (a token bucket of 1e9, refilled ` +
    `1e6/s, the same for both limiters), so every request is allowed (the "denied" column checks it). For each scenario three Workers, each its own ` +
    `workerd: edge-limiter as it ships (leases and batching off), edge-limiter with \`"lease": "auto"\` and \`"store": {"batch": true}\`, and the peer ` +
    `(\`@upstash/ratelimit\`, the same bucket, its ephemeral cache on). Scenarios: one hot subject (\`bench/hot.lua\`); a new subject per request at ` +
    `8 and at 64 connections (\`bench/many.lua\`); a 90/10 mix, 1,000 subjects of which 100 send 90 % of the requests (\`bench/mix.lua\`). ` +
    `wrk -t1 -d${CALL_SECONDS}s per run after a 1 s warm-up per Worker; each row once per round, ${RUNS} interleaved rounds, medians of the rounds; ` +
    `each count is read ${SETTLE_MS / 1000} s after its run ends, so that a lease's hand-back (when the lease ends) counts in the run that caused it.`,
  "",
  `- **Redis commands**: the difference in Redis's \`INFO commandstats\` over the run, every command it lists (less the benchmark's own \`INFO\`). ` +
    `"Sent" counts what a client sends (EVALSHA, EVAL, SCRIPT): neither limiter sends any other command, so every other name is a command a script ran inside. ` +
    (inScripts.length
      ? `Redis 7 counts those too: here ${inScripts.map(cmdName).join(", ")}, in the "in all" figure.`
      : "None appeared: Redis did not count the commands the scripts ran inside.") +
    " Script calls are EVALSHA + EVAL (an EVAL is the reload after NOSCRIPT).",
  "- **HTTP round trips**: requests served by local-upstash (its `/__stats`: single commands, pipelines and transactions), less the benchmark's own. " +
    "The peer's `@upstash/redis` 1.39 has auto-pipelining on by default (concurrent commands of one isolate may go in one `/pipeline` request); " +
    (SCENARIOS.some((sc) => call(sc.id, "peer").trips < 0.98 * call(sc.id, "peer").sent)
      ? "here its round trips came out fewer than its commands sent."
      : "here each of its commands went in a request of its own (its round trips equal its commands sent)."),
  `- **Per 1,000 requests**: per 1,000 requests wrk saw answered. The requests still in flight when wrk stops (at most one per connection) made ` +
    "their calls but are not counted, so a row that makes one call per request comes out a little above 1,000, the more so at 64 connections.",
  "- **From a lease**: the answers with `X-Limiter-Backend: lease`, counted in wrk's `response` callback (`bench/backends.lua`).",
  `- **Money**: Upstash Redis pay-as-you-go at $${PRICE.usd.toFixed(2)} per ${PRICE.commands.toLocaleString("en")} commands (Upstash's documentation, ` +
    `"Pricing & Billing", upstash.com/docs/redis/overall/billing, which defers to upstash.com/pricing/redis), for a 30-day month at 1,000 requests/s ` +
    `(${(MONTH / 1e9).toFixed(3)} billion requests), the free tier's 500K commands left out. The first figure bills every command sent, a script call ` +
    "as one command; that is our assumption, the page does not say how a script is billed. The second bills every command Redis counted, " +
    "those run inside scripts too. Storage and bandwidth are left out.",
  "",
  mdTable(["scenario", "Worker", "Redis commands per 1,000 requests: sent / in all", "the commands, per 1,000 requests", "script calls per 1,000",
    "HTTP round trips per 1,000", "requests/s", "p50 / p99 ms", "answered from a lease", "denied", "per million requests: per command sent / per command counted",
    "a month at 1,000 requests/s: per command sent / per command counted"], callRows),
  "",
  ...callAims,
  "",
  ...callLines,
  "",
  "The fleet view (issue 19) flushes each isolate's tallies at most every 5 s, in one script call; what it adds to the defaults, same run:",
  "",
  ...fleetLines,
  ...(fallbacks.length
    ? ["", "Answers that came neither from Upstash nor a lease (the store's fallback), over all rounds: " +
      fallbacks.map(([sc, row, n]) => `${sc.name}, ${row}: ${n}`).join("; ") + "."]
    : []),
  ...(Object.values(callResults).some((c) => c.errors.length)
    ? ["", "wrk's socket errors: " + Object.entries(callResults).filter(([, c]) => c.errors.length).map(([k, c]) => `${k}: ${c.errors.join("; ")}`).join("; ")]
    : []),
  "",
];

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
  `- The floors alone, Rust against JavaScript, CPU ms per request: forwarding ${f(cpuMs("1"), 3)} against ${f(cpuMs("1j"), 3)}, a fixed 429 ${f(cpuMs("1b"), 3)} against ${f(cpuMs("1jb"), 3)}; ` +
    `entered as the limiter is (bench/bare-raw: one wasm call, JavaScript's fetch), forwarding ${f(cpuMs("1r"), 3)}, a fixed 429 ${f(cpuMs("1rb"), 3)}.`,
  `- Added by each limiter over a floor entered the way it is (ours bench/bare-raw, 1r and 1rb; the peer's bench/bare-js, 1j and 1jb), CPU ms per request: ` +
    `allowed on Upstash, ours ${f(cpuMs("3") - cpuMs("1r"), 3)} against the peer's ${f(cpuMs("3p") - cpuMs("1j"), 3)}; ` +
    `a cached denial, ours ${f(cpuMs("4") - cpuMs("1rb"), 3)} against ${f(cpuMs("4p") - cpuMs("1jb"), 3)}; the memory store ${f(cpuMs("2") - cpuMs("1r"), 3)}.`,
  `- Time from process start to the first served request: bare ${f(results["1"].firstMs)} ms, limiter (memory) ${f(results["2"].firstMs)} ms, ` +
    `limiter (Upstash) ${f(results["3"].firstMs)} ms, peer ${f(results["3p"].firstMs)} ms.`,
  ...(Object.values(results).some((r) => r.errors.length)
    ? ["", "wrk's socket errors: " + Object.values(results).filter((r) => r.errors.length).map((r) => `case ${r.id}: ${r.errors.join("; ")}`).join("; ")]
    : []),
  "",
  ...callsSection,
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
writeFileSync(path.join(ROOT, "build/bench.json"), JSON.stringify({ date: date(), command, results, runs, calls: { results: callResults, runs: callRuns }, engine }, null, 1));
const page = { title: "Benchmark: measured", command, body };
writePage("build/bench.md", page);
writePage("docs/results/benchmark.md", page);
const day = date().slice(0, 10);
writeReadmeFigures("bench", [
  `- Side by side with \`@upstash/ratelimit\` on a local Upstash: allowed traffic ${x(ratio("3", "3p", "rps"))} its throughput at ${x(ratio("3", "3p", "cpuPer1k"))} its CPU, ` +
    `cached denials ${x(ratio("4", "4p", "rps"))} at ${x(ratio("4", "4p", "cpuPer1k"))}; the memory store ${x(ratio("2", "1j", "rps"))} a bare JavaScript Worker's throughput ` +
    `(\`${command}\`, ${day}) — [docs/results/benchmark.md](docs/results/benchmark.md)`,
  ...(runCalls
    ? [`- Store calls for allowed traffic, Redis commands sent per 1,000 requests, with leases and batching against \`@upstash/ratelimit\`: ` +
      `one hot subject ${n1(call("hot", "on").sent)} against ${n1(call("hot", "peer").sent)} (${usd(monthly(call("hot", "on").sent))} against ` +
      `${usd(monthly(call("hot", "peer").sent))} a month at 1,000 requests/s on Upstash pay-as-you-go, $0.20 per 100K commands); a 90/10 mix of ` +
      `1,000 subjects ${n1(call("mix", "on").sent)} against ${n1(call("mix", "peer").sent)} (${usd(monthly(call("mix", "on").sent))} against ` +
      `${usd(monthly(call("mix", "peer").sent))}) (\`${command}\`, ${day}) — ` +
      "[docs/results/benchmark.md](docs/results/benchmark.md#store-calls-for-allowed-traffic-leases-batching-and-the-peer)"]
    : []),
  ...(engine
    ? [`- Engine: ${f(engine.byId.a.median, 1)} ns per decision natively, one token bucket; ${f(engine.byId.b.median, 1)} ns with three limits ` +
      `(\`cargo bench --bench decision\`, in \`${command}\`, ${day}) — [docs/results/benchmark.md](docs/results/benchmark.md#the-engine-natively-cargo-bench---bench-decision)`]
    : []),
]);
console.log(`\n${table}\n\n${aims.join("\n")}\n\n${mdTable(["scenario", "Worker", "commands sent / in all", "by command", "scripts", "round trips", "req/s", "lease", "denied", "a month"], callRows)}\n\n${callLines.join("\n")}\n\nwrote docs/results/benchmark.md, README.md's figures, build/bench.md and build/bench.json`);
