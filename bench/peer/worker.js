// The peer: what most Workers users would write instead, a JavaScript Worker using
// @upstash/ratelimit (token bucket, the same numbers as the limiter's benchmark policy) and
// @upstash/redis, with the ephemeral cache on, forwarding allowed requests to the origin.
// Env: CAPACITY and REFILL_PER_S (the bucket), PREFIX (of its keys, default "peer").
import { Ratelimit } from "@upstash/ratelimit";
import { Redis } from "@upstash/redis/cloudflare";

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
    const url = new URL(request.url);
    const answer = await fetch(env.ORIGIN_URL + url.pathname + url.search, { method: request.method, headers: request.headers });
    const response = new Response(answer.body, answer);
    for (const [k, v] of Object.entries(headers)) response.headers.set(k, v);
    return response;
  },
};
