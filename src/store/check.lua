-- check.lua: the Redis twin of src/core/algorithm.rs. Runs a batch of operations in one call,
-- one after the other, each atomic and all-or-nothing on its own keys and answered on its own:
-- a check (or lease) of one request against every limit of a tier, consuming from all of them
-- or from none, and a refund of a lease's unused units. A batch of N operations answers
-- exactly as N calls of one operation in sequence; a single check is a batch of one.
-- The same test vectors (tests/vectors.json) run through both; change one, change the other.
--
-- ARGV     now_ms, number of operations, then per operation:
--            1 (check/lease), n, cost, want        then four numbers per limit
--            2 (refund),      n, units, granted_at then four numbers per limit
--          the four numbers of a limit: kind, a, b, c
--            kind 1 token bucket: capacity, refill amount, refill period (ms)
--            kind 2 fixed window: limit, window (ms), unused
--            kind 3 sliding window: limit, window (ms), unused
--          (a plain check is a lease with want = cost)
-- KEYS     each operation's n state keys, one per limit, operations in order
-- returns  per operation, in order:
--            check/lease: outcome (0 allowed, 1 denied, 2 never), binding limit (1-based),
--                         granted, until, then per limit: outcome, remaining, reset_ms,
--                         retry_after_ms                                  (4 + 4n numbers)
--            refund:      per limit the whole units given back           (n numbers)
-- values   "b:<level>:<at>", "f:<start>:<count>", "s:<newest slot>:<11 counts>": the letter
--          names the kind, so a value of another kind reads as no record, as the Rust enum
--          does. Keys carry the limit's parameters; a value is still never trusted beyond
--          what they allow: a time ahead of now is honoured one span ahead at most (the
--          module doc of algorithm.rs says why), so every reset (the PX) and retry stays
--          within two spans. A request that is not admitted writes nothing, except a value
--          it had to clamp, which it stores as clamped; a refund writes only a limit that
--          takes units back.
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
  if cost > capacity then return 2, idiv(level, period), reset(level), 0, nil, clamped, MAX_EXACT, false end
  local need = cost * period
  if level < need then
    return 1, idiv(level, period), reset(level), lag + div_ceil(need - level, amount), nil, clamped, MAX_EXACT, false
  end
  if cost == 0 then return 0, idiv(level, period), reset(level), 0, nil, clamped, MAX_EXACT, false end
  local left = level - need
  return 0, idiv(left, period), reset(left), 0, "b:" .. int(left) .. ":" .. int(t), clamped, MAX_EXACT, false
end

