-- wrk, loaded by hot.lua, many.lua and mix.lua: counts the answers by their X-Limiter-Backend
-- field in each thread ("lease", "upstash", anything else or none: "other") and prints the
-- totals when the run ends, as one line that bench/run.mjs reads:
--   BACKENDS lease=N upstash=N other=N
local threads = {}
function setup(thread) table.insert(threads, thread) end

lease, upstash, other = 0, 0, 0
function response(status, headers, body)
  local backend = headers["X-Limiter-Backend"] or headers["x-limiter-backend"]
  if backend == "lease" then lease = lease + 1
  elseif backend == "upstash" then upstash = upstash + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local l, u, o = 0, 0, 0
  for _, t in ipairs(threads) do
    l = l + t:get("lease"); u = u + t:get("upstash"); o = o + t:get("other")
  end
  io.write(string.format("BACKENDS lease=%d upstash=%d other=%d\n", l, u, o))
end
