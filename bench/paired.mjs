// Paired rounds: the two Workers of a comparison loaded at the same time, one wrk each with half
// the connections, so that whatever the machine does in a round (another tenant's burst, a
// slower core) hits both alike. bench/run.mjs runs its cases one after another; on these
// machines one case's CPU per request moves by ±20 % between rounds of the same build, which
// hides the few per cent a change makes. Loaded together, the same build against itself
// stays within a few per cent, round after round.
//
// Each comparison runs in both orders (A beside B, then B beside A), because the Worker
// started first came out about 2 % dearer in either place; the figure is the geometric mean
// of the two orders' medians, which cancels that.
//
// Started by scripts/bench after bench/run.mjs (the same builds, local-upstash running: LU_URL,
// LU_TOKEN). Writes docs/results/paired.md and README.md's paired figures.
// PAIRED_ROUNDS (default 6), PAIRED_SECONDS (default 4) tune it; PAIRED_ROWS=allowed,denial
// runs only those rows (and leaves docs/ alone).
// For an experiment, `node bench/paired.mjs A/index.js B/index.js` compares two builds of the
// limiter (inside the repository) on the memory store, or on local Upstash with
// PAIRED_STORE=upstash, and prints the ratios only (PAIRED_LUA=one.lua for one subject).
// `js:worker.js` in either place is a plain JavaScript Worker instead, given ORIGIN_URL (and
// PAIRED_JS_ENV, a JSON object of more bindings), to measure a forwarding shape on its own;
// PAIRED_POLICY, a policy document, in place of the benchmark's for the limiter's builds.
import path from "node:path";
import { POLICY, POLICY_ON, startOrigin, startWorker, workerdCpu, wrk } from "./common.mjs";
import { median } from "../tests/e2e/harness.mjs";
import { ROOT, date, mdTable, writePage, writeReadmeFigures } from "../scripts/record.mjs";

const ROUNDS = Number(process.env.PAIRED_ROUNDS ?? 6);
const SECONDS = Number(process.env.PAIRED_SECONDS ?? 4);
const CONNECTIONS = 4; // each; bench/run.mjs gives one Worker 8
const { LU_URL, LU_TOKEN } = process.env;
if (!LU_URL || !LU_TOKEN) throw new Error("run through scripts/bench (LU_URL and LU_TOKEN are missing)");

const origin = await startOrigin();
const ORIGIN_URL = origin.url;
const upstash = { UPSTASH_REDIS_REST_URL: LU_URL, UPSTASH_REDIS_REST_TOKEN: LU_TOKEN };
const limiter = (script, bindings) => ({ script: path.resolve(ROOT, script), wasm: true, bindings: { ORIGIN_URL, ...bindings } });
const peer = { script: path.join(ROOT, "build/peer/worker.js"), wasm: false, bindings: { ORIGIN_URL, CAPACITY: "10", REFILL_PER_S: "1", ...upstash } };
const WORKERS = {
  upstash: limiter("build/index.js", { POLICY, ...upstash }),
  upstashOn: limiter("build/index.js", { POLICY: POLICY_ON, ...upstash }),
  memory: limiter("build/index.js", { POLICY }),
  peer,
  peerBare: { ...peer, bindings: { ...peer.bindings, FORWARD: "bare" } },
  bareJs: { script: path.join(ROOT, "bench/bare-js/worker.js"), wasm: false, bindings: { ORIGIN_URL } },
  proxyJs: { script: path.join(ROOT, "bench/proxy-js/worker.js"), wasm: false, bindings: { ORIGIN_URL } },
};
// The rows of issue 17's aims, as bench/run.mjs names them: a case beside its counterpart.
const ROWS = [
  { id: "allowed", name: "allowed on local Upstash, a new subject per request, leases and batching off (3 beside 3p)", a: "upstash", b: "peer", lua: "unique.lua", aim: "at least 1.0× the throughput at no more than 1.0× the CPU" },
  { id: "denial", name: "cached denial, one subject far past its limit (4 beside 4p)", a: "upstash", b: "peer", lua: "one.lua", aim: "no more than 1.0× the CPU" },
  { id: "memory", name: "memory store beside the JavaScript forwarding floor (2 beside 1j)", a: "memory", b: "bareJs", lua: "unique.lua", aim: "at least 0.95× the throughput" },
  // What the floor leaves out: the same forwarding as the limiter's, in JavaScript, without
  // limiting (bench/proxy-js), beside the floor and beside the limiter on its memory store.
  { id: "proxy", name: "a JavaScript proxy that forwards as the limiter does, no limiting, beside the floor (1x beside 1j)", a: "proxyJs", b: "bareJs", lua: "unique.lua" },
  { id: "memoryProxy", name: "memory store beside that JavaScript proxy: the limiting alone (2 beside 1x)", a: "memory", b: "proxyJs", lua: "unique.lua" },
  // The peer forwards as the limiter does (bench/forward.js); as first written it made one bare
  // fetch, which drops a request's body and follows redirects: what the correct forwarding costs it.
  { id: "peerForward", name: "the peer forwarding as the limiter does, beside the peer with one bare fetch (3p beside 3p, FORWARD=bare)", a: "peer", b: "peerBare", lua: "unique.lua" },
  { id: "allowedOn", name: "allowed, leases and batching on (3on beside 3p)", a: "upstashOn", b: "peer", lua: "unique.lua" },
  { id: "denialOn", name: "cached denial, leases and batching on (4on beside 4p)", a: "upstashOn", b: "peer", lua: "one.lua" },
];

