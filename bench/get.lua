-- wrk script: GET the URL given to wrk (path and query included), counting responses.
--   wrk -c 4 -d 5s --latency -s bench/get.lua "http://HOST:PORT/api/messages?room=history&limit=100"
-- Only 200 counts as expected; done() prints BENCH_JSON (see stats.lua).

local here = debug.getinfo(1, "S").source:sub(2):match("(.*[/\\])") or "./"
dofile(here .. "stats.lua")

expected_status = 200

function request()
  count_sent()
  return wrk.format()
end
