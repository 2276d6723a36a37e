-- check.lua: the Redis twin of src/core/algorithm.rs. Checks one request against every limit
-- of a tier and consumes from all of them, or from none, in one atomic script call.
-- The same test vectors (tests/vectors.json) run through both; change one, change the other.
--
-- KEYS[i]  the state key of limit i
-- ARGV     now_ms, cost, then three numbers per limit: kind, a, b, c
--            kind 1 token bucket: capacity, refill amount, refill period (ms)
--            kind 2 fixed window: limit, window (ms), unused
--            kind 3 sliding window: limit, window (ms), unused
-- returns  { outcome (0 allowed, 1 denied, 2 never), binding limit (1-based),
--            then per limit: outcome, remaining, reset_ms, retry_after_ms }
-- values   "b:<level>:<at>", "f:<start>:<count>", "s:<newest slot>:<11 counts>": the letter
--          names the kind, so a value of another kind reads as no record, as the Rust enum
--          does. Keys carry the limit's parameters; a value is still never trusted beyond
--          what they allow: a time ahead of now is honoured one span ahead at most (the
--          module doc of algorithm.rs says why), so every reset (the PX) and retry stays
--          within two spans. A request that is not admitted writes nothing, except a value
--          it had to clamp, which it stores as clamped.
--
-- Numbers are Lua doubles: every quantity is kept at or below 2^53 (the policy guarantees
-- it), and divisions are corrected to exact integer quotients.

local MAX_EXACT = 9007199254740992
local SLOTS = 10
local RING = SLOTS + 1