/** `rounds` paired rounds of `a` beside `b`: per round, each one's requests and CPU µs per request. */
async function pairedRounds(a, b, lua) {
  await Promise.all([wrk(a.url, lua, 1, CONNECTIONS), wrk(b.url, lua, 1, CONNECTIONS)]); // warm-up
  const rounds = [];
  for (let i = 0; i < ROUNDS; i++) {
    const [a0, b0] = [workerdCpu(a.pid), workerdCpu(b.pid)];
    const [ra, rb] = await Promise.all([wrk(a.url, lua, SECONDS, CONNECTIONS), wrk(b.url, lua, SECONDS, CONNECTIONS)]);
    const [a1, b1] = [workerdCpu(a.pid), workerdCpu(b.pid)];
    rounds.push({
      rps: ra.requests / rb.requests,
      cpu: ((a1 - a0) / ra.requests) / ((b1 - b0) / rb.requests),
      aUs: ((a1 - a0) / ra.requests) * 1e6, bUs: ((b1 - b0) / rb.requests) * 1e6,
      aDenied: ra.non2xx / ra.requests, bDenied: rb.non2xx / rb.requests,
    });
  }
  return rounds;
}

/** Both orders of one comparison, each pair of Workers started for it and stopped after. */
async function compare(configA, configB, lua) {
  const orders = [];
  for (const [first, second] of [[configA, configB], [configB, configA]]) {
    const x = await startWorker(first), y = await startWorker(second);
    try {
      orders.push(await pairedRounds(x, y, lua));
    } finally {
      await x.stop();
      await y.stop();
    }
  }
  const [ab, ba] = orders;
  const med = (rounds, k) => median(rounds.map((r) => r[k]));
  // A beside B in the first order, B beside A in the second: the ratio of A to B is the
  // geometric mean of the first order's and the inverse of the second's.
  const both = (k) => Math.sqrt(med(ab, k) / med(ba, k));
  return {
    rps: both("rps"), cpu: both("cpu"),
    orders: { ab: { rps: med(ab, "rps"), cpu: med(ab, "cpu") }, ba: { rps: 1 / med(ba, "rps"), cpu: 1 / med(ba, "cpu") } },
    spread: { rps: [...ab.map((r) => r.rps), ...ba.map((r) => 1 / r.rps)], cpu: [...ab.map((r) => r.cpu), ...ba.map((r) => 1 / r.cpu)] },
    aUs: median([...ab.map((r) => r.aUs), ...ba.map((r) => r.bUs)]), bUs: median([...ab.map((r) => r.bUs), ...ba.map((r) => r.aUs)]),
    aDenied: median([...ab.map((r) => r.aDenied), ...ba.map((r) => r.bDenied)]), bDenied: median([...ab.map((r) => r.bDenied), ...ba.map((r) => r.aDenied)]),
  };
}

