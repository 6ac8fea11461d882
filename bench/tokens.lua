-- wrk script: each request carries the next token of a pool (TOKENS = a file, one per line).
-- With CYCLE=0 the pool is used once (the cold path): past its end, requests go out without
-- a token and are counted as non-2xx, so a pool too small for the run shows in the result.
-- Tokens are read from the file at start and never printed.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
local cycle = os.getenv("CYCLE") ~= "0"
local i = 0
local plain = wrk.format(nil, nil, {})

-- DELAY_MS: each connection waits this long before each request (the fixed-rate runs; wrk
-- waits before a connection's first request too, so every connection sends at the same
-- moments). SPREAD=1: each wait is drawn at random from half to one and a half DELAY_MS, so
-- the requests are spread over time at the same mean rate, as independent clients send them
-- (and no wait comes near twice DELAY_MS, where a server's idle timeout may be).
local pause = tonumber(os.getenv("DELAY_MS") or "")
if pause and os.getenv("SPREAD") == "1" then
  math.randomseed(os.time())
  local low = math.floor(pause / 2)
  delay = function() return math.random(low, low + pause) end
elseif pause then
  delay = function() return pause end
end

request = function()
  i = i + 1
  if i > #tokens then
    if not cycle then return plain end
    i = 1
  end
  return wrk.format(nil, nil, { ["Authorization"] = tokens[i] })
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
