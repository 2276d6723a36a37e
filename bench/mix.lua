-- wrk: a skewed mix over 1,000 subjects (10.201.0.1 to 10.201.3.232): 90 % of requests come from
-- the first 100 of them (10 % of the subjects), the other 10 % from the other 900, each pick
-- uniform within its group (the store-calls section of bench/run.mjs). Counts the answers by
-- backend (backends.lua).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "backends.lua")
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
local HOT, SUBJECTS = 100, 1000
request = function()
  local n
  if math.random() < 0.9 then n = math.random(0, HOT - 1) else n = math.random(HOT, SUBJECTS - 1) end
  n = n + 1
  local ip = string.format("10.201.%d.%d", math.floor(n / 256), n % 256)
  return wrk.format("GET", "/bench", { ["CF-Connecting-IP"] = ip })
end
