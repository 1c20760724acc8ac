-- Shared by the wrk scripts of bench/http: a `done` hook that prints one machine-readable line
-- (`RESULT <label> key=value ...`, read by run.sh), and the request bodies. Rates count every
-- answered request; run.sh refuses a run with any non-2xx answer or socket error.

local M = {}

function M.report(label, per_request)
  return function(summary, latency, requests)
    local secs = summary.duration / 1e6
    local rps = summary.requests / secs
    io.write(string.format(
      "RESULT %s requests=%d secs=%.2f req_s=%.0f msg_s=%.0f mb_s=%.2f "
        .. "p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f "
        .. "non2xx=%d socket_errors=%d\n",
      label, summary.requests, secs, rps,
      rps * per_request, rps * per_request * 256 / 1e6,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
      latency.max / 1000,
      summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  end
end

-- A JSON string whose text, quotes included, is exactly 256 bytes: the stored payload size.
function M.payload_256()
  return '"' .. string.rep("x", 254) .. '"'
end

function M.batch_body(n)
  local one = '{"data":' .. M.payload_256() .. '}'
  local parts = {}
  for i = 1, n do parts[i] = one end
  return '{"messages":[' .. table.concat(parts, ",") .. ']}'
end

return M
