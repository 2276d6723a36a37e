// Issue 14, in front of a real app: what the app uses passes unchanged. WebSockets both ways
// (text, binary, close codes) with the handshake checked against the caller's limits,
// extension methods with their bodies, and Server-Sent Events unbuffered; against the real
// Worker in workerd and real servers on 127.0.0.1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHash } from "node:crypto";
import { WebSocketServer, WebSocket } from "ws";
import { startWorker, freshIp, parseRateLimit, sha256Hex } from "./harness.mjs";

const POLICY = {
  key_prefix: "pass",
  // Preflights are not charged to the caller's tier, but have limits of their own.
  cors: { preflight_limits: { preflights: { token_bucket: { capacity: 12, refill: "1/h" } } } },
  tiers: { anonymous: { limits: { burst: { token_bucket: { capacity: 3, refill: "1/h" } } } } },
  routes: [
    { path: "/purge", method: "PURGE", cost: 2 },
    { path: "/find", method: "SEARCH", exempt: true },
    { path: "/chat", exempt: true, websocket_messages: { token_bucket: { capacity: 5, refill: "1/h" } } },
  ],
};

let origin, worker;
const seen = [];

before(async () => {
  const server = createServer((req, res) => {
    if (req.url.startsWith("/events")) {
      // Four events, 300 ms apart: a buffering proxy would deliver them all at the end.
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
      let n = 0;
      const tick = () => {
        res.write(`data: ${n} ${Date.now()}\n\n`);
        if (++n === 4) return res.end();
        setTimeout(tick, 300);
      };
      return tick();
    }
    if (req.url.startsWith("/cors-app")) {
      res.writeHead(200, { "access-control-allow-origin": req.headers.origin ?? "*", "access-control-expose-headers": "X-Request-Id", "x-request-id": "r1" });
      return res.end("{}");
    }
    if (req.url.startsWith("/hop-answer")) {
      // Fields that must not cross a proxy, and the limiter's own mark, in the app's answer.
      res.writeHead(200, {
        "proxy-authenticate": "Basic realm=app", trailer: "x-checksum", upgrade: "h2c",
        "x-edge-limiter-own-answer": "1", "x-app": "kept", "set-cookie": ["a=1", "b=2"],
      });
      return res.end("answer");
    }
    if (req.url.startsWith("/redirect")) {
      seen.push({ method: req.method, url: req.url, headers: req.headers });
      res.writeHead(302, { location: `${origin.url}/landing?from=redirect`, "x-other": "kept" });
      return res.end();
    }
    const hash = createHash("sha256");
    let length = 0;
    req.on("data", (c) => { hash.update(c); length += c.length; });
    req.on("end", () => {
      seen.push({ method: req.method, url: req.url, length, sha256: hash.digest("hex"), headers: req.headers });
      res.writeHead(207, { "content-type": "application/json" });
      res.end(JSON.stringify({ method: req.method, length }));
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("message", (data, isBinary) => {
        const text = isBinary ? null : String(data);
        if (text === "close please") return ws.close(4001, "asked to");
        ws.send(isBinary ? Buffer.concat([Buffer.from("echo:"), data]) : `echo:${text}`, { binary: isBinary });
      });
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  origin = { url: `http://127.0.0.1:${server.address().port}`, stop: () => new Promise((ok) => { wss.close(); server.close(ok); }) };
  worker = await startWorker({ POLICY: JSON.stringify(POLICY), ORIGIN_URL: origin.url });
});
after(async () => {
  await worker?.stop();
  await origin?.stop();
});

/** Opens a WebSocket through the Worker; resolves with the socket, or the refusal's status. */
function connect(ip, path = "/socket") {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(worker.url.replace(/^http/, "ws") + path, { headers: { "CF-Connecting-IP": ip } });
    ws.once("open", () => resolve({ ws }));
    ws.once("unexpected-response", (_req, res) => resolve({ status: res.statusCode, headers: res.headers }));
    ws.once("error", reject);
  });
}

const next = (ws) => new Promise((ok) => ws.once("message", (data, isBinary) => ok({ data, isBinary })));

test("WebSockets pass both ways, text and binary, close codes included; the handshake is limited", async () => {
  const ip = freshIp();
  const { ws } = await connect(ip);
  ws.send("hello");
  const text = await next(ws);
  assert.equal(String(text.data), "echo:hello");
  assert.equal(text.isBinary, false);
  ws.send(Buffer.from([0, 1, 2, 255]), { binary: true });
  const binary = await next(ws);
  assert.equal(binary.isBinary, true);
  assert.deepEqual([...binary.data], [...Buffer.from("echo:"), 0, 1, 2, 255]);
  const closed = new Promise((ok) => ws.once("close", (code, reason) => ok({ code, reason: String(reason) })));
  ws.send("close please");
  assert.deepEqual(await closed, { code: 4001, reason: "asked to" });
  // The handshake is a request like any other: the 3-unit budget allows two more, then 429.
  for (let i = 0; i < 2; i++) (await connect(ip)).ws.close();
  const refused = await connect(ip);
  assert.equal(refused.status, 429);
  assert.ok(Number(refused.headers["retry-after"]) >= 1);
});

test("every method reaches the origin unchanged with its body, extension methods included; rules can name them", async () => {
  // workerd's HTTP server knows a fixed set of methods (those of its kj-http library, WebDAV,
  // CalDAV and cache purges among them) and answers others (M-SEARCH, LINK, anything made up)
  // 501 itself, before any Worker runs. Every method it delivers goes on unchanged.
  for (const method of ["PROPFIND", "PROPPATCH", "MKCOL", "REPORT", "PURGE", "LOCK", "UNLOCK", "COPY", "MOVE", "SEARCH", "QUERY", "NOTIFY", "PATCH", "DELETE"]) {
    const body = `<?xml version="1.0"?><x>${method}</x>`;
    const path = method === "PURGE" ? "/purge/a" : method === "SEARCH" ? "/find" : "/dav/a";
    const r = await fetch(`${worker.url}${path}`, { method, body, headers: { "CF-Connecting-IP": freshIp() } });
    assert.equal(r.status, 207, method);
    const got = seen.at(-1);
    assert.deepEqual([got.method, got.url, got.length], [method, path, Buffer.byteLength(body)], method);
    assert.equal(got.sha256, sha256Hex(body), `${method}: body unchanged`);
    if (method === "PURGE") assert.equal(parseRateLimit(r.headers.get("ratelimit")).burst.a, 1, "PURGE /purge costs 2");
    if (method === "SEARCH") assert.equal(r.headers.get("ratelimit"), null, "SEARCH /find is exempt");
    if (method === "PROPFIND") assert.equal(parseRateLimit(r.headers.get("ratelimit")).burst.a, 2, "others cost 1");
  }
});

test("the app's answer reaches the client without the fields that must not cross a proxy or the limiter's own mark; its other fields pass", async () => {
  const r = await fetch(`${worker.url}/hop-answer`, { headers: { "CF-Connecting-IP": freshIp() } });
  assert.equal(r.status, 200);
  assert.equal(await r.text(), "answer");
  for (const name of ["proxy-authenticate", "trailer", "upgrade", "x-edge-limiter-own-answer"]) {
    assert.equal(r.headers.get(name), null, `${name} crossed`);
  }
  assert.equal(r.headers.get("x-app"), "kept");
  assert.deepEqual(r.headers.getSetCookie(), ["a=1", "b=2"]);
  assert.ok(r.headers.get("ratelimit"), "the limiter's own fields are added");
});

test("Server-Sent Events arrive as they are sent, not buffered", async () => {
  const start = Date.now();
  const r = await fetch(`${worker.url}/events`, { headers: { "CF-Connecting-IP": freshIp(), Accept: "text/event-stream" } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "text/event-stream");
  const arrivals = [];
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of r.body) {
    pending += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      arrivals.push(Date.now() - start);
      pending = pending.slice(end + 2);
    }
  }
  assert.equal(arrivals.length, 4);
  // Sent over 900 ms: the first must come long before the last was sent, each a gap after the
  // one before. (Not a speed figure: a buffered stream would show gaps of about 0.)
  const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]);
  assert.ok(arrivals[0] < arrivals[3] - 600, `arrivals ${arrivals}`);
  for (const g of gaps) assert.ok(g >= 150, `gaps ${gaps}`);
  console.log(`# SSE arrivals (ms after the request): ${arrivals.join(", ")}; gaps ${gaps.join(", ")}`);
});