local function idiv(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

local function div_ceil(a, b)
  local q = idiv(a, b)
  if q * b < a then q = q + 1 end
  return q
end

-- A whole number as text, exactly: Lua's own tostring keeps 14 digits, and a bucket level
-- (units x refill period) can have 16.
local function int(x) return string.format("%.0f", x) end

-- The `n` numbers of a stored value of kind `tag`, or nil when it is no such value.
local function read(text, tag, n)
  if not text then return nil end
  local out, first = {}, true
  for part in string.gmatch(text, "[^:]+") do
    if first then
      if part ~= tag then return nil end
      first = false
    else
      local v = tonumber(part)
      if v == nil then return nil end
      out[#out + 1] = v
    end
  end
  if #out ~= n then return nil end
  return out
end

-- Each evaluator first honours the stored value as algorithm.rs's `Algorithm::honour` does
-- (no time past now + span, a level no higher than full, a fixed window's start in the
-- window it falls in), then returns: outcome, remaining, reset_ms, retry_ms, the next state
-- text if the request goes ahead (or nil), and the clamped state text if honouring changed
-- the value (or nil), which a request that is not admitted stores.
local function token_bucket(stored, now, cost, capacity, amount, period)
  local full = capacity * period
  local level, at, clamped = full, now, nil
  local s = read(stored, "b", 2)
  if s then
    local horizon = math.min(now + div_ceil(full, amount), MAX_EXACT)
    level, at = math.min(s[1], full), math.min(s[2], horizon)
    if level ~= s[1] or at ~= s[2] then clamped = "b:" .. int(level) .. ":" .. int(at) end
  end
  local t = math.max(now, at)
  local lag = t - now
  local deficit = full - level
  local elapsed = t - at
  if elapsed >= div_ceil(deficit, amount) then level = full else level = level + elapsed * amount end
  local function reset(l) return lag + div_ceil(full - l, amount) end
  if cost > capacity then return 2, idiv(level, period), reset(level), 0, nil, clamped end
  local need = cost * period
  if level < need then
    return 1, idiv(level, period), reset(level), lag + div_ceil(need - level, amount), nil, clamped
  end
  if cost == 0 then return 0, idiv(level, period), reset(level), 0, nil, clamped end
  local left = level - need
  return 0, idiv(left, period), reset(left), 0, "b:" .. int(left) .. ":" .. int(t), clamped
end

local function fixed_window(stored, now, cost, limit, window)
  local aligned = idiv(now, window) * window
  local start, used, clamped = aligned, 0, nil
  local s = read(stored, "f", 2)
  if s then
    -- The window the recorded start falls in; an earlier one is over.
    local w = idiv(s[1], window) * window
    if w >= aligned then
      start, used = math.min(w, aligned + window), s[2]
      if start ~= s[1] then clamped = "f:" .. int(start) .. ":" .. int(used) end
    end
  end
  local until_end = start + window - now
  local left = math.max(limit - used, 0)
  if cost > limit then return 2, left, until_end, 0, nil, clamped end
  if cost > left then return 1, left, until_end, until_end, nil, clamped end
  if cost == 0 then return 0, left, until_end, 0, nil, clamped end
  return 0, left - cost, until_end, 0, "f:" .. int(start) .. ":" .. int(used + cost), clamped
end

local function sliding_text(newest, counts)
  local parts = { "s", int(newest) }
  for k = 0, RING - 1 do parts[#parts + 1] = int(counts[k]) end
  return table.concat(parts, ":")
end

local function sliding_window(stored, now, cost, limit, window)
  local slot = div_ceil(window, SLOTS)
  local cur = idiv(now, slot)
  local counts = {}
  for k = 0, RING - 1 do counts[k] = 0 end
  local clamped = nil
  local s = read(stored, "s", RING + 1)
  if s then
    local newest = math.min(s[1], idiv(math.min(now + window + slot, MAX_EXACT), slot))
    if newest ~= s[1] then
      local kept = {}
      for k = 0, RING - 1 do kept[k] = s[k + 2] end
      clamped = sliding_text(newest, kept)
    end
    local shift = math.max(cur - newest, 0)
    cur = math.max(cur, newest)
    for k = 0, RING - 1 do
      if k + shift < RING then counts[k + shift] = s[k + 2] end
    end
  end
  local t = math.max(now, cur * slot)
  local function leaves_at(k) return (cur - k + 1) * slot + window end
  local used = 0
  for k = 0, RING - 1 do
    if k > cur or leaves_at(k) <= t then counts[k] = 0 end
    used = used + counts[k]
  end
  local left = math.max(limit - used, 0)
  local function reset()
    for k = 0, RING - 1 do
      if counts[k] > 0 then return leaves_at(k) - now end
    end
    return 0
  end
  if cost > limit then return 2, left, reset(), 0, nil, clamped end
  if cost > left then
    local to_free = used + cost - limit
    local retry = 0
    for k = RING - 1, 0, -1 do
      if counts[k] >= to_free then
        retry = leaves_at(k) - now
        break
      end
      to_free = to_free - counts[k]
    end
    return 1, left, reset(), retry, nil, clamped
  end
  if cost == 0 then return 0, left, reset(), 0, nil, clamped end
  counts[0] = counts[0] + cost
  return 0, left - cost, reset(), 0, sliding_text(cur, counts), clamped
end

-- Limit i's kind and parameters from ARGV, and its evaluation of `cost` against `stored`.
local function evaluate(i, stored, now, cost)
  local base = 2 + (i - 1) * 4
  local kind, a, b, c = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  if kind == 1 then return token_bucket(stored, now, cost, a, b, c) end
  if kind == 2 then return fixed_window(stored, now, cost, a, b) end
  return sliding_window(stored, now, cost, a, b)
end

local now = math.min(tonumber(ARGV[1]), MAX_EXACT)
local cost = tonumber(ARGV[2])
local n = #KEYS
local results = {}
local any_never, any_denied = nil, false
for i = 1, n do
  local stored = redis.call("GET", KEYS[i])
  local o, rem, reset, retry, nxt, clamped = evaluate(i, stored, now, cost)
  results[i] = { o, rem, reset, retry, nxt, stored, clamped }
  if o == 2 and not any_never then any_never = i end
  if o == 1 then any_denied = true end
end

local outcome, binding = 0, 1
if any_never then
  outcome, binding = 2, any_never
elseif any_denied then
  outcome = 1
  local best = -1
  for i = 1, n do
    if results[i][1] == 1 and results[i][4] > best then best, binding = results[i][4], i end
  end
else
  -- Allowed everywhere: store every new state, each with a TTL that ends when it is whole
  -- again (a missing key means exactly that).
  local best_rem, best_reset = nil, nil
  for i = 1, n do
    local r = results[i]
    if r[5] then redis.call("SET", KEYS[i], r[5], "PX", math.max(r[3], 1)) end
    if best_rem == nil or r[2] < best_rem or (r[2] == best_rem and r[3] > best_reset) then
      best_rem, best_reset, binding = r[2], r[3], i
    end
  end
end

local reply = { outcome, binding }
for i = 1, n do
  local r = results[i]
  if outcome ~= 0 and r[1] == 0 then
    -- Nothing was consumed: report this limit as a peek would.
    local o, rem, reset = evaluate(i, r[6], now, 0)
    r = { o, rem, reset, 0, nil, r[6], r[7] }
  end
  if outcome ~= 0 and r[7] then
    -- A value that had to be clamped is stored as clamped, or it would be clamped afresh,
    -- one span ahead, at every reading, and the wait just reported would never come due.
    redis.call("SET", KEYS[i], r[7], "PX", math.max(r[3], 1))
  end
  reply[#reply + 1] = r[1]
  reply[#reply + 1] = r[2]
  reply[#reply + 1] = r[3]
  reply[#reply + 1] = r[4]
end
return reply