const f = (v, d = 2) => v.toFixed(d);
const span = (list) => `${f(Math.min(...list))}–${f(Math.max(...list))}`;
const line = (r) => `throughput ${f(r.rps)}× (orders ${f(r.orders.ab.rps)}× and ${f(r.orders.ba.rps)}×; rounds ${span(r.spread.rps)}), ` +
  `CPU per request ${f(r.cpu)}× (orders ${f(r.orders.ab.cpu)}× and ${f(r.orders.ba.cpu)}×; rounds ${span(r.spread.cpu)})`;

const [buildA, buildB] = process.argv.slice(2);
if (buildA && buildB) {
  const store = process.env.PAIRED_STORE === "upstash" ? upstash : {};
  const extra = JSON.parse(process.env.PAIRED_JS_ENV ?? "{}");
  const config = (arg) => arg.startsWith("js:")
    ? { script: path.resolve(ROOT, arg.slice(3)), wasm: false, bindings: { ORIGIN_URL, ...extra } }
    : limiter(arg, { POLICY: process.env.PAIRED_POLICY ?? POLICY, ...store });
  const r = await compare(config(buildA), config(buildB), process.env.PAIRED_LUA ?? "unique.lua");
  console.log(`${buildA} beside ${buildB}: ${line(r)}; CPU µs per request ${f(r.aUs, 0)} and ${f(r.bUs, 0)}`);
  origin.close();
  process.exit(0);
}

const only = process.env.PAIRED_ROWS?.split(",");
const results = [];
for (const row of ROWS.filter((r) => !only || only.includes(r.id))) {
  const r = { ...row, ...(await compare(WORKERS[row.a], WORKERS[row.b], row.lua)) };
  console.log(`${row.id}: ${line(r)}`);
  results.push(r);
}
origin.close();
if (only) process.exit(0);

const met = (r) => {
  if (r.id === "allowed") return r.rps >= 1 && r.cpu <= 1;
  if (r.id === "denial") return r.cpu <= 1;
  if (r.id === "memory") return r.rps >= 0.95;
  return null;
};
const by = Object.fromEntries(results.map((r) => [r.id, r]));
const table = mdTable(
  ["row", "throughput, A to B", "CPU per request, A to B", "by order (A first; B first)", "by round", "CPU µs per request, A and B", "denied, A and B", "aim", "met?"],
  results.map((r) => [r.name, `${f(r.rps)}×`, `${f(r.cpu)}×`,
    `${f(r.orders.ab.rps)}× at ${f(r.orders.ab.cpu)}×; ${f(r.orders.ba.rps)}× at ${f(r.orders.ba.cpu)}×`,
    `${span(r.spread.rps)}; ${span(r.spread.cpu)}`, `${f(r.aUs, 0)}; ${f(r.bUs, 0)}`,
    `${f(r.aDenied * 100, 1)} %; ${f(r.bDenied * 100, 1)} %`, r.aim ?? "(reported)", met(r) === null ? "" : met(r) ? "yes" : "no"]));
const command = "bash scripts/bench";
writePage("docs/results/paired.md", {
  title: "Paired rounds: the limiter beside its counterpart, loaded at the same time",
  command,
  body: [
    `Settings: per row, both Workers in workerd through Miniflare (one process each), loaded at once by two wrk (\`-t1 -c${CONNECTIONS}\` each, ${SECONDS} s) ` +
      `after a 1 s warm-up; ${ROUNDS} rounds in each order (A started first, then B started first), fresh Workers for each order; ` +
      "CPU is each workerd's user + system time over the round, per request it served. Each figure is the geometric mean of the two orders' medians " +
      "(the order moves a ratio by about 2 %). Why paired rounds, and how they differ from the one-at-a-time cases: [../benchmark.md](../benchmark.md#paired-rounds).",
    "",
    table,
  ].join("\n"),
});
writeReadmeFigures("paired", [
  `- Side by side, loaded at once (paired rounds): allowed traffic on local Upstash ${f(by.allowed.rps)}× \`@upstash/ratelimit\`'s throughput at ${f(by.allowed.cpu)}× its CPU, ` +
    `a cached denial at ${f(by.denial.cpu)}× its CPU, the memory store ${f(by.memory.rps)}× a bare JavaScript forwarder's throughput and ${f(by.memoryProxy.rps)}× a JavaScript proxy's that forwards as it does (\`bash scripts/bench\`, ${date().slice(0, 10)}) — [docs/results/paired.md](docs/results/paired.md)`,
]);
console.log("wrote docs/results/paired.md and README.md's paired figures");
