// The JavaScript proxy: forwards every request to ORIGIN_URL as src/runtime.js's `forward`
// does, with no limiting at all: a new Request with the connection-level fields dropped and
// X-Forwarded-For, -Host and -Proto set, redirects not followed; the origin's answer in a new
// Response (a fetched answer's fields cannot be changed) with the connection-level fields
// dropped and the three fields the limiter adds to an allowed answer under the benchmark's
// policy. Beside the floor (bench/bare-js), it shows what that forwarding costs in JavaScript;
// beside the limiter on its memory store, what the limiting costs on top of it.
const HOP_BY_HOP = [
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
  "transfer-encoding", "upgrade", "host", "x-edge-limiter-own-answer",
];

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const init = { method: request.method, headers: request.headers, redirect: "manual" };
    if (request.method !== "GET" && request.method !== "HEAD" && request.body) init.body = request.body;
    const outgoing = new Request(env.ORIGIN_URL + url.pathname + url.search, init);
    const to = outgoing.headers;
    for (const name of HOP_BY_HOP) to.delete(name);
    const client = request.headers.get("cf-connecting-ip");
    if (client) to.set("X-Forwarded-For", client);
    to.set("X-Forwarded-Host", url.host);
    to.set("X-Forwarded-Proto", url.protocol.slice(0, -1));
    const answer = await fetch(outgoing);
    const response = new Response(answer.body, answer);
    const out = response.headers;
    for (const name of HOP_BY_HOP) out.delete(name);
    out.set("RateLimit", '"burst";a=9;w=1');
    out.set("RateLimit-Policy", '"burst";q=10;w=10');
    out.set("X-Limiter-Backend", "memory");
    return response;
  },
};
