-- The HTTP ceiling: GET /healthz on the same server (no auth, no access log, no storage).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
local common = require("common")
wrk.method = "GET"
done = common.report(os.getenv("LABEL") or "ceiling", 0)
