-- wrk script: replay pre-signed webhook deliveries, each a distinct message id.
-- The file (env PRESIGNED) holds one delivery per line: id<TAB>timestamp<TAB>signature<TAB>body.
-- With -tN set WRK_THREADS=N: thread k sends lines k, k+N, k+2N, ... so no two threads repeat an id.
-- Env RATE (requests/s over all connections, optional) paces each connection with delay().
-- Env ONCE=1: each delivery is sent once; afterwards the connections only poll GET /healthz (bench/burst.py).
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
  if rate > 0 then
    pause_ms = 1000 * nthreads / rate
  end
end

-- Pacing (only when RATE is set: wrk decides once, at load, whether to ask for a delay per request).
-- Each request takes the next slot of this thread's schedule, t0 + k * interval, and waits until it;
-- a late slot is sent at once, so the offered rate stays fixed while connections are free.
if tonumber(os.getenv("RATE") or "0") > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
    int clock_gettime(int clock_id, wrk_timespec *tp);
  ]]
  local clock = ffi.new("wrk_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, clock)
    return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
  end
  local next_slot = nil

  function delay()
    local now = now_ms()
    if next_slot == nil then
      next_slot = now
    end
    local wait = next_slot - now
    next_slot = next_slot + pause_ms
    if wait > 0 then
      return math.floor(wait)
    end
    return 0
  end
end

local once = os.getenv("ONCE") == "1"
local idle = nil

function request()
  index = index + 1
  if once and index > #requests then
    idle = idle or wrk.format("GET", "/healthz")
    return idle
  end
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
