-- wrk: every request from a different client address (10.x.y.z), so every request is a new
-- subject (the store-calls section of bench/run.mjs; the same load as unique.lua). Counts the
-- answers by backend (backends.lua).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "backends.lua")
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  local ip = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", "/bench", { ["CF-Connecting-IP"] = ip })
end
