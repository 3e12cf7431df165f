-- wrk script of `make bench`: cycles through a list of request paths and reports one JSON line.
--
-- Usage: wrk -t1 -cN -dDs -s bench/wrk/urls.lua http://127.0.0.1:PORT -- PATHS_FILE
-- PATHS_FILE holds one path per line (the harness writes it: opens, clicks, or the mix with
-- 10 % tampered tokens). Requests are formatted once, in init, so that each request costs wrk
-- no more than a table lookup. `done` prints a line starting with `bench-json ` that the harness
-- (crates/pixelgate-bench) reads; wrk's own report is printed before it.

-- A mail client's user agent: pixelgate and the Lua frontend both store it in every event.
wrk.headers["User-Agent"] =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"

local requests = {}
local next_index = 0

function init(args)
  local file = assert(io.open(args[1]), "cannot open the paths file " .. tostring(args[1]))
  for path in file:lines() do
    if path ~= "" then
      requests[#requests + 1] = wrk.format("GET", path)
    end
  end
  file:close()
  assert(#requests > 0, "no paths in " .. args[1])
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

-- The percentiles the harness tabulates and plots (the latency distribution).
local points = { 1, 5, 10, 25, 50, 75, 90, 95, 97.5, 99, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999 }

function done(summary, latency, _)
  local e = summary.errors
  local parts = {}
  for _, p in ipairs(points) do
    parts[#parts + 1] = string.format("[%g,%d]", p, latency:percentile(p))
  end
  parts[#parts + 1] = string.format("[100,%d]", latency.max)
  io.write(string.format(
    'bench-json {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx_3xx":%d,"percentiles":[%s]}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    table.concat(parts, ",")))
end
