// What the benchmark (bench/run.mjs) and the profile (bench/profile.mjs) share, so that the
// profile measures exactly the benchmark's cases.
import { createServer } from "node:http";

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