-- A token bucket takes back `units` of a lease granted at `granted_at`, less what it refilled
-- since (algorithm.rs's `refund` says why): the whole units regained, and the next value and
-- its reset if it regained anything.
local function token_bucket_refund(stored, now, units, granted_at, capacity, amount, period)
  local s = read(stored, "b", 2)
  if not s then return 0 end
  local full = capacity * period
  local horizon = math.min(now + div_ceil(full, amount), MAX_EXACT)
  local level, at = math.min(s[1], full), math.min(s[2], horizon)
  local t = math.max(now, at)
  if granted_at > t then return 0 end
  local deficit = full - level
  if t - at >= div_ceil(deficit, amount) then level = full else level = level + (t - at) * amount end
  local back = math.min(units, capacity) * period
  local elapsed = t - granted_at
  local lost = back
  if elapsed < div_ceil(back, amount) then lost = elapsed * amount end
  local add = math.min(back - lost, full - level)
  if add <= 0 then return 0 end
  local left = level + add
  return idiv(add, period), "b:" .. int(left) .. ":" .. int(t), (t - now) + div_ceil(full - left, amount)
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
  -- A lease ends with the window; a clock behind the record (counting in the next window)
  -- leases nothing spare.
  local ends, ahead = math.min(start + window, MAX_EXACT), start > aligned
  local left = math.max(limit - used, 0)
  if cost > limit then return 2, left, until_end, 0, nil, clamped, ends, ahead end
  if cost > left then return 1, left, until_end, until_end, nil, clamped, ends, ahead end
  if cost == 0 then return 0, left, until_end, 0, nil, clamped, ends, ahead end
  return 0, left - cost, until_end, 0, "f:" .. int(start) .. ":" .. int(used + cost), clamped, ends, ahead
end

-- A fixed window takes back units granted in the window holding now, from its record.
local function fixed_window_refund(stored, now, units, granted_at, limit, window)
  local aligned = idiv(now, window) * window
  if idiv(granted_at, window) * window ~= aligned then return 0 end
  local s = read(stored, "f", 2)
  if not s then return 0 end
  local start = idiv(s[1], window) * window
  if start ~= aligned then return 0 end
  local back = math.min(units, s[2])
  if back <= 0 then return 0 end
  return back, "f:" .. int(start) .. ":" .. int(s[2] - back), start + window - now
end

local function sliding_text(newest, counts)
  local parts = { "s", int(newest) }
  for k = 0, RING - 1 do parts[#parts + 1] = int(counts[k]) end
  return table.concat(parts, ":")
end

-- The honoured record at now, as algorithm.rs's `counts_at`: the slot counted in (the newest
-- seen, for a clock that stepped back), the counts with counts[k] the units of slot cur - k
-- and those no longer counted zeroed, and the clamped value if honouring changed it (or nil).
-- `parsed` is false when there is no record of this kind.
local function sliding_at(stored, now, slot, window)
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
  for k = 0, RING - 1 do
    if k > cur or (cur - k + 1) * slot + window <= t then counts[k] = 0 end
  end
  return cur, counts, clamped, s ~= nil
end

-- Until the oldest slot still counted leaves the window: when the limit is whole again.
local function sliding_reset(cur, counts, now, slot, window)
  for k = 0, RING - 1 do
    if counts[k] > 0 then return (cur - k + 1) * slot + window - now end
  end
  return 0
end

local function sliding_window(stored, now, cost, limit, window)
  local slot = div_ceil(window, SLOTS)
  local cur, counts, clamped = sliding_at(stored, now, slot, window)
  local function leaves_at(k) return (cur - k + 1) * slot + window end
  -- A lease ends with the slot its units count in; a clock behind the record leases
  -- nothing spare.
  local ends, ahead = math.min((cur + 1) * slot, MAX_EXACT), cur > idiv(now, slot)
  local used = 0
  for k = 0, RING - 1 do used = used + counts[k] end
  local left = math.max(limit - used, 0)
  local function reset() return sliding_reset(cur, counts, now, slot, window) end
  if cost > limit then return 2, left, reset(), 0, nil, clamped, ends, ahead end
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
    return 1, left, reset(), retry, nil, clamped, ends, ahead
  end
  if cost == 0 then return 0, left, reset(), 0, nil, clamped, ends, ahead end
  counts[0] = counts[0] + cost
  return 0, left - cost, reset(), 0, sliding_text(cur, counts), clamped, ends, ahead
end

-- A sliding window takes back units from the slot holding granted_at, if still counted (a
-- lease's spare units always count there), from a record it did not have to clamp.
local function sliding_window_refund(stored, now, units, granted_at, limit, window)
  local slot = div_ceil(window, SLOTS)
  local cur, counts, clamped, parsed = sliding_at(stored, now, slot, window)
  if not parsed or clamped then return 0 end
  local k = cur - idiv(granted_at, slot)
  if k < 0 or k >= RING then return 0 end
  local back = math.min(units, counts[k])
  if back <= 0 then return 0 end
  counts[k] = counts[k] - back
  return back, sliding_text(cur, counts), sliding_reset(cur, counts, now, slot, window)
end

-- The limit whose four numbers start at ARGV[at].
local function params(at)
  return tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
end

-- That limit's evaluation of `cost` against `stored`.
local function evaluate(at, stored, now, cost)
  local kind, a, b, c = params(at)
  if kind == 1 then return token_bucket(stored, now, cost, a, b, c) end
  if kind == 2 then return fixed_window(stored, now, cost, a, b) end
  return sliding_window(stored, now, cost, a, b)
end

local function give_back(at, stored, now, units, granted_at)
  local kind, a, b, c = params(at)
  if kind == 1 then return token_bucket_refund(stored, now, units, granted_at, a, b, c) end
  if kind == 2 then return fixed_window_refund(stored, now, units, granted_at, a, b) end
  return sliding_window_refund(stored, now, units, granted_at, a, b)
end

local now = math.min(tonumber(ARGV[1]), MAX_EXACT)
local reply = {}

-- A check of `cost` that also leases up to want - cost spare units (algorithm.rs's `lease`):
-- the limits' keys are KEYS[key + 1 .. key + n], their numbers from ARGV[arg] on.
local function check_op(key, arg, n, cost, want)
  local results = {}
  local any_never, any_denied = nil, false
  local spare, ends = math.max(want - cost, 0), MAX_EXACT
  for i = 1, n do
    local stored = redis.call("GET", KEYS[key + i])
    local o, rem, reset, retry, nxt, clamped, e, ahead = evaluate(arg + 4 * (i - 1), stored, now, cost)
    results[i] = { o, rem, reset, retry, nxt, stored, clamped }
    if o == 2 and not any_never then any_never = i end
    if o == 1 then any_denied = true end
    -- At most half of what each limit has left after the cost.
    if ahead then spare = 0 else spare = math.min(spare, idiv(rem, 2)) end
    ends = math.min(ends, e)
  end
  if n == 0 then spare = 0 end

  local outcome, binding, granted = 0, 1, 0
  if any_never then
    outcome, binding = 2, any_never
  elseif any_denied then
    outcome = 1
    local best = -1
    for i = 1, n do
      if results[i][1] == 1 and results[i][4] > best then best, binding = results[i][4], i end
    end
  else
    granted = cost + spare
    if spare > 0 then
      -- The whole grant is taken as one request of that cost would be.
      for i = 1, n do
        local r = results[i]
        local o, rem, reset, retry, nxt = evaluate(arg + 4 * (i - 1), r[6], now, granted)
        results[i] = { o, rem, reset, retry, nxt, r[6], r[7] }
      end
    end
    -- Allowed everywhere: store every new state, each with a TTL that ends when it is whole
    -- again (a missing key means exactly that).
    local best_rem, best_reset = nil, nil
    for i = 1, n do
      local r = results[i]
      if r[5] then redis.call("SET", KEYS[key + i], r[5], "PX", math.max(r[3], 1)) end
      if best_rem == nil or r[2] < best_rem or (r[2] == best_rem and r[3] > best_reset) then
        best_rem, best_reset, binding = r[2], r[3], i
      end
    end
  end

  reply[#reply + 1] = outcome
  reply[#reply + 1] = binding
  reply[#reply + 1] = granted
  if outcome == 0 then reply[#reply + 1] = ends else reply[#reply + 1] = now end
  for i = 1, n do
    local r = results[i]
    if outcome ~= 0 and r[1] == 0 then
      -- Nothing was consumed: report this limit as a peek would.
      local o, rem, reset = evaluate(arg + 4 * (i - 1), r[6], now, 0)
      r = { o, rem, reset, 0, nil, r[6], r[7] }
    end
    if outcome ~= 0 and r[7] then
      -- A value that had to be clamped is stored as clamped, or it would be clamped afresh,
      -- one span ahead, at every reading, and the wait just reported would never come due.
      redis.call("SET", KEYS[key + i], r[7], "PX", math.max(r[3], 1))
    end
    reply[#reply + 1] = r[1]
    reply[#reply + 1] = r[2]
    reply[#reply + 1] = r[3]
    reply[#reply + 1] = r[4]
  end
end

-- A refund of `units` granted at `granted_at` (algorithm.rs's `refund`), limit by limit.
local function refund_op(key, arg, n, units, granted_at)
  for i = 1, n do
    local stored = redis.call("GET", KEYS[key + i])
    local back, nxt, reset = give_back(arg + 4 * (i - 1), stored, now, units, granted_at)
    if nxt then redis.call("SET", KEYS[key + i], nxt, "PX", math.max(reset, 1)) end
    reply[#reply + 1] = back
  end
end

-- Every operation's shape is checked before anything is read or written.
local ops = tonumber(ARGV[2])
if ops == nil then return redis.error_reply("ERR check.lua: no operation count") end
local arg, keys = 3, 0
for _ = 1, ops do
  local kind, n = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
  if (kind ~= 1 and kind ~= 2) or n == nil or n < 0 then
    return redis.error_reply("ERR check.lua: bad operation at ARGV[" .. arg .. "]")
  end
  arg, keys = arg + 4 + 4 * n, keys + n
end
if arg ~= #ARGV + 1 or keys ~= #KEYS then
  return redis.error_reply("ERR check.lua: " .. #KEYS .. " keys and " .. #ARGV .. " arguments do not fit the operations")
end

arg, keys = 3, 0
for _ = 1, ops do
  local kind, n, a, b = params(arg)
  if kind == 1 then
    check_op(keys, arg + 4, n, a, b)
  else
    refund_op(keys, arg + 4, n, a, math.min(b, MAX_EXACT))
  end
  arg, keys = arg + 4 + 4 * n, keys + n
end
return reply
