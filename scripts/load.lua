-- wrk script of scripts/load: GET /products/<id> with ids picked at random from 1..N
-- (N is the script's first argument, default 1000), and one parseable line at the end:
--
--   LOAD requests=.. duration_us=.. rps=.. p50_us=.. p99_us=.. max_us=.. non2xx=.. connect=..
--        read=.. write=.. timeout=..
--
-- non2xx is wrk's count of answers with a status of 400 or more (the service sends no 3xx);
-- connect, read, write and timeout are socket errors.

local threads = 0

function setup(thread)
   threads = threads + 1
   -- Each thread has its own Lua state; a distinct number gives each its own id sequence.
   thread:set("thread_number", threads)
end

local ids = 1000
local requests = {}

function init(args)
   ids = tonumber(args[1]) or 1000
   math.randomseed(os.time() * 1000 + (thread_number or 0))
   for id = 1, ids do
      requests[id] = wrk.format("GET", "/products/" .. id)
   end
end

function request()
   return requests[math.random(ids)]
end

function done(summary, latency, _)
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "LOAD requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d non2xx=%d "
         .. "connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
