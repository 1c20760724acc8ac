-- Durable publish of a JSON batch of N messages of 256 B to /v1/topics/<topic>/messages.
-- Environment: KEY (default: OPAL_ADMIN_KEY), BATCH (messages per request, default 1),
-- TOPIC (default bench), LABEL (the RESULT label; default single or batch<N>).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
local common = require("common")
local n = tonumber(os.getenv("BATCH") or "1")
local topic = os.getenv("TOPIC") or "bench"
wrk.method = "POST"
wrk.path = "/v1/topics/" .. topic .. "/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer "
  .. assert(os.getenv("KEY") or os.getenv("OPAL_ADMIN_KEY"), "KEY or OPAL_ADMIN_KEY")
wrk.body = common.batch_body(n)
done = common.report(os.getenv("LABEL") or (n == 1 and "single" or ("batch" .. n)), n)
