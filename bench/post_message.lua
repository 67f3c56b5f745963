-- wrk script: POST /api/messages with a new JSON body per request.
--   wrk -c 50 -d 10s --latency -s bench/post_message.lua http://HOST:PORT/api/messages -- ROOM SENDER
-- Body: {"room":"<ROOM>","sender":"<SENDER>","content":"hello <counter>"}; counters are unique
-- across wrk threads. Only 201 counts as expected; done() prints BENCH_JSON (see stats.lua).

local here = debug.getinfo(1, "S").source:sub(2):match("(.*[/\\])") or "./"
dofile(here .. "stats.lua")

expected_status = 201

function init(args)
  room = args[1] or "bench"
  sender = args[2] or "alice"
  counter = (id - 1) * 1000000000
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  count_sent()
  local body = string.format('{"room":"%s","sender":"%s","content":"hello %d"}', room, sender, counter)
  return wrk.format(nil, nil, nil, body)
end
