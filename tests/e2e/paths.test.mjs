// Issue 13, hole 1: the path the route rules match is the path the origin receives. Every
// trick is sent as raw bytes (a client library would tidy the URL first) against an exempt
// prefix and a costly route, by a caller whose budget is used up: each is denied, charged
// the right cost, or refused with 400, never exempt; and what reaches the origin is exactly
// the normalised path that was matched.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, startOrigin, rawRequest, freshIp, parseRateLimit } from "./harness.mjs";

const tiers = { anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/h" } } } } };
const routes = [
  { path: "/health", exempt: true },
  { path: "/search", cost: 2 },
];
const POLICY = { key_prefix: "paths", tiers, routes };
// An origin that drops ;params and matches case-insensitively (Tomcat behind IIS, say).
const LENIENT = { ...POLICY, paths: { case_insensitive: true, ignore_params: true } };

let origin, strict, lenient;
before(async () => {
  origin = await startOrigin();
  strict = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url });
  lenient = await startWorker({ POLICY: JSON.stringify(LENIENT), ORIGIN_URL: origin.url });
});
after(async () => {
  await strict?.stop();
  await lenient?.stop();
  await origin?.stop();
});

/** One raw GET; the answer's status, fields (lower-case) and what the origin saw, if anything. */
async function get(worker, target, ip) {
  const before = origin.seen.length;
  const host = new URL(worker.url).host;
  const r = await rawRequest(worker.url, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nCF-Connecting-IP: ${ip}\r\nConnection: close\r\n\r\n`);
  const head = r.text.split("\r\n\r\n")[0].split("\r\n").slice(1);
  const fields = Object.fromEntries(head.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  const forwarded = origin.seen.slice(before).map((s) => s.url);
  return { status: r.status, fields, forwarded, body: r.text.split("\r\n\r\n").slice(1).join("") };
}

/** A caller with nothing left: any checked request is denied. */
async function exhausted(worker) {
  const ip = freshIp();
  for (let i = 0; i < 3; i++) assert.equal((await get(worker, "/spend", ip)).status, 200);
  assert.equal((await get(worker, "/spend", ip)).status, 429);
  return ip;
}

// What the runtime hands the Worker is its WHATWG serialisation of the request URL: it has
// already resolved plain dot segments (`%2e` ones too) and clamped a `..` above the root, as
// RFC 3986 does. The Worker parses that once (core::path, which also refuses a raw `..`
// above the root and a raw backslash, for runtimes that pass them on) and forwards exactly
// what it matched, so the origin never reads a path other than the one that was checked.
//
// Tricks that climb out of the exempt prefix: with no budget left, each must be denied or refused.
const OUT_OF_EXEMPT = [
  "/health/../search", "/health/%2e%2e/search", "/health/.%2e/search", "/health/%2E%2E/search",
  "/health/%2e%2E/spend", "/health/..;/search", "/health;x/../search", "/health;/../spend",
  "/health/..%2fsearch", "/health%2f..%2fsearch", "/health/..%2Fsearch", "/health/%2e%2e%2fsearch",
  "/health/..\\search", "/health%5c..%5csearch", "/health/..%5Csearch",
  "//health/../search", "/./health/../search", "/health/./../spend",
  "/%68ealth/../search", "/health/%252e%252e/search", "/health/..%3bsearch",
  "/health/../../search", "/health%00", "/health/%", "/health/%zz",
  "/HEALTH", "/Health/x", "/healthz", "/health;x",
];

test("tricks against the exempt prefix are denied or refused, never exempt", async () => {
  const ip = await exhausted(strict);
  const report = [];
  const wrong = [];
  for (const target of OUT_OF_EXEMPT) {
    const r = await get(strict, target, ip);
    report.push(`${r.status} ${target}${r.status === 400 ? "  (" + JSON.parse(r.body).detail + ")" : ""}`);
    if (!(r.status === 429 || r.status === 400) || r.forwarded.length) wrong.push(`${target}: ${r.status}, forwarded ${r.forwarded}`);
    if (r.status === 400) {
      assert.equal(r.fields["content-type"], "application/problem+json", target);
      assert.match(JSON.parse(r.body).type, /#invalid-path$/, target);
    }
  }
  console.log(report.join("\n"));
  assert.deepEqual(wrong, [], "tricks that were exempt or reached the origin");
});

test("the exempt prefix itself, however spelled, stays exempt and reaches the origin as one path", async () => {
  const ip = await exhausted(strict);
  for (const [target, seen] of [
    ["/health", "/health"], ["/health/", "/health/"], ["/health/deep", "/health/deep"], ["//health", "/health"],
    ["/health/x/../y", "/health/y"], ["/%68ealth", "/health"], ["/health/%7e", "/health/~"], ["/health?probe=1", "/health?probe=1"],
    ["/x/../health", "/health"], ["/health/%3A", "/health/%3A"],
    // The runtime's URL parser (WHATWG) resolves `..` against the empty segment before the
    // Worker sees it: the origin receives /health/search, inside the prefix, never /search.
    ["/health//../search", "/health/search"], ["/../health", "/health"], ["/../../health/x", "/health/x"],
    ["/health/%00/../x", "/health/x"], ["/health/.;/../x", "/health/x"],
  ]) {
    const r = await get(strict, target, ip);
    assert.equal(r.status, 200, target);
    assert.deepEqual(r.forwarded, [seen], target);
  }
});

test("tricks against the costly route are charged its cost and forwarded as the path that was charged", async () => {
  for (const target of ["/search", "/health/../search", "/health/%2e%2e/search", "//search", "/./search", "/%73earch", "/search/", "/x/.%2e/search/q"]) {
    const ip = freshIp();
    const r = await get(strict, target, ip);
    assert.equal(r.status, 200, target);
    assert.equal(parseRateLimit(r.fields.ratelimit).burst.a, 1, `${target}: charged 2 of 3`);
    assert.equal(r.forwarded.length, 1);
    assert.match(r.forwarded[0], /^\/search(\/|$)/, `${target} forwarded as ${r.forwarded[0]}`);
  }
});

test("with case-insensitive matching and ;params ignored, the origin's reading decides", async () => {
  const ip = await exhausted(lenient);
  for (const target of ["/HEALTH", "/Health/x", "/health;jsessionid=1", "/health;x/deep"]) {
    const r = await get(lenient, target, ip);
    assert.equal(r.status, 200, `${target} is the exempt prefix to this origin`);
    assert.equal(r.forwarded[0], target, "forwarded as sent: case and params kept");
  }
  for (const target of ["/health/..;/search", "/HEALTH/../SEARCH", "/search;x", "/SEARCH"]) {
    const r = await get(lenient, target, ip);
    assert.ok(r.status === 429 || r.status === 400, `${target}: ${r.status}`);
  }
  for (const target of ["/SEARCH", "/search;jsessionid=9", "/Search;a=b/x"]) {
    const r = await get(lenient, target, freshIp());
    assert.equal(r.status, 200, target);
    assert.equal(parseRateLimit(r.fields.ratelimit).burst.a, 1, `${target}: the costly route to this origin`);
  }
});

test("odd request targets: absolute form, asterisk, raw non-UTF-8 bytes, 8 KB paths; never a 5xx, never exempt by accident", async () => {
  const ip = await exhausted(strict);
  const host = new URL(strict.url).host;
  const targets = [
    `http://${host}/health/../search`, `http://other.example/search`, "*", "/x/\xff\xfe/../search", "/search/\xff",
    "/search/" + "a".repeat(8 * 1024), "/health/" + "../".repeat(200) + "search",
  ];
  for (const target of targets) {
    const before = origin.seen.length;
    const bytes = Buffer.from(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nCF-Connecting-IP: ${ip}\r\nConnection: close\r\n\r\n`, "latin1");
    const r = await rawRequest(strict.url, bytes);
    const forwarded = origin.seen.slice(before).map((s) => s.url);
    // workerd's own URL parser refuses absolute-form and `*` targets with a bare 500 before any
    // Worker runs (the Cloudflare edge answers them itself); anything that reaches the Worker
    // gets a 4xx or less.
    const runtimes = r.status === 500 && r.text.endsWith("\r\n\r\nInternal Server Error") && (target.includes("://") || target === "*");
    assert.ok(r.status < 500 || runtimes, `${target.slice(0, 40)}: ${r.status} ${r.text.slice(0, 200)}`);
    // Whatever the runtime made of it, it is checked like any other request: this caller has nothing left.
    assert.deepEqual(forwarded, [], `${target.slice(0, 40)} reached the origin: ${forwarded}`);
  }
  // The Worker goes on serving.
  assert.equal((await get(strict, "/health", ip)).status, 200);
});