test("the origin sees its client, and its redirects to itself point back at the limiter", async () => {
  const ip = freshIp();
  const r = await fetch(`${worker.url}/redirect`, { headers: { "CF-Connecting-IP": ip, "X-Forwarded-For": "10.1.2.3" }, redirect: "manual" });
  assert.equal(r.status, 302);
  assert.equal(r.headers.get("location"), `${worker.url}/landing?from=redirect`, "not the origin's own address");
  // Draft -12: no RateLimit fields on a redirection (the request it leads to gets its own);
  // the request was still checked and counted.
  assert.equal(r.headers.get("ratelimit"), null);
  assert.equal(r.headers.get("ratelimit-policy"), null);
  assert.equal(r.headers.get("x-limiter-backend"), "memory");
  assert.equal(r.headers.get("x-other"), "kept");
  const got = seen.at(-1).headers;
  assert.equal(got["x-forwarded-for"], `10.1.2.3, ${ip}`, "the client's address appended to the chain it sent");
  assert.equal(got["x-forwarded-host"], new URL(worker.url).host);
  assert.equal(got["x-forwarded-proto"], "http");
  // An address that is not one is not passed on.
  await (await fetch(`${worker.url}/dav/x`, { headers: { "CF-Connecting-IP": "not-an-ip" } })).arrayBuffer();
  assert.equal(seen.at(-1).headers["x-forwarded-for"], undefined);
});

