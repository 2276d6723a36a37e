// Conformance of local-upstash with the official @upstash/redis client (default settings:
// base64 response encoding on, auto-pipelining on), plus raw-HTTP checks of the protocol.
//
// Needs LOCAL_UPSTASH_URL and LOCAL_UPSTASH_TOKEN (run.sh sets them); LOCAL_UPSTASH_BIN, if
// set, lets one test start a second instance against a closed Redis port.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { Redis } from "@upstash/redis";

const URL_ = process.env.LOCAL_UPSTASH_URL;
const TOKEN = process.env.LOCAL_UPSTASH_TOKEN;
const BIN = process.env.LOCAL_UPSTASH_BIN;
if (!URL_ || !TOKEN) {
  throw new Error("set LOCAL_UPSTASH_URL and LOCAL_UPSTASH_TOKEN (see run.sh)");
}

const sha1 = (s) => createHash("sha1").update(s, "utf8").digest("hex");
const run = randomBytes(4).toString("hex");
const key = (name) => `conf:${run}:${name}`;

const redis = new Redis({ url: URL_, token: TOKEN });

async function raw(path, { body, token = TOKEN, headers = {}, method } = {}) {
  const h = { ...headers };
  if (token !== null) h.Authorization = `Bearer ${token}`;
  const res = await fetch(URL_ + path, {
    method: method ?? (body === undefined ? "GET" : "POST"),
    headers: h,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, headers: res.headers };
}

async function stats() {
  const r = await raw("/__stats");
  assert.equal(r.status, 200);
  return r.json;
}

async function setFault(mode) {
  const r = await raw("/__fault", { body: { mode } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.mode, mode);
}

describe("official @upstash/redis client", () => {
  test("set, get, incr", async () => {
    assert.equal(await redis.set(key("s"), "hello world"), "OK");
    assert.equal(await redis.get(key("s")), "hello world");
    assert.equal(await redis.get(key("missing")), null);
    assert.equal(await redis.incr(key("n")), 1);
    assert.equal(await redis.incr(key("n")), 2);
    assert.equal(await redis.incrby(key("n"), 40), 42);
    // The client JSON-encodes objects and decodes them back on get.
    await redis.set(key("obj"), { a: 1, b: ["x", "é"] });
    assert.deepEqual(await redis.get(key("obj")), { a: 1, b: ["x", "é"] });
    // Non-ASCII survives the base64 round trip.
    await redis.set(key("utf8"), "grüße ✓");
    assert.equal(await redis.get(key("utf8")), "grüße ✓");
  });

  test("a redis error rejects with the redis error text", async () => {
    await redis.set(key("str"), "not a number");
    await assert.rejects(redis.incr(key("str")), /ERR value is not an integer or out of range/);
  });

  test("concurrent commands are auto-pipelined through /pipeline", async () => {
    const before = await stats();
    const [a, b, c] = await Promise.all([
      redis.set(key("ap1"), "1"),
      redis.incr(key("ap2")),
      redis.get(key("s")),
    ]);
    assert.deepEqual([a, b, c], ["OK", 1, "hello world"]);
    const after = await stats();
    assert.ok(after.pipeline > before.pipeline, "auto-pipelining should have used /pipeline");
  });

  test("explicit pipeline", async () => {
    const p = redis.pipeline();
    p.set(key("p1"), "v1");
    p.incr(key("p2"));
    p.incr(key("p2"));
    p.get(key("p1"));
    p.mget(key("p1"), key("nope"));
    assert.deepEqual(await p.exec(), ["OK", 1, 2, "v1", ["v1", null]]);
  });

  test("pipeline keeps per-command errors", async () => {
    await redis.set(key("perr"), "abc");
    const p = redis.pipeline();
    p.get(key("perr"));
    p.incr(key("perr"));
    p.set(key("perr2"), "ok");
    const res = await p.exec({ keepErrors: true });
    assert.equal(res.length, 3);
    assert.equal(res[0].result, "abc");
    assert.equal(res[0].error, undefined);
    assert.match(res[1].error, /ERR value is not an integer/);
    assert.equal(res[2].result, "OK");
    // Without keepErrors the whole exec rejects.
    const p2 = redis.pipeline();
    p2.incr(key("perr"));
    await assert.rejects(p2.exec(), /ERR value is not an integer/);
  });

  test("multi-exec transaction goes through /multi-exec", async () => {
    const before = await stats();
    const tx = redis.multi();
    tx.set(key("t1"), "10");
    tx.incrby(key("t1"), 5);
    tx.get(key("t1"));
    tx.del(key("t1"));
    assert.deepEqual(await tx.exec(), ["OK", 15, 15, 1]);
    const after = await stats();
    assert.equal(after.multi_exec, before.multi_exec + 1);
    assert.equal(await redis.exists(key("t1")), 0);
  });

  test("eval returns keys and args", async () => {
    const res = await redis.eval("return {KEYS[1], ARGV[1], 7}", [key("e")], ["arg"]);
    assert.deepEqual(res, [key("e"), "arg", 7]);
    await assert.rejects(redis.eval("return redis.call('NOSUCHCMD')", [], []), /ERR/);
  });

  test("scriptLoad returns the SHA1 of the text, evalsha runs it", async () => {
    const script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    const sha = await redis.scriptLoad(script);
    assert.equal(sha, sha1(script));
    assert.equal(await redis.evalsha(sha, [key("es")], ["3"]), 3);
    assert.equal(await redis.evalsha(sha, [key("es")], ["4"]), 7);
    assert.deepEqual(await redis.scriptExists(sha, "0".repeat(40)), [1, 0]);
  });

  test("evalsha of an unknown sha rejects with NOSCRIPT", async () => {
    const unknown = sha1(`never loaded ${run}`);
    await assert.rejects(redis.evalsha(unknown, [], []), (e) => {
      assert.match(String(e.message), /NOSCRIPT/);
      return true;
    });
  });

  test("#!lua flags=allow-key-locking: eval, then evalsha by the client-side SHA1", async () => {
    const script =
      "#!lua flags=allow-key-locking\n" +
      `-- ${run}\n` +
      "local v = redis.call('INCR', KEYS[1])\n" +
      "return {v, ARGV[1]}";
    const sha = sha1(script);
    // Not known before the first EVAL.
    assert.deepEqual(await redis.scriptExists(sha), [0]);
    await assert.rejects(redis.evalsha(sha, [key("lk")], ["a"]), /NOSCRIPT/);
    assert.deepEqual(await redis.eval(script, [key("lk")], ["a"]), [1, "a"]);
    assert.deepEqual(await redis.evalsha(sha, [key("lk")], ["b"]), [2, "b"]);
    assert.deepEqual(await redis.scriptExists(sha), [1]);
    // SCRIPT LOAD of such a script answers the client-side SHA1 too.
    const script2 = script.replace(`-- ${run}`, `-- ${run} second`);
    assert.equal(await redis.scriptLoad(script2), sha1(script2));
    assert.deepEqual(await redis.evalsha(sha1(script2), [key("lk")], ["c"]), [3, "c"]);
  });

  test("createScript (evalsha, falling back to eval on NOSCRIPT) with a flagged script", async () => {
    await redis.scriptFlush();
    const s = redis.createScript(
      `#!lua flags=allow-key-locking\n-- cs ${run}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])`,
    );
    assert.equal(await s.exec([key("cs")], ["5"]), 5);
    assert.equal(await s.exec([key("cs")], ["5"]), 10);
    // Several at once: these go through /pipeline as EVALSHA.
    const all = await Promise.all([1, 2, 3].map(() => s.exec([key("cs")], ["1"])));
    assert.deepEqual(all.sort(), [11, 12, 13]);
  });
});

describe("raw protocol", () => {
  test("401 with a wrong or missing token", async () => {
    const wrong = await raw("/", { body: ["GET", key("s")], token: "wrong-" + TOKEN });
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.json, { error: "Unauthorized" });
    const missing = await raw("/get/x", { token: null });
    assert.equal(missing.status, 401);
    assert.deepEqual(missing.json, { error: "Unauthorized" });
    const viaQuery = await raw(`/get/${encodeURIComponent(key("s"))}?_token=${TOKEN}`, { token: null });
    assert.equal(viaQuery.status, 200);
    assert.deepEqual(viaQuery.json, { result: "hello world" });
  });

  test("the official client surfaces a 401 as an error", async () => {
    const bad = new Redis({ url: URL_, token: "wrong-" + TOKEN, enableAutoPipelining: false });
    await assert.rejects(bad.get(key("s")), /Unauthorized/);
  });

  test("Upstash-Encoding: base64 applies to status replies, nested strings, not numbers/null", async () => {
    const b64 = { "Upstash-Encoding": "base64" };
    const set = await raw("/", { body: ["SET", key("b"), "hello"], headers: b64 });
    assert.equal(set.status, 200);
    assert.deepEqual(set.json, { result: "T0s=" }); // base64("OK")
    const plain = await raw("/", { body: ["SET", key("b"), "hello"] });
    assert.deepEqual(plain.json, { result: "OK" });
    const mget = await raw("/", { body: ["MGET", key("b"), key("nope")], headers: b64 });
    assert.deepEqual(mget.json, { result: ["aGVsbG8=", null] });
    const incr = await raw("/", { body: ["INCR", key("bn")], headers: b64 });
    assert.deepEqual(incr.json, { result: 1 });
    const pipe = await raw("/pipeline", { body: [["GET", key("b")], ["PING"]], headers: b64 });
    assert.deepEqual(pipe.json, [{ result: "aGVsbG8=" }, { result: "UE9ORw==" }]);
    const err = await raw("/", { body: ["INCR", key("b")], headers: b64 });
    assert.equal(err.status, 400);
    assert.deepEqual(err.json, { error: "ERR value is not an integer or out of range" });
  });

  test("path form, with URL-decoding and a POST body as last argument", async () => {
    const k = encodeURIComponent(key("path/x y"));
    assert.deepEqual((await raw(`/set/${k}/a%20b`)).json, { result: "OK" });
    assert.deepEqual((await raw(`/get/${k}`)).json, { result: "a b" });
    assert.deepEqual((await raw(`/set/${k}`, { body: "from body" })).json, { result: "OK" });
    assert.deepEqual((await raw(`/GET/${k}`, { method: "POST" })).json, { result: "from body" });
    assert.deepEqual((await raw(`/incr/${encodeURIComponent(key("pn"))}`)).json, { result: 1 });
  });

  test("pipeline answers per-entry errors with 200", async () => {
    await raw("/", { body: ["SET", key("pe"), "x"] });
    const r = await raw("/pipeline", {
      body: [["GET", key("pe")], ["INCR", key("pe")], ["NOSUCHCMD"], ["SET", key("pe2"), 1]],
    });
    assert.equal(r.status, 200);
    assert.equal(r.json.length, 4);
    assert.deepEqual(r.json[0], { result: "x" });
    assert.match(r.json[1].error, /^ERR value is not an integer/);
    assert.match(r.json[2].error, /^ERR unknown command/);
    assert.deepEqual(r.json[3], { result: "OK" });
  });

  test("multi-exec runs atomically and reports errors per entry", async () => {
    const r = await raw("/multi-exec", {
      body: [["SET", key("me"), "a"], ["INCR", key("me")], ["APPEND", key("me"), "b"], ["GET", key("me")]],
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json[0], { result: "OK" });
    assert.match(r.json[1].error, /^ERR value is not an integer/);
    assert.deepEqual(r.json.slice(2), [{ result: 2 }, { result: "ab" }]);
    // A command that cannot even be queued aborts the whole transaction.
    const abort = await raw("/multi-exec", { body: [["SET", key("me2"), "1"], ["NOSUCHCMD"]] });
    assert.equal(abort.status, 400);
    assert.match(abort.json.error, /EXECABORT/);
    assert.deepEqual((await raw("/", { body: ["EXISTS", key("me2")] })).json, { result: 0 });
  });

  test("NOSCRIPT over raw HTTP is a 400 with Redis's text", async () => {
    const r = await raw("/", { body: ["EVALSHA", "f".repeat(40), "0"] });
    assert.equal(r.status, 400);
    assert.deepEqual(r.json, { error: "NOSCRIPT No matching script. Please use EVAL." });
  });

  test("bad requests: bad JSON, empty command, unknown path, health", async () => {
    const badJson = await raw("/", { body: "[\"GET\"," });
    assert.equal(badJson.status, 400);
    assert.equal(typeof badJson.json.error, "string");
    const empty = await raw("/", { body: [] });
    assert.equal(empty.status, 400);
    assert.equal(typeof empty.json.error, "string");
    const emptyPipe = await raw("/pipeline", { body: [[]] });
    assert.equal(emptyPipe.status, 400);
    const notFound = await raw("/__nope");
    assert.equal(notFound.status, 404);
    assert.equal(typeof notFound.json.error, "string");
    const health = await raw("/__health", { token: null });
    assert.equal(health.status, 200);
    assert.equal(health.text, "ok");
  });

  describe("fault modes via /__fault", () => {
    after(async () => {
      await setFault("none");
    });

    test("error500, garbage, unauthorized, delay, then none", async () => {
      const noRetry = new Redis({ url: URL_, token: TOKEN, enableAutoPipelining: false, retry: false });

      await setFault("error500");
      const e = await raw("/", { body: ["PING"] });
      assert.equal(e.status, 500);
      assert.deepEqual(e.json, { error: "injected" });
      await assert.rejects(noRetry.get(key("s")), /injected/);

      await setFault("garbage");
      const g = await raw("/", { body: ["PING"] });
      assert.equal(g.status, 200);
      assert.equal(g.text, "not json at all");
      await assert.rejects(noRetry.get(key("s")));

      await setFault("unauthorized");
      const u = await raw("/", { body: ["PING"] });
      assert.equal(u.status, 401);
      assert.deepEqual(u.json, { error: "Unauthorized" });
      // /__fault itself keeps working with the right token, and still checks it.
      assert.equal((await raw("/__fault", { body: { mode: "none" }, token: "x" })).status, 401);

      await setFault("delay:250");
      const t0 = performance.now();
      assert.equal(await noRetry.get(key("s")), "hello world");
      assert.ok(performance.now() - t0 >= 240, "delay mode should delay the answer");

      await setFault("none");
      const t1 = performance.now();
      assert.equal(await noRetry.get(key("s")), "hello world");
      assert.ok(performance.now() - t1 < 240);
      const bad = await raw("/__fault", { body: { mode: "bogus" } });
      assert.equal(bad.status, 400);
    });
  });

  test("redis unreachable -> 500 JSON error, no crash", { skip: !BIN && "LOCAL_UPSTASH_BIN not set" }, async () => {
    // A port nothing listens on: bind, read the port, close.
    const deadPort = await new Promise((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = s.address().port;
        s.close(() => resolve(p));
      });
    });
    const child = spawn(BIN, ["--listen", "127.0.0.1:0", "--redis", `127.0.0.1:${deadPort}`, "--token", TOKEN], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const url = await new Promise((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (d) => {
          out += d;
          const m = out.match(/local-upstash listening on (http:\/\/\S+)/);
          if (m) resolve(m[1]);
        });
        child.on("exit", (c) => reject(new Error(`exited ${c}`)));
      });
      for (let i = 0; i < 2; i++) {
        const r = await fetch(url, {
          method: "POST",
          headers: { Authorization: `Bearer ${TOKEN}` },
          body: JSON.stringify(["PING"]),
        });
        assert.equal(r.status, 500);
        const j = await r.json();
        assert.match(j.error, /redis/i);
      }
      assert.equal(child.exitCode, null, "server must still be running");
    } finally {
      child.kill();
    }
  });
});
