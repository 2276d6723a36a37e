-- wrk: every request from one client address, on a budget it never reaches during the run
-- (the store-calls section of bench/run.mjs): what one busy subject's allowed traffic costs in
-- store calls. Counts the answers by backend (backends.lua).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "backends.lua")
wrk.headers["CF-Connecting-IP"] = "10.200.0.1"
wrk.path = "/bench"