test("CORS: preflights go to the app uncharged, within limits of their own; a browser can read the limiter's 429; the admin API stays closed to other origins", async () => {
  const ip = freshIp();
  const page = "https://front.example";
  // Ten preflights from one address with a budget of 3: the app answers each, none is charged.
  for (let i = 0; i < 10; i++) {
    const r = await fetch(`${worker.url}/dav/cors`, {
      method: "OPTIONS",
      headers: { "CF-Connecting-IP": ip, Origin: page, "Access-Control-Request-Method": "POST" },
    });
    assert.equal(r.status, 207, "the origin's answer");
    assert.equal(r.headers.get("ratelimit"), null, "not charged");
    await r.arrayBuffer();
  }
  // A flood of preflights is no way around the limits: past their own 12, they get 429.
  const flood = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetch(`${worker.url}/dav/cors`, {
      method: "OPTIONS",
      headers: { "CF-Connecting-IP": ip, Origin: page, "Access-Control-Request-Method": "DELETE" },
    });
    flood.push(r.status);
    if (r.status === 429) assert.equal(r.headers.get("access-control-allow-origin"), "*", "a browser can read it");
    await r.arrayBuffer();
  }
  assert.deepEqual(flood, [207, 207, 429, 429]);
  for (let i = 0; i < 3; i++) await (await fetch(`${worker.url}/dav/cors`, { headers: { "CF-Connecting-IP": ip, Origin: page } })).arrayBuffer();
  const denied = await fetch(`${worker.url}/dav/cors`, { headers: { "CF-Connecting-IP": ip, Origin: page } });
  assert.equal(denied.status, 429);
  assert.equal(denied.headers.get("access-control-allow-origin"), "*");
  assert.match(denied.headers.get("access-control-expose-headers"), /Retry-After.*RateLimit/);
  assert.equal(denied.headers.get("x-edge-limiter-own-answer"), null, "the internal mark never leaves");
  await denied.arrayBuffer();
  // The app's own CORS answer is kept, and the limiter's fields are exposed beside its own.
  const app = await fetch(`${worker.url}/cors-app`, { headers: { "CF-Connecting-IP": freshIp(), Origin: page } });
  assert.equal(app.headers.get("access-control-allow-origin"), page);
  assert.match(app.headers.get("access-control-expose-headers"), /^X-Request-Id, Retry-After, RateLimit/);
  assert.ok(app.headers.get("ratelimit"));
  await app.arrayBuffer();
  // Without an Origin (not a browser's cross-origin call) no CORS fields are added.
  const plain = await fetch(`${worker.url}/dav/cors`, { headers: { "CF-Connecting-IP": ip } });
  assert.equal(plain.headers.get("access-control-allow-origin"), null);
  await plain.arrayBuffer();
});

test("a route can limit messages per WebSocket connection: the Worker relays, counts, and closes with 1008 past it", async () => {
  const { ws } = await connect(freshIp(), "/chat");
  const echoes = [];
  for (let i = 0; i < 4; i++) {
    ws.send(`m${i}`);
    echoes.push(String((await next(ws)).data));
  }
  ws.send(Buffer.from([7, 7]), { binary: true });
  const binary = await next(ws);
  assert.deepEqual([binary.isBinary, [...binary.data]], [true, [...Buffer.from("echo:"), 7, 7]]);
  assert.deepEqual(echoes, ["echo:m0", "echo:m1", "echo:m2", "echo:m3"]);
  // The sixth message is one past the 5 this connection may send.
  const closed = new Promise((ok) => ws.once("close", (code, reason) => ok({ code, reason: String(reason) })));
  ws.send("one too many");
  assert.deepEqual(await closed, { code: 1008, reason: "message rate limit exceeded" });
  // A new connection has its own count, and the origin's close codes pass through the relay.
  const again = (await connect(freshIp(), "/chat")).ws;
  again.send("hi");
  assert.equal(String((await next(again)).data), "echo:hi");
  const byOrigin = new Promise((ok) => again.once("close", (code, reason) => ok({ code, reason: String(reason) })));
  again.send("close please");
  assert.deepEqual(await byOrigin, { code: 4001, reason: "asked to" });
});

test("the app's own API keys pass untouched when the policy's keys carry a prefix", async () => {
  const policy = { ...POLICY, key_prefix: "pass-keys", identity: { api_key: { prefix: "rl_", keys: {} } } };
  const w = await startWorker({ POLICY: JSON.stringify(policy), ORIGIN_URL: origin.url });
  try {
    const ip = freshIp();
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${w.url}/dav/own-key`, { headers: { "CF-Connecting-IP": ip, "X-API-Key": "app-key-of-its-own" } });
      assert.equal(r.status, 207, "the app's key is not judged");
      await r.arrayBuffer();
    }
    // Still limited by address: the anonymous budget of 3 is used up.
    assert.equal((await fetch(`${w.url}/dav/own-key`, { headers: { "CF-Connecting-IP": ip, "X-API-Key": "app-key-of-its-own" } })).status, 429);
    // A key that claims to be ours and is not is a failed credential.
    assert.equal((await fetch(`${w.url}/dav/own-key`, { headers: { "CF-Connecting-IP": freshIp(), "X-API-Key": "rl_guess" } })).status, 401);
  } finally {
    await w.stop();
  }
});
