-- fleet.lua: the fleet view's counts in the shared store (src/core/fleet.rs has the layout).
-- One script, two uses, each one call:
--
-- flush   KEYS  the totals hash, the isolates hash, then per minute its counts hash and its
--               heaviest-subjects sorted set
--         ARGV  "flush", ttl_ms, isolate id, isolate JSON, groups, then per group: n, m, then
--               n (field, count) pairs, then m (member, count) pairs
--         Adds the counts to the minute and to the totals, the members' counts to the
--         minute's sorted set (which keeps its heaviest 100), sets the isolate's line, and
--         gives every minute key, and the isolates hash, the TTL (the totals have none: they
--         are counters, bounded by the policy's tiers, routes and backends).
-- read    KEYS  the totals hash, the isolates hash, then per minute the two keys, oldest first
--         ARGV  "read", how many heaviest subjects per minute
--         Returns JSON: {"total": {field: n}, "isolates": {id: json}, "minutes": [{"counts":
--         {field: n}, "top": [member, n, ...]}]}
local mode = ARGV[1]

local function hash(key)
  local flat, out = redis.call("HGETALL", key), {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end

if mode == "flush" then
  local ttl, id, line, groups = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
  local a, k = 6, 3
  for _ = 1, groups do
    local n, m = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    for _ = 1, n do
      redis.call("HINCRBY", KEYS[k], ARGV[a], ARGV[a + 1])
      redis.call("HINCRBY", KEYS[1], ARGV[a], ARGV[a + 1])
      a = a + 2
    end
    for _ = 1, m do
      redis.call("ZINCRBY", KEYS[k + 1], ARGV[a + 1], ARGV[a])
      a = a + 2
    end
    if m > 0 then
      redis.call("ZREMRANGEBYRANK", KEYS[k + 1], 0, -101)
      redis.call("PEXPIRE", KEYS[k + 1], ttl)
    end
    if n > 0 then redis.call("PEXPIRE", KEYS[k], ttl) end
    k = k + 2
  end
  redis.call("HSET", KEYS[2], id, line)
  redis.call("PEXPIRE", KEYS[2], ttl)
  return 1
elseif mode == "read" then
  local top_n = tonumber(ARGV[2])
  local minutes = {}
  for k = 3, #KEYS, 2 do
    minutes[#minutes + 1] = {
      counts = hash(KEYS[k]),
      top = redis.call("ZREVRANGE", KEYS[k + 1], 0, top_n - 1, "WITHSCORES"),
    }
  end
  return cjson.encode({ total = hash(KEYS[1]), isolates = hash(KEYS[2]), minutes = minutes })
end
return redis.error_reply("ERR fleet.lua: mode is flush or read")
