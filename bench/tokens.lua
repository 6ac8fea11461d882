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

-- DELAY_MS: each connection waits this long between requests (the fixed-rate runs).
local pause = tonumber(os.getenv("DELAY_MS") or "")
if pause then delay = function() return pause end end

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
