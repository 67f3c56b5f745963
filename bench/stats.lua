-- Shared by post_message.lua and get.lua (loaded with dofile): counts responses per thread
-- and, when wrk finishes, prints one line "BENCH_JSON {...}" that bench/load.py parses.
-- Latencies are wrk's own histogram, in microseconds.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

-- Per-thread counters (each wrk thread has its own Lua state).
sent = 0
ok_2xx = 0
expected = 0
other = 0

function count_sent()
  sent = sent + 1
end

function response(status, headers, body)
  if status == expected_status then
    expected = expected + 1
  end
  if status >= 200 and status < 300 then
    ok_2xx = ok_2xx + 1
  else
    other = other + 1
  end
end

local function total(name)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + (t:get(name) or 0)
  end
  return n
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {
    string.format('"duration_us":%d', summary.duration),
    string.format('"responses":%d', summary.requests),
    string.format('"bytes":%d', summary.bytes),
    string.format('"sent":%d', total("sent")),
    string.format('"status_expected":%d', total("expected")),
    string.format('"status_2xx":%d', total("ok_2xx")),
    string.format('"status_other":%d', total("other")),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d}',
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency:percentile(99.9)),
  }
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
