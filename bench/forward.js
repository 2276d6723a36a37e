// Forwarding as src/runtime.js's `forward` does it, in JavaScript, for the benchmark's
// JavaScript Workers (bench/proxy-js, and the peer in bench/peer): a new Request with the
// connection-level fields dropped and X-Forwarded-For, -Host and -Proto set, the body passed
// on, redirects not followed; the origin's answer in a new Response (a fetched answer's
// fields cannot be changed) with the connection-level fields dropped and `added` set. The
// dropping and setting are runtime.js's own `strip` and `setAll`.
// tests/e2e/bench-proxy.test.mjs checks the fields against the limiter's.
import { setAll, strip } from "../src/runtime.js";

/** `request` forwarded to `originUrl` (no trailing slash); `added` is `name\nvalue\n...`. */
export async function forwardAsTheLimiter(request, originUrl, added) {
  const url = new URL(request.url);
  const init = { method: request.method, headers: request.headers, redirect: "manual" };
  if (request.method !== "GET" && request.method !== "HEAD" && request.body) init.body = request.body;
  const outgoing = new Request(originUrl + url.pathname + url.search, init);
  strip(outgoing.headers, false);
  const client = request.headers.get("cf-connecting-ip");
  const toOrigin = [...(client ? ["X-Forwarded-For", client] : []), "X-Forwarded-Host", url.host, "X-Forwarded-Proto", url.protocol.slice(0, -1)];
  setAll(outgoing.headers, toOrigin.join("\n"));
  const answer = await fetch(outgoing);
  const response = new Response(answer.body, answer);
  strip(response.headers, false);
  setAll(response.headers, added);
  return response;
}
