-- Reference point between the ceiling and a publish: GET /v1/topics/<topic>, an authenticated,
-- access-logged request that reads the topic's counters and stores nothing.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@?(.*/)") .. "?.lua"
local common = require("common")
local topic = os.getenv("TOPIC") or "bench"
wrk.method = "GET"
wrk.path = "/v1/topics/" .. topic
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("OPAL_ADMIN_KEY"), "OPAL_ADMIN_KEY")
done = common.report("topic_get", 0)
