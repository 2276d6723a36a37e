// The JavaScript floor: forwards every request to ORIGIN_URL, or with ANSWER_429 answers a
// fixed 429, exactly as bench/bare does in Rust. Beside it, the two show what being a Rust
// (wasm) Worker costs per request, apart from anything the limiter does.
export default {
  async fetch(request, env) {
    if (env.ANSWER_429) return new Response("Too Many Requests", { status: 429 });
    const url = new URL(request.url);
    return fetch(env.ORIGIN_URL + url.pathname + url.search, { method: request.method, headers: request.headers });
  },
};
