-- wrk: every request from the same client address: one subject far past its limit.
wrk.headers["CF-Connecting-IP"] = "10.255.255.1"
wrk.path = "/bench"
