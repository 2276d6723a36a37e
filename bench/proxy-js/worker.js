// The JavaScript proxy: forwards every request to ORIGIN_URL as src/runtime.js's `forward`
// does, with no limiting at all: a new Request with the connection-level fields dropped and
// X-Forwarded-For, -Host and -Proto set, redirects not followed; the origin's answer in a new
// Response (a fetched answer's fields cannot be changed) with the connection-level fields
// dropped and the three fields the limiter adds to an allowed answer under the benchmark's
// policy. The dropping and setting are src/runtime.js's own `strip` and `setAll`. Beside the
// floor (bench/bare-js), it shows what that forwarding costs in JavaScript; beside the limiter
// on its memory store, what the limiting costs on top of it.
import { setAll, strip } from "../../src/runtime.js";

const ADDED = ['RateLimit', '"burst";a=9;w=1', 'RateLimit-Policy', '"burst";q=10;w=10', 'X-Limiter-Backend', 'memory'].join("\n");

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const init = { method: request.method, headers: request.headers, redirect: "manual" };
    if (request.method !== "GET" && request.method !== "HEAD" && request.body) init.body = request.body;
    const outgoing = new Request(env.ORIGIN_URL + url.pathname + url.search, init);
    strip(outgoing.headers, false);
    const client = request.headers.get("cf-connecting-ip");
    const toOrigin = [...(client ? ["X-Forwarded-For", client] : []), "X-Forwarded-Host", url.host, "X-Forwarded-Proto", url.protocol.slice(0, -1)];
    setAll(outgoing.headers, toOrigin.join("\n"));
    const answer = await fetch(outgoing);
    const response = new Response(answer.body, answer);
    strip(response.headers, false);
    setAll(response.headers, ADDED);
    return response;
  },
};
