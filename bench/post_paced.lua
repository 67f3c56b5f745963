-- wrk script: POST /api/messages at a paced rate (open-loop-like arrivals).
--   wrk -c 50 -d 10s -s bench/post_paced.lua http://HOST:PORT/api/messages -- ROOM SENDER DELAY_MS
-- Each connection waits a random, exponentially distributed delay (mean DELAY_MS) before each
-- request, so arrivals are Poisson-like rather than back-to-back: with C connections the
-- offered rate is about C / (DELAY_MS + latency). wrk measures latency from the send, so the
-- waiting is not counted. Bodies and counting are post_message.lua's.

local here = debug.getinfo(1, "S").source:sub(2):match("(.*[/\\])") or "./"
dofile(here .. "post_message.lua")

local post_init = init

function init(args)
  post_init(args)
  mean_delay_ms = tonumber(args[3] or "40")
  math.randomseed(id * 7919)
end

function delay()
  return math.floor(-math.log(1 - math.random()) * mean_delay_ms)
end
