// The peer: what most Workers users would write instead, a JavaScript Worker using
// @upstash/ratelimit (token bucket, the same numbers as the limiter's benchmark policy) and
// @upstash/redis, with the ephemeral cache on, forwarding allowed requests to the origin as
// the limiter does (bench/forward.js: connection-level fields dropped, X-Forwarded-* set, the
// body passed on, redirects not followed), so that beside the limiter the difference is the
// limiting. With FORWARD=bare it forwards as it was first written, with one `fetch` of the
// method and fields: no body (a POST reaches the origin empty), redirects followed, the
// connection-level fields passed; the benchmark reports what the limiter's forwarding costs it.
// Env: CAPACITY and REFILL_PER_S (the bucket), PREFIX (of its keys, default "peer"), FORWARD.
import { Ratelimit } from "@upstash/ratelimit";
import { Redis } from "@upstash/redis/cloudflare";
import { forwardAsTheLimiter } from "../forward.js";

const ephemeralCache = new Map();
let ratelimit;

export default {
  async fetch(request, env, ctx) {
    ratelimit ??= new Ratelimit({
      redis: new Redis({ url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN }),
      limiter: Ratelimit.tokenBucket(Number(env.REFILL_PER_S), "1 s", Number(env.CAPACITY)),
      ephemeralCache,
      prefix: env.PREFIX || "peer",
    });
    const subject = request.headers.get("cf-connecting-ip") ?? "unknown";
    const { success, limit, remaining, reset, pending } = await ratelimit.limit(subject);
    ctx.waitUntil(pending);
    const headers = {
      "X-RateLimit-Limit": String(limit),
      "X-RateLimit-Remaining": String(remaining),
      "X-RateLimit-Reset": String(Math.ceil((reset - Date.now()) / 1000)),
    };
    if (!success) return new Response("Too Many Requests", { status: 429, headers });
    if (env.FORWARD !== "bare") {
      const added = `X-RateLimit-Limit\n${headers["X-RateLimit-Limit"]}\nX-RateLimit-Remaining\n${headers["X-RateLimit-Remaining"]}\nX-RateLimit-Reset\n${headers["X-RateLimit-Reset"]}`;
      return forwardAsTheLimiter(request, env.ORIGIN_URL, added);
    }
    const url = new URL(request.url);
    const answer = await fetch(env.ORIGIN_URL + url.pathname + url.search, { method: request.method, headers: request.headers });
    const response = new Response(answer.body, answer);
    for (const [k, v] of Object.entries(headers)) response.headers.set(k, v);
    return response;
  },
};
