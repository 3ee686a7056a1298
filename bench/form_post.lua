-- wrk script for the authorization-server benchmark (bench/authserver.py).
--
-- Every request: POST of an application/x-www-form-urlencoded body taken from the environment
-- variable BENCH_FORM (e.g. "grant_type=client_credentials"), to BENCH_PATH (default /token),
-- with the Authorization header BENCH_AUTHORIZATION (e.g. "Basic Y2xpZW50OnNlY3JldA==").
-- At the end, `done()` prints one line "BENCH_RESULT {json}" in the format of bench/post.lua,
-- for bench/wrk.py to parse; responses >= 400 count as errors (wrk's status errors).

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/token"
wrk.body = os.getenv("BENCH_FORM") or "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local auth = os.getenv("BENCH_AUTHORIZATION")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
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
