-- wrk script: replay pre-signed webhook deliveries, each a distinct message id.
-- The file (env PRESIGNED) holds one delivery per line: id<TAB>timestamp<TAB>signature<TAB>body.
-- With -tN set WRK_THREADS=N: thread k sends lines k, k+N, k+2N, ... so no two threads repeat an id.
-- Env RATE (requests/s over all connections, optional) paces each connection with delay().
-- At the end one line "WRK_JSON {...}" carries the figures for bench/*.py.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
local index = 0
local wrapped = 0
local pause_ms = nil

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
  local path = os.getenv("PRESIGNED")
  local target = os.getenv("TARGET_PATH") or "/webhooks/codat"
  local line_no = 0
  for line in io.lines(path) do
    if line_no % nthreads == tid then
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", target, {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }, body)
    end
    line_no = line_no + 1
  end
  local rate = tonumber(os.getenv("RATE") or "0")
  local connections = tonumber(os.getenv("WRK_CONNECTIONS") or "1")
  if rate > 0 then
    pause_ms = 1000 * connections / rate
  end
end

-- Only defined when pacing: wrk decides once, at load, whether to ask for a delay per request.
if tonumber(os.getenv("RATE") or "0") > 0 then
  function delay()
    return pause_ms
  end
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wrapped = wrapped + 1
  end
  return requests[index]
end

function done(summary, latency, requests_summary)
  local sent, wraps = 0, 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"wrapped": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, wraps))
end
