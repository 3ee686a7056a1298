-- wrk script for the Bastion benchmarks (gateway: bench/wrk.py; authorization server:
-- bench/authserver.py, through the same runner).
--
-- Every request: POST of a ~1 KB JSON body, with an Authorization header taken from the
-- environment variable BENCH_AUTHORIZATION (e.g. "Bearer eyJ..."; unset: no header).
-- BENCH_BODY_ITEMS (default 8: ~1 KB) sets how many order items the body holds (~125 bytes
-- each), BENCH_PATH (default /api/echo) the path.
-- BENCH_FORM, when set and not empty, replaces the JSON body: the request body is that
-- application/x-www-form-urlencoded form (e.g. "grant_type=client_credentials") and
-- BENCH_PATH defaults to /token.
--
-- Arguments (after `--`): RATE CONNECTIONS
--   RATE         requests per second for this wrk thread; 0 (default): as fast as possible.
--   CONNECTIONS  connections of this thread (only used by the fallback pacing).
--
-- Pacing: plain wrk has no -R option, so a `delay()` function hands out send slots spaced
-- 1/RATE apart across all connections of the thread (a monotonic clock through LuaJIT's FFI).
-- A connection whose response arrives late does not cause a catch-up burst. Without the FFI,
-- each connection waits CONNECTIONS/RATE seconds between requests (slightly below RATE).
-- `delay()` is only defined when RATE > 0, so throughput runs pay nothing for it.
--
-- At the end, `done()` prints one line "BENCH_RESULT {json}" with the request count, errors
-- and latency percentiles in microseconds, for bench/wrk.py to parse.

local function build_body(count)
  local items = {}
  for i = 1, count do
    items[#items + 1] = string.format(
      '{"sku":"SKU-%04d","name":"Widget number %d","quantity":%d,"unit_price_cents":%d,' ..
      '"note":"standard shipping, no gift wrap"}', i, i, i % 5 + 1, 1000 + 37 * i)
  end
  return '{"order_id":"ord_0123456789abcdef","customer":"cus_42","currency":"EUR","items":[' ..
    table.concat(items, ",") .. ']}'
end

local form = os.getenv("BENCH_FORM")

wrk.method = "POST"
if form ~= nil and form ~= "" then
  wrk.path = os.getenv("BENCH_PATH") or "/token"
  wrk.body = form
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
else
  wrk.path = os.getenv("BENCH_PATH") or "/api/echo"
  wrk.body = build_body(tonumber(os.getenv("BENCH_BODY_ITEMS") or "8") or 8)
  wrk.headers["Content-Type"] = "application/json"
end

local auth = os.getenv("BENCH_AUTHORIZATION")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local function monotonic_clock()
  local ok, ffi = pcall(require, "ffi")
  if not ok then
    return nil
  end
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  return function()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
end

function init(args)
  local rate = tonumber(args[1] or "0") or 0
  local connections = tonumber(args[2] or "1") or 1
  if rate <= 0 then
    return
  end
  local now = monotonic_clock()
  if now == nil then
    local fixed_ms = math.floor(1000 * connections / rate)
    delay = function() return fixed_ms end
    return
  end
  local interval = 1.0 / rate
  local next_slot = 0
  delay = function()
    local t = now()
    if next_slot < t then
      next_slot = t
    end
    local wait = next_slot - t
    next_slot = next_slot + interval
    return math.floor(wait * 1000 + 0.5) -- wrk's timers have millisecond resolution
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return string.format("%.0f", latency:percentile(q)) end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%s,"p90":%s,"p99":%s,"p999":%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max, p(50), p(90), p(99), p(99.9)))
end
