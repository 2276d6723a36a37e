// The JavaScript proxy: forwards every request to ORIGIN_URL as src/runtime.js's `forward`
// does (bench/forward.js), with no limiting at all, adding the three fields the limiter adds
// to an allowed answer under the benchmark's policy. Beside the floor (bench/bare-js), it
// shows what that forwarding costs in JavaScript; beside the limiter on its memory store,
// what the limiting costs on top of it.
import { forwardAsTheLimiter } from "../forward.js";

const ADDED = ['RateLimit', '"burst";a=9;w=1', 'RateLimit-Policy', '"burst";q=10;w=10', 'X-Limiter-Backend', 'memory'].join("\n");

export default {
  fetch(request, env) {
    return forwardAsTheLimiter(request, env.ORIGIN_URL, ADDED);
  },
};
